//! Extent-map benchmarks of `FileBlock`: how open scales with the number of extents, and the
//! cost of committing a map of a million extents against writing and syncing as many bytes.
//!
//! Criterion ids (read by `cargo xtask bench`):
//! - `fileblock_open_scaling/{open_100k,open_1m}`: one iteration is one `FileBlock::open` (both
//!   superblocks, the map read through the block cache, decoded and checked, and the in-memory
//!   allocator built) of a file of `SMALL` or `LARGE` extents over `MemPageIo`; the drop of the
//!   opened file is outside the clock. The row is per extent, which criterion's ids cannot
//!   say, so after the group the bench times `ROUNDS` rounds of its own, each one open of the
//!   large file and `SMALL_PER_ROUND` opens of the small one (about as long), interleaved so
//!   that load from other processes falls on both points alike, and writes the median over
//!   the rounds of each point's ns per extent to
//!   `$PAGESTORE_BENCH_METRICS/fileblock_open_scaling.json` (with, as extra figures, the mean
//!   of every open criterion timed).
//! - `fileblock_flush_1m/{ours,write_fsync}`: one iteration is one `flush()` of a file of
//!   `LARGE` extents over `FdPageIo` on a temporary file, after an untimed change that dirties
//!   the allocation (alternately a one-unit alloc and its free), so every flush commits: the
//!   map (~8 MiB) is written to free space, synced, then the superblock written and synced.
//!   The baseline writes as many bytes as the map takes (`map_pages × page size`) with one
//!   `pwrite` at offset 0 of a preallocated temporary file in the same directory, then
//!   `fdatasync` (the call `FdPageIo::sync` makes).
//!
//! The files are built once, outside any timing: `extents - 2` blocks of 1 to 4 allocation
//! units, every fourth one freed (each free extent between two live blocks, so none coalesce),
//! then a flush, which leaves the create-time map's extent free at the start and the new map at
//! the end: `extents` extents, checked through `stats()` after every open and commit.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use fileblock::{BlockId, Config, FileBlock};
use pageio::{FdPageIo, MemPageIo, PageIo};

/// Page size of every file.
const PAGE_SIZE: usize = 4096;
/// The allocation unit of `Config::default()`, in bytes.
const UNIT: u64 = 512;
/// Extents of the large and the small file.
const LARGE: usize = 1_000_000;
const SMALL: usize = 100_000;
/// Interleaved rounds of the open-scaling figure, and opens of the small file in each.
const ROUNDS: usize = 9;
const SMALL_PER_ROUND: usize = LARGE / SMALL;

/// `SplitMix64`: a small, seeded, good-enough PRNG so the files are the same in every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is far below what a benchmark sees).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A new file on `io` holding exactly `extents` extents, committed.
fn build(io: Arc<dyn PageIo>, extents: usize, seed: u64) -> FileBlock {
    let mut file = FileBlock::create(io, Config::default()).expect("create");
    let mut rng = SplitMix64(seed);
    let blocks = extents - 2;
    let ids: Vec<BlockId> = (0..blocks)
        .map(|_| file.alloc((1 + rng.below(4)) * UNIT).expect("alloc"))
        .collect();
    // Every fourth block, never the last (a free tail would merge with the map placed after it).
    for &id in ids[..blocks - 1].iter().skip(1).step_by(4) {
        file.free(id).expect("free");
    }
    file.flush().expect("flush");
    let stats = file.stats();
    assert_eq!(stats.extents, extents, "extents after the build");
    assert_eq!(
        stats.live_blocks,
        blocks - (blocks - 2).div_ceil(4),
        "live blocks"
    );
    file
}

/// A committed file of `extents` extents over `MemPageIo`; the `FileBlock` that built it is
/// dropped, so the io holds only what the commit wrote.
fn mem_file(extents: usize, seed: u64) -> Arc<dyn PageIo> {
    let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(PAGE_SIZE).expect("MemPageIo"));
    drop(build(Arc::clone(&io), extents, seed));
    io
}

fn open(io: &Arc<dyn PageIo>) -> FileBlock {
    FileBlock::open(Arc::clone(io), Config::default()).expect("open")
}

/// The sum of what criterion timed for one function: opens and their time.
#[derive(Default)]
struct Tally {
    opens: u64,
    elapsed: Duration,
}

impl Tally {
    fn ns_per_open(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.opens as f64
    }
}

/// `iters` timed opens of `io`, each checked (and dropped) outside the clock.
fn timed_opens(io: &Arc<dyn PageIo>, extents: usize, iters: u64, tally: &mut Tally) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let file = black_box(open(io));
        total += start.elapsed();
        assert_eq!(file.stats().extents, extents, "extents after open");
        drop(file);
    }
    tally.opens += iters;
    tally.elapsed += total;
    total
}

fn bench_open_scaling(c: &mut Criterion) {
    let small = mem_file(SMALL, 0x0BE7_0100);
    let large = mem_file(LARGE, 0x0BE7_1000);
    // Checks, and the warm-up (quick mode has none): every invariant on the small file, the
    // extent count on both.
    {
        let file = open(&small);
        let problems = file.validate();
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(file.stats().extents, SMALL);
        assert_eq!(open(&large).stats().extents, LARGE);
    }
    let mut small_tally = Tally::default();
    let mut large_tally = Tally::default();
    let mut group = c.benchmark_group("fileblock_open_scaling");
    group.sample_size(10);
    group.bench_function("open_100k", |b| {
        b.iter_custom(|iters| timed_opens(&small, SMALL, iters, &mut small_tally));
    });
    group.bench_function("open_1m", |b| {
        b.iter_custom(|iters| timed_opens(&large, LARGE, iters, &mut large_tally));
    });
    group.finish();

    if small_tally.opens == 0 || large_tally.opens == 0 {
        // Filtered out by the command line: nothing measured, nothing to write.
        return;
    }
    let (ours, baseline) = interleaved_ns_per_extent(&small, &large);
    let json = format!(
        "{{\"ours\": {ours}, \"baseline_value\": {baseline}, \"extra\": {{\"extents_large\": \
         {LARGE}, \"extents_small\": {SMALL}, \"rounds\": {ROUNDS}, \"small_opens_per_round\": \
         {SMALL_PER_ROUND}, \"criterion_ns_per_extent_large\": {}, \
         \"criterion_ns_per_extent_small\": {}, \"criterion_opens_large\": {}, \
         \"criterion_opens_small\": {}}}}}\n",
        large_tally.ns_per_open() / LARGE as f64,
        small_tally.ns_per_open() / SMALL as f64,
        large_tally.opens,
        small_tally.opens,
    );
    let path = metrics_dir().join("fileblock_open_scaling.json");
    std::fs::write(&path, &json).expect("write metrics");
    eprintln!(
        "fileblock_open_scaling: {ours:.2} ns/extent at {LARGE}, {baseline:.2} ns/extent at \
         {SMALL} (medians of {ROUNDS} interleaved rounds) -> {}",
        path.display()
    );
}

/// Median ns per extent of an open of the large and of the small file over `ROUNDS`
/// interleaved rounds; each open is checked and dropped outside the clock.
fn interleaved_ns_per_extent(small: &Arc<dyn PageIo>, large: &Arc<dyn PageIo>) -> (f64, f64) {
    let ns_per_extent = |io, extents, opens: usize| {
        let mut tally = Tally::default();
        timed_opens(io, extents, opens as u64, &mut tally);
        tally.ns_per_open() / extents as f64
    };
    let (mut large_ns, mut small_ns): (Vec<f64>, Vec<f64>) = (0..ROUNDS)
        .map(|_| {
            (
                ns_per_extent(large, LARGE, 1),
                ns_per_extent(small, SMALL, SMALL_PER_ROUND),
            )
        })
        .unzip();
    (median(&mut large_ns), median(&mut small_ns))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_unstable_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Dirties the allocation without changing the extent count: allocates a one-unit block (into
/// a one-unit free extent) or frees the one allocated last time.
fn touch(file: &mut FileBlock, spare: &mut Option<BlockId>) {
    match spare.take() {
        Some(id) => file.free(id).expect("free"),
        None => *spare = Some(file.alloc(UNIT).expect("alloc")),
    }
}

fn bench_flush(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let io: Arc<dyn PageIo> =
        Arc::new(FdPageIo::create(dir.path().join("flush.fblk"), PAGE_SIZE).expect("FdPageIo"));
    let mut file = build(io, LARGE, 0x0F1C_1000);
    let mut spare = None;
    // Warm-up: the map alternates between two places; after these commits both have been
    // written, and the extent count stays within one of `LARGE`.
    for _ in 0..4 {
        touch(&mut file, &mut spare);
        file.flush().expect("flush");
    }
    let map_bytes = file.superblock().map_pages as usize * PAGE_SIZE;
    let records = file.superblock().map_records as usize;
    assert!(records >= LARGE - 1, "{records} records");

    let baseline_path = dir.path().join("baseline.bin");
    let baseline = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&baseline_path)
        .expect("baseline file");
    let bytes = vec![0xA5u8; map_bytes];
    for _ in 0..2 {
        write_fsync(&baseline, &bytes);
    }

    let mut group = c.benchmark_group("fileblock_flush_1m");
    group.sample_size(10);
    let generation = file.superblock().generation;
    let mut flushes = 0;
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                touch(&mut file, &mut spare);
                let start = Instant::now();
                file.flush().expect("flush");
                total += start.elapsed();
            }
            flushes += iters;
            total
        });
    });
    group.bench_function("write_fsync", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                write_fsync(&baseline, black_box(&bytes));
            }
            start.elapsed()
        });
    });
    group.finish();

    // Every flush committed, and the map still holds about a million records.
    assert_eq!(
        file.superblock().generation,
        generation + flushes,
        "commits"
    );
    let stats = file.stats();
    assert!(
        (LARGE..=LARGE + 1).contains(&stats.extents),
        "{} extents",
        stats.extents
    );
    assert_eq!(
        baseline.metadata().expect("metadata").len(),
        map_bytes as u64
    );
    eprintln!(
        "fileblock_flush_1m: map of {} records in {map_bytes} bytes; {flushes} timed flushes",
        file.superblock().map_records
    );
}

/// The baseline: one sequential write of `bytes` at offset 0, then `fdatasync`.
fn write_fsync(file: &File, bytes: &[u8]) {
    file.write_all_at(bytes, 0).expect("write");
    file.sync_data().expect("fdatasync");
}

/// `$PAGESTORE_BENCH_METRICS`, or `target/bench/metrics` of the workspace; created.
fn metrics_dir() -> PathBuf {
    let dir = std::env::var_os("PAGESTORE_BENCH_METRICS").map_or_else(
        || {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let root = manifest.parent().expect("crate inside the workspace");
            root.join("target").join("bench").join("metrics")
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("create metrics dir");
    dir
}

fn main() {
    // `cargo bench` (and so `cargo xtask bench`) passes `--bench`; nextest's listing and
    // `cargo test` do not, and then the binary lists no benchmarks and does nothing (building
    // the million-extent files would only slow the test suite down).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_open_scaling(&mut c);
    bench_flush(&mut c);
    c.final_summary();
}
