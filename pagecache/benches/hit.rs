//! Hit-path benchmarks of `PageCache` against `lru::LruCache` behind a `parking_lot::Mutex` and
//! against `pread` from the OS page cache, plus the hit-ratio comparison on a Zipf trace.
//!
//! Criterion ids (read by `cargo xtask bench`): `pagecache_hit/{ours,lru_mutex,pread_4k}`,
//! `pagecache_hit_2threads/{ours,lru_mutex}`, `pagecache_hit_scaling/{ours_1k,ours_256k}`. The
//! hit ratio is not a time: it is written to `$PAGESTORE_BENCH_METRICS/pagecache_hit_ratio.json`
//! after the timed groups.
//!
//! Each group's data is built, checked and warmed up before the group starts, outside criterion's
//! clock (quick mode counts time spent in the first call of a benchmark function, set-up
//! included, against its budget), and dropped once the groups that use it are done.

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::Criterion;
use lru::LruCache;
use pagecache::{CacheConfig, PageCache};
use pageio::{MemPageIo, PageIo};
use parking_lot::Mutex;

/// Page size of every hit benchmark.
const PAGE_SIZE: usize = 4096;
/// Cached pages in `pagecache_hit` and `pagecache_hit_2threads`: 64 Ki pages, 256 MiB.
const HIT_PAGES: usize = 64 * 1024;
/// Length of the Zipf trace of the hit groups (a power of two, so the cursor wraps with a mask).
const ZIPF_TRACE_LEN: usize = 1 << 20;
/// Zipf exponent of every Zipf trace.
const ZIPF_S: f64 = 1.0;
/// Cached pages of the two scaling points.
const SCALING_SMALL: usize = 1024;
const SCALING_LARGE: usize = 256 * 1024;
/// Length of the uniform scaling traces: 4 Mi keys (16 MiB of `u32`), far past the CPU caches.
const SCALING_TRACE_LEN: usize = 1 << 22;
/// The hit-ratio run: accesses, distinct keys, capacity (10% of the keys), page size.
const RATIO_ACCESSES: usize = 1_000_000;
const RATIO_KEYS: usize = 100_000;
const RATIO_CAPACITY: usize = RATIO_KEYS / 10;
const RATIO_PAGE_SIZE: usize = 512;

/// The baseline cache: a true LRU behind one mutex, handing out `Arc` clones of the pages.
type LruMutex = Mutex<LruCache<u64, Arc<Box<[u8]>>>>;

/// `SplitMix64`: a small, seeded, good-enough PRNG so traces are the same in every run.
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

/// A random permutation of `0..n`, so the hottest Zipf ranks land on scattered keys.
fn permutation(n: usize, rng: &mut SplitMix64) -> Vec<u32> {
    let mut keys: Vec<u32> = (0..n)
        .map(|k| u32::try_from(k).expect("key fits in u32"))
        .collect();
    for i in (1..n).rev() {
        keys.swap(i, rng.below(i + 1));
    }
    keys
}

/// `len` keys drawn from a Zipf distribution with exponent `s` over `keys` keys: rank `r` (from
/// 0) has weight `1 / (r + 1)^s`, sampled by binary search in the precomputed CDF.
fn zipf_trace(keys: usize, s: f64, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64(seed);
    let mut cdf = Vec::with_capacity(keys);
    let mut total = 0.0;
    for rank in 0..keys {
        total += 1.0 / ((rank + 1) as f64).powf(s);
        cdf.push(total);
    }
    for c in &mut cdf {
        *c /= total;
    }
    let rank_to_key = permutation(keys, &mut rng);
    (0..len)
        .map(|_| {
            let u = rng.next_f64();
            let rank = cdf.partition_point(|&c| c <= u).min(keys - 1);
            rank_to_key[rank]
        })
        .collect()
}

/// `len` keys drawn uniformly from `0..keys`.
fn uniform_trace(keys: usize, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64(seed);
    (0..len)
        .map(|_| u32::try_from(rng.below(keys)).expect("key fits in u32"))
        .collect()
}

/// The byte every page of `no` is filled with (251 is prime, so neighbours differ).
fn pattern(no: u64) -> u8 {
    (no % 251) as u8
}

/// The byte each hit reads: spread over the page so hits do not all touch the first line.
fn offset(no: u64) -> usize {
    (no as usize).wrapping_mul(64) % PAGE_SIZE
}

/// A cursor over a trace whose length is a power of two; it persists across criterion's calls
/// so successive samples continue the trace instead of replaying its (warm) start.
struct Cursor<'t> {
    trace: &'t [u32],
    at: usize,
}

impl<'t> Cursor<'t> {
    fn new(trace: &'t [u32]) -> Self {
        assert!(trace.len().is_power_of_two());
        Self { trace, at: 0 }
    }

    #[inline]
    fn next_key(&mut self) -> u64 {
        let key = self.trace[self.at & (self.trace.len() - 1)];
        self.at = self.at.wrapping_add(1);
        u64::from(key)
    }
}

/// A cache over `MemPageIo` holding pages `0..pages` (capacity `pages`), each filled with its
/// pattern through `get_for_overwrite`; checked once, outside any timing.
fn filled_cache(pages: usize) -> PageCache {
    let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(PAGE_SIZE).expect("MemPageIo"));
    let cache = PageCache::new(io, CacheConfig::default().with_capacity(pages)).expect("cache");
    for no in 0..pages as u64 {
        let page = cache.get_for_overwrite(no).expect("get_for_overwrite");
        page.write().fill(pattern(no));
    }
    for no in 0..pages as u64 {
        assert_eq!(ours_hit(&cache, no), pattern(no), "page {no} content");
    }
    let stats = cache.stats();
    assert_eq!(stats.cached, pages, "every page resident");
    assert_eq!(stats.evictions, 0, "nothing evicted");
    assert_eq!(stats.pinned, 0, "nothing pinned");
    cache
}

/// The measured hit: pin, read one byte, unpin.
#[inline]
fn ours_hit(cache: &PageCache, no: u64) -> u8 {
    let page = cache.get(no).expect("cached page");
    let data = page.read();
    data[offset(no)]
}

/// The baseline with the same pages and capacity as `filled_cache(pages)`.
fn filled_lru(pages: usize) -> LruMutex {
    let mut lru = LruCache::new(NonZeroUsize::new(pages).expect("capacity > 0"));
    for no in 0..pages as u64 {
        lru.put(
            no,
            Arc::new(vec![pattern(no); PAGE_SIZE].into_boxed_slice()),
        );
    }
    let lru = Mutex::new(lru);
    for no in 0..pages as u64 {
        assert_eq!(lru_hit(&lru, no), pattern(no), "page {no} content");
    }
    lru
}

/// The baseline hit: lock, look up and clone the `Arc`, unlock, read one byte, drop the clone.
#[inline]
fn lru_hit(lru: &LruMutex, no: u64) -> u8 {
    let page = lru.lock().get(&no).cloned().expect("cached page");
    page[offset(no)]
}

/// An unlinked temporary file of `pages` pages, each filled with its pattern, read back once so
/// it sits in the OS page cache (and checked while doing so).
fn filled_file(pages: usize) -> File {
    let mut file = tempfile::tempfile().expect("temp file");
    let mut chunk = vec![0u8; PAGE_SIZE * 256];
    for first in (0..pages).step_by(256) {
        let n = 256.min(pages - first);
        for (i, page) in chunk[..n * PAGE_SIZE].chunks_mut(PAGE_SIZE).enumerate() {
            page.fill(pattern((first + i) as u64));
        }
        file.write_all(&chunk[..n * PAGE_SIZE]).expect("prewrite");
    }
    let mut buf = vec![0u8; PAGE_SIZE];
    for no in 0..pages as u64 {
        assert_eq!(
            pread_hit(&file, &mut buf, no),
            pattern(no),
            "page {no} content"
        );
    }
    file
}

/// The OS baseline: `pread` the whole 4 KiB page into `buf`, read one byte.
#[inline]
fn pread_hit(file: &File, buf: &mut [u8], no: u64) -> u8 {
    file.read_exact_at(buf, no * PAGE_SIZE as u64)
        .expect("pread");
    buf[offset(no)]
}

/// The three structures of the hit groups, each holding the same `HIT_PAGES` pages, checked and
/// warmed up on the trace before any timing.
struct HitSet {
    cache: PageCache,
    lru: LruMutex,
    file: File,
}

impl HitSet {
    fn new(trace: &[u32]) -> Self {
        let set = Self {
            cache: filled_cache(HIT_PAGES),
            lru: filled_lru(HIT_PAGES),
            file: filled_file(HIT_PAGES),
        };
        warm_up(trace, |no| ours_hit(&set.cache, no));
        warm_up(trace, |no| lru_hit(&set.lru, no));
        let mut buf = vec![0u8; PAGE_SIZE];
        warm_up(trace, |no| pread_hit(&set.file, &mut buf, no));
        set
    }
}

/// Runs the first quarter of `trace` through `op` and checks every result: criterion's quick
/// mode has no warm-up of its own, so caches, TLBs and branch predictors are warmed here.
fn warm_up(trace: &[u32], mut op: impl FnMut(u64) -> u8) {
    for &key in &trace[..trace.len() / 4] {
        let no = u64::from(key);
        assert_eq!(op(no), pattern(no), "page {no} content");
    }
}

fn bench_hit(c: &mut Criterion, trace: &[u32], set: &HitSet) {
    let mut group = c.benchmark_group("pagecache_hit");
    let mut cursor = Cursor::new(trace);
    group.bench_function("ours", |b| {
        b.iter(|| black_box(ours_hit(&set.cache, black_box(cursor.next_key()))));
    });
    let mut cursor = Cursor::new(trace);
    group.bench_function("lru_mutex", |b| {
        b.iter(|| black_box(lru_hit(&set.lru, black_box(cursor.next_key()))));
    });
    let mut cursor = Cursor::new(trace);
    let mut buf = vec![0u8; PAGE_SIZE];
    group.bench_function("pread_4k", |b| {
        b.iter(|| black_box(pread_hit(&set.file, &mut buf, black_box(cursor.next_key()))));
    });
    group.finish();
}

/// Runs `iters` operations in total on 2 threads (half each, the second starting half a trace
/// further on) released together by a barrier, and returns the wall time from the first
/// thread's start to the last thread's end; thread spawn and join are outside it.
fn two_threads(
    iters: u64,
    trace: &[u32],
    start: usize,
    op: &(impl Fn(u64) -> u8 + Sync),
) -> Duration {
    let barrier = Barrier::new(2);
    let half = iters / 2;
    let shares = [(half, start), (iters - half, start + trace.len() / 2)];
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let workers: Vec<_> = shares
            .iter()
            .map(|&(ops, at)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut cursor = Cursor { trace, at };
                    barrier.wait();
                    let begin = Instant::now();
                    for _ in 0..ops {
                        black_box(op(black_box(cursor.next_key())));
                    }
                    (begin, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let begin = spans.iter().map(|s| s.0).min().expect("2 spans");
    let end = spans.iter().map(|s| s.1).max().expect("2 spans");
    end - begin
}

fn bench_hit_2threads(c: &mut Criterion, trace: &[u32], set: &HitSet) {
    let mut group = c.benchmark_group("pagecache_hit_2threads");
    let mut start = 0;
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let elapsed = two_threads(iters, trace, start, &|no| ours_hit(&set.cache, no));
            start = start.wrapping_add(iters as usize / 2);
            elapsed
        });
    });
    let mut start = 0;
    group.bench_function("lru_mutex", |b| {
        b.iter_custom(|iters| {
            let elapsed = two_threads(iters, trace, start, &|no| lru_hit(&set.lru, no));
            start = start.wrapping_add(iters as usize / 2);
            elapsed
        });
    });
    group.finish();
}

fn bench_hit_scaling(c: &mut Criterion) {
    let points: Vec<(&str, PageCache, Vec<u32>)> = [
        ("ours_1k", SCALING_SMALL, 0x5CA1_E001),
        ("ours_256k", SCALING_LARGE, 0x5CA1_E256),
    ]
    .into_iter()
    .map(|(id, pages, seed)| {
        let cache = filled_cache(pages);
        let trace = uniform_trace(pages, SCALING_TRACE_LEN, seed);
        warm_up(&trace, |no| ours_hit(&cache, no));
        (id, cache, trace)
    })
    .collect();
    let mut group = c.benchmark_group("pagecache_hit_scaling");
    for (id, cache, trace) in &points {
        let mut cursor = Cursor::new(trace);
        group.bench_function(*id, |b| {
            b.iter(|| black_box(ours_hit(cache, black_box(cursor.next_key()))));
        });
    }
    group.finish();
}

/// Runs one Zipf trace through ours and through `lru::LruCache` with the same capacity (get +
/// drop; a miss inserts) and writes both hit ratios to the metrics file.
fn hit_ratio_metrics() {
    let trace = zipf_trace(RATIO_KEYS, ZIPF_S, RATIO_ACCESSES, 0x000F_00D5);

    let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(RATIO_PAGE_SIZE).expect("MemPageIo"));
    let cache =
        PageCache::new(io, CacheConfig::default().with_capacity(RATIO_CAPACITY)).expect("cache");
    for &key in &trace {
        drop(cache.get(u64::from(key)).expect("get"));
    }
    let stats = cache.stats();
    let ours_accesses = stats.hits + stats.misses;
    assert_eq!(stats.pinned, 0, "every pin released");
    assert!(
        stats.cached <= RATIO_CAPACITY,
        "{} cached > capacity",
        stats.cached
    );

    let mut lru = LruCache::new(NonZeroUsize::new(RATIO_CAPACITY).expect("capacity > 0"));
    let (mut lru_hits, mut lru_misses) = (0u64, 0u64);
    for &key in &trace {
        if lru.get(&key).is_some() {
            lru_hits += 1;
        } else {
            lru_misses += 1;
            lru.put(key, ());
        }
    }
    let lru_accesses = lru_hits + lru_misses;

    assert_eq!(
        ours_accesses,
        trace.len() as u64,
        "ours counted every access"
    );
    assert_eq!(
        ours_accesses, lru_accesses,
        "both caches saw the same accesses"
    );

    let ours = stats.hits as f64 / ours_accesses as f64;
    let baseline = lru_hits as f64 / lru_accesses as f64;
    let json = format!(
        "{{\"ours\": {ours}, \"baseline_value\": {baseline}, \"extra\": {{\"accesses\": {}, \
         \"keys\": {RATIO_KEYS}, \"capacity\": {RATIO_CAPACITY}, \"ours_hits\": {}, \
         \"lru_hits\": {lru_hits}}}}}\n",
        trace.len(),
        stats.hits,
    );
    let dir = std::env::var_os("PAGESTORE_BENCH_METRICS").map_or_else(
        || {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let root = manifest.parent().expect("crate inside the workspace");
            root.join("target").join("bench").join("metrics")
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("create metrics dir");
    let path = dir.join("pagecache_hit_ratio.json");
    std::fs::write(&path, &json).expect("write metrics");
    eprintln!(
        "pagecache_hit_ratio: ours {ours:.4} ({} hits), lru {baseline:.4} ({lru_hits} hits) over \
         {} accesses -> {}",
        stats.hits,
        trace.len(),
        path.display()
    );
}

fn main() {
    // `cargo bench` (and so `cargo xtask bench`) passes `--bench`; nextest's listing and
    // `cargo test` do not. Outside a bench run, building the data sets (up to 1 GiB) would only
    // slow the test suite down, so the binary lists no benchmarks and does nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    {
        let trace = zipf_trace(HIT_PAGES, ZIPF_S, ZIPF_TRACE_LEN, 0x2175_0001);
        let set = HitSet::new(&trace);
        bench_hit(&mut c, &trace, &set);
        bench_hit_2threads(&mut c, &trace, &set);
    }
    bench_hit_scaling(&mut c);
    c.final_summary();
    hit_ratio_metrics();
}
