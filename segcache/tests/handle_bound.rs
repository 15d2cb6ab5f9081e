//! One pool bounds open descriptors and live mappings together. Under many concurrent writers
//! and readers (with evictions going on), a sampler thread counts the process's real
//! descriptors on cache files (`/proc/self/fd`) and mappings of them (`/proc/self/maps`); their
//! sum never exceeds `max_handles`.
//!
//! Reading `/proc` is not atomic: a handle that moves from one use to another while the sampler
//! reads (a descriptor closed, then a mapping made with the freed handle) would be counted
//! twice. So a sample counts only when two back-to-back reads of both files agree.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{cache_dir, content, fd_entries, fds_in, map_lines, maps_in, open, put};
use segcache::{CacheConfig, SegmentId};

const MAX_HANDLES: usize = 6;
const LEN: usize = 16 << 10;

#[derive(Debug, Default)]
struct Seen {
    samples: u64,
    unstable: u64,
    max_fds: usize,
    max_maps: usize,
    max_total: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fds_plus_mappings_never_exceed_the_pool() {
    let (_tmp, dir) = cache_dir();
    std::fs::create_dir(&dir).expect("mkdir");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (dir, stop) = (dir.clone(), Arc::clone(&stop));
        move || {
            let mut seen = Seen::default();
            let read = |dir: &std::path::Path| (fd_entries(dir), map_lines(dir));
            while !stop.load(Ordering::Relaxed) {
                let first = read(&dir);
                if read(&dir) != first {
                    seen.unstable += 1;
                    continue;
                }
                let (fds, maps) = (first.0.len(), first.1.len());
                seen.samples += 1;
                seen.max_fds = seen.max_fds.max(fds);
                seen.max_maps = seen.max_maps.max(maps);
                seen.max_total = seen.max_total.max(fds + maps);
            }
            seen
        }
    });

    let disk = (LEN as u64 + segcache::FOOTER_LEN) * 40;
    let config = CacheConfig::new(&dir)
        .with_max_handles(MAX_HANDLES)
        .with_max_bytes(disk);
    let (cache, _) = open(config).await;
    for n in 0..24 {
        drop(put(&cache, n, &content(n, LEN)).await);
    }

    let mut tasks = Vec::new();
    for w in 0..8u128 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..6u128 {
                let n = 1000 + w * 100 + k;
                let data = content(n, LEN);
                let slot = cache
                    .reserve(SegmentId::from_u128(n), LEN as u64)
                    .await
                    .expect("reserve");
                for (i, chunk) in data.chunks(4096).enumerate() {
                    slot.write_at((i * 4096) as u64, chunk).expect("write");
                    tokio::task::yield_now().await;
                }
                let seg = slot.persist().await.expect("persist");
                assert_eq!(&seg[..], &data[..]);
            }
            0u64
        }));
    }
    for r in 0..12u128 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let mut hits = 0;
            let mut x = r * 7919 + 1;
            for i in 0..60u128 {
                x = (x * 1_103_515_245 + 12_345) % (1 << 31);
                let n = if i % 3 == 0 {
                    1000 + (x % 8) * 100 + (x % 6)
                } else {
                    x % 24
                };
                if let Some(seg) = cache.get(SegmentId::from_u128(n)).await.expect("get") {
                    tokio::task::yield_now().await;
                    assert_eq!(&seg[..], &content(n, LEN)[..], "segment {n}");
                    hits += 1;
                }
            }
            hits
        }));
    }
    let mut hits = 0;
    for task in tasks {
        hits += task.await.expect("task");
    }
    stop.store(true, Ordering::Relaxed);
    let seen = sampler.join().expect("sampler");
    println!("{seen:?}, reader hits {hits}, {:?}", cache.stats());

    assert!(
        seen.max_total <= MAX_HANDLES,
        "descriptors + mappings peaked at {} > {MAX_HANDLES}: {seen:?}",
        seen.max_total
    );
    // The sampler really saw the cache's descriptors and mappings (it is not counting nothing).
    assert!(
        seen.samples > 0 && seen.max_fds >= 1 && seen.max_maps >= 1,
        "{seen:?}"
    );
    let stats = cache.stats();
    assert!(hits > 0 && stats.evictions > 0, "{stats:?}");
    assert_eq!(fds_in(&dir), 0, "no slot is live, no descriptor is open");
    assert_eq!(maps_in(&dir).len(), stats.mapped);
    assert!(stats.mapped <= MAX_HANDLES);
    assert_eq!(
        (stats.handles_in_use, stats.handle_waiters),
        (stats.mapped, 0)
    );
}
