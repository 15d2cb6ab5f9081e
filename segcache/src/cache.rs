//! The cache: the index, the budget and eviction, slots, pins, and idle mappings.
//!
//! # Protocol
//!
//! One mutex (`Inner::state`) guards the index, the recency order, the byte counts and the
//! counters. It is held for bookkeeping only: no system call (open, write, sync, link, unlink,
//! map, unmap) and no `.await` happens while it is held. Every step that does I/O first moves
//! its entry into a *transient* state under the lock, does the I/O without it, then settles the
//! entry under the lock again and signals `Inner::settled`:
//!
//! - `Entry::Linking`: a `persist` owns the name and is linking its file into place.
//! - `Entry::Removing`: an eviction or `remove` has unmapped (or is unmapping) the segment and
//!   is unlinking its file; the bytes are already off the books.
//! - `MapSlot::Loading`: a `get` or `persist` holds the two pool handles it needs and is
//!   opening and mapping the file. Waiters for it wait on its event (async) or on `settled`
//!   (the blocking persist path).
//!
//! None of the transient states waits for anything once entered but a blocking-pool thread to
//! run on (the handles are acquired *before* `Loading` is set), so waiting for one to settle
//! cannot deadlock, and the pool's waits never happen while a transient state is held.
//!
//! A segment's mapping lives in an `Arc<Mapping>` shared by the index and every `SegmentRef`.
//! New references are cloned from the index only under the lock; the cache takes a mapping
//! out (to evict, remove, or reclaim an idle one) with `Arc::try_unwrap` under the lock, which
//! succeeds only when no `SegmentRef` holds it. So a pinned segment is never unmapped or
//! unlinked, and a file is unlinked only after its mapping has been dropped.
//!
//! Two things may be waiting for a `SegmentRef` to drop: a task waiting for pool handles (an
//! idle mapping can now be unmapped for it) and an over-budget cache (an unpinned segment can
//! now be evicted). The drop decrements the `Arc`, issues a `SeqCst` fence, and checks
//! `Pool::has_waiters` and `Inner::over_budget`; the other sides raise their flag, fence, and
//! then try `try_unwrap`. Either the drop sees the flag or the `try_unwrap` sees the drop.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{self, Write};
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Semaphore;

use crate::format::{FOOTER_LEN, Footer};
use crate::id::IdHashBuilder;
use crate::map::{Expect, MapError, Mapping};
use crate::persist::{CacheDir, Linked, Method, PersistProbe, TempFile};
use crate::pool::{Handles, Pool};
use crate::scan::{self, ScanReport};
use crate::sync::{AtomicBool, Condvar, Mutex, fence};
use crate::{CacheConfig, Error, PersistMode, Result, SegmentId, Stats};

/// A segment in the index.
enum Entry {
    /// Cached and readable.
    Ready(Ready),
    /// A `persist` is linking a file under this name (see the module docs).
    Linking,
    /// The file is being unlinked; the segment is no longer cached.
    Removing,
}

struct Ready {
    /// The data length.
    len: u64,
    /// The disk bytes counted against the budget (`len + FOOTER_LEN`).
    charged: u64,
    /// Its index in `State::recency`.
    slot: usize,
    /// Whether the data checksum has been checked (or the data was written by us).
    verified: bool,
    map: MapSlot,
}

enum MapSlot {
    Unmapped,
    /// Being mapped; the semaphore (no permits) is closed when the attempt settles.
    Loading(Arc<Semaphore>),
    Mapped(Arc<Mapping>),
}

/// Everything the state lock guards.
struct State {
    entries: HashMap<SegmentId, Entry, IdHashBuilder>,
    /// One slot per `Ready` entry (`Ready::slot`): its id and the stamp of its last use. A free
    /// slot (on `free_slots`) has stamp 0; stamps start at 1.
    recency: Vec<(SegmentId, u64)>,
    free_slots: Vec<usize>,
    /// `(slot, stamp)` per use, oldest first: the exact LRU order. An item is current when its
    /// slot still carries that stamp; the rest are stale, skipped, and compacted away when they
    /// dominate (a dense array read per item, no hashing).
    order: VecDeque<(usize, u64)>,
    clock: u64,
    /// Ready entries whose map slot is `Mapped` (pinned or idle).
    mapped: HashSet<SegmentId, IdHashBuilder>,
    /// Disk bytes of `Ready` entries.
    used: u64,
    /// Disk bytes of live reservations (slots).
    reserved: u64,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    hits: u64,
    misses: u64,
    persisted: u64,
    already_present: u64,
    evictions: u64,
    evicted_bytes: u64,
    mappings_reclaimed: u64,
    corrupt: u64,
    unlink_failures: u64,
}

impl State {
    /// Drops stale items from `order` when they outnumber current ones by far; O(1) amortized
    /// per use.
    fn maybe_compact(&mut self) {
        if self.order.len() > 4 * self.entries.len() + 1024 {
            let recency = &self.recency;
            self.order.retain(|&(slot, stamp)| recency[slot].1 == stamp);
        }
    }

    /// Whether an `order` item is current.
    fn is_current(&self, (slot, stamp): (usize, u64)) -> bool {
        self.recency[slot].1 == stamp
    }

    /// The stamp of a `Ready` entry's last use (larger is more recent).
    fn stamp_of(&self, ready: &Ready) -> u64 {
        self.recency[ready.slot].1
    }

    /// Looks `id` up and, if it is `Ready`, marks it as just used: one hash lookup.
    fn touch(&mut self, id: SegmentId) -> Option<&mut Ready> {
        self.maybe_compact();
        let Some(Entry::Ready(r)) = self.entries.get_mut(&id) else {
            return None;
        };
        self.clock += 1;
        self.recency[r.slot].1 = self.clock;
        self.order.push_back((r.slot, self.clock));
        Some(r)
    }

    /// Inserts a `Ready` entry as the most recently used and counts its bytes.
    fn insert_ready(&mut self, id: SegmentId, mut ready: Ready) {
        self.maybe_compact();
        self.clock += 1;
        let slot = if let Some(slot) = self.free_slots.pop() {
            self.recency[slot] = (id, self.clock);
            slot
        } else {
            self.recency.push((id, self.clock));
            self.recency.len() - 1
        };
        ready.slot = slot;
        self.order.push_back((slot, self.clock));
        self.used += ready.charged;
        if matches!(ready.map, MapSlot::Mapped(_)) {
            self.mapped.insert(id);
        }
        self.entries.insert(id, Entry::Ready(ready));
    }

    /// Takes a `Ready` entry out of the books and leaves `Removing` in its place; returns the
    /// bytes it freed. The caller has taken its mapping out (or it had none).
    fn mark_removing(&mut self, id: SegmentId) -> Option<u64> {
        let entry = self.entries.get_mut(&id)?;
        let Entry::Ready(r) = entry else {
            return None;
        };
        let (charged, slot) = (r.charged, r.slot);
        *entry = Entry::Removing;
        self.recency[slot].1 = 0;
        self.free_slots.push(slot);
        self.used -= charged;
        self.mapped.remove(&id);
        Some(charged)
    }

    fn total(&self) -> u64 {
        self.used + self.reserved
    }
}

/// What `persist` found when it went to claim a segment's name.
enum Claim {
    /// The name is ours to link (the entry is `Linking`).
    Name,
    /// The segment is cached and mapped: pinned here.
    Cached(Arc<Mapping>),
    /// The segment is cached but unmapped; the guard owns its `Loading` slot.
    MapCached(LoadGuard, u64, bool),
}

/// What the first look of a `get` found.
enum Lookup {
    Miss,
    Hit(Arc<Mapping>),
    /// Cached but not mapped.
    Unmapped,
}

/// What a mapping attempt found under the lock.
enum MapStep {
    Hit(Arc<Mapping>),
    Absent,
    Wait(Arc<Semaphore>),
    Load(LoadGuard, u64, bool),
}

/// The shared part of a [`SegmentCache`].
pub(crate) struct Inner {
    dir: Arc<CacheDir>,
    config: CacheConfig,
    method: Method,
    probe: PersistProbe,
    pool: Pool,
    /// The watermarks in bytes.
    high: u64,
    low: u64,
    /// The index, recency order, byte counts and counters (see [`State`]). Bookkeeping only:
    /// never held across a system call or an `.await`.
    state: Mutex<State>,
    /// Signalled, with `state` held, whenever an entry leaves a transient state.
    settled: Condvar,
    /// Whether the cache was above its high watermark at the last eviction attempt (pinned
    /// segments kept it there). Set under `state`; read without it by `SegmentRef` drops,
    /// which then evict (see the module docs for the fence pairing).
    over_budget: AtomicBool,
}

/// Segments taken out of the index for eviction or removal: on drop (or `finish`), their
/// mappings are dropped (unmapped), then their files unlinked, then their `Removing` entries
/// cleared.
struct Evicted {
    inner: Arc<Inner>,
    victims: Vec<(SegmentId, Option<Mapping>)>,
}

impl Evicted {
    fn is_empty(&self) -> bool {
        self.victims.is_empty()
    }

    /// Unmaps, unlinks and settles; returns the first unlink error (other than "already gone").
    fn finish(&mut self) -> Option<io::Error> {
        if self.victims.is_empty() {
            return None;
        }
        let victims = std::mem::take(&mut self.victims);
        let mut ids = Vec::with_capacity(victims.len());
        for (id, mapping) in victims {
            // Unmap before unlinking: the file never disappears under a live mapping.
            drop(mapping);
            ids.push(id);
        }
        let mut first_error = None;
        let mut failures = 0;
        for id in &ids {
            match self.inner.dir.unlink(&id.file_name()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let mut st = self.inner.state.lock();
        for id in &ids {
            if matches!(st.entries.get(id), Some(Entry::Removing)) {
                st.entries.remove(id);
            }
        }
        st.counters.unlink_failures += failures;
        self.inner.settled.notify_all();
        first_error
    }
}

impl Drop for Evicted {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Bytes reserved against the budget for a slot; returned on drop unless released earlier
/// under the lock (when the segment is published in its place).
struct Reservation {
    inner: Arc<Inner>,
    charged: u64,
}

impl Reservation {
    /// Returns the bytes with the lock already held (the caller then counts the segment as
    /// used, or drops it).
    fn release(mut self, st: &mut State) {
        st.reserved -= self.charged;
        self.charged = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.charged > 0 {
            self.inner.state.lock().reserved -= self.charged;
        }
    }
}

/// A slot's temporary file and its two pool handles (the descriptor, and the mapping `persist`
/// makes). Field order matters: on drop the descriptor is closed (and a named temporary file
/// unlinked) before the handles return to the pool, so the pool never counts fewer handles
/// than there are open descriptors.
struct Writer {
    temp: TempFile,
    handles: Handles,
}

/// Owns a `Loading` map slot: when dropped before [`disarm`](Self::disarm), puts the slot
/// back to `Unmapped`. Always closes the event on drop, waking the waiters to look again.
struct LoadGuard {
    inner: Arc<Inner>,
    id: SegmentId,
    event: Arc<Semaphore>,
    armed: bool,
}

impl LoadGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.inner.state.lock();
            if let Some(Entry::Ready(r)) = st.entries.get_mut(&self.id)
                && matches!(&r.map, MapSlot::Loading(e) if Arc::ptr_eq(e, &self.event))
            {
                r.map = MapSlot::Unmapped;
            }
            self.inner.settled.notify_all();
        }
        self.event.close();
    }
}

/// Owns a `Linking` entry: when dropped before being disarmed, removes it.
struct LinkClaim<'a> {
    inner: &'a Inner,
    id: SegmentId,
    armed: bool,
}

impl Drop for LinkClaim<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.inner.state.lock();
            if matches!(st.entries.get(&self.id), Some(Entry::Linking)) {
                st.entries.remove(&self.id);
            }
            self.inner.settled.notify_all();
        }
    }
}

/// Runs blocking I/O off the async runtime (on tokio's blocking pool when there is a runtime,
/// inline otherwise). The closure runs to completion even if the awaiting future is dropped,
/// so the steps inside it are never cut in half by cancellation.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|source| Error::Task { source }),
        Err(_) => Ok(f()),
    }
}

impl Inner {
    /// Opens the directory, probes, scans and loads; see [`SegmentCache::open`].
    fn open(config: CacheConfig) -> Result<(Arc<Self>, ScanReport)> {
        let (dir, dir_mode_fixed) = CacheDir::open(config.dir())?;
        let dir = Arc::new(dir);
        let probe = PersistProbe::run(&dir);
        let method = probe.choose(config.persist_mode())?;
        let scanned = scan::scan(&dir, config.verify_data_on_scan(), config.max_handles())?;
        let (high, low) = config.watermark_bytes();
        let inner = Arc::new(Self {
            pool: Pool::new(config.max_handles()),
            dir,
            method,
            probe,
            high,
            low,
            state: Mutex::new(State {
                entries: HashMap::default(),
                recency: Vec::new(),
                free_slots: Vec::new(),
                order: VecDeque::new(),
                clock: 0,
                mapped: HashSet::default(),
                used: 0,
                reserved: 0,
                counters: Counters::default(),
            }),
            settled: Condvar::new(),
            over_budget: AtomicBool::new(false),
            config,
        });
        let verified = inner.config.verify_data_on_scan();
        let mut evicted = {
            let mut st = inner.state.lock();
            st.entries.reserve(scanned.found.len());
            st.recency.reserve(scanned.found.len());
            // Least recently used first, so the recency order matches the files' times.
            for found in &scanned.found {
                st.insert_ready(
                    found.id,
                    Ready {
                        len: found.len,
                        charged: found.charged,
                        slot: 0,
                        verified,
                        map: MapSlot::Unmapped,
                    },
                );
            }
            inner.evict_to(&mut st, inner.low, inner.high)
        };
        let evicted_ids: Vec<SegmentId> = evicted.victims.iter().map(|(id, _)| *id).collect();
        let _ = evicted.finish();
        let (loaded, loaded_bytes, evicted_bytes) = {
            let st = inner.state.lock();
            // The evicted entries are settled: everything left is `Ready`, and every eviction
            // so far was the scan's.
            (st.entries.len(), st.used, st.counters.evicted_bytes)
        };
        let report = ScanReport {
            loaded,
            loaded_bytes,
            temp_files_deleted: scanned.temp_files_deleted,
            rejected: scanned.rejected,
            unexpected: scanned.unexpected,
            evicted: evicted_ids,
            evicted_bytes,
            dir_mode_fixed,
            probe: inner.probe,
            persist_mode: inner.method.mode(),
        };
        Ok((inner, report))
    }

    /// If the cache is above `trigger`, evicts least-recently-used unpinned segments until it
    /// is at or below `target` (or nothing unpinned is left). Only bookkeeping happens here;
    /// the returned [`Evicted`] does the unmapping and unlinking once the lock is released.
    fn evict_to(self: &Arc<Self>, st: &mut State, target: u64, trigger: u64) -> Evicted {
        let mut evicted = Evicted {
            inner: Arc::clone(self),
            victims: Vec::new(),
        };
        if st.total() <= trigger {
            self.over_budget.store(false, Ordering::SeqCst);
            return evicted;
        }
        // Raise the flag before looking for unpinned victims: a pin released after the look
        // sees it and evicts (see the module docs).
        self.over_budget.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let mut i = 0;
        while st.total() > target && i < st.order.len() {
            let item = st.order[i];
            i += 1;
            if !st.is_current(item) {
                continue;
            }
            let id = st.recency[item.0].0;
            let Some(Entry::Ready(r)) = st.entries.get_mut(&id) else {
                continue;
            };
            let mapping = match std::mem::replace(&mut r.map, MapSlot::Unmapped) {
                MapSlot::Unmapped => None,
                MapSlot::Loading(event) => {
                    r.map = MapSlot::Loading(event);
                    continue;
                }
                MapSlot::Mapped(arc) => match Arc::try_unwrap(arc) {
                    Ok(mapping) => Some(mapping),
                    Err(arc) => {
                        // Pinned.
                        r.map = MapSlot::Mapped(arc);
                        continue;
                    }
                },
            };
            if let Some(charged) = st.mark_removing(id) {
                st.counters.evictions += 1;
                st.counters.evicted_bytes += charged;
            }
            evicted.victims.push((id, mapping));
        }
        while let Some(&item) = st.order.front() {
            if st.is_current(item) {
                break;
            }
            st.order.pop_front();
        }
        self.over_budget
            .store(st.total() > self.high, Ordering::SeqCst);
        evicted
    }

    /// Evicts down to the low watermark if above the high one; called when a pin is released
    /// while the cache was over budget.
    fn enforce_budget(self: &Arc<Self>) {
        let evicted = {
            let mut st = self.state.lock();
            self.evict_to(&mut st, self.low, self.high)
        };
        drop(evicted);
    }

    /// Unmaps up to `want` idle (unpinned) mappings, least recently used first, returning their
    /// handles to the pool. Returns how many were unmapped.
    fn reclaim_idle(&self, want: usize) -> usize {
        let reclaimed: Vec<Mapping> = {
            let mut st = self.state.lock();
            let mut candidates: Vec<(u64, SegmentId)> = st
                .mapped
                .iter()
                .filter_map(|id| match st.entries.get(id) {
                    Some(Entry::Ready(r)) => match &r.map {
                        MapSlot::Mapped(m) if Arc::strong_count(m) == 1 => {
                            Some((st.stamp_of(r), *id))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            candidates.sort_unstable();
            let mut out = Vec::new();
            for (_, id) in candidates {
                if out.len() == want {
                    break;
                }
                let Some(Entry::Ready(r)) = st.entries.get_mut(&id) else {
                    continue;
                };
                if let MapSlot::Mapped(arc) = std::mem::replace(&mut r.map, MapSlot::Unmapped) {
                    match Arc::try_unwrap(arc) {
                        Ok(mapping) => {
                            out.push(mapping);
                            st.mapped.remove(&id);
                        }
                        Err(arc) => r.map = MapSlot::Mapped(arc),
                    }
                }
            }
            st.counters.mappings_reclaimed += out.len() as u64;
            out
        };
        // Unmapped here, outside the lock; each drop returns a handle to the pool.
        reclaimed.len()
    }

    /// Draws `n` handles from the pool, unmapping idle mappings (LRU first) when it is short.
    /// Fair (FIFO) and cancellable.
    async fn acquire(&self, n: u32) -> Handles {
        if let Some(handles) = self.pool.try_acquire(n) {
            return handles;
        }
        let _waiting = self.pool.register_waiter();
        loop {
            if let Some(handles) = self.pool.try_acquire(n) {
                return handles;
            }
            // Unmap only as many idle mappings as are missing.
            let missing = (n as usize).saturating_sub(self.pool.available()).max(1);
            if self.reclaim_idle(missing) == 0 {
                break;
            }
        }
        self.pool.acquire(n).await
    }

    /// The first look of a `get`: a hit on a mapped segment pins it right here.
    fn lookup(&self, id: SegmentId) -> Lookup {
        let mut st = self.state.lock();
        let found = match st.touch(id) {
            None => Lookup::Miss,
            Some(Ready {
                map: MapSlot::Mapped(m),
                ..
            }) => Lookup::Hit(Arc::clone(m)),
            Some(_) => Lookup::Unmapped,
        };
        if matches!(found, Lookup::Miss) {
            st.counters.misses += 1;
        } else {
            st.counters.hits += 1;
        }
        found
    }

    /// A later look of a `get` that holds the handles for mapping.
    fn map_step(self: &Arc<Self>, id: SegmentId) -> MapStep {
        let mut st = self.state.lock();
        let Some(r) = st.touch(id) else {
            return MapStep::Absent;
        };
        match &r.map {
            MapSlot::Mapped(m) => MapStep::Hit(Arc::clone(m)),
            MapSlot::Loading(event) => MapStep::Wait(Arc::clone(event)),
            MapSlot::Unmapped => {
                let event = Arc::new(Semaphore::new(0));
                r.map = MapSlot::Loading(Arc::clone(&event));
                let guard = LoadGuard {
                    inner: Arc::clone(self),
                    id,
                    event,
                    armed: true,
                };
                MapStep::Load(guard, r.len, r.verified)
            }
        }
    }

    /// Opens and maps a segment whose map slot `guard` owns, with the two `handles` (the
    /// descriptor and the mapping).
    fn load(
        self: &Arc<Self>,
        guard: LoadGuard,
        mut handles: Handles,
        len: u64,
        verified: bool,
    ) -> Result<SegmentRef> {
        let id = guard.id;
        let name = id.file_name();
        let file = match self.dir.open_segment(&name) {
            Ok(file) => file,
            Err(e) => {
                if e.kind() == io::ErrorKind::NotFound {
                    // Deleted behind our back: it is not cached any more.
                    self.forget(guard);
                }
                return Err(Error::io("open segment", self.dir.entry_path(&name), e));
            }
        };
        let Some(map_handle) = handles.split_one() else {
            return Err(Error::io(
                "map segment",
                self.dir.entry_path(&name),
                io::Error::other("mapping needs two pool handles"),
            ));
        };
        let expect = Expect {
            id,
            len: Some(len),
            euid: self.dir.euid(),
            verify_data: !verified && self.config.verify_data_on_map(),
        };
        let mapped = Mapping::map(&file, &expect, map_handle);
        // The descriptor is closed before its handle goes back: the mapping keeps its own.
        drop(file);
        drop(handles);
        match mapped {
            Ok(mapping) => Ok(self.install(guard, mapping)),
            Err(e) => Err(self.map_failed(guard, e)),
        }
    }

    /// Publishes a new mapping in the slot `guard` owns and pins it for the caller.
    fn install(self: &Arc<Self>, guard: LoadGuard, mapping: Mapping) -> SegmentRef {
        let mapping = Arc::new(mapping);
        {
            let mut st = self.state.lock();
            let id = guard.id;
            if let Some(Entry::Ready(r)) = st.entries.get_mut(&id)
                && matches!(&r.map, MapSlot::Loading(e) if Arc::ptr_eq(e, &guard.event))
            {
                r.map = MapSlot::Mapped(Arc::clone(&mapping));
                r.verified = true;
                st.mapped.insert(id);
            }
            self.settled.notify_all();
        }
        guard.disarm();
        SegmentRef::new(mapping, self)
    }

    /// Settles a failed mapping attempt and turns the failure into the error to return.
    fn map_failed(self: &Arc<Self>, guard: LoadGuard, error: MapError) -> Error {
        let id = guard.id;
        match error {
            MapError::Io(op, e) => {
                // The guard puts the slot back to `Unmapped`: a later `get` tries again.
                drop(guard);
                Error::io(op, self.dir.entry_path(&id.file_name()), e)
            }
            MapError::Corrupt(what) => {
                let mut evicted = {
                    let mut st = self.state.lock();
                    st.mark_removing(id);
                    st.counters.corrupt += 1;
                    Evicted {
                        inner: Arc::clone(self),
                        victims: vec![(id, None)],
                    }
                };
                guard.disarm();
                let _ = evicted.finish();
                Error::Corrupt { id, what }
            }
            MapError::Untrusted(what) => {
                self.forget(guard);
                Error::Conflict { id, what }
            }
        }
    }

    /// Drops a segment whose file is gone or not ours from the index, leaving the file alone.
    fn forget(&self, guard: LoadGuard) {
        {
            let mut st = self.state.lock();
            if st.mark_removing(guard.id).is_some() {
                st.entries.remove(&guard.id);
            }
            self.settled.notify_all();
        }
        guard.disarm();
    }

    /// The blocking half of [`Slot::persist`]: footer, sync, claim the name, link, sync the
    /// directory, publish, map. `writer` holds the slot's descriptor and its two handles (the
    /// descriptor's and the mapping's).
    fn persist_blocking(
        self: &Arc<Self>,
        id: SegmentId,
        len: u64,
        writer: Writer,
        reservation: Reservation,
        crc: Option<u32>,
    ) -> Result<SegmentRef> {
        let file = writer.temp.file();
        let crc = match crc {
            Some(crc) => crc,
            None => read_back_crc(file, len)
                .map_err(|e| Error::io("read back segment", self.dir.path(), e))?,
        };
        file.write_all_at(&Footer { id, len, crc }.encode(), len)
            .map_err(|e| Error::io("write segment footer", self.dir.path(), e))?;
        // Data (and size) durable before the name can make it visible.
        rustix::fs::fdatasync(file)
            .map_err(|e| Error::io("sync segment", self.dir.path(), e.into()))?;

        match self.claim_name(id) {
            Claim::Name => {}
            Claim::Cached(mapping) => return Ok(SegmentRef::new(mapping, self)),
            Claim::MapCached(guard, len, verified) => {
                // Map the cached file with our handles instead of linking ours.
                let Writer { temp, handles } = writer;
                drop(temp);
                drop(reservation);
                return self.load(guard, handles, len, verified);
            }
        }
        self.link_and_publish(id, len, writer, reservation)
    }

    /// Claims segment `id`'s name for linking (`Linking`), or finds it already cached: mapped,
    /// or unmapped (then the caller maps it, owning the `Loading` slot). Waits for transient
    /// states to settle, which never takes long (see the module docs).
    fn claim_name(self: &Arc<Self>, id: SegmentId) -> Claim {
        let mut st = self.state.lock();
        loop {
            match st.entries.get_mut(&id) {
                None => {
                    st.entries.insert(id, Entry::Linking);
                    return Claim::Name;
                }
                Some(Entry::Ready(r)) => match &r.map {
                    MapSlot::Mapped(m) => {
                        let mapping = Arc::clone(m);
                        st.touch(id);
                        st.counters.already_present += 1;
                        return Claim::Cached(mapping);
                    }
                    MapSlot::Unmapped => {
                        let event = Arc::new(Semaphore::new(0));
                        r.map = MapSlot::Loading(Arc::clone(&event));
                        let (len, verified) = (r.len, r.verified);
                        st.touch(id);
                        st.counters.already_present += 1;
                        let guard = LoadGuard {
                            inner: Arc::clone(self),
                            id,
                            event,
                            armed: true,
                        };
                        return Claim::MapCached(guard, len, verified);
                    }
                    MapSlot::Loading(_) => self.settled.wait(&mut st),
                },
                Some(Entry::Linking | Entry::Removing) => self.settled.wait(&mut st),
            }
        }
    }

    /// Links a complete, synced slot file into place under the claimed name, syncs the
    /// directory, publishes the segment and maps it.
    fn link_and_publish(
        self: &Arc<Self>,
        id: SegmentId,
        len: u64,
        mut writer: Writer,
        reservation: Reservation,
    ) -> Result<SegmentRef> {
        let name = id.file_name();
        let mut claim = LinkClaim {
            inner: self,
            id,
            armed: true,
        };
        match writer.temp.link(self.method, &name) {
            Ok(Linked::Done) => {}
            Ok(Linked::TargetExists) => {
                let Writer { temp, handles } = writer;
                drop(temp);
                return self.adopt_existing(claim, handles, reservation);
            }
            Err(e) => {
                return Err(Error::io(
                    "link segment into place",
                    self.dir.entry_path(&name),
                    e,
                ));
            }
        }
        if let Err(e) = self.dir.sync() {
            // Visible but perhaps not durable: take the name back, so that no local copy claims
            // a durability it may not have.
            let _ = self.dir.unlink(&name);
            return Err(e);
        }
        let guard = {
            let mut st = self.state.lock();
            let event = Arc::new(Semaphore::new(0));
            let charged = reservation.charged;
            reservation.release(&mut st);
            st.insert_ready(
                id,
                Ready {
                    len,
                    charged,
                    slot: 0,
                    verified: true,
                    map: MapSlot::Loading(Arc::clone(&event)),
                },
            );
            st.counters.persisted += 1;
            claim.armed = false;
            self.settled.notify_all();
            LoadGuard {
                inner: Arc::clone(self),
                id,
                event,
                armed: true,
            }
        };
        drop(claim);
        // Map the file as it is now named rather than through the temporary descriptor (which
        // `/proc/self/maps` would show as a deleted `#inode` for an `O_TMPFILE`): close ours
        // first, so the descriptor and the mapping fit the slot's two handles.
        let Writer { temp, handles } = writer;
        drop(temp);
        self.load(guard, handles, len, true)
    }

    /// `persist` found a file under the segment's name that the index does not know (left by
    /// a failed unlink, or not ours). If it is a valid segment file of ours, it is the segment
    /// (segments are immutable) and is cached; otherwise it is left alone and the persist fails.
    fn adopt_existing(
        self: &Arc<Self>,
        mut claim: LinkClaim<'_>,
        mut handles: Handles,
        reservation: Reservation,
    ) -> Result<SegmentRef> {
        let id = claim.id;
        let name = id.file_name();
        let file = self
            .dir
            .open_segment(&name)
            .map_err(|e| Error::io("open existing segment", self.dir.entry_path(&name), e))?;
        let Some(map_handle) = handles.split_one() else {
            return Err(Error::io(
                "map segment",
                self.dir.entry_path(&name),
                io::Error::other("mapping needs two pool handles"),
            ));
        };
        let expect = Expect {
            id,
            len: None,
            euid: self.dir.euid(),
            verify_data: true,
        };
        let mapped = Mapping::map(&file, &expect, map_handle);
        drop(file);
        drop(handles);
        let mapping = match mapped {
            Ok(mapping) => Arc::new(mapping),
            Err(MapError::Io(op, e)) => return Err(Error::io(op, self.dir.entry_path(&name), e)),
            Err(MapError::Corrupt(what) | MapError::Untrusted(what)) => {
                return Err(Error::Conflict { id, what });
            }
        };
        let len = mapping.data().len() as u64;
        {
            let mut st = self.state.lock();
            reservation.release(&mut st);
            st.insert_ready(
                id,
                Ready {
                    len,
                    charged: len + FOOTER_LEN,
                    slot: 0,
                    verified: true,
                    map: MapSlot::Mapped(Arc::clone(&mapping)),
                },
            );
            st.counters.already_present += 1;
            claim.armed = false;
            self.settled.notify_all();
        }
        Ok(SegmentRef::new(mapping, self))
    }
}

/// Reads back a slot's data to checksum it (when its writes overlapped).
fn read_back_crc(file: &std::fs::File, len: u64) -> io::Result<u32> {
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0;
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from(len - at).map_or(buf.len(), |left| left.min(buf.len()));
        file.read_exact_at(&mut buf[..n], at)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok(crc)
}

/// A disk cache of immutable segments: see the [crate docs](crate).
///
/// Cheap to clone (an `Arc`); `Send + Sync`. All methods take `&self`.
#[derive(Clone)]
pub struct SegmentCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentCache")
            .field("dir", &self.inner.dir.path())
            .field("persist_mode", &self.inner.method.mode())
            .finish_non_exhaustive()
    }
}

impl SegmentCache {
    /// Opens (creating it 0700 if needed) the cache directory and loads what is in it.
    ///
    /// - The directory must be owned by this process's effective user
    ///   ([`Error::UntrustedDir`] otherwise); a looser mode than 0700 is tightened and
    ///   reported. The cache takes an exclusive `flock` on it ([`Error::Locked`] if another
    ///   cache has it).
    /// - The persist paths are probed (see [`PersistProbe`]) and one is chosen per
    ///   [`PersistMode`]; a forced mode that does not work is [`Error::PersistUnsupported`].
    /// - The scan deletes leftover temporary files, rejects (deletes) segment files that are
    ///   torn or fail their footer check, reports entries it does not expect without touching
    ///   them, loads the rest in least-recently-used order by file times, and evicts down to
    ///   the budget. See [`ScanReport`].
    ///
    /// The blocking work runs on tokio's blocking pool when called inside a tokio runtime.
    pub async fn open(config: CacheConfig) -> Result<(Self, ScanReport)> {
        config.validate()?;
        let (inner, report) = blocking(move || Inner::open(config)).await??;
        Ok((Self { inner }, report))
    }

    /// Reserves a slot for segment `id` of `len` bytes, to be written and then
    /// [persisted](Slot::persist).
    ///
    /// The slot's disk bytes (`len + FOOTER_LEN`) count against the budget from now on; if
    /// that takes the cache above its high watermark, least-recently-used unpinned segments
    /// are evicted down to the low watermark first. Pinned segments and live slots are never
    /// evicted, so the budget can be exceeded while they are held (by at most what the
    /// handle pool lets exist at once); it is restored as pins are released.
    ///
    /// A slot holds two pool handles (its file descriptor, and the mapping `persist` turns it
    /// into); this waits for them, fairly, and is cancellable.
    ///
    /// Errors: [`Error::AlreadyPresent`] if `id` is cached, [`Error::TooLarge`] if it can never
    /// fit. Several slots for one id may be live at once; the first to persist wins and the
    /// others return its segment.
    pub async fn reserve(&self, id: SegmentId, len: u64) -> Result<Slot> {
        let inner = &self.inner;
        let budget = inner.config.max_bytes();
        let charged = len
            .checked_add(FOOTER_LEN)
            .filter(|&c| c <= budget && usize::try_from(c).is_ok())
            .ok_or(Error::TooLarge { id, len, budget })?;
        let (reservation, evicted) = {
            let mut st = inner.state.lock();
            if matches!(st.entries.get(&id), Some(Entry::Ready(_))) {
                return Err(Error::AlreadyPresent { id });
            }
            st.reserved += charged;
            let reservation = Reservation {
                inner: Arc::clone(inner),
                charged,
            };
            let evicted = inner.evict_to(&mut st, inner.low, inner.high);
            (reservation, evicted)
        };
        if !evicted.is_empty() {
            blocking(move || drop(evicted)).await?;
        }
        let handles = inner.acquire(2).await;
        let temp = TempFile::create(&inner.dir, inner.method, id)
            .map_err(|e| Error::io("create temporary segment file", inner.dir.path(), e))?;
        Ok(Slot {
            id,
            len,
            writer: Writer { temp, handles },
            reservation,
            written: Mutex::new(Coverage::default()),
            cursor: 0,
        })
    }

    /// Pins segment `id` if it is cached: `Ok(None)` if not.
    ///
    /// A mapped segment is pinned without I/O (the hit path takes the state lock once). An
    /// unmapped one is mapped first, drawing two handles from the pool (waiting fairly, and
    /// unmapping idle mappings if the pool is short); all pins of a segment share that one
    /// mapping. A segment loaded by the scan has its data checksum checked on first map
    /// (unless configured off): a mismatch deletes it and returns [`Error::Corrupt`].
    pub async fn get(&self, id: SegmentId) -> Result<Option<SegmentRef>> {
        let inner = &self.inner;
        match inner.lookup(id) {
            Lookup::Miss => return Ok(None),
            Lookup::Hit(mapping) => return Ok(Some(SegmentRef::new(mapping, inner))),
            Lookup::Unmapped => {}
        }
        loop {
            let handles = inner.acquire(2).await;
            match inner.map_step(id) {
                MapStep::Hit(mapping) => return Ok(Some(SegmentRef::new(mapping, inner))),
                MapStep::Absent => return Ok(None),
                MapStep::Wait(event) => {
                    drop(handles);
                    // Closed when the other attempt settles; then look again.
                    let _ = event.acquire().await;
                }
                MapStep::Load(guard, len, verified) => {
                    let inner = Arc::clone(inner);
                    return blocking(move || inner.load(guard, handles, len, verified))
                        .await?
                        .map(Some);
                }
            }
        }
    }

    /// Whether segment `id` is cached and readable.
    #[must_use]
    pub fn contains(&self, id: SegmentId) -> bool {
        matches!(
            self.inner.state.lock().entries.get(&id),
            Some(Entry::Ready(_))
        )
    }

    /// Removes segment `id` now: unmaps it and unlinks its file. `Ok(false)` if it is not
    /// cached; [`Error::Pinned`] (and nothing changes) if a [`SegmentRef`] holds it or it is
    /// being mapped. If the unlink fails the segment is still gone from the cache and the
    /// error is returned.
    pub fn remove(&self, id: SegmentId) -> Result<bool> {
        let mut evicted = {
            let mut st = self.inner.state.lock();
            let Some(Entry::Ready(r)) = st.entries.get_mut(&id) else {
                return Ok(false);
            };
            let mapping = match std::mem::replace(&mut r.map, MapSlot::Unmapped) {
                MapSlot::Unmapped => None,
                MapSlot::Loading(event) => {
                    r.map = MapSlot::Loading(event);
                    return Err(Error::Pinned { id });
                }
                MapSlot::Mapped(arc) => match Arc::try_unwrap(arc) {
                    Ok(mapping) => Some(mapping),
                    Err(arc) => {
                        r.map = MapSlot::Mapped(arc);
                        return Err(Error::Pinned { id });
                    }
                },
            };
            st.mark_removing(id);
            Evicted {
                inner: Arc::clone(&self.inner),
                victims: vec![(id, mapping)],
            }
        };
        match evicted.finish() {
            None => Ok(true),
            Some(e) => Err(Error::io(
                "unlink segment",
                self.inner.dir.entry_path(&id.file_name()),
                e,
            )),
        }
    }

    /// A snapshot of the cache's state and counters. Costs O(segments): for monitoring, not
    /// for a hot path.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let st = inner.state.lock();
        let pinned = st
            .mapped
            .iter()
            .filter(|id| {
                matches!(st.entries.get(id), Some(Entry::Ready(Ready { map: MapSlot::Mapped(m), .. }))
                    if Arc::strong_count(m) > 1)
            })
            .count();
        let segments = st
            .entries
            .values()
            .filter(|e| matches!(e, Entry::Ready(_)))
            .count();
        let c = &st.counters;
        Stats {
            segments,
            bytes: st.used,
            reserved_bytes: st.reserved,
            budget: inner.config.max_bytes(),
            mapped: st.mapped.len(),
            pinned,
            handles_in_use: inner.pool.in_use(),
            max_handles: inner.pool.max(),
            handle_waiters: inner.pool.waiters(),
            hits: c.hits,
            misses: c.misses,
            persisted: c.persisted,
            already_present: c.already_present,
            evictions: c.evictions,
            evicted_bytes: c.evicted_bytes,
            mappings_reclaimed: c.mappings_reclaimed,
            corrupt: c.corrupt,
            unlink_failures: c.unlink_failures,
        }
    }

    /// The cache directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// The configuration the cache was opened with.
    #[must_use]
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The persist path in use (never [`PersistMode::Auto`]).
    #[must_use]
    pub fn persist_mode(&self) -> PersistMode {
        self.inner.method.mode()
    }

    /// What the probe at open found out about each persist path.
    #[must_use]
    pub fn persist_probe(&self) -> PersistProbe {
        self.inner.probe
    }
}

/// Which byte ranges of a slot have been written, merged, each with the CRC32C of its bytes
/// when it was written without overlaps (so `persist` can checksum the data without reading it
/// back, even when parallel range writes arrive out of order).
#[derive(Debug, Default)]
struct Coverage {
    /// start → (end, CRC of `start..end`, or `None` after an overlapping write).
    ranges: BTreeMap<u64, (u64, Option<u32>)>,
}

/// What [`Coverage::complete`] found.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Some byte was never written.
    Missing,
    /// Every byte was written; the data's CRC32C, or `None` if writes overlapped and the data
    /// must be read back to checksum it.
    Complete(Option<u32>),
}

fn combine(a: Option<u32>, b: Option<u32>, len_b: u64) -> Option<u32> {
    Some(crc32c::crc32c_combine(a?, b?, usize::try_from(len_b).ok()?))
}

impl Coverage {
    /// Records a write of `start..end` whose bytes have CRC `crc`.
    fn add(&mut self, start: u64, end: u64, crc: u32) {
        let (mut s, mut e, mut c) = (start, end, Some(crc));
        if let Some((&ps, &(pe, pc))) = self.ranges.range(..=start).next_back()
            && pe >= start
        {
            self.ranges.remove(&ps);
            c = if pe == start {
                combine(pc, c, end - start)
            } else {
                None
            };
            s = ps;
            e = e.max(pe);
        }
        while let Some((&ns, &(ne, nc))) = self.ranges.range(s..).next() {
            if ns > e {
                break;
            }
            self.ranges.remove(&ns);
            if ns == e {
                c = combine(c, nc, ne - ns);
                e = ne;
            } else {
                c = None;
                e = e.max(ne);
            }
        }
        self.ranges.insert(s, (e, c));
    }

    /// Bytes covered by writes.
    fn covered(&self) -> u64 {
        self.ranges.iter().map(|(s, (e, _))| e - s).sum()
    }

    /// Whether writes cover exactly `0..len`, and the data's checksum if it is known.
    fn complete(&self, len: u64) -> Written {
        if len == 0 {
            return Written::Complete(Some(0));
        }
        match self.ranges.iter().next() {
            Some((&0, &(end, crc))) if end == len && self.ranges.len() == 1 => {
                Written::Complete(crc)
            }
            _ => Written::Missing,
        }
    }
}

/// A reserved slot for one segment: write it (with [`write_at`](Self::write_at) or
/// [`std::io::Write`]), then [`persist`](Self::persist) it. Until then it is invisible to
/// readers.
///
/// Dropping a slot without persisting it frees its reservation, its handles and its temporary
/// file (an anonymous `O_TMPFILE` simply disappears; a named one is unlinked): nothing is left
/// behind. `Send + Sync`: `write_at` takes `&self`, so parallel range writers can share it.
pub struct Slot {
    id: SegmentId,
    len: u64,
    /// The temporary file and its two handles; dropped before the reservation.
    writer: Writer,
    reservation: Reservation,
    /// Bookkeeping only (no I/O under it).
    written: Mutex<Coverage>,
    /// The position of the next [`Write::write`].
    cursor: u64,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("written", &self.written.lock().covered())
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// The segment this slot is for.
    #[must_use]
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// The segment's length, as reserved.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment is empty (zero bytes long).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes covered by writes so far (overlaps counted once).
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written.lock().covered()
    }

    /// Writes all of `buf` at `offset`. Writes may come in any order and from several threads
    /// at once; [`Error::OutOfBounds`] if they reach past the reserved length.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or(Error::OutOfBounds {
                id: self.id,
                offset,
                len: buf.len(),
                size: self.len,
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let crc = crc32c::crc32c(buf);
        self.writer
            .temp
            .file()
            .write_all_at(buf, offset)
            .map_err(|e| Error::io("write segment", self.reservation.inner.dir.path(), e))?;
        self.written.lock().add(offset, end, crc);
        Ok(())
    }

    /// Makes the segment durable and readable, atomically, and pins it.
    ///
    /// Writes the footer, syncs the file, links it into place under its name without ever
    /// replacing an existing file, and syncs the directory. If the segment is already cached
    /// (another slot for the same id persisted first), this slot is dropped and the cached
    /// segment is returned: segments are immutable.
    ///
    /// [`Error::Incomplete`] if some byte of the segment was never written. On any error the
    /// slot is dropped and nothing of it is left behind. Once started, the blocking part runs
    /// to completion even if this future is dropped.
    pub async fn persist(self) -> Result<SegmentRef> {
        let Slot {
            id,
            len,
            writer,
            reservation,
            written,
            ..
        } = self;
        let coverage = written.into_inner();
        let Written::Complete(crc) = coverage.complete(len) else {
            return Err(Error::Incomplete {
                id,
                written: coverage.covered(),
                len,
            });
        };
        let inner = Arc::clone(&reservation.inner);
        blocking(move || inner.persist_blocking(id, len, writer, reservation, crc)).await?
    }
}

impl Write for Slot {
    /// Writes at the slot's cursor (starting at 0) and advances it. Past the reserved length
    /// it fails with `InvalidInput`, carrying [`Error::OutOfBounds`].
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let room = self.len - self.cursor;
        let n = usize::try_from(room).map_or(buf.len(), |room| room.min(buf.len()));
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                Error::OutOfBounds {
                    id: self.id,
                    offset: self.cursor,
                    len: buf.len(),
                    size: self.len,
                },
            ));
        }
        self.write_at(self.cursor, &buf[..n])
            .map_err(io::Error::other)?;
        self.cursor += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs after a `SegmentRef`'s mapping reference is dropped (it is the last field): lets a
/// waiter for pool handles or an over-budget cache act on the release.
struct Release(Arc<Inner>);

impl Drop for Release {
    fn drop(&mut self) {
        let inner = &self.0;
        // `has_waiters` issues the SeqCst fence that orders both checks after the release.
        if inner.pool.has_waiters() {
            inner.reclaim_idle(1);
        }
        if inner.over_budget.load(Ordering::SeqCst) {
            inner.enforce_budget();
        }
    }
}

/// A pinned segment: its bytes, straight from the shared mapping (zero copy). While any
/// `SegmentRef` of a segment lives, the segment is neither evicted nor unmapped.
///
/// `Deref<Target = [u8]>` gives the data (without the footer). Cloning takes another pin on
/// the same mapping; dropping releases it. `Send + Sync`.
pub struct SegmentRef {
    // Field order matters: the mapping reference is released before `Release` runs.
    mapping: Arc<Mapping>,
    release: Release,
}

impl SegmentRef {
    fn new(mapping: Arc<Mapping>, inner: &Arc<Inner>) -> Self {
        Self {
            mapping,
            release: Release(Arc::clone(inner)),
        }
    }

    /// The segment's id.
    #[must_use]
    pub fn id(&self) -> SegmentId {
        self.mapping.id()
    }

    /// The segment's bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.mapping.data()
    }
}

impl Deref for SegmentRef {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.mapping.data()
    }
}

impl AsRef<[u8]> for SegmentRef {
    fn as_ref(&self) -> &[u8] {
        self.mapping.data()
    }
}

impl Clone for SegmentRef {
    fn clone(&self) -> Self {
        Self {
            mapping: Arc::clone(&self.mapping),
            release: Release(Arc::clone(&self.release.0)),
        }
    }
}

impl fmt::Debug for SegmentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentRef")
            .field("id", &self.id())
            .field("len", &self.mapping.data().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc_of(data: &[u8], range: std::ops::Range<usize>) -> u32 {
        crc32c::crc32c(&data[range])
    }

    #[test]
    fn coverage_combines_out_of_order_ranges() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut cov = Coverage::default();
        for r in [40..60, 0..10, 60..100, 10..40] {
            cov.add(r.start as u64, r.end as u64, crc_of(&data, r));
        }
        assert_eq!(cov.covered(), 100);
        assert_eq!(
            cov.complete(100),
            Written::Complete(Some(crc32c::crc32c(&data)))
        );
    }

    #[test]
    fn coverage_overlaps_and_gaps() {
        let data = [7u8; 50];
        let mut cov = Coverage::default();
        cov.add(0, 20, crc_of(&data, 0..20));
        cov.add(30, 50, crc_of(&data, 30..50));
        assert_eq!((cov.covered(), cov.complete(50)), (40, Written::Missing));
        // Filling the gap with an overlap: complete, but the CRC must be read back.
        cov.add(15, 35, crc_of(&data, 15..35));
        assert_eq!(
            (cov.covered(), cov.complete(50)),
            (50, Written::Complete(None))
        );
        // A write inside a covered range changes nothing about coverage.
        let mut cov = Coverage::default();
        cov.add(0, 50, crc_of(&data, 0..50));
        cov.add(10, 20, crc_of(&data, 10..20));
        assert_eq!(
            (cov.covered(), cov.complete(50)),
            (50, Written::Complete(None))
        );
        assert_eq!(Coverage::default().complete(0), Written::Complete(Some(0)));
        assert_eq!(Coverage::default().complete(1), Written::Missing);
    }
}
