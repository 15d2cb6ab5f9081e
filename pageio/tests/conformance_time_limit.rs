//! A backend that hangs fails the conformance suite within the time limit, naming the check it
//! hung in, instead of hanging the test; and the checks run where the settings say.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pageio::conformance::{self, DEFAULT_TIME_LIMIT, RunConfig};
use pageio::{MemPageIo, Op, PageIo, Result};

/// `MemPageIo` that never returns from one operation.
#[derive(Debug)]
struct HangsIn(Op, MemPageIo);

impl HangsIn {
    fn new(op: Op) -> Self {
        Self(op, MemPageIo::new(4096).expect("4096 is a valid page size"))
    }

    fn maybe_hang(&self, op: Op) {
        if self.0 == op {
            // Parked for good: only the end of the process frees this thread.
            loop {
                std::thread::park();
            }
        }
    }
}

impl PageIo for HangsIn {
    fn page_size(&self) -> usize {
        self.1.page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        self.1.read_page(no, buf)
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        self.1.write_page(no, buf)
    }
    fn num_pages(&self) -> Result<u64> {
        self.1.num_pages()
    }
    fn sync(&self) -> Result<()> {
        self.maybe_hang(Op::Sync);
        self.1.sync()
    }
    fn truncate(&self, num_pages: u64) -> Result<()> {
        self.maybe_hang(Op::Truncate);
        self.1.truncate(num_pages)
    }
}

#[test]
fn a_hang_fails_the_check_it_happens_in_within_the_limit() {
    let limit = Duration::from_millis(300);
    for (op, check) in [
        (Op::Sync, "sync_keeps_data"),
        (Op::Truncate, "huge_page_numbers"),
    ] {
        let started = Instant::now();
        let failure = conformance::run_all_with(
            HangsIn::new(op),
            &RunConfig::default().with_time_limit(limit),
        )
        .expect_err("a backend that never returns cannot pass");
        let took = started.elapsed();
        assert_eq!(failure.check(), check, "{failure}");
        assert!(failure.timed_out(), "{failure}");
        assert!(failure.error().is_none());
        assert!(failure.to_string().contains(check), "{failure}");
        assert!(failure.message().contains("300ms"), "{failure}");
        // The checks before it passed quickly; the hung one took the limit, not forever.
        assert!(took >= limit, "failed after {took:?}");
        assert!(took < limit + Duration::from_secs(20), "took {took:?}");
    }
}

#[test]
fn one_check_can_run_with_a_time_limit() {
    let io: Arc<dyn PageIo> = Arc::new(HangsIn::new(Op::Sync));
    let check = conformance::CHECKS
        .iter()
        .find(|c| c.name() == "sync_keeps_data")
        .expect("the suite has a sync check");
    let failure = check
        .run_with_time_limit(Arc::clone(&io), Duration::from_millis(50))
        .unwrap_err();
    assert!(failure.timed_out(), "{failure}");
    // A check that finishes is not held to the limit's end, and keeps its own verdict.
    let round_trip = conformance::CHECKS[2];
    assert_eq!(round_trip.name(), "round_trip");
    round_trip
        .run_with_time_limit(io, Duration::from_secs(30))
        .unwrap();
}

/// `MemPageIo` that records which threads call it.
#[derive(Debug)]
struct Callers(MemPageIo, Mutex<Vec<ThreadId>>);

impl Callers {
    fn record(&self) {
        self.1
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(std::thread::current().id());
    }

    fn called_from(&self, thread: ThreadId) -> bool {
        self.1
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&thread)
    }
}

impl PageIo for Callers {
    fn page_size(&self) -> usize {
        self.record();
        self.0.page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        self.record();
        self.0.read_page(no, buf)
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        self.record();
        self.0.write_page(no, buf)
    }
    fn num_pages(&self) -> Result<u64> {
        self.record();
        self.0.num_pages()
    }
    fn sync(&self) -> Result<()> {
        self.record();
        self.0.sync()
    }
}

#[test]
fn checks_run_off_the_calling_thread_unless_told_otherwise()
-> std::result::Result<(), Box<dyn std::error::Error>> {
    assert_eq!(RunConfig::default().time_limit(), Some(DEFAULT_TIME_LIMIT));
    assert_eq!(DEFAULT_TIME_LIMIT, Duration::from_mins(1));
    let me = std::thread::current().id();

    let io = Arc::new(Callers(MemPageIo::new(512)?, Mutex::default()));
    conformance::run_all(Arc::clone(&io))?;
    assert!(!io.called_from(me), "a check ran on the calling thread");

    let io = Arc::new(Callers(MemPageIo::new(512)?, Mutex::default()));
    let config = RunConfig::default().without_time_limit();
    assert_eq!(config.time_limit(), None);
    conformance::run_all_with(Arc::clone(&io), &config)?;
    assert!(io.called_from(me), "no check ran on the calling thread");
    Ok(())
}
