//! `SegmentStore` against the test matrix's S3 server: put, drop the local cache directory,
//! reopen, get (a download), get again (a hit, no request); objects named `<prefix>/<32 hex>`;
//! a segment in neither place is `NotFound`; bad prefixes are refused.

mod store_support;

use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _};
use objsync::testing::{TestS3, pattern};
use objsync::{FaultOp, FaultyStore};
use segcache::{CacheConfig, Error, SegmentStore, StoreConfig};
use store_support::{exact_config, id, open};

const BUDGET: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_drop_the_cache_reopen_get_downloads_then_hits() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let remote = FaultyStore::counting(s3.store().unwrap());
    let shared: Arc<dyn ObjectStore> = Arc::new(remote.clone());
    let prefix = s3.unique_prefix("segcache_store_round_trip");
    let prefix = prefix.as_ref();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let where_ = s3.description().to_owned();

    let sizes = [0_usize, 1, 4096, 100_000, 1 << 20];
    let (store, report) = open(&dir, BUDGET, Arc::clone(&shared), prefix, exact_config()).await;
    assert_eq!(report.loaded, 0);
    for (n, &len) in sizes.iter().enumerate() {
        let bytes = pattern(len, n as u64);
        let pinned = store.put(id(n as u128), bytes.clone()).await.unwrap();
        assert!(pinned[..] == bytes[..], "{len} bytes on {where_}");
        assert!(store.contains(id(n as u128)));
        // Durable remotely: the object is there, under its name, byte for byte.
        let path = store.object_path(id(n as u128));
        assert_eq!(path.as_ref(), format!("{prefix}/{n:032x}"));
        let held = remote
            .inner()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(held == bytes, "the object of {len} bytes differs");
    }
    let listed: Vec<_> = remote
        .inner()
        .list(Some(&prefix.into()))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), sizes.len(), "{listed:?}");
    let stats = store.stats();
    assert_eq!((stats.puts, stats.put_failures), (sizes.len() as u64, 0));
    assert_eq!(stats.bytes_put, sizes.iter().sum::<usize>() as u64);

    // The local copies go; the store keeps the segments.
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
    let (store, report) = open(&dir, BUDGET, Arc::clone(&shared), prefix, exact_config()).await;
    assert_eq!(report.loaded, 0);
    remote.reset_counts();
    for (n, &len) in sizes.iter().enumerate() {
        assert!(!store.contains(id(n as u128)));
        let got = store.get(id(n as u128)).await.unwrap();
        assert!(
            got[..] == pattern(len, n as u64)[..],
            "{len} bytes read back"
        );
    }
    let faults = remote.counts();
    assert_eq!(faults.of(FaultOp::Get), sizes.len() as u64, "{faults:?}");
    let stats = store.stats();
    assert_eq!(stats.downloads, sizes.len() as u64, "{stats:?}");
    assert_eq!(stats.hits, 0, "{stats:?}");

    // Now cached: hits, and not one request.
    remote.reset_counts();
    for (n, &len) in sizes.iter().enumerate() {
        let got = store.get(id(n as u128)).await.unwrap();
        assert!(got[..] == pattern(len, n as u64)[..]);
    }
    assert_eq!(remote.counts().total(), 0, "{:?}", remote.counts());
    let stats = store.stats();
    assert_eq!(stats.hits, sizes.len() as u64, "{stats:?}");
    assert_eq!(stats.downloads, sizes.len() as u64, "{stats:?}");

    // Reopening the same directory finds them without asking the store.
    drop(store);
    let (store, report) = open(&dir, BUDGET, shared, prefix, exact_config()).await;
    assert_eq!(report.loaded, sizes.len());
    for (n, &len) in sizes.iter().enumerate() {
        assert!(store.get(id(n as u128)).await.unwrap()[..] == pattern(len, n as u64)[..]);
    }
    assert_eq!(remote.counts().total(), 0, "{:?}", remote.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_in_neither_place_is_not_found() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let prefix = s3.unique_prefix("segcache_store_not_found");
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(
        &tmp.path().join("cache"),
        BUDGET,
        s3.store().unwrap(),
        prefix.as_ref(),
        exact_config(),
    )
    .await;
    let err = store.get(id(42)).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("{:032x}", 42)), "{err}");
    assert!(!store.contains(id(42)));
    let stats = store.stats();
    assert_eq!((stats.not_found, stats.downloads), (1, 0), "{stats:?}");
    assert_eq!(stats.cache.reserved_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prefixes_are_refused_before_the_cache_is_touched() {
    let remote: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    for bad in ["a/../b", "a//b", "./a", ".."] {
        let opened = SegmentStore::open(
            CacheConfig::new(&dir),
            Arc::clone(&remote),
            bad,
            StoreConfig::default(),
        )
        .await;
        assert!(
            matches!(opened, Err(Error::InvalidPrefix { .. })),
            "{bad:?}: {opened:?}"
        );
        assert!(!dir.exists(), "{bad:?} created the cache directory");
    }
    // An empty prefix names objects by their hex alone.
    let (store, _) = open(&dir, BUDGET, remote, "", StoreConfig::default()).await;
    assert_eq!(store.object_path(id(1)).as_ref(), format!("{:032x}", 1));
}

#[test]
fn the_store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SegmentStore>();
    assert_send_sync::<StoreConfig>();
    assert_send_sync::<segcache::StoreStats>();
}
