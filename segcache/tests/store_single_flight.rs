//! Concurrent `get`s of one missing segment share one download and one slot; concurrent `get`s
//! of a segment missing remotely all get `NotFound`.

mod store_support;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use objsync::testing::TestS3;
use objsync::{FaultConfig, FaultOp, FaultyStore};
use store_support::{exact_config, id, open, segment};

const READERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_download() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let remote = FaultyStore::counting(s3.store().unwrap());
    let prefix = s3.unique_prefix("segcache_store_single_flight");
    let tmp = tempfile::tempdir().unwrap();
    let shared: Arc<dyn ObjectStore> = Arc::new(remote.clone());
    let (store, _) = open(
        &tmp.path().join("cache"),
        64 << 20,
        shared,
        prefix.as_ref(),
        exact_config(),
    )
    .await;
    let bytes = segment(7, 256 << 10);
    drop(store.put(id(7), bytes.clone()).await.unwrap());
    assert!(store.evict_local(id(7)).unwrap());

    // Slow GETs make the readers overlap; the count below holds however they interleave.
    remote.set_config(
        FaultConfig::default()
            .with_latency(Duration::from_millis(100))
            .with_ops([FaultOp::Get]),
    );
    remote.reset_counts();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get(id(7)).await })
        })
        .collect();
    for reader in readers {
        let got = reader.await.unwrap().unwrap();
        assert!(got[..] == bytes[..]);
    }
    let faults = remote.counts();
    assert_eq!(faults.of(FaultOp::Get), 1, "{faults:?}");
    let stats = store.stats();
    assert_eq!(stats.downloads, 1, "{stats:?}");
    assert_eq!(stats.gets, READERS as u64, "{stats:?}");
    // Every reader either joined the fetch, hit the cache after it, or was the fetch.
    assert_eq!(
        stats.coalesced + stats.hits,
        READERS as u64 - 1,
        "{stats:?}"
    );
    assert_eq!(stats.cache.segments, 1, "{stats:?}");
    assert_eq!(stats.cache.reserved_bytes, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_of_a_missing_segment_are_all_not_found() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let remote = FaultyStore::new(
        s3.store().unwrap(),
        FaultConfig::default()
            .with_latency(Duration::from_millis(50))
            .with_ops([FaultOp::Get]),
    );
    let prefix = s3.unique_prefix("segcache_store_single_flight_missing");
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(
        &tmp.path().join("cache"),
        64 << 20,
        Arc::new(remote.clone()),
        prefix.as_ref(),
        exact_config(),
    )
    .await;
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get(id(9)).await })
        })
        .collect();
    for reader in readers {
        let err = reader.await.unwrap().unwrap_err();
        assert!(
            matches!(err, segcache::Error::NotFound { .. }),
            "every caller gets a plain NotFound: {err:?}"
        );
    }
    assert!(!store.contains(id(9)));
    let stats = store.stats();
    assert_eq!(stats.not_found, READERS as u64, "{stats:?}");
    assert_eq!(stats.cache.reserved_bytes, 0, "{stats:?}");
    assert!(remote.counts().of(FaultOp::Get) <= READERS as u64);
}
