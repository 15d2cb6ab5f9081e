//! The cache: resident frames, the pin protocol, eviction with write-back, and flush.
//!
//! # Protocol
//!
//! One mutex (`PageCache::state`) guards the page index, the recency list and the counters. It is
//! held for bookkeeping only: no backend I/O, no allocation of page buffers, and no page lock is
//! waited for while it is held.
//!
//! A resident page is a [`Frame`]. Its `pins` count goes from 0 to 1 only under the state lock
//! (a pin is taken by a lookup, by an eviction write-back or by a flush); it drops without the
//! lock. So a frame seen unpinned under the lock stays unpinned until the lock is released, and
//! only unpinned frames are removed: a `PageRef` never points at a page the cache has let go.
//!
//! A frame's `dirty` flag is set after a write lock on its data is taken, and cleared only while
//! a read lock is held, right after (eviction) or right before (flush, which copies) the content
//! is handed to the backend. A write can therefore never slip between "written" and "clean".
//!
//! # The page buffer
//!
//! A frame's bytes live in a heap buffer owned through one raw pointer (`Frame::buf`, from
//! `Box::into_raw`), installed once by the filler and freed when the frame is dropped. The
//! frame's reader-writer lock holds no data: it only orders access. Every view of the bytes —
//! a guard's slice, a block cache's pointer into a page — is derived from that one raw root, and
//! a guard builds its slice only when it is dereferenced, so taking (and dropping) a guard makes
//! no reference to bytes another party is using. (A `Box` inside the lock, with a pointer taken
//! from it once, was undefined behaviour: later guards reborrowed the `Box` and invalidated the
//! pointer, as Miri's Stacked and Tree Borrows both report.)
//!
//! # After a failed sync
//!
//! A failed `sync` may have lost writes the cache no longer holds (pages written back by
//! eviction), so no later flush can be trusted: the first failed sync poisons the cache
//! (`State::poisoned`), and from then on every operation that would touch the backend — misses,
//! write-backs, flushes, truncates — returns [`Error::PreviousIo`]. Hits on cached pages go on.
//!
//! A backend read that overlaps a sync may see what a failing sync has just lost, before the
//! cache knows it failed. So a read (a miss's fill, or the read-in of a zero-filled page) notes
//! the sync counters before and after: if a sync ran meanwhile, it waits for that flush to end
//! (by taking `flush_lock`) and then checks the poison; a read that returns after a failed sync
//! is refused like a miss that starts after it.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::{Arc, OnceLock};

use pageio::PageIo;

use crate::lru::Lru;
use crate::sync::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Mutex, MutexGuard, RwLock, RwLockReadGuard,
    RwLockWriteGuard,
};
use crate::{CacheConfig, CacheStats, Error, Result};
use std::ptr::NonNull;

/// Up to this many pin candidates, eviction always counts pins exactly (it is cheap), so the
/// capacity is honoured exactly whenever fewer pages than this are pinned.
const SMALL_PIN_LIST: usize = 64;

/// The frame's content is being filled by the caller that missed; others wait on `data`.
const LOADING: u8 = 0;
/// The frame holds the page.
const READY: u8 = 1;
/// The fill failed; `error` says why. The frame has been (or is being) removed from the index.
const FAILED: u8 = 2;
/// Zero-filled for `get_for_overwrite` and not written yet. The zeros are not the page's
/// content: a `get` of the page reads the backend into the frame first (then `READY`), and the
/// first write guard makes it `READY` too.
const ZEROED: u8 = 3;

/// One resident page.
///
/// `repr(C)` with the fields a hit touches first, and 64-byte alignment: together with the
/// `Arc` counts in front, a hit reads and writes one cache line of the frame.
#[repr(C, align(64))]
struct Frame {
    /// Live pins: `PageRef`s plus the temporary pins of an eviction write-back or a flush.
    /// 0 → 1 only under the state lock (see the module docs).
    pins: AtomicUsize,
    /// Orders access to the bytes behind `buf` like a reader-writer lock; it holds no data
    /// itself (see "The page buffer" in the module docs). The filler holds it for writing from
    /// before the frame is published until the fill is done.
    lock: RwLock<()>,
    /// `LOADING`, `READY`, `FAILED` or `ZEROED`; changed only while `lock` is held for writing,
    /// so a waiter that gets a read lock sees the value the last writer left.
    status: AtomicU8,
    /// The content is newer than the backend's. Set after taking the write lock; cleared only
    /// while holding the read lock.
    dirty: AtomicBool,
    /// The last write-back of this page failed: eviction passes it over while other victims
    /// exist. Cleared when a write of the page succeeds.
    write_back_failed: AtomicBool,
    /// Whether the frame is on `State::maybe_pinned`. Touched only under the state lock.
    listed: AtomicBool,
    /// Set with `FAILED` when the fill was refused because a sync failed while it read: its
    /// waiters get [`Error::PreviousIo`] rather than a read error.
    refused: AtomicBool,
    no: u64,
    /// The page buffer, `len` bytes, owned through this raw pointer (from `Box::into_raw`):
    /// null until the filler installs it (while holding `lock` for writing), unchanged after,
    /// freed by `Drop`.
    buf: AtomicPtr<u8>,
    len: usize,
    /// Set by the filler before `status` becomes `FAILED`.
    error: OnceLock<Arc<pageio::Error>>,
}

impl Frame {
    fn new(no: u64, len: usize) -> Self {
        Self {
            no,
            len,
            pins: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            write_back_failed: AtomicBool::new(false),
            status: AtomicU8::new(LOADING),
            error: OnceLock::new(),
            listed: AtomicBool::new(false),
            refused: AtomicBool::new(false),
            lock: RwLock::new(()),
            buf: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Releases one pin. The caller must not touch the frame afterwards unless it holds
    /// another pin or an `Arc` to it: an unpinned frame outside the index may be freed at once.
    fn unpin(&self) {
        self.pins.fetch_sub(1, Release);
    }

    /// Installs the page buffer. Called once, by the filler, which holds the write lock.
    fn install(&self, buf: Box<[u8]>) {
        debug_assert_eq!(buf.len(), self.len);
        let ptr = Box::into_raw(buf).cast::<u8>();
        let old = self.buf.swap(ptr, Release);
        debug_assert!(old.is_null(), "a frame's buffer is installed once");
    }

    /// The raw root of the page's bytes. Non-null once the frame has been filled, which every
    /// pinned frame outside `LOADING` has been.
    fn bytes(&self) -> NonNull<u8> {
        NonNull::new(self.buf.load(Acquire)).expect("a filled frame has a buffer")
    }

    /// The page's bytes, shared.
    ///
    /// # Safety
    ///
    /// The frame must be filled (pinned and past `LOADING`, or its filler), and nothing may
    /// write the bytes while the slice lives: the caller holds the lock for reading (or
    /// writing), and no layer writes through [`PageRef::as_ptr`] meanwhile.
    unsafe fn slice(&self) -> &[u8] {
        // SAFETY: `bytes()` is the raw root of a live `len`-byte buffer (the frame is filled
        // and alive); the caller rules out writers for the slice's life.
        unsafe { std::slice::from_raw_parts(self.bytes().as_ptr(), self.len) }
    }

    /// The page's bytes, exclusive.
    ///
    /// # Safety
    ///
    /// As for [`slice`](Self::slice), and nothing else may read or write the bytes while the
    /// slice lives: the caller holds the lock for writing, and no layer uses a pointer from
    /// [`PageRef::as_ptr`] meanwhile.
    #[allow(
        clippy::mut_from_ref,
        reason = "the bytes live behind a raw pointer; the write lock makes them exclusive"
    )]
    unsafe fn slice_mut(&self) -> &mut [u8] {
        // SAFETY: as in `slice`; the caller makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.bytes().as_ptr(), self.len) }
    }

    /// Takes the buffer out of a frame nobody else can reach any more (for reuse).
    fn into_buffer(self) -> Option<Box<[u8]>> {
        let ptr = self.buf.swap(std::ptr::null_mut(), Relaxed);
        // `self` drops here with a null buffer, freeing nothing.
        // SAFETY: a non-null `buf` came from `Box::into_raw` of a `len`-byte `Box<[u8]>`
        // (`install`), and was just swapped out, so this is its only owner.
        (!ptr.is_null())
            .then(|| unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, self.len)) })
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        let ptr = *self.buf.get_mut();
        if !ptr.is_null() {
            // SAFETY: as in `into_buffer`: `buf` came from `Box::into_raw` of a `len`-byte
            // `Box<[u8]>`, and `&mut self` means no guard or pin can reach it any more.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, self.len)) });
        }
    }
}

/// Everything the state lock guards.
struct State {
    /// Resident frames by page number, in order of last lookup.
    lru: Lru<Arc<Frame>>,
    /// Frames whose fill failed, taken out of the index while callers that waited for the fill
    /// still pin them; freed once unpinned (swept on misses).
    graveyard: Vec<Arc<Frame>>,
    /// Page numbers of frames pinned since they were last seen unpinned: a superset of the
    /// pinned resident frames, trimmed by [`State::count_pinned`]. Unpinning needs no lock, so
    /// the exact count is only worked out when eviction needs it.
    maybe_pinned: Vec<u64>,
    /// The exact pin count found by the last [`State::count_pinned`] that eviction asked for.
    pinned_at_count: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
    write_backs: u64,
    failed_write_backs: u64,
    flushed: u64,
    /// The first failed sync's error: set, the cache refuses every backend access (see "After a
    /// failed sync" in the module docs).
    poisoned: Option<Arc<pageio::Error>>,
}

/// The state lock, held.
type StateGuard<'a> = MutexGuard<'a, State>;

/// What a miss must do before it can insert its page.
enum Room {
    /// There is room. These clean frames were evicted for it; their buffers can be reused.
    Made(Vec<Arc<Frame>>),
    /// This dirty frame (pinned for the purpose) must be written back first. `last_resort`: it
    /// is a page whose write-back failed before, tried again because no other victim is left;
    /// if it fails again the miss fails.
    WriteBack {
        victim: Arc<Frame>,
        last_resort: bool,
    },
    /// Every unpinned victim's write-back failed, each tried once more by this miss.
    Stuck,
}

impl State {
    /// Pins `frame`. Must be called under the state lock: that is what makes 0 → 1 safe.
    fn pin(&mut self, frame: &Frame) {
        frame.pins.fetch_add(1, Relaxed);
        // Plain load and store, not a swap: `listed` only changes under the state lock, and this
        // is the hit path.
        if !frame.listed.load(Relaxed) {
            frame.listed.store(true, Relaxed);
            self.maybe_pinned.push(frame.no);
        }
    }

    /// Trims `maybe_pinned` to the frames pinned now and returns how many there are.
    fn count_pinned(&mut self) -> usize {
        let candidates = std::mem::take(&mut self.maybe_pinned);
        let mut kept = Vec::with_capacity(candidates.len());
        for no in candidates {
            // A stale entry (frame gone) finds nothing; a duplicate (frame replaced and pinned
            // again) finds `listed` already cleared by its first entry.
            if let Some(frame) = self.lru.peek(no)
                && frame.listed.swap(false, Relaxed)
                && frame.pins.load(Acquire) > 0
            {
                kept.push(no);
            }
        }
        for &no in &kept {
            if let Some(frame) = self.lru.peek(no) {
                frame.listed.store(true, Relaxed);
            }
        }
        let pinned = kept.len();
        self.maybe_pinned = kept;
        pinned
    }

    /// Evicts least-recently-used unpinned frames until fewer than `capacity` unpinned frames
    /// remain, so that the page about to be inserted fits once it is unpinned. `tried` are the
    /// pages this miss already tried as a last resort, which it does not try again.
    fn make_room(&mut self, capacity: usize, tried: &[u64]) -> Room {
        let mut evicted = Vec::new();
        if self.lru.len() < capacity {
            // Nothing to evict; just keep the candidate list from growing with stale entries
            // (failed fills) while the cache is not full.
            if self.maybe_pinned.len() > 2 * self.lru.len() + 64 {
                self.count_pinned();
            }
            return Room::Made(evicted);
        }
        // `maybe_pinned` over-counts pins (never under-counts), so it is a safe stand-in: at
        // worst the cache keeps a few more unpinned pages than its capacity. The exact count
        // walks the whole list, so when many pages are pinned at once (a block over more pages
        // than the capacity) it is redone only each time the list has doubled: O(1) amortized
        // per miss, where a recount on every miss would be quadratic.
        let listed = self.maybe_pinned.len();
        let pinned = if listed > SMALL_PIN_LIST && listed < 2 * self.pinned_at_count {
            listed
        } else {
            let pinned = self.count_pinned();
            self.pinned_at_count = pinned;
            pinned
        };
        while self.lru.len().saturating_sub(pinned) >= capacity {
            // Acquire pairs with the Release of the last unpin, so a write made under that
            // pin is visible in `dirty` below. A page whose write-back failed is passed over
            // while another victim exists: one bad page must not fail every miss.
            let unpinned = |f: &&Arc<Frame>| f.pins.load(Acquire) == 0;
            let fresh = self
                .lru
                .iter_from_lru()
                .map(|(_, f)| f)
                .filter(unpinned)
                .find(|f| !f.write_back_failed.load(Relaxed));
            let (victim, last_resort) = if let Some(victim) = fresh {
                (Arc::clone(victim), false)
            } else {
                // Only pages whose write-back failed are left (or none): try each once more,
                // least recently used first, so one bad page does not hide one that can be
                // written now.
                let mut failed = self
                    .lru
                    .iter_from_lru()
                    .map(|(_, f)| f)
                    .filter(unpinned)
                    .peekable();
                if failed.peek().is_none() {
                    break;
                }
                match failed.find(|f| !tried.contains(&f.no)) {
                    Some(victim) => (Arc::clone(victim), true),
                    None => return Room::Stuck,
                }
            };
            if victim.dirty.load(Acquire) {
                self.pin(&victim);
                return Room::WriteBack {
                    victim,
                    last_resort,
                };
            }
            self.lru.remove(victim.no);
            self.evictions += 1;
            evicted.push(victim);
        }
        Room::Made(evicted)
    }

    /// The error for an operation refused because a sync failed, if one did.
    fn refuse_if_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(source) => Err(Error::PreviousIo {
                source: Arc::clone(source),
            }),
            None => Ok(()),
        }
    }

    /// Takes a frame whose fill failed out of the index (it always is still there: a frame
    /// being filled is pinned). It stays alive in the graveyard while its waiters pin it.
    fn remove_failed(&mut self, no: u64) {
        if let Some(frame) = self.lru.remove(no) {
            self.graveyard.push(frame);
        }
    }

    /// Frees failed frames nobody pins any more.
    fn sweep_graveyard(&mut self) {
        if !self.graveyard.is_empty() {
            self.graveyard.retain(|f| f.pins.load(Acquire) > 0);
        }
    }
}

/// How a missing page is brought in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Read it from the backend.
    Read,
    /// Zero it without reading (`get_for_overwrite`); it stays clean (and `ZEROED`) until
    /// written.
    Zero,
}

/// A thread-safe cache of pages over a [`PageIo`] backend, with true LRU eviction of unpinned
/// pages and write-back of dirty ones.
///
/// - [`get`](Self::get) returns a [`PageRef`], an RAII pin: while it lives the page stays in
///   memory. The same page can be pinned any number of times, from any threads.
/// - Content is reached through [`PageRef::read`] and [`PageRef::write`]; taking a write guard
///   marks the page dirty, so no write can be forgotten.
/// - `capacity` counts *unpinned* pages. A miss that finds the cache full evicts the least
///   recently used unpinned page first, writing it back if dirty. A failed write-back is
///   returned from that `get`, and the page stays cached and dirty.
/// - [`flush`](Self::flush) writes every dirty page in page order and then syncs the backend:
///   it is the commit point. Dropping the cache writes nothing.
/// - Concurrent misses on one page do one backend read; no backend I/O happens under the cache's
///   lock.
///
/// ```
/// use std::sync::Arc;
/// use pagecache::{CacheConfig, PageCache};
/// use pageio::{MemPageIo, PageIo};
///
/// let io = Arc::new(MemPageIo::new(4096)?);
/// let cache = PageCache::new(io.clone(), CacheConfig::default().with_capacity(2))?;
/// {
///     let page = cache.get(7)?;
///     page.write()[..5].copy_from_slice(b"hello");
///     assert_eq!(&page.read()[..5], b"hello");
/// } // the pin is released here
/// cache.flush()?;
///
/// let mut buf = vec![0; 4096];
/// io.read_page(7, &mut buf)?;
/// assert_eq!(&buf[..5], b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PageCache {
    io: Arc<dyn PageIo>,
    page_size: usize,
    config: CacheConfig,
    /// The page index, recency list and counters (see [`State`]).
    state: Mutex<State>,
    /// Serialises flushes, so that a flush that returns `Ok` has seen every page a concurrent
    /// flush had already marked clean reach the backend before its own sync. A read that
    /// overlapped a sync takes it to wait for the sync's outcome.
    flush_lock: Mutex<()>,
    /// Syncs begun and syncs ended (poison set first, when one failed): a backend read that
    /// sees them change, or differ, overlapped a sync (see the module docs).
    syncs_begun: AtomicUsize,
    syncs_ended: AtomicUsize,
    /// Mirrors `State::poisoned.is_some()`, for the check after a read without the state lock.
    poisoned: AtomicBool,
}

impl fmt::Debug for PageCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageCache")
            .field("io", &self.io)
            .field("page_size", &self.page_size)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PageCache {
    /// A cache over `io`. Fails with [`Error::InvalidConfig`] if the capacity or flush batch is
    /// zero.
    pub fn new(io: Arc<dyn PageIo>, config: CacheConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            page_size: io.page_size(),
            io,
            config,
            state: Mutex::new(State {
                lru: Lru::new(),
                graveyard: Vec::new(),
                maybe_pinned: Vec::new(),
                pinned_at_count: 0,
                hits: 0,
                misses: 0,
                evictions: 0,
                write_backs: 0,
                failed_write_backs: 0,
                flushed: 0,
                poisoned: None,
            }),
            flush_lock: Mutex::new(()),
            syncs_begun: AtomicUsize::new(0),
            syncs_ended: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        })
    }

    /// The backend.
    #[must_use]
    pub fn io(&self) -> &Arc<dyn PageIo> {
        &self.io
    }

    /// The backend's page size in bytes.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The capacity in unpinned pages.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.config.capacity()
    }

    /// Pins page `no`, reading it from the backend if it is not cached.
    ///
    /// Concurrent callers missing on the same page share one read. Errors: [`Error::Read`] when
    /// the read fails; [`Error::WriteBack`] when making room needed a write-back that failed and
    /// no other page could be evicted instead; [`Error::PreviousIo`] for a miss after a failed
    /// sync.
    pub fn get(&self, no: u64) -> Result<PageRef<'_>> {
        self.fetch(no, Fill::Read)
    }

    /// Pins page `no` for a caller that will overwrite it: if it is not cached it is *not* read
    /// from the backend but starts zero-filled. If it is cached, this is [`get`](Self::get).
    ///
    /// The zeros are not content: the page is clean until a write guard is taken (or
    /// [`PageRef::mark_dirty`] is called), and until then a [`get`](Self::get) of the page —
    /// while the overwrite pin lives or after — reads the backend's bytes into it first. So a
    /// caller that fails before writing hides nothing and loses nothing, whatever the cache
    /// pressure.
    ///
    /// That read-in needs the page to itself: a `get` of an unwritten overwrite page waits
    /// until no guard of it is held. As with guards, a thread that holds a guard of such a page
    /// and calls `get` of the same page waits for itself; write (or drop the guard) first.
    pub fn get_for_overwrite(&self, no: u64) -> Result<PageRef<'_>> {
        self.fetch(no, Fill::Zero)
    }

    /// Whether a sync has failed, after which the cache refuses every operation that would
    /// touch the backend with [`Error::PreviousIo`] (see [`flush`](Self::flush)).
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.state.lock().poisoned.is_some()
    }

    /// Whether page `no` is resident (cached, or being read in).
    #[must_use]
    pub fn contains(&self, no: u64) -> bool {
        self.state.lock().lru.contains(no)
    }

    /// A snapshot of the counters. Walks the resident pages, so it costs O(cached pages).
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let st = self.state.lock();
        let (mut pinned, mut dirty) = (0, 0);
        for frame in st.lru.values() {
            pinned += usize::from(frame.pins.load(Relaxed) > 0);
            dirty += usize::from(frame.dirty.load(Relaxed));
        }
        CacheStats {
            hits: st.hits,
            misses: st.misses,
            evictions: st.evictions,
            write_backs: st.write_backs,
            failed_write_backs: st.failed_write_backs,
            flushed: st.flushed,
            pinned,
            dirty,
            cached: st.lru.len(),
        }
    }

    /// Writes every dirty page to the backend, in ascending page order and in batches of
    /// [`CacheConfig::with_flush_batch`] pages, then syncs the backend. When it returns `Ok`,
    /// every write made before the call is durable.
    ///
    /// When a *write* fails, nothing is lost: every page this flush had not yet made durable is
    /// dirty again, and a later flush retries ([`Error::Flush`] with the batch's page).
    ///
    /// When the *sync* fails ([`Error::Flush`] with no page), the cache is poisoned: on Linux a
    /// failed `fsync` may already have dropped pages whose write-back failed, among them pages
    /// that eviction wrote back and the cache no longer holds, so no retry can know what
    /// reached the disk. Every later flush, miss, write-back and truncate returns
    /// [`Error::PreviousIo`]; pages still cached can be read. Recover as from a crash: drop the
    /// cache, reopen the backend from its last good commit and build a new cache.
    ///
    /// A flush waits for write guards on dirty pages to be dropped; do not call it while the
    /// same thread holds a [`PageWriteGuard`]. Read guards are fine: the flush reads pages
    /// without queueing behind a writer that waits for the caller's own read guard.
    pub fn flush(&self) -> Result<()> {
        let _serial = self.flush_lock.lock();
        let mut frames: Vec<Arc<Frame>> = {
            let mut st = self.state.lock();
            st.refuse_if_poisoned()?;
            let dirty: Vec<Arc<Frame>> = st
                .lru
                .values()
                .filter(|f| f.dirty.load(Acquire))
                .cloned()
                .collect();
            for frame in &dirty {
                st.pin(frame);
            }
            dirty
        };
        frames.sort_unstable_by_key(|f| f.no);
        let pins = PinSet(&frames);

        let ps = self.page_size;
        let mut batch = vec![0u8; ps * self.config.flush_batch().min(frames.len())];
        let written = frames
            .chunks(self.config.flush_batch())
            .try_for_each(|chunk| {
                for (frame, buf) in chunk.iter().zip(batch.chunks_mut(ps)) {
                    // Copy under the read lock and mark clean under it: a write after this
                    // sets `dirty` again and is caught by the next flush. `read_recursive`
                    // does not queue behind a waiting writer, so a caller holding a read guard
                    // of this page while another thread waits to write it cannot deadlock.
                    let _read = frame.lock.read_recursive();
                    // SAFETY: the frame is pinned and filled (it is dirty, so it was written
                    // through a guard or a pinned pointer), so `bytes()` is its `len`-byte
                    // buffer; the read lock excludes guards that write, and a block cache
                    // writing through `as_ptr` never runs during a flush (its contract).
                    buf.copy_from_slice(unsafe { frame.slice() });
                    frame.dirty.store(false, Release);
                }
                let pages: Vec<(u64, &[u8])> = chunk
                    .iter()
                    .zip(batch.chunks(ps))
                    .map(|(f, buf)| (f.no, buf))
                    .collect();
                self.io.write_pages(&pages).map_err(|source| Error::Flush {
                    page: Some(chunk[0].no),
                    source: Arc::new(source),
                })?;
                for frame in chunk {
                    frame.write_back_failed.store(false, Relaxed);
                }
                Ok(())
            });
        let result = written.and_then(|()| {
            self.syncs_begun.fetch_add(1, SeqCst);
            let synced = self.io.sync().map_err(|source| {
                let source = Arc::new(source);
                let mut st = self.state.lock();
                st.poisoned.get_or_insert_with(|| Arc::clone(&source));
                self.poisoned.store(true, SeqCst);
                Error::Flush { page: None, source }
            });
            self.syncs_ended.fetch_add(1, SeqCst);
            synced
        });
        if result.is_err() {
            // Nothing this flush wrote is known to be durable: all of it is dirty again.
            for frame in &frames {
                frame.dirty.store(true, Release);
            }
        } else {
            self.state.lock().flushed += frames.len() as u64;
        }
        drop(pins);
        result
    }

    /// Shrinks (or grows) the backend to `num_pages` pages and drops every cached page at or
    /// past the new end, dirty or not: their contents are discarded.
    ///
    /// Fails with [`Error::Pinned`] if such a page is pinned (nothing changes), and with
    /// [`Error::Truncate`] if the backend fails. A failed backend truncate may have cut any part
    /// of what it was asked to (see [`PageIo::truncate`]), so the cached pages it concerned are
    /// put back *dirty*: the next flush writes them again, and no cached page stands for bytes
    /// the backend may have dropped. Callers must not fetch pages at or past the new end while
    /// this runs. Like a write, the new size is durable after the next flush.
    pub fn truncate(&self, num_pages: u64) -> Result<()> {
        // Out of the index first, so no eviction writes one of them back past the new end while
        // the backend is being cut; put back if the backend fails.
        let doomed: Vec<Arc<Frame>> = {
            let mut st = self.state.lock();
            st.refuse_if_poisoned()?;
            let doomed: Vec<Arc<Frame>> = st
                .lru
                .values()
                .filter(|f| f.no >= num_pages)
                .cloned()
                .collect();
            if let Some(pinned) = doomed.iter().find(|f| f.pins.load(Acquire) > 0) {
                return Err(Error::Pinned { page: pinned.no });
            }
            for frame in &doomed {
                st.lru.remove(frame.no);
            }
            doomed
        };
        if let Err(source) = self.io.truncate(num_pages) {
            let mut st = self.state.lock();
            for frame in doomed {
                if !st.lru.contains(frame.no) {
                    // Unpinned, so filled. A zero-filled frame nobody wrote stands for whatever
                    // the backend holds now; any other is written again by the next flush.
                    if frame.status.load(Acquire) == READY {
                        frame.dirty.store(true, Release);
                    }
                    st.lru.insert(frame.no, frame);
                }
            }
            return Err(Error::Truncate { num_pages, source });
        }
        Ok(())
    }

    fn fetch(&self, no: u64, fill: Fill) -> Result<PageRef<'_>> {
        // A victim this miss wrote back and evicted: its buffer is reused for the new page.
        let mut written_back = None;
        // Pages this miss tried as a last resort, and the first such failure.
        let mut tried = Vec::new();
        let mut stuck = None;
        let mut st = self.state.lock();
        loop {
            // The status load is the first touch of the frame's cache line: done before the
            // recency bookkeeping's stores and the pin's locked add (which waits for those
            // stores), the line's miss overlaps theirs. READY is final, so reading it before the
            // pin is as good as after.
            if let Some((frame, ready)) = st.lru.touch_with(no, |f| f.status.load(Acquire) == READY)
            {
                // SAFETY: the frame is in the index and is pinned below, before the state lock
                // is released.
                let frame = unsafe { self.attach(frame) };
                st.pin(frame);
                st.hits += 1;
                drop(st);
                if ready {
                    return Ok(PageRef::new(frame));
                }
                return self.wait_ready(frame, fill);
            }
            st.refuse_if_poisoned()?;
            st.sweep_graveyard();
            match st.make_room(self.config.capacity(), &tried) {
                Room::Stuck => {
                    return Err(stuck.expect("a page was tried before the miss got stuck"));
                }
                Room::WriteBack {
                    victim,
                    last_resort,
                } => {
                    // Read-lock the victim before letting go of the state lock, so that a caller
                    // who pins it from now on and takes a write guard waits for the write-back
                    // to finish (and cannot slip a change in between the write and the clean
                    // mark). This cannot block: the victim is unpinned, so no guard is held on
                    // it, and flushes only read-lock.
                    // SAFETY: the victim is in the index and `make_room` pinned it.
                    let data = unsafe { self.attach(&victim) }.lock.read_recursive();
                    drop(st);
                    let victim_no = victim.no;
                    let (relocked, outcome) = self.write_back(victim, data);
                    st = relocked;
                    match outcome {
                        WriteBack::Evicted(frame) => written_back = Some(frame),
                        WriteBack::Kept => {}
                        WriteBack::Failed(source) => {
                            if last_resort {
                                // The first (least recently used) failure is the one reported.
                                tried.push(victim_no);
                                stuck.get_or_insert(Error::WriteBack {
                                    page: victim_no,
                                    source,
                                });
                            }
                        }
                    }
                    // The lock was released: look the page up again before inserting it.
                }
                Room::Made(mut evicted) => {
                    let new = Arc::new(Frame::new(no, self.page_size));
                    // SAFETY: the frame goes into the index and is pinned below, under this
                    // hold of the state lock.
                    let frame = unsafe { self.attach(&new) };
                    // The lock is new and unshared: this cannot block. Holding it from before
                    // the frame is published makes every other lookup wait for the fill.
                    let data = frame.lock.write();
                    st.pin(frame);
                    st.misses += 1;
                    st.lru.insert(no, new);
                    drop(st);
                    evicted.extend(written_back);
                    let buf = self.page_buffer(evicted, fill);
                    let filled = self.fill(frame, buf, fill);
                    drop(data);
                    return match filled {
                        Ok(()) => Ok(PageRef::new(frame)),
                        Err(e) => {
                            frame.unpin();
                            Err(e)
                        }
                    };
                }
            }
        }
    }

    /// Borrows a frame for as long as the cache is borrowed.
    ///
    /// # Safety
    ///
    /// The frame must be kept alive by an `Arc` in the index or the graveyard, and be pinned by
    /// the caller (or be about to be, under the same hold of the state lock) for as long as the
    /// returned reference is used: the cache drops its `Arc` only after taking the frame out of
    /// both with no pins left, so only a pin keeps the reference valid.
    #[allow(
        clippy::unused_self,
        reason = "`self` is what the returned lifetime borrows"
    )]
    unsafe fn attach<'a>(&'a self, frame: &Arc<Frame>) -> &'a Frame {
        // SAFETY: the index or graveyard (owned by `self`, which outlives 'a) holds an `Arc`
        // to this frame until its pins drop to zero, and the caller pins it before releasing
        // the state lock (this function's contract); the `PageRef` that carries the reference
        // holds that pin for as long as it uses it. An `Arc`'s pointee never moves, and frames
        // are only shared (`&`).
        unsafe { &*Arc::as_ptr(frame) }
    }

    /// A buffer for a new frame: an evicted frame's, when one is free for reuse.
    fn page_buffer(&self, evicted: Vec<Arc<Frame>>, fill: Fill) -> Box<[u8]> {
        let reused = evicted
            .into_iter()
            .filter_map(|f| Arc::try_unwrap(f).ok())
            .filter_map(Frame::into_buffer)
            .find(|b| b.len() == self.page_size);
        match reused {
            Some(mut buf) => {
                if fill == Fill::Zero {
                    buf.fill(0);
                }
                buf
            }
            None => vec![0u8; self.page_size].into_boxed_slice(),
        }
    }

    /// Fills a new frame whose write lock the caller holds, and publishes the outcome.
    fn fill(&self, frame: &Frame, mut buf: Box<[u8]>, fill: Fill) -> Result<()> {
        let (outcome, status) = match fill {
            Fill::Read => {
                let before = self.syncs();
                let read = self
                    .io
                    .read_page(frame.no, &mut buf)
                    .map_err(|source| Error::Read {
                        page: frame.no,
                        source: Arc::new(source),
                    });
                (read.and_then(|()| self.check_read(before)), READY)
            }
            Fill::Zero => (Ok(()), ZEROED),
        };
        frame.install(buf);
        match outcome {
            Ok(()) => {
                frame.status.store(status, Release);
                Ok(())
            }
            Err(e) => {
                let source = match &e {
                    Error::Read { source, .. } => Arc::clone(source),
                    Error::PreviousIo { source } => {
                        frame.refused.store(true, Relaxed);
                        Arc::clone(source)
                    }
                    _ => unreachable!("a fill fails with a read error or a refusal"),
                };
                let _ = frame.error.set(source);
                frame.status.store(FAILED, Release);
                // The caller unpins once it has released the write lock: after the unpin the
                // frame may be freed.
                self.state.lock().remove_failed(frame.no);
                Err(e)
            }
        }
    }

    /// Waits until a frame found resident is filled, and pins it for the caller (who pinned it
    /// already: on error the pin is released). A `get` of a frame zero-filled for an overwrite
    /// and not written reads the backend into it first.
    fn wait_ready<'a>(&'a self, frame: &'a Frame, fill: Fill) -> Result<PageRef<'a>> {
        if frame.status.load(Acquire) == LOADING {
            // The filler holds the write lock until the fill is over.
            drop(frame.lock.read_recursive());
        }
        match frame.status.load(Acquire) {
            FAILED => {
                let source = Arc::clone(
                    frame
                        .error
                        .get()
                        .expect("a failed fill stores its error before publishing FAILED"),
                );
                let err = if frame.refused.load(Relaxed) {
                    Error::PreviousIo { source }
                } else {
                    Error::Read {
                        page: frame.no,
                        source,
                    }
                };
                // Last use of `frame`: once unpinned it may be freed.
                frame.unpin();
                Err(err)
            }
            ZEROED if fill == Fill::Read => match self.read_in(frame) {
                Ok(()) => Ok(PageRef::new(frame)),
                Err(e) => {
                    frame.unpin();
                    Err(e)
                }
            },
            _ => Ok(PageRef::new(frame)),
        }
    }

    /// Reads the backend's page into a pinned frame that was zero-filled for an overwrite and
    /// never written, so that its zeros do not hide the backend's bytes. A write guard taken
    /// meanwhile (the frame is then `READY`) wins: its bytes are the content.
    fn read_in(&self, frame: &Frame) -> Result<()> {
        let _write = frame.lock.write();
        if frame.status.load(Acquire) != ZEROED {
            return Ok(());
        }
        if frame.dirty.load(Acquire) {
            // Written through `as_ptr` and marked dirty: that is the content.
            frame.status.store(READY, Release);
            return Ok(());
        }
        self.state.lock().refuse_if_poisoned()?;
        // SAFETY: the frame is pinned and filled; the write lock excludes every guard, and a
        // layer using a pointer from `as_ptr` into a page zero-filled for overwrite takes a
        // write guard before its first access through it (the `as_ptr` contract), which makes
        // the page `READY`, so no such pointer is in use while the page is `ZEROED`.
        let bytes = unsafe { frame.slice_mut() };
        let before = self.syncs();
        let read = self
            .io
            .read_page(frame.no, bytes)
            .map_err(|source| Error::Read {
                page: frame.no,
                source: Arc::new(source),
            })
            .and_then(|()| self.check_read(before));
        match read {
            Ok(()) => {
                frame.status.store(READY, Release);
                Ok(())
            }
            Err(e) => {
                // Whatever the failed read left: zeros again, still standing for nothing.
                bytes.fill(0);
                Err(e)
            }
        }
    }

    /// Writes a dirty victim back, then evicts it unless it was pinned or dirtied meanwhile.
    /// The caller pinned it and read-locked it under the state lock. Returns with the state
    /// lock held again (the caller goes on with its miss), and what became of the victim.
    ///
    /// A failed write-back marks the page, so eviction passes it over while it has other
    /// victims; the page stays cached and dirty, and the next flush reports the failure.
    fn write_back<'a>(
        &'a self,
        victim: Arc<Frame>,
        data: RwLockReadGuard<'a, ()>,
    ) -> (StateGuard<'a>, WriteBack) {
        // SAFETY: the victim is pinned (by `make_room`) and filled, and the read lock is held:
        // no guard writes it, and no block cache writes through `as_ptr` into an unpinned page.
        let written = self.io.write_page(victim.no, unsafe { victim.slice() });
        if written.is_ok() {
            victim.dirty.store(false, Release);
            victim.write_back_failed.store(false, Relaxed);
        }
        drop(data);
        if let Err(source) = written {
            victim.write_back_failed.store(true, Relaxed);
            victim.unpin();
            let mut st = self.state.lock();
            st.failed_write_backs += 1;
            return (st, WriteBack::Failed(source));
        }
        let mut st = self.state.lock();
        st.write_backs += 1;
        // Only our pin left (nobody can add one: we hold the lock) and still clean.
        let evicted = victim.pins.load(Acquire) == 1 && !victim.dirty.load(Acquire);
        if evicted {
            st.lru.remove(victim.no);
            st.evictions += 1;
        }
        victim.unpin();
        (
            st,
            if evicted {
                WriteBack::Evicted(victim)
            } else {
                WriteBack::Kept
            },
        )
    }

    /// Checks a backend read that just returned: refused ([`Error::PreviousIo`]) if a sync
    /// failed before it returned. `before` are the sync counters read before the read began;
    /// if a sync overlapped the read, this waits for that flush to end first (see the module
    /// docs).
    fn check_read(&self, before: (usize, usize)) -> Result<()> {
        let after = (self.syncs_begun.load(SeqCst), self.syncs_ended.load(SeqCst));
        let overlapped = before.0 != before.1 || after.0 != before.0;
        if overlapped {
            drop(self.flush_lock.lock());
        }
        if self.poisoned.load(SeqCst) {
            return self.state.lock().refuse_if_poisoned();
        }
        Ok(())
    }

    /// The sync counters, read before a backend read (for [`check_read`](Self::check_read)).
    fn syncs(&self) -> (usize, usize) {
        (self.syncs_begun.load(SeqCst), self.syncs_ended.load(SeqCst))
    }
}

/// What became of a victim [`PageCache::write_back`] wrote back.
enum WriteBack {
    /// Written and evicted: its buffer may be reused.
    Evicted(Arc<Frame>),
    /// Written, but pinned or dirtied meanwhile, so it stays.
    Kept,
    /// The write failed; the page stays cached and dirty.
    Failed(pageio::Error),
}

/// Unpins a set of frames on drop (flush's pins, released on every exit path).
struct PinSet<'a>(&'a [Arc<Frame>]);

impl Drop for PinSet<'_> {
    fn drop(&mut self) {
        for frame in self.0 {
            frame.unpin();
        }
    }
}

/// A pinned page: while it lives, the page stays in the cache. Dropping it releases the pin.
///
/// Cloning takes another pin on the same page. Content is reached through [`read`](Self::read)
/// and [`write`](Self::write) guards, which lock the page like a reader-writer lock.
pub struct PageRef<'a> {
    /// Alive while pinned (see `PageCache::attach`); the lifetime ties the pin to the cache.
    frame: &'a Frame,
}

impl<'a> PageRef<'a> {
    /// Wraps a frame the caller pinned.
    fn new(frame: &'a Frame) -> Self {
        Self { frame }
    }

    /// The page number.
    #[must_use]
    pub fn page_no(&self) -> u64 {
        self.frame.no
    }

    /// Shared access to the page's bytes. Blocks while a write guard on the page is held.
    ///
    /// Guards are not reentrant: a thread that holds a guard of a page and asks for another
    /// guard of the same page may wait forever (a write guard waits for every read guard, and
    /// new read guards wait behind a waiting writer).
    #[must_use]
    pub fn read(&self) -> PageReadGuard<'_> {
        let lock = self.frame.lock.read();
        PageReadGuard {
            _lock: lock,
            bytes: self.frame.bytes(),
            len: self.frame.len,
        }
    }

    /// Exclusive access to the page's bytes; marks the page dirty. Blocks while any other guard
    /// on the page is held.
    #[must_use]
    pub fn write(&self) -> PageWriteGuard<'_> {
        let lock = self.frame.lock.write();
        // After the lock: a flush or write-back holding the read lock cannot clear this.
        self.frame.dirty.store(true, Release);
        // A zero-filled page becomes content once someone may write it.
        if self.frame.status.load(Relaxed) == ZEROED {
            self.frame.status.store(READY, Release);
        }
        PageWriteGuard {
            _lock: lock,
            bytes: self.frame.bytes(),
            len: self.frame.len,
        }
    }

    /// Whether the page holds changes not yet written to the backend.
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        self.frame.dirty.load(Acquire)
    }

    /// Marks the page dirty without taking a write guard, for a layer that writes through
    /// [`as_ptr`](Self::as_ptr). Call it after such a write and before the next flush.
    pub fn mark_dirty(&self) {
        self.frame.dirty.store(true, Release);
    }

    /// The address of the page's bytes (`page_size` of them), for layers that manage access to
    /// sub-ranges of pages themselves (the block cache hands out disjoint slices of one page to
    /// several owners at once). Never null.
    ///
    /// The address is stable and valid while this pin, or any other pin of the page, lives;
    /// it is the buffer's one raw root, so pointers derived from it stay valid whatever guards
    /// are taken meanwhile. Getting it is safe; using it is not. The caller must make sure its
    /// reads and writes never race with a [`read`](Self::read) or [`write`](Self::write) guard
    /// of the same page that is dereferenced, nor with [`PageCache::flush`]; and before its
    /// first write it must take (and may at once drop) a write guard: that waits for a
    /// write-back of the page that started before the pin was taken, the only other way the
    /// cache reads a pinned page, and no new one can start while the page is pinned. The write
    /// guard also marks the page dirty.
    ///
    /// A page pinned by [`PageCache::get_for_overwrite`] and not written yet is the one the
    /// cache itself may *write* while it is pinned: a [`PageCache::get`] of it reads the
    /// backend into it. So for such a page the write guard must come before the first *read*
    /// through the pointer too; it makes the zero fill the page's content, and no `get` writes
    /// it after that. (A pin from `get` never needs this: `get` returns the page read in.)
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.frame.bytes().as_ptr()
    }
}

impl Clone for PageRef<'_> {
    fn clone(&self) -> Self {
        // Not a 0 → 1 transition (we hold a pin), so no lock is needed.
        self.frame.pins.fetch_add(1, Relaxed);
        Self::new(self.frame)
    }
}

impl Drop for PageRef<'_> {
    fn drop(&mut self) {
        self.frame.unpin();
    }
}

impl fmt::Debug for PageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageRef")
            .field("page_no", &self.frame.no)
            .field("dirty", &self.is_dirty())
            .finish()
    }
}

/// Shared access to a pinned page's bytes, from [`PageRef::read`].
///
/// The guard holds the page's read lock and its buffer's raw pointer; the slice is made on each
/// dereference, so merely holding a guard makes no reference to the bytes.
pub struct PageReadGuard<'a> {
    _lock: RwLockReadGuard<'a, ()>,
    bytes: NonNull<u8>,
    len: usize,
}

// SAFETY: the guard gives only shared reads of bytes that its read lock keeps from being
// written (and `PageRef::as_ptr` users promise not to write while a guard is used), so sharing
// it between threads is like sharing `&[u8]`.
unsafe impl Sync for PageReadGuard<'_> {}

impl Deref for PageReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `bytes` is the raw root of the pinned page's `len`-byte buffer, alive while
        // the `PageRef` this guard borrows lives; the read lock excludes writing guards.
        unsafe { std::slice::from_raw_parts(self.bytes.as_ptr(), self.len) }
    }
}

impl fmt::Debug for PageReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageReadGuard")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Exclusive access to a pinned page's bytes, from [`PageRef::write`]. The page was marked dirty
/// when the guard was taken. As with [`PageReadGuard`], the slice is made on dereference.
pub struct PageWriteGuard<'a> {
    _lock: RwLockWriteGuard<'a, ()>,
    bytes: NonNull<u8>,
    len: usize,
}

// SAFETY: as for `PageReadGuard`: `&PageWriteGuard` gives only shared reads, and the write lock
// keeps every other guard out.
unsafe impl Sync for PageWriteGuard<'_> {}

impl Deref for PageWriteGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: as in `PageReadGuard::deref`; the write lock excludes every other guard.
        unsafe { std::slice::from_raw_parts(self.bytes.as_ptr(), self.len) }
    }
}

impl DerefMut for PageWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: the buffer is alive as in `deref`; the write lock excludes every other guard,
        // and `&mut self` every other use of this one, so the slice is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.bytes.as_ptr(), self.len) }
    }
}

impl fmt::Debug for PageWriteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageWriteGuard")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
