//! Tail latency of hedged GETs (BENCH.md row `objsync/hedged_p99`): the p99 latency of GETs of
//! small objects through [`Downloader`] from a [`FaultyStore`] over `InMemory` where 5% of
//! requests take 500 ms longer, with hedging on, against the same with hedging off.
//!
//! Latencies are measured on tokio's paused clock: the `Downloader` (its hedge delay and
//! latency window) and the `FaultyStore` (its injected latency) both use tokio's time, so the
//! runtime jumps from one timer to the next and the run is deterministic and takes well under a
//! second of real time, whatever the injected latencies. The base latency is 5 ms with a small
//! jitter (+0..3 ms in 1 ms steps, from two more seeded `FaultyStore` layers) so that the hedge
//! delay is a real percentile of the window; the tail is drawn from the outermost layer, with
//! the same seeds on both sides.
//!
//! Both sides use the same stack, objects, request order and concurrency (`CALLERS` GETs in
//! flight); the downloader's own request bound is larger, so that a hedge is never refused for
//! want of a request slot. Every GET's bytes are checked. Not a criterion benchmark: the figure
//! is a percentile of virtual latencies, written to
//! `$PAGESTORE_BENCH_METRICS/objsync_hedged_p99.json` with the hedge counts and the share of
//! extra requests (which the budget keeps at most 10%).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;
use objsync::testing::pattern;
use objsync::{
    Counters, Downloader, DownloaderConfig, FaultConfig, FaultOp, FaultyStore, HedgeConfig,
    Uploader, UploaderConfig,
};

/// Distinct objects, read round-robin (so no two GETs in flight share a key and coalesce).
const OBJECTS: usize = 1000;
/// The size of every object.
const OBJECT_SIZE: usize = 4096;
/// Measured GETs, after the warm-up GETs (which fill the hedger's latency window).
const GETS: usize = 2000;
const WARM_UP_GETS: usize = 200;
/// GETs in flight at once.
const CALLERS: usize = 8;
/// The base latency of every request, and the two jitter steps, each added with probability
/// one half.
const BASE_LATENCY: Duration = Duration::from_millis(5);
const JITTER: [(u64, Duration); 2] = [
    (0x7177_E001, Duration::from_millis(1)),
    (0x7177_E002, Duration::from_millis(2)),
];
/// The tail: this share of requests takes `TAIL_LATENCY` longer.
const TAIL_PROBABILITY: f64 = 0.05;
const TAIL_LATENCY: Duration = Duration::from_millis(500);
const TAIL_SEED: u64 = 0x7A11_0005;
/// The largest share of extra requests the row accepts.
const MAX_EXTRA_SHARE: f64 = 0.10;

/// The hedging under test.
fn hedging() -> HedgeConfig {
    HedgeConfig::default()
        .with_percentile(0.9)
        .with_max_hedge_ratio(0.1)
        .with_min_samples(20)
        .with_min_delay(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(200))
}

fn path(i: usize) -> Path {
    Path::from(format!("hedge/{i:04}"))
}

fn object(i: usize) -> Bytes {
    pattern(OBJECT_SIZE, 0x4ED6_0000 + i as u64)
}

/// What one side measured.
struct Outcome {
    /// Latency of each measured GET, in milliseconds.
    latencies_ms: Vec<f64>,
    /// Downloader counters over the measured GETs.
    stats: Counters,
    /// GET requests the store saw for the measured GETs (primaries and hedges).
    store_gets: u64,
    /// Of those, the requests that drew the tail latency.
    tail_requests: u64,
    /// The hedge delay at the end, if any.
    final_delay: Option<Duration>,
}

impl Outcome {
    /// The nearest-rank percentile `p` of the latencies.
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (p * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn extra_share(&self) -> f64 {
        (self.store_gets as f64 - GETS as f64) / GETS as f64
    }
}

/// `Counters` fields over a phase: `after - before`.
fn delta(after: Counters, before: &Counters) -> Counters {
    let mut d = after;
    d.requests -= before.requests;
    d.bytes_down -= before.bytes_down;
    d.retries -= before.retries;
    d.hedges_raised -= before.hedges_raised;
    d.hedges_won -= before.hedges_won;
    d.hedges_skipped -= before.hedges_skipped;
    d.coalesced -= before.coalesced;
    d
}

/// Runs the warm-up and the measured GETs with `hedge`, on a paused-clock runtime of its own.
fn run(hedge: HedgeConfig) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        // The objects go in through the uploader, so they carry the checksum GETs verify.
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let uploader =
            Uploader::new(Arc::clone(&memory), UploaderConfig::default()).expect("uploader");
        for i in 0..OBJECTS {
            uploader.put(&path(i), object(i)).await.expect("put");
        }
        let jittered = JITTER.iter().fold(memory, |inner, &(seed, step)| {
            Arc::new(FaultyStore::new(
                inner,
                FaultConfig::default()
                    .with_seed(seed)
                    .with_tail(0.5, step)
                    .with_ops([FaultOp::Get]),
            )) as Arc<dyn ObjectStore>
        });
        let faulty = Arc::new(FaultyStore::new(
            jittered,
            FaultConfig::default()
                .with_seed(TAIL_SEED)
                .with_latency(BASE_LATENCY)
                .with_tail(TAIL_PROBABILITY, TAIL_LATENCY)
                .with_ops([FaultOp::Get]),
        ));
        let downloader = Downloader::new(
            faulty.clone(),
            DownloaderConfig::default()
                .with_max_concurrency(4 * CALLERS)
                .with_hedge(hedge),
        )
        .expect("downloader");
        let expected: Vec<Bytes> = (0..OBJECTS).map(object).collect();

        let gets = |first: usize, count: usize| {
            let (downloader, expected) = (&downloader, &expected);
            futures::stream::iter(first..first + count)
                .map(move |n| async move {
                    let i = n % OBJECTS;
                    let start = tokio::time::Instant::now();
                    let got = downloader.get(&path(i)).await.expect("get");
                    let elapsed = start.elapsed();
                    assert!(got == expected[i], "object {i}: content");
                    elapsed.as_secs_f64() * 1e3
                })
                .buffer_unordered(CALLERS)
                .collect::<Vec<f64>>()
        };

        gets(0, WARM_UP_GETS).await;
        let before = downloader.stats();
        faulty.reset_counts();
        let latencies_ms = gets(WARM_UP_GETS, GETS).await;
        let stats = delta(downloader.stats(), &before);
        let counts = faulty.counts();
        assert_eq!(latencies_ms.len(), GETS);
        assert_eq!(stats.coalesced, 0, "no GET joined another");
        assert_eq!(stats.retries, 0, "no faults but latency");
        assert_eq!(counts.errors, 0);
        assert_eq!(
            counts.of(FaultOp::Get),
            GETS as u64 + stats.hedges_raised,
            "one request per GET, one more per hedge"
        );
        Outcome {
            latencies_ms,
            stats,
            store_gets: counts.of(FaultOp::Get),
            tail_requests: counts.delayed,
            final_delay: downloader.hedge_delay(),
        }
    })
}

fn metrics_dir() -> PathBuf {
    std::env::var_os("PAGESTORE_BENCH_METRICS").map_or_else(
        || {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let root = manifest.parent().expect("crate inside the workspace");
            root.join("target").join("bench").join("metrics")
        },
        PathBuf::from,
    )
}

fn main() {
    // `cargo bench` (and so `cargo xtask bench`) passes `--bench`; nextest's listing and
    // `cargo test` do not, and then the binary does nothing. The run is the same with and
    // without `--quick`: on the paused clock it takes well under a second.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let off = run(HedgeConfig::disabled());
    let on = run(hedging());

    assert_eq!(off.stats.hedges_raised, 0, "hedging off raises no hedges");
    assert_eq!(off.store_gets, GETS as u64);
    assert!(
        off.tail_requests > 0 && on.tail_requests > 0,
        "the seed must put requests in the tail"
    );
    let extra_share = on.extra_share();
    assert!(
        extra_share <= MAX_EXTRA_SHARE,
        "hedges added {:.1}% requests, more than {:.0}%",
        extra_share * 100.0,
        MAX_EXTRA_SHARE * 100.0
    );

    let (ours, baseline) = (on.percentile(0.99), off.percentile(0.99));
    let delay_ms = on.final_delay.map_or(-1.0, |d| d.as_secs_f64() * 1e3);
    let json = format!(
        "{{\"ours\": {ours}, \"baseline_value\": {baseline}, \"extra\": {{\"clock\": \
         \"tokio paused (virtual ms)\", \"requests\": {GETS}, \"warm_up_requests\": \
         {WARM_UP_GETS}, \"callers\": {CALLERS}, \"hedges_raised\": {}, \"hedges_won\": {}, \
         \"hedges_skipped\": {}, \"store_gets\": {}, \"extra_request_share\": {extra_share:.4}, \
         \"tail_requests\": {}, \"baseline_tail_requests\": {}, \"p50_ms\": {}, \
         \"baseline_p50_ms\": {}, \"hedge_delay_ms\": {delay_ms}}}}}\n",
        on.stats.hedges_raised,
        on.stats.hedges_won,
        on.stats.hedges_skipped,
        on.store_gets,
        on.tail_requests,
        off.tail_requests,
        on.percentile(0.5),
        off.percentile(0.5),
    );
    let dir = metrics_dir();
    std::fs::create_dir_all(&dir).expect("create metrics dir");
    let path = dir.join("objsync_hedged_p99.json");
    std::fs::write(&path, json).expect("write metrics");
    eprintln!(
        "objsync_hedged_p99: p99 {ours:.1} ms hedged vs {baseline:.1} ms unhedged over {GETS} \
         GETs; {} hedges raised, {} won, {:.1}% extra requests -> {}",
        on.stats.hedges_raised,
        on.stats.hedges_won,
        extra_share * 100.0,
        path.display()
    );
}
