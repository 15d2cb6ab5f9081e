//! Guards the pin / evict / write-back / flush protocol under shuttle-explored interleavings: no
//! lost writes, one backend read per concurrent miss, no eviction of a pinned page, shared read
//! failures, failed write-backs and flushes that lose nothing, no lost bytes served by a miss
//! racing a failed sync, and consistent stats.
//!
//! Built with `RUSTFLAGS="--cfg shuttle"` (`cargo xtask test-all` does), the cache's locks and
//! atomics are shuttle's, so every lock operation inside the cache is a scheduling point. The
//! backend below uses `std` atomics and `MemPageIo` (whose `std` lock is held only within a call,
//! never across a scheduling point), so it is safe inside shuttle and invisible to its
//! scheduler. Each scenario runs under the random scheduler and under PCT.

// The crate doc comes before the `cfg`: without `--cfg shuttle`, `cfg` strips the crate together
// with any attribute after it, and the empty test crate would then be undocumented.
#![cfg(shuttle)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pagecache::{CacheConfig, CacheStats, Error, PageCache};
use pageio::{MemPageIo, PageIo};

/// The smallest page size a backend accepts keeps each copy cheap.
const PAGE_SIZE: usize = 512;
/// Pages the backend counts reads of; every scenario stays below it.
const MAX_PAGES: usize = 8;
const RANDOM_ITERATIONS: usize = 5000;
const PCT_ITERATIONS: usize = 5000;
const PCT_DEPTH: usize = 3;

/// A `MemPageIo` that counts reads per page and successful writes, flags any write of a page
/// whose bytes are not all equal (every page in these scenarios is written whole with one byte,
/// so an uneven one was copied while a writer was half-way through it), can fail the next
/// read or write of a chosen page, and can fail the next sync — which then loses every write
/// since the last good sync, as a failed `fsync` may.
#[derive(Debug)]
struct CountingIo {
    inner: MemPageIo,
    reads: [AtomicU64; MAX_PAGES],
    writes: AtomicU64,
    torn_write: AtomicBool,
    /// Page whose next read fails (`u64::MAX`: none); cleared by that read.
    fail_next_read: AtomicU64,
    /// Page whose next write fails (`u64::MAX`: none); cleared by that write.
    fail_next_write: AtomicU64,
    /// The next sync fails and loses the unsynced writes; cleared by that sync.
    fail_next_sync: AtomicBool,
    /// The content before the first write since the last good sync, of every page written
    /// since. A `std` lock held only inside a call, like `MemPageIo`'s.
    unsynced: std::sync::Mutex<Vec<(u64, Vec<u8>)>>,
}

impl CountingIo {
    fn new() -> Self {
        Self {
            inner: MemPageIo::new(PAGE_SIZE).expect("MemPageIo"),
            reads: std::array::from_fn(|_| AtomicU64::new(0)),
            writes: AtomicU64::new(0),
            torn_write: AtomicBool::new(false),
            fail_next_read: AtomicU64::new(u64::MAX),
            fail_next_write: AtomicU64::new(u64::MAX),
            fail_next_sync: AtomicBool::new(false),
            unsynced: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn reads(&self, no: u64) -> u64 {
        self.reads[no as usize].load(Ordering::SeqCst)
    }

    fn total_reads(&self) -> u64 {
        self.reads.iter().map(|r| r.load(Ordering::SeqCst)).sum()
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The stored content of page `no`, read without counting.
    fn stored(&self, no: u64) -> Vec<u8> {
        let mut buf = vec![0u8; PAGE_SIZE];
        self.inner.read_page(no, &mut buf).expect("read_page");
        buf
    }
}

impl PageIo for CountingIo {
    fn page_size(&self) -> usize {
        PAGE_SIZE
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        self.reads[no as usize].fetch_add(1, Ordering::SeqCst);
        if self
            .fail_next_read
            .compare_exchange(no, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(pageio::Error::Injected {
                op: pageio::Op::Read,
                page: Some(no),
            });
        }
        self.inner.read_page(no, buf)
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        if buf.iter().any(|&b| b != buf[0]) {
            self.torn_write.store(true, Ordering::SeqCst);
        }
        if self
            .fail_next_write
            .compare_exchange(no, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(pageio::Error::Injected {
                op: pageio::Op::Write,
                page: Some(no),
            });
        }
        {
            let mut unsynced = self.unsynced.lock().expect("unsynced");
            if !unsynced.iter().any(|(p, _)| *p == no) {
                unsynced.push((no, self.stored(no)));
            }
            self.inner.write_page(no, buf)?;
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn num_pages(&self) -> pageio::Result<u64> {
        self.inner.num_pages()
    }

    fn sync(&self) -> pageio::Result<()> {
        let mut unsynced = self.unsynced.lock().expect("unsynced");
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            for (no, before) in unsynced.drain(..) {
                self.inner.write_page(no, &before)?;
            }
            return Err(pageio::Error::Injected {
                op: pageio::Op::Sync,
                page: None,
            });
        }
        unsynced.clear();
        self.inner.sync()
    }
}

/// A cache of `capacity` pages over a fresh counting backend.
fn cache_over(capacity: usize) -> (Arc<CountingIo>, Arc<PageCache>) {
    let io = Arc::new(CountingIo::new());
    let dyn_io: Arc<dyn PageIo> = io.clone();
    let cache = PageCache::new(dyn_io, CacheConfig::default().with_capacity(capacity))
        .expect("PageCache::new");
    (io, Arc::new(cache))
}

/// The byte thread `thread` writes over its whole page in round `round` (never 0, so it cannot
/// be mistaken for a zero-filled page).
fn stamp(thread: u64, round: u64) -> u8 {
    (1 + thread * 16 + round) as u8
}

/// The single byte a page is made of, or a failure naming the page if its bytes differ.
fn uniform(no: u64, data: &[u8]) -> u8 {
    assert_eq!(data.len(), PAGE_SIZE, "page {no} length");
    assert!(
        data.iter().all(|&b| b == data[0]),
        "page {no} is not uniform: a torn copy"
    );
    data[0]
}

/// The checks every scenario ends with, after all threads joined and a final flush: nothing
/// pinned or dirty, no torn write, and every backend write accounted for by write-backs and
/// flushes.
fn check_quiescent(io: &CountingIo, stats: &CacheStats) {
    assert_eq!(
        stats.pinned, 0,
        "pins left after every PageRef dropped: {stats:?}"
    );
    assert_eq!(stats.dirty, 0, "dirty pages left after flush: {stats:?}");
    assert!(
        !io.torn_write.load(Ordering::SeqCst),
        "a torn page reached the backend"
    );
    assert_eq!(
        io.writes(),
        stats.write_backs + stats.flushed,
        "backend writes are write-backs plus flushed pages: {stats:?}"
    );
    assert!(
        io.total_reads() <= stats.misses,
        "a hit or an overwrite read: {stats:?}"
    );
}

/// Three threads, each owning one page, on a cache of capacity 1, all also reading a shared page
/// so their own pages keep being evicted (written back) and reloaded; thread 0 also flushes
/// concurrently. Each thread pins its page across the other traffic and checks it stays resident
/// with its content; each reload must see the thread's last write; after the threads, the
/// backend holds every thread's last write.
fn writers_under_eviction() {
    const THREADS: u64 = 3;
    const SHARED: u64 = THREADS;
    const ROUNDS: u64 = 3;
    let (io, cache) = cache_over(1);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = Arc::clone(&cache);
            shuttle::thread::spawn(move || {
                let mut last: Option<u8> = None;
                for round in 1..=ROUNDS {
                    // Odd rounds load the page, even rounds overwrite it.
                    let own = if round % 2 == 1 {
                        let own = cache.get(t).expect("get own page");
                        let seen = uniform(t, &own.read());
                        assert_eq!(seen, last.unwrap_or(0), "page {t}: a lost write");
                        own
                    } else {
                        let own = cache.get_for_overwrite(t).expect("overwrite own page");
                        let seen = uniform(t, &own.read());
                        assert!(
                            seen == 0 || Some(seen) == last,
                            "page {t}: overwrite saw {seen}, last write {last:?}"
                        );
                        own
                    };
                    own.write().fill(stamp(t, round));
                    last = Some(stamp(t, round));

                    // Traffic on another page while ours is pinned: with capacity 1 it forces
                    // evictions, which must never pick our pinned page.
                    let shared = cache.get(SHARED).expect("get shared page");
                    assert_eq!(
                        uniform(SHARED, &shared.read()),
                        0,
                        "shared page never written"
                    );
                    drop(shared);
                    assert!(cache.contains(t), "page {t} evicted while pinned");
                    assert_eq!(
                        uniform(t, &own.read()),
                        stamp(t, round),
                        "page {t} changed while pinned"
                    );
                    drop(own);

                    if t == 0 && round == 1 {
                        cache.flush().expect("concurrent flush");
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread panicked");
    }

    cache.flush().expect("final flush");
    for t in 0..THREADS {
        assert_eq!(
            uniform(t, &io.stored(t)),
            stamp(t, ROUNDS),
            "page {t}: last write not in the backend"
        );
    }
    check_quiescent(&io, &cache.stats());
}

/// Two threads on two pages with capacity 1: each writes its own page repeatedly and reads the
/// other's, so every get races with the eviction (and write-back) of the page it wants. An
/// owner must always read back its last write; a reader never sees a page go back in time.
fn get_races_write_back() {
    const ROUNDS: u64 = 3;
    let (io, cache) = cache_over(1);
    let handles: Vec<_> = (0..2u64)
        .map(|t| {
            let cache = Arc::clone(&cache);
            shuttle::thread::spawn(move || {
                let other = 1 - t;
                let mut seen_other = 0u8;
                for round in 1..=ROUNDS {
                    {
                        let own = cache.get(t).expect("get own page");
                        let before = uniform(t, &own.read());
                        let expected = if round == 1 { 0 } else { stamp(t, round - 1) };
                        assert_eq!(before, expected, "page {t}: a lost write");
                        own.write().fill(stamp(t, round));
                    }
                    let page = cache.get(other).expect("get other page");
                    let now = uniform(other, &page.read());
                    assert!(
                        now >= seen_other,
                        "page {other} went back from {seen_other} to {now}"
                    );
                    seen_other = now;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread panicked");
    }

    cache.flush().expect("final flush");
    for t in 0..2 {
        assert_eq!(
            uniform(t, &io.stored(t)),
            stamp(t, ROUNDS),
            "page {t}: last write lost"
        );
    }
    check_quiescent(&io, &cache.stats());
}

/// Three threads miss on the same two pages concurrently with room for both (no eviction can
/// happen): each page is read from the backend exactly once, and every thread sees the loaded
/// content, never the buffer before the load.
fn concurrent_misses_read_once() {
    const THREADS: u64 = 3;
    let (io, cache) = cache_over(4);
    for no in 0..2 {
        io.inner
            .write_page(no, &[0x40 + no as u8; PAGE_SIZE])
            .expect("prewrite");
    }
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = Arc::clone(&cache);
            shuttle::thread::spawn(move || {
                let order = if t % 2 == 0 { [0, 1] } else { [1, 0] };
                for no in order {
                    let page = cache.get(no).expect("get");
                    assert_eq!(
                        uniform(no, &page.read()),
                        0x40 + no as u8,
                        "page {no} content"
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread panicked");
    }

    for no in 0..2 {
        assert_eq!(
            io.reads(no),
            1,
            "page {no}: one backend read per concurrent miss"
        );
    }
    let stats = cache.stats();
    assert_eq!(stats.misses, 2, "{stats:?}");
    assert_eq!(stats.hits, 2 * THREADS - 2, "{stats:?}");
    assert_eq!(stats.evictions, 0, "{stats:?}");
    assert_eq!(stats.cached, 2, "{stats:?}");
    cache.flush().expect("flush");
    check_quiescent(&io, &cache.stats());
    assert_eq!(io.writes(), 0, "clean pages written");
}

/// `get_for_overwrite` races two `get`s of the same non-resident page: at most one backend read,
/// every observer sees a whole page — the overwriter the stored one or its zero fill, a `get`
/// the stored one or the new content, never the zero fill (which is not content: a `get` reads
/// the backend into it) — and the overwrite's content is what the backend holds after the
/// flush.
fn overwrite_races_get() {
    const STORED: u8 = 0x40;
    const NEW: u8 = 0x77;
    let (io, cache) = cache_over(2);
    io.inner
        .write_page(0, &[STORED; PAGE_SIZE])
        .expect("prewrite");
    let handles: Vec<_> = (0..3)
        .map(|t| {
            let cache = Arc::clone(&cache);
            shuttle::thread::spawn(move || {
                if t == 0 {
                    let page = cache.get_for_overwrite(0).expect("get_for_overwrite");
                    let seen = uniform(0, &page.read());
                    assert!(seen == 0 || seen == STORED, "overwrite saw {seen}");
                    page.write().fill(NEW);
                } else {
                    let page = cache.get(0).expect("get");
                    let seen = uniform(0, &page.read());
                    assert!([STORED, NEW].contains(&seen), "get saw {seen}");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread panicked");
    }

    assert!(
        io.reads(0) <= 1,
        "{} reads of one resident page",
        io.reads(0)
    );
    cache.flush().expect("flush");
    assert_eq!(uniform(0, &io.stored(0)), NEW, "the overwrite was lost");
    check_quiescent(&io, &cache.stats());
}

/// The first backend read of page 0 fails while two threads miss on it: the thread that loads
/// it gets `Error::Read`, and so does every thread that waited for that load; a thread that came
/// after the failure retries with a fresh read and sees the content. The failed page is never
/// left resident with unread content.
fn failed_read_is_shared_not_cached() {
    let (io, cache) = cache_over(2);
    io.inner
        .write_page(0, &[0x5A; PAGE_SIZE])
        .expect("prewrite");
    io.fail_next_read.store(0, Ordering::SeqCst);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let cache = Arc::clone(&cache);
            shuttle::thread::spawn(move || match cache.get(0) {
                Ok(page) => {
                    assert_eq!(uniform(0, &page.read()), 0x5A, "page 0 after a failed read");
                    true
                }
                Err(Error::Read { page, .. }) => {
                    assert_eq!(page, 0);
                    false
                }
                Err(other) => panic!("unexpected error {other}"),
            })
        })
        .collect();
    let loaded = handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .filter(|&ok| ok)
        .count();

    assert!(loaded < 2, "the failing read went unreported");
    assert_eq!(
        io.reads(0),
        1 + u64::from(loaded > 0),
        "one read per load attempt"
    );
    assert_eq!(
        cache.contains(0),
        loaded > 0,
        "a failed load left page 0 resident"
    );
    if loaded == 0 {
        // The failure is not cached: the next get reads again and succeeds.
        let page = cache.get(0).expect("get after a failed read");
        assert_eq!(uniform(0, &page.read()), 0x5A);
    }
    let stats = cache.stats();
    assert_eq!(stats.pinned, 0, "{stats:?}");
    assert_eq!(stats.dirty, 0, "{stats:?}");
    assert_eq!(stats.cached, 1, "{stats:?}");
}

/// Page 0 is dirty and its next backend write fails. One thread misses on page 1, which must
/// evict page 0 (capacity 1) unless the other thread, the page's owner, has it pinned; the owner
/// reads and rewrites page 0 concurrently. The miss retries a failed write-back once as a last
/// resort (no other victim exists), which succeeds since the failure is one-shot, and the stats
/// count the failure; if the write-back failed while the owner dirtied the page again, the miss
/// returns `Error::WriteBack` and the page stays resident and dirty; if the failure is left for
/// the final flush instead, that flush fails, keeps the page dirty, and the next one succeeds.
/// Whichever way, the failure is seen once and the owner's last write reaches the backend.
fn failed_write_back_keeps_the_page() {
    const FIRST: u8 = 0x33;
    const SECOND: u8 = 0x34;
    let (io, cache) = cache_over(1);
    cache.get(0).expect("get").write().fill(FIRST);
    io.fail_next_write.store(0, Ordering::SeqCst);

    let evictor = {
        let cache = Arc::clone(&cache);
        shuttle::thread::spawn(move || match cache.get(1) {
            Ok(_) => false,
            Err(Error::WriteBack { page, .. }) => {
                assert_eq!(page, 0, "the failed write-back names its page");
                assert!(
                    cache.contains(0),
                    "page 0 dropped after a failed write-back"
                );
                true
            }
            Err(other) => panic!("unexpected error {other}"),
        })
    };
    let owner = {
        let cache = Arc::clone(&cache);
        shuttle::thread::spawn(move || {
            let page = cache.get(0).expect("get own page");
            assert_eq!(uniform(0, &page.read()), FIRST, "page 0 lost its write");
            page.write().fill(SECOND);
        })
    };
    let write_back_failed = evictor.join().expect("evictor panicked");
    owner.join().expect("owner panicked");

    let counted = cache.stats().failed_write_backs;
    match cache.flush() {
        Ok(()) => assert!(
            write_back_failed || counted == 1,
            "the injected write failure went unreported"
        ),
        Err(Error::Flush { page, .. }) => {
            assert!(
                !write_back_failed && counted == 0,
                "one injected failure reported twice"
            );
            assert_eq!(page, Some(0), "the failed flush names its batch");
            assert!(cache.stats().dirty > 0, "a failed flush left nothing dirty");
            cache.flush().expect("flush after a failed flush");
        }
        Err(other) => panic!("unexpected error {other}"),
    }
    assert_eq!(uniform(0, &io.stored(0)), SECOND, "page 0: last write lost");
    check_quiescent(&io, &cache.stats());
}

/// Page 0's new content reached the backend only by an eviction write-back (unsynced) when a
/// flush's sync fails and loses it, while another thread misses on page 0. The miss either read
/// before the loss (and sees the new content) or is refused: it never returns the old bytes,
/// although its read may have begun before the cache knew the sync failed. Afterwards every
/// backend access is refused.
fn failed_sync_races_a_miss() {
    const NEW: u8 = 0x5C;
    let (io, cache) = cache_over(1);
    cache.get(0).expect("get").write().fill(NEW);
    drop(cache.get(1).expect("get"));
    assert!(!cache.contains(0), "page 0 was written back and evicted");
    io.fail_next_sync.store(true, Ordering::SeqCst);

    let flusher = {
        let cache = Arc::clone(&cache);
        shuttle::thread::spawn(move || cache.flush().is_err())
    };
    let reader = {
        let cache = Arc::clone(&cache);
        shuttle::thread::spawn(move || match cache.get(0) {
            Ok(page) => assert_eq!(uniform(0, &page.read()), NEW, "lost bytes served"),
            Err(Error::PreviousIo { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        })
    };
    assert!(flusher.join().expect("flusher panicked"), "the sync failed");
    reader.join().expect("reader panicked");
    assert!(cache.is_poisoned());
    assert!(matches!(cache.get(5), Err(Error::PreviousIo { .. })));
    assert!(matches!(cache.flush(), Err(Error::PreviousIo { .. })));
}

/// Runs `scenario` under the random scheduler and under PCT.
fn explore(scenario: fn()) {
    shuttle::check_random(scenario, RANDOM_ITERATIONS);
    shuttle::check_pct(scenario, PCT_ITERATIONS, PCT_DEPTH);
}

#[test]
fn writers_under_eviction_keep_every_write() {
    explore(writers_under_eviction);
}

#[test]
fn get_racing_write_back_reads_the_last_write() {
    explore(get_races_write_back);
}

#[test]
fn concurrent_misses_cause_one_read() {
    explore(concurrent_misses_read_once);
}

#[test]
fn overwrite_racing_get_keeps_the_overwrite() {
    explore(overwrite_races_get);
}

#[test]
fn failed_write_back_keeps_the_page_dirty() {
    explore(failed_write_back_keeps_the_page);
}

#[test]
fn failed_sync_racing_a_miss_never_serves_lost_bytes() {
    explore(failed_sync_races_a_miss);
}

#[test]
fn failed_read_is_shared_and_not_cached() {
    explore(failed_read_is_shared_not_cached);
}
