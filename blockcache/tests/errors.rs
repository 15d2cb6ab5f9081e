//! Guards the block cache's refusals: zero length, out-of-range and past-the-end ranges, every
//! shape of overlap with a live block (and adjacency, which is not one), and backend failures;
//! after each the cache still works, nothing changed, and no range stays claimed.

use std::sync::Arc;

use blockcache::{BlockCache, Error};
use pagecache::CacheConfig;
use pageio::{Fault, FaultyPageIo, MemPageIo, PageIo};

const PAGE_SIZE: usize = 512;
const MAX: u64 = i64::MAX as u64;

fn cache() -> BlockCache {
    BlockCache::new(
        Arc::new(MemPageIo::new(PAGE_SIZE).expect("page size")),
        CacheConfig::default(),
    )
    .expect("open")
}

/// A cache holding `len` bytes of a known pattern.
fn cache_with(len: usize) -> BlockCache {
    let cache = cache();
    cache
        .get_for_write(0, len)
        .expect("get_for_write")
        .copy_from_slice(&pattern(0, len));
    cache
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|x| (x % 251) as u8 + 1)
        .collect()
}

/// The cache is usable and unchanged: no live block, the same end, the same bytes, and a block
/// can be taken and released again over the whole content.
#[track_caller]
fn assert_intact(cache: &BlockCache, len: u64) {
    assert_eq!(cache.live_blocks(), 0, "a refused request left a claim");
    assert_eq!(cache.len(), len, "a refused request moved the end");
    if len > 0 {
        let all = cache.get(0, len as usize).expect("the cache still works");
        assert!(
            *all == *pattern(0, len as usize),
            "a refused request changed bytes"
        );
    }
}

#[test]
fn zero_length() {
    let cache = cache_with(1000);
    for (offset, write) in [
        (0, false),
        (10, true),
        (999, false),
        (1 << 40, true),
        (u64::MAX, false),
    ] {
        let result = if write {
            cache.get_for_write(offset, 0)
        } else {
            cache.get(offset, 0)
        };
        match result {
            Err(Error::ZeroLength { offset: o }) => assert_eq!(o, offset),
            other => panic!("{offset}+0 (write: {write}): {other:?}"),
        }
        assert_intact(&cache, 1000);
    }
}

#[test]
fn out_of_range() {
    let cache = cache_with(1000);
    let cases = [
        // offset + len overflows u64.
        (u64::MAX, 1),
        (u64::MAX - 10, 100),
        (1, usize::MAX),
        // The end lies past i64::MAX, the largest file offset.
        (MAX, 1),
        (MAX - 9, 10),
        (MAX + 1, 1),
        (0, MAX as usize + 1),
    ];
    for (offset, len) in cases {
        for write in [false, true] {
            let result = if write {
                cache.get_for_write(offset, len)
            } else {
                cache.get(offset, len)
            };
            match result {
                Err(Error::OutOfRange { offset: o, len: l }) => assert_eq!((o, l), (offset, len)),
                other => panic!("{offset}+{len} (write: {write}): {other:?}"),
            }
            assert_intact(&cache, 1000);
        }
    }
}

#[test]
fn out_of_range_truncate() {
    let mut cache = cache_with(1000);
    assert!(matches!(
        cache.truncate(MAX + 1),
        Err(Error::OutOfRange { .. })
    ));
    assert_intact(&cache, 1000);
    assert!(matches!(
        cache.truncate(u64::MAX),
        Err(Error::OutOfRange { .. })
    ));
    assert_intact(&cache, 1000);
}

#[test]
fn the_last_writable_byte_is_accepted_and_flushed() {
    // The highest end whose page a backend can still write: the last whole page below i64::MAX.
    let top = MAX / PAGE_SIZE as u64 * PAGE_SIZE as u64;
    let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("page size"));
    let mut cache = BlockCache::new(io.clone(), CacheConfig::default()).expect("open");
    cache.get_for_write(top - 3, 3).expect("in range").fill(9);
    assert_eq!(cache.len(), top);
    assert!(
        cache
            .get(top - 3, 3)
            .expect("readable")
            .iter()
            .all(|&b| b == 9)
    );
    cache.flush().expect("flush of the last page");
    assert_eq!(io.num_pages().expect("num_pages"), top / PAGE_SIZE as u64);
}

#[test]
fn past_end() {
    let cache = cache_with(1000);
    for (offset, len) in [(990, 11), (1000, 1), (999, 2), (0, 1001), (5000, 10)] {
        match cache.get(offset, len) {
            Err(Error::PastEnd {
                offset: o,
                len: l,
                end,
            }) => assert_eq!((o, l, end), (offset, len, 1000)),
            other => panic!("{offset}+{len}: {other:?}"),
        }
        assert_intact(&cache, 1000);
    }
    // Up to the end exactly is fine.
    assert!(*cache.get(990, 10).expect("get") == *pattern(990, 10));

    // A write block may reach past the end, and extends it to its own end as soon as it exists.
    let mut block = cache.get_for_write(990, 20).expect("get_for_write");
    assert_eq!(cache.len(), 1010);
    block.copy_from_slice(&pattern(990, 20));
    drop(block);
    assert!(*cache.get(1000, 10).expect("get") == *pattern(1000, 10));
    assert!(matches!(
        cache.get(1005, 6),
        Err(Error::PastEnd { end: 1010, .. })
    ));

    // Past the end with a gap: the gap reads as zeros.
    cache
        .get_for_write(5000, 10)
        .expect("get_for_write")
        .fill(3);
    assert_eq!(cache.len(), 5010);
    assert!(cache.get(1010, 3990).expect("get").iter().all(|&b| b == 0));
    assert!(cache.get(5000, 10).expect("get").iter().all(|&b| b == 3));
    assert_eq!(cache.live_blocks(), 0);
}

/// Requests overlapping the live block `offset..offset + len`, in every shape, each as a read and
/// as a write block; then the adjacent ranges on both sides, which must be granted.
fn check_overlaps(offset: u64, len: usize) {
    let end = offset + len as u64;
    let cache = cache_with(6000);
    let held = cache.get(offset, len).expect("get");
    let shapes = [
        ("identical", offset, len),
        ("inside", offset + 1, len - 2),
        ("inside at the start", offset, 1),
        ("inside at the end", end - 1, 1),
        ("containing", offset - 50, len + 100),
        ("containing, several pages", 0, 6000),
        ("over the left edge", offset - 20, 21),
        ("over the left edge, deep", offset - 20, len - 1),
        ("over the right edge", end - 1, 20),
        ("over the right edge, deep", offset + 1, len + 20),
    ];
    for (shape, o, l) in shapes {
        for write in [false, true] {
            let result = if write {
                cache.get_for_write(o, l)
            } else {
                cache.get(o, l)
            };
            match result {
                Err(Error::Overlap {
                    offset: ro,
                    len: rl,
                    other_offset,
                    other_end,
                }) => {
                    assert_eq!((ro, rl), (o, l), "{shape}");
                    assert_eq!((other_offset, other_end), (offset, end), "{shape}");
                }
                other => panic!("{shape} ({o}+{l}, write: {write}) over {offset}+{len}: {other:?}"),
            }
            assert_eq!(
                cache.live_blocks(),
                1,
                "{shape}: a refused request left a claim"
            );
            assert_eq!(cache.len(), 6000, "{shape}: a refused write moved the end");
        }
    }
    assert!(*held == *pattern(offset, len), "the held block changed");

    // Adjacent ranges share no byte: granted, together with the held block.
    let before = cache.get(offset - 30, 30).expect("adjacent on the left");
    let after = cache.get_for_write(end, 30).expect("adjacent on the right");
    assert_eq!(cache.live_blocks(), 3);
    drop((before, after, held));
    // The refused write blocks covered whole pages: none was zeroed or otherwise touched.
    assert_intact(&cache, 6000);
}

#[test]
fn overlap_with_a_single_page_block() {
    check_overlaps(1100, 200);
}

#[test]
fn overlap_with_a_multi_page_block() {
    check_overlaps(1000, 1700);
}

#[test]
fn overlap_between_two_live_blocks() {
    let cache = cache_with(4000);
    let left = cache.get(1000, 100).expect("get");
    let right = cache.get(1200, 100).expect("get");
    // The gap between them is free; anything reaching into either is not.
    for (o, l) in [(1099, 2), (1199, 2), (1050, 200), (900, 1000)] {
        assert!(
            matches!(cache.get(o, l), Err(Error::Overlap { .. })),
            "{o}+{l}"
        );
        assert_eq!(cache.live_blocks(), 2);
    }
    let gap = cache.get(1100, 100).expect("the gap exactly");
    assert_eq!(cache.live_blocks(), 3);
    drop((left, right, gap));
    assert_intact(&cache, 4000);
}

#[test]
fn a_dropped_block_releases_its_range() {
    let cache = cache_with(2000);
    for _ in 0..3 {
        let a = cache.get(100, 1000).expect("get");
        assert!(matches!(cache.get(500, 1), Err(Error::Overlap { .. })));
        drop(a);
        // The same range, and anything overlapping it, is free again.
        drop(cache.get(500, 1).expect("released"));
        drop(cache.get_for_write(100, 1000).expect("released"));
    }
    // Write blocks leave nothing behind; the content is whatever was last written.
    assert_eq!(cache.live_blocks(), 0);
}

#[test]
fn backend_failures_release_the_claim() {
    let io = Arc::new(FaultyPageIo::new(
        MemPageIo::new(PAGE_SIZE).expect("page size"),
    ));
    for no in 0..6 {
        io.write_page(no, &pattern(no * PAGE_SIZE as u64, PAGE_SIZE))
            .expect("write");
    }
    io.sync().expect("sync");
    let io_dyn: Arc<dyn PageIo> = io.clone();
    let cache = BlockCache::new(io_dyn, CacheConfig::default()).expect("open");
    let len = 6 * PAGE_SIZE as u64;

    // A read block whose last page cannot be read; a write block whose first (partial) page
    // cannot be read; a single-page block.
    io.fail(Fault::ReadPage(3));
    io.fail(Fault::ReadPage(4));
    for (offset, n, write) in [(100, 1700, false), (2100, 1000, true), (1600, 10, false)] {
        let result = if write {
            cache.get_for_write(offset, n)
        } else {
            cache.get(offset, n)
        };
        match result {
            Err(e @ Error::Cache(_)) => {
                assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
            }
            other => panic!("{offset}+{n}: {other:?}"),
        }
        assert_eq!(
            cache.live_blocks(),
            0,
            "a failed block left its range claimed"
        );
        assert_eq!(cache.len(), len);
    }

    // Once the backend recovers, the same ranges are granted and nothing was lost.
    io.clear_faults();
    assert_intact(&cache, len);
}
