//! A wrapper that injects errors, short writes and crashes, for tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::{Error, Op, PageIo, Result, byte_len, check_buffer, page_offset};

/// A fault rule for [`FaultyPageIo::fail`].
///
/// Operations are numbered per kind, from 0, counting from the wrapper's creation: `ReadAt(3)`
/// is the fourth page read, the one made when [`OpCounts::reads`] is 3. A batch counts one
/// operation per page. Rules stay until [`FaultyPageIo::clear_faults`]; those naming an index
/// fire at most once because the counters only grow.
///
/// A failed read leaves its buffer unspecified; a failed write (other than a short write) writes
/// nothing; a failed sync makes nothing durable and, by default, loses some of the writes it was
/// to make durable (see [`SyncFailure`]); a failed truncate changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The page read with this index fails.
    ReadAt(u64),
    /// The page write with this index fails, writing nothing.
    WriteAt(u64),
    /// The sync with this index fails, making nothing durable; what becomes of the writes since
    /// the last good sync is up to [`SyncFailure`].
    SyncAt(u64),
    /// The truncate with this index fails, changing nothing.
    TruncateAt(u64),
    /// Every read of this page fails.
    ReadPage(u64),
    /// Every write of this page fails, writing nothing.
    WritePage(u64),
    /// The page write with this index is torn: only the first `bytes` bytes of the page are
    /// written (the rest keeps its old contents) and the write returns [`Error::Injected`].
    /// The torn page is an unsynced write like any other: reads see it, a crash drops it.
    /// A `bytes` of a page or more writes the whole page and still fails.
    ShortWriteAt {
        /// The write's index.
        index: u64,
        /// How many bytes from the start of the page reach the device.
        bytes: usize,
    },
}

/// What a failed sync (a [`Fault::SyncAt`]) does to the writes made since the last good sync.
///
/// On Linux a failed `fsync` or `fdatasync` reports the error once, and the kernel may already
/// have marked the pages whose write-back failed clean and dropped them: reads then see what
/// the disk held before, and no later sync writes them again (the "fsyncgate" of `PostgreSQL`). So
/// after a failed sync nobody can know which of the writes since the last good one will
/// survive, and retrying the sync proves nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncFailure {
    /// Linux's behaviour, and the default: each page written since the last good sync is, at
    /// random (from the wrapper's seed, see [`FaultyPageIo::with_seed`]), either discarded —
    /// it reads as the synced state again, and no later sync brings it back — or kept as an
    /// unsynced write, which a later sync makes durable and a crash may still drop.
    #[default]
    LoseSome,
    /// Nothing is lost: every write stays unsynced, so a later sync that succeeds makes it
    /// durable. Kinder than a real device; for tests of behaviour that needs the writes kept.
    KeepAll,
}

/// How many operations a [`FaultyPageIo`] was asked to do since its creation.
///
/// Batches count once per page. An operation counts whether it succeeded or failed (by an
/// injected fault, a simulated crash or the inner backend), but not when it was rejected before
/// doing anything for a bad argument ([`Error::BufferSize`], [`Error::OutOfRange`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpCounts {
    /// Pages read.
    pub reads: u64,
    /// Pages written.
    pub writes: u64,
    /// Calls to [`PageIo::sync`].
    pub syncs: u64,
    /// Calls to [`PageIo::truncate`].
    pub truncates: u64,
    /// Unsynced page writes that failed syncs discarded ([`SyncFailure::LoseSome`]).
    pub discarded: u64,
}

/// A [`PageIo`] wrapper that counts operations, injects errors and short writes, and simulates
/// crashes (feature `test-utils`).
///
/// # Crash model
///
/// Writes and truncates do not reach the inner backend when they are made: they go to an
/// in-memory overlay of unsynced changes, which reads and [`num_pages`](PageIo::num_pages) see
/// first, so the wrapper keeps the whole [`PageIo`] contract. [`sync`](PageIo::sync) applies the
/// overlay to the inner backend and syncs it. A crash then decides what the unsynced changes
/// become:
///
/// - [`crash`](Self::crash) drops all of them, as a power cut before any reached the disk;
/// - [`crash_keeping`](Self::crash_keeping) keeps the writes a closure picks, as a power cut
///   after some of them reached the disk;
/// - [`crash_after_writes`](Self::crash_after_writes) arms a crash: after that many more
///   successful writes the device dies and refuses every operation with [`Error::Crashed`]
///   until the test calls `crash` or `crash_keeping`, as a process that stops mid-flush.
///
/// A failed sync ([`Fault::SyncAt`]) is a fault, not a crash: by default it discards a random
/// subset of the unsynced writes, as Linux may after a failed `fsync` (see [`SyncFailure`]).
///
/// After a crash the device works again, holding exactly what was synced (plus kept writes).
/// The inner backend always holds the synced state, so a test can also "reopen" it: take it
/// back with [`into_inner`](Self::into_inner) (or share it, e.g. an `Arc`) and build a new
/// wrapper or upper layer on it.
///
/// ```
/// use pageio::{Error, Fault, FaultyPageIo, MemPageIo, PageIo};
///
/// let io = FaultyPageIo::new(MemPageIo::new(512)?);
/// io.write_page(0, &[1; 512])?;
/// io.sync()?;
/// io.write_page(0, &[2; 512])?;
/// io.write_page(1, &[3; 512])?;
/// io.crash(); // the two unsynced writes are lost
///
/// let mut buf = [0; 512];
/// io.read_page(0, &mut buf)?;
/// assert_eq!(buf, [1; 512]);
/// assert_eq!(io.num_pages()?, 1);
///
/// io.fail(Fault::WritePage(5));
/// assert!(matches!(io.write_page(5, &buf), Err(Error::Injected { page: Some(5), .. })));
/// assert_eq!(io.counts().writes, 4);
/// # Ok::<(), pageio::Error>(())
/// ```
pub struct FaultyPageIo<I: PageIo> {
    inner: I,
    reads: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    truncates: AtomicU64,
    discarded: AtomicU64,
    /// What a failed sync does to the unsynced writes.
    sync_failure: SyncFailure,
    /// The state of the generator that picks the writes a failed sync discards (splitmix64).
    /// Locked only inside `state`'s write lock.
    rng: Mutex<u64>,
    /// The fault rules, oldest first. Locked briefly, never while calling `inner`; when both
    /// locks are held, `state` is taken first.
    faults: Mutex<Vec<Fault>>,
    /// The unsynced changes and the crash switch. It is held across calls into `inner` (shared
    /// by reads, exclusive for everything else) so that the overlay and the inner backend
    /// always change together: a test wrapper trades concurrency for a model that is easy to
    /// trust.
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// Pages written since the last sync, newest contents (torn ones included).
    overlay: BTreeMap<u64, Box<[u8]>>,
    /// The lowest truncate target since the last sync: inner pages at or past it read as zeros
    /// (the overlay still applies).
    cut: Option<u64>,
    /// The device size when a truncate happened since the last sync (grown by later writes);
    /// otherwise the size is the inner size grown by the overlay.
    size: Option<u64>,
    /// How many more writes may succeed before the device dies, when a crash is armed.
    writes_left: Option<u64>,
    /// The device has died and refuses every operation until a crash restarts it.
    dead: bool,
    /// Whether the inner backend supports truncate, once known.
    truncate_supported: Option<bool>,
}

impl State {
    fn restart(&mut self) {
        self.overlay.clear();
        self.cut = None;
        self.size = None;
        self.writes_left = None;
        self.dead = false;
    }

    fn grow_to(&mut self, no: u64) {
        if let Some(size) = &mut self.size {
            *size = (*size).max(no + 1);
        }
    }

    fn alive(&self, op: Op) -> Result<()> {
        if self.dead {
            Err(Error::Crashed { op })
        } else {
            Ok(())
        }
    }
}

impl<I: PageIo> FaultyPageIo<I> {
    /// Wraps `inner`, with no faults and no unsynced changes. The inner backend's current
    /// contents count as synced. A failed sync loses some writes ([`SyncFailure::LoseSome`]),
    /// picked from a fixed seed unless [`with_seed`](Self::with_seed) sets another.
    pub fn new(inner: I) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            truncates: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            sync_failure: SyncFailure::default(),
            rng: Mutex::new(0x2545_f491_4f6c_dd1d),
            faults: Mutex::new(Vec::new()),
            state: RwLock::new(State::default()),
        }
    }

    /// Sets what a failed sync does to the unsynced writes (by default
    /// [`SyncFailure::LoseSome`]).
    #[must_use]
    pub fn with_sync_failure(mut self, mode: SyncFailure) -> Self {
        self.sync_failure = mode;
        self
    }

    /// Seeds the generator that picks which writes a failed sync discards, so a test can try
    /// many subsets and replay the one that failed.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        *self.rng.lock() = seed;
        self
    }

    /// The wrapped backend, which holds exactly the synced state.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// Unwraps the backend, dropping every unsynced change as a crash would.
    pub fn into_inner(self) -> I {
        self.inner
    }

    /// The operations counted so far.
    pub fn counts(&self) -> OpCounts {
        OpCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            truncates: self.truncates.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }

    /// Adds a fault rule. When several rules match one operation, the oldest decides.
    pub fn fail(&self, fault: Fault) {
        self.faults.lock().push(fault);
    }

    /// Removes every fault rule. An armed [`crash_after_writes`](Self::crash_after_writes) is
    /// not a rule and stays armed.
    pub fn clear_faults(&self) {
        self.faults.lock().clear();
    }

    /// Simulates a crash and restart: every unsynced write and truncate is dropped, an armed
    /// crash is disarmed, and a dead device works again. Fault rules and counts stay.
    pub fn crash(&self) {
        self.state.write().restart();
    }

    /// Simulates a crash in which some unsynced writes reached the disk: `keep` is called with
    /// the number of every page written since the last sync, in ascending order, and the pages
    /// it returns `true` for are written to the inner backend (with their latest contents, torn
    /// or not) and synced; everything else, unsynced truncates included, is dropped as by
    /// [`crash`](Self::crash).
    ///
    /// The device restarts even when writing the kept pages fails; the error is returned.
    pub fn crash_keeping(&self, mut keep: impl FnMut(u64) -> bool) -> Result<()> {
        let mut state = self.state.write();
        let overlay = std::mem::take(&mut state.overlay);
        state.restart();
        let kept: Vec<(u64, &[u8])> = overlay
            .iter()
            .filter(|(no, _)| keep(**no))
            .map(|(no, page)| (*no, &**page))
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        self.inner.write_pages(&kept)?;
        self.inner.sync()
    }

    /// Arms a crash: after `writes` more successful page writes the device dies, and every later
    /// operation fails with [`Error::Crashed`] until [`crash`](Self::crash) or
    /// [`crash_keeping`](Self::crash_keeping) restarts it. With `writes == 0` it dies at once.
    /// Writes failed by a fault rule do not count.
    pub fn crash_after_writes(&self, writes: u64) {
        let mut state = self.state.write();
        if writes == 0 {
            state.dead = true;
            state.writes_left = None;
        } else {
            state.writes_left = Some(writes);
        }
    }

    /// Whether the device has died (see [`crash_after_writes`](Self::crash_after_writes)).
    pub fn is_crashed(&self) -> bool {
        self.state.read().dead
    }

    /// The pages written since the last sync, in ascending order: what a crash can lose.
    pub fn unsynced_pages(&self) -> Vec<u64> {
        self.state.read().overlay.keys().copied().collect()
    }

    /// The oldest rule that `matches`, if any.
    fn fault(&self, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        self.faults.lock().iter().copied().find(|f| matches(f))
    }

    /// Reads page `no` as the device currently holds it: the overlay, else zeros past an
    /// unsynced truncate, else the inner backend.
    fn read_current(&self, state: &State, no: u64, buf: &mut [u8]) -> Result<()> {
        if let Some(page) = state.overlay.get(&no) {
            buf.copy_from_slice(page);
            Ok(())
        } else if state.cut.is_some_and(|cut| no >= cut) {
            buf.fill(0);
            Ok(())
        } else {
            self.inner.read_page(no, buf)
        }
    }

    /// Whether the inner backend supports truncate, asked once by truncating it to its own
    /// size (which changes no page).
    fn inner_truncates(&self, state: &mut State) -> Result<bool> {
        if let Some(known) = state.truncate_supported {
            return Ok(known);
        }
        let supported = match self.inner.truncate(self.inner.num_pages()?) {
            Ok(()) => true,
            Err(Error::Unsupported { .. }) => false,
            Err(e) => return Err(e),
        };
        state.truncate_supported = Some(supported);
        Ok(supported)
    }

    /// Drops a random subset of the unsynced page writes, as a failed `fsync` may: each page
    /// is dropped with probability one half, so any subset, none and all included, can happen.
    fn discard_some(&self, state: &mut State) {
        let mut rng = self.rng.lock();
        let before = state.overlay.len();
        state.overlay.retain(|_, _| splitmix64(&mut rng) & 1 == 0);
        let dropped = before - state.overlay.len();
        self.discarded.fetch_add(dropped as u64, Ordering::Relaxed);
    }

    /// Makes the overlay durable in the inner backend. On error the overlay is kept, so the
    /// device still reads the same and a later sync tries again.
    fn apply(&self, state: &mut State) -> Result<()> {
        if let Some(cut) = state.cut {
            self.inner.truncate(cut)?;
        }
        let pages: Vec<(u64, &[u8])> = state
            .overlay
            .iter()
            .map(|(no, page)| (*no, &**page))
            .collect();
        self.inner.write_pages(&pages)?;
        if let Some(size) = state.size {
            // A truncate may have grown the device past its highest written page.
            self.inner.truncate(size)?;
        }
        self.inner.sync()?;
        state.overlay.clear();
        state.cut = None;
        state.size = None;
        Ok(())
    }
}

impl<I: PageIo> PageIo for FaultyPageIo<I> {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        check_buffer(no, self.page_size(), buf.len())?;
        let index = self.reads.fetch_add(1, Ordering::Relaxed);
        let state = self.state.read();
        state.alive(Op::Read)?;
        if self
            .fault(|f| matches!(*f, Fault::ReadAt(i) if i == index) || *f == Fault::ReadPage(no))
            .is_some()
        {
            return Err(Error::Injected {
                op: Op::Read,
                page: Some(no),
            });
        }
        self.read_current(&state, no, buf)
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        check_buffer(no, self.page_size(), buf.len())?;
        page_offset(no, self.page_size())?;
        let index = self.writes.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.write();
        state.alive(Op::Write)?;
        let injected = Error::Injected {
            op: Op::Write,
            page: Some(no),
        };
        match self.fault(|f| match *f {
            Fault::WriteAt(i) | Fault::ShortWriteAt { index: i, .. } => i == index,
            Fault::WritePage(p) => p == no,
            _ => false,
        }) {
            None => {}
            Some(Fault::ShortWriteAt { bytes, .. }) => {
                let mut page = vec![0; buf.len()].into_boxed_slice();
                self.read_current(&state, no, &mut page)?;
                let bytes = bytes.min(buf.len());
                page[..bytes].copy_from_slice(&buf[..bytes]);
                state.overlay.insert(no, page);
                state.grow_to(no);
                return Err(injected);
            }
            Some(_) => return Err(injected),
        }
        state.overlay.insert(no, buf.into());
        state.grow_to(no);
        if let Some(left) = state.writes_left {
            if left <= 1 {
                state.writes_left = None;
                state.dead = true;
            } else {
                state.writes_left = Some(left - 1);
            }
        }
        Ok(())
    }

    fn num_pages(&self) -> Result<u64> {
        let state = self.state.read();
        state.alive(Op::NumPages)?;
        if let Some(size) = state.size {
            return Ok(size);
        }
        let written = state.overlay.last_key_value().map_or(0, |(no, _)| no + 1);
        Ok(self.inner.num_pages()?.max(written))
    }

    fn sync(&self) -> Result<()> {
        let index = self.syncs.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.write();
        state.alive(Op::Sync)?;
        if self.fault(|f| *f == Fault::SyncAt(index)).is_some() {
            if self.sync_failure == SyncFailure::LoseSome {
                self.discard_some(&mut state);
            }
            return Err(Error::Injected {
                op: Op::Sync,
                page: None,
            });
        }
        self.apply(&mut state)
    }

    /// Records the truncate in the overlay; it reaches the inner backend at the next sync, and
    /// a crash before then undoes it. Returns [`Error::Unsupported`] when the inner backend
    /// cannot truncate.
    fn truncate(&self, num_pages: u64) -> Result<()> {
        byte_len(num_pages, self.page_size())?;
        let index = self.truncates.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.write();
        state.alive(Op::Truncate)?;
        if self.fault(|f| *f == Fault::TruncateAt(index)).is_some() {
            return Err(Error::Injected {
                op: Op::Truncate,
                page: None,
            });
        }
        if !self.inner_truncates(&mut state)? {
            return Err(Error::Unsupported { op: Op::Truncate });
        }
        state.overlay.split_off(&num_pages);
        state.cut = Some(state.cut.map_or(num_pages, |cut| cut.min(num_pages)));
        state.size = Some(num_pages);
        Ok(())
    }
}

/// One step of splitmix64: advances `state` and returns the next pseudo-random value.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<I: PageIo> fmt::Debug for FaultyPageIo<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FaultyPageIo");
        s.field("inner", &self.inner)
            .field("counts", &self.counts())
            .field("sync_failure", &self.sync_failure)
            .field("faults", &*self.faults.lock());
        // `try_read` keeps a Debug print made while the state is locked from deadlocking.
        if let Some(state) = self.state.try_read() {
            s.field("unsynced_pages", &state.overlay.len())
                .field("pending_truncate", &state.size)
                .field("crashed", &state.dead);
        }
        s.finish_non_exhaustive()
    }
}
