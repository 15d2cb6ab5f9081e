//! A segment whose data was damaged on disk passes the footer-only scan, but its first map
//! checks the data: the `get` fails with `Corrupt`, the file is deleted, and the id can be
//! written again.

mod common;

use common::{cache_dir, content, names, open, put, seg_name};
use segcache::{CacheConfig, Error, SegmentId};

#[tokio::test]
async fn damaged_data_is_caught_on_first_map() {
    let (_tmp, dir) = cache_dir();
    let (cache, _) = open(CacheConfig::new(&dir)).await;
    let data = content(9, 5000);
    drop(put(&cache, 9, &data).await);
    drop(put(&cache, 10, &data).await);
    drop(cache);

    // Flip one data byte of segment 9 behind the cache's back (it is closed).
    let path = dir.join(seg_name(9));
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[1234] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");

    let (cache, report) = open(CacheConfig::new(&dir)).await;
    assert_eq!(report.loaded, 2, "the footer-only scan cannot see it");
    let id = SegmentId::from_u128(9);
    match cache.get(id).await {
        Err(Error::Corrupt { id: i, what }) => {
            assert_eq!(i, id);
            assert!(what.contains("checksum"), "{what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!cache.contains(id));
    assert_eq!(names(&dir), [seg_name(10)]);
    let stats = cache.stats();
    assert_eq!((stats.corrupt, stats.segments, stats.bytes), (1, 1, 5040));
    assert!(cache.get(id).await.expect("get").is_none());

    // The undamaged one maps fine; the damaged id can be written again.
    let other = cache
        .get(SegmentId::from_u128(10))
        .await
        .expect("get")
        .expect("cached");
    assert_eq!(&other[..], &data[..]);
    assert_eq!(&put(&cache, 9, &data).await[..], &data[..]);
}
