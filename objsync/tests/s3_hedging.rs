//! Hedged GETs against an S3 server: once enough latencies are known, a GET held up by an
//! injected slow request (`FaultyStore`'s scripted delay) is overtaken by its hedge, which
//! wins while the slow one is cancelled; no hedge before `min_samples`, none beyond the budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use objsync::testing::{TestS3, pattern};
use objsync::{
    Downloader, DownloaderConfig, Fault, FaultOp, FaultyStore, HedgeConfig, RetryConfig, Uploader,
    UploaderConfig,
};

/// How long the scripted slow request takes: far beyond any hedge delay, so a GET that
/// returns well before it was served by the hedge.
const SLOW: Duration = Duration::from_secs(10);
const MIN_SAMPLES: usize = 5;

fn hedge(max_hedge_ratio: f64) -> HedgeConfig {
    HedgeConfig::default()
        .with_percentile(0.5)
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(200))
        .with_min_samples(MIN_SAMPLES)
        .with_window(64)
        .with_max_hedge_ratio(max_hedge_ratio)
}

struct Setup {
    s3: TestS3,
    store: FaultyStore,
    path: Path,
    bytes: bytes::Bytes,
}

async fn setup(scenario: &str) -> Setup {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = FaultyStore::counting(s3.store().unwrap());
    let path = s3.unique_prefix(scenario).join("object");
    let bytes = pattern(50_000, 5);
    Uploader::new(s3.store().unwrap(), UploaderConfig::default())
        .unwrap()
        .put(&path, bytes.clone())
        .await
        .unwrap();
    Setup {
        s3,
        store,
        path,
        bytes,
    }
}

fn downloader(store: &FaultyStore, hedge: HedgeConfig) -> Downloader {
    Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_hedge(hedge)
            .with_retry(RetryConfig::none()),
    )
    .unwrap()
}

/// Sequential GETs until the downloader has a hedge delay.
async fn warm_up(downloader: &Downloader, setup: &Setup) {
    for _ in 0..MIN_SAMPLES {
        assert!(downloader.get(&setup.path).await.unwrap() == setup.bytes);
    }
    let delay = downloader
        .hedge_delay()
        .expect("enough samples for a delay");
    assert!(
        (Duration::from_millis(20)..=Duration::from_millis(200)).contains(&delay),
        "{delay:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_overtakes_a_slow_get_and_the_slow_one_is_cancelled() {
    let setup = setup("s3_hedging_wins").await;
    let downloader = downloader(&setup.store, hedge(1.0));
    warm_up(&downloader, &setup).await;

    // The next GET (the primary) is slow; the one after it (the hedge) is not.
    setup.store.script(FaultOp::Get, [Fault::Delay(SLOW)]);
    let before = downloader.stats();
    let start = Instant::now();
    let got = downloader.get(&setup.path).await.unwrap();
    let took = start.elapsed();
    assert!(got == setup.bytes);
    assert!(
        took < SLOW / 4,
        "the GET took {took:?}: the hedge did not win on {}",
        setup.s3.description()
    );
    let after = downloader.stats();
    assert_eq!(after.hedges_raised - before.hedges_raised, 1, "{after:?}");
    assert_eq!(after.hedges_won - before.hedges_won, 1, "{after:?}");
    // The loser was dropped, not left sleeping: nothing is in flight.
    assert_eq!(setup.store.counts().in_flight, 0);
    assert_eq!(after.in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hedge_before_min_samples() {
    let setup = setup("s3_hedging_cold").await;
    let downloader = downloader(&setup.store, hedge(1.0));
    let slow = Duration::from_millis(300);
    setup.store.script(FaultOp::Get, [Fault::Delay(slow)]);
    let start = Instant::now();
    assert!(downloader.get(&setup.path).await.unwrap() == setup.bytes);
    assert!(start.elapsed() >= slow, "the slow GET itself answered");
    let stats = downloader.stats();
    assert_eq!(stats.hedges_raised, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hedge_beyond_the_budget() {
    let setup = setup("s3_hedging_budget").await;
    let downloader = downloader(&setup.store, hedge(0.0));
    warm_up(&downloader, &setup).await;
    let slow = Duration::from_millis(300);
    setup.store.script(FaultOp::Get, [Fault::Delay(slow)]);
    let start = Instant::now();
    assert!(downloader.get(&setup.path).await.unwrap() == setup.bytes);
    assert!(start.elapsed() >= slow, "the slow GET itself answered");
    let stats = downloader.stats();
    assert_eq!(stats.hedges_raised, 0, "{stats:?}");
    assert!(
        stats.hedges_skipped >= 1,
        "the due hedge was skipped: {stats:?}"
    );
}
