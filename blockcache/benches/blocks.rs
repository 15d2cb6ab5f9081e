//! `BlockCache::get` over cached pages: a 64-byte block inside one page against a plain
//! `PageCache` hit on the same trace, and a 256 KiB block across 65 pages against a `memcpy` of
//! the same bytes.
//!
//! Criterion ids (read by `cargo xtask bench`): `blockcache_single_page/{ours,pagecache_hit}` and
//! `blockcache_multi_page/{ours,memcpy}`.
//!
//! Every byte at offset `pos` of the data is `pos % 251`, on one `MemPageIo` device shared by the
//! block cache and the baseline page cache (both sized to hold every page). Data and traces are
//! built, checked and warmed up before each group, outside criterion's clock; the caches' counters
//! are checked after the groups, so a run whose timed loop missed a page or leaked a block fails.
//!
//! In test and list mode (nextest runs bench targets that way, without `--bench`) the same code
//! runs on a small device, so listing and testing stay fast; only bench mode prints anything of
//! its own, and only to stderr.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use blockcache::BlockCache;
use criterion::{Criterion, Throughput};
use pagecache::{CacheConfig, CacheStats, PageCache};
use pageio::{MemPageIo, PageIo};

/// Page size of both groups.
const PAGE_SIZE: usize = 4096;
const PS: u64 = PAGE_SIZE as u64;
/// The single-page block: 64 bytes at any offset that keeps it inside its page.
const SMALL_LEN: usize = 64;
/// The multi-page block: 256 KiB, never page-aligned, so it always covers 65 pages.
const BIG_LEN: usize = 256 * 1024;
/// Zipf exponent of both traces.
const ZIPF_S: f64 = 1.0;

/// Sizes of a run: the full ones in bench mode, small ones in test and list mode.
#[derive(Debug, Clone, Copy)]
struct Scale {
    /// Pages on the device, all cached.
    pages: usize,
    /// Length of the single-page trace (a power of two).
    single_trace: usize,
    /// Length of the multi-page trace (a power of two).
    multi_trace: usize,
    /// Multi-page operations run (and checked) per side before its group.
    multi_warm_up: usize,
}

/// 64 Ki pages (256 MiB), as in pagecache's hit bench; 1 Mi single-page accesses.
const BENCH_SCALE: Scale = Scale {
    pages: 64 * 1024,
    single_trace: 1 << 20,
    multi_trace: 1 << 14,
    multi_warm_up: 2048,
};

const TEST_SCALE: Scale = Scale {
    pages: 256,
    single_trace: 1 << 10,
    multi_trace: 1 << 4,
    multi_warm_up: 16,
};

/// Whether criterion will measure (`cargo bench`), rather than list or run each benchmark once.
/// Mirrors criterion's own choice: `--bench` without `--test` or `--list`.
fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Fills `buf` with the data's bytes from offset `start` on: byte `pos` is `pos % 251`.
fn fill_pattern(start: u64, buf: &mut [u8]) {
    let mut value = (start % 251) as u8;
    for byte in buf {
        *byte = value;
        value = if value == 250 { 0 } else { value + 1 };
    }
}

/// A device of `pages` pages holding the pattern.
fn device(pages: usize) -> Arc<MemPageIo> {
    let io = MemPageIo::new(PAGE_SIZE).expect("MemPageIo");
    let mut buf = vec![0u8; PAGE_SIZE];
    for no in 0..pages as u64 {
        fill_pattern(no * PS, &mut buf);
        io.write_page(no, &buf).expect("write_page");
    }
    assert_eq!(io.num_pages().expect("num_pages"), pages as u64);
    Arc::new(io)
}

/// The page-cache configuration of both caches: room for every page.
fn config(pages: usize) -> CacheConfig {
    CacheConfig::default().with_capacity(pages)
}

/// A block cache over `io` with every page loaded, each checked whole through a zero-copy block.
fn loaded_block_cache(io: &Arc<MemPageIo>, pages: usize) -> BlockCache {
    let cache = BlockCache::new(io.clone(), config(pages)).expect("BlockCache");
    assert_eq!(cache.len(), pages as u64 * PS);
    let mut expected = vec![0u8; PAGE_SIZE];
    for no in 0..pages as u64 {
        fill_pattern(no * PS, &mut expected);
        let block = cache.get(no * PS, PAGE_SIZE).expect("page block");
        assert!(block.is_zero_copy(), "a whole page is a view");
        assert_eq!(
            &block[..],
            &expected[..],
            "page {no} through the block cache"
        );
    }
    check_resident(&cache.stats(), pages);
    cache
}

/// A page cache over `io` with every page loaded and checked whole.
fn loaded_page_cache(io: &Arc<MemPageIo>, pages: usize) -> PageCache {
    let cache = PageCache::new(io.clone(), config(pages)).expect("PageCache");
    let mut expected = vec![0u8; PAGE_SIZE];
    for no in 0..pages as u64 {
        fill_pattern(no * PS, &mut expected);
        let page = cache.get(no).expect("page");
        assert_eq!(
            &page.read()[..],
            &expected[..],
            "page {no} through the page cache"
        );
    }
    check_resident(&cache.stats(), pages);
    cache
}

/// Every page cached, nothing evicted, pinned or dirty.
fn check_resident(stats: &CacheStats, pages: usize) {
    assert_eq!(stats.cached, pages, "every page resident");
    assert_eq!(stats.evictions, 0, "nothing evicted");
    assert_eq!(stats.pinned, 0, "nothing pinned");
    assert_eq!(stats.dirty, 0, "nothing changed");
}

/// After the groups: every access since `before` was a hit and every pin was released.
fn check_all_hits(before: &CacheStats, after: &CacheStats, pages: usize, what: &str) {
    check_resident(after, pages);
    assert_eq!(after.misses, before.misses, "{what}: a timed access missed");
    assert!(after.hits > before.hits, "{what}: no access at all");
}

/// The seeded generator of the traces (`SplitMix64`), so every run sees the same accesses.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Zipf-distributed draws over `0..n`: rank `r` has weight `(r + 1)^-s`, and the ranks are
/// shuffled onto the items so the popular ones are scattered.
struct Zipf {
    /// Cumulative weights of the ranks, normalised to end at 1.
    cdf: Vec<f64>,
    /// The item of each rank.
    items: Vec<usize>,
}

impl Zipf {
    fn new(n: usize, s: f64, rng: &mut Rng) -> Self {
        assert!(n > 0, "Zipf over no items");
        let mut sum = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                sum += (rank as f64).powf(-s);
                sum
            })
            .collect();
        for c in &mut cdf {
            *c /= sum;
        }
        let mut items: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.below(i + 1);
            items.swap(i, j);
        }
        Self { cdf, items }
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        let rank = self.cdf.partition_point(|&c| c <= u);
        self.items[rank.min(self.items.len() - 1)]
    }
}

/// Offsets of 64-byte blocks: the page is Zipf-distributed over `pages`, the offset inside it
/// uniform over every position that keeps the block in the page.
fn single_page_trace(pages: usize, len: usize, seed: u64) -> Vec<u64> {
    let mut rng = Rng(seed);
    let zipf = Zipf::new(pages, ZIPF_S, &mut rng);
    (0..len)
        .map(|_| {
            let no = zipf.draw(&mut rng) as u64;
            let in_page = rng.below(PAGE_SIZE - SMALL_LEN + 1) as u64;
            no * PS + in_page
        })
        .collect()
}

/// Offsets of 256 KiB blocks: the data is cut into 256 KiB slots (the last one left out, so a
/// block can start past its slot's start), the slot is Zipf-distributed and the block starts
/// 1..4095 bytes into it, so it is never page-aligned and always covers 65 pages.
fn multi_page_trace(pages: usize, len: usize, seed: u64) -> Vec<u64> {
    let slots = pages * PAGE_SIZE / BIG_LEN - 1;
    let mut rng = Rng(seed);
    let zipf = Zipf::new(slots, ZIPF_S, &mut rng);
    (0..len)
        .map(|_| {
            let slot = zipf.draw(&mut rng) as u64;
            let skew = 1 + rng.below(PAGE_SIZE - 1) as u64;
            slot * BIG_LEN as u64 + skew
        })
        .collect()
}

/// A cursor over a trace (length a power of two) that persists across criterion's calls, so
/// successive samples go on through the trace rather than replaying its start.
struct Cursor<'t> {
    trace: &'t [u64],
    at: usize,
}

impl<'t> Cursor<'t> {
    fn new(trace: &'t [u64]) -> Self {
        assert!(trace.len().is_power_of_two(), "trace length");
        Self { trace, at: 0 }
    }

    #[inline]
    fn next_offset(&mut self) -> u64 {
        let offset = self.trace[self.at & (self.trace.len() - 1)];
        self.at = self.at.wrapping_add(1);
        offset
    }
}

/// Ours, one page: `get` of the 64-byte block at `pos`, read its first byte, drop it.
#[inline]
fn ours_single(cache: &BlockCache, pos: u64) -> u8 {
    let block = cache.get(pos, SMALL_LEN).expect("cached block");
    block[0]
}

/// The baseline: pagecache's hit (pin, read guard, one byte, unpin) of the same byte.
#[inline]
fn pagecache_hit(cache: &PageCache, pos: u64) -> u8 {
    let page = cache.get(pos / PS).expect("cached page");
    let data = page.read();
    data[(pos % PS) as usize]
}

/// The read-over of a 256 KiB block, the same on both sides: the wrapping sum of its
/// little-endian 64-bit words, which reads every byte. Not inlined, so both sides run the same
/// code on a slice the optimiser knows nothing about.
#[inline(never)]
fn checksum(bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).fold(0u64, |sum, word| {
        sum.wrapping_add(u64::from_le_bytes(word.try_into().expect("8 bytes")))
    })
}

/// Ours, across pages: `get` of the 256 KiB block at `offset`, read it all, drop it.
#[inline]
fn ours_multi(cache: &BlockCache, offset: u64) -> u64 {
    let block = cache.get(offset, BIG_LEN).expect("cached block");
    checksum(black_box(&block[..]))
}

/// The baseline: copy the same 256 KiB out of a flat buffer of the data into a preallocated one,
/// then the same read-over.
#[inline]
fn memcpy_multi(data: &[u8], dst: &mut [u8], offset: u64) -> u64 {
    let offset = offset as usize;
    dst.copy_from_slice(&data[offset..offset + BIG_LEN]);
    checksum(black_box(dst))
}

/// The checksum a 256 KiB block at `offset` must have.
fn expected_checksum(offset: u64, scratch: &mut [u8]) -> u64 {
    fill_pattern(offset, scratch);
    checksum(scratch)
}

fn bench_single_page(c: &mut Criterion, trace: &[u64], blocks: &BlockCache, pages: &PageCache) {
    // Warm-up and check: a quarter of the trace through each side (criterion's quick mode has no
    // warm-up of its own).
    for &pos in &trace[..trace.len() / 4] {
        let expected = (pos % 251) as u8;
        assert_eq!(ours_single(blocks, pos), expected, "block at {pos}");
        assert_eq!(
            pagecache_hit(pages, pos),
            expected,
            "byte {pos} of its page"
        );
    }
    let mut group = c.benchmark_group("blockcache_single_page");
    let mut cursor = Cursor::new(trace);
    group.bench_function("ours", |b| {
        b.iter(|| black_box(ours_single(blocks, black_box(cursor.next_offset()))));
    });
    let mut cursor = Cursor::new(trace);
    group.bench_function("pagecache_hit", |b| {
        b.iter(|| black_box(pagecache_hit(pages, black_box(cursor.next_offset()))));
    });
    group.finish();
}

fn bench_multi_page(
    c: &mut Criterion,
    trace: &[u64],
    warm_up: usize,
    blocks: &BlockCache,
    data: &[u8],
) {
    let mut dst = vec![0u8; BIG_LEN];
    let mut scratch = vec![0u8; BIG_LEN];
    // Byte-for-byte, on a few blocks: what the checksum cannot tell (it ignores word order).
    for &offset in trace.iter().take(8) {
        fill_pattern(offset, &mut scratch);
        let block = blocks.get(offset, BIG_LEN).expect("block");
        assert!(!block.is_zero_copy(), "a 256 KiB block is a copy");
        assert_eq!(&block[..], &scratch[..], "block at {offset}");
        drop(block);
        memcpy_multi(data, &mut dst, offset);
        assert_eq!(dst, scratch, "copy of {offset}");
    }
    // Warm-up and check of both sides on the start of the trace.
    for &offset in trace.iter().cycle().take(warm_up) {
        let expected = expected_checksum(offset, &mut scratch);
        assert_eq!(ours_multi(blocks, offset), expected, "block at {offset}");
        assert_eq!(
            memcpy_multi(data, &mut dst, offset),
            expected,
            "copy of {offset}"
        );
    }
    let mut group = c.benchmark_group("blockcache_multi_page");
    group.throughput(Throughput::Bytes(BIG_LEN as u64));
    let mut cursor = Cursor::new(trace);
    group.bench_function("ours", |b| {
        b.iter(|| black_box(ours_multi(blocks, black_box(cursor.next_offset()))));
    });
    let mut cursor = Cursor::new(trace);
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            black_box(memcpy_multi(
                data,
                &mut dst,
                black_box(cursor.next_offset()),
            ))
        });
    });
    group.finish();
}

fn main() {
    let bench = bench_mode();
    let scale = if bench { BENCH_SCALE } else { TEST_SCALE };
    let mut c = Criterion::default().configure_from_args();

    let start = Instant::now();
    let io = device(scale.pages);
    let blocks = loaded_block_cache(&io, scale.pages);
    let blocks_loaded = blocks.stats();
    {
        let pages = loaded_page_cache(&io, scale.pages);
        let pages_loaded = pages.stats();
        let trace = single_page_trace(scale.pages, scale.single_trace, 0xB10C_0001);
        if bench {
            eprintln!(
                "blockcache_single_page: {} pages of {PAGE_SIZE} B in both caches, {} Zipf \
                 offsets; set up in {:.1} s",
                scale.pages,
                trace.len(),
                start.elapsed().as_secs_f64()
            );
        }
        bench_single_page(&mut c, &trace, &blocks, &pages);
        check_all_hits(&pages_loaded, &pages.stats(), scale.pages, "pagecache");
    }
    {
        let start = Instant::now();
        let mut data = vec![0u8; scale.pages * PAGE_SIZE];
        fill_pattern(0, &mut data);
        let trace = multi_page_trace(scale.pages, scale.multi_trace, 0xB10C_0002);
        if bench {
            eprintln!(
                "blockcache_multi_page: {BIG_LEN} B blocks over {} slots, {} Zipf offsets, {} \
                 checked warm-up operations per side; set up in {:.1} s",
                scale.pages * PAGE_SIZE / BIG_LEN - 1,
                trace.len(),
                scale.multi_warm_up,
                start.elapsed().as_secs_f64()
            );
        }
        bench_multi_page(&mut c, &trace, scale.multi_warm_up, &blocks, &data);
    }
    check_all_hits(&blocks_loaded, &blocks.stats(), scale.pages, "blockcache");
    assert_eq!(blocks.live_blocks(), 0, "every block released");
    c.final_summary();
}
