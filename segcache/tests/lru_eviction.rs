//! Eviction is least-recently-used among segments, by bytes: crossing the high watermark
//! evicts from the LRU end until the cache is at or below the low watermark, no more.

mod common;

use common::{cache_dir, content, names, open, put, seg_name};
use segcache::{CacheConfig, FOOTER_LEN, SegmentId};

/// Segment `n` with `disk` bytes on disk.
async fn put_sized(cache: &segcache::SegmentCache, n: u128, disk: u64) {
    drop(put(cache, n, &content(n, (disk - FOOTER_LEN) as usize)).await);
}

async fn touch(cache: &segcache::SegmentCache, ns: &[u128]) {
    for &n in ns {
        drop(
            cache
                .get(SegmentId::from_u128(n))
                .await
                .expect("get")
                .expect("cached"),
        );
    }
}

fn present(dir: &std::path::Path, ns: &[u128]) -> bool {
    let names = names(dir);
    ns.iter().all(|&n| names.contains(&seg_name(n)))
}

#[tokio::test]
async fn evicts_lru_by_bytes_between_watermarks() {
    let (_tmp, dir) = cache_dir();
    let config = CacheConfig::new(&dir)
        .with_max_bytes(1000)
        .with_watermarks(0.9, 0.5);
    let (cache, _) = open(config).await;

    for n in 1..=9 {
        put_sized(&cache, n, 100).await;
    }
    assert_eq!(
        cache.stats().bytes,
        900,
        "at the high watermark, nothing evicted"
    );
    assert_eq!(cache.stats().evictions, 0);
    // Recency now (LRU first): 2 4 5 6 7 8 9 3 1.
    touch(&cache, &[3, 1]).await;

    // 1000 bytes > 900: evict LRU-first until at most 500, counting the new slot: five go.
    let slot = cache
        .reserve(SegmentId::from_u128(10), 60)
        .await
        .expect("reserve");
    let stats = cache.stats();
    assert_eq!((stats.evictions, stats.evicted_bytes), (5, 500));
    assert_eq!(stats.bytes + stats.reserved_bytes, 500);
    for gone in [2, 4, 5, 6, 7] {
        assert!(
            !cache.contains(SegmentId::from_u128(gone)),
            "{gone} should be evicted"
        );
    }
    assert!(present(&dir, &[8, 9, 3, 1]));
    assert_eq!(
        names(&dir).len(),
        4,
        "evicted files are unlinked: {:?}",
        names(&dir)
    );
    slot.write_at(0, &[0; 60]).expect("write");
    drop(slot.persist().await.expect("persist"));

    // By bytes: a big LRU segment frees more than a small one.
    put_sized(&cache, 11, 300).await; // 800 bytes
    touch(&cache, &[8, 9, 3, 1, 10]).await; // LRU first: 11 8 9 3 1 10
    let slot = cache
        .reserve(SegmentId::from_u128(12), 160)
        .await
        .expect("reserve");
    // 800 + 200 = 1000 > 900 → evict 11 (300), 8, 9 (100 each) → 500.
    let stats = cache.stats();
    assert_eq!((stats.evictions, stats.evicted_bytes), (8, 1000));
    assert_eq!(stats.bytes + stats.reserved_bytes, 500);
    drop(slot);
    assert!(present(&dir, &[3, 1, 10]));
    assert_eq!(names(&dir).len(), 3, "{:?}", names(&dir));
    for kept in [3, 1, 10] {
        assert!(cache.contains(SegmentId::from_u128(kept)));
    }
}
