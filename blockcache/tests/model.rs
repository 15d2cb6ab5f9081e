//! Guards the block cache's byte-level semantics against a flat `Vec<u8>` model: random reads and
//! writes of unaligned ranges across page boundaries, several live blocks written in interleaved
//! order, rejected overlapping requests that change nothing, truncation, flushes, and reopens
//! (after a flush, and after a drop without one) over a small cache that evicts and writes back.

use std::sync::Arc;

use blockcache::{Block, BlockCache, Error};
use pagecache::CacheConfig;
use pageio::{MemPageIo, PageIo};
use proptest::prelude::*;

const PAGE_SIZE: usize = 512;
/// Offsets of single reads, writes and truncates are drawn below this (12 pages).
const SPACE: u64 = 12 * PAGE_SIZE as u64;
/// Unpinned pages the cache keeps: small, so most operations evict and write back.
const CAPACITY: usize = 3;

/// One step of a generated trace.
#[derive(Clone, Debug)]
enum Op {
    /// `get_for_write(offset, len)`, filled whole with a pattern, then dropped.
    Write { offset: u64, len: usize, seed: u8 },
    /// `get(offset, len)`, compared with the model.
    Read { offset: u64, len: usize },
    /// `get(offset, len)`, compared with the model, then part of it (`at`, `n`, taken modulo the
    /// block) overwritten through it.
    Modify {
        offset: u64,
        len: usize,
        at: usize,
        n: usize,
        seed: u8,
    },
    /// Several live blocks at once (see [`Hold`]).
    Hold(Hold),
    /// `truncate(len)`.
    Truncate(u64),
    /// `flush()`, then the backend must equal the model byte for byte.
    Flush,
    /// `flush()`, drop the cache, open a new one on the same backend.
    Reopen,
    /// Drop the cache *without* a flush and open a new one: every page must hold a version it had
    /// since the last flush (flushed or written back by eviction), never anything else.
    Crash,
}

/// Disjoint blocks laid out left to right from `base`, each `gap` bytes after the previous one
/// (a gap of 0 makes them adjacent), held at once.
#[derive(Clone, Debug)]
struct Hold {
    base: u64,
    /// `(gap, len, read, seed)`: a read block (`get`, when the range lies below the end) or a
    /// write block (`get_for_write`, filled whole with a pattern from `seed` at once).
    blocks: Vec<(u64, usize, bool, u8)>,
    /// `(block, start, len, seed)`: overwrite part of a held block (indices taken modulo).
    steps: Vec<(usize, usize, usize, u8)>,
    /// `(block, shape, for_write)`: a request that overlaps a held block in the given shape, made
    /// half-way through the steps; it must fail with `Overlap` and change nothing.
    probes: Vec<(usize, u8, bool)>,
    /// The order the blocks are dropped in (indices taken modulo the blocks still held).
    drops: Vec<usize>,
}

fn len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=16, 1usize..=600, 400usize..=1800]
}

fn hold_strategy() -> impl Strategy<Value = Hold> {
    let block = (
        prop_oneof![Just(0u64), 1u64..200],
        prop_oneof![1usize..=16, 1usize..=600, 400usize..=1200],
        any::<bool>(),
        any::<u8>(),
    );
    (
        0..SPACE,
        prop::collection::vec(block, 1..=5),
        prop::collection::vec(any::<(usize, usize, usize, u8)>(), 0..12),
        prop::collection::vec((any::<usize>(), 0u8..6, any::<bool>()), 0..6),
        prop::collection::vec(any::<usize>(), 5),
    )
        .prop_map(|(base, blocks, steps, probes, drops)| Hold {
            base,
            blocks,
            steps,
            probes,
            drops,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SPACE, len_strategy(), any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        4 => (0..SPACE, len_strategy()).prop_map(|(offset, len)| Op::Read { offset, len }),
        3 => (0..SPACE, len_strategy(), any::<usize>(), any::<usize>(), any::<u8>())
            .prop_map(|(offset, len, at, n, seed)| Op::Modify { offset, len, at, n, seed }),
        3 => hold_strategy().prop_map(Op::Hold),
        1 => (0..SPACE).prop_map(Op::Truncate),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

/// The bytes a write with `seed` puts at `offset..offset + buf.len()`: they depend on the
/// absolute offset, so a copy landing at the wrong place is caught, and on the seed, so a write
/// that was lost is told apart from the one before it.
fn fill(buf: &mut [u8], offset: u64, seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = offset + i as u64;
        *b = ((x ^ (x >> 7)) as u8).wrapping_mul(31) ^ seed.wrapping_mul(101) ^ 0x5a;
    }
}

fn open(io: &Arc<MemPageIo>) -> BlockCache {
    let io: Arc<dyn PageIo> = io.clone();
    BlockCache::new(io, CacheConfig::default().with_capacity(CAPACITY)).expect("open")
}

fn read_backend(io: &MemPageIo, no: u64) -> Vec<u8> {
    let mut page = vec![0; PAGE_SIZE];
    io.read_page(no, &mut page).expect("backend read");
    page
}

/// The expected contents, and what a crash may leave of them.
struct Model {
    bytes: Vec<u8>,
    /// Per page: every content it has had since the last flush, the flushed one first. Pages
    /// past the end count as zeros.
    history: Vec<Vec<Vec<u8>>>,
}

impl Model {
    fn new() -> Self {
        Self {
            bytes: Vec::new(),
            history: Vec::new(),
        }
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn pages(&self) -> u64 {
        self.len().div_ceil(PAGE_SIZE as u64)
    }

    fn range(&self, offset: u64, len: usize) -> &[u8] {
        &self.bytes[offset as usize..offset as usize + len]
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset as usize + data.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset as usize..end].copy_from_slice(data);
    }

    /// Page `no` as the model holds it, zero-padded past the end.
    fn page(&self, no: u64) -> Vec<u8> {
        let mut page = vec![0; PAGE_SIZE];
        let start = (no as usize * PAGE_SIZE).min(self.bytes.len());
        let end = ((no as usize + 1) * PAGE_SIZE).min(self.bytes.len());
        page[..end - start].copy_from_slice(&self.bytes[start..end]);
        page
    }

    /// Notes the current content of every page as one a crash may leave behind.
    fn record(&mut self) {
        let pages = (self.pages() as usize).max(self.history.len());
        for no in 0..pages {
            if no == self.history.len() {
                // A page first touched since the last flush was past the end then: zeros.
                self.history.push(vec![vec![0; PAGE_SIZE]]);
            }
            let page = self.page(no as u64);
            if self.history[no].last() != Some(&page) {
                self.history[no].push(page);
            }
        }
    }

    /// Forgets the history: the current content is the durable one.
    fn settle(&mut self) {
        self.history = (0..self.pages()).map(|no| vec![self.page(no)]).collect();
    }
}

fn check_invariants(cache: &BlockCache, model: &Model, live: usize) {
    assert_eq!(cache.len(), model.len(), "len() differs from the model");
    assert_eq!(cache.live_blocks(), live, "live_blocks() is off");
}

fn check_block(block: &Block<'_>, model: &Model) {
    assert!(
        **block == *model.range(block.offset(), block.len()),
        "block at {} of {} bytes differs from the model",
        block.offset(),
        block.len()
    );
}

fn is_single_page(offset: u64, len: usize) -> bool {
    offset / PAGE_SIZE as u64 == (offset + len as u64 - 1) / PAGE_SIZE as u64
}

fn do_write(cache: &BlockCache, model: &mut Model, offset: u64, len: usize, seed: u8) {
    let mut block = cache.get_for_write(offset, len).expect("get_for_write");
    assert_eq!(block.len(), len);
    assert_eq!(block.is_zero_copy(), is_single_page(offset, len));
    fill(&mut block, offset, seed);
    model.write(offset, &block);
    drop(block);
    model.record();
}

fn do_read(cache: &BlockCache, model: &Model, offset: u64, len: usize) -> bool {
    let end = offset + len as u64;
    match cache.get(offset, len) {
        Ok(block) => {
            assert!(
                end <= model.len(),
                "read past the end {} allowed",
                model.len()
            );
            assert_eq!(block.is_zero_copy(), is_single_page(offset, len));
            check_block(&block, model);
            true
        }
        Err(Error::PastEnd { end: reported, .. }) => {
            assert!(end > model.len(), "read below the end refused");
            assert_eq!(reported, model.len());
            false
        }
        Err(e) => panic!("read {offset}+{len}: {e}"),
    }
}

fn do_modify(
    cache: &BlockCache,
    model: &mut Model,
    offset: u64,
    len: usize,
    part: (usize, usize),
    seed: u8,
) {
    let (at, n) = part;
    if !do_read(cache, model, offset, len) {
        return;
    }
    let mut block = cache.get(offset, len).expect("get");
    let at = at % len;
    let n = 1 + n % (len - at);
    fill(&mut block[at..at + n], offset + at as u64, seed);
    model.write(offset + at as u64, &block[at..at + n]);
    assert!(block.is_changed());
    drop(block);
    model.record();
}

/// The range of a request overlapping `offset..end` in the given shape.
fn overlapping(offset: u64, end: u64, shape: u8) -> (u64, usize) {
    let len = (end - offset) as usize;
    match shape {
        // Identical.
        0 => (offset, len),
        // Strictly inside (identical when the block is one byte long).
        1 => (offset + len as u64 / 3, (len / 3).max(1)),
        // Containing it with some bytes on both sides.
        2 => (offset.saturating_sub(7), len + 14),
        // Over its left edge: ends on its first byte.
        3 => {
            let before = offset.min(5);
            (offset - before, before as usize + 1)
        }
        // Over its right edge: starts on its last byte.
        _ => (end - 1, 9),
    }
}

fn do_hold(cache: &BlockCache, model: &mut Model, hold: &Hold) {
    let mut live: Vec<Block<'_>> = Vec::new();
    let mut cursor = hold.base;
    for &(gap, len, read, seed) in &hold.blocks {
        let offset = cursor + gap;
        cursor = offset + len as u64;
        let block = if read && cursor <= model.len() {
            let block = cache.get(offset, len).expect("get of a free range");
            check_block(&block, model);
            block
        } else {
            if read {
                assert!(matches!(cache.get(offset, len), Err(Error::PastEnd { .. })));
            }
            let mut block = cache.get_for_write(offset, len).expect("get_for_write");
            // A write block's bytes are the caller's to set: all of them, before anything else.
            fill(&mut block, offset, seed);
            model.write(offset, &block);
            model.record();
            block
        };
        assert_eq!(block.is_zero_copy(), is_single_page(offset, len));
        live.push(block);
        check_invariants(cache, model, live.len());
    }

    let half = hold.steps.len() / 2;
    for (i, &(which, start, n, seed)) in hold.steps.iter().enumerate() {
        if i == half {
            probe_overlaps(cache, model, &live, &hold.probes);
        }
        let count = live.len();
        let block = &mut live[which % count];
        let start = start % block.len();
        let n = 1 + n % (block.len() - start);
        let at = block.offset() + start as u64;
        fill(&mut block[start..start + n], at, seed);
        model.write(at, &block[start..start + n]);
        model.record();
        // Every live block, zero-copy or buffered, still shows exactly its own bytes.
        for block in &live {
            check_block(block, model);
        }
    }
    if hold.steps.is_empty() {
        probe_overlaps(cache, model, &live, &hold.probes);
    }

    for &which in &hold.drops {
        if live.is_empty() {
            break;
        }
        drop(live.remove(which % live.len()));
        check_invariants(cache, model, live.len());
    }
    drop(live);
    check_invariants(cache, model, 0);
    // Read every range held back through fresh blocks: the buffered ones were copied back.
    let mut cursor = hold.base;
    for &(gap, len, ..) in &hold.blocks {
        let offset = cursor + gap;
        cursor = offset + len as u64;
        assert!(do_read(cache, model, offset, len));
    }
}

fn probe_overlaps(
    cache: &BlockCache,
    model: &Model,
    live: &[Block<'_>],
    probes: &[(usize, u8, bool)],
) {
    for &(which, shape, for_write) in probes {
        let target = &live[which % live.len()];
        let (t_offset, t_end) = (target.offset(), target.offset() + target.len() as u64);
        let (offset, len) = overlapping(t_offset, t_end, shape);
        let end = offset + len as u64;
        // A read past the end fails with `PastEnd` first: ask for a write block there instead.
        let result = if for_write || end > model.len() {
            cache.get_for_write(offset, len)
        } else {
            cache.get(offset, len)
        };
        match result {
            Err(Error::Overlap {
                offset: o,
                len: l,
                other_offset,
                other_end,
            }) => {
                assert_eq!((o, l), (offset, len));
                assert!(
                    live.iter()
                        .any(|b| b.offset() == other_offset
                            && b.offset() + b.len() as u64 == other_end),
                    "Overlap names {other_offset}..{other_end}, which is not a live block"
                );
                assert!(
                    other_offset < end && offset < other_end,
                    "named block does not overlap"
                );
            }
            Err(e) => panic!("overlapping request {offset}+{len}: {e}"),
            Ok(_) => panic!("overlapping request {offset}+{len} of {t_offset}..{t_end} granted"),
        }
        // Nothing changed: no claim left behind, the end not moved, the live blocks intact.
        check_invariants(cache, model, live.len());
        for block in live {
            check_block(block, model);
        }
    }
}

/// Flushes, then checks the backend against the model byte for byte, pages past the end included.
fn flush_and_compare(cache: &mut BlockCache, io: &MemPageIo, model: &mut Model) {
    cache.flush().expect("flush");
    assert_eq!(
        io.num_pages().expect("num_pages"),
        model.pages(),
        "backend size after flush"
    );
    for no in 0..model.pages() + 2 {
        assert!(
            read_backend(io, no) == model.page(no),
            "backend page {no} differs from the model after flush"
        );
    }
    model.settle();
}

/// After a reopen the end is the backend's size: a whole number of pages, zero-padded.
fn reopen_length(io: &MemPageIo, model: &mut Model) {
    let pages = io.num_pages().expect("num_pages");
    model.bytes.resize(pages as usize * PAGE_SIZE, 0);
}

fn run(ops: &[Op]) {
    let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("page size"));
    let mut cache = open(&io);
    let mut model = Model::new();
    for op in ops {
        match op {
            &Op::Write { offset, len, seed } => do_write(&cache, &mut model, offset, len, seed),
            &Op::Read { offset, len } => {
                do_read(&cache, &model, offset, len);
            }
            &Op::Modify {
                offset,
                len,
                at,
                n,
                seed,
            } => do_modify(&cache, &mut model, offset, len, (at, n), seed),
            Op::Hold(hold) => do_hold(&cache, &mut model, hold),
            &Op::Truncate(len) => {
                cache.truncate(len).expect("truncate");
                model.bytes.resize(len as usize, 0);
                model.record();
            }
            Op::Flush => flush_and_compare(&mut cache, &io, &mut model),
            Op::Reopen => {
                flush_and_compare(&mut cache, &io, &mut model);
                drop(cache);
                cache = open(&io);
                reopen_length(&io, &mut model);
                model.settle();
            }
            Op::Crash => {
                drop(cache);
                let pages = io.num_pages().expect("num_pages");
                for no in 0..(pages as usize).max(model.history.len()) {
                    let page = read_backend(&io, no as u64);
                    let zeros = [vec![0; PAGE_SIZE]];
                    let allowed = model.history.get(no).map_or(&zeros[..], Vec::as_slice);
                    assert!(
                        allowed.contains(&page),
                        "after a crash, page {no} holds content it never had since the last flush"
                    );
                }
                model.bytes = (0..pages).flat_map(|no| read_backend(&io, no)).collect();
                model.settle();
                cache = open(&io);
            }
        }
        check_invariants(&cache, &model, 0);
    }
    // The whole content through one block, then durable and exact in the backend.
    if model.len() > 0 {
        let all = cache.get(0, model.bytes.len()).expect("read everything");
        check_block(&all, &model);
    }
    flush_and_compare(&mut cache, &io, &mut model);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failures print the minimal trace; no regression files are written into the crate.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn block_cache_matches_flat_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run(&ops);
    }
}

/// A fixed trace that always runs, whatever proptest draws: blocks of every kind held at once
/// over a cache of capacity 3, written in interleaved order, probed, dropped out of order.
#[test]
fn fixed_trace_with_held_blocks_and_reopens() {
    let hold = Hold {
        base: 300,
        blocks: vec![
            (0, 100, false, 1),   // 300..400, one page, write
            (0, 1500, true, 2),   // 400..1900, four pages, read (past the end: write)
            (12, 10, true, 3),    // 1912..1922, one page, read
            (0, 2048, false, 4),  // 1922..3970, five pages, write
            (100, 512, false, 5), // 4070..4582, two pages, write
        ],
        steps: vec![
            (3, 0, 5, 9),
            (0, 50, 10, 8),
            (1, 1000, 400, 7),
            (2, 0, 9, 6),
            (4, 2, 3, 5),
        ],
        probes: (0..5)
            .flat_map(|b| (0..5).map(move |s| (b, s, s % 2 == 0)))
            .collect(),
        drops: vec![3, 0, 2, 1, 0],
    };
    run(&[
        Op::Write {
            offset: 0,
            len: 5000,
            seed: 0,
        },
        Op::Hold(hold.clone()),
        Op::Crash,
        Op::Hold(hold),
        Op::Reopen,
        Op::Truncate(2500),
        Op::Read {
            offset: 2000,
            len: 500,
        },
        Op::Crash,
    ]);
}
