//! The object-store workload: a [`SegmentStore`] over a [`FaultyStore`] wrapping `InMemory`,
//! with a cache budget far below the data put, so that segments are evicted and downloaded
//! again all the time.
//!
//! Writers put segments whose bytes follow from their number (see [`segment`]); a put that
//! returns `Ok` is *acknowledged*. A put that fails, or that a crash cut short, is *in doubt*:
//! the object may or may not be in the store, and a writer puts it again later with the same
//! bytes, which must succeed (create-once, checked by checksum). Readers get acknowledged
//! segments and compare every byte; now and then they get an in-doubt one too, which must be
//! either not found or exactly right.
//!
//! The run is a series of epochs. Each ends in a crash: every task is aborted wherever it is,
//! the store is dropped without any close, a torn segment file and a leftover temporary file
//! are planted in the cache directory, and the store is opened again on the same directory
//! (the remote survives). The reopened cache must reject the planted files and serve every
//! acknowledged segment sampled, byte for byte. At the deadline the workers stop and every
//! acknowledged segment is checked once more.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use objsync::{
    DownloaderConfig, Fault, FaultConfig, FaultCounts, FaultOp, FaultyStore, HedgeConfig,
    RetryConfig, UploaderConfig,
};
use segcache::{CacheConfig, ScanReport, SegmentId, SegmentStore, StoreConfig, StoreStats};
use tokio::task::JoinHandle;

use super::tally::{Kind, Tally, lock};
use crate::rng::{Rng, mix};
use crate::steps::fmt_bytes;

/// Writer tasks.
const WRITERS: u64 = 3;
/// Reader tasks.
const READERS: u64 = 3;
/// The cache budget: a few dozen average segments.
const BUDGET: u64 = 4 << 20;
/// Most segments are 1 byte to this long (skewed towards small ones).
const MAX_SEGMENT: u64 = 192 << 10;
/// The share of big segments, which go up as multipart uploads and come down as ranges.
const BIG_SHARE: f64 = 0.02;
/// Big segments are this long at least...
const BIG_MIN: u64 = 1 << 20;
/// ... and shorter than this.
const BIG_MAX: u64 = 3 << 20;
/// Puts of one segment before the soak calls it stuck.
const MAX_PUT_ATTEMPTS: u32 = 25;
/// Gets of an acknowledged segment that may fail with a transient error before it counts.
const GET_ATTEMPTS: u32 = 6;
/// Readers pick from the newest this many acknowledged segments half of the time (cache hits).
const RECENT: usize = 96;
/// Acknowledged segments checked right after each reopen.
const REOPEN_SAMPLE: usize = 24;
/// Tasks checking every acknowledged segment at the end.
const FINAL_CHECKERS: usize = 8;
/// Epochs (the time between crashes) last from this long...
const EPOCH_MIN_MS: u64 = 300;
/// ... to this much longer.
const EPOCH_SPREAD_MS: u64 = 2000;
/// How often the epoch loop reads the fault counters and scripts a damaged body.
const TICK: Duration = Duration::from_millis(100);
/// The object-name prefix.
const PREFIX: &str = "soak/segments";
/// The top bits of segment ids the writers put.
const PUT_TAG: u128 = 0x50A4 << 112;
/// The top bits of planted (never put) segment ids.
const PLANT_TAG: u128 = 0x7042 << 112;

/// The id of segment `n`.
fn id(n: u64) -> SegmentId {
    SegmentId::from_u128(PUT_TAG | u128::from(n))
}

/// The bytes of segment `n` under `seed`: its length and contents follow from both.
pub fn segment(seed: u64, n: u64) -> Bytes {
    let mut rng = Rng::new(mix(seed ^ mix(n)));
    let len = if rng.chance(BIG_SHARE) {
        BIG_MIN + rng.below(BIG_MAX - BIG_MIN)
    } else {
        let r = rng.next_f64();
        1 + (r * r * (MAX_SEGMENT - 1) as f64) as u64
    };
    let mut out = vec![0; len as usize];
    rng.fill(&mut out);
    Bytes::from(out)
}

/// What the workers of all epochs share.
struct Shared {
    seed: u64,
    tally: Arc<Tally>,
    /// The next fresh segment number.
    next: AtomicU64,
    /// Acknowledged segments, in acknowledgement order.
    acked: Mutex<Vec<u64>>,
    /// Segments whose put failed or was cut short, with the puts tried so far.
    doubt: Mutex<Vec<(u64, u32)>>,
    /// Segments being put now, with the puts tried before this one.
    in_flight: Mutex<HashMap<u64, u32>>,
    /// Set at the deadline: workers finish their operation and return.
    stop: AtomicBool,
    /// Puts that returned an error.
    put_errors: AtomicU64,
    /// Puts of a segment that had been in doubt that succeeded.
    redone: AtomicU64,
    /// Bytes of the acknowledged segments.
    acked_bytes: AtomicU64,
}

impl Shared {
    fn put_failed(&self, n: u64, attempts: u32, err: &segcache::Error) {
        self.put_errors.fetch_add(1, Ordering::Relaxed);
        if is_conflict(err) {
            self.tally.problem(
                Kind::Corrupt,
                format!(
                    "segment {n}: the store holds other bytes under its name: {}",
                    chain(err)
                ),
            );
        } else if attempts >= MAX_PUT_ATTEMPTS {
            self.tally.problem(
                Kind::Error,
                format!(
                    "segment {n}: put failed {attempts} times with the same bytes, last: {}",
                    chain(err)
                ),
            );
        } else {
            lock(&self.doubt).push((n, attempts));
        }
    }

    /// An acknowledged segment: half of the time one of the newest, else any.
    fn pick_acked(&self, rng: &mut Rng) -> Option<u64> {
        let acked = lock(&self.acked);
        let len = acked.len();
        if len == 0 {
            return None;
        }
        let at = if rng.chance(0.5) {
            len - 1 - rng.index(len.min(RECENT))
        } else {
            rng.index(len)
        };
        Some(acked[at])
    }

    fn pick_doubt(&self, rng: &mut Rng) -> Option<u64> {
        let doubt = lock(&self.doubt);
        (!doubt.is_empty()).then(|| doubt[rng.index(doubt.len())].0)
    }
}

/// An error and its sources on one line.
fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Whether objsync refused the upload because the store holds other bytes under the name.
fn is_conflict(err: &segcache::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        let found = e
            .downcast_ref::<objsync::Error>()
            .or_else(|| e.downcast_ref::<Box<objsync::Error>>().map(AsRef::as_ref));
        if matches!(found, Some(objsync::Error::Conflict { .. })) {
            return true;
        }
        source = e.source();
    }
    false
}

async fn writer(store: SegmentStore, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let (n, attempts) = lock(&shared.doubt)
            .pop()
            .unwrap_or_else(|| (shared.next.fetch_add(1, Ordering::Relaxed), 0));
        lock(&shared.in_flight).insert(n, attempts);
        let bytes = segment(shared.seed, n);
        let result = store.put(id(n), bytes.clone()).await;
        // No `.await` from here to the end of the iteration: an abort cannot land between
        // the bookkeeping steps, so every segment is in flight, acknowledged or in doubt.
        shared.tally.op();
        lock(&shared.in_flight).remove(&n);
        match result {
            Ok(pinned) => {
                shared
                    .tally
                    .verify(format_args!("segment {n} as put"), &bytes, &pinned);
                if attempts > 0 {
                    shared.redone.fetch_add(1, Ordering::Relaxed);
                }
                shared
                    .acked_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                lock(&shared.acked).push(n);
            }
            Err(err) => shared.put_failed(n, attempts + 1, &err),
        }
    }
}

async fn reader(store: SegmentStore, shared: Arc<Shared>, mut rng: Rng) {
    while !shared.stop.load(Ordering::Relaxed) {
        if rng.chance(0.1)
            && let Some(n) = shared.pick_doubt(&mut rng)
        {
            probe_unacked(&store, &shared.tally, id(n), Some(shared.seed)).await;
        } else if let Some(n) = shared.pick_acked(&mut rng) {
            check_acked(&store, &shared, n).await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        shared.tally.op();
        // A cache hit waits only when tokio's cooperative budget runs out; yielding once per
        // operation lets a crash (an abort of every task) land between operations promptly.
        tokio::task::yield_now().await;
    }
}

/// Gets acknowledged segment `n` and compares every byte. Not found is a loss; transient
/// errors are retried a few times.
async fn check_acked(store: &SegmentStore, shared: &Shared, n: u64) {
    let expected = segment(shared.seed, n);
    for attempt in 1..=GET_ATTEMPTS {
        match store.get(id(n)).await {
            Ok(got) => {
                shared
                    .tally
                    .verify(format_args!("segment {n}"), &expected, &got);
                return;
            }
            Err(err) if err.is_not_found() => {
                shared.tally.problem(
                    Kind::Lost,
                    format!("segment {n} was acknowledged, and now it is not found"),
                );
                return;
            }
            Err(err) if attempt == GET_ATTEMPTS => {
                shared.tally.problem(
                    Kind::Error,
                    format!(
                        "segment {n}: get failed {GET_ATTEMPTS} times, last: {}",
                        chain(&err)
                    ),
                );
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
        }
    }
}

/// Gets a segment that was never acknowledged: it may be missing, or (when `seed` says what
/// it would hold, for a put in doubt) exactly right; a planted segment (`seed` `None`) must be
/// missing.
async fn probe_unacked(store: &SegmentStore, tally: &Tally, id: SegmentId, seed: Option<u64>) {
    // Missing is fine; so is a transient error.
    let Ok(got) = store.get(id).await else {
        return;
    };
    match seed {
        Some(seed) => {
            let n = (id.to_u128() & u128::from(u64::MAX)) as u64;
            tally.verify(
                format_args!("segment {n} (put in doubt)"),
                &segment(seed, n),
                &got,
            );
        }
        None => tally.problem(
            Kind::Corrupt,
            format!(
                "segment {id} was never put, yet a get returned {} bytes",
                got.len()
            ),
        ),
    }
}

fn fault_config(seed: u64) -> FaultConfig {
    FaultConfig::default()
        .with_seed(seed)
        .with_tail(0.03, Duration::from_millis(25))
        .with_error_rate(0.05)
        .with_lost_ack_rate(0.05)
        .with_chunk_size(64 << 10)
}

fn store_config() -> StoreConfig {
    let retry = |attempts| {
        RetryConfig::default()
            .with_max_attempts(attempts)
            .with_base_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(20))
    };
    StoreConfig::default()
        .with_uploader(
            UploaderConfig::default()
                // Few attempts, so that some puts do fail and are put again.
                .with_retry(retry(2))
                .with_max_concurrency(8)
                .with_multipart_threshold(BIG_MIN)
                .with_min_part_size(64 << 10)
                .with_part_size(256 << 10),
        )
        .with_downloader(
            DownloaderConfig::default()
                .with_retry(retry(3))
                .with_max_concurrency(8)
                .with_range_threshold(BIG_MIN)
                .with_range_size(256 << 10)
                .with_hedge(
                    HedgeConfig::default()
                        .with_min_samples(16)
                        .with_min_delay(Duration::from_millis(5)),
                ),
        )
}

/// Faults injected into the object store so far: errors, lost acknowledgements, tail
/// latencies and damaged bodies.
fn fault_total(counts: &FaultCounts) -> u64 {
    counts.errors + counts.lost_acks + counts.delayed + counts.damaged
}

/// Opens the store on `dir`, waiting while the crashed instance still holds the directory
/// (its last blocking tasks may still be running when the new one starts).
async fn open(
    dir: &Path,
    remote: &Arc<dyn ObjectStore>,
) -> anyhow::Result<(SegmentStore, ScanReport)> {
    let start = Instant::now();
    loop {
        let cache = CacheConfig::new(dir).with_max_bytes(BUDGET);
        match SegmentStore::open(cache, Arc::clone(remote), PREFIX, store_config()).await {
            Ok(opened) => return Ok(opened),
            Err(segcache::Error::Locked { .. }) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("opening the segment store on {}", dir.display()));
            }
        }
    }
}

/// Files planted in the cache directory after a crash, which the next open must clean up.
struct Planted {
    /// A torn segment file's id: never put, so it must not be served.
    torn: SegmentId,
    torn_path: PathBuf,
    /// A leftover temporary file.
    temp_path: PathBuf,
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .with_context(|| format!("planting {}", path.display()))
}

fn plant(dir: &Path, rng: &mut Rng) -> anyhow::Result<Planted> {
    let n = rng.next_u64();
    let torn = SegmentId::from_u128(PLANT_TAG | u128::from(n));
    let mut garbage = vec![0; 1 + rng.index(4096)];
    rng.fill(&mut garbage);
    let torn_path = dir.join(format!("{torn}.seg"));
    write_private(&torn_path, &garbage)?;
    let temp_path = dir.join(format!(".tmp-soak-{n:016x}"));
    write_private(&temp_path, &garbage)?;
    Ok(Planted {
        torn,
        torn_path,
        temp_path,
    })
}

/// The checks right after a reopen: the planted files are gone and the torn segment is not
/// served, and a sample of acknowledged segments reads back right. Counts a crash survived
/// when they find nothing wrong.
async fn check_reopen(
    store: &SegmentStore,
    report: &ScanReport,
    shared: &Shared,
    planted: &Planted,
    rng: &mut Rng,
) {
    let tally = &shared.tally;
    let before = tally.problem_count();
    let torn_name = planted.torn_path.file_name().unwrap_or_default();
    for rejected in &report.rejected {
        if rejected.name != torn_name {
            tally.problem(
                Kind::Error,
                format!(
                    "the scan after a crash rejected {} ({:?}), which the crash should not \
                     have torn",
                    rejected.name.display(),
                    rejected.reason
                ),
            );
        }
    }
    if planted.torn_path.exists() || store.contains(planted.torn) {
        tally.problem(
            Kind::Corrupt,
            format!(
                "the planted torn segment {} survived the scan",
                planted.torn
            ),
        );
    }
    if planted.temp_path.exists() {
        tally.problem(
            Kind::Error,
            format!(
                "the leftover temporary file {} survived the scan",
                planted.temp_path.display()
            ),
        );
    }
    probe_unacked(store, tally, planted.torn, None).await;
    let sample: Vec<u64> = {
        let acked = lock(&shared.acked);
        let newest = acked.iter().rev().take(REOPEN_SAMPLE / 2).copied();
        let any = (0..REOPEN_SAMPLE / 2).filter_map(|_| acked.get(rng.index(acked.len())).copied());
        newest.chain(any).collect()
    };
    for n in sample {
        check_acked(store, shared, n).await;
        tally.op();
    }
    tally.crash_checked(before);
}

/// Gets every acknowledged segment once, from a few tasks.
async fn check_all(store: &SegmentStore, shared: &Arc<Shared>) {
    let ids: Arc<Vec<u64>> = Arc::new(lock(&shared.acked).clone());
    let tasks: Vec<_> = (0..FINAL_CHECKERS)
        .map(|k| {
            let (store, shared, ids) = (store.clone(), Arc::clone(shared), Arc::clone(&ids));
            tokio::spawn(async move {
                for &n in ids.iter().skip(k).step_by(FINAL_CHECKERS) {
                    check_acked(&store, &shared, n).await;
                    shared.tally.op();
                }
            })
        })
        .collect();
    join(tasks, &shared.tally).await;
}

/// Waits for `tasks`; a panicked one is an error (a cancelled one is what a crash does).
async fn join(tasks: Vec<JoinHandle<()>>, tally: &Tally) {
    for task in tasks {
        if let Err(err) = task.await
            && !err.is_cancelled()
        {
            tally.problem(Kind::Error, format!("a segment worker failed: {err}"));
        }
    }
}

/// Store counters summed over the epochs (each reopened store starts from zero).
#[derive(Default)]
struct Totals {
    already_present: u64,
    gets: u64,
    hits: u64,
    downloads: u64,
    evictions: u64,
}

impl Totals {
    fn add(&mut self, s: &StoreStats) {
        self.already_present += s.remote_already_present;
        self.gets += s.gets;
        self.hits += s.hits;
        self.downloads += s.downloads;
        self.evictions += s.cache.evictions;
    }
}

/// Runs the workload in `dir` until `deadline`, then checks every acknowledged segment.
pub fn run(dir: &Path, seed: u64, deadline: Instant, tally: Arc<Tally>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    runtime.block_on(soak(dir, seed, deadline, tally))
}

async fn soak(dir: &Path, seed: u64, deadline: Instant, tally: Arc<Tally>) -> anyhow::Result<()> {
    let faulty = FaultyStore::new(Arc::new(InMemory::new()), fault_config(seed));
    let remote: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
    let cache_dir = dir.join("cache");
    let shared = Arc::new(Shared {
        seed,
        tally: Arc::clone(&tally),
        next: AtomicU64::new(0),
        acked: Mutex::new(Vec::new()),
        doubt: Mutex::new(Vec::new()),
        in_flight: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
        put_errors: AtomicU64::new(0),
        redone: AtomicU64::new(0),
        acked_bytes: AtomicU64::new(0),
    });
    let mut rng = Rng::derive(seed, 0x5E6);
    let mut planted: Option<Planted> = None;
    let mut totals = Totals::default();
    let mut crashes = 0u64;
    for epoch in 0u64.. {
        let (store, report) = open(&cache_dir, &remote).await?;
        if let Some(planted) = planted.take() {
            check_reopen(&store, &report, &shared, &planted, &mut rng).await;
        }
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            tasks.push(tokio::spawn(writer(store.clone(), Arc::clone(&shared))));
        }
        for r in 0..READERS {
            let rng = Rng::derive(seed, (epoch << 8) | r);
            tasks.push(tokio::spawn(reader(
                store.clone(),
                Arc::clone(&shared),
                rng,
            )));
        }
        let length = Duration::from_millis(EPOCH_MIN_MS + rng.below(EPOCH_SPREAD_MS));
        let end = (Instant::now() + length).min(deadline);
        while let Some(left) = end
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            tokio::time::sleep(left.min(TICK)).await;
            tally.set_store_faults(fault_total(&faulty.counts()));
            // Damaged bodies are scripted: the downloader must notice them and fetch again.
            if rng.chance(0.2) {
                let fault = if rng.chance(0.5) {
                    Fault::Corrupt
                } else {
                    Fault::Truncate
                };
                faulty.script(FaultOp::Get, [fault]);
            }
        }
        if Instant::now() >= deadline {
            shared.stop.store(true, Ordering::Relaxed);
            join(tasks, &tally).await;
            check_all(&store, &shared).await;
            totals.add(&store.stats());
            break;
        }
        // The crash: every task stops wherever it is, and the store goes without a close.
        for task in &tasks {
            task.abort();
        }
        join(tasks, &tally).await;
        let cut_short: Vec<(u64, u32)> = lock(&shared.in_flight).drain().collect();
        lock(&shared.doubt).extend(cut_short);
        totals.add(&store.stats());
        drop(store);
        planted = Some(plant(&cache_dir, &mut rng)?);
        crashes += 1;
    }
    let counts = faulty.counts();
    tally.set_store_faults(fault_total(&counts));
    let acked = lock(&shared.acked).len();
    println!(
        "soak: segments: {acked} acknowledged ({}), {} of them put again after a failed or \
         cut-short put; {} put errors, {} lost acks found already stored; {} gets ({} hits, {} \
         downloads), {} evictions, {crashes} crashes; store faults: {} errors, {} lost acks, {} \
         tail latencies, {} damaged bodies",
        fmt_bytes(shared.acked_bytes.load(Ordering::Relaxed)),
        shared.redone.load(Ordering::Relaxed),
        shared.put_errors.load(Ordering::Relaxed),
        totals.already_present,
        totals.gets,
        totals.hits,
        totals.downloads,
        totals.evictions,
        counts.errors,
        counts.lost_acks,
        counts.delayed,
        counts.damaged,
    );
    Ok(())
}
