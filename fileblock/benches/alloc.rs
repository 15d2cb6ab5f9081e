//! Allocation benchmarks of `FileBlock` against the `offset-allocator` crate, both driven by the
//! same seeded alloc/free sequence, and the space each leaves behind.
//!
//! Criterion ids (read by `cargo xtask bench`): `fileblock_alloc_free/{ours,offset_allocator}`.
//! One criterion iteration replays the timed part of the sequence, `TIMED_OPS` operations
//! (`iter_custom`; the row converts with `OpsPerSec { ops_per_iter: TIMED_OPS }`). Utilisation is
//! not a time: it is written to `$PAGESTORE_BENCH_METRICS/fileblock_utilization.json` before the
//! timed group runs.
//!
//! # The sequence
//!
//! Sizes are whole allocation units (512 bytes, `Config::default()`), 1 ..= 64 units drawn
//! log-uniformly (`⌊65^u⌋`, so about half the requests are 1 to 7 units). The sequence first
//! allocates `LIVE` blocks, then mixes allocations and frees with even odds (a free takes a
//! live block chosen uniformly at random), keeping the live count near `LIVE`. Both sides keep
//! their handles in a `Vec` and free with `swap_remove` of the index the sequence names, so
//! they free the same blocks in the same order. The first `LIVE + CHURN_OPS` operations are
//! replayed outside the clock on a fresh allocator for every iteration (so the timed part
//! starts from the same fragmented state each time); the last `TIMED_OPS` are timed.
//!
//! - **ours**: `FileBlock::alloc(units × 512)` and `FileBlock::free(id)` on a file over
//!   `MemPageIo`, never flushed while timed: the public API's costs (the id table, the checks,
//!   error plumbing) are part of what a caller pays, so they are in.
//! - **`offset_allocator`**: `offset_allocator::Allocator::allocate(units)` and `free`, with a
//!   capacity (2^30 units) and node count (2^18) it never runs out of on this sequence.
//!
//! # Utilisation
//!
//! After the whole sequence, live bytes over the bytes each side needs:
//! - ours: the file's length after a closing `flush()` (superblocks, body and the map it just
//!   wrote), or the superblocks plus the largest the body ever was if that is more. The bench
//!   never writes block bytes, so a block allocated at the end of the body and freed before the
//!   flush did not lengthen the file here, though it would have for a caller that wrote it;
//!   between commits the body only grows, so its length just before the flush is its peak.
//! - offset-allocator: the highest end offset any allocation ever had (the span its
//!   allocations occupy), in the same units.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use fileblock::{BlockId, Config, FileBlock};
use offset_allocator::{Allocation, Allocator};
use pageio::{MemPageIo, PageIo};

/// Page size of the file.
const PAGE_SIZE: usize = 4096;
/// The allocation unit of `Config::default()`, in bytes.
const UNIT: u64 = 512;
/// The largest request, in units.
const MAX_UNITS: u32 = 64;
/// The live blocks the sequence keeps, about.
const LIVE: usize = 32 * 1024;
/// Mixed operations after the initial allocations, before the timed part (untimed).
const CHURN_OPS: usize = 32 * 1024;
/// Operations of the timed part: one criterion iteration. `xtask/src/bench/rows.rs` converts
/// with this figure.
const TIMED_OPS: usize = 128 * 1024;
/// The offset allocator's space, in units: far more than the sequence ever spans.
const OA_CAPACITY: u32 = 1 << 30;
/// The offset allocator's node count: live blocks plus free regions stay well below it.
const OA_MAX_ALLOCS: u32 = 1 << 18;

/// `SplitMix64`: a small, seeded, good-enough PRNG so the sequence is the same in every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is far below what a benchmark sees).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// One step of the sequence.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Allocate this many units; the handle is pushed on the live list.
    Alloc(u32),
    /// Free the live block at this index of the live list (`swap_remove`).
    Free(u32),
}

/// The pre-generated sequence and what its end state must be.
struct Sequence {
    ops: Vec<Op>,
    /// Operations replayed outside the clock before the timed part.
    prefix: usize,
    /// Sizes (units) of the live blocks at the end, in live-list order.
    final_sizes: Vec<u32>,
}

impl Sequence {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64(seed);
        let units = |rng: &mut SplitMix64| {
            (f64::from(MAX_UNITS + 1).powf(rng.next_f64()) as u32).clamp(1, MAX_UNITS)
        };
        let mut ops = Vec::with_capacity(LIVE + CHURN_OPS + TIMED_OPS);
        let mut live: Vec<u32> = Vec::with_capacity(2 * LIVE);
        for _ in 0..LIVE {
            let n = units(&mut rng);
            ops.push(Op::Alloc(n));
            live.push(n);
        }
        for _ in 0..CHURN_OPS + TIMED_OPS {
            let alloc = if live.len() <= LIVE / 2 {
                true
            } else if live.len() >= LIVE * 3 / 2 {
                false
            } else {
                rng.next_u64() & 1 == 0
            };
            if alloc {
                let n = units(&mut rng);
                ops.push(Op::Alloc(n));
                live.push(n);
            } else {
                let index = rng.below(live.len());
                ops.push(Op::Free(u32::try_from(index).expect("index fits in u32")));
                live.swap_remove(index);
            }
        }
        Self {
            ops,
            prefix: LIVE + CHURN_OPS,
            final_sizes: live,
        }
    }

    fn live_units(&self) -> u64 {
        self.final_sizes.iter().map(|&u| u64::from(u)).sum()
    }
}

/// An allocator the sequence can drive.
trait Mix {
    type Handle: Copy;
    fn alloc(&mut self, units: u32) -> Self::Handle;
    fn free(&mut self, handle: Self::Handle);
}

impl Mix for FileBlock {
    type Handle = BlockId;

    #[inline]
    fn alloc(&mut self, units: u32) -> BlockId {
        FileBlock::alloc(self, u64::from(units) * UNIT).expect("alloc")
    }

    #[inline]
    fn free(&mut self, id: BlockId) {
        FileBlock::free(self, id).expect("free");
    }
}

impl Mix for Allocator {
    type Handle = Allocation;

    #[inline]
    fn alloc(&mut self, units: u32) -> Allocation {
        self.allocate(units).expect("offset-allocator out of space")
    }

    #[inline]
    fn free(&mut self, allocation: Allocation) {
        Allocator::free(self, allocation);
    }
}

/// The offset allocator, recording the highest end offset any allocation had (check run only).
struct Spanning {
    inner: Allocator,
    span: u64,
}

impl Mix for Spanning {
    type Handle = Allocation;

    fn alloc(&mut self, units: u32) -> Allocation {
        let a = self.inner.alloc(units);
        self.span = self.span.max(u64::from(a.offset) + u64::from(units));
        a
    }

    fn free(&mut self, allocation: Allocation) {
        self.inner.free(allocation);
    }
}

/// Runs `ops` on `a`, keeping the live handles in `live`.
#[inline]
fn replay<A: Mix>(a: &mut A, live: &mut Vec<A::Handle>, ops: &[Op]) {
    for &op in ops {
        match op {
            Op::Alloc(units) => live.push(a.alloc(units)),
            Op::Free(index) => a.free(live.swap_remove(index as usize)),
        }
    }
}

fn fresh_file() -> FileBlock {
    let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(PAGE_SIZE).expect("MemPageIo"));
    FileBlock::create(io, Config::default()).expect("create")
}

fn fresh_offset_allocator() -> Allocator {
    Allocator::with_max_allocs(OA_CAPACITY, OA_MAX_ALLOCS)
}

/// `iters` replays of the timed part, each on a fresh allocator brought to the same state by
/// the untimed prefix; returns the time of the timed parts only. Set-up, the end-state check
/// and the drop are outside the clock.
fn timed<A: Mix>(seq: &Sequence, iters: u64, fresh: impl Fn() -> A) -> Duration {
    let (prefix, rest) = seq.ops.split_at(seq.prefix);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut a = fresh();
        let mut live = Vec::with_capacity(2 * LIVE);
        replay(&mut a, &mut live, prefix);
        let start = Instant::now();
        replay(&mut a, black_box(&mut live), black_box(rest));
        total += start.elapsed();
        assert_eq!(live.len(), seq.final_sizes.len(), "live blocks at the end");
        drop(black_box((a, live)));
    }
    total
}

/// What the check runs found: the utilisation figures.
struct Space {
    live_bytes: u64,
    ours_file_len: u64,
    ours_body_peak: u64,
    ours_bytes: u64,
    ours_extents: usize,
    ours_map_len: u64,
    oa_span_bytes: u64,
}

/// Replays the whole sequence once on each side, checks both end states and measures the space
/// they use. Doubles as the warm-up (criterion's quick mode has none).
fn check_runs(seq: &Sequence) -> Space {
    let live_bytes = seq.live_units() * UNIT;

    let mut file = fresh_file();
    let mut ids = Vec::with_capacity(2 * LIVE);
    replay(&mut file, &mut ids, &seq.ops);
    let before = file.stats();
    assert_eq!(
        before.live_blocks,
        seq.final_sizes.len(),
        "ours: live blocks"
    );
    assert_eq!(before.used, live_bytes, "ours: used bytes");
    for (&id, &units) in ids.iter().zip(&seq.final_sizes) {
        assert_eq!(
            file.size(id).expect("live"),
            u64::from(units) * UNIT,
            "ours: size of {id}"
        );
    }
    file.flush().expect("flush");
    let problems = file.validate();
    assert!(problems.is_empty(), "ours: {problems:#?}");
    let after = file.stats();
    assert_eq!(after.used, live_bytes, "ours: used bytes after the flush");
    let data_start = 2 * PAGE_SIZE as u64;
    let ours_bytes = after.file_len.max(data_start + before.body_len);

    let mut oa = Spanning {
        inner: fresh_offset_allocator(),
        span: 0,
    };
    let mut allocs = Vec::with_capacity(2 * LIVE);
    replay(&mut oa, &mut allocs, &seq.ops);
    let mut placed: Vec<(u64, u64)> = allocs
        .iter()
        .zip(&seq.final_sizes)
        .map(|(&a, &units)| {
            assert_eq!(oa.inner.allocation_size(a), units, "offset-allocator: size");
            (u64::from(a.offset), u64::from(units))
        })
        .collect();
    placed.sort_unstable();
    for pair in placed.windows(2) {
        assert!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "offset-allocator: allocations overlap: {pair:?}"
        );
    }
    let end = placed.last().map_or(0, |&(o, u)| o + u);
    assert!(end <= oa.span, "offset-allocator: span below the last end");

    Space {
        live_bytes,
        ours_file_len: after.file_len,
        ours_body_peak: before.body_len,
        ours_bytes,
        ours_extents: after.extents,
        ours_map_len: after.map_len,
        oa_span_bytes: oa.span * UNIT,
    }
}

/// Writes `$PAGESTORE_BENCH_METRICS/fileblock_utilization.json`.
fn write_utilization(seq: &Sequence, space: &Space) {
    let ours = space.live_bytes as f64 / space.ours_bytes as f64;
    let baseline = space.live_bytes as f64 / space.oa_span_bytes as f64;
    let json = format!(
        "{{\"ours\": {ours}, \"baseline_value\": {baseline}, \"extra\": {{\"live_bytes\": {}, \
         \"live_blocks\": {}, \"ops\": {}, \"ours_file_bytes\": {}, \"ours_file_len\": {}, \
         \"ours_body_peak_bytes\": {}, \"ours_map_bytes\": {}, \"ours_extents\": {}, \
         \"offset_allocator_span_bytes\": {}}}}}\n",
        space.live_bytes,
        seq.final_sizes.len(),
        seq.ops.len(),
        space.ours_bytes,
        space.ours_file_len,
        space.ours_body_peak,
        space.ours_map_len,
        space.ours_extents,
        space.oa_span_bytes,
    );
    let path = metrics_dir().join("fileblock_utilization.json");
    std::fs::write(&path, &json).expect("write metrics");
    eprintln!(
        "fileblock_utilization: ours {ours:.4} ({} live / {} file bytes), offset-allocator \
         {baseline:.4} ({} span bytes) -> {}",
        space.live_bytes,
        space.ours_bytes,
        space.oa_span_bytes,
        path.display()
    );
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

fn bench_alloc_free(c: &mut Criterion, seq: &Sequence) {
    let mut group = c.benchmark_group("fileblock_alloc_free");
    // One iteration is ~10^5 operations plus an untimed set-up of half as many.
    group.sample_size(10);
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| timed(seq, iters, fresh_file));
    });
    group.bench_function("offset_allocator", |b| {
        b.iter_custom(|iters| timed(seq, iters, fresh_offset_allocator));
    });
    group.finish();
}

fn main() {
    // `cargo bench` (and so `cargo xtask bench`) passes `--bench`; nextest's listing and
    // `cargo test` do not, and then the binary lists no benchmarks and does nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seq = Sequence::new(0xF11E_B10C_0001);
    let space = check_runs(&seq);
    write_utilization(&seq, &space);
    let mut c = Criterion::default().configure_from_args();
    bench_alloc_free(&mut c, &seq);
    c.final_summary();
}
