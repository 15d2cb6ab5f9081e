//! Bad input gives a clear error, never a panic: configurations, ids, lengths, writes out of
//! bounds (including offsets that overflow), persisting too early, a cache path that is a file.

mod common;

use std::io::Write;

use common::{cache_dir, open};
use segcache::{CacheConfig, Error, FOOTER_LEN, SegmentCache, SegmentId};

#[tokio::test]
async fn bad_input_is_an_error() {
    let (tmp, dir) = cache_dir();
    let invalid = [
        CacheConfig::new(&dir).with_max_bytes(0),
        CacheConfig::new(&dir).with_watermarks(0.5, 0.9),
        CacheConfig::new(&dir).with_watermarks(1.5, 0.5),
        CacheConfig::new(&dir).with_watermarks(0.9, 0.0),
        CacheConfig::new(&dir).with_watermarks(f64::NAN, 0.5),
        CacheConfig::new(&dir).with_max_handles(1),
        CacheConfig::new(""),
    ];
    for config in invalid {
        match SegmentCache::open(config.clone()).await {
            Err(Error::InvalidConfig { reason }) => assert!(!reason.is_empty()),
            other => panic!("{config:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(!dir.exists(), "an invalid configuration creates nothing");

    // A path that is a regular file.
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    match SegmentCache::open(CacheConfig::new(&file)).await {
        Err(Error::Io { path, .. }) => assert_eq!(path, file),
        other => panic!("expected Io, got {other:?}"),
    }

    for bad in [
        "",
        "xyz",
        "../../etc/passwd",
        &"0".repeat(31),
        &"g".repeat(32),
    ] {
        assert!(
            matches!(bad.parse::<SegmentId>(), Err(Error::InvalidId { .. })),
            "{bad:?}"
        );
    }

    let (cache, _) = open(CacheConfig::new(&dir).with_max_bytes(1000)).await;
    let id = SegmentId::from_u128(1);
    for len in [1000 - FOOTER_LEN + 1, u64::MAX] {
        match cache.reserve(id, len).await {
            Err(Error::TooLarge { len: l, budget, .. }) => assert_eq!((l, budget), (len, 1000)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    let mut slot = cache.reserve(id, 10).await.expect("reserve");
    for (offset, len) in [(0, 11), (10, 1), (u64::MAX, 1), (u64::MAX - 1, 5)] {
        match slot.write_at(offset, &vec![0; len]) {
            Err(Error::OutOfBounds {
                offset: o,
                len: l,
                size,
                ..
            }) => {
                assert_eq!((o, l, size), (offset, len, 10));
            }
            other => panic!("({offset}, {len}): expected OutOfBounds, got {other:?}"),
        }
    }
    // Through `Write`: what fits is written, the rest is an error.
    assert_eq!(slot.write(&[1; 15]).expect("partial write"), 10);
    let err = slot.write_all(&[1]).expect_err("full");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(slot.written(), 10);
    assert_eq!(&slot.persist().await.expect("persist")[..], &[1; 10]);

    // Persisting before all bytes are written.
    let slot = cache
        .reserve(SegmentId::from_u128(2), 10)
        .await
        .expect("reserve");
    slot.write_at(0, &[2; 9]).expect("write");
    assert!(matches!(
        slot.persist().await,
        Err(Error::Incomplete {
            written: 9,
            len: 10,
            ..
        })
    ));
}
