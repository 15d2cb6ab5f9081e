//! Guards the cache's behaviour when the backend fails or crashes: failed write-backs, flush
//! writes and reads lose nothing and can be retried, a page that cannot be written back does not
//! block eviction, a failed sync is reported and not retried, a failed truncate leaves no clean
//! page standing for cut bytes, and a crash at any point of a flush reopens to the last flushed
//! or the new content of each page, never anything else.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::{PAGE_SIZE, Rng, assert_page, pattern, read_backend};
use pagecache::{CacheConfig, Error, PageCache};
use pageio::{Fault, FaultyPageIo, MemPageIo, Op, PageIo};

type Faulty = FaultyPageIo<MemPageIo>;

fn faulty() -> Arc<Faulty> {
    Arc::new(FaultyPageIo::new(
        MemPageIo::new(PAGE_SIZE).expect("valid page size"),
    ))
}

fn open(io: &Arc<Faulty>, capacity: usize, flush_batch: usize) -> PageCache {
    let io: Arc<dyn PageIo> = io.clone();
    let config = CacheConfig::default()
        .with_capacity(capacity)
        .with_flush_batch(flush_batch);
    PageCache::new(io, config).expect("valid config")
}

/// Writes `pattern(tag, no)` to page `no` through the cache.
fn write(cache: &PageCache, no: u64, tag: u64) {
    let pin = cache
        .get(no)
        .unwrap_or_else(|e| panic!("get({no}) failed: {e}"));
    pin.write().copy_from_slice(&pattern(tag, no));
}

/// Reads page `no` through the cache and checks it holds `tag`.
#[track_caller]
fn check(cache: &PageCache, no: u64, tag: u64, what: &str) {
    let pin = cache
        .get(no)
        .unwrap_or_else(|e| panic!("{what}: get({no}) failed: {e}"));
    assert_page(&pin.read(), tag, no, what);
}

/// Whether `err` is the injected failure of `op` on `page`.
fn is_injected(err: &pageio::Error, op: Op, page: Option<u64>) -> bool {
    matches!(err, pageio::Error::Injected { op: o, page: p } if *o == op && *p == page)
}

/// A failed write-back during eviction is returned from the `get` that needed the room; the
/// dirty victim stays cached with its data and the requested page is not inserted. A later
/// eviction retries the write-back, and a flush after the fault is cleared makes it durable.
#[test]
fn failed_write_back_keeps_the_page() {
    let io = faulty();
    let cache = open(&io, 1, 4);
    write(&cache, 0, 10);
    io.fail(Fault::WritePage(0));

    for attempt in 0..2 {
        match cache.get(1) {
            Err(Error::WriteBack { page: 0, source }) => {
                assert!(is_injected(&source, Op::Write, Some(0)), "{source:?}");
            }
            other => panic!("attempt {attempt}: expected a write-back error, got {other:?}"),
        }
        assert!(cache.contains(0), "the victim stays cached");
        assert!(!cache.contains(1), "the requested page is not inserted");
        let stats = cache.stats();
        assert_eq!(
            (stats.cached, stats.dirty, stats.pinned),
            (1, 1, 0),
            "{stats:?}"
        );
        assert_eq!(
            (stats.misses, stats.evictions, stats.write_backs),
            (1, 0, 0),
            "{stats:?}"
        );
        assert_page(
            &read_backend(io.as_ref(), 0),
            0,
            0,
            "nothing reached the backend",
        );
    }

    // The victim's data is intact and it is still dirty.
    {
        let pin = cache.get(0).expect("hit");
        assert!(pin.is_dirty());
        assert_page(&pin.read(), 10, 0, "victim after failed write-backs");
    }

    io.clear_faults();
    cache.flush().expect("flush after the fault is cleared");
    assert_page(&read_backend(io.inner(), 0), 10, 0, "synced backend");
    assert_eq!(cache.stats().dirty, 0);
    // Now clean, the page is evicted without a write-back.
    check(&cache, 1, 0, "page 1");
    let stats = cache.stats();
    assert_eq!((stats.evictions, stats.write_backs), (1, 0), "{stats:?}");
    assert!(!cache.contains(0));
    check(&cache, 0, 10, "page 0 read back");
}

/// A one-shot write-back failure with no other victim: the miss tries the page again as a last
/// resort, which succeeds; the data then reaches the backend through eviction and is made
/// durable by a flush.
#[test]
fn write_back_is_retried_when_no_other_victim_is_left() {
    let io = faulty();
    let cache = open(&io, 1, 4);
    write(&cache, 3, 30);
    io.fail(Fault::WriteAt(io.counts().writes));
    check(&cache, 4, 0, "page 4");
    let stats = cache.stats();
    assert_eq!(
        (
            stats.failed_write_backs,
            stats.write_backs,
            stats.evictions,
            stats.cached
        ),
        (1, 1, 1, 1),
        "{stats:?}"
    );
    assert!(!cache.contains(3));
    assert_page(&read_backend(io.as_ref(), 3), 30, 3, "written back");
    assert_eq!(io.unsynced_pages(), vec![3], "a write-back is not synced");
    cache.flush().expect("flush");
    assert_page(&read_backend(io.inner(), 3), 30, 3, "synced by the flush");
}

/// A crashed device during a write-back: the `get` fails, the page stays dirty in the cache, and
/// once the device restarts the same cache can flush it.
#[test]
fn write_back_into_a_crashed_device() {
    let io = faulty();
    let cache = open(&io, 2, 4);
    write(&cache, 0, 1);
    write(&cache, 1, 2);
    io.crash_after_writes(0);
    match cache.get(2) {
        Err(Error::WriteBack { page: 0, source }) => assert!(
            matches!(source, pageio::Error::Crashed { op: Op::Write }),
            "{source:?}"
        ),
        other => panic!("expected a write-back error, got {other:?}"),
    }
    assert_eq!(cache.stats().dirty, 2);
    io.crash();
    cache.flush().expect("flush after the restart");
    drop(cache);
    let cache = open(&io, 2, 4);
    check(&cache, 0, 1, "after reopen");
    check(&cache, 1, 2, "after reopen");
}

/// A failed write during a flush returns `Error::Flush` naming the first page of the failed
/// batch; every page stays dirty (nothing was synced) and a retry writes and syncs them all. A
/// torn write (a short write) is repaired by the retry too.
#[test]
fn failed_flush_write_is_retried() {
    const PAGES: u64 = 7;
    for (case, fault) in [
        Fault::WritePage(3),
        Fault::ShortWriteAt {
            index: 3,
            bytes: 100,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let io = faulty();
        let cache = open(&io, 16, 2);
        for no in 0..PAGES {
            write(&cache, no, 100 + no);
        }
        assert_eq!(
            io.counts().writes,
            0,
            "case {case}: no write before the flush"
        );
        io.fail(fault);
        // Batches are [0, 1], [2, 3], ...: the fourth write (page 3) fails, in the batch at 2.
        match cache.flush() {
            Err(Error::Flush {
                page: Some(2),
                source,
            }) => assert!(
                is_injected(&source, Op::Write, Some(3)),
                "case {case}: {source:?}"
            ),
            other => panic!("case {case}: expected a flush error at batch 2, got {other:?}"),
        }
        let stats = cache.stats();
        assert_eq!(
            (stats.dirty, stats.cached),
            (PAGES as usize, PAGES as usize),
            "case {case}: {stats:?}"
        );
        for no in 0..PAGES {
            let pin = cache.get(no).expect("hit");
            assert!(pin.is_dirty(), "case {case}: page {no} stays dirty");
            assert_page(
                &pin.read(),
                100 + no,
                no,
                "cached content after a failed flush",
            );
            assert_page(&read_backend(io.inner(), no), 0, no, "nothing synced");
        }

        io.clear_faults();
        cache.flush().expect("retried flush");
        assert_eq!(cache.stats().dirty, 0, "case {case}");
        for no in 0..PAGES {
            assert_page(
                &read_backend(io.inner(), no),
                100 + no,
                no,
                "synced by the retry",
            );
        }
    }
}

/// A failed sync returns `Error::Flush { page: None }` and nothing is durable; the cache then
/// refuses to flush again (`tests/previous_io.rs` has the rest of that rule).
#[test]
fn failed_sync_is_reported_and_not_retried() {
    let io = faulty();
    let cache = open(&io, 8, 8);
    for no in 0..4 {
        write(&cache, no, 40 + no);
    }
    io.fail(Fault::SyncAt(io.counts().syncs));
    match cache.flush() {
        Err(Error::Flush { page: None, source }) => {
            assert!(is_injected(&source, Op::Sync, None), "{source:?}");
        }
        other => panic!("expected a sync error, got {other:?}"),
    }
    assert_page(
        &read_backend(io.inner(), 0),
        0,
        0,
        "a failed sync makes nothing durable",
    );
    io.clear_faults();
    assert!(matches!(cache.flush(), Err(Error::PreviousIo { .. })));
}

/// A dirty page whose write-back fails is not the victim of every later miss: eviction skips it
/// and evicts the next least recently used page, so reads of other pages go on working. The
/// failure is reported by the next flush, which retries the write; nothing is lost.
#[test]
fn a_page_whose_write_back_fails_is_skipped_by_eviction() {
    let io = faulty();
    for no in 1..10 {
        io.write_page(no, &pattern(no, no)).expect("write");
    }
    io.sync().expect("sync");
    let cache = open(&io, 3, 4);
    write(&cache, 0, 100);
    check(&cache, 1, 1, "clean");
    check(&cache, 2, 2, "clean");
    io.fail(Fault::WritePage(0));
    // Page 0 is the least recently used: its write-back fails, and the clean pages behind it go
    // instead, miss after miss.
    for no in 3..10 {
        check(&cache, no, no, "a miss while page 0 cannot be written back");
    }
    assert!(cache.contains(0), "the failing page stays cached");
    let pin = cache.get(0).expect("hit");
    assert!(pin.is_dirty());
    assert_page(&pin.read(), 100, 0, "its content");
    drop(pin);
    match cache.flush() {
        Err(Error::Flush {
            page: Some(0),
            source,
        }) => assert!(is_injected(&source, Op::Write, Some(0)), "{source:?}"),
        other => panic!("the flush reports the failing write, got {other:?}"),
    }
    io.clear_faults();
    cache.flush().expect("flush after the fault is cleared");
    assert_page(&read_backend(io.inner(), 0), 100, 0, "durable");
}

/// A backend whose truncate cuts and then reports an error (a failed delete in an object store,
/// say). The cache puts the pages it had taken out back, dirty: the next flush writes them again,
/// so no cached page stands for bytes the backend no longer has.
#[derive(Debug)]
struct CutThenFail(MemPageIo);

impl PageIo for CutThenFail {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        self.0.read_page(no, buf)
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        self.0.write_page(no, buf)
    }
    fn num_pages(&self) -> pageio::Result<u64> {
        self.0.num_pages()
    }
    fn sync(&self) -> pageio::Result<()> {
        self.0.sync()
    }
    fn truncate(&self, num_pages: u64) -> pageio::Result<()> {
        self.0.truncate(num_pages)?;
        Err(pageio::Error::backend(
            Op::Truncate,
            None,
            "deleting a page object failed",
        ))
    }
}

#[test]
fn pages_put_back_after_a_failed_truncate_are_dirty() {
    let backend = Arc::new(CutThenFail(MemPageIo::new(PAGE_SIZE).expect("page size")));
    for no in 0..6 {
        backend.write_page(no, &pattern(no + 1, no)).expect("write");
    }
    let io: Arc<dyn PageIo> = backend.clone();
    let cache = PageCache::new(io, CacheConfig::default().with_capacity(8)).expect("config");
    check(&cache, 5, 6, "cached before the truncate");
    assert!(matches!(
        cache.truncate(3),
        Err(Error::Truncate { num_pages: 3, .. })
    ));
    // The backend did cut; the cached page is back, dirty, and the flush restores it.
    assert_page(&read_backend(&*backend, 5), 0, 5, "cut by the backend");
    let pin = cache.get(5).expect("hit");
    assert!(pin.is_dirty(), "put back dirty");
    assert_page(&pin.read(), 6, 5, "content kept");
    drop(pin);
    cache.flush().expect("flush");
    assert_page(
        &read_backend(&*backend, 5),
        6,
        5,
        "written again by the flush",
    );
}

/// A failed read returns `Error::Read` and leaves nothing resident; the next `get` reads again.
#[test]
fn failed_read_is_not_cached() {
    let io = faulty();
    io.write_page(5, &pattern(55, 5)).expect("write");
    io.sync().expect("sync");
    let cache = open(&io, 4, 4);

    io.fail(Fault::ReadPage(5));
    for _ in 0..2 {
        match cache.get(5) {
            Err(Error::Read { page: 5, source }) => {
                assert!(is_injected(&source, Op::Read, Some(5)), "{source:?}");
            }
            other => panic!("expected a read error, got {other:?}"),
        }
        assert!(!cache.contains(5));
        let stats = cache.stats();
        assert_eq!((stats.cached, stats.pinned), (0, 0), "{stats:?}");
    }

    io.clear_faults();
    let reads = io.counts().reads;
    check(&cache, 5, 55, "after the fault is cleared");
    assert_eq!(io.counts().reads, reads + 1, "the retry reads the backend");
    assert!(cache.contains(5));
}

/// A `PageIo` whose reads are slow, so that concurrent gets of one page wait on the same load.
#[derive(Debug)]
struct SlowReads<I>(I);

impl<I: PageIo> PageIo for SlowReads<I> {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        // Widens the window for the other gets to arrive; nothing asserted depends on it.
        thread::sleep(Duration::from_millis(5));
        self.0.read_page(no, buf)
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        self.0.write_page(no, buf)
    }
    fn num_pages(&self) -> pageio::Result<u64> {
        self.0.num_pages()
    }
    fn sync(&self) -> pageio::Result<()> {
        self.0.sync()
    }
}

/// Concurrent gets of a page whose (one) read fails: every caller either shares that one error
/// (the same `Arc`) or, arriving after it, loads the page afresh and sees its content. The page
/// is never left resident in a failed state.
#[test]
fn failed_read_is_shared_by_waiters() {
    const K: usize = 4;
    let faulty = faulty();
    faulty.write_page(9, &pattern(99, 9)).expect("write");
    let io: Arc<dyn PageIo> = Arc::new(SlowReads(Arc::clone(&faulty)));
    let cache = PageCache::new(io, CacheConfig::default().with_capacity(4)).expect("valid config");

    for round in 0..10 {
        faulty.fail(Fault::ReadAt(faulty.counts().reads));
        let reads = faulty.counts().reads;
        let barrier = Barrier::new(K);
        let results: Vec<Result<(), Arc<pageio::Error>>> = thread::scope(|s| {
            let handles: Vec<_> = (0..K)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        match cache.get(9) {
                            Ok(pin) => {
                                assert_page(&pin.read(), 99, 9, "a successful get");
                                Ok(())
                            }
                            Err(Error::Read { page: 9, source }) => Err(source),
                            Err(e) => panic!("unexpected error {e:?}"),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("getter panicked"))
                .collect()
        });
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            !errors.is_empty(),
            "round {round}: the first load must fail"
        );
        for err in &errors {
            assert!(
                Arc::ptr_eq(err, errors[0]),
                "round {round}: errors come from one load"
            );
            assert!(is_injected(err, Op::Read, Some(9)), "{err:?}");
        }
        let loads = faulty.counts().reads - reads;
        let successes = (K - errors.len()) as u64;
        assert!(
            loads >= 1 && loads <= 1 + successes,
            "round {round}: {loads} backend reads for {successes} successful gets"
        );
        assert_eq!(cache.contains(9), successes > 0, "round {round}");
        assert_eq!(cache.stats().pinned, 0);
        faulty.clear_faults();
        // Start the next round with the page out of the cache.
        for filler in 100..104 {
            drop(cache.get(filler).expect("get"));
        }
        assert!(!cache.contains(9));
    }
}

/// A crash after a successful flush loses nothing flushed. Writes made after it are lost unless
/// the crash let them reach the disk: those still in the cache always, and those written back by
/// eviction (unsynced) exactly when the crash keeps them.
#[test]
fn crash_after_flush_keeps_flushed_content() {
    const PAGES: u64 = 10;
    for keep_percent in [0, 50, 100] {
        let io = faulty();
        let cache = open(&io, 3, 4);
        for no in 0..PAGES {
            write(&cache, no, 1 + no);
        }
        cache.flush().expect("flush");
        assert!(io.unsynced_pages().is_empty());
        // New content for every other page, without a flush. Capacity 3: most of it is
        // written back by eviction, the rest is only in the cache.
        for no in (0..PAGES).step_by(2) {
            write(&cache, no, 1000 + no);
        }
        let written_back = io.unsynced_pages();
        let still_dirty: Vec<u64> = (0..PAGES)
            .filter(|&no| no % 2 == 0 && !written_back.contains(&no))
            .collect();
        assert!(
            !written_back.is_empty() && !still_dirty.is_empty(),
            "the scenario needs both kinds: {written_back:?} {still_dirty:?}"
        );
        drop(cache);

        let mut rng = Rng::new(keep_percent);
        let mut kept = Vec::new();
        io.crash_keeping(|no| {
            let keep = rng.chance(keep_percent);
            if keep {
                kept.push(no);
            }
            keep
        })
        .expect("crash");

        let cache = open(&io, 3, 4);
        for no in 0..PAGES {
            let tag = if kept.contains(&no) {
                1000 + no
            } else {
                1 + no
            };
            check(
                &cache,
                no,
                tag,
                &format!("after a crash keeping {kept:?} of {written_back:?}"),
            );
        }
    }
}

/// Crashes at every point of a flush: the device dies after `k` writes of the flush (for every
/// `k`, including after all writes but before the sync). The flush fails and every page stays
/// dirty; a reopened cache sees each page as either its previously flushed or its new content
/// (exactly the new one where the crash let the write through); and the surviving cache, flushed
/// again once the device restarts, makes all the new content durable — unless the sync was what
/// failed, after which it refuses to commit (`Error::PreviousIo`).
#[test]
fn crash_at_every_point_of_a_flush() {
    const PAGES: u64 = 9;
    const BATCH: usize = 2;
    for keep in [false, true] {
        for k in 0..=PAGES {
            let io = faulty();
            let cache = open(&io, 16, BATCH);
            for no in 0..PAGES {
                write(&cache, no, 1 + no);
            }
            cache.flush().expect("first flush");
            for no in 0..PAGES {
                write(&cache, no, 500 + no);
            }

            io.crash_after_writes(k);
            let err = cache.flush().expect_err("the device dies during the flush");
            match (&err, k < PAGES) {
                // The write after the k-th finds the device dead; pages are flushed in order.
                (
                    Error::Flush {
                        page: Some(page),
                        source,
                    },
                    true,
                ) if matches!(**source, pageio::Error::Crashed { op: Op::Write }) => {
                    assert_eq!(*page, k - k % BATCH as u64, "k = {k}");
                }
                (Error::Flush { page: None, source }, false)
                    if matches!(**source, pageio::Error::Crashed { op: Op::Sync }) => {}
                _ => panic!("k = {k}: unexpected {err:?}"),
            }
            let stats = cache.stats();
            assert_eq!(stats.dirty, PAGES as usize, "k = {k}: {stats:?}");
            assert_eq!(io.unsynced_pages().len() as u64, k);

            // Restart the device. With `keep`, the odd pages among those written reach the disk.
            let mut kept = Vec::new();
            io.crash_keeping(|no| {
                let kept_now = keep && no % 2 == 1;
                if kept_now {
                    kept.push(no);
                }
                kept_now
            })
            .expect("crash");

            let reopened = open(&io, 16, BATCH);
            for no in 0..PAGES {
                let tag = if kept.contains(&no) { 500 + no } else { 1 + no };
                check(&reopened, no, tag, &format!("k = {k}, reopened"));
            }
            drop(reopened);

            if k == PAGES {
                // The sync itself failed: the surviving cache refuses to commit again.
                assert!(
                    matches!(cache.flush(), Err(Error::PreviousIo { .. })),
                    "k = {k}"
                );
                continue;
            }
            // Only a write failed: every page is still cached and dirty, and the flush after
            // the restart writes them all again.
            cache.flush().expect("flush after the restart");
            assert_eq!(cache.stats().dirty, 0);
            drop(cache);
            io.crash();
            let reopened = open(&io, 16, BATCH);
            for no in 0..PAGES {
                check(
                    &reopened,
                    no,
                    500 + no,
                    &format!("k = {k}, after the re-flush"),
                );
            }
        }
    }
}
