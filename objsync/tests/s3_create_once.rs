//! Create-once semantics against an S3 server: the first put of a path creates the object, the
//! same bytes again are `AlreadyPresent`, other bytes are `Error::Conflict` and leave the first
//! object in place — for single PUTs (conditional `If-None-Match`) and multipart uploads (an
//! existence check first).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use objsync::testing::{CountingStore, TestS3, pattern};
use objsync::{Error, MIN_PART_SIZE, PutOutcome, RetryConfig, Uploader, UploaderConfig};

fn uploader(store: &CountingStore) -> Uploader {
    Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default()
            .with_multipart_threshold(MIN_PART_SIZE as u64)
            .with_part_size(MIN_PART_SIZE)
            .with_retry(RetryConfig::default().with_base_delay(Duration::from_millis(5))),
    )
    .unwrap()
}

async fn check_create_once(s3: &TestS3, store: &CountingStore, path: &Path, first: Bytes) {
    let uploader = uploader(store);
    let what = format!("{} bytes on {}", first.len(), s3.description());
    assert_eq!(
        uploader.put(path, first.clone()).await.unwrap(),
        PutOutcome::Created,
        "{what}"
    );
    assert_eq!(
        uploader.put(path, first.clone()).await.unwrap(),
        PutOutcome::AlreadyPresent,
        "{what}"
    );

    // Same size, one byte different: only the checksum tells them apart.
    let mut other = first.to_vec();
    other[first.len() / 2] ^= 0xff;
    let err = uploader.put(path, Bytes::from(other)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{what}: {err:?}");
    // One byte longer (the same upload path as the original: single PUT or multipart).
    let mut longer = first.to_vec();
    longer.push(0);
    let err = uploader.put(path, Bytes::from(longer)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{what}: {err:?}");

    let held = store.get(path).await.unwrap().bytes().await.unwrap();
    assert!(
        held == first,
        "{what}: a conflicting put changed the object"
    );
    let stats = uploader.stats();
    assert_eq!(
        (stats.already_present, stats.conflicts),
        (1, 2),
        "{what}: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_single_puts_are_create_once() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = CountingStore::new(s3.store().unwrap());
    let path = s3.unique_prefix("s3_create_once_small").join("object");
    check_create_once(&s3, &store, &path, pattern(10_000, 1)).await;
    assert_eq!(store.counts().multipart_starts, 0);
}

/// A single PUT of a few MiB: a server may answer a failed `If-None-Match` before it has read
/// the body and close the connection, so the client sees a broken pipe, not the 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_single_puts_are_create_once() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = CountingStore::new(s3.store().unwrap());
    let path = s3.unique_prefix("s3_create_once_large").join("object");
    check_create_once(&s3, &store, &path, pattern(MIN_PART_SIZE - 1, 2)).await;
    assert_eq!(store.counts().multipart_starts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_are_create_once() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = CountingStore::new(s3.store().unwrap());
    let path = s3.unique_prefix("s3_create_once_multipart").join("object");
    // Two parts: 5 MiB and one byte.
    check_create_once(&s3, &store, &path, pattern(MIN_PART_SIZE + 1, 3)).await;
    let counts = store.counts();
    // Only the first put uploaded: the others found the object by its HEAD.
    assert_eq!(counts.multipart_starts, 1, "{counts:?}");
    assert_eq!(counts.completes, 1, "{counts:?}");
}
