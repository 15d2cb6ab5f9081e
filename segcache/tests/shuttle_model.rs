//! Guards the pin / evict / remove / map protocol under shuttle-explored interleavings: a pinned
//! segment is never evicted, removed or unmapped (its bytes stay readable and its file stays on
//! disk while the pin lives), the budget is restored once the pins are gone, `remove` racing a
//! `get` either refuses (`Pinned`) or wins cleanly, and a task waiting for pool handles is always
//! woken by a released pin (no deadlock: shuttle fails an execution whose threads all block).
//!
//! Built with `RUSTFLAGS="--cfg shuttle"` (`cargo xtask test-all` does), the cache's and the
//! handle pool's locks and atomics are shuttle's, so every lock and atomic operation inside the
//! cache is a scheduling point. The async methods are driven by `shuttle::future::block_on`; with
//! no tokio runtime around, the cache runs its blocking work (open, persist, map, unlink) inline
//! on the calling shuttle thread. The handle pool's tokio semaphore wakes a waiter through
//! shuttle's waker, so a waiter that is never woken is a deadlock shuttle reports. Each iteration
//! uses a fresh directory and tiny segments. Each scenario runs under the random scheduler and
//! under PCT.

// The crate doc comes before the `cfg`: without `--cfg shuttle`, `cfg` strips the crate together
// with any attribute after it, and the empty test crate would then be undocumented.
#![cfg(shuttle)]

use std::collections::BTreeSet;
use std::path::Path;

use segcache::{CacheConfig, Error, FOOTER_LEN, SegmentCache, SegmentId, SegmentRef};
use shuttle::future::block_on;

/// Data bytes of every segment.
const LEN: usize = 24;
/// What one segment counts against the budget.
const CHARGED: u64 = LEN as u64 + FOOTER_LEN;
const RANDOM_ITERATIONS: usize = 300;
const PCT_ITERATIONS: usize = 300;
const PCT_DEPTH: usize = 3;

/// The content of segment `n`: distinct per segment, so a pin showing another segment's bytes
/// (or zeros) is caught.
fn content(n: u128) -> Vec<u8> {
    (0..LEN)
        .map(|i| (n as u8).wrapping_mul(37).wrapping_add(i as u8 * 3 + 1))
        .collect()
}

/// A config over `dir` with room for `segments` segments (high watermark at the budget, low at
/// half of it) and `max_handles` pool handles.
fn config(dir: &Path, segments: u64, max_handles: usize) -> CacheConfig {
    CacheConfig::new(dir)
        .with_max_bytes(segments * CHARGED)
        .with_watermarks(1.0, 0.5)
        .with_max_handles(max_handles)
}

fn open(config: CacheConfig) -> SegmentCache {
    block_on(SegmentCache::open(config)).expect("open").0
}

/// Reserve, write and persist segment `n`; returns its pin.
fn put(cache: &SegmentCache, n: u128) -> SegmentRef {
    let id = SegmentId::from_u128(n);
    let slot = block_on(cache.reserve(id, LEN as u64)).expect("reserve");
    slot.write_at(0, &content(n)).expect("write");
    block_on(slot.persist()).expect("persist")
}

fn file_name(n: u128) -> String {
    format!("{n:032x}.seg")
}

/// What a live pin of segment `n` must show: its bytes, the segment indexed, its file on disk.
fn check_pin(cache: &SegmentCache, dir: &Path, pin: &SegmentRef, n: u128) {
    assert_eq!(pin.id(), SegmentId::from_u128(n));
    assert_eq!(
        &pin[..],
        &content(n)[..],
        "segment {n}: bytes changed while pinned"
    );
    assert!(
        cache.contains(SegmentId::from_u128(n)),
        "segment {n} evicted or removed while pinned"
    );
    assert!(
        dir.join(file_name(n)).is_file(),
        "segment {n}: file unlinked while pinned"
    );
}

/// Pins segment `n` if cached and checks the pin; `None` if it is not cached.
fn get(cache: &SegmentCache, dir: &Path, n: u128) -> Option<SegmentRef> {
    let pin = block_on(cache.get(SegmentId::from_u128(n))).expect("get")?;
    check_pin(cache, dir, &pin, n);
    Some(pin)
}

/// The checks every scenario ends with, once every pin is dropped: nothing pinned, reserved or
/// waiting, the cache within its budget, one handle per idle mapping, and the files on disk
/// exactly the indexed segments (none left over, none missing, no temporary files).
fn check_quiescent(cache: &SegmentCache, dir: &Path) -> BTreeSet<u128> {
    let stats = cache.stats();
    assert_eq!(
        stats.pinned, 0,
        "pins left after every SegmentRef dropped: {stats:?}"
    );
    assert_eq!(stats.reserved_bytes, 0, "{stats:?}");
    assert_eq!(stats.handle_waiters, 0, "{stats:?}");
    assert!(
        stats.bytes <= stats.budget,
        "over budget with nothing pinned: {stats:?}"
    );
    assert_eq!(
        stats.handles_in_use, stats.mapped,
        "handles held by anything but idle mappings: {stats:?}"
    );
    assert!(stats.handles_in_use <= stats.max_handles, "{stats:?}");

    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(!name.starts_with(".tmp-"), "temporary file left: {name}");
        if let Some(hex) = name.strip_suffix(".seg") {
            let n = u128::from_str_radix(hex, 16).expect("segment name");
            assert!(
                cache.contains(SegmentId::from_u128(n)),
                "file of segment {n} left on disk but not indexed: {stats:?}"
            );
            on_disk.insert(n);
        }
    }
    assert_eq!(
        stats.segments,
        on_disk.len(),
        "indexed segments without a file: {on_disk:?} {stats:?}"
    );
    assert_eq!(stats.bytes, on_disk.len() as u64 * CHARGED, "{stats:?}");
    on_disk
}

/// Two readers pin and release segments 1..=3 while a writer persists segments 4 and 5 (holding
/// both pins), which takes the full cache (room for 3) over its high watermark so eviction (down
/// to 1.5 segments) runs concurrently with the pins. Pins can keep the cache over budget; then
/// the eviction deferred by them must happen when they are released. A pin must stay readable,
/// indexed and on disk.
fn pins_under_eviction() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    let cache = open(config(&dir, 3, 64));
    for n in 1..=3 {
        drop(put(&cache, n));
    }

    let readers = [[1, 2], [3, 1]].map(|order| {
        let (cache, dir) = (cache.clone(), dir.clone());
        shuttle::thread::spawn(move || {
            // Hold the first pin while taking the second.
            let first = get(&cache, &dir, order[0]);
            let second = get(&cache, &dir, order[1]);
            if let Some(pin) = &first {
                check_pin(&cache, &dir, pin, order[0]);
            }
            drop(first);
            if let Some(pin) = &second {
                check_pin(&cache, &dir, pin, order[1]);
            }
        })
    });
    let writer = {
        let (cache, dir) = (cache.clone(), dir.clone());
        shuttle::thread::spawn(move || {
            let pins = [4, 5].map(|n| put(&cache, n));
            for (n, pin) in (4..).zip(&pins) {
                check_pin(&cache, &dir, pin, n);
            }
        })
    };
    for reader in readers {
        reader.join().expect("reader panicked");
    }
    writer.join().expect("writer panicked");

    check_quiescent(&cache, &dir);
}

/// `remove` of segments 1 (unmapped: the racing `get`s map it) and 2 (mapped, idle) races two
/// readers. Each removal either succeeds (and later `get`s find nothing) or is refused with
/// `Pinned` (and the segment stays intact); a reader's pin is never left dangling.
fn remove_races_get() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    {
        let cache = open(config(&dir, 8, 64));
        drop(put(&cache, 1));
        drop(put(&cache, 2));
    }
    // Reopened, both are unmapped; map 2 so it races as an idle mapping.
    let cache = open(config(&dir, 8, 64));
    drop(get(&cache, &dir, 2).expect("segment 2 cached"));

    let readers = [[1, 2], [2, 1]].map(|order| {
        let (cache, dir) = (cache.clone(), dir.clone());
        shuttle::thread::spawn(move || {
            for n in order {
                drop(get(&cache, &dir, n));
            }
        })
    });
    let remover = {
        let cache = cache.clone();
        shuttle::thread::spawn(move || {
            [1, 2].map(|n| match cache.remove(SegmentId::from_u128(n)) {
                Ok(true) => true,
                Err(Error::Pinned { id }) => {
                    assert_eq!(id, SegmentId::from_u128(n));
                    false
                }
                Ok(false) => panic!("segment {n} vanished before its only remove"),
                Err(other) => panic!("remove {n}: {other}"),
            })
        })
    };
    for reader in readers {
        reader.join().expect("reader panicked");
    }
    let outcomes = remover.join().expect("remover panicked");

    let on_disk = check_quiescent(&cache, &dir);
    for (n, removed) in [1, 2].into_iter().zip(outcomes) {
        assert_eq!(
            on_disk.contains(&n),
            !removed,
            "segment {n}: removed {removed}, on disk {on_disk:?}"
        );
        let again = block_on(cache.get(SegmentId::from_u128(n))).expect("get after the race");
        if removed {
            assert!(again.is_none(), "segment {n} readable after its remove");
        } else {
            let pin = again.expect("segment kept after a refused remove");
            check_pin(&cache, &dir, &pin, n);
        }
    }
}

/// `readers` readers on a pool of `max_handles` handles, each pinning segments
/// `1..=readers` in turn for `rounds` rounds (all unmapped at first). Mapping takes two handles
/// and a mapping keeps one, so a reader finds the pool short while the others hold pins, and
/// must wait for handles and be woken by a release that unmaps an idle mapping for it (the
/// waiter protocol). No execution may deadlock; handles never exceed the pool.
fn waiters_woken(max_handles: usize, readers: u128, rounds: u128) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    {
        let cache = open(config(&dir, 8, max_handles));
        for n in 1..=readers {
            drop(put(&cache, n));
        }
    }
    let cache = open(config(&dir, 8, max_handles));

    let threads: Vec<_> = (0..readers)
        .map(|t| {
            let (cache, dir) = (cache.clone(), dir.clone());
            shuttle::thread::spawn(move || {
                for round in 0..rounds {
                    let n = (t + round) % readers + 1;
                    let pin = get(&cache, &dir, n).expect("segment cached");
                    let stats = cache.stats();
                    assert!(stats.handles_in_use <= max_handles, "{stats:?}");
                    check_pin(&cache, &dir, &pin, n);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("reader panicked");
    }

    let on_disk = check_quiescent(&cache, &dir);
    assert_eq!(on_disk, (1..=readers).collect(), "nothing is evicted");
}

/// Three readers, two rounds each, on a pool of 3: with two pins held the third reader waits.
fn waiters_woken_by_releases() {
    waiters_woken(3, 3, 2);
}

/// Two readers, one pin each, on a pool of 2: the one that finds the pool short has exactly one
/// release to be woken by, so a release that misses the waiter (a waiter registered after its
/// look at the idle mappings) deadlocks.
fn waiter_woken_by_the_only_release() {
    waiters_woken(2, 2, 1);
}

/// Runs `scenario` under the random scheduler and under PCT.
fn explore(scenario: fn()) {
    shuttle::check_random(scenario, RANDOM_ITERATIONS);
    shuttle::check_pct(scenario, PCT_ITERATIONS, PCT_DEPTH);
}

#[test]
fn pinned_segments_survive_concurrent_eviction() {
    explore(pins_under_eviction);
}

#[test]
fn remove_racing_get_refuses_or_wins_cleanly() {
    explore(remove_races_get);
}

#[test]
fn handle_waiters_are_woken_by_released_pins() {
    explore(waiters_woken_by_releases);
    explore(waiter_woken_by_the_only_release);
}
