//! Pinned segments are never evicted, even when that takes the cache over its budget; once the
//! pins are released, the cache is brought back within its watermarks.

mod common;

use common::{cache_dir, content, names, open, put, seg_name};
use segcache::{CacheConfig, SegmentId};

#[tokio::test]
async fn pins_survive_and_budget_returns_after_release() {
    let (_tmp, dir) = cache_dir();
    let config = CacheConfig::new(&dir)
        .with_max_bytes(1000)
        .with_watermarks(0.9, 0.5);
    let (cache, _) = open(config).await;

    // Nine 100-byte segments, all pinned.
    let mut pins = Vec::new();
    for n in 1..=9 {
        pins.push(put(&cache, n, &content(n, 60)).await);
    }
    // Two more: nothing is evictable, so the cache goes over its budget rather than fail.
    let tenth = put(&cache, 10, &content(10, 60)).await;
    let eleventh = put(&cache, 11, &content(11, 60)).await;
    let stats = cache.stats();
    assert_eq!((stats.bytes, stats.evictions, stats.pinned), (1100, 0, 11));
    for n in 1..=11 {
        assert!(
            names(&dir).contains(&seg_name(n)),
            "pinned segment {n} survives"
        );
    }
    for (n, pin) in (1..=9).zip(&pins) {
        assert_eq!(&pin[..], &content(n, 60)[..], "pinned bytes intact");
    }

    // Releasing pins makes them evictable; each release brings the cache closer until it is
    // back under the high watermark.
    drop(tenth);
    for pin in pins.drain(..) {
        drop(pin);
    }
    let stats = cache.stats();
    assert!(
        stats.bytes <= 900,
        "back within the high watermark: {stats:?}"
    );
    assert!(stats.evictions >= 2, "{stats:?}");
    assert!(cache.contains(SegmentId::from_u128(11)), "still pinned");
    assert_eq!(
        names(&dir).len(),
        stats.segments,
        "evicted files are unlinked"
    );

    // And the next reservation over the high watermark goes down to the low one.
    let slot = cache
        .reserve(SegmentId::from_u128(12), 260)
        .await
        .expect("reserve");
    let stats = cache.stats();
    assert!(stats.bytes + stats.reserved_bytes <= 500, "{stats:?}");
    assert!(cache.contains(SegmentId::from_u128(11)), "still pinned");
    assert_eq!(&eleventh[..], &content(11, 60)[..]);
    drop(slot);
}
