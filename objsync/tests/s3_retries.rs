//! Retries under injected faults against an S3 server: scripted and random transient errors,
//! lost acknowledgements and damaged GET bodies are retried with backoff until the objects
//! are stored and read back intact; a multipart upload that fails for good is aborted; a
//! missing object is not retried.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt as _;
use objsync::testing::{CountingStore, TestS3, pattern};
use objsync::{
    Downloader, DownloaderConfig, Error, Fault, FaultConfig, FaultOp, FaultyStore, HedgeConfig,
    MIN_PART_SIZE, PutOutcome, RetryConfig, Uploader, UploaderConfig,
};

fn retry(max_attempts: u32) -> RetryConfig {
    RetryConfig::default()
        .with_max_attempts(max_attempts)
        .with_base_delay(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(20))
}

fn downloader(store: &FaultyStore, max_attempts: u32) -> Downloader {
    Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_hedge(HedgeConfig::disabled())
            .with_retry(retry(max_attempts)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_failures_are_retried_until_success() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = FaultyStore::counting(s3.store().unwrap());
    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default().with_retry(retry(5)),
    )
    .unwrap();
    let downloader = downloader(&store, 5);
    let path = s3.unique_prefix("s3_retries_scripted").join("object");
    let bytes = pattern(100_000, 1);

    store.script(FaultOp::Put, [Fault::Error, Fault::Error]);
    assert_eq!(
        uploader.put(&path, bytes.clone()).await.unwrap(),
        PutOutcome::Created,
        "on {}",
        s3.description()
    );
    assert_eq!(uploader.stats().retries, 2);

    // A failed GET, a short body and a flipped byte: each is caught and retried.
    store.script(
        FaultOp::Get,
        [Fault::Error, Fault::Truncate, Fault::Corrupt],
    );
    assert!(downloader.get(&path).await.unwrap() == bytes);
    assert_eq!(downloader.stats().retries, 3);
    let faults = store.counts();
    assert_eq!((faults.errors, faults.damaged), (3, 2), "{faults:?}");
    assert_eq!(faults.of(FaultOp::Get), 4, "{faults:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_neither_lose_nor_damage_objects() {
    let s3 = TestS3::from_env_or_start().unwrap();
    // One request at a time, so the seeded faults fall on the same requests every run.
    let store = FaultyStore::new(
        s3.store().unwrap(),
        FaultConfig::default()
            .with_seed(7)
            .with_error_rate(0.25)
            .with_lost_ack_rate(0.2),
    );
    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default().with_retry(retry(12)),
    )
    .unwrap();
    let downloader = downloader(&store, 12);
    let prefix = s3.unique_prefix("s3_retries_random");
    let objects: Vec<_> = (0..12_u64)
        .map(|i| {
            let len = 1 + (i as usize * 5_003) % (64 << 10);
            (prefix.clone().join(format!("object-{i}")), pattern(len, i))
        })
        .collect();
    for (path, bytes) in &objects {
        let outcome = uploader.put(path, bytes.clone()).await;
        // A lost acknowledgement makes the put report the object as already there.
        assert!(
            outcome.is_ok(),
            "{path} on {}: {outcome:?}",
            s3.description()
        );
    }
    for (path, bytes) in &objects {
        assert!(downloader.get(path).await.unwrap() == *bytes, "{path}");
        let held = store
            .inner()
            .get(path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(held == *bytes, "{path} is stored damaged");
    }
    let faults = store.counts();
    assert!(faults.errors > 0 && faults.lost_acks > 0, "{faults:?}");
    let retries = uploader.stats().retries + downloader.stats().retries;
    assert!(
        retries >= faults.errors + faults.lost_acks,
        "{retries} retries, {faults:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_that_fails_for_good_is_aborted() {
    let s3 = TestS3::from_env_or_start().unwrap();
    // Faults outside, counting inside: the counts are what reached the server.
    let server_side = CountingStore::new(s3.store().unwrap());
    let store = FaultyStore::counting(Arc::new(server_side.clone()));
    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default()
            .with_multipart_threshold(MIN_PART_SIZE as u64)
            .with_part_size(MIN_PART_SIZE)
            .with_part_concurrency(1)
            .with_retry(retry(2)),
    )
    .unwrap();
    let path = s3.unique_prefix("s3_retries_abort").join("object");
    // Every first part of both attempts fails.
    store.script(FaultOp::Part, [Fault::Error, Fault::Error]);
    let err = uploader
        .put(&path, pattern(MIN_PART_SIZE + 10, 9))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let counts = server_side.counts();
    assert_eq!(counts.multipart_starts, 2, "{counts:?}");
    assert_eq!(
        counts.aborts, 2,
        "each failed upload is aborted: {counts:?}"
    );
    assert_eq!(counts.completes, 0, "{counts:?}");
    assert_eq!(uploader.stats().multipart_aborts, 2);
    let head = server_side.head(&path).await;
    assert!(
        matches!(head, Err(object_store::Error::NotFound { .. })),
        "{head:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_is_not_retried() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = FaultyStore::counting(s3.store().unwrap());
    let downloader = downloader(&store, 5);
    let path = s3.unique_prefix("s3_retries_missing").join("nothing");
    let err = downloader.get(&path).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(!matches!(err, Error::Conflict { .. }));
    assert_eq!(store.counts().of(FaultOp::Get), 1);
    assert_eq!(downloader.stats().retries, 0);
}
