//! `SegmentStore` over a faulty store: a put whose upload fails returns the error and leaves no
//! local copy; a lost acknowledgement is success; an object already there with other bytes is
//! refused; under random errors, lost acks and a latency tail, every put that returned `Ok` is
//! cached and stored, and every one that failed is not cached.

mod store_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use objsync::testing::TestS3;
use objsync::{
    DownloaderConfig, Fault, FaultConfig, FaultOp, FaultyStore, HedgeConfig, UploaderConfig,
};
use segcache::{Error, SegmentStore, StoreConfig};
use store_support::{id, open, retry, segment};

fn config(attempts: u32) -> StoreConfig {
    StoreConfig::default()
        .with_uploader(UploaderConfig::default().with_retry(retry(attempts)))
        .with_downloader(
            DownloaderConfig::default()
                .with_hedge(
                    HedgeConfig::default()
                        .with_min_samples(4)
                        .with_min_delay(Duration::from_millis(5)),
                )
                .with_retry(retry(attempts)),
        )
}

/// Segment files and temporary files in the cache directory.
fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            Path::new(name).extension().is_some_and(|ext| ext == "seg") || name.starts_with(".tmp-")
        })
        .collect()
}

async fn setup(
    scenario: &str,
    attempts: u32,
) -> (TestS3, FaultyStore, SegmentStore, tempfile::TempDir) {
    let s3 = TestS3::from_env_or_start().unwrap();
    let remote = FaultyStore::counting(s3.store().unwrap());
    let prefix = s3.unique_prefix(scenario);
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(
        &tmp.path().join("cache"),
        64 << 20,
        Arc::new(remote.clone()) as Arc<dyn ObjectStore>,
        prefix.as_ref(),
        config(attempts),
    )
    .await;
    (s3, remote, store, tmp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_leaves_no_local_copy() {
    let (_s3, remote, store, tmp) = setup("segcache_store_put_error", 3).await;
    remote.script(FaultOp::Put, [Fault::Error; 3]);
    let bytes = segment(1, 200 << 10);
    let err = store.put(id(1), bytes.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Upload { .. }), "{err:?}");
    assert!(!store.contains(id(1)));
    assert_eq!(files(&tmp.path().join("cache")), Vec::<String>::new());
    let stats = store.stats();
    assert_eq!((stats.puts, stats.put_failures), (0, 1), "{stats:?}");
    assert_eq!(stats.cache.reserved_bytes, 0, "{stats:?}");
    assert_eq!(stats.cache.segments, 0, "{stats:?}");
    // Nothing reached the store either, so a get finds nothing anywhere.
    assert!(store.get(id(1)).await.unwrap_err().is_not_found());

    // The same put succeeds once the store behaves.
    let pinned = store.put(id(1), bytes.clone()).await.unwrap();
    assert!(pinned[..] == bytes[..]);
    assert_eq!(files(&tmp.path().join("cache")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_is_success() {
    let (_s3, remote, store, _tmp) = setup("segcache_store_lost_ack", 4).await;
    remote.script(FaultOp::Put, [Fault::LostAck]);
    let bytes = segment(2, 200 << 10);
    let pinned = store.put(id(2), bytes.clone()).await.unwrap();
    assert!(pinned[..] == bytes[..]);
    assert_eq!(remote.counts().lost_acks, 1);
    let stats = store.stats();
    assert_eq!(
        (stats.puts, stats.remote_already_present),
        (1, 1),
        "{stats:?}"
    );
    assert!(store.contains(id(2)));
    let held = remote
        .inner()
        .get(&store.object_path(id(2)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(held == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bytes_under_the_name_are_a_conflict() {
    let (_s3, remote, store, tmp) = setup("segcache_store_conflict", 2).await;
    remote
        .inner()
        .put(
            &store.object_path(id(3)),
            PutPayload::from_static(b"someone else's"),
        )
        .await
        .unwrap();
    let err = store.put(id(3), segment(3, 1000)).await.unwrap_err();
    let Error::Upload { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(**source, objsync::Error::Conflict { .. }),
        "{source:?}"
    );
    assert!(!store.contains(id(3)));
    assert_eq!(files(&tmp.path().join("cache")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_and_a_latency_tail_keep_local_copies_honest() {
    const N: u128 = 40;
    let (_s3, remote, store, tmp) = setup("segcache_store_random_faults", 3).await;
    remote.set_config(
        FaultConfig::default()
            .with_seed(11)
            .with_latency(Duration::from_millis(1))
            .with_tail(0.1, Duration::from_millis(40))
            .with_error_rate(0.15)
            .with_lost_ack_rate(0.15),
    );
    let puts: Vec<_> = (0..N)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.put(id(n), segment(n, 64 << 10)).await.map(drop) })
        })
        .collect();
    let mut ok = Vec::new();
    for (n, put) in (0..N).zip(puts) {
        match put.await.unwrap() {
            Ok(()) => {
                assert!(
                    store.contains(id(n)),
                    "put {n} returned Ok without a local copy"
                );
                ok.push(n);
            }
            Err(err) => {
                assert!(matches!(err, Error::Upload { .. }), "{err:?}");
                assert!(
                    !store.contains(id(n)),
                    "put {n} failed and left a local copy"
                );
            }
        }
    }
    let faults = remote.counts();
    assert!(faults.errors + faults.lost_acks > 0, "{faults:?}");
    let stats = store.stats();
    assert_eq!(stats.puts, ok.len() as u64, "{stats:?}");
    assert_eq!(stats.cache.segments, ok.len(), "{stats:?}");
    assert_eq!(stats.cache.reserved_bytes, 0, "{stats:?}");
    assert_eq!(files(&tmp.path().join("cache")).len(), ok.len());

    // Every acknowledged segment is in the store: drop the local copies and read them back
    // (with hedging on, through the same faults, only data errors retried).
    remote.set_config(
        FaultConfig::default()
            .with_seed(12)
            .with_latency(Duration::from_millis(1))
            .with_tail(0.1, Duration::from_millis(40))
            .with_error_rate(0.05)
            .with_ops([FaultOp::Get]),
    );
    for &n in &ok {
        assert!(store.evict_local(id(n)).unwrap());
    }
    for &n in &ok {
        let got = store.get(id(n)).await.unwrap();
        assert!(got[..] == segment(n, 64 << 10)[..], "segment {n}");
    }
    assert_eq!(store.stats().downloads, ok.len() as u64);
}
