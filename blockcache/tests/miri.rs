//! The block cache's unsafe code in small scenarios, for Miri (`cargo xtask miri` runs this file
//! under Stacked and Tree Borrows; it runs as a normal test too): zero-copy views into a page
//! made from its buffer's raw root, living across guards taken by other blocks of the same page,
//! flushes, truncation and threads, and multi-page blocks copied in and out through the raw
//! pointer.

use std::sync::Arc;
use std::thread;

use blockcache::BlockCache;
use pagecache::CacheConfig;
use pageio::MemPageIo;

const PS: usize = 512;

fn cache(capacity: usize) -> BlockCache {
    BlockCache::new(
        Arc::new(MemPageIo::new(PS).expect("page size")),
        CacheConfig::default().with_capacity(capacity),
    )
    .expect("cache")
}

/// The reported case: write through a single-page block, flush, write through a new block of
/// the same page (Tree Borrows: "the conflicting tag later transitioned to Frozen").
#[test]
fn write_flush_write_through_single_page_blocks() {
    let mut cache = cache(4);
    cache.get_for_write(0, 16).expect("block").fill(1);
    cache.flush().expect("flush");
    cache.get_for_write(0, 16).expect("block").fill(2);
    cache.flush().expect("flush");
    assert!(cache.get(0, 16).expect("block").iter().all(|&b| b == 2));
}

#[test]
fn disjoint_blocks_of_one_page_write_in_turn() {
    let cache = cache(4);
    let mut a = cache.get_for_write(0, 8).expect("a");
    let mut b = cache.get_for_write(8, 8).expect("b");
    for round in 0..3u8 {
        a[usize::from(round)] = round;
        b[usize::from(round)] = round + 10;
    }
    // A third block of the page takes its own first-write guard while `a` and `b` live.
    let mut c = cache.get_for_write(100, 4).expect("c");
    c.fill(7);
    a[7] = 70;
    b[7] = 80;
    drop((a, b, c));
    let all = cache.get(0, 104).expect("all");
    assert_eq!(&all[..3], &[0, 1, 2]);
    assert_eq!(all[7], 70);
    assert_eq!(&all[8..11], &[10, 11, 12]);
    assert_eq!(all[15], 80);
    assert_eq!(&all[100..104], &[7; 4]);
}

#[test]
fn multi_page_blocks_copy_in_and_out() {
    let mut cache = cache(8);
    cache
        .get_for_write(PS as u64 - 10, 2 * PS)
        .expect("block")
        .fill(3);
    let head = cache.get(PS as u64 - 20, 10).expect("head");
    assert!(head.iter().all(|&b| b == 0));
    drop(head);
    cache.flush().expect("flush");
    let block = cache.get(PS as u64 - 10, 2 * PS).expect("block");
    assert!(block.iter().all(|&b| b == 3));
}

#[test]
fn truncate_zeroes_the_tail_of_the_last_page() {
    let mut cache = cache(4);
    cache.get_for_write(0, 2 * PS).expect("block").fill(5);
    cache.truncate(PS as u64 + 100).expect("truncate");
    cache.get_for_write(PS as u64, 4).expect("block").fill(6);
    let page = cache.get(PS as u64, 100).expect("block");
    assert_eq!(&page[..4], &[6; 4]);
    assert!(page[4..].iter().all(|&b| b == 5));
    drop(page);
    cache.flush().expect("flush");
}

#[test]
fn disjoint_blocks_of_one_page_from_two_threads() {
    let cache = cache(4);
    thread::scope(|s| {
        for t in 0..2u64 {
            let cache = &cache;
            s.spawn(move || {
                for round in 0..3u8 {
                    let mut block = cache.get_for_write(t * 32, 32).expect("block");
                    block.fill(round);
                }
            });
        }
    });
    assert!(cache.get(0, 64).expect("block").iter().all(|&b| b == 2));
}
