//! `segcache/persist`: making a 64 KiB segment durable and visible under its name through the
//! `O_TMPFILE` + `linkat(AT_EMPTY_PATH)` path (`PersistMode::TmpfileLinkat`), against
//! `tempfile::NamedTempFile` in the same directory, measured in this run.
//!
//! Criterion ids (read by `cargo xtask bench`): `segcache_persist/{ours,named_tempfile}`, plus
//! `segcache_persist/ours_inline` (not a row: the same work without a runtime, to show what the
//! hand-off to tokio's blocking pool costs).
//!
//! Timed, per segment (`iter_custom`, one clock per operation; clean-up between operations is
//! outside it):
//! - `ours`: `reserve` + `write_at` of the 64 KiB + `persist`, as one `block_on` of a
//!   current-thread tokio runtime built once beforehand: the way a caller pays for it, the
//!   blocking half running on tokio's blocking pool. `persist` writes the 40-byte footer,
//!   `fdatasync`s the file, links it into place, `fsync`s the directory, then opens and maps
//!   the file and returns the pin.
//! - `ours_inline`: the same, polled without a runtime (the blocking work runs inline).
//! - `named_tempfile`: `NamedTempFile::new_in(dir)`, `write_all` of the same 64 KiB + 40 bytes
//!   (the same file size; no checksum), `sync_data` (`fdatasync`), `persist_noclobber`
//!   (`renameat2(RENAME_NOREPLACE)`), `fsync` of the directory: the same durability work.
//!   It neither checksums nor maps.
//!
//! Outside the clock: dropping the pin and `remove` (unmap + unlink) for ours, unlinking the
//! file for the baseline, and checking the result (length, bytes) each time.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use segcache::{CacheConfig, PersistMode, SegmentCache, SegmentId};

use common::{is_bench_run, now, segment_name};

/// Data bytes per segment.
const LEN: usize = 64 * 1024;
/// The footer the cache appends, and the baseline's stand-in for it.
const FOOTER: usize = 40;
/// Ids of the baseline's files start here, far from ours.
const BASELINE_IDS: u128 = 1 << 100;

/// Reserve, write, persist; returns the pin.
async fn put(cache: &SegmentCache, n: u128, data: &[u8]) -> segcache::SegmentRef {
    let slot = cache
        .reserve(SegmentId::from_u128(n), data.len() as u64)
        .await
        .expect("reserve");
    slot.write_at(0, data).expect("write_at");
    slot.persist().await.expect("persist")
}

/// Checks a persisted segment, drops the pin and removes it (outside the clock).
fn check_and_remove(cache: &SegmentCache, n: u128, seg: segcache::SegmentRef, data: &[u8]) {
    assert_eq!(seg.len(), data.len(), "segment length");
    assert!(*seg == *data, "segment bytes");
    drop(seg);
    assert!(
        cache.remove(SegmentId::from_u128(n)).expect("remove"),
        "segment was cached"
    );
}

/// The baseline: a named temporary file in `dir`, written, synced, renamed into place without
/// replacing anything, and the directory synced.
fn named_tempfile_put(dir: &Path, dir_handle: &File, name: &str, data: &[u8], trailer: &[u8]) {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).expect("NamedTempFile");
    tmp.write_all(data).expect("write");
    tmp.write_all(trailer).expect("write trailer");
    tmp.as_file().sync_data().expect("sync_data");
    tmp.persist_noclobber(dir.join(name))
        .expect("persist_noclobber");
    dir_handle.sync_all().expect("fsync dir");
}

fn main() {
    if !is_bench_run() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();

    // In the default temporary directory: a real disk file system, so the syncs do real work.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("segments");
    let config = CacheConfig::new(&dir).with_persist_mode(PersistMode::TmpfileLinkat);
    let (cache, report) = now(SegmentCache::open(config)).expect("open");
    assert_eq!(report.loaded, 0);
    assert_eq!(cache.persist_mode(), PersistMode::TmpfileLinkat);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir_handle = File::open(&dir).expect("open dir");
    let data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
    let trailer = [0xA5u8; FOOTER];

    // Warm-up and a check of each path, outside the clock.
    for n in 0..8 {
        let seg = rt.block_on(put(&cache, n, &data));
        check_and_remove(&cache, n, seg, &data);
        let seg = now(put(&cache, n, &data));
        check_and_remove(&cache, n, seg, &data);
        let name = segment_name(BASELINE_IDS + n);
        named_tempfile_put(&dir, &dir_handle, &name, &data, &trailer);
        let back = std::fs::read(dir.join(&name)).expect("read back");
        assert!(back.len() == LEN + FOOTER && back[..LEN] == data[..]);
        std::fs::remove_file(dir.join(&name)).expect("remove");
    }

    let mut group = c.benchmark_group("segcache_persist");
    let mut next: u128 = 1 << 64;
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                next += 1;
                let start = Instant::now();
                let seg = rt.block_on(put(&cache, next, &data));
                timed += start.elapsed();
                check_and_remove(&cache, next, seg, &data);
            }
            timed
        });
    });
    group.bench_function("ours_inline", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                next += 1;
                let start = Instant::now();
                let seg = now(put(&cache, next, &data));
                timed += start.elapsed();
                check_and_remove(&cache, next, seg, &data);
            }
            timed
        });
    });
    let mut baseline_ops = 0u64;
    group.bench_function("named_tempfile", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                next += 1;
                let name = segment_name(BASELINE_IDS + next);
                let start = Instant::now();
                named_tempfile_put(&dir, &dir_handle, &name, &data, &trailer);
                timed += start.elapsed();
                let path = dir.join(&name);
                let size = std::fs::metadata(&path).expect("stat").len();
                assert_eq!(size, (LEN + FOOTER) as u64, "baseline file size");
                std::fs::remove_file(&path).expect("remove");
                baseline_ops += 1;
            }
            timed
        });
    });
    group.finish();

    // Every persisted segment was removed again; the directory holds nothing else.
    let stats = cache.stats();
    assert_eq!(stats.segments, 0, "every segment removed");
    assert_eq!(stats.reserved_bytes, 0, "no slot left");
    assert!(baseline_ops > 0, "the baseline ran");
    let left = std::fs::read_dir(&dir).expect("read_dir").count();
    assert_eq!(left, 0, "directory left empty");
    c.final_summary();
}
