//! Guards the cache under concurrency: no lost or torn writes while threads write, read, pin and
//! flush at once with constant eviction, consistent stats afterwards, and exactly one backend read
//! for concurrent misses on one page.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::{PAGE_SIZE, Rng, assert_page, pattern, read_backend};
use pagecache::{CacheConfig, CacheStats, PageCache, PageRef};
use pageio::{MemPageIo, PageIo};

const THREADS: u64 = 6;
const OPS_PER_THREAD: usize = 12_000;
/// Pages `0..SHARED` are read by every thread and written by none.
const SHARED: u64 = 20;
/// Thread `t` alone writes pages `SHARED + t * OWNED .. SHARED + (t + 1) * OWNED`.
const OWNED: u64 = 3;

fn shared_tag(no: u64) -> u64 {
    1_000_000 + no
}

/// The tag of the `seq`-th write by thread `t`: distinct across threads and writes.
fn write_tag(t: u64, seq: u64) -> u64 {
    ((t + 1) << 32) | seq
}

fn owned_pages(t: u64) -> std::ops::Range<u64> {
    SHARED + t * OWNED..SHARED + (t + 1) * OWNED
}

/// What a worker reports when it is done.
struct WorkerResult {
    /// The tag of the last write to each owned page (0 if never written).
    last: HashMap<u64, u64>,
    /// The number of `get` / `get_for_overwrite` calls made.
    lookups: u64,
}

struct Worker<'c> {
    cache: &'c PageCache,
    t: u64,
    rng: Rng,
    seq: u64,
    last: HashMap<u64, u64>,
    lookups: u64,
    /// A pin on a shared page kept across operations, so a pinned page sits in the cache while
    /// the others churn.
    held: Option<PageRef<'c>>,
    /// The stats this worker saw last.
    last_stats: CacheStats,
}

impl<'c> Worker<'c> {
    fn new(cache: &'c PageCache, t: u64, seed: u64) -> Self {
        Self {
            cache,
            t,
            rng: Rng::new(seed ^ (t << 48)),
            seq: 0,
            last: owned_pages(t).map(|no| (no, 0)).collect(),
            lookups: 0,
            held: None,
            last_stats: CacheStats::default(),
        }
    }

    fn get(&mut self, no: u64) -> PageRef<'c> {
        self.lookups += 1;
        self.cache
            .get(no)
            .unwrap_or_else(|e| panic!("thread {}: get({no}) failed: {e}", self.t))
    }

    fn random_owned(&mut self) -> u64 {
        SHARED + self.t * OWNED + self.rng.below(OWNED)
    }

    fn random_shared(&mut self) -> u64 {
        self.rng.below(SHARED)
    }

    /// Writes the next sequence value into `pin`'s page (one of ours).
    fn write_next(&mut self, pin: &PageRef<'_>) {
        self.seq += 1;
        let no = pin.page_no();
        let tag = write_tag(self.t, self.seq);
        pin.write().copy_from_slice(&pattern(tag, no));
        self.last.insert(no, tag);
    }

    fn step(&mut self, i: usize) {
        let what = format!("thread {} op {i}", self.t);
        match self.rng.below(100) {
            // Read-modify-write of an owned page: it must still hold our last write, whether it
            // stayed cached or was evicted (and written back) and read again.
            0..30 => {
                let no = self.random_owned();
                let pin = self.get(no);
                assert_page(&pin.read(), self.last[&no], no, &what);
                self.write_next(&pin);
            }
            // Overwrite without reading: the page is either still cached with our last write or
            // comes back zero-filled; either way we then overwrite all of it.
            30..38 => {
                let no = self.random_owned();
                self.lookups += 1;
                let pin = self
                    .cache
                    .get_for_overwrite(no)
                    .unwrap_or_else(|e| panic!("{what}: get_for_overwrite({no}) failed: {e}"));
                {
                    let page = pin.read();
                    if page.iter().any(|&b| b != 0) {
                        assert_page(&page, self.last[&no], no, &what);
                    }
                }
                self.write_next(&pin);
            }
            38..70 => {
                let no = self.random_shared();
                let pin = self.get(no);
                assert_page(&pin.read(), shared_tag(no), no, &what);
            }
            // Two pins and two guards at once: read a shared page while writing an owned one.
            70..80 => {
                let s = self.random_shared();
                let o = self.random_owned();
                let shared = self.get(s);
                let owned = self.get(o);
                let read = shared.read();
                assert_page(&read, shared_tag(s), s, &what);
                assert_page(&owned.read(), self.last[&o], o, &what);
                self.write_next(&owned);
                drop(read);
            }
            // Swap the long-lived pin; a pinned page must keep its content however hard the rest
            // of the cache churns.
            80..90 => {
                if let Some(pin) = self.held.take() {
                    let no = pin.page_no();
                    assert_page(&pin.read(), shared_tag(no), no, &what);
                }
                let no = self.random_shared();
                self.held = Some(self.get(no));
            }
            90..98 => {
                let stats = self.cache.stats();
                // Only owned pages are ever written, so only they can be dirty; nothing outside
                // the working set is ever looked up while the workers run.
                assert!(
                    stats.dirty <= (THREADS * OWNED) as usize,
                    "{what}: {stats:?}"
                );
                assert!(
                    stats.cached <= (SHARED + THREADS * OWNED) as usize,
                    "{what}: {stats:?}"
                );
                assert!(
                    stats.pinned <= stats.cached && stats.dirty <= stats.cached,
                    "{what}: {stats:?}"
                );
                // Counters only grow.
                let prev = self.last_stats;
                assert!(
                    stats.hits >= prev.hits
                        && stats.misses >= prev.misses
                        && stats.evictions >= prev.evictions
                        && stats.write_backs >= prev.write_backs
                        && stats.flushed >= prev.flushed,
                    "{what}: {prev:?} then {stats:?}"
                );
                // Each miss inserts one page and each eviction removes one; a failed read would
                // remove its page too, but a memory backend never fails.
                assert_eq!(
                    stats.cached as u64,
                    stats.misses - stats.evictions,
                    "{what}: {stats:?}"
                );
                self.last_stats = stats;
            }
            _ => self
                .cache
                .flush()
                .unwrap_or_else(|e| panic!("{what}: flush failed: {e}")),
        }
    }

    fn run(mut self) -> WorkerResult {
        for i in 0..OPS_PER_THREAD {
            self.step(i);
        }
        WorkerResult {
            last: self.last,
            lookups: self.lookups,
        }
    }
}

/// Several threads write their own pages, read shared ones, hold pins and flush, all through a
/// cache smaller than the working set. Afterwards every page holds exactly its last write,
/// through the cache, through a fresh cache and on the backend, and the stats add up.
///
/// With `churn`, the run must also have evicted and written back pages (a check that the scenario
/// exercised eviction; with a roomy cache, pins can legitimately prevent every eviction).
fn concurrent_writers_lose_nothing(capacity: usize, seed: u64, churn: bool) {
    let mem = Arc::new(MemPageIo::new(PAGE_SIZE).expect("valid page size"));
    for no in 0..SHARED {
        mem.write_page(no, &pattern(shared_tag(no), no))
            .expect("memory write");
    }
    let io: Arc<dyn PageIo> = mem.clone();
    let cache = PageCache::new(
        Arc::clone(&io),
        CacheConfig::default().with_capacity(capacity),
    )
    .expect("valid config");

    let results: Vec<WorkerResult> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let cache = &cache;
                s.spawn(move || Worker::new(cache, t, seed).run())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let mut last = HashMap::new();
    let mut lookups = 0;
    for result in results {
        last.extend(result.last);
        lookups += result.lookups;
    }

    let stats = cache.stats();
    assert_eq!(stats.pinned, 0, "{stats:?}");
    assert_eq!(stats.hits + stats.misses, lookups, "{stats:?}");
    // Every miss inserted one page, every eviction removed one.
    assert_eq!(
        stats.cached as u64,
        stats.misses - stats.evictions,
        "{stats:?}"
    );
    assert!(stats.write_backs <= stats.evictions, "{stats:?}");
    if churn {
        assert!(stats.evictions > 0 && stats.write_backs > 0, "{stats:?}");
    }

    // One more miss with nothing pinned brings the cache back within its capacity.
    let far = SHARED + THREADS * OWNED + 10;
    drop(cache.get(far).expect("get"));
    let stats = cache.stats();
    assert!(stats.cached <= capacity, "{stats:?}");

    // Through the same cache, before any flush.
    for no in 0..SHARED {
        assert_page(
            &cache.get(no).expect("get").read(),
            shared_tag(no),
            no,
            "same cache",
        );
    }
    for (&no, &tag) in &last {
        assert_page(&cache.get(no).expect("get").read(), tag, no, "same cache");
    }

    cache.flush().expect("flush");
    let stats = cache.stats();
    assert_eq!(stats.dirty, 0, "{stats:?}");
    drop(cache);

    for (&no, &tag) in &last {
        assert_page(
            &read_backend(io.as_ref(), no),
            tag,
            no,
            "backend after flush",
        );
    }
    for no in 0..SHARED {
        assert_page(
            &read_backend(io.as_ref(), no),
            shared_tag(no),
            no,
            "backend after flush",
        );
    }
    let fresh =
        PageCache::new(io, CacheConfig::default().with_capacity(capacity)).expect("valid config");
    for (&no, &tag) in &last {
        assert_page(&fresh.get(no).expect("get").read(), tag, no, "fresh cache");
    }
}

/// Capacity 1: nearly every lookup of another page evicts, and dirty pages are written back
/// constantly.
#[test]
fn stress_capacity_1() {
    concurrent_writers_lose_nothing(1, 0x0001_5eed, true);
}

/// A capacity well below the 38-page working set: a mix of hits and evictions.
#[test]
fn stress_capacity_6() {
    concurrent_writers_lose_nothing(6, 0x0006_5eed, true);
}

/// Room for most of the working set: mostly hits, with writes racing flushes.
#[test]
fn stress_capacity_30() {
    concurrent_writers_lose_nothing(30, 0x0030_5eed, false);
}

/// A `PageIo` that counts reads per page and makes each one slow, so concurrent misses on one
/// page overlap.
#[derive(Debug)]
struct CountingIo {
    inner: MemPageIo,
    reads: Mutex<HashMap<u64, u64>>,
    total_reads: AtomicU64,
}

impl CountingIo {
    fn reads_of(&self, no: u64) -> u64 {
        self.reads
            .lock()
            .expect("no panic while counting")
            .get(&no)
            .copied()
            .unwrap_or(0)
    }
}

impl PageIo for CountingIo {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        *self
            .reads
            .lock()
            .expect("no panic while counting")
            .entry(no)
            .or_insert(0) += 1;
        self.total_reads.fetch_add(1, Ordering::Relaxed);
        // Widens the window in which the other threads' gets arrive during the load; the test's
        // assertions do not depend on timing.
        thread::sleep(Duration::from_millis(3));
        self.inner.read_page(no, buf)
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        self.inner.write_page(no, buf)
    }

    fn num_pages(&self) -> pageio::Result<u64> {
        self.inner.num_pages()
    }

    fn sync(&self) -> pageio::Result<()> {
        self.inner.sync()
    }
}

/// K threads released together by a barrier all `get` the same non-resident page: the backend
/// sees exactly one read, every thread sees the page's content, and exactly one lookup counts as
/// the miss. Repeated over many rounds, with the page evicted in between.
#[test]
fn concurrent_misses_read_the_backend_once() {
    const K: usize = 4;
    const ROUNDS: u64 = 40;
    const TARGETS: u64 = 3;
    // Pages 0 and 1 are filler that pushes the target out between rounds.
    let counting = Arc::new(CountingIo {
        inner: MemPageIo::new(PAGE_SIZE).expect("valid page size"),
        reads: Mutex::new(HashMap::new()),
        total_reads: AtomicU64::new(0),
    });
    for no in 0..2 + TARGETS {
        counting
            .inner
            .write_page(no, &pattern(no + 1, no))
            .expect("memory write");
    }
    let io: Arc<dyn PageIo> = counting.clone();
    let cache = PageCache::new(io, CacheConfig::default().with_capacity(2)).expect("valid config");

    for round in 0..ROUNDS {
        let target = 2 + round % TARGETS;
        assert!(
            !cache.contains(target),
            "round {round}: target still cached"
        );
        let reads_before = counting.reads_of(target);
        let total_before = counting.total_reads.load(Ordering::Relaxed);
        let stats_before = cache.stats();
        let barrier = Barrier::new(K);
        thread::scope(|s| {
            for _ in 0..K {
                s.spawn(|| {
                    barrier.wait();
                    let pin = cache.get(target).expect("get");
                    assert_page(&pin.read(), target + 1, target, "concurrent miss");
                });
            }
        });
        assert_eq!(
            counting.reads_of(target) - reads_before,
            1,
            "round {round}: backend reads of page {target} for {K} concurrent gets"
        );
        assert_eq!(
            counting.total_reads.load(Ordering::Relaxed) - total_before,
            1,
            "round {round}: backend reads in total"
        );
        let stats = cache.stats();
        assert_eq!(
            (
                stats.misses - stats_before.misses,
                stats.hits - stats_before.hits
            ),
            (1, K as u64 - 1),
            "round {round}: one lookup loads the page, the others find it resident"
        );
        assert_eq!(stats.pinned, 0);

        // Capacity 2: touching both filler pages evicts the target (the least recently used).
        for filler in 0..2 {
            drop(cache.get(filler).expect("get"));
        }
    }
}

/// Overwrite pins racing readers and eviction: threads pin pages with `get_for_overwrite` and
/// write whole patterns half of the time (else drop the pin unwritten), while others `get` and
/// read. Every page read holds a whole pattern of that page, never the zero fill of an
/// overwrite pin nobody wrote, and the final contents are the last write of each page.
#[test]
fn unwritten_overwrite_pins_never_show_zeros() {
    const PAGES: u64 = 8;
    const WRITERS: u64 = 2;
    const READERS: u64 = 2;
    const ROUNDS: u64 = 4000;
    let mem = Arc::new(MemPageIo::new(PAGE_SIZE).expect("valid page size"));
    for no in 0..PAGES {
        mem.write_page(no, &pattern(1, no)).expect("write");
    }
    let io: Arc<dyn PageIo> = mem.clone();
    let cache = PageCache::new(io, CacheConfig::default().with_capacity(3)).expect("config");
    let last: Vec<Mutex<u64>> = (0..PAGES).map(|_| Mutex::new(1)).collect();
    thread::scope(|s| {
        for t in 0..WRITERS {
            let (cache, last) = (&cache, &last);
            s.spawn(move || {
                let mut rng = Rng::new(0x0ee1 + t);
                for seq in 0..ROUNDS {
                    let no = rng.below(PAGES);
                    let pin = cache.get_for_overwrite(no).expect("overwrite");
                    if rng.chance(50) {
                        // The lock orders the write and the record of it, per page.
                        let mut newest = last[no as usize].lock().expect("lock");
                        let tag = write_tag(t, seq);
                        pin.write().copy_from_slice(&pattern(tag, no));
                        *newest = tag;
                    }
                }
            });
        }
        for t in 0..READERS {
            let cache = &cache;
            s.spawn(move || {
                let mut rng = Rng::new(0x4ead + t);
                for _ in 0..ROUNDS {
                    let no = rng.below(PAGES);
                    let pin = cache.get(no).expect("get");
                    let page = pin.read();
                    let tag = common::tag_of(&page);
                    assert_ne!(
                        tag, 0,
                        "page {no} read as the zero fill of an overwrite pin"
                    );
                    assert_page(&page, tag, no, "a concurrent read");
                }
            });
        }
    });
    cache.flush().expect("flush");
    for no in 0..PAGES {
        let want = *last[no as usize].lock().expect("lock");
        assert_page(&read_backend(mem.as_ref(), no), want, no, "after the flush");
    }
}
