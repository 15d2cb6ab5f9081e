//! Guards `truncate`: content past the new end is gone (reads fail, later write blocks there
//! start from zeros, cached, written-back and flushed pages alike), content before it is kept,
//! the tail of the last partial page is zeroed, and growing adds zeros.

use std::sync::Arc;

use blockcache::{BlockCache, Error};
use pagecache::CacheConfig;
use pageio::{MemPageIo, PageIo};

const PAGE_SIZE: usize = 512;
const PS: u64 = PAGE_SIZE as u64;
/// The content every scenario starts from: bytes `0..LEN`, eight pages, the last one partial.
const LEN: usize = 4000;

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|x| (x % 253) as u8 + 1)
        .collect()
}

fn open(io: &Arc<MemPageIo>, capacity: usize) -> BlockCache {
    let io: Arc<dyn PageIo> = io.clone();
    BlockCache::new(io, CacheConfig::default().with_capacity(capacity)).expect("open")
}

/// A cache over a fresh backend holding the pattern over `0..LEN`, flushed or not.
fn setup(capacity: usize, flushed: bool) -> (Arc<MemPageIo>, BlockCache) {
    let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("page size"));
    let mut cache = open(&io, capacity);
    // In pieces, so that a small cache evicts (and writes back) as it goes.
    for offset in (0..LEN as u64).step_by(400) {
        cache
            .get_for_write(offset, 400)
            .expect("get_for_write")
            .copy_from_slice(&pattern(offset, 400));
    }
    if flushed {
        cache.flush().expect("flush");
    }
    (io, cache)
}

fn backend_page(io: &MemPageIo, no: u64) -> Vec<u8> {
    let mut page = vec![0; PAGE_SIZE];
    io.read_page(no, &mut page).expect("read");
    page
}

/// Truncates to `len` (not page-aligned, below `LEN`) and checks everything a reader can see.
fn check_shrink(io: &Arc<MemPageIo>, mut cache: BlockCache, len: u64) {
    cache.truncate(len).expect("truncate");
    assert_eq!(cache.len(), len);
    assert_eq!(cache.live_blocks(), 0);

    // Before the end: kept. At or past it: PastEnd.
    assert!(*cache.get(0, len as usize).expect("get") == *pattern(0, len as usize));
    for (offset, n) in [(len, 1), (len - 1, 2), (len + 700, 10), (0, LEN)] {
        match cache.get(offset, n) {
            Err(Error::PastEnd { end, .. }) => assert_eq!(end, len),
            other => panic!("{offset}+{n} after truncate({len}): {other:?}"),
        }
    }

    // Write blocks past the end start from zeros: the rest of the last page, a later page read
    // as a partial edge, and the old last page.
    {
        let tail = cache.get_for_write(len, 100).expect("get_for_write");
        assert!(
            tail.iter().all(|&b| b == 0),
            "the last page's tail was not zeroed"
        );
    }
    let later = (len / PS + 1) * PS + 30;
    assert!(
        cache
            .get_for_write(later, 40)
            .expect("get_for_write")
            .iter()
            .all(|&b| b == 0),
        "a page past the end kept old content"
    );
    assert!(
        cache
            .get_for_write(LEN as u64 - 20, 20)
            .expect("get_for_write")
            .iter()
            .all(|&b| b == 0),
        "the old last page kept old content"
    );
    // Taking write blocks there grew the end again, over zeros.
    assert_eq!(cache.len(), LEN as u64);
    assert!(
        cache
            .get(len, LEN - len as usize)
            .expect("get")
            .iter()
            .all(|&b| b == 0)
    );
    cache.truncate(len).expect("truncate again");

    // Durable after a flush: whole pages up to the end, the last page's tail zeroed.
    cache.flush().expect("flush");
    let pages = len.div_ceil(PS);
    assert_eq!(io.num_pages().expect("num_pages"), pages);
    let mut backend = Vec::new();
    for no in 0..pages + 2 {
        backend.extend_from_slice(&backend_page(io, no));
    }
    assert!(backend[..len as usize] == *pattern(0, len as usize));
    assert!(backend[len as usize..].iter().all(|&b| b == 0));

    // Reopened, the end is the backend's whole pages; the tail reads as zeros.
    drop(cache);
    let cache = open(io, 4);
    assert_eq!(cache.len(), pages * PS);
    assert!(*cache.get(0, len as usize).expect("get") == *pattern(0, len as usize));
    let tail = cache.get(len, (pages * PS - len) as usize).expect("get");
    assert!(tail.iter().all(|&b| b == 0));
}

#[test]
fn shrink_flushed_content() {
    let (io, cache) = setup(1024, true);
    check_shrink(&io, cache, 1300);
}

#[test]
fn shrink_unflushed_dirty_pages() {
    // Pages past the new end are dirty in the cache and were never written: they are dropped.
    let (io, cache) = setup(1024, false);
    check_shrink(&io, cache, 1300);
}

#[test]
fn shrink_after_write_backs() {
    // Capacity 2: most pages were written back by eviction and live only in the backend.
    let (io, cache) = setup(2, false);
    assert!(cache.stats().write_backs > 0);
    check_shrink(&io, cache, 1300);
}

#[test]
fn shrink_within_the_first_page() {
    let (io, cache) = setup(1024, true);
    check_shrink(&io, cache, 1);
}

#[test]
fn shrink_to_a_page_boundary() {
    let (io, mut cache) = setup(1024, true);
    cache.truncate(2 * PS).expect("truncate");
    assert_eq!(cache.len(), 2 * PS);
    assert!(*cache.get(0, 2 * PAGE_SIZE).expect("get") == *pattern(0, 2 * PAGE_SIZE));
    assert!(matches!(cache.get(2 * PS, 1), Err(Error::PastEnd { .. })));
    // The first byte of the first page past the end, as a partial edge: zeros.
    assert_eq!(cache.get_for_write(2 * PS, 1).expect("get_for_write")[0], 0);
    cache.truncate(2 * PS).expect("truncate");
    cache.flush().expect("flush");
    assert_eq!(io.num_pages().expect("num_pages"), 2);
    assert_eq!(backend_page(&io, 1), pattern(PS, PAGE_SIZE));
    assert_eq!(backend_page(&io, 2), vec![0; PAGE_SIZE]);
}

#[test]
fn shrink_to_zero() {
    let (io, mut cache) = setup(1024, true);
    cache.truncate(0).expect("truncate");
    assert!(cache.is_empty());
    assert!(matches!(
        cache.get(0, 1),
        Err(Error::PastEnd { end: 0, .. })
    ));
    cache.flush().expect("flush");
    assert_eq!(io.num_pages().expect("num_pages"), 0);
    drop(cache);
    assert!(open(&io, 4).is_empty());
}

#[test]
fn grow_adds_zeros() {
    let (io, mut cache) = setup(1024, true);
    cache.truncate(1300).expect("shrink");
    cache.truncate(6000).expect("grow");
    assert_eq!(cache.len(), 6000);
    assert!(*cache.get(0, 1300).expect("get") == *pattern(0, 1300));
    assert!(cache.get(1300, 4700).expect("get").iter().all(|&b| b == 0));
    cache.flush().expect("flush");
    assert_eq!(io.num_pages().expect("num_pages"), 6000_u64.div_ceil(PS));
    for no in 3..12 {
        assert_eq!(backend_page(&io, no), vec![0; PAGE_SIZE], "page {no}");
    }
}
