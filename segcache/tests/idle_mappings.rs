//! Idle mappings (no pins) stay mapped while the handle pool has room, and are unmapped least
//! recently used first when it needs room, only as many as needed; pinned mappings are never
//! unmapped, and a task waiting for handles is served when a pin is released. Checked against
//! the process's real mappings in `/proc/self/maps`.

mod common;

use common::{cache_dir, content, maps_in, open, put, seg_name};
use segcache::{CacheConfig, SegmentCache, SegmentId, SegmentRef};

fn mapped(dir: &std::path::Path) -> Vec<String> {
    let mut m = maps_in(dir);
    m.sort();
    m
}

fn segs(ns: &[u128]) -> Vec<String> {
    let mut v: Vec<String> = ns.iter().map(|&n| seg_name(n)).collect();
    v.sort();
    v
}

async fn get(cache: &SegmentCache, n: u128) -> SegmentRef {
    let seg = cache
        .get(SegmentId::from_u128(n))
        .await
        .expect("get")
        .expect("cached");
    assert_eq!(&seg[..], &content(n, 8192)[..]);
    seg
}

#[tokio::test]
async fn idle_mappings_are_kept_then_reclaimed_lru_first() {
    let (_tmp, dir) = cache_dir();
    let (cache, _) = open(CacheConfig::new(&dir).with_max_handles(4)).await;

    // Persisting maps each segment; there is room for all three, so they stay mapped.
    for n in 1..=3 {
        drop(put(&cache, n, &content(n, 8192)).await);
    }
    assert_eq!(mapped(&dir), segs(&[1, 2, 3]));
    assert_eq!((cache.stats().mapped, cache.stats().handles_in_use), (3, 3));

    // Hits need no handles. Recency afterwards, LRU first: 1 3 2.
    for n in [1, 3, 2] {
        drop(get(&cache, n).await);
    }
    assert_eq!(cache.stats().mappings_reclaimed, 0);

    // A slot needs two handles and one is free: exactly one idle mapping goes, the LRU one.
    drop(put(&cache, 4, &content(4, 8192)).await);
    assert_eq!(mapped(&dir), segs(&[2, 3, 4]));
    assert_eq!(cache.stats().mappings_reclaimed, 1);

    // With 2 pinned, mapping 1 again evicts the LRU idle mapping (3), not the pinned one.
    let two = get(&cache, 2).await;
    let one = get(&cache, 1).await;
    assert_eq!(mapped(&dir), segs(&[1, 2, 4]));
    // And mapping 3 with 1 and 2 pinned takes 4's place.
    let three = get(&cache, 3).await;
    assert_eq!(mapped(&dir), segs(&[1, 2, 3]));
    let stats = cache.stats();
    assert_eq!(
        (stats.mapped, stats.pinned, stats.handles_in_use),
        (3, 3, 3)
    );
    assert_eq!(stats.mappings_reclaimed, 3);

    // Everything mapped is pinned: a get of 4 waits for handles...
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { get(&cache, 4).await }
    });
    let mut yields = 0;
    while cache.stats().handle_waiters == 0 {
        assert!(yields < 10_000, "the get never started waiting");
        yields += 1;
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished());
    assert_eq!(mapped(&dir), segs(&[1, 2, 3]));
    // ...until a pin is released: its now idle mapping is unmapped for the waiter.
    drop(one);
    let four = waiter.await.expect("task");
    assert_eq!(mapped(&dir), segs(&[2, 3, 4]));
    assert_eq!(cache.stats().handle_waiters, 0);
    drop((two, three, four));
}
