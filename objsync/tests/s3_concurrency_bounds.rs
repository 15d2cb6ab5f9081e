//! Concurrency bounds against an S3 server, measured at the store by a counting wrapper: the
//! uploader never has more than `max_concurrency` requests or `max_queued_bytes` of objects in
//! flight, a multipart upload never more than `part_concurrency` parts, the downloader never
//! more than `max_concurrency` GETs (hedges included) nor `range_concurrency` ranges of one
//! object — and each bound is reached, so the checks are not vacuous.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use object_store::path::Path;
use objsync::testing::{CountingStore, TestS3, pattern};
use objsync::{
    Downloader, DownloaderConfig, FaultConfig, FaultyStore, HedgeConfig, MIN_PART_SIZE,
    RetryConfig, Uploader, UploaderConfig,
};

/// The S3 store behind a fixed latency (so that requests overlap), counted above it.
fn slowed(s3: &TestS3, latency: Duration) -> (CountingStore, FaultyStore) {
    let faulty = FaultyStore::new(
        s3.store().unwrap(),
        FaultConfig::default().with_latency(latency),
    );
    (CountingStore::new(Arc::new(faulty.clone())), faulty)
}

fn objects(prefix: &Path, n: u64, len: usize) -> Vec<(Path, Bytes)> {
    (0..n)
        .map(|i| (prefix.clone().join(format!("o{i}")), pattern(len, i)))
        .collect()
}

async fn put_all(uploader: &Uploader, objects: &[(Path, Bytes)]) {
    let puts = objects.iter().map(|(path, bytes)| {
        let uploader = uploader.clone();
        async move { uploader.put(path, bytes.clone()).await }
    });
    for result in join_all(puts).await {
        result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stay_within_max_concurrency_and_max_queued_bytes() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let (store, _) = slowed(&s3, Duration::from_millis(40));
    let prefix = s3.unique_prefix("s3_concurrency_uploads");

    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default().with_max_concurrency(3),
    )
    .unwrap();
    put_all(&uploader, &objects(&prefix.clone().join("a"), 12, 10_000)).await;
    let peak = store.counts().peak_in_flight;
    assert_eq!(peak, 3, "max_concurrency 3 on {}", s3.description());
    assert_eq!(uploader.stats().peak_in_flight, 3);

    // Room for two objects of 10 000 bytes at a time, and plenty of request slots.
    store.reset_peak();
    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default()
            .with_max_concurrency(8)
            .with_max_queued_bytes(20_000),
    )
    .unwrap();
    put_all(&uploader, &objects(&prefix.join("b"), 8, 10_000)).await;
    assert_eq!(
        store.counts().peak_in_flight,
        2,
        "max_queued_bytes: 2 objects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_stay_within_max_concurrency_hedges_included() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let prefix = s3.unique_prefix("s3_concurrency_downloads");
    let objects = objects(&prefix, 12, 20_000);
    put_all(
        &Uploader::new(s3.store().unwrap(), UploaderConfig::default()).unwrap(),
        &objects,
    )
    .await;
    let (store, faulty) = slowed(&s3, Duration::from_millis(40));
    let get_all = |downloader: Downloader| {
        let objects = objects.clone();
        async move {
            let gets = objects.iter().map(|(path, bytes)| {
                let downloader = downloader.clone();
                async move { assert!(downloader.get(path).await.unwrap() == *bytes) }
            });
            join_all(gets).await;
        }
    };

    let plain = Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_max_concurrency(4)
            .with_hedge(HedgeConfig::disabled())
            .with_retry(RetryConfig::none()),
    )
    .unwrap();
    get_all(plain).await;
    assert_eq!(
        store.counts().peak_in_flight,
        4,
        "max_concurrency 4 on {}",
        s3.description()
    );

    // Hedging eagerly, with a slow tail so that hedges are due: they still fit the bound.
    faulty.set_config(
        FaultConfig::default()
            .with_seed(3)
            .with_latency(Duration::from_millis(40))
            .with_tail(0.5, Duration::from_millis(300)),
    );
    store.reset_peak();
    let hedged = Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_max_concurrency(4)
            .with_hedge(
                HedgeConfig::default()
                    .with_min_samples(1)
                    .with_min_delay(Duration::from_millis(60))
                    .with_max_delay(Duration::from_millis(60))
                    .with_max_hedge_ratio(1.0),
            )
            .with_retry(RetryConfig::none()),
    )
    .unwrap();
    // One sample first, then the batch.
    assert!(hedged.get(&objects[0].0).await.unwrap() == objects[0].1);
    get_all(hedged.clone()).await;
    let stats = hedged.stats();
    assert!(stats.hedges_raised + stats.hedges_skipped > 0, "{stats:?}");
    assert!(store.counts().peak_in_flight <= 4, "{:?}", store.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_and_ranges_stay_within_their_bounds() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let (store, _) = slowed(&s3, Duration::from_millis(30));
    let path = s3.unique_prefix("s3_concurrency_parts").join("big");
    // Four parts of 5 MiB.
    let bytes = pattern(4 * MIN_PART_SIZE, 11);

    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default()
            .with_max_concurrency(8)
            .with_multipart_threshold(MIN_PART_SIZE as u64)
            .with_part_size(MIN_PART_SIZE)
            .with_part_concurrency(2),
    )
    .unwrap();
    uploader.put(&path, bytes.clone()).await.unwrap();
    let counts = store.counts();
    assert_eq!(counts.parts, 4, "{counts:?}");
    assert_eq!(
        counts.peak_in_flight,
        2,
        "part_concurrency 2 on {}",
        s3.description()
    );

    store.reset_peak();
    let downloader = Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_max_concurrency(8)
            .with_hedge(HedgeConfig::disabled())
            .with_range_threshold(1 << 20)
            .with_range_size(1 << 20)
            .with_range_concurrency(3),
    )
    .unwrap();
    assert!(downloader.get(&path).await.unwrap() == bytes);
    assert_eq!(store.counts().peak_in_flight, 3, "range_concurrency 3");
}
