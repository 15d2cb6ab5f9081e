//! `segcache/hot_get`: `SegmentCache::get` of a cached, mapped segment, read one byte, drop the
//! `SegmentRef`, on a Zipf trace over 4096 segments of 64 KiB, against `pagecache/hit`
//! (`PageCache::get` + read guard + one byte + drop) on the same trace over the same number of
//! 4 KiB pages, measured in this run.
//!
//! Criterion ids (read by `cargo xtask bench`): `segcache_hot_get/{ours,pagecache_hit}`.
//!
//! A hit never waits: the `get` future is polled once with a no-op waker (see `common::now`),
//! so what is timed is the cache's hit path (one lock, an `Arc` clone, the pin's release) and
//! no executor. Set-up (segment files written, the cache opened over them, every segment mapped
//! and its data checksummed on that first map, every byte checked) and a warm-up pass over the
//! trace happen before the group starts, outside criterion's clock.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use pagecache::PageCache;
use pageio::{MemPageIo, PageIo};
use segcache::{CacheConfig, SegmentCache, SegmentId};

use common::{create_cache_dir, is_bench_run, now, write_segment_file};

/// Cached segments (and pages of the baseline).
const SEGMENTS: usize = 4096;
/// Data bytes per segment.
const SEGMENT_LEN: usize = 64 * 1024;
/// Page size of the baseline.
const PAGE_SIZE: usize = 4096;
/// Length of the Zipf trace (a power of two, so the cursor wraps with a mask).
const TRACE_LEN: usize = 1 << 20;
/// Zipf exponent.
const ZIPF_S: f64 = 1.0;

/// `SplitMix64`, seeded, so every run replays the same trace.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `len` keys in `0..keys`, Zipf-distributed with exponent `s` (rank `r` weighs
/// `(r + 1)^-s`); ranks are shuffled onto keys so the hot keys are scattered.
fn zipf_trace(keys: usize, s: f64, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64(seed);
    let mut cdf: Vec<f64> = (1..=keys)
        .scan(0.0, |sum, rank| {
            *sum += (rank as f64).powf(-s);
            Some(*sum)
        })
        .collect();
    let total = cdf[keys - 1];
    for c in &mut cdf {
        *c /= total;
    }
    let mut key_of_rank: Vec<u32> = (0..keys as u32).collect();
    for i in (1..keys).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        key_of_rank.swap(i, j);
    }
    (0..len)
        .map(|_| {
            let u = rng.unit();
            key_of_rank[cdf.partition_point(|&c| c <= u).min(keys - 1)]
        })
        .collect()
}

/// The byte every data byte of object `no` holds (segment or page).
fn pattern(no: u64) -> u8 {
    (no % 251) as u8
}

/// The byte a hit reads: the same offset inside segment `no` as inside page `no`.
fn offset(no: u64) -> usize {
    (no as usize).wrapping_mul(64) % PAGE_SIZE
}

/// A cursor over the trace that carries on across criterion's calls.
struct Cursor<'t> {
    trace: &'t [u32],
    at: usize,
}

impl Cursor<'_> {
    #[inline]
    fn next_key(&mut self) -> u64 {
        let key = self.trace[self.at & (self.trace.len() - 1)];
        self.at = self.at.wrapping_add(1);
        u64::from(key)
    }
}

/// The measured hit: `get` (ready at once), read one byte, drop the pin.
#[inline]
fn ours_hit(cache: &SegmentCache, no: u64) -> u8 {
    let seg = now(cache.get(SegmentId::from_u128(u128::from(no))))
        .expect("get")
        .expect("cached segment");
    seg[offset(no)]
}

/// The baseline hit: pin the page, take its read guard, read one byte, drop both.
#[inline]
fn pagecache_hit(cache: &PageCache, no: u64) -> u8 {
    let page = cache.get(no).expect("cached page");
    let data = page.read();
    data[offset(no)]
}

/// A cache over `SEGMENTS` segment files written in `dir`, every one mapped and checked.
fn filled_segcache(dir: &std::path::Path) -> SegmentCache {
    create_cache_dir(dir);
    for no in 0..SEGMENTS as u64 {
        write_segment_file(dir, u128::from(no), &vec![pattern(no); SEGMENT_LEN]);
    }
    let disk_bytes = (SEGMENTS * (SEGMENT_LEN + 40)) as u64;
    let config = CacheConfig::new(dir)
        // Twice what the segments take: nothing is ever evicted.
        .with_max_bytes(2 * disk_bytes)
        // Every segment keeps its mapping (a first map briefly needs two handles).
        .with_max_handles(SEGMENTS + 64);
    let (cache, report) = now(SegmentCache::open(config)).expect("open");
    assert_eq!(report.loaded, SEGMENTS, "every segment file loaded");
    assert!(report.rejected.is_empty(), "rejected {:?}", report.rejected);
    assert!(
        report.unexpected.is_empty(),
        "unexpected {:?}",
        report.unexpected
    );
    for no in 0..SEGMENTS as u64 {
        // The first `get` maps the segment and verifies its data checksum.
        let seg = now(cache.get(SegmentId::from_u128(u128::from(no))))
            .expect("get")
            .expect("cached");
        assert_eq!(seg.len(), SEGMENT_LEN, "segment {no} length");
        assert!(
            seg.iter().all(|&b| b == pattern(no)),
            "segment {no} content"
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.segments, SEGMENTS, "every segment cached");
    assert_eq!(stats.mapped, SEGMENTS, "every segment mapped");
    assert_eq!(stats.pinned, 0, "every pin released");
    assert_eq!(stats.evictions, 0, "nothing evicted");
    cache
}

/// The baseline: a `PageCache` of `SEGMENTS` pages (capacity `SEGMENTS`), each filled with its
/// pattern, all resident.
fn filled_pagecache() -> PageCache {
    let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(PAGE_SIZE).expect("MemPageIo"));
    let config = pagecache::CacheConfig::default().with_capacity(SEGMENTS);
    let cache = PageCache::new(io, config).expect("page cache");
    for no in 0..SEGMENTS as u64 {
        cache
            .get_for_overwrite(no)
            .expect("get_for_overwrite")
            .write()
            .fill(pattern(no));
    }
    for no in 0..SEGMENTS as u64 {
        let page = cache.get(no).expect("get");
        assert!(page.read().iter().all(|&b| b == pattern(no)), "page {no}");
    }
    let stats = cache.stats();
    assert_eq!(stats.cached, SEGMENTS, "every page resident");
    assert_eq!(stats.evictions, 0, "nothing evicted");
    cache
}

/// Runs the first quarter of the trace through `op`, checking every byte read.
fn warm_up(trace: &[u32], op: impl Fn(u64) -> u8) {
    for &key in &trace[..trace.len() / 4] {
        let no = u64::from(key);
        assert_eq!(op(no), pattern(no), "object {no}");
    }
}

fn main() {
    if !is_bench_run() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();

    let tmp = tempfile::tempdir().expect("tempdir");
    let segs = filled_segcache(&tmp.path().join("segments"));
    let pages = filled_pagecache();
    let trace = zipf_trace(SEGMENTS, ZIPF_S, TRACE_LEN, 0x5E6C_0001);
    warm_up(&trace, |no| ours_hit(&segs, no));
    warm_up(&trace, |no| pagecache_hit(&pages, no));
    let hits_before = segs.stats().hits;

    let mut group = c.benchmark_group("segcache_hot_get");
    let mut cursor = Cursor {
        trace: &trace,
        at: 0,
    };
    group.bench_function("ours", |b| {
        b.iter(|| black_box(ours_hit(&segs, black_box(cursor.next_key()))));
    });
    let ours_ops = cursor.at as u64;
    let mut cursor = Cursor {
        trace: &trace,
        at: 0,
    };
    group.bench_function("pagecache_hit", |b| {
        b.iter(|| black_box(pagecache_hit(&pages, black_box(cursor.next_key()))));
    });
    group.finish();

    // Every timed `get` was a hit on a mapped segment: nothing missed, unmapped or stayed pinned.
    let stats = segs.stats();
    assert_eq!(stats.hits - hits_before, ours_ops, "every timed get hit");
    assert_eq!(stats.misses, 0, "no misses");
    assert_eq!(stats.mapped, SEGMENTS, "every segment still mapped");
    assert_eq!(stats.pinned, 0, "every pin released");
    assert_eq!(stats.mappings_reclaimed, 0, "no mapping reclaimed");
    c.final_summary();
}
