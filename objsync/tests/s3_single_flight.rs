//! Single-flight GETs against an S3 server: N concurrent `get`s of one object make one GET
//! request (counted by a wrapper at the store) and all receive the same bytes; a `get` after
//! that download finished makes a new request (it is not a cache); other objects are not held
//! up or merged.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use objsync::testing::{CountingStore, TestS3, pattern};
use objsync::{
    Downloader, DownloaderConfig, FaultConfig, FaultyStore, HedgeConfig, RetryConfig, Uploader,
    UploaderConfig,
};

const N: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_of_one_object_make_one_request() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let prefix = s3.unique_prefix("s3_single_flight");
    let (a, b) = (prefix.clone().join("a"), prefix.join("b"));
    let (bytes_a, bytes_b) = (pattern(200_000, 1), pattern(3_000, 2));
    let uploader = Uploader::new(s3.store().unwrap(), UploaderConfig::default()).unwrap();
    uploader.put(&a, bytes_a.clone()).await.unwrap();
    uploader.put(&b, bytes_b.clone()).await.unwrap();

    // Every request takes 200 ms longer, so all the gets below are issued while the first
    // request is still in flight.
    let slow = FaultyStore::new(
        s3.store().unwrap(),
        FaultConfig::default().with_latency(Duration::from_millis(200)),
    );
    let store = CountingStore::new(Arc::new(slow));
    let downloader = Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_hedge(HedgeConfig::disabled())
            .with_retry(RetryConfig::none()),
    )
    .unwrap();

    let gets = (0..N).map(|_| {
        let downloader = downloader.clone();
        let a = a.clone();
        async move { downloader.get(&a).await }
    });
    let other = downloader.get(&b);
    let (results, other) = tokio::join!(join_all(gets), other);
    for result in results {
        assert!(result.unwrap() == bytes_a, "on {}", s3.description());
    }
    assert!(other.unwrap() == bytes_b);
    let counts = store.counts();
    assert_eq!(
        counts.gets, 2,
        "{N} gets of a and one of b: one request each; {counts:?}"
    );
    assert_eq!(downloader.stats().coalesced, (N - 1) as u64);

    // The download is over: the next get asks the store again.
    assert!(downloader.get(&a).await.unwrap() == bytes_a);
    assert_eq!(store.counts().gets, 3);
}
