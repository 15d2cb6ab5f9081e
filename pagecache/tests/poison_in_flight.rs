//! Guards the poison against a miss already in flight: a backend read that overlaps a failing
//! sync may return what the sync just lost (here: a page eviction had written back, whose write
//! the failed sync dropped). Such a miss is refused like one that starts after the failure,
//! instead of returning the stale bytes with `Ok`.
//!
//! Interleaving (capacity 1):
//! 1. write page 1 (0xAA); `get(2)` evicts page 1 by writing it back (unsynced);
//! 2. thread M: `get(1)` misses, passes the poison check, inserts a LOADING frame and calls
//!    `read_page(1)`, which this backend holds at a gate;
//! 3. main: `flush()`; its sync fails and loses the unsynced write of page 1; the cache is
//!    poisoned;
//! 4. the gate opens: M's read returns the old zeros, and `get(1)` must not return them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use pagecache::{CacheConfig, Error, PageCache};
use pageio::{Fault, FaultyPageIo, MemPageIo, PageIo};

const PS: usize = 512;

/// A `FaultyPageIo` whose reads of one page wait at a gate until it is opened.
#[derive(Debug)]
struct Gated {
    inner: FaultyPageIo<MemPageIo>,
    page: AtomicU64,
    /// (a read is waiting at the gate, the gate is open)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gated {
    fn new(seed: u64) -> Self {
        Self {
            inner: FaultyPageIo::new(MemPageIo::new(PS).expect("page size")).with_seed(seed),
            page: AtomicU64::new(u64::MAX),
            state: Mutex::new((false, false)),
            changed: Condvar::new(),
        }
    }

    fn wait_for_reader(&self) {
        let mut st = self.state.lock().unwrap();
        while !st.0 {
            st = self.changed.wait(st).unwrap();
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

impl PageIo for Gated {
    fn page_size(&self) -> usize {
        PS
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        if no == self.page.load(Ordering::SeqCst) {
            let mut st = self.state.lock().unwrap();
            st.0 = true;
            self.changed.notify_all();
            while !st.1 {
                st = self.changed.wait(st).unwrap();
            }
        }
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

/// A seed whose first failed sync discards a lone unsynced write.
fn losing_seed() -> u64 {
    (0..64)
        .find(|&seed| {
            let io = FaultyPageIo::new(MemPageIo::new(PS).expect("page size")).with_seed(seed);
            io.write_page(1, &[1; PS]).expect("write");
            io.fail(Fault::SyncAt(0));
            assert!(io.sync().is_err());
            io.counts().discarded == 1
        })
        .expect("some seed loses the write")
}

#[test]
fn a_miss_in_flight_when_a_sync_fails_does_not_return_lost_bytes() {
    let io = Arc::new(Gated::new(losing_seed()));
    let dyn_io: Arc<dyn PageIo> = io.clone();
    let cache = PageCache::new(dyn_io, CacheConfig::default().with_capacity(1)).expect("config");

    cache.get(1).expect("get").write().fill(0xAA);
    drop(cache.get(2).expect("get"));
    assert!(!cache.contains(1), "page 1 was written back and evicted");
    assert_eq!(io.inner.unsynced_pages(), vec![1]);

    io.page.store(1, Ordering::SeqCst);
    thread::scope(|s| {
        let miss = s.spawn(|| cache.get(1).map(|page| page.read()[0]));
        io.wait_for_reader();
        io.inner.fail(Fault::SyncAt(io.inner.counts().syncs));
        assert!(cache.flush().is_err(), "the sync fails");
        assert!(cache.is_poisoned());
        assert_eq!(
            io.inner.counts().discarded,
            1,
            "the write of page 1 was lost"
        );
        io.open();
        match miss.join().expect("no panic") {
            Err(Error::PreviousIo { .. }) | Ok(0xAA) => {}
            Ok(byte) => panic!(
                "get(1) returned Ok with byte {byte:#04x}: the bytes from before the write of \
                 0xAA, which the failed sync lost, served as the page with no error"
            ),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    });
}
