//! Guards the block cache under threads: workers on disjoint byte ranges that share pages with
//! their neighbours read and write through blocks at once and lose nothing; a range handed from
//! thread to thread carries its bytes (released only after the copy-back); `BlockCache` and
//! `Block` are `Send + Sync` and a block can move between threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use blockcache::{Block, BlockCache, Error};
use pagecache::CacheConfig;
use pageio::{MemPageIo, PageIo};

const PAGE_SIZE: usize = 512;
const THREADS: u64 = 4;
/// Each worker owns this many bytes: not a multiple of the page size, so every boundary between
/// two workers falls inside a page they share.
const SPAN: u64 = 700;
const ITERATIONS: u64 = 3000;
/// The cache sizes the workers run under: one holds every page they touch (no eviction while
/// they work); with two pages, blocks keep pinning pages whose eviction write-back is in flight
/// (the race `tests/regressions.rs` pins down deterministically).
const CAPACITIES: [usize; 2] = [1024, 2];

fn assert_send_sync<T: Send + Sync>() {}

// Checked when this file compiles.
const _: fn() = || {
    assert_send_sync::<BlockCache>();
    assert_send_sync::<Block<'static>>();
    assert_send_sync::<blockcache::Error>();
};

/// A byte identifying writer `t`'s write number `seq` at `offset`.
fn byte(t: u64, seq: u64, offset: u64) -> u8 {
    ((t + 1) * 61 + seq * 7 + offset * 3) as u8
}

/// A small deterministic generator (splitmix64), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Worker `t`: random sub-ranges of its own span, written whole (write blocks), read and checked,
/// or read, checked and partly rewritten; sometimes two blocks of its span at once. Returns what
/// it last wrote, byte for byte.
fn worker(cache: &BlockCache, t: u64, start: &Barrier) -> Vec<u8> {
    start.wait();
    let base = t * SPAN;
    let mut mine: Vec<u8> = (0..SPAN).map(|i| byte(t, 0, base + i)).collect();
    let mut rng = Rng(0x5eed ^ t);
    for seq in 1..=ITERATIONS {
        let start = rng.below(SPAN);
        let len = 1 + rng.below(SPAN - start);
        let (offset, n) = (base + start, len as usize);
        let s = start as usize;
        match rng.below(4) {
            0 => {
                let mut block = cache.get_for_write(offset, n).expect("get_for_write");
                for (i, b) in block.iter_mut().enumerate() {
                    *b = byte(t, seq, offset + i as u64);
                }
                mine[s..s + n].copy_from_slice(&block);
            }
            1 => {
                let block = cache.get(offset, n).expect("get");
                assert!(
                    *block == mine[s..s + n],
                    "worker {t} read back stale bytes at {offset}"
                );
            }
            2 => {
                let mut block = cache.get(offset, n).expect("get");
                assert!(
                    *block == mine[s..s + n],
                    "worker {t} read back stale bytes at {offset}"
                );
                let at = rng.below(len) as usize;
                block[at] = byte(t, seq, offset + at as u64);
                mine[s + at] = block[at];
            }
            _ => {
                // Two blocks of this worker's span at once: the left and right halves.
                let half = SPAN / 2;
                let mut left = cache.get(base, half as usize).expect("left half");
                let mut right = cache
                    .get(base + half, (SPAN - half) as usize)
                    .expect("right");
                assert!(*left == mine[..half as usize]);
                assert!(*right == mine[half as usize..]);
                left[0] = byte(t, seq, base);
                right[0] = byte(t, seq, base + half);
                mine[0] = left[0];
                mine[half as usize] = right[0];
            }
        }
    }
    mine
}

#[test]
fn disjoint_ranges_on_shared_pages() {
    for capacity in CAPACITIES {
        disjoint_ranges_on_shared_pages_with(capacity);
    }
}

fn disjoint_ranges_on_shared_pages_with(capacity: usize) {
    let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("page size"));
    let io_dyn: Arc<dyn PageIo> = io.clone();
    let mut cache =
        BlockCache::new(io_dyn, CacheConfig::default().with_capacity(capacity)).expect("open");
    // Every worker's span starts out with its sequence-0 pattern, so reads are in range.
    for t in 0..THREADS {
        let mut block = cache
            .get_for_write(t * SPAN, SPAN as usize)
            .expect("get_for_write");
        for (i, b) in block.iter_mut().enumerate() {
            *b = byte(t, 0, t * SPAN + i as u64);
        }
    }
    cache.flush().expect("flush");

    let start = Barrier::new(THREADS as usize);
    let finals: Vec<Vec<u8>> = thread::scope(|s| {
        let (cache, start) = (&cache, &start);
        let workers: Vec<_> = (0..THREADS)
            .map(|t| s.spawn(move || worker(cache, t, start)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    assert_eq!(cache.live_blocks(), 0);
    if capacity >= 1024 {
        assert_eq!(cache.stats().evictions, 0, "every page fits");
    } else {
        assert!(
            cache.stats().evictions > 0,
            "the small cache evicted nothing"
        );
    }

    cache.flush().expect("flush");
    let expected: Vec<u8> = finals.concat();
    let mut backend = Vec::new();
    for no in 0..io.num_pages().expect("num_pages") {
        let mut page = vec![0; PAGE_SIZE];
        io.read_page(no, &mut page).expect("read");
        backend.extend_from_slice(&page);
    }
    assert_eq!(
        backend.len(),
        expected.len().div_ceil(PAGE_SIZE) * PAGE_SIZE
    );
    for (t, want) in finals.iter().enumerate() {
        let base = t * SPAN as usize;
        assert!(
            backend[base..base + SPAN as usize] == want[..],
            "the backend lost worker {t}'s last writes"
        );
    }
    assert!(backend[expected.len()..].iter().all(|&b| b == 0));
}

#[test]
fn a_block_moves_to_another_thread() {
    let cache = Arc::new(
        BlockCache::new(
            Arc::new(MemPageIo::new(PAGE_SIZE).expect("page size")),
            CacheConfig::default(),
        )
        .expect("open"),
    );
    let mut single = cache.get_for_write(10, 20).expect("get_for_write");
    let mut multi = cache.get_for_write(500, 600).expect("get_for_write");
    thread::scope(|s| {
        s.spawn(move || {
            single.fill(1);
            multi.fill(2);
            // Dropped here, on the other thread: the multi-page copy-back happens there.
        });
    });
    assert_eq!(cache.live_blocks(), 0);
    let worker = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let single = cache.get(10, 20).expect("get");
            let multi = cache.get(500, 600).expect("get");
            single.iter().all(|&b| b == 1) && multi.iter().all(|&b| b == 2)
        })
    };
    assert!(worker.join().expect("worker panicked"));
}

#[test]
fn a_range_handed_between_threads_carries_its_bytes() {
    // Two threads take turns on one multi-page range. Each hands the turn over while it still
    // holds its block, so the other is already asking for the range (and getting `Overlap`) when
    // the block is dropped: it must be granted the range only once the bytes were copied back.
    const ROUNDS: u64 = 1000;
    const OFFSET: u64 = 300;
    const LEN: usize = 64 * PAGE_SIZE;
    let cache = BlockCache::new(
        Arc::new(MemPageIo::new(PAGE_SIZE).expect("page size")),
        CacheConfig::default(),
    )
    .expect("open");
    cache
        .get_for_write(OFFSET, LEN)
        .expect("get_for_write")
        .fill(0);
    let turn = AtomicU64::new(0);
    // Set when either thread panics, so that the other stops waiting for its turn.
    let failed = AtomicBool::new(false);
    thread::scope(|s| {
        for me in 0..2 {
            let (cache, turn, failed) = (&cache, &turn, &failed);
            s.spawn(move || {
                let _flag = PanicFlag(failed);
                for round in (me..ROUNDS).step_by(2) {
                    while turn.load(Ordering::Acquire) != round {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        thread::yield_now();
                    }
                    let mut block = loop {
                        match cache.get(OFFSET, LEN) {
                            Ok(block) => break block,
                            Err(Error::Overlap { .. }) if !failed.load(Ordering::Relaxed) => {
                                thread::yield_now();
                            }
                            Err(e) => panic!("round {round}: {e}"),
                        }
                    };
                    let seen = round as u8;
                    assert!(
                        block.iter().all(|&b| b == seen),
                        "round {round}: the range came without the last holder's bytes"
                    );
                    block.fill(seen.wrapping_add(1));
                    turn.store(round + 1, Ordering::Release);
                    drop(block);
                }
            });
        }
    });
    assert!(
        cache
            .get(OFFSET, LEN)
            .expect("get")
            .iter()
            .all(|&b| b == ROUNDS as u8)
    );
}

/// Raises its flag if dropped while its thread panics.
struct PanicFlag<'a>(&'a AtomicBool);

impl Drop for PanicFlag<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}
