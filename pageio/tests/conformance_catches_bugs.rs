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
