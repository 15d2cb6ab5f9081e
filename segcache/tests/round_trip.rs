//! Reserve → write → persist → get returns the bytes written, zero copy from one shared
//! mapping, whatever the write pattern (sequential, out-of-order ranges from threads,
//! overlapping), and survives a reopen.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{cache_dir, content, open, put};
use segcache::{CacheConfig, FOOTER_LEN, SegmentId};

#[tokio::test]
async fn round_trip_and_reopen() {
    let (_tmp, dir) = cache_dir();
    let (cache, report) = open(CacheConfig::new(&dir)).await;
    assert_eq!((report.loaded, report.temp_files_deleted), (0, 0));
    assert!(report.rejected.is_empty() && report.unexpected.is_empty());

    // Sequential writes through `std::io::Write`.
    let a = content(1, 100_000);
    let id_a = SegmentId::from_u128(1);
    let mut slot = cache.reserve(id_a, a.len() as u64).await.expect("reserve");
    for chunk in a.chunks(7_000) {
        slot.write_all(chunk).expect("write");
    }
    assert_eq!(slot.written(), a.len() as u64);
    assert!(!cache.contains(id_a), "not readable before persist");
    assert!(cache.get(id_a).await.expect("get").is_none());
    let pinned = slot.persist().await.expect("persist");
    assert_eq!(pinned.id(), id_a);
    assert_eq!(&pinned[..], &a[..]);

    // Out-of-order ranges from several threads at once.
    let b = content(2, 1 << 20);
    let slot = Arc::new(
        cache
            .reserve(SegmentId::from_u128(2), b.len() as u64)
            .await
            .expect("reserve"),
    );
    std::thread::scope(|s| {
        for (i, chunk) in b.chunks(64 << 10).enumerate().rev() {
            let slot = Arc::clone(&slot);
            s.spawn(move || {
                slot.write_at((i * (64 << 10)) as u64, chunk)
                    .expect("write_at");
            });
        }
    });
    let slot = Arc::into_inner(slot).expect("threads done");
    assert_eq!(&slot.persist().await.expect("persist")[..], &b[..]);

    // Overlapping writes: the data is read back to checksum it.
    let c = content(3, 10_000);
    let slot = cache
        .reserve(SegmentId::from_u128(3), c.len() as u64)
        .await
        .expect("reserve");
    slot.write_at(0, &c[..6_000]).expect("write");
    slot.write_at(4_000, &c[4_000..]).expect("write");
    slot.write_at(100, &c[100..200]).expect("rewrite");
    assert_eq!(&slot.persist().await.expect("persist")[..], &c[..]);

    // An empty segment.
    assert!(put(&cache, 4, &[]).await.is_empty());

    // Every pin of a segment shares one mapping: same address.
    let again = cache.get(id_a).await.expect("get").expect("cached");
    assert_eq!(again.as_ptr(), pinned.as_ptr());
    let stats = cache.stats();
    assert_eq!((stats.segments, stats.mapped, stats.pinned), (4, 4, 1));
    assert_eq!(stats.persisted, 4);
    assert_eq!(
        stats.bytes,
        (a.len() + b.len() + c.len()) as u64 + 4 * FOOTER_LEN
    );
    assert_eq!(stats.reserved_bytes, 0);
    assert_eq!((stats.hits, stats.misses), (1, 1));
    drop((pinned, again));
    assert_eq!(cache.stats().pinned, 0);

    // Reopen: the scan finds all four, and the data checks out on first map.
    drop(cache);
    let (cache, report) = open(CacheConfig::new(&dir)).await;
    assert_eq!(report.loaded, 4);
    assert!(report.rejected.is_empty() && report.unexpected.is_empty());
    for (n, data) in [(1, &a), (2, &b), (3, &c)] {
        let seg = cache
            .get(SegmentId::from_u128(n))
            .await
            .expect("get")
            .expect("cached");
        assert_eq!(&seg[..], &data[..], "segment {n}");
    }
    assert_eq!(cache.stats().corrupt, 0);
}
