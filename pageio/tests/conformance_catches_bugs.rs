//! The conformance suite is not a rubber stamp: backends with typical bugs fail it, in the check
//! that guards the broken promise, without the suite itself panicking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use pageio::{MemPageIo, PageIo, Result, check_buffer, check_buffers, conformance};

/// One deliberate bug in an otherwise correct backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    /// Reads of never-written pages leave the buffer as it was.
    NoZeroFill,
    /// `num_pages` counts one page too many once anything is written.
    SizeOffByOne,
    /// A longer buffer is accepted and its first page written.
    AcceptsLongBuffers,
    /// A buffer of the wrong length makes the backend panic.
    PanicsOnBadBuffer,
    /// `truncate` can shrink but not grow the device.
    TruncateOnlyShrinks,
    /// `write_pages` writes only the first page of a batch.
    BatchWritesFirstOnly,
    /// Odd pages are stored at the page before them.
    MisdirectedWrites,
    /// Writes far past the end silently do nothing.
    DropsWritesPastEnd,
    /// Page `u64::MAX` is accepted, making the size wrap around to 0.
    WrapsAround,
    /// Every thread has its own pages, as with an unshared per-thread cache.
    PerThreadState,
    /// Writes from any thread but the one that made the backend panic.
    PanicsOffItsThread,
}

#[derive(Debug)]
struct Broken {
    bug: Bug,
    shared: Arc<MemPageIo>,
    /// The devices of other threads, for `PerThreadState`.
    per_thread: Mutex<HashMap<ThreadId, Arc<MemPageIo>>>,
    /// Set once page `u64::MAX` was "written", for `WrapsAround`.
    wrapped: AtomicBool,
    /// The thread that made the backend, which works on `shared`.
    home: ThreadId,
}

impl Broken {
    fn new(bug: Bug) -> Self {
        Self {
            bug,
            shared: Arc::new(MemPageIo::new(4096).expect("4096 is a valid page size")),
            per_thread: Mutex::new(HashMap::new()),
            wrapped: AtomicBool::new(false),
            home: std::thread::current().id(),
        }
    }

    /// The device the current thread works on.
    fn dev(&self) -> Arc<MemPageIo> {
        if self.bug == Bug::PerThreadState && std::thread::current().id() != self.home {
            let mut map = self
                .per_thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let dev = map.entry(std::thread::current().id()).or_insert_with(|| {
                Arc::new(MemPageIo::new(4096).expect("4096 is a valid page size"))
            });
            Arc::clone(dev)
        } else {
            Arc::clone(&self.shared)
        }
    }
}

impl PageIo for Broken {
    fn page_size(&self) -> usize {
        self.shared.page_size()
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        let dev = self.dev();
        match self.bug {
            Bug::PanicsOnBadBuffer => {
                let mut page = vec![0; self.page_size()];
                dev.read_page(no, &mut page)?;
                buf[..page.len()].copy_from_slice(&page);
                Ok(())
            }
            Bug::NoZeroFill if no >= dev.num_pages()? => {
                check_buffer(no, self.page_size(), buf.len())
            }
            Bug::MisdirectedWrites => dev.read_page(no & !1, buf),
            _ => dev.read_page(no, buf),
        }
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        let dev = self.dev();
        let ps = self.page_size();
        match self.bug {
            Bug::AcceptsLongBuffers if buf.len() >= ps => dev.write_page(no, &buf[..ps]),
            Bug::PanicsOnBadBuffer => dev.write_page(no, &buf[..ps]),
            Bug::MisdirectedWrites => dev.write_page(no & !1, buf),
            Bug::DropsWritesPastEnd if no >= dev.num_pages()? + 6 => {
                check_buffer(no, ps, buf.len())
            }
            Bug::PanicsOffItsThread if std::thread::current().id() != self.home => {
                panic!("write_page({no}) from another thread")
            }
            Bug::WrapsAround if no == u64::MAX => {
                check_buffer(no, ps, buf.len())?;
                self.wrapped.store(true, Ordering::Relaxed);
                Ok(())
            }
            _ => dev.write_page(no, buf),
        }
    }

    fn num_pages(&self) -> Result<u64> {
        let n = self.dev().num_pages()?;
        Ok(match self.bug {
            Bug::SizeOffByOne if n > 0 => n + 1,
            Bug::WrapsAround if self.wrapped.load(Ordering::Relaxed) => 0,
            _ => n,
        })
    }

    fn sync(&self) -> Result<()> {
        self.dev().sync()
    }

    fn write_pages(&self, pages: &[(u64, &[u8])]) -> Result<()> {
        check_buffers(
            self.page_size(),
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        let pages = match self.bug {
            Bug::BatchWritesFirstOnly => &pages[..pages.len().min(1)],
            _ => pages,
        };
        pages
            .iter()
            .try_for_each(|&(no, buf)| self.write_page(no, buf))
    }

    fn truncate(&self, num_pages: u64) -> Result<()> {
        let dev = self.dev();
        pageio::byte_len(num_pages, self.page_size())?;
        if self.bug == Bug::TruncateOnlyShrinks && num_pages > dev.num_pages()? {
            return Ok(());
        }
        dev.truncate(num_pages)
    }
}

fn failed_check(bug: Bug) -> String {
    match conformance::run_all(Broken::new(bug)) {
        Ok(()) => format!("{bug:?} passed the suite"),
        Err(failure) => {
            // The report must be usable on its own.
            assert!(!failure.message().is_empty());
            assert!(failure.to_string().contains(failure.check()));
            failure.check().to_owned()
        }
    }
}

/// Pages stored as two half pages, each written and read by its own call into an inner device
/// that is correct on its own: a page can be read (or left) half old, half new.
#[derive(Debug)]
struct HalfPages {
    halves: MemPageIo,
    /// Yield to other threads between the two halves, which widens the torn window.
    yield_between: bool,
}

impl HalfPages {
    fn new(page_size: usize, yield_between: bool) -> Self {
        Self {
            halves: MemPageIo::new(page_size / 2).expect("a valid half page size"),
            yield_between,
        }
    }

    fn between_halves(&self) {
        if self.yield_between {
            std::thread::yield_now();
        }
    }
}

impl PageIo for HalfPages {
    fn page_size(&self) -> usize {
        self.halves.page_size() * 2
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        check_buffer(no, self.page_size(), buf.len())?;
        let Some(first) = no.checked_mul(2).filter(|&first| first < u64::MAX) else {
            buf.fill(0);
            return Ok(());
        };
        let (low, high) = buf.split_at_mut(self.halves.page_size());
        self.halves.read_page(first, low)?;
        self.between_halves();
        self.halves.read_page(first + 1, high)
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        check_buffer(no, self.page_size(), buf.len())?;
        pageio::page_offset(no, self.page_size())?;
        let (low, high) = buf.split_at(self.halves.page_size());
        self.halves.write_page(no * 2, low)?;
        self.between_halves();
        self.halves.write_page(no * 2 + 1, high)
    }

    fn num_pages(&self) -> Result<u64> {
        Ok(self.halves.num_pages()?.div_ceil(2))
    }

    fn sync(&self) -> Result<()> {
        self.halves.sync()
    }

    fn truncate(&self, num_pages: u64) -> Result<()> {
        pageio::byte_len(num_pages, self.page_size())?;
        self.halves.truncate(num_pages * 2)
    }
}

#[test]
fn a_page_written_in_two_halves_fails_the_torn_page_check() {
    // The halves alone keep the contract, so only a race can tell.
    conformance::run_all(HalfPages::new(1024, false).halves).unwrap();
    for page_size in [64 << 10, 4096] {
        // Without a yield between the halves, the check's own barrier and spinning reader
        // must find the short window, and find it every time.
        for yield_between in [false, false, false, true] {
            let io = HalfPages::new(page_size, yield_between);
            let failure = conformance::pages_are_atomic(&io).unwrap_err();
            assert_eq!(failure.check(), "pages_are_atomic", "{failure}");
            assert!(failure.message().contains("torn page"), "{failure}");
        }
    }
}

#[test]
fn a_page_written_in_two_halves_fails_the_suite() {
    // The older thread check may see the tear first; either way a race check reports it.
    let failure = conformance::run_all(HalfPages::new(64 << 10, false)).unwrap_err();
    assert!(
        ["concurrent_threads", "pages_are_atomic"].contains(&failure.check()),
        "{failure}"
    );
    assert!(failure.message().contains("torn"), "{failure}");
}

#[test]
fn a_panic_in_a_racing_thread_fails_the_check_instead_of_hanging_it() {
    // Called from the backend's own thread, so the check's setup works and only its racing
    // threads panic; the time limit only stops the test if the check hangs after all.
    let io: Arc<dyn PageIo> = Arc::new(Broken::new(Bug::PanicsOffItsThread));
    let check = conformance::CHECKS
        .iter()
        .find(|c| c.name() == "pages_are_atomic")
        .expect("the suite has the torn-page check");
    assert!(conformance::pages_are_atomic(&*io).is_err_and(|failure| {
        failure.check() == "pages_are_atomic" && failure.message().starts_with("panicked")
    }));
    // And on a thread of its own (where even the setup panics), within the limit.
    let failure = check
        .run_with_time_limit(io, std::time::Duration::from_secs(30))
        .unwrap_err();
    assert!(!failure.timed_out(), "{failure}");
    assert!(failure.message().starts_with("panicked"), "{failure}");
}

#[test]
fn missing_zero_fill_is_caught() {
    assert_eq!(failed_check(Bug::NoZeroFill), "empty_device_reads_zeros");
}

#[test]
fn wrong_size_is_caught() {
    assert_eq!(failed_check(Bug::SizeOffByOne), "round_trip");
}

#[test]
fn accepting_long_buffers_is_caught() {
    assert_eq!(failed_check(Bug::AcceptsLongBuffers), "wrong_buffer_sizes");
}

#[test]
fn panicking_on_a_bad_buffer_is_caught() {
    let failure = conformance::run_all(Broken::new(Bug::PanicsOnBadBuffer)).unwrap_err();
    assert_eq!(failure.check(), "wrong_buffer_sizes");
    assert!(failure.message().starts_with("panicked"), "{failure}");
}

#[test]
fn truncate_that_cannot_grow_is_caught() {
    assert_eq!(failed_check(Bug::TruncateOnlyShrinks), "truncate");
}

#[test]
fn partial_batches_are_caught() {
    assert_eq!(
        failed_check(Bug::BatchWritesFirstOnly),
        "batches_match_single_pages"
    );
}

#[test]
fn misdirected_writes_are_caught() {
    assert_eq!(failed_check(Bug::MisdirectedWrites), "round_trip");
}

#[test]
fn dropped_far_writes_are_caught() {
    assert_eq!(failed_check(Bug::DropsWritesPastEnd), "holes_read_zeros");
}

#[test]
fn size_wrap_around_is_caught() {
    assert_eq!(failed_check(Bug::WrapsAround), "huge_page_numbers");
}

#[test]
fn state_not_shared_between_threads_is_caught() {
    assert_eq!(failed_check(Bug::PerThreadState), "concurrent_threads");
}
