//! Counters, and the semaphore that bounds requests in flight.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{Error, Result};

/// A snapshot of an [`Uploader`](crate::Uploader)'s or [`Downloader`](crate::Downloader)'s
/// counters, all since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Store requests started (PUTs, parts, completes, aborts, GETs, range GETs, HEADs, hedges).
    pub requests: u64,
    /// Payload bytes acknowledged by the store.
    pub bytes_up: u64,
    /// Payload bytes received from the store.
    pub bytes_down: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
    /// Hedge requests raised.
    pub hedges_raised: u64,
    /// Hedge requests that finished first (their primary was cancelled).
    pub hedges_won: u64,
    /// Hedges that were due but not raised: the budget was spent or no request slot was free.
    pub hedges_skipped: u64,
    /// Store requests in flight now.
    pub in_flight: u64,
    /// The most store requests ever in flight at once.
    pub peak_in_flight: u64,
    /// `get` calls that joined a download already in flight (single-flight).
    pub coalesced: u64,
    /// Create-once puts that found the same object already there (a lost acknowledgement, or a
    /// second upload of the same object).
    pub already_present: u64,
    /// Create-once puts that found a different object there.
    pub conflicts: u64,
    /// Multipart uploads started.
    pub multipart_uploads: u64,
    /// Multipart uploads aborted after a failure.
    pub multipart_aborts: u64,
}

/// The live counters behind [`Counters`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) hedges_raised: AtomicU64,
    pub(crate) hedges_won: AtomicU64,
    pub(crate) hedges_skipped: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) peak_in_flight: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) already_present: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) multipart_uploads: AtomicU64,
    pub(crate) multipart_aborts: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            requests: get(&self.requests),
            bytes_up: get(&self.bytes_up),
            bytes_down: get(&self.bytes_down),
            retries: get(&self.retries),
            hedges_raised: get(&self.hedges_raised),
            hedges_won: get(&self.hedges_won),
            hedges_skipped: get(&self.hedges_skipped),
            in_flight: get(&self.in_flight),
            peak_in_flight: get(&self.peak_in_flight),
            coalesced: get(&self.coalesced),
            already_present: get(&self.already_present),
            conflicts: get(&self.conflicts),
            multipart_uploads: get(&self.multipart_uploads),
            multipart_aborts: get(&self.multipart_aborts),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Bounds the store requests of one uploader or downloader and counts them.
#[derive(Debug)]
pub(crate) struct Gate {
    slots: Semaphore,
    pub(crate) stats: Stats,
    what: &'static str,
}

/// One request slot: counted in flight until dropped.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    _permit: SemaphorePermit<'a>,
    stats: &'a Stats,
}

impl Gate {
    pub(crate) fn new(max_in_flight: usize, what: &'static str) -> Self {
        Self {
            slots: Semaphore::new(max_in_flight),
            stats: Stats::default(),
            what,
        }
    }

    /// Waits for a request slot.
    pub(crate) async fn slot(&self) -> Result<Slot<'_>> {
        let permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::Shutdown { what: self.what })?;
        Ok(self.start(permit))
    }

    /// A request slot if one is free now (for hedges, which must not queue).
    pub(crate) fn try_slot(&self) -> Option<Slot<'_>> {
        self.slots
            .try_acquire()
            .ok()
            .map(|permit| self.start(permit))
    }

    fn start<'a>(&'a self, permit: SemaphorePermit<'a>) -> Slot<'a> {
        Stats::add(&self.stats.requests, 1);
        let now = self.stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Slot {
            _permit: permit,
            stats: &self.stats,
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
