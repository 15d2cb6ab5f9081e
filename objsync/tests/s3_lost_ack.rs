//! Lost-acknowledgement recovery against an S3 server: a write that reached the server but
//! whose answer was lost (`FaultyStore`'s `LostAck`) is retried, finds its own object already
//! there (same size and CRC32C) and reports `AlreadyPresent` — for a small PUT, a PUT of a
//! few MiB (a body the server may refuse before reading it), and a multipart upload whose
//! completion was lost.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStoreExt as _;
use objsync::testing::{TestS3, pattern};
use objsync::{
    Fault, FaultOp, FaultyStore, MIN_PART_SIZE, PutOutcome, RetryConfig, Uploader, UploaderConfig,
};

fn uploader(store: &FaultyStore) -> Uploader {
    Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default()
            .with_multipart_threshold(MIN_PART_SIZE as u64)
            .with_part_size(MIN_PART_SIZE)
            .with_retry(
                RetryConfig::default()
                    .with_max_attempts(4)
                    .with_base_delay(Duration::from_millis(5)),
            ),
    )
    .unwrap()
}

/// Puts `bytes` with the first acknowledgement of `op` lost, and checks the recovery.
async fn lost_ack(scenario: &str, op: FaultOp, bytes: Bytes) {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = FaultyStore::counting(s3.store().unwrap());
    let path = s3.unique_prefix(scenario).join("object");
    store.script(op, [Fault::LostAck]);
    let uploader = uploader(&store);
    let what = format!("{} bytes, lost {op:?} on {}", bytes.len(), s3.description());

    let outcome = uploader.put(&path, bytes.clone()).await;
    assert_eq!(outcome.unwrap(), PutOutcome::AlreadyPresent, "{what}");
    let faults = store.counts();
    assert_eq!(faults.lost_acks, 1, "{what}: {faults:?}");
    let stats = uploader.stats();
    assert_eq!(stats.already_present, 1, "{what}: {stats:?}");
    assert!(stats.retries >= 1, "{what}: {stats:?}");
    assert_eq!(stats.conflicts, 0, "{what}: {stats:?}");

    let held = store
        .inner()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        held == bytes,
        "{what}: the object differs from what was put"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_put_acknowledgement_is_recovered() {
    lost_ack("s3_lost_ack_put", FaultOp::Put, pattern(4096, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_of_a_large_put_is_recovered() {
    lost_ack("s3_lost_ack_large_put", FaultOp::Put, pattern(4 << 20, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_multipart_completion_is_recovered() {
    let bytes = pattern(MIN_PART_SIZE + 1000, 3);
    lost_ack("s3_lost_ack_multipart", FaultOp::Complete, bytes).await;
}
