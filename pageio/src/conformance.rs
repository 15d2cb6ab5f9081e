//! The conformance suite: checks that a [`PageIo`] backend keeps the trait's contract
//! (feature `test-utils`).
//!
//! Every backend in this crate passes it, and a custom backend should run it in its own tests:
//!
//! ```
//! use pageio::{MemPageIo, conformance};
//!
//! // Give the suite a fresh, empty device; it writes, overwrites and truncates pages.
//! conformance::run_all(MemPageIo::new(4096)?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`run_all`] runs every check in [`CHECKS`] in order and returns the first [`Failure`], which
//! names the check and says what was wrong (and carries the backend's error when one caused
//! it). A backend that panics fails too: each check runs under `catch_unwind`. So does one that
//! hangs: each check runs on a thread of its own, and one that has not finished within the time
//! limit ([`DEFAULT_TIME_LIMIT`], or as set with [`run_all_with`] and a [`RunConfig`]) fails
//! with its name; its thread is left behind, still holding the backend. That is why
//! [`run_all`] takes the backend by value (an `Arc<MyBackend>` works too, to keep a handle).
//!
//! The checks can also run one at a time, by calling the function of the same name or through
//! [`Check::run`]. Each one works on pages at and past the device's current end, so they run in
//! any order on one device and leave earlier pages alone; only [`empty_device_reads_zeros`]
//! needs a fresh device. They use a few pages each (a few dozen for [`concurrent_threads`]) and
//! a handful of threads. All but the two thread checks are deterministic and take milliseconds
//! on an in-memory backend; [`pages_are_atomic`] races threads for up to 4000 rounds (a fraction
//! of a second in memory, at most about two seconds on a slow backend), since a torn page shows
//! only when a race lands inside a write.
//!
//! What is checked, against the contract on [`PageIo`]:
//!
//! | check | what it guards |
//! | --- | --- |
//! | [`page_size_is_valid`] | a power of two from 512 B to 1 MiB, stable |
//! | [`empty_device_reads_zeros`] | a fresh device has no pages and reads zeros |
//! | [`round_trip`] | every page reads back what was written to it, in any write order |
//! | [`overwrite`] | the last write wins, also with zeros, and the size stays |
//! | [`holes_read_zeros`] | unwritten pages below the end read zeros; size = highest + 1 |
//! | [`past_end_reads_zeros`] | reads past the end give zeros and do not grow the device |
//! | [`huge_page_numbers`] | unreachable pages are refused without panic or wrap-around |
//! | [`wrong_buffer_sizes`] | short and long buffers fail with `BufferSize` and change nothing |
//! | [`batches_match_single_pages`] | `read_pages` / `write_pages` agree with single pages |
//! | [`sync_keeps_data`] | `sync` succeeds and changes no page |
//! | [`concurrent_threads`] | threads see their own pages; racing same-page writes do not mix |
//! | [`pages_are_atomic`] | a page racing writes and reads is always one whole write, never torn |
//! | [`truncate`] | cut pages read zeros, also after growing again (skipped if `Unsupported`) |
//!
//! Durability across a real crash cannot be checked from inside one process; wrap the backend in
//! [`FaultyPageIo`](crate::FaultyPageIo) to test what upper layers do with unsynced writes.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::{Error, PageIo, check_page_size};

/// Why a backend failed the suite: the check, what was wrong, and the backend's error when one
/// caused it (also given as [`source`](std::error::Error::source)).
#[derive(Debug)]
pub struct Failure {
    check: &'static str,
    message: String,
    error: Option<Error>,
    timed_out: bool,
}

impl Failure {
    /// A failure of `check` with `message`.
    #[must_use]
    pub fn new(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            message: message.into(),
            error: None,
            timed_out: false,
        }
    }

    /// The name of the check that failed, as in [`CHECKS`].
    #[must_use]
    pub fn check(&self) -> &'static str {
        self.check
    }

    /// What was wrong.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The backend's error, when an operation failed that should have succeeded (or failed in
    /// the wrong way).
    #[must_use]
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Whether the check failed because it did not finish within its time limit (the backend
    /// hung, deadlocked or was far too slow).
    #[must_use]
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance check `{}` failed: {}",
            self.check, self.message
        )?;
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.as_ref().map(|e| e as _)
    }
}

/// One check of the suite.
#[derive(Clone, Copy)]
pub struct Check {
    name: &'static str,
    func: fn(&dyn PageIo) -> Result<(), Failure>,
}

impl Check {
    /// The check's name, which is also the name of its function in this module.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the check on `io`, on the calling thread and without a time limit. A panic in the
    /// backend (or in the check) is caught and returned as a [`Failure`].
    pub fn run(&self, io: &dyn PageIo) -> Result<(), Failure> {
        match catch_unwind(AssertUnwindSafe(|| (self.func)(io))) {
            Ok(result) => result,
            Err(payload) => Err(Failure::new(
                self.name,
                format!("panicked: {}", panic_message(payload.as_ref())),
            )),
        }
    }

    /// Runs the check on `io` on a thread of its own, as [`run`](Self::run) does, and fails it
    /// (with [`Failure::timed_out`]) if it has not finished within `limit`. The thread of a
    /// check that timed out is left running with its handle on `io`: nothing can stop a call
    /// stuck inside the backend.
    pub fn run_with_time_limit(&self, io: Arc<dyn PageIo>, limit: Duration) -> Result<(), Failure> {
        let (done, result) = mpsc::sync_channel(1);
        let check = *self;
        let spawned = std::thread::Builder::new()
            .name(format!("conformance::{}", self.name))
            .spawn(move || {
                // The receiver is gone only after a time-out, when nobody wants the result.
                let _ = done.send(check.run(&*io));
            });
        if let Err(e) = spawned {
            return Err(Failure::new(
                self.name,
                format!("could not start a thread to run the check on: {e}"),
            ));
        }
        match result.recv_timeout(limit) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(Failure {
                check: self.name,
                message: format!(
                    "did not finish within its time limit of {limit:?}: a backend call hangs, \
                     deadlocks or is far too slow (the check's thread is left running)"
                ),
                error: None,
                timed_out: true,
            }),
            // `run` catches panics, so the sender is dropped unsent only if the thread died some
            // other way.
            Err(RecvTimeoutError::Disconnected) => Err(Failure::new(
                self.name,
                "the check's thread ended without a result",
            )),
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Check").field(&self.name).finish()
    }
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, in the order [`run_all`] runs them.
        pub const CHECKS: &[Check] = &[$(Check { name: stringify!($name), func: $name }),*];
    };
}

checks![
    page_size_is_valid,
    empty_device_reads_zeros,
    round_trip,
    overwrite,
    holes_read_zeros,
    past_end_reads_zeros,
    huge_page_numbers,
    wrong_buffer_sizes,
    batches_match_single_pages,
    sync_keeps_data,
    concurrent_threads,
    pages_are_atomic,
    truncate,
];

/// How long a check may run in [`run_all`] before it fails as hung: a minute. Every check takes
/// milliseconds to a few seconds even on a slow backend.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_mins(1);

/// How [`run_all_with`] runs the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    time_limit: Option<Duration>,
}

impl Default for RunConfig {
    /// Each check on a thread of its own, with [`DEFAULT_TIME_LIMIT`].
    fn default() -> Self {
        Self {
            time_limit: Some(DEFAULT_TIME_LIMIT),
        }
    }
}

impl RunConfig {
    /// Fails a check that has not finished within `limit` (see
    /// [`Check::run_with_time_limit`]).
    #[must_use]
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Runs every check on the calling thread, without a time limit: a backend that hangs then
    /// hangs the caller. For a backend whose behaviour depends on the thread that calls it
    /// (one that detects an async runtime on the calling thread, say), so that it is checked
    /// where it will be used.
    #[must_use]
    pub fn without_time_limit(mut self) -> Self {
        self.time_limit = None;
        self
    }

    /// The time limit of each check, or `None` when the checks run on the calling thread.
    #[must_use]
    pub fn time_limit(&self) -> Option<Duration> {
        self.time_limit
    }
}

/// Runs every check in [`CHECKS`] on `io`, which must be a fresh, empty backend, and returns
/// the first failure. Each check runs on a thread of its own with [`DEFAULT_TIME_LIMIT`]; see
/// [`run_all_with`] for other settings.
pub fn run_all(io: impl PageIo) -> Result<(), Failure> {
    run_all_with(io, &RunConfig::default())
}

/// [`run_all`] with the settings in `config`.
pub fn run_all_with(io: impl PageIo, config: &RunConfig) -> Result<(), Failure> {
    let io: Arc<dyn PageIo> = Arc::new(io);
    CHECKS.iter().try_for_each(|check| match config.time_limit {
        Some(limit) => check.run_with_time_limit(Arc::clone(&io), limit),
        None => check.run(&*io),
    })
}

/// [`page_size`](PageIo::page_size) is a power of two from
/// [`MIN_PAGE_SIZE`](crate::MIN_PAGE_SIZE) to [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE) and
/// returns the same value every time.
pub fn page_size_is_valid(io: &dyn PageIo) -> Result<(), Failure> {
    const NAME: &str = "page_size_is_valid";
    let size = io.page_size();
    if check_page_size(size).is_err() {
        return Err(Failure::new(
            NAME,
            format!("page_size() is {size}, not a power of two from 512 to 1048576"),
        ));
    }
    if io.page_size() != size {
        return Err(Failure::new(NAME, "page_size() changed between two calls"));
    }
    Ok(())
}

/// A fresh device has [`num_pages`](PageIo::num_pages) 0, reads zeros anywhere, and reading
/// does not grow it. Needs a fresh, empty device.
pub fn empty_device_reads_zeros(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "empty_device_reads_zeros");
    let n = c.num_pages("on the fresh device")?;
    if n != 0 {
        return Err(c.fail(format!(
            "num_pages() is {n} on the device given, expected 0: run the suite on a fresh, \
             empty backend"
        )));
    }
    for no in [0, 1, 7, 1000] {
        c.expect_zeros(no, "on an empty device")?;
    }
    c.expect_num_pages(0, "after reading an empty device")
}

/// Pages written in a scrambled order each read back what was written to them (at once, and
/// after all are written), and the size is the highest page plus one.
pub fn round_trip(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "round_trip");
    let base = c.num_pages("at the start")?;
    let order = [0, 5, 2, 7, 1, 4, 6, 3];
    for &i in &order {
        let data = c.pattern(base + i, 0);
        c.write(base + i, &data)?;
        c.expect_page(base + i, &data, "right after writing it")?;
    }
    for i in 0..8 {
        c.expect_page(base + i, &c.pattern(base + i, 0), "after writing 8 pages")?;
    }
    c.expect_num_pages(base + 8, "after writing 8 pages")
}

/// The last write to a page wins, zeros included; neighbours are untouched and the size does
/// not change.
pub fn overwrite(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "overwrite");
    let base = c.num_pages("at the start")?;
    for i in 0..3 {
        c.write(base + i, &c.pattern(base + i, 0))?;
    }
    let newer = c.pattern(base, 1);
    c.write(base, &newer)?;
    c.expect_page(base, &newer, "after overwriting it")?;
    c.expect_page(
        base + 1,
        &c.pattern(base + 1, 0),
        "after overwriting its neighbour",
    )?;

    let zeros = vec![0; c.page_size];
    c.write(base + 1, &zeros)?;
    c.expect_zeros(base + 1, "after overwriting it with zeros")?;
    c.expect_page(base, &newer, "after overwriting its neighbour with zeros")?;
    c.expect_page(
        base + 2,
        &c.pattern(base + 2, 0),
        "after overwriting its neighbour",
    )?;

    let last = c.pattern(base + 2, 1);
    c.write(base + 2, &last)?;
    c.expect_page(base + 2, &last, "after overwriting the last page")?;
    c.expect_num_pages(
        base + 3,
        "after overwriting pages (which must not change the size)",
    )
}

/// Pages skipped below the highest written one read as zeros; the size is the highest page
/// plus one, and filling a hole does not change it.
pub fn holes_read_zeros(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "holes_read_zeros");
    let base = c.num_pages("at the start")?;
    // The far page first: a write well past the end must grow the device by itself.
    c.write(base + 9, &c.pattern(base + 9, 0))?;
    c.write(base + 3, &c.pattern(base + 3, 0))?;
    c.expect_num_pages(base + 10, "after writing pages 3 and 9 of 10")?;
    for i in (0..3).chain(4..9) {
        c.expect_zeros(base + i, "in a hole")?;
    }
    c.write(base + 6, &c.pattern(base + 6, 0))?;
    c.expect_num_pages(base + 10, "after filling a hole")?;
    for i in [5, 7, 8] {
        c.expect_zeros(base + i, "in a hole next to a filled one")?;
    }
    for i in [3, 6, 9] {
        c.expect_page(base + i, &c.pattern(base + i, 0), "around holes")?;
    }
    Ok(())
}

/// Reads at and well past the end give zeros and do not change the size.
pub fn past_end_reads_zeros(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "past_end_reads_zeros");
    let base = c.num_pages("at the start")?;
    c.write(base, &c.pattern(base, 0))?;
    let end = base + 1;
    for no in [end, end + 1, end + 1000, end + 1_000_000] {
        c.expect_zeros(no, "past the end")?;
    }
    c.expect_num_pages(end, "after reading past the end")?;
    c.expect_page(base, &c.pattern(base, 0), "after reading past the end")
}

/// Pages too far out to have a byte offset: reading `u64::MAX` gives zeros or
/// [`Error::OutOfRange`], and writing it (or truncating to `u64::MAX` pages) fails, since the
/// size could not be counted. Nothing changes and nothing panics.
pub fn huge_page_numbers(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "huge_page_numbers");
    let base = c.num_pages("at the start")?;
    c.write(base, &c.pattern(base, 0))?;
    let end = base + 1;

    let mut buf = vec![JUNK; c.page_size];
    match io.read_page(u64::MAX, &mut buf) {
        Ok(()) if buf.iter().all(|&b| b == 0) => {}
        Ok(()) => return Err(c.fail("reading page u64::MAX succeeded but did not give zeros")),
        Err(Error::OutOfRange { .. }) => {}
        Err(e) => {
            return Err(c.fail_with(
                "reading page u64::MAX failed with an error other than OutOfRange",
                e,
            ));
        }
    }
    let data = c.pattern(u64::MAX, 0);
    match io.write_page(u64::MAX, &data) {
        Ok(()) => {
            return Err(c.fail(
                "writing page u64::MAX succeeded, but then num_pages() cannot be counted; \
                 refuse it with Error::OutOfRange (see pageio::page_offset)",
            ));
        }
        Err(Error::OutOfRange { .. }) => {}
        Err(e) => {
            return Err(c.fail_with(
                "writing page u64::MAX failed with an error other than OutOfRange",
                e,
            ));
        }
    }
    match io.truncate(u64::MAX) {
        Ok(()) => {
            return Err(c.fail(
                "truncate(u64::MAX) succeeded, but no device can hold that many pages; refuse it \
                 with Error::OutOfRange (see pageio::byte_len)",
            ));
        }
        Err(Error::OutOfRange { .. } | Error::Unsupported { .. }) => {}
        Err(e) => {
            return Err(c.fail_with(
                "truncate(u64::MAX) failed with an error other than OutOfRange or Unsupported",
                e,
            ));
        }
    }
    c.expect_num_pages(end, "after refused operations on page u64::MAX")?;
    c.expect_page(
        base,
        &c.pattern(base, 0),
        "after refused operations on page u64::MAX",
    )
}

/// Buffers shorter or longer than a page fail with [`Error::BufferSize`] naming the page, the
/// page size and the buffer's length — for single pages and batches, reads and writes, in range
/// and past the end — and change nothing: no page, no size, no buffer of a failed batch read.
pub fn wrong_buffer_sizes(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "wrong_buffer_sizes");
    let ps = c.page_size;
    let base = c.num_pages("at the start")?;
    let first = c.pattern(base, 0);
    let second = c.pattern(base + 1, 0);
    c.write(base, &first)?;
    c.write(base + 1, &second)?;
    let end = base + 2;
    let other = c.pattern(base, 1);

    for len in [0, 1, ps / 2, ps - 1, ps + 1, 2 * ps] {
        let bad = vec![0xEE; len];
        for no in [base, end] {
            c.expect_buffer_error(
                no,
                len,
                io.write_page(no, &bad),
                &format!("write_page({no}) with a {len}-byte buffer"),
            )?;
        }

        let mut bad_read = vec![0xEE; len];
        c.expect_buffer_error(
            base,
            len,
            io.read_page(base, &mut bad_read),
            &format!("read_page({base}) into a {len}-byte buffer"),
        )?;
        if bad_read.iter().any(|&b| b != 0xEE) {
            return Err(c.fail(format!(
                "read_page({base}) into a {len}-byte buffer failed but wrote into the buffer"
            )));
        }

        c.expect_buffer_error(
            end,
            len,
            io.write_pages(&[(base, other.as_slice()), (end, bad.as_slice())]),
            &format!("write_pages with a good page {base} then a {len}-byte buffer for {end}"),
        )?;
        c.expect_buffer_error(
            end,
            len,
            io.write_pages(&[(end, bad.as_slice()), (base, other.as_slice())]),
            &format!("write_pages with a {len}-byte buffer for {end} then a good page {base}"),
        )?;

        let mut good = vec![JUNK; ps];
        let mut bad_read = vec![0xEE; len];
        c.expect_buffer_error(
            base + 1,
            len,
            io.read_pages(&mut [
                (base, good.as_mut_slice()),
                (base + 1, bad_read.as_mut_slice()),
            ]),
            &format!("read_pages with a good buffer then a {len}-byte buffer"),
        )?;
        if good.iter().any(|&b| b != JUNK) || bad_read.iter().any(|&b| b != 0xEE) {
            return Err(c.fail(format!(
                "read_pages with a {len}-byte buffer failed but read into the batch's buffers \
                 (a bad buffer must fail the whole batch before any I/O)"
            )));
        }

        c.expect_page(base, &first, &format!("after rejected {len}-byte buffers"))?;
        c.expect_page(
            base + 1,
            &second,
            &format!("after rejected {len}-byte buffers"),
        )?;
        c.expect_num_pages(end, &format!("after rejected {len}-byte buffers"))?;
    }
    Ok(())
}

/// [`write_pages`](PageIo::write_pages) and [`read_pages`](PageIo::read_pages) agree with
/// single-page calls: pages in any order, runs of consecutive pages, gaps, pages past the end,
/// empty batches and a batch of 40 pages.
pub fn batches_match_single_pages(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "batches_match_single_pages");
    let base = c.num_pages("at the start")?;

    let written = [4, 1, 2, 3, 7].map(|i| base + i);
    let data: Vec<Vec<u8>> = written.iter().map(|&no| c.pattern(no, 0)).collect();
    let batch: Vec<(u64, &[u8])> = written
        .iter()
        .copied()
        .zip(data.iter().map(Vec::as_slice))
        .collect();
    c.call("write_pages of 5 pages", io.write_pages(&batch))?;
    for (&no, want) in written.iter().zip(&data) {
        c.expect_page(no, want, "written by write_pages")?;
    }
    for i in [0, 5, 6] {
        c.expect_zeros(base + i, "in a gap of a write_pages batch")?;
    }
    c.expect_num_pages(base + 8, "after write_pages up to page 7 of 8")?;

    let five = c.pattern(base + 5, 1);
    c.write(base + 5, &five)?;
    let read = [7, 5, 6, 0, 1, 2, 20].map(|i| base + i);
    let want: Vec<Vec<u8>> = read
        .iter()
        .map(|&no| match no - base {
            5 => five.clone(),
            0 | 6 | 20 => vec![0; c.page_size],
            _ => c.pattern(no, 0),
        })
        .collect();
    c.expect_batch(
        &read,
        &want,
        "read_pages over written pages, holes and past the end",
    )?;

    c.call("write_pages of no pages", io.write_pages(&[]))?;
    c.call("read_pages of no pages", io.read_pages(&mut []))?;
    c.expect_num_pages(base + 8, "after empty batches")?;

    let run: Vec<u64> = (base + 8..base + 48).collect();
    let data: Vec<Vec<u8>> = run.iter().map(|&no| c.pattern(no, 2)).collect();
    let batch: Vec<(u64, &[u8])> = run
        .iter()
        .copied()
        .zip(data.iter().map(Vec::as_slice))
        .collect();
    c.call(
        "write_pages of 40 consecutive pages",
        io.write_pages(&batch),
    )?;
    c.expect_batch(&run, &data, "read_pages of 40 consecutive pages")?;
    for (&no, want) in run.iter().zip(&data) {
        c.expect_page(no, want, "written by a write_pages of 40 pages")?;
    }
    c.expect_num_pages(base + 48, "after write_pages of 40 consecutive pages")
}

/// [`sync`](PageIo::sync) succeeds, with and without unsynced writes, and changes no page.
pub fn sync_keeps_data(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "sync_keeps_data");
    c.call("sync", io.sync())?;
    let base = c.num_pages("at the start")?;
    let data = c.pattern(base, 0);
    c.write(base, &data)?;
    c.call("sync after a write", io.sync())?;
    c.expect_page(base, &data, "after sync")?;
    c.call("sync with nothing to sync", io.sync())?;
    c.expect_page(base, &data, "after a second sync")?;
    c.expect_num_pages(base + 1, "after sync")
}

/// Several threads at once ([`std::thread::scope`]): writers on interleaved, distinct pages
/// (single writes and batches, several rounds) each read back their own data; readers of pages
/// nobody writes see them unchanged throughout; writers racing on one page leave exactly one of
/// their pages, not a mix.
pub fn concurrent_threads(io: &dyn PageIo) -> Result<(), Failure> {
    const WRITERS: u64 = 4;
    const PAGES_EACH: u64 = 8;
    const ROUNDS: u64 = 3;
    const STABLE: u64 = 4;
    let c = Ctx::new(io, "concurrent_threads");
    let base = c.num_pages("at the start")?;
    // Writer `t` owns pages base + i * WRITERS + t. After them come the stable pages, which
    // only readers touch, and the one page that every thread writes.
    let stable_start = base + WRITERS * PAGES_EACH;
    let shared_page = stable_start + STABLE;
    for no in stable_start..shared_page {
        c.write(no, &c.pattern(no, 0))?;
    }

    let writer = |t: u64| -> Result<(), Failure> {
        let mine: Vec<u64> = (0..PAGES_EACH).map(|i| base + i * WRITERS + t).collect();
        for round in 0..ROUNDS {
            let data: Vec<Vec<u8>> = mine.iter().map(|&no| c.pattern(no, round)).collect();
            if round == 1 {
                let batch: Vec<(u64, &[u8])> = mine
                    .iter()
                    .copied()
                    .zip(data.iter().map(Vec::as_slice))
                    .collect();
                c.call("write_pages from a writer thread", io.write_pages(&batch))?;
            } else {
                for (&no, page) in mine.iter().zip(&data) {
                    c.write(no, page)?;
                    c.expect_page(no, page, "right after this thread wrote it")?;
                }
            }
            for (&no, page) in mine.iter().zip(&data) {
                c.expect_page(no, page, "after this thread's round of writes")?;
            }
        }
        Ok(())
    };
    let reader = || -> Result<(), Failure> {
        for _ in 0..20 {
            for no in stable_start..shared_page {
                c.expect_page(no, &c.pattern(no, 0), "read while other threads write")?;
            }
        }
        Ok(())
    };
    let contender = |t: u64| -> Result<(), Failure> {
        let data = c.pattern(shared_page, 100 + t);
        for _ in 0..20 {
            c.write(shared_page, &data)?;
        }
        Ok(())
    };

    std::thread::scope(|s| {
        let mut handles: Vec<_> = (0..WRITERS).map(|t| s.spawn(move || writer(t))).collect();
        handles.extend((0..2).map(|_| s.spawn(reader)));
        handles
            .into_iter()
            .try_for_each(|handle| c.joined(handle.join()))
    })?;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|t| s.spawn(move || contender(t)))
            .collect();
        handles
            .into_iter()
            .try_for_each(|handle| c.joined(handle.join()))
    })?;

    for t in 0..WRITERS {
        for i in 0..PAGES_EACH {
            let no = base + i * WRITERS + t;
            c.expect_page(no, &c.pattern(no, ROUNDS - 1), "after all threads finished")?;
        }
    }
    let last = c.read(shared_page)?;
    if !(0..WRITERS).any(|t| last == c.pattern(shared_page, 100 + t)) {
        return Err(c.fail(format!(
            "page {shared_page}, written concurrently by {WRITERS} threads each with its own \
             data, holds none of their pages (a torn or lost write)"
        )));
    }
    c.expect_num_pages(shared_page + 1, "after the concurrent writes")
}

/// Pages are written and read whole under races: two threads writing the same pages at once
/// (single writes, and batches of two consecutive pages) always leave one of their writes on
/// each page, never a mix, and a thread reading those pages all the while (single reads and
/// batches) only ever sees whole pages — the one before, or one of the writes.
///
/// A torn page shows only when a read or a second write lands inside the short window of a
/// write, so the writers start every round together (at a barrier) while the reader spins, for
/// up to 4000 rounds. A backend whose rounds are slow (a remote store) stops after two
/// seconds, once 100 rounds have run.
pub fn pages_are_atomic(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "pages_are_atomic");
    let base = c.num_pages("at the start")?;
    let race = Race::new(&c, [base, base + 1]);
    for (&no, all) in race.pages.iter().zip(&race.contents) {
        c.write(no, &all[0])?;
    }
    let race = &race;
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..Race::WRITERS)
            .map(|t| s.spawn(move || race.writer(t)))
            .collect();
        let reader = s.spawn(|| race.reader());
        let mut results: Vec<_> = writers.into_iter().map(|w| c.joined(w.join())).collect();
        results.push(c.joined(reader.join()));
        // The first failure found is reported; any other follows from it.
        results.into_iter().collect::<Result<(), Failure>>()
    })?;
    for page in 0..2 {
        race.expect_whole(page, &c.read(race.pages[page])?, "after the race")?;
    }
    c.expect_num_pages(base + 2, "after racing writes to two pages")
}

/// The shared state of [`pages_are_atomic`].
struct Race<'c, 'io> {
    c: &'c Ctx<'io>,
    /// The two consecutive pages raced on.
    pages: [u64; 2],
    /// Every content each page may hold: `[page][0]` is the one written before the race,
    /// `[page][1 + t * VERSIONS + v]` writer `t`'s version `v`.
    contents: Vec<Vec<Vec<u8>>>,
    /// Passed three times a round by both writers: to start their writes together, once both
    /// have written (the leader then checks the pages and decides whether to go on), and once
    /// the decision is made, so both act on the same one.
    barrier: SpinBarrier,
    /// Set by whichever thread fails, and by the leader when enough rounds have run; the reader
    /// spins until it is set.
    stop: AtomicBool,
    /// Whether the writers leave after this round: stored only by the leader between the
    /// second and third barrier of a round, loaded by both after the third.
    last_round: AtomicBool,
    began: Instant,
}

impl<'c, 'io> Race<'c, 'io> {
    const WRITERS: u64 = 2;
    const VERSIONS: u64 = 4;
    const MAX_ROUNDS: u64 = 4000;
    const MIN_ROUNDS: u64 = 100;
    const BUDGET: Duration = Duration::from_secs(2);

    fn new(c: &'c Ctx<'io>, pages: [u64; 2]) -> Self {
        let contents = pages
            .iter()
            .map(|&no| {
                (0..=Self::WRITERS * Self::VERSIONS)
                    .map(|k| c.pattern(no, 1000 + k))
                    .collect()
            })
            .collect();
        Self {
            c,
            pages,
            contents,
            barrier: SpinBarrier::new(Self::WRITERS as usize),
            stop: AtomicBool::new(false),
            last_round: AtomicBool::new(false),
            began: Instant::now(),
        }
    }

    /// Checks that `got`, read from page `pages[page]`, is one whole write.
    fn expect_whole(&self, page: usize, got: &[u8], when: &str) -> Result<(), Failure> {
        let contents = &self.contents[page];
        if contents.iter().any(|one| one.as_slice() == got) {
            return Ok(());
        }
        Err(self.c.fail(format!(
            "page {} {when} is not any one write: {}",
            self.pages[page],
            torn(got, contents)
        )))
    }

    /// Runs `step`, turning a panic into a failure (a writer that unwound would leave the
    /// other waiting at the barrier for ever), and records a failure so that every thread
    /// stops soon.
    fn stopping(&self, step: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
        let result = catch_unwind(AssertUnwindSafe(step)).unwrap_or_else(|payload| {
            Err(self
                .c
                .fail(format!("panicked: {}", panic_message(payload.as_ref()))))
        });
        if result.is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Writer `t`'s write of round `round`: one of its versions of one page, or of both pages
    /// in one batch every fourth round.
    fn write(&self, t: u64, round: u64) -> Result<(), Failure> {
        let v = (1 + t * Self::VERSIONS + (round + t) % Self::VERSIONS) as usize;
        if round % 4 == 3 {
            let batch = [
                (self.pages[0], self.contents[0][v].as_slice()),
                (self.pages[1], self.contents[1][v].as_slice()),
            ];
            let result = self.c.io.write_pages(&batch);
            self.c.call("write_pages racing another writer", result)
        } else {
            let page = (round / 4 % 2) as usize;
            self.c.write(self.pages[page], &self.contents[page][v])
        }
    }

    fn writer(&self, t: u64) -> Result<(), Failure> {
        let mut result = Ok(());
        for round in 0.. {
            self.barrier.wait();
            // Once a writer has failed it only keeps step, so the other is not left waiting.
            if result.is_ok() {
                result = self.stopping(|| self.write(t, round));
            }
            if self.barrier.wait() {
                if result.is_ok() {
                    // Both writers are between rounds: what they left must be whole.
                    let when = format!("after two threads wrote it at once (round {round})");
                    result = self.stopping(|| {
                        (0..2).try_for_each(|page| {
                            self.expect_whole(page, &self.c.read(self.pages[page])?, &when)
                        })
                    });
                }
                let rounds = round + 1;
                if rounds >= Self::MAX_ROUNDS
                    || (rounds >= Self::MIN_ROUNDS && self.began.elapsed() >= Self::BUDGET)
                {
                    self.stop.store(true, Ordering::Relaxed);
                }
                self.last_round
                    .store(self.stop.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            self.barrier.wait();
            if self.last_round.load(Ordering::Relaxed) {
                break;
            }
        }
        result
    }

    /// Reads the two pages, one at a time and in batches, until the writers are done.
    fn reader(&self) -> Result<(), Failure> {
        let c = self.c;
        let mut single = vec![JUNK; c.page_size];
        let mut pair = [vec![JUNK; c.page_size], vec![JUNK; c.page_size]];
        let mut reads = 0u64;
        let mut one_read = || -> Result<(), Failure> {
            reads += 1;
            if reads.is_multiple_of(4) {
                let [first, second] = &mut pair;
                let mut batch = [
                    (self.pages[0], first.as_mut_slice()),
                    (self.pages[1], second.as_mut_slice()),
                ];
                c.call(
                    "read_pages while two threads write",
                    c.io.read_pages(&mut batch),
                )?;
                (0..2).try_for_each(|page| {
                    self.expect_whole(page, &pair[page], "read by read_pages during the race")
                })
            } else {
                let page = (reads % 2) as usize;
                let no = self.pages[page];
                c.call(
                    &format!("read_page({no}) while two threads write"),
                    c.io.read_page(no, &mut single),
                )?;
                self.expect_whole(page, &single, "read during the race")
            }
        };
        while !self.stop.load(Ordering::Relaxed) {
            self.stopping(&mut one_read)?;
        }
        Ok(())
    }
}

/// A barrier whose waiters spin for a few microseconds before they sleep, so that when they have
/// CPUs they leave it within nanoseconds of each other (a futex wake-up takes longer than the
/// write whose window they are meant to hit together), and when they do not they give the CPU
/// away soon.
struct SpinBarrier {
    threads: usize,
    /// Bumped by the last thread to arrive, which releases the others. Stored with `sleepers`
    /// locked, so that a sleeper that saw the old value cannot miss the wake-up.
    generation: AtomicUsize,
    /// How many threads have arrived in the current generation.
    arrived: AtomicUsize,
    /// Guards nothing but the sleep: held to check `generation` before waiting on `wake`.
    sleepers: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
}

impl SpinBarrier {
    /// How long a waiter spins before it sleeps.
    const SPIN: Duration = Duration::from_micros(10);

    fn new(threads: usize) -> Self {
        Self {
            threads,
            generation: AtomicUsize::new(0),
            arrived: AtomicUsize::new(0),
            sleepers: std::sync::Mutex::new(()),
            wake: std::sync::Condvar::new(),
        }
    }

    /// Waits until all threads have called this; returns `true` in exactly one of them (the
    /// last to arrive).
    fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            let _sleepers = self.lock();
            self.generation.fetch_add(1, Ordering::Release);
            self.wake.notify_all();
            return true;
        }
        let released = || self.generation.load(Ordering::Acquire) != generation;
        let spin_until = Instant::now() + Self::SPIN;
        while !released() {
            if Instant::now() >= spin_until {
                let mut sleepers = self.lock();
                while !released() {
                    sleepers = self
                        .wake
                        .wait(sleepers)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                break;
            }
            std::hint::spin_loop();
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned one is as good as any.
        self.sleepers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Shrinking with [`truncate`](PageIo::truncate) sets the size and makes the cut pages read as
/// zeros; growing again does not bring their old data back; writes after a truncate work; all
/// of it holds after [`sync`](PageIo::sync). A backend that returns [`Error::Unsupported`] skips
/// the rest of the check (after confirming that nothing changed).
pub fn truncate(io: &dyn PageIo) -> Result<(), Failure> {
    let c = Ctx::new(io, "truncate");
    let base = c.num_pages("at the start")?;
    for i in 0..6 {
        c.write(base + i, &c.pattern(base + i, 0))?;
    }
    match io.truncate(base + 4) {
        Ok(()) => {}
        Err(Error::Unsupported { .. }) => {
            c.expect_num_pages(base + 6, "after an unsupported truncate")?;
            return c.expect_page(
                base + 5,
                &c.pattern(base + 5, 0),
                "after an unsupported truncate",
            );
        }
        Err(e) => return Err(c.fail_with(format!("truncate({}) failed", base + 4), e)),
    }
    let intact = |upto: u64, when: &str| -> Result<(), Failure> {
        (0..upto).try_for_each(|i| c.expect_page(base + i, &c.pattern(base + i, 0), when))
    };
    c.expect_num_pages(base + 4, "after truncating 6 pages to 4")?;
    intact(4, "below the new end after a truncate")?;
    for i in 4..6 {
        c.expect_zeros(base + i, "cut off by a truncate")?;
    }

    c.call("truncate to grow", io.truncate(base + 8))?;
    c.expect_num_pages(base + 8, "after growing from 4 pages to 8 by truncate")?;
    for i in 4..8 {
        c.expect_zeros(
            base + i,
            "cut off, then grown back by truncate (old data came back)",
        )?;
    }
    intact(4, "after growing by truncate")?;

    let five = c.pattern(base + 5, 1);
    c.write(base + 5, &five)?;
    c.expect_page(base + 5, &five, "written after a truncate")?;
    c.expect_num_pages(base + 8, "after writing below the end set by truncate")?;
    c.call("truncate to the current size", io.truncate(base + 8))?;
    c.expect_num_pages(base + 8, "after truncating to the current size")?;

    c.call("sync after truncates", io.sync())?;
    c.expect_num_pages(base + 8, "after truncates and sync")?;
    intact(4, "after truncates and sync")?;
    c.expect_page(base + 5, &five, "written after a truncate, then synced")?;
    for i in [4, 6, 7] {
        c.expect_zeros(base + i, "cut off by a truncate, then synced")?;
    }

    c.call("truncate", io.truncate(base + 2))?;
    c.write(base + 3, &five)?;
    c.expect_num_pages(base + 4, "after truncating to 2 pages and writing page 3")?;
    c.expect_zeros(base + 2, "cut off by a truncate, below a later write")?;
    c.expect_page(base + 3, &five, "written after a truncate")?;
    intact(2, "after a second truncate")
}

/// What read buffers are filled with before a read, so that a read that does not fill them is
/// caught.
const JUNK: u8 = 0xA5;

/// The context of one check: the backend and the check's name, for messages.
struct Ctx<'a> {
    io: &'a dyn PageIo,
    check: &'static str,
    page_size: usize,
}

impl<'a> Ctx<'a> {
    fn new(io: &'a dyn PageIo, check: &'static str) -> Self {
        Self {
            io,
            check,
            page_size: io.page_size(),
        }
    }

    fn fail(&self, message: impl Into<String>) -> Failure {
        Failure::new(self.check, message)
    }

    fn fail_with(&self, message: impl Into<String>, error: Error) -> Failure {
        Failure {
            check: self.check,
            message: message.into(),
            error: Some(error),
            timed_out: false,
        }
    }

    /// The result of a thread of this check, with a panic turned into a failure.
    fn joined(&self, result: std::thread::Result<Result<(), Failure>>) -> Result<(), Failure> {
        result.unwrap_or_else(|payload| {
            Err(self.fail(format!(
                "a thread panicked: {}",
                panic_message(payload.as_ref())
            )))
        })
    }

    /// Turns an unexpected error from `what` into a failure.
    fn call<T>(&self, what: &str, result: crate::Result<T>) -> Result<T, Failure> {
        result.map_err(|e| self.fail_with(format!("{what} failed"), e))
    }

    /// Distinct, deterministic, non-zero-looking contents for page `no`, version `version`
    /// (a splitmix64 stream keyed by both).
    fn pattern(&self, no: u64, version: u64) -> Vec<u8> {
        let mut state = no
            .wrapping_mul(0xD6E8_FEB8_6659_FD93)
            .wrapping_add(version.wrapping_mul(0xA076_1D64_78BD_642F))
            ^ 0x5151_5151_5151_5151;
        let mut out = Vec::with_capacity(self.page_size + 8);
        while out.len() < self.page_size {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(self.page_size);
        out
    }

    fn num_pages(&self, when: &str) -> Result<u64, Failure> {
        self.call(&format!("num_pages() {when}"), self.io.num_pages())
    }

    fn expect_num_pages(&self, want: u64, when: &str) -> Result<(), Failure> {
        let got = self.num_pages(when)?;
        if got == want {
            Ok(())
        } else {
            Err(self.fail(format!("num_pages() is {got} {when}, expected {want}")))
        }
    }

    fn write(&self, no: u64, data: &[u8]) -> Result<(), Failure> {
        self.call(&format!("write_page({no})"), self.io.write_page(no, data))
    }

    fn read(&self, no: u64) -> Result<Vec<u8>, Failure> {
        let mut buf = vec![JUNK; self.page_size];
        self.call(&format!("read_page({no})"), self.io.read_page(no, &mut buf))?;
        Ok(buf)
    }

    fn expect_page(&self, no: u64, want: &[u8], when: &str) -> Result<(), Failure> {
        let got = self.read(no)?;
        if got == want {
            Ok(())
        } else {
            Err(self.fail(format!("page {no} {when}: {}", mismatch(&got, want))))
        }
    }

    fn expect_zeros(&self, no: u64, when: &str) -> Result<(), Failure> {
        self.expect_page(no, &vec![0; self.page_size], when)
    }

    /// Reads `pages` with one `read_pages` and compares each with `want`.
    fn expect_batch(&self, pages: &[u64], want: &[Vec<u8>], what: &str) -> Result<(), Failure> {
        let mut bufs = vec![vec![JUNK; self.page_size]; pages.len()];
        let mut batch: Vec<(u64, &mut [u8])> = pages
            .iter()
            .copied()
            .zip(bufs.iter_mut().map(Vec::as_mut_slice))
            .collect();
        self.call(what, self.io.read_pages(&mut batch))?;
        for ((no, got), want) in pages.iter().zip(&bufs).zip(want) {
            if got != want {
                return Err(self.fail(format!("page {no} in {what}: {}", mismatch(got, want))));
            }
        }
        Ok(())
    }

    /// Checks that `result` is the `BufferSize` error for a `len`-byte buffer for page `no`.
    fn expect_buffer_error(
        &self,
        no: u64,
        len: usize,
        result: crate::Result<()>,
        what: &str,
    ) -> Result<(), Failure> {
        match result {
            Err(Error::BufferSize {
                page,
                expected,
                actual,
            }) if (page, expected, actual) == (no, self.page_size, len) => Ok(()),
            Err(e @ Error::BufferSize { .. }) => Err(self.fail_with(
                format!(
                    "{what} returned BufferSize with the wrong details, expected page {no}, \
                     expected {}, actual {len}",
                    self.page_size
                ),
                e,
            )),
            Err(e) => Err(self.fail_with(format!("{what} did not return BufferSize"), e)),
            Ok(()) => Err(self.fail(format!("{what} succeeded, expected Error::BufferSize"))),
        }
    }
}

/// Says how `got`, a page that matches none of `candidates`, is made up: the longest run of it
/// that one candidate explains from the start, and whether another explains the rest.
fn torn(got: &[u8], candidates: &[Vec<u8>]) -> String {
    let prefix = |one: &Vec<u8>| got.iter().zip(one).take_while(|(g, w)| g == w).count();
    let Some((index, len)) = candidates
        .iter()
        .map(prefix)
        .enumerate()
        .max_by_key(|&(_, len)| len)
    else {
        return "there is no write to compare it with".to_owned();
    };
    if len == 0 {
        return format!(
            "it is none of the writes from its first byte on (against the page before the race, \
             {})",
            mismatch(got, &candidates[0])
        );
    }
    let rest = candidates
        .iter()
        .position(|one| got.get(len..) == one.get(len..))
        .map_or_else(
            || "the rest matches no single write either".to_owned(),
            |other| format!("the rest is write #{other}'s"),
        );
    format!(
        "a torn page: bytes 0..{len} of {} are write #{index}'s, {rest} (#0 is the page before \
         the race)",
        got.len()
    )
}

/// Says how a page read differs from what was expected.
fn mismatch(got: &[u8], want: &[u8]) -> String {
    let Some(at) = got.iter().zip(want).position(|(g, w)| g != w) else {
        return format!("read {} bytes, expected {}", got.len(), want.len());
    };
    let hint = if got.iter().all(|&b| b == 0) {
        " (the page read as all zeros)"
    } else if got.iter().all(|&b| b == JUNK) {
        " (the read left the buffer as it was)"
    } else if want.iter().all(|&b| b == 0) {
        " (expected zeros; the page holds data)"
    } else {
        ""
    };
    format!(
        "byte {at} is {:#04x}, expected {:#04x}{hint}",
        got[at], want[at]
    )
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_page_is_described_by_where_it_tears() {
        let old = vec![1u8; 8];
        let new = vec![2u8; 8];
        let candidates = [old.clone(), new.clone()];
        let mut half = old.clone();
        half[4..].copy_from_slice(&new[4..]);
        assert_eq!(
            torn(&half, &candidates),
            "a torn page: bytes 0..4 of 8 are write #0's, the rest is write #1's (#0 is the page \
             before the race)"
        );
        let mut three = half.clone();
        three[6..].fill(3);
        assert!(
            torn(&three, &candidates).contains("the rest matches no single write either"),
            "{}",
            torn(&three, &candidates)
        );
        let zeros = torn(&[0; 8], &candidates);
        assert!(
            zeros.contains("none of the writes from its first byte on"),
            "{zeros}"
        );
        assert!(zeros.contains("all zeros"), "{zeros}");
    }
}
