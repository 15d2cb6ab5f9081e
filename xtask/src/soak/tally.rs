//! The soak's bookkeeping: what was done, what was checked, and what went wrong.
//!
//! Every workload reports into one [`Tally`] (shared, lock-free counters, plus a short list of
//! the first problems for the report). Byte checks go through [`Tally::verify`], so that a
//! mismatch is never merely counted but also described: where the first differing byte is.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::steps::fmt_bytes;

/// Problems kept for the report; later ones are only counted.
const MAX_PROBLEMS: usize = 20;

/// What kind of problem a [`Tally`] was told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Acknowledged data that is missing.
    Lost,
    /// Bytes that differ from what was written, or data that claims to be there and should
    /// not be.
    Corrupt,
    /// Anything else the soak did not expect: a put that never succeeds, a reopen that fails.
    Error,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Lost => "lost",
            Kind::Corrupt => "corrupt",
            Kind::Error => "error",
        })
    }
}

/// Counters shared by every worker of a soak run.
#[derive(Debug, Default)]
pub struct Tally {
    operations: AtomicU64,
    /// Faults injected into the object store, as last read from its counters (a gauge: the
    /// object-store workload stores the running total).
    store_faults: AtomicU64,
    /// Faults injected into the page backends that reached the code under test.
    page_faults: AtomicU64,
    crashes: AtomicU64,
    bytes_verified: AtomicU64,
    lost: AtomicU64,
    corrupt: AtomicU64,
    errors: AtomicU64,
    /// The first problems, described. Guards only the list.
    problems: Mutex<Vec<String>>,
}

/// A snapshot of a [`Tally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Operations done (puts, gets, allocations, frees, reads, commits, ...).
    pub operations: u64,
    /// Faults injected, object store and page backends together.
    pub faults: u64,
    /// Crash-reopen cycles after which every acknowledged byte was found again.
    pub crashes: u64,
    /// Bytes compared against what was written.
    pub bytes_verified: u64,
    /// Acknowledged items missing.
    pub lost: u64,
    /// Items with wrong bytes, or claiming to exist when they should not.
    pub corrupt: u64,
    /// Other unexpected failures.
    pub errors: u64,
}

/// Locks `mutex`; a panic elsewhere does not make the soak's bookkeeping unreadable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tally {
    /// Counts `n` operations.
    pub fn ops(&self, n: u64) {
        self.operations.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one operation.
    pub fn op(&self) {
        self.ops(1);
    }

    /// Sets the object store's running total of injected faults.
    pub fn set_store_faults(&self, total: u64) {
        self.store_faults.fetch_max(total, Ordering::Relaxed);
    }

    /// Counts a fault injected into a page backend.
    pub fn page_fault(&self) {
        self.page_faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Problems counted so far (lost, corrupt, other errors): taken before a reopen's checks
    /// and handed to [`crash_checked`](Self::crash_checked) after them.
    pub fn problem_count(&self) -> u64 {
        [&self.lost, &self.corrupt, &self.errors]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a crash-reopen cycle as survived when its checks found no problem since `before`
    /// (a [`problem_count`](Self::problem_count)); the counters only grow.
    pub fn crash_checked(&self, before: u64) {
        if self.problem_count() == before {
            self.crashes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts `n` bytes checked by other means than [`verify`](Self::verify).
    pub fn verified(&self, n: u64) {
        self.bytes_verified.fetch_add(n, Ordering::Relaxed);
    }

    /// Compares `got` with `expected`: counts the bytes as verified when they agree, else one
    /// corrupt item, described with `what` and the first difference. Returns whether they
    /// agree.
    pub fn verify(&self, what: impl fmt::Display, expected: &[u8], got: &[u8]) -> bool {
        match first_difference(expected, got) {
            None => {
                self.verified(expected.len() as u64);
                true
            }
            Some(diff) => {
                self.problem(Kind::Corrupt, format!("{what}: {diff}"));
                false
            }
        }
    }

    /// Counts and describes a problem.
    pub fn problem(&self, kind: Kind, what: impl Into<String>) {
        let counter = match kind {
            Kind::Lost => &self.lost,
            Kind::Corrupt => &self.corrupt,
            Kind::Error => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let what = what.into();
        let line = format!("{kind}: {what}");
        let kept = {
            let mut problems = lock(&self.problems);
            let keep = problems.len() < MAX_PROBLEMS;
            if keep {
                problems.push(line.clone());
            }
            keep
        };
        if kept {
            eprintln!("soak: {line}");
        }
    }

    /// The problems described so far (the first few).
    pub fn problems(&self) -> Vec<String> {
        lock(&self.problems).clone()
    }

    /// The counters now.
    pub fn figures(&self) -> Figures {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Figures {
            operations: get(&self.operations),
            faults: get(&self.store_faults) + get(&self.page_faults),
            crashes: get(&self.crashes),
            bytes_verified: get(&self.bytes_verified),
            lost: get(&self.lost),
            corrupt: get(&self.corrupt),
            errors: get(&self.errors),
        }
    }
}

/// Where `got` first differs from `expected`, or `None` if they are equal.
pub fn first_difference(expected: &[u8], got: &[u8]) -> Option<String> {
    if expected == got {
        return None;
    }
    let at = expected
        .iter()
        .zip(got)
        .position(|(e, g)| e != g)
        .unwrap_or(expected.len().min(got.len()));
    let differing = expected.iter().zip(got).filter(|(e, g)| e != g).count();
    Some(if expected.len() == got.len() {
        format!(
            "{differing} of {} bytes differ, the first at offset {at}",
            expected.len()
        )
    } else {
        format!(
            "{} bytes instead of {}, first difference at offset {at}",
            got.len(),
            expected.len()
        )
    })
}

impl Figures {
    /// The closing line: `soak: 60 s, 123456 operations, 789 faults injected, 12 crashes
    /// survived, 1.2 GiB verified, lost = 0, corrupt = 0`.
    pub fn summary(&self, elapsed: Duration) -> String {
        format!(
            "soak: {} s, {} operations, {} faults injected, {} crashes survived, {} verified, \
             lost = {}, corrupt = {}",
            elapsed.as_secs_f64().round() as u64,
            self.operations,
            self.faults,
            self.crashes,
            fmt_bytes(self.bytes_verified),
            self.lost,
            self.corrupt
        )
    }

    /// `Ok` when the run proves something and found nothing wrong: no loss, no corruption, no
    /// unexpected error, and at least one operation, one injected fault and one crash.
    pub fn verdict(&self) -> anyhow::Result<()> {
        let mut wrong = Vec::new();
        if self.lost > 0 {
            wrong.push(format!("{} acknowledged items lost", self.lost));
        }
        if self.corrupt > 0 {
            wrong.push(format!("{} items corrupt", self.corrupt));
        }
        if self.errors > 0 {
            wrong.push(format!("{} unexpected errors", self.errors));
        }
        if self.operations == 0 {
            wrong.push("no operation ran".to_owned());
        }
        if self.faults == 0 {
            wrong.push("no fault was injected, so the run proves nothing".to_owned());
        }
        if self.crashes == 0 {
            wrong.push("no crash was survived, so the run proves nothing".to_owned());
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("soak failed: {}", wrong.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_are_verified() {
        let tally = Tally::default();
        assert!(tally.verify("x", b"abcd", b"abcd"));
        assert!(tally.verify("empty", b"", b""));
        let f = tally.figures();
        assert_eq!((f.bytes_verified, f.corrupt), (4, 0));
    }

    #[test]
    fn differences_are_corrupt_and_described() {
        let tally = Tally::default();
        assert!(!tally.verify("seg 1", b"abcd", b"abXd"));
        assert!(!tally.verify("seg 2", b"abcd", b"ab"));
        let f = tally.figures();
        assert_eq!((f.bytes_verified, f.corrupt, f.lost), (0, 2, 0));
        let problems = tally.problems();
        assert_eq!(
            problems[0],
            "corrupt: seg 1: 1 of 4 bytes differ, the first at offset 2"
        );
        assert_eq!(
            problems[1],
            "corrupt: seg 2: 2 bytes instead of 4, first difference at offset 2"
        );
        assert_eq!(
            first_difference(b"ab", b"abc").as_deref(),
            Some("3 bytes instead of 2, first difference at offset 2")
        );
    }

    #[test]
    fn problems_are_counted_past_the_kept_few() {
        let tally = Tally::default();
        for i in 0..MAX_PROBLEMS + 5 {
            tally.problem(Kind::Lost, format!("block {i}"));
        }
        tally.problem(Kind::Error, "stuck");
        let f = tally.figures();
        assert_eq!((f.lost, f.errors), (MAX_PROBLEMS as u64 + 5, 1));
        assert_eq!(tally.problems().len(), MAX_PROBLEMS);
    }

    #[test]
    fn store_faults_are_a_gauge_and_page_faults_add_up() {
        let tally = Tally::default();
        tally.set_store_faults(10);
        tally.set_store_faults(7);
        tally.page_fault();
        tally.page_fault();
        assert_eq!(tally.figures().faults, 12);
    }

    #[test]
    fn the_summary_line_and_the_verdict() {
        let mut f = Figures {
            operations: 123_456,
            faults: 789,
            crashes: 12,
            bytes_verified: 1_288_490_189,
            ..Figures::default()
        };
        assert_eq!(
            f.summary(Duration::from_millis(60_300)),
            "soak: 60 s, 123456 operations, 789 faults injected, 12 crashes survived, \
             1.2 GiB verified, lost = 0, corrupt = 0"
        );
        assert!(f.verdict().is_ok());
        f.corrupt = 1;
        assert!(f.verdict().is_err());
        f.corrupt = 0;
        f.crashes = 0;
        let err = f.verdict().unwrap_err().to_string();
        assert!(err.contains("no crash"), "{err}");
        f.crashes = 1;
        f.faults = 0;
        assert!(f.verdict().is_err());
        f.faults = 1;
        f.errors = 2;
        assert!(f.verdict().is_err());
    }
}
