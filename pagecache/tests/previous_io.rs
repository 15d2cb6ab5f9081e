//! Guards the rule that a failed sync ends the cache's life as a commit point: on Linux a failed
//! `fsync` may already have dropped the pages whose write-back failed, so a retried flush could
//! "succeed" over lost data. After a failed sync every later flush, miss, write-back and
//! truncate is refused with `Error::PreviousIo` (pages already cached stay readable), and a new
//! cache over the reopened backend starts from what is really there.

mod common;

use std::sync::Arc;

use common::{PAGE_SIZE, assert_page, pattern, tag_of};
use pagecache::{CacheConfig, Error, PageCache};
use pageio::{Fault, FaultyPageIo, MemPageIo, Op, PageIo};

type Faulty = FaultyPageIo<MemPageIo>;

const PAGES: u64 = 40;

fn open(io: &Arc<Faulty>, capacity: usize) -> PageCache {
    let io: Arc<dyn PageIo> = io.clone();
    PageCache::new(io, CacheConfig::default().with_capacity(capacity)).expect("valid config")
}

/// Writes `pattern(1, no)` to every page through a small cache, so most pages are written back
/// by eviction (and dropped from the cache) before the flush, whose sync is made to fail.
fn fail_the_sync(seed: u64) -> (Arc<Faulty>, PageCache) {
    let io = Arc::new(
        FaultyPageIo::new(MemPageIo::new(PAGE_SIZE).expect("valid page size")).with_seed(seed),
    );
    let cache = open(&io, 4);
    for no in 0..PAGES {
        let page = cache.get(no).expect("get");
        page.write().copy_from_slice(&pattern(1, no));
    }
    assert!(
        cache.stats().write_backs > 0,
        "the scenario needs write-backs"
    );
    io.fail(Fault::SyncAt(io.counts().syncs));
    match cache.flush() {
        Err(Error::Flush { page: None, source }) => assert!(
            matches!(
                *source,
                pageio::Error::Injected {
                    op: Op::Sync,
                    page: None
                }
            ),
            "{source:?}"
        ),
        other => panic!("expected the sync to fail, got {other:?}"),
    }
    io.clear_faults();
    (io, cache)
}

#[track_caller]
fn assert_previous_io<T: std::fmt::Debug>(result: pagecache::Result<T>, what: &str) {
    match result {
        Err(Error::PreviousIo { source }) => assert!(
            matches!(
                *source,
                pageio::Error::Injected {
                    op: Op::Sync,
                    page: None
                }
            ),
            "{what}: the source is the failed sync, got {source:?}"
        ),
        other => panic!("{what}: expected PreviousIo, got {other:?}"),
    }
}

/// The reported data loss: a flush retried after a failed sync returned `Ok` while pages that
/// eviction had written back were gone. Now the retry is refused, whatever the failed sync lost.
#[test]
fn a_flush_after_a_failed_sync_is_refused() {
    let mut lost_somewhere = false;
    for seed in 0..8 {
        let (io, cache) = fail_the_sync(seed);
        lost_somewhere |= io.counts().discarded > 0;
        assert_previous_io(cache.flush(), "the retried flush");
        assert_previous_io(cache.flush(), "and every later one");
        let err = cache.flush().expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("reopen"), "the error says what to do: {text}");
    }
    assert!(
        lost_somewhere,
        "some failed sync lost writes, as Linux's may"
    );
}

/// After the failed sync nothing touches the backend through this cache: misses and truncates
/// are refused; cached pages can still be read and written in memory.
#[test]
fn a_poisoned_cache_refuses_backend_access_but_keeps_what_it_holds() {
    let (io, cache) = fail_the_sync(3);
    let cached: Vec<u64> = (0..PAGES).filter(|&no| cache.contains(no)).collect();
    assert!(!cached.is_empty());
    let reads = io.counts().reads;
    let writes = io.counts().writes;
    assert_previous_io(cache.get(PAGES + 10), "a miss");
    assert_previous_io(cache.get_for_overwrite(PAGES + 11), "an overwrite miss");
    assert_previous_io(cache.truncate(1), "a truncate");
    for &no in &cached {
        let page = cache.get(no).expect("a hit needs no backend");
        assert_page(&page.read(), 1, no, "cached content");
    }
    assert_eq!(io.counts().reads, reads, "no backend read");
    assert_eq!(io.counts().writes, writes, "no backend write");
    assert!(cache.is_poisoned());
}

/// Reopening from the backend is the way on: a new cache sees, page by page, either the write or
/// the state before it — what really reached the device — and commits normally.
#[test]
fn a_new_cache_over_the_backend_works() {
    let (io, cache) = fail_the_sync(5);
    drop(cache);
    let cache = open(&io, 4);
    assert!(!cache.is_poisoned());
    for no in 0..PAGES {
        let tag = tag_of(&cache.get(no).expect("get").read());
        assert!(tag == 0 || tag == 1, "page {no} holds tag {tag}");
    }
    let page = cache.get(0).expect("get");
    page.write().copy_from_slice(&pattern(2, 0));
    drop(page);
    cache.flush().expect("a fresh cache commits");
}
