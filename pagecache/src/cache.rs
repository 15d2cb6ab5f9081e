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

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, OnceLock};

use pageio::PageIo;

use crate::lru::Lru;
use crate::sync::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Mutex, MutexGuard, RwLock, RwLockReadGuard,
    RwLockWriteGuard,
};
use crate::{CacheConfig, CacheStats, Error, Result};

/// Up to this many pin candidates, eviction always counts pins exactly (it is cheap), so the
/// capacity is honoured exactly whenever fewer pages than this are pinned.
const SMALL_PIN_LIST: usize = 64;

/// The frame's content is being filled by the caller that missed; others wait on `data`.
const LOADING: u8 = 0;
/// The frame holds the page.
const READY: u8 = 1;
/// The fill failed; `error` says why. The frame has been (or is being) removed from the index.
const FAILED: u8 = 2;

/// One resident page.
///
/// `repr(C)` with the fields a hit touches first, and 64-byte alignment: together with the
/// `Arc` counts in front, a hit reads and writes one cache line of the frame.
#[repr(C, align(64))]
struct Frame {
    /// Live pins: `PageRef`s plus the temporary pins of an eviction write-back or a flush.
    /// 0 → 1 only under the state lock (see the module docs).
    pins: AtomicUsize,
    /// The page's bytes. Empty until the filler installs the buffer (it holds the write lock
    /// from before the frame is published until the fill is done).
    data: RwLock<Box<[u8]>>,
    /// `LOADING`, `READY` or `FAILED`; changed only by the filler, while it holds `data`'s write
    /// lock, so a waiter that gets a read lock sees the final value.
    status: AtomicU8,
    /// The content is newer than the backend's. Set after taking `data`'s write lock; cleared
    /// only while holding its read lock.
    dirty: AtomicBool,
    /// Whether the frame is on `State::maybe_pinned`. Touched only under the state lock.
    listed: AtomicBool,
    no: u64,
    /// The address of `data`'s buffer, published by the filler with the buffer and unchanged
    /// after; for [`PageRef::as_ptr`].
    ptr: AtomicPtr<u8>,
    /// Set by the filler before `status` becomes `FAILED`.
    error: OnceLock<Arc<pageio::Error>>,
}

impl Frame {
    fn new(no: u64) -> Self {
        Self {
            no,
            pins: AtomicUsize::new(0),
            dirty: AtomicBool::new(false),
            status: AtomicU8::new(LOADING),
            error: OnceLock::new(),
            listed: AtomicBool::new(false),
            data: RwLock::new(Box::default()),
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Releases one pin. The caller must not touch the frame afterwards unless it holds
    /// another pin or an `Arc` to it: an unpinned frame outside the index may be freed at once.
    fn unpin(&self) {
        self.pins.fetch_sub(1, Release);
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
    flushed: u64,
}

/// The state lock, held.
type StateGuard<'a> = MutexGuard<'a, State>;

/// What a miss must do before it can insert its page.
enum Room {
    /// There is room. These clean frames were evicted for it; their buffers can be reused.
    Made(Vec<Arc<Frame>>),
    /// This dirty frame (pinned for the purpose) must be written back first.
    WriteBack(Arc<Frame>),
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
    /// remain, so that the page about to be inserted fits once it is unpinned.
    fn make_room(&mut self, capacity: usize) -> Room {
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
            let Some(victim) = self
                .lru
                .iter_from_lru()
                // Acquire pairs with the Release of the last unpin, so a write made under that
                // pin is visible in `dirty` below.
                .find(|(_, f)| f.pins.load(Acquire) == 0)
                .map(|(_, f)| Arc::clone(f))
            else {
                break;
            };
            if victim.dirty.load(Acquire) {
                self.pin(&victim);
                return Room::WriteBack(victim);
            }
            self.lru.remove(victim.no);
            self.evictions += 1;
            evicted.push(victim);
        }
        Room::Made(evicted)
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
    /// Zero it without reading (`get_for_overwrite`); it stays clean until written.
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
    /// flush had already marked clean reach the backend before its own sync.
    flush_lock: Mutex<()>,
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
                flushed: 0,
            }),
            flush_lock: Mutex::new(()),
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
    /// the read fails, [`Error::WriteBack`] when making room needed a write-back that failed.
    pub fn get(&self, no: u64) -> Result<PageRef<'_>> {
        self.fetch(no, Fill::Read)
    }

    /// Pins page `no` for a caller that will overwrite it: if it is not cached it is *not* read
    /// from the backend but starts zero-filled. If it is cached, this is [`get`](Self::get).
    ///
    /// The zeros are not a change: the page is clean until a write guard is taken (or
    /// [`PageRef::mark_dirty`] is called). So a caller that fails before writing loses nothing;
    /// if the page is evicted unwritten, the backend's content is what a later `get` reads.
    pub fn get_for_overwrite(&self, no: u64) -> Result<PageRef<'_>> {
        self.fetch(no, Fill::Zero)
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
    /// On error nothing is lost: every page this flush had not yet made durable is dirty again,
    /// and a later flush retries. Pages are not evicted.
    ///
    /// A flush waits for write guards on dirty pages to be dropped; do not call it while the
    /// same thread holds a [`PageWriteGuard`].
    ///
    /// If the backend's sync fails, pages that an *eviction* wrote back since the last
    /// successful flush may not be durable either, and they are no longer in the cache to be
    /// rewritten. As with `fsync` failures generally, a storage engine should treat a failed
    /// sync as fatal for the durability of the file and recover from its own log.
    pub fn flush(&self) -> Result<()> {
        let _serial = self.flush_lock.lock();
        let mut frames: Vec<Arc<Frame>> = {
            let mut st = self.state.lock();
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
        let result = frames
            .chunks(self.config.flush_batch())
            .try_for_each(|chunk| {
                for (frame, buf) in chunk.iter().zip(batch.chunks_mut(ps)) {
                    // Copy under the read lock and mark clean under it: a write after this
                    // sets `dirty` again and is caught by the next flush.
                    let data = frame.data.read();
                    buf.copy_from_slice(&data);
                    frame.dirty.store(false, Release);
                }
                let pages: Vec<(u64, &[u8])> = chunk
                    .iter()
                    .zip(batch.chunks(ps))
                    .map(|(f, buf)| (f.no, buf))
                    .collect();
                self.io.write_pages(&pages).map_err(|source| Error::Flush {
                    page: Some(chunk[0].no),
                    source,
                })
            })
            .and_then(|()| {
                self.io
                    .sync()
                    .map_err(|source| Error::Flush { page: None, source })
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
    /// Fails with [`Error::Pinned`] if such a page is pinned, and with [`Error::Truncate`] if
    /// the backend refuses; either way nothing changes. Callers must not fetch pages at or past
    /// the new end while this runs. Like a write, the new size is durable after the next flush.
    pub fn truncate(&self, num_pages: u64) -> Result<()> {
        // Out of the index first, so no eviction writes one of them back past the new end while
        // the backend is being cut; put back if the backend refuses.
        let doomed: Vec<Arc<Frame>> = {
            let mut st = self.state.lock();
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
        let mut st = self.state.lock();
        loop {
            // The status load is the first touch of the frame's cache line: done before the
            // recency bookkeeping's stores and the pin's locked add (which waits for those
            // stores), the line's miss overlaps theirs. READY is final, so reading it before the
            // pin is as good as after.
            if let Some((frame, ready)) = st.lru.touch_with(no, |f| f.status.load(Acquire) == READY)
            {
                let frame = self.attach(frame);
                st.pin(frame);
                st.hits += 1;
                drop(st);
                if ready {
                    return Ok(PageRef::new(frame));
                }
                return Self::wait_ready(frame);
            }
            st.sweep_graveyard();
            match st.make_room(self.config.capacity()) {
                Room::WriteBack(victim) => {
                    // Read-lock the victim before letting go of the state lock, so that a caller
                    // who pins it from now on and takes a write guard waits for the write-back
                    // to finish (and cannot slip a change in between the write and the clean
                    // mark). This cannot block: the victim is unpinned, so no guard is held on
                    // it, and flushes only read-lock.
                    let data = self.attach(&victim).data.read();
                    drop(st);
                    let (relocked, evicted) = self.write_back(victim, data)?;
                    st = relocked;
                    written_back = evicted.or(written_back);
                    // The lock was released: look the page up again before inserting it.
                }
                Room::Made(mut evicted) => {
                    let new = Arc::new(Frame::new(no));
                    let frame = self.attach(&new);
                    // The lock is new and unshared: this cannot block. Holding it from before
                    // the frame is published makes every other lookup wait for the fill.
                    let mut data = frame.data.write();
                    st.pin(frame);
                    st.misses += 1;
                    st.lru.insert(no, new);
                    drop(st);
                    evicted.extend(written_back);
                    let buf = self.page_buffer(evicted, fill);
                    let filled = self.fill(frame, &mut data, buf, fill);
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
    /// Sound only for a frame that is pinned (or about to be, under the same hold of the state
    /// lock) and kept alive by an `Arc` in the index or the graveyard: the cache drops its `Arc`
    /// only after taking the frame out of both with no pins left, so a pin keeps it alive.
    #[allow(
        clippy::unused_self,
        reason = "`self` is what the returned lifetime borrows"
    )]
    fn attach<'a>(&'a self, frame: &Arc<Frame>) -> &'a Frame {
        // SAFETY: the index or graveyard (owned by `self`, which outlives 'a) holds an `Arc`
        // to this frame until its pins drop to zero, and the caller pins it before releasing
        // the state lock; the `PageRef` that carries the reference holds that pin for as long
        // as it uses it. An `Arc`'s pointee never moves, and frames are only shared (`&`).
        unsafe { &*Arc::as_ptr(frame) }
    }

    /// A buffer for a new frame: an evicted frame's, when one is free for reuse.
    fn page_buffer(&self, evicted: Vec<Arc<Frame>>, fill: Fill) -> Box<[u8]> {
        let reused = evicted
            .into_iter()
            .filter_map(|f| Arc::try_unwrap(f).ok())
            .map(|f| f.data.into_inner())
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
    fn fill(
        &self,
        frame: &Frame,
        data: &mut RwLockWriteGuard<'_, Box<[u8]>>,
        mut buf: Box<[u8]>,
        fill: Fill,
    ) -> Result<()> {
        let outcome = match fill {
            Fill::Read => self.io.read_page(frame.no, &mut buf),
            Fill::Zero => Ok(()),
        };
        **data = buf;
        frame.ptr.store(data.as_mut_ptr(), Release);
        match outcome {
            Ok(()) => {
                frame.status.store(READY, Release);
                Ok(())
            }
            Err(e) => {
                let err = Arc::new(e);
                let _ = frame.error.set(Arc::clone(&err));
                frame.status.store(FAILED, Release);
                // The caller unpins once it has released the write lock: after the unpin the
                // frame may be freed.
                self.state.lock().remove_failed(frame.no);
                Err(Error::Read {
                    page: frame.no,
                    source: err,
                })
            }
        }
    }

    /// Waits until a frame found resident is filled, and pins it for the caller.
    fn wait_ready(frame: &Frame) -> Result<PageRef<'_>> {
        if frame.status.load(Acquire) != READY {
            // The filler holds the write lock until the fill is over.
            drop(frame.data.read());
            if frame.status.load(Acquire) == FAILED {
                let err = Error::Read {
                    page: frame.no,
                    source: Arc::clone(
                        frame
                            .error
                            .get()
                            .expect("a failed fill stores its error before publishing FAILED"),
                    ),
                };
                // Last use of `frame`: once unpinned it may be freed.
                frame.unpin();
                return Err(err);
            }
        }
        Ok(PageRef::new(frame))
    }

    /// Writes a dirty victim back, then evicts it unless it was pinned or dirtied meanwhile.
    /// The caller pinned it and read-locked its data under the state lock. Returns with the state lock held again (the caller
    /// goes on with its miss), and the victim if it was evicted, for its buffer.
    fn write_back<'a>(
        &'a self,
        victim: Arc<Frame>,
        data: RwLockReadGuard<'a, Box<[u8]>>,
    ) -> Result<(StateGuard<'a>, Option<Arc<Frame>>)> {
        let written = self.io.write_page(victim.no, &data);
        if written.is_ok() {
            victim.dirty.store(false, Release);
        }
        drop(data);
        if let Err(source) = written {
            let err = Error::WriteBack {
                page: victim.no,
                source,
            };
            victim.unpin();
            return Err(err);
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
        Ok((st, evicted.then_some(victim)))
    }
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
    #[must_use]
    pub fn read(&self) -> PageReadGuard<'_> {
        PageReadGuard(self.frame.data.read())
    }

    /// Exclusive access to the page's bytes; marks the page dirty. Blocks while any other guard
    /// on the page is held.
    #[must_use]
    pub fn write(&self) -> PageWriteGuard<'_> {
        let guard = self.frame.data.write();
        // After the lock: a flush or write-back holding the read lock cannot clear this.
        self.frame.dirty.store(true, Release);
        PageWriteGuard(guard)
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
    /// several owners at once).
    ///
    /// The address is stable and valid while this pin, or any other pin of the page, lives.
    /// Getting it is safe; using it is not. The caller must make sure its reads and writes never
    /// race with a [`read`](Self::read) or [`write`](Self::write) guard of the same page, nor
    /// with [`PageCache::flush`]; and before its first write it must take (and may at once
    /// drop) a write guard: that waits for a write-back of the page that started before the pin
    /// was taken, the only other way the cache reads a pinned page, and no new one can start
    /// while the page is pinned. The write guard also marks the page dirty.
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.frame.ptr.load(Acquire)
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
pub struct PageReadGuard<'a>(RwLockReadGuard<'a, Box<[u8]>>);

impl Deref for PageReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PageReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageReadGuard")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// Exclusive access to a pinned page's bytes, from [`PageRef::write`]. The page was marked dirty
/// when the guard was taken.
pub struct PageWriteGuard<'a>(RwLockWriteGuard<'a, Box<[u8]>>);

impl Deref for PageWriteGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for PageWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl fmt::Debug for PageWriteGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageWriteGuard")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}
