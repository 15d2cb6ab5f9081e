//! The in-memory allocator: the extent list, the size-class buckets of free extents, the id
//! table, pending frees, and the one core allocation function, [`Allocator::place`].
//!
//! Every extent of the body is a node in a slab: 32 bytes, split in two vectors indexed alike,
//! [`Hot`] (what a walk of the list reads: the map is encoded from it alone) and [`Cold`], plus
//! a list of vacant slots. Nodes are linked in offset order (`prev`/`next`), so splitting and
//! coalescing are O(1). Free nodes are also linked into the list of their size class (computed
//! from the size, through a table for small sizes), with a bitmask of non-empty classes; in-use
//! nodes are found by id through the id table ([`IdTable`]).
//!
//! An extent is in one of three states:
//! - **used** by a block (or the map);
//! - **free**: free in the last committed state too, so it may be handed out at once; free
//!   extents are in a bucket and never adjacent to another free extent (they coalesce), unless
//!   the two together would pass the largest extent size;
//! - **pending**: freed since the last commit, but the committed map still points into it.
//!   It may not be reused until the next commit has made the free durable
//!   ([`Allocator::release_pending`]); it is in no bucket and does not coalesce.
//!
//! A block allocated since the last commit ("fresh", its epoch `== Allocator::epoch`) lives in
//! space that was free in the committed state, so freeing it makes the space free at once.

use crate::config::BucketConfig;
use crate::error::{Location, Problem};
use crate::format::{self, IN_USE, MAP_ID, MAX_EXTENT_UNITS, RECORD_SIZE, Record, RecordSink};
use crate::ids::IdTable;
use crate::{BlockId, Error, Result};

/// No node.
pub(crate) const NIL: u32 = u32::MAX;

/// How many members of the smallest fitting class a search looks at before it takes the head of
/// a larger class instead.
const SCAN: usize = 8;

/// The state of an extent (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// In use by this id.
    Used(u32),
    /// Free and reusable.
    Free,
    /// Freed since the last commit; not reusable yet.
    Pending,
    /// A slab slot with no extent.
    Vacant,
}

/// The in-use bit of [`Hot::size`]: the map's (`IN_USE`), so a node's size is its record's.
const USED_BIT: u32 = IN_USE;
/// What [`Hot::tag`] holds for a node that is not in use.
const FREE: u32 = 0;
const PENDING: u32 = 1;
const VACANT: u32 = 2;

/// The part of an extent's node that a walk of the list in offset order reads: 12 bytes. The
/// map is encoded from these alone (a commit of a large map streams through them, so every
/// byte here is a byte read per extent per commit).
#[derive(Clone, Copy, Debug)]
struct Hot {
    /// The length in allocation units (1 ..= `MAX_EXTENT_UNITS`), with `USED_BIT` set when the
    /// extent is in use: the size field of its map record.
    size: u32,
    /// In use: the id. Otherwise what the extent is: `FREE`, `PENDING` or `VACANT`.
    tag: u32,
    /// The next node in offset order, or `NIL`.
    next: u32,
}

/// The rest of an extent's node: 20 bytes (4-byte aligned, so a node is 32 bytes in all).
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct Cold {
    /// Offset in allocation units from the body's start.
    offset: u64,
    /// The previous node in offset order, or `NIL`.
    prev: u32,
    /// Free: the previous node of its size class's list. Used (and pending): the epoch the
    /// extent was allocated in.
    link: u32,
    /// Free: the next node of its size class's list.
    bnext: u32,
}

const _: () = assert!(size_of::<Hot>() == 12 && size_of::<Cold>() == 20);

impl Hot {
    #[inline]
    fn units(&self) -> u32 {
        self.size & !USED_BIT
    }

    #[inline]
    fn is_used(&self) -> bool {
        self.size & USED_BIT != 0
    }

    #[inline]
    fn is_free(&self) -> bool {
        !self.is_used() && self.tag == FREE
    }

    #[inline]
    fn state(&self) -> State {
        if self.is_used() {
            return State::Used(self.tag);
        }
        match self.tag {
            FREE => State::Free,
            PENDING => State::Pending,
            _ => State::Vacant,
        }
    }

    #[inline]
    fn set_state(&mut self, state: State) {
        let units = self.units();
        (self.size, self.tag) = match state {
            State::Used(id) => (units | USED_BIT, id),
            State::Free => (units, FREE),
            State::Pending => (units, PENDING),
            State::Vacant => (units, VACANT),
        };
    }

    #[inline]
    fn set_units(&mut self, units: u32) {
        self.size = (self.size & USED_BIT) | units;
    }

    /// The record of this extent in the map: pending extents as free.
    #[cfg(test)]
    fn record(&self) -> Record {
        let in_use = self.is_used();
        Record {
            id: if in_use { self.tag } else { 0 },
            units: self.units(),
            in_use,
        }
    }
}

/// The class of an extent of up to this many units is looked up in a table.
const SMALL_UNITS: usize = 1024;

/// The size classes, with the class of every small size in a table.
#[derive(Clone, Debug)]
struct Classes {
    config: BucketConfig,
    /// `small[u]` is the class of `u` units.
    small: Box<[u8]>,
}

impl Classes {
    fn new(config: BucketConfig) -> Self {
        let small = (0..=SMALL_UNITS as u32)
            .map(|u| config.class_of(u) as u8)
            .collect();
        Self { config, small }
    }

    /// The class of an extent of `units` units.
    #[inline]
    fn of(&self, units: u32) -> usize {
        match self.small.get(units as usize) {
            Some(&class) => usize::from(class),
            None => self.config.class_of(units),
        }
    }

    fn count(&self) -> usize {
        self.config.bounds().len()
    }
}

/// Where an extent is, in allocation units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub offset: u64,
    pub units: u32,
}

/// A position in the map's records, for [`Allocator::write_records`].
pub(crate) struct RecordCursor {
    /// The next node to write, or `NIL` when all are written.
    at: u32,
    /// The last node to write (the last in use).
    last: u32,
}

impl RecordCursor {
    /// Whether every record has been written.
    pub fn done(&self) -> bool {
        self.at == NIL
    }
}

/// One extent as listed by [`Allocator::iter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListedExtent {
    pub offset: u64,
    pub units: u32,
    pub state: State,
}

/// The allocator's state. See the module docs.
#[derive(Debug)]
pub(crate) struct Allocator {
    /// The nodes, in two parts indexed alike (always the same length).
    hot: Vec<Hot>,
    cold: Vec<Cold>,
    vacant: Vec<u32>,
    head: u32,
    tail: u32,
    extents: usize,
    /// The body's length in units: the sum of all extents.
    body: u64,
    /// The largest body, in units.
    max_body: u64,
    classes: Classes,
    /// The first node of each class's list, or `NIL`.
    buckets: Vec<u32>,
    /// Bit `i` is set when bucket `i` is non-empty.
    mask: u64,
    ids: IdTable,
    /// Pending nodes, in the order they were freed.
    pending: Vec<u32>,
    /// The current epoch: extents allocated in it are fresh. Advanced by every commit.
    epoch: u32,
    /// Where the search for a new id starts.
    next_id: u32,
    used_units: u64,
    free_units: u64,
    pending_units: u64,
}

impl Allocator {
    /// An allocator with an empty body that may grow to `max_body` units.
    pub fn new(classes: BucketConfig, max_body: u64) -> Self {
        let classes = Classes::new(classes);
        let buckets = vec![NIL; classes.count()];
        Self {
            hot: Vec::new(),
            cold: Vec::new(),
            vacant: Vec::new(),
            head: NIL,
            tail: NIL,
            extents: 0,
            body: 0,
            max_body,
            classes,
            buckets,
            mask: 0,
            ids: IdTable::default(),
            pending: Vec::new(),
            epoch: 1,
            next_id: 1,
            used_units: 0,
            free_units: 0,
            pending_units: 0,
        }
    }

    /// An allocator holding a decoded (and checked, see `format::decode_map`) map: every extent
    /// committed, adjacent free extents coalesced.
    #[cfg(test)]
    pub fn from_records(classes: BucketConfig, max_body: u64, records: &[Record]) -> Result<Self> {
        let mut a = Self::new(classes, max_body);
        a.reserve(records.len());
        for r in records {
            a.push_record(*r)?;
        }
        a.finish_records();
        Ok(a)
    }

    /// Makes room for `records` more extents and ids (an allocator about to be filled from a
    /// map of that many records).
    pub fn reserve(&mut self, records: usize) {
        self.hot.reserve(records);
        self.cold.reserve(records);
        self.ids.reserve(records);
    }

    /// Appends the extent of a checked map record to a new allocator being filled from a map
    /// (the id, if in use, must not be live): committed, coalesced with a free extent before
    /// it. [`finish_records`](Self::finish_records) completes the filling.
    #[inline]
    pub fn push_record(&mut self, r: Record) -> Result<()> {
        if r.in_use {
            let idx = self.push_back(r.units, State::Used(r.id))?;
            self.cold[idx as usize].link = 0;
            self.used_units += u64::from(r.units);
            self.ids.insert(r.id, idx);
            if r.id != MAP_ID && r.id >= self.next_id {
                self.next_id = r.id + 1;
            }
        } else {
            let idx = self.push_back(r.units, State::Used(0))?;
            self.make_free(idx);
        }
        Ok(())
    }

    /// Completes the filling from a map: new ids are searched for from the largest one plus 1.
    pub fn finish_records(&mut self) {
        if self.next_id == MAP_ID {
            self.next_id = 1;
        }
    }

    // ----- Queries -----

    /// The body's length in units.
    pub fn body(&self) -> u64 {
        self.body
    }

    /// The number of extents.
    pub fn extents(&self) -> usize {
        self.extents
    }

    /// Units used by blocks and the map.
    pub fn used_units(&self) -> u64 {
        self.used_units
    }

    /// Units free and reusable.
    pub fn free_units(&self) -> u64 {
        self.free_units
    }

    /// Units freed since the last commit.
    pub fn pending_units(&self) -> u64 {
        self.pending_units
    }

    /// The number of live ids, the map's included.
    pub fn live(&self) -> usize {
        self.ids.len()
    }

    /// The largest free extent, in units.
    pub fn largest_free(&self) -> u32 {
        if self.mask == 0 {
            return 0;
        }
        let top = 63 - self.mask.leading_zeros() as usize;
        self.bucket_iter(top)
            .map(|i| self.units(i))
            .max()
            .unwrap_or(0)
    }

    /// The extent of a live id (the map's included).
    #[inline]
    pub fn get(&self, id: u32) -> Option<Extent> {
        self.ids.get(id).map(|idx| self.extent(idx))
    }

    /// Whether the id is live (the map's included).
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        self.ids.contains(id)
    }

    /// Every live id except the map's, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.iter().map(|(id, _)| id).filter(|&id| id != MAP_ID)
    }

    /// Every extent in offset order.
    pub fn iter(&self) -> impl Iterator<Item = ListedExtent> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            let h = self.hot.get(at as usize)?;
            let offset = self.cold[at as usize].offset;
            at = h.next;
            Some(ListedExtent {
                offset,
                units: h.units(),
                state: h.state(),
            })
        })
    }

    /// The last extent in use, and how many extents come after it.
    fn last_used(&self) -> (u32, usize) {
        let mut after = 0;
        let mut last = self.tail;
        while last != NIL && !self.hot[last as usize].is_used() {
            after += 1;
            last = self.cold[last as usize].prev;
        }
        (last, after)
    }

    /// How many records the map would hold if committed now, and the body they cover in units
    /// (see [`map_records`](Self::map_records)). O(free extents at the end).
    pub fn map_extent(&self) -> (usize, u64) {
        match self.last_used() {
            (NIL, _) => (0, 0),
            (last, after) => (
                self.extents - after,
                self.cold[last as usize].offset + u64::from(self.units(last)),
            ),
        }
    }

    /// The map as it would be committed now: the extents up to the last one in use, pending
    /// extents as free (what [`write_records`](Self::write_records) writes, walked plainly).
    #[cfg(test)]
    pub fn map_records(&self) -> impl Iterator<Item = Record> + '_ {
        let (last, _) = self.last_used();
        let mut at = if last == NIL { NIL } else { self.head };
        std::iter::from_fn(move || {
            let h = self.hot.get(at as usize)?;
            at = if at == last { NIL } else { h.next };
            Some(h.record())
        })
    }

    /// Where [`write_records`](Self::write_records) starts: the first of
    /// [`map_records`](Self::map_records).
    pub fn record_cursor(&self) -> RecordCursor {
        let (last, _) = self.last_used();
        RecordCursor {
            at: if last == NIL { NIL } else { self.head },
            last,
        }
    }

    /// Writes the next records of [`map_records`](Self::map_records) from `cursor` into
    /// `slots` (`format::RECORD_SIZE` bytes each), as many as fit; returns how many it wrote.
    ///
    /// Reads the hot part of each node only. Along a run of nodes that follow each other in
    /// the slab as they do in the list (the usual case: the list is built in order and mostly
    /// changed in place), the next node's address is the next slot's, so the walk does not
    /// wait for each node's `next` link to load before it can load the node after it.
    pub fn write_records(&self, cursor: &mut RecordCursor, slots: &mut [u8]) -> usize {
        let mut out = slots.chunks_exact_mut(RECORD_SIZE);
        let mut written = 0;
        let mut at = cursor.at;
        'runs: while at != NIL {
            let mut i = at as usize;
            loop {
                let Some(slot) = out.next() else {
                    break 'runs;
                };
                let h = &self.hot[i];
                let id = if h.is_used() { h.tag } else { 0 };
                format::put_record(slot, id, h.size);
                written += 1;
                if i == cursor.last as usize {
                    at = NIL;
                    break 'runs;
                }
                if h.next as usize != i + 1 {
                    at = h.next;
                    break;
                }
                i += 1;
                at = i as u32;
            }
        }
        cursor.at = at;
        written
    }

    /// [`map_records`](Self::map_records), collected.
    #[cfg(test)]
    pub fn records(&self) -> Vec<Record> {
        self.map_records().collect()
    }

    /// Whether the extent of `id` was allocated since the last commit.
    #[cfg(test)]
    pub fn is_fresh(&self, id: u32) -> bool {
        self.ids
            .get(id)
            .is_some_and(|idx| self.cold[idx as usize].link == self.epoch)
    }

    // ----- Ids -----

    /// An id that is not live (never 0 or `MAP_ID`), or `None` when every id is.
    #[inline]
    pub fn new_id(&mut self) -> Option<u32> {
        // Ids 1 ..= MAP_ID - 1 can be handed out.
        let usable = u64::from(MAP_ID - 1);
        for _ in 0..=(self.ids.len() as u64).min(usable) {
            let id = self.next_id;
            self.next_id = if id >= MAP_ID - 1 { 1 } else { id + 1 };
            if !self.ids.contains(id) {
                return Some(id);
            }
        }
        None
    }

    // ----- The core allocation function -----

    /// Places a new extent of `units` units for `id` and returns its node: in the free extent
    /// found by the size-class search (split, the remainder staying free), or, when none fits,
    /// at the end of the body (growing a free tail extent if there is one).
    ///
    /// With `max_end`, only free extents ending at or before that offset qualify, the one
    /// with the lowest offset in the smallest class that has one is taken, and the body is never
    /// extended (compaction uses this to move blocks toward the start).
    ///
    /// The id table is not touched: the caller records the node (a moving block briefly has
    /// two).
    #[inline]
    pub fn place(&mut self, units: u32, id: u32, max_end: Option<u64>) -> Result<u32> {
        debug_assert!(units > 0 && units <= MAX_EXTENT_UNITS);
        let found = match max_end {
            None => self.find_fit(units),
            Some(end) => self.find_fit_below(units, end),
        };
        let idx = match (found, max_end) {
            (Some(idx), _) => idx,
            (None, None) => self.extend(units)?,
            (None, Some(_)) => return Err(Error::OutOfSpace),
        };
        self.take(idx, units, id)?;
        Ok(idx)
    }

    /// The best fit among the first `SCAN` members of the smallest class that can fit; else
    /// the head of the next non-empty larger class (all of whose members fit); else the first
    /// fit among the rest of the smallest class.
    #[inline]
    fn find_fit(&self, units: u32) -> Option<u32> {
        let first = self.classes.of(units);
        let mut at = self.buckets[first];
        let mut best: Option<(u32, u32)> = None;
        for _ in 0..SCAN {
            let Some(h) = self.hot.get(at as usize) else {
                break;
            };
            // Free nodes have no in-use bit: the size is the length.
            let have = h.size;
            if have == units {
                return Some(at);
            }
            if have > units && best.is_none_or(|(b, _)| have < b) {
                best = Some((have, at));
            }
            at = self.cold[at as usize].bnext;
        }
        if let Some((_, idx)) = best {
            return Some(idx);
        }
        let above = self.mask & u64::MAX.checked_shl(first as u32 + 1).unwrap_or(0);
        if above != 0 {
            return Some(self.buckets[above.trailing_zeros() as usize]);
        }
        while let Some(h) = self.hot.get(at as usize) {
            if h.size >= units {
                return Some(at);
            }
            at = self.cold[at as usize].bnext;
        }
        None
    }

    /// The lowest-offset fitting free extent that ends by `max_end`, in the smallest class that
    /// has one.
    fn find_fit_below(&self, units: u32, max_end: u64) -> Option<u32> {
        let first = self.classes.of(units);
        let mut classes = self.mask & (u64::MAX << first);
        while classes != 0 {
            let class = classes.trailing_zeros() as usize;
            classes &= classes - 1;
            let best = self
                .bucket_iter(class)
                .filter(|&idx| {
                    self.units(idx) >= units
                        && self.cold[idx as usize].offset + u64::from(units) <= max_end
                })
                .min_by_key(|&idx| self.cold[idx as usize].offset);
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// Makes room for `units` at the end of the body and returns the free node holding it.
    fn extend(&mut self, units: u32) -> Result<u32> {
        let tail = self.tail;
        if tail != NIL && self.hot[tail as usize].is_free() {
            let have = self.units(tail);
            if have >= units {
                return Ok(tail);
            }
            let growth = u64::from(units - have);
            if self.body + growth > self.max_body {
                return Err(Error::OutOfSpace);
            }
            self.bucket_remove(tail);
            self.hot[tail as usize].set_units(units);
            self.bucket_insert(tail);
            self.body += growth;
            self.free_units += growth;
            return Ok(tail);
        }
        if self.body + u64::from(units) > self.max_body {
            return Err(Error::OutOfSpace);
        }
        let idx = self.push_back(units, State::Used(0))?;
        self.make_free(idx);
        Ok(idx)
    }

    /// Takes `units` from the start of free node `idx` for `id`; the rest stays free. Fails
    /// (changing nothing) only if the slab is full.
    #[inline]
    fn take(&mut self, idx: u32, units: u32, id: u32) -> Result<()> {
        let have = self.units(idx);
        let rest = if have > units {
            let offset = self.cold[idx as usize].offset + u64::from(units);
            Some(self.new_node(offset, have - units, State::Free)?)
        } else {
            None
        };
        self.bucket_remove(idx);
        if let Some(rest) = rest {
            self.hot[idx as usize].set_units(units);
            self.link_after(idx, rest);
            // The remainder is the rest of a coalesced free extent: free, and not adjacent to
            // another free extent (except past the size limit, as before).
            self.bucket_insert(rest);
        }
        self.hot[idx as usize].set_state(State::Used(id));
        self.cold[idx as usize].link = self.epoch;
        self.free_units -= u64::from(units);
        self.used_units += u64::from(units);
        Ok(())
    }

    // ----- Fronts used by the file layer -----

    /// Records `idx` (returned by `place`) as the extent of `id`.
    #[inline]
    pub fn bind(&mut self, id: u32, idx: u32) {
        self.ids.insert(id, idx);
    }

    /// Allocates `units` for `id`, which must not be live.
    #[inline]
    pub fn alloc(&mut self, id: u32, units: u32) -> Result<Extent> {
        let idx = self.place(units, id, None)?;
        self.bind(id, idx);
        Ok(self.extent(idx))
    }

    /// Frees the extent of `id`: at once if it is fresh, else pending until the next commit.
    /// Returns false if the id is not live.
    #[inline]
    pub fn free(&mut self, id: u32) -> bool {
        let Some(idx) = self.ids.remove(id) else {
            return false;
        };
        self.release(idx);
        true
    }

    /// Releases used node `idx` (already out of the id table).
    #[inline]
    fn release(&mut self, idx: u32) {
        let units = self.units(idx);
        self.used_units -= u64::from(units);
        if self.cold[idx as usize].link == self.epoch {
            self.make_free(idx);
        } else {
            self.hot[idx as usize].set_state(State::Pending);
            self.pending_units += u64::from(units);
            self.pending.push(idx);
        }
    }

    /// Resizes the extent of live `id` in place: shrinking splits off the tail (free at once if
    /// the block is fresh, else pending); growing takes from a free next extent, or extends the
    /// body when the block (or a free extent after it) is last. Returns false, changing nothing,
    /// when it cannot grow in place.
    pub fn resize_in_place(&mut self, id: u32, units: u32) -> Result<bool> {
        let Some(idx) = self.ids.get(id) else {
            return Ok(false);
        };
        let have = self.units(idx);
        if units == have {
            return Ok(true);
        }
        if units < have {
            let (h, c) = (self.hot[idx as usize], self.cold[idx as usize]);
            let rest = self.new_node(c.offset + u64::from(units), have - units, h.state())?;
            self.hot[idx as usize].set_units(units);
            self.link_after(idx, rest);
            // The cut-off tail is released as the block would be: free at once if fresh, else
            // pending (the committed map still gives the block its old size).
            self.cold[rest as usize].link = c.link;
            self.release(rest);
            return Ok(true);
        }
        let extra = units - have;
        let next = self.hot[idx as usize].next;
        if next == NIL {
            if self.body + u64::from(extra) > self.max_body {
                return Err(Error::OutOfSpace);
            }
            self.hot[idx as usize].set_units(units);
            self.body += u64::from(extra);
            self.used_units += u64::from(extra);
            return Ok(true);
        }
        let nh = self.hot[next as usize];
        if !nh.is_free() {
            return Ok(false);
        }
        let next_units = nh.units();
        if next_units > extra {
            self.bucket_remove(next);
            self.cold[next as usize].offset += u64::from(extra);
            self.hot[next as usize].set_units(next_units - extra);
            self.bucket_insert(next);
        } else if next_units == extra || nh.next == NIL {
            let growth = u64::from(extra - next_units);
            if self.body + growth > self.max_body {
                return Err(Error::OutOfSpace);
            }
            self.bucket_remove(next);
            self.unlink(next);
            self.body += growth;
            self.free_units += growth;
        } else {
            return Ok(false);
        }
        self.hot[idx as usize].set_units(units);
        self.free_units -= u64::from(extra);
        self.used_units += u64::from(extra);
        Ok(true)
    }

    /// Starts moving `id` to a new extent of `units` units, placed by the core function (below
    /// `max_end` if given). Returns the new node and the (old, new) extents. Until
    /// [`finish_move`](Self::finish_move) or [`abort_move`](Self::abort_move) the id still
    /// names its old extent, so the caller can copy the bytes across; nothing else may be
    /// allocated in between.
    pub fn begin_move(
        &mut self,
        id: u32,
        units: u32,
        max_end: Option<u64>,
    ) -> Result<(u32, Extent, Extent)> {
        let Some(old) = self.ids.get(id) else {
            return Err(Error::UnknownId { id: BlockId(id) });
        };
        // The new extent is fresh whatever the old one was: it was free in the committed
        // state, so freeing it before the next commit may make it free at once.
        let new = self.place(units, id, max_end)?;
        Ok((new, self.extent(old), self.extent(new)))
    }

    /// Completes a move: `id` names its new extent; the old one is released (free at once if
    /// it was fresh, else pending until the next commit).
    pub fn finish_move(&mut self, id: u32, new: u32) {
        if let Some(old) = self.ids.insert(id, new) {
            self.release(old);
        }
    }

    /// Abandons a move: the new extent (fresh) is free again.
    pub fn abort_move(&mut self, new: u32) {
        self.release(new);
    }

    /// Moves `id` at once (`begin_move` + `finish_move`), for tests.
    #[cfg(test)]
    fn relocate(&mut self, id: u32, units: u32, max_end: Option<u64>) -> Result<(Extent, Extent)> {
        let (new, old, placed) = self.begin_move(id, units, max_end)?;
        self.finish_move(id, new);
        Ok((old, placed))
    }

    /// Whether a free extent of at least `units` units ends by `max_end`.
    pub fn has_fit_below(&self, units: u32, max_end: u64) -> bool {
        self.find_fit_below(units, max_end).is_some()
    }

    #[inline]
    fn extent(&self, idx: u32) -> Extent {
        Extent {
            offset: self.cold[idx as usize].offset,
            units: self.units(idx),
        }
    }

    #[inline]
    fn units(&self, idx: u32) -> u32 {
        self.hot[idx as usize].units()
    }

    // ----- Commit support -----

    /// Retires the map's extent (it becomes pending) and returns its node, to restore with
    /// [`restore_map`](Self::restore_map) if the commit fails.
    pub fn retire_map(&mut self) -> Option<u32> {
        let idx = self.ids.remove(MAP_ID)?;
        // Pending even if it was placed in this epoch: a committed superblock may name it.
        // Its epoch stays, for `restore_map`.
        let units = u64::from(self.units(idx));
        self.hot[idx as usize].set_state(State::Pending);
        self.used_units -= units;
        self.pending_units += units;
        self.pending.push(idx);
        Some(idx)
    }

    /// Places a new map extent of `units` units (in the lowest fitting free extent below
    /// `max_end` if given and possible, else anywhere) and returns its node.
    pub fn place_map(&mut self, units: u32, max_end: Option<u64>) -> Result<u32> {
        let idx = match max_end {
            Some(_) => match self.place(units, MAP_ID, max_end) {
                Ok(idx) => idx,
                Err(_) => self.place(units, MAP_ID, None)?,
            },
            None => self.place(units, MAP_ID, None)?,
        };
        self.bind(MAP_ID, idx);
        Ok(idx)
    }

    /// Frees a map extent placed by `place_map` in this epoch (it is fresh: free at once).
    pub fn unplace_map(&mut self, idx: u32) {
        if self.ids.get(MAP_ID) == Some(idx) {
            self.ids.remove(MAP_ID);
        }
        self.release(idx);
    }

    /// Makes retired map node `idx` the map again (a failed commit).
    pub fn restore_map(&mut self, idx: u32) {
        if let Some(pos) = self.pending.iter().rposition(|&p| p == idx) {
            self.pending.remove(pos);
        }
        debug_assert_eq!(self.hot[idx as usize].state(), State::Pending);
        let units = u64::from(self.units(idx));
        self.hot[idx as usize].set_state(State::Used(MAP_ID));
        self.pending_units -= units;
        self.used_units += units;
        self.ids.insert(MAP_ID, idx);
    }

    /// The extent of node `idx`.
    pub fn node_extent(&self, idx: u32) -> Extent {
        self.extent(idx)
    }

    /// Starts a new epoch: everything allocated so far is committed (or being committed).
    pub fn advance_epoch(&mut self) {
        if self.epoch == NIL - 1 {
            // Out of epochs (once in 2^32 commits): nothing is fresh after the advance, so
            // every extent's epoch can be the oldest one, and counting starts again.
            for (h, c) in self.hot.iter().zip(&mut self.cold) {
                if h.is_used() || h.tag == PENDING {
                    c.link = 0;
                }
            }
            self.epoch = 1;
        } else {
            self.epoch += 1;
        }
    }

    /// Makes every pending extent free (the commit that freed them is durable).
    pub fn release_pending(&mut self) {
        for idx in std::mem::take(&mut self.pending) {
            if self.hot[idx as usize].state() == State::Pending {
                self.pending_units -= u64::from(self.units(idx));
                self.make_free(idx);
            }
        }
    }

    /// Drops free extents from the end of the body; returns the units dropped.
    pub fn trim_tail(&mut self) -> u64 {
        let mut dropped = 0;
        while self.tail != NIL && self.hot[self.tail as usize].is_free() {
            let idx = self.tail;
            let units = u64::from(self.units(idx));
            self.bucket_remove(idx);
            self.unlink(idx);
            self.free_units -= units;
            self.body -= units;
            dropped += units;
        }
        dropped
    }

    /// The last node of the list, or `NIL`.
    pub fn last_node(&self) -> u32 {
        self.tail
    }

    /// The node before `idx`, or `NIL`.
    pub fn prev_node(&self, idx: u32) -> u32 {
        self.cold.get(idx as usize).map_or(NIL, |c| c.prev)
    }

    /// The block (in use, not the map) at node `from` or the nearest before it: its node, id
    /// and extent.
    pub fn block_at_or_before(&self, from: u32) -> Option<(u32, u32, Extent)> {
        let mut at = from;
        while let Some(h) = self.hot.get(at as usize) {
            if h.is_used() && h.tag != MAP_ID {
                return Some((at, h.tag, self.extent(at)));
            }
            at = self.cold[at as usize].prev;
        }
        None
    }

    // ----- List and bucket plumbing -----

    #[inline]
    fn new_node(&mut self, offset: u64, units: u32, state: State) -> Result<u32> {
        let mut hot = Hot {
            size: units,
            tag: 0,
            next: NIL,
        };
        hot.set_state(state);
        let cold = Cold {
            offset,
            prev: NIL,
            link: self.epoch,
            bnext: NIL,
        };
        if let Some(idx) = self.vacant.pop() {
            self.hot[idx as usize] = hot;
            self.cold[idx as usize] = cold;
            self.extents += 1;
            return Ok(idx);
        }
        if self.hot.len() >= NIL as usize {
            return Err(Error::OutOfSpace);
        }
        self.hot.push(hot);
        self.cold.push(cold);
        self.extents += 1;
        Ok((self.hot.len() - 1) as u32)
    }

    /// Appends a node at the end of the body (growing it).
    #[inline]
    fn push_back(&mut self, units: u32, state: State) -> Result<u32> {
        let idx = self.new_node(self.body, units, state)?;
        self.cold[idx as usize].prev = self.tail;
        if self.tail == NIL {
            self.head = idx;
        } else {
            self.hot[self.tail as usize].next = idx;
        }
        self.tail = idx;
        self.body += u64::from(units);
        Ok(idx)
    }

    /// Links new node `idx` into the list right after `at`.
    #[inline]
    fn link_after(&mut self, at: u32, idx: u32) {
        let next = self.hot[at as usize].next;
        self.cold[idx as usize].prev = at;
        self.hot[idx as usize].next = next;
        self.hot[at as usize].next = idx;
        if next == NIL {
            self.tail = idx;
        } else {
            self.cold[next as usize].prev = idx;
        }
    }

    /// Removes node `idx` from the list and frees its slab slot.
    #[inline]
    fn unlink(&mut self, idx: u32) {
        let prev = self.cold[idx as usize].prev;
        let next = self.hot[idx as usize].next;
        if prev == NIL {
            self.head = next;
        } else {
            self.hot[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.cold[next as usize].prev = prev;
        }
        self.hot[idx as usize].set_state(State::Vacant);
        self.vacant.push(idx);
        self.extents -= 1;
    }

    /// Marks node `idx` (not yet counted as free) free, coalesces it with free neighbours and
    /// lists it in its bucket.
    #[inline]
    fn make_free(&mut self, idx: u32) {
        let h = &mut self.hot[idx as usize];
        h.set_state(State::Free);
        self.free_units += u64::from(h.size);
        let next = h.next;
        let prev = self.cold[idx as usize].prev;
        let mut idx = idx;
        if prev != NIL && self.mergeable(prev, idx) {
            self.bucket_remove(prev);
            let units = self.units(prev) + self.units(idx);
            self.hot[prev as usize].set_units(units);
            self.unlink(idx);
            idx = prev;
        }
        if next != NIL && self.mergeable(idx, next) {
            self.bucket_remove(next);
            let units = self.units(idx) + self.units(next);
            self.hot[idx as usize].set_units(units);
            self.unlink(next);
        }
        self.bucket_insert(idx);
    }

    #[inline]
    fn mergeable(&self, a: u32, b: u32) -> bool {
        let (a, b) = (&self.hot[a as usize], &self.hot[b as usize]);
        a.is_free()
            && b.is_free()
            && u64::from(a.units()) + u64::from(b.units()) <= u64::from(MAX_EXTENT_UNITS)
    }

    #[inline]
    fn bucket_insert(&mut self, idx: u32) {
        let class = self.classes.of(self.units(idx));
        let head = self.buckets[class];
        self.cold[idx as usize].link = NIL;
        self.cold[idx as usize].bnext = head;
        if head != NIL {
            self.cold[head as usize].link = idx;
        }
        self.buckets[class] = idx;
        self.mask |= 1 << class;
    }

    /// Takes free node `idx` out of its class's list (its size must not have changed since
    /// it was listed: the class is computed from it).
    #[inline]
    fn bucket_remove(&mut self, idx: u32) {
        let Cold {
            link: bprev, bnext, ..
        } = self.cold[idx as usize];
        let class = self.classes.of(self.units(idx));
        if bprev == NIL {
            self.buckets[class] = bnext;
            if bnext == NIL {
                self.mask &= !(1 << class);
            }
        } else {
            self.cold[bprev as usize].bnext = bnext;
        }
        if bnext != NIL {
            self.cold[bnext as usize].link = bprev;
        }
        self.cold[idx as usize].link = NIL;
        self.cold[idx as usize].bnext = NIL;
    }

    fn bucket_iter(&self, class: usize) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.buckets.get(class).copied().unwrap_or(NIL);
        std::iter::from_fn(move || {
            let idx = at;
            at = self.cold.get(idx as usize)?.bnext;
            Some(idx)
        })
    }

    // ----- Invariants -----

    /// Checks every invariant of the structure and reports what is broken. `extent_at` turns
    /// (list index, unit offset) into a location.
    pub fn validate(&self, extent_at: &dyn Fn(u64, u64) -> Location) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut totals = |what: String| {
            problems.push(Problem {
                what,
                at: Location::Totals,
            });
        };
        if self.hot.len() != self.cold.len() {
            totals(format!(
                "{} hot and {} cold node parts",
                self.hot.len(),
                self.cold.len()
            ));
            return problems;
        }
        let live_nodes = self.hot.len() - self.vacant.len();
        if live_nodes != self.extents {
            totals(format!(
                "{} extents counted, {live_nodes} slab nodes live",
                self.extents
            ));
        }
        for &idx in &self.vacant {
            if self
                .hot
                .get(idx as usize)
                .is_none_or(|h| h.state() != State::Vacant)
            {
                totals(format!("vacant list holds node {idx}, which is not vacant"));
            }
        }
        if self.epoch == 0 || self.epoch == NIL {
            totals(format!("epoch {} is out of range", self.epoch));
        }
        let walk = self.validate_list(extent_at, &mut problems);
        self.validate_buckets(walk.free_nodes, &mut problems);
        self.validate_ids(walk.used_nodes, &mut problems);
        problems
    }

    /// The list: links, offsets, sizes, states, coalescing, the totals and the pending list.
    fn validate_list(
        &self,
        extent_at: &dyn Fn(u64, u64) -> Location,
        problems: &mut Vec<Problem>,
    ) -> Walk {
        let mut report = |what: String, at: Location| problems.push(Problem { what, at });
        let (mut offset, mut count) = (0u64, 0u64);
        let (mut prev, mut at) = (NIL, self.head);
        let mut walk = Walk::default();
        while at != NIL {
            let (Some(h), Some(c)) = (self.hot.get(at as usize), self.cold.get(at as usize)) else {
                report(format!("link to missing node {at}"), Location::Totals);
                break;
            };
            let here = extent_at(count, offset);
            if count > self.extents as u64 {
                report(
                    "the list is longer than the extent count (a cycle?)".into(),
                    here,
                );
                break;
            }
            if c.prev != prev {
                report(
                    format!("prev link {} should be {prev}", c.prev),
                    here.clone(),
                );
            }
            let at_offset = c.offset;
            if at_offset != offset {
                report(
                    format!("offset {at_offset} but the sizes before add up to {offset}"),
                    here.clone(),
                );
            }
            let units = h.units();
            if units == 0 || units > MAX_EXTENT_UNITS {
                report(format!("invalid size {units} units"), here.clone());
            }
            if let Some(what) = self.check_node(at, prev, &mut walk) {
                report(what, here);
            }
            offset += u64::from(units);
            count += 1;
            prev = at;
            at = h.next;
        }
        let mut totals = |what: String| report(what, Location::Totals);
        if prev != self.tail {
            totals(format!("tail is {} but the list ends at {prev}", self.tail));
        }
        if count != self.extents as u64 {
            totals(format!("{count} extents listed, {} counted", self.extents));
        }
        if offset != self.body {
            totals(format!(
                "extents add up to {offset} units, body is {}",
                self.body
            ));
        }
        if offset > self.max_body {
            totals(format!(
                "body of {offset} units exceeds the limit of {}",
                self.max_body
            ));
        }
        for (name, counted, kept) in [
            ("used", walk.used, self.used_units),
            ("free", walk.free, self.free_units),
            ("pending", walk.pending, self.pending_units),
        ] {
            if counted != kept {
                totals(format!("{name} units: {counted} listed, {kept} counted"));
            }
        }
        let mut listed = self.pending.clone();
        listed.sort_unstable();
        walk.pending_nodes.sort_unstable();
        if listed != walk.pending_nodes {
            totals(format!(
                "pending list holds {} entries, {} extents are pending",
                listed.len(),
                walk.pending_nodes.len()
            ));
        }
        walk
    }

    /// Counts node `at` (after `prev`) into `walk` and checks what depends on its state.
    fn check_node(&self, at: u32, prev: u32, walk: &mut Walk) -> Option<String> {
        let (h, c) = (&self.hot[at as usize], &self.cold[at as usize]);
        let units = h.units();
        match h.state() {
            State::Used(id) => {
                walk.used += u64::from(units);
                walk.used_nodes += 1;
                if id == 0 {
                    return Some("in use with id 0".into());
                } else if self.ids.get(id) != Some(at) {
                    return Some(format!(
                        "in use by {} but the id table disagrees",
                        BlockId(id)
                    ));
                } else if c.link > self.epoch {
                    return Some(format!(
                        "allocated in epoch {}, after the current one ({})",
                        c.link, self.epoch
                    ));
                }
            }
            State::Free => {
                walk.free += u64::from(units);
                walk.free_nodes += 1;
                let class = self.classes.of(units);
                if c.link == NIL && self.buckets.get(class) != Some(&at) {
                    return Some(format!(
                        "free extent of {units} units is not in the list of its class {class}"
                    ));
                }
                if prev != NIL && self.mergeable(prev, at) {
                    return Some("free extent not coalesced with the free extent before it".into());
                }
            }
            State::Pending => {
                walk.pending += u64::from(units);
                walk.pending_nodes.push(at);
            }
            State::Vacant => return Some("a vacant slot is linked".into()),
        }
        None
    }

    /// The buckets: the class table agrees with the configuration; each list well linked, of
    /// free nodes of its class; the mask; and together they hold every free node.
    fn validate_buckets(&self, free_nodes: usize, problems: &mut Vec<Problem>) {
        let mut report = |what: String, at: Location| problems.push(Problem { what, at });
        if self.buckets.len() != self.classes.count() {
            report(
                format!(
                    "{} buckets for {} size classes",
                    self.buckets.len(),
                    self.classes.count()
                ),
                Location::Totals,
            );
        }
        for (units, &class) in self.classes.small.iter().enumerate() {
            if usize::from(class) != self.classes.config.class_of(units as u32) {
                report(
                    format!("the class table puts {units} units in class {class}"),
                    Location::Totals,
                );
            }
        }
        let mut in_buckets = 0usize;
        for (class, &head) in self.buckets.iter().enumerate() {
            let here = Location::Bucket { index: class };
            if (head != NIL) != (self.mask & (1 << class) != 0) {
                report("non-empty bit disagrees with the list".into(), here.clone());
            }
            let (mut bprev, mut at) = (NIL, head);
            while at != NIL {
                let (Some(h), Some(c)) = (self.hot.get(at as usize), self.cold.get(at as usize))
                else {
                    report(format!("link to missing node {at}"), here.clone());
                    break;
                };
                in_buckets += 1;
                if in_buckets > self.hot.len() {
                    report("bucket lists loop".into(), here.clone());
                    break;
                }
                if !h.is_free() {
                    report(format!("holds node {at}, which is not free"), here.clone());
                }
                if self.classes.of(h.units()) != class {
                    report(
                        format!("holds a {}-unit extent of another class", h.units()),
                        here.clone(),
                    );
                }
                if c.link != bprev {
                    report(format!("node {at} has a wrong back link"), here.clone());
                }
                bprev = at;
                at = c.bnext;
            }
        }
        if self.buckets.len() < 64 && self.mask >> self.buckets.len() != 0 {
            report(
                "non-empty bits set past the last class".into(),
                Location::Totals,
            );
        }
        if in_buckets != free_nodes {
            report(
                format!("{in_buckets} extents in buckets, {free_nodes} free"),
                Location::Totals,
            );
        }
    }

    /// The id table: its own structure, one entry per used node, each pointing at a used node
    /// of its id.
    fn validate_ids(&self, used_nodes: usize, problems: &mut Vec<Problem>) {
        for what in self.ids.check() {
            problems.push(Problem {
                what,
                at: Location::Totals,
            });
        }
        if self.ids.len() != used_nodes {
            problems.push(Problem {
                what: format!("{} ids, {used_nodes} extents in use", self.ids.len()),
                at: Location::Totals,
            });
        }
        for (id, idx) in self.ids.iter() {
            let ok = self
                .hot
                .get(idx as usize)
                .is_some_and(|h| h.state() == State::Used(id));
            if id == 0 || !ok {
                problems.push(Problem {
                    what: format!("points at node {idx}, which is not its extent"),
                    at: Location::Id { id: BlockId(id) },
                });
            }
        }
    }
}

impl RecordSink for Allocator {
    #[inline]
    fn seen(&self, id: u32) -> bool {
        self.ids.contains(id)
    }

    #[inline]
    fn push(&mut self, record: Record) -> Result<()> {
        self.push_record(record)
    }
}

/// What [`Allocator::validate_list`] counted.
#[derive(Default)]
struct Walk {
    used_nodes: usize,
    free_nodes: usize,
    pending_nodes: Vec<u32>,
    used: u64,
    free: u64,
    pending: u64,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn alloc() -> Allocator {
        Allocator::new(BucketConfig::default(), u64::MAX)
    }

    fn check(al: &Allocator) {
        let problems = al.validate(&|index, offset| Location::Extent { index, offset });
        assert!(problems.is_empty(), "{problems:#?}");
    }

    fn states(al: &Allocator) -> Vec<(u32, State)> {
        al.iter().map(|e| (e.units, e.state)).collect()
    }

    fn new(al: &mut Allocator, units: u32) -> u32 {
        let id = al.new_id().unwrap();
        al.alloc(id, units).unwrap();
        check(al);
        id
    }

    /// Commits: the epoch moves on and pending frees become free.
    fn commit(al: &mut Allocator) {
        al.advance_epoch();
        al.release_pending();
        check(al);
    }

    #[test]
    fn allocations_append_then_reuse_split_free_space() {
        let mut al = alloc();
        let x = new(&mut al, 4);
        let y = new(&mut al, 2);
        assert_eq!(
            al.get(x).unwrap(),
            Extent {
                offset: 0,
                units: 4
            }
        );
        assert_eq!(
            al.get(y).unwrap(),
            Extent {
                offset: 4,
                units: 2
            }
        );
        // Fresh: free at once.
        assert!(al.free(x));
        check(&al);
        assert_eq!(states(&al), vec![(4, State::Free), (2, State::Used(y))]);
        // A smaller allocation splits the hole; the rest stays free.
        let z = new(&mut al, 1);
        assert_eq!(al.get(z).unwrap().offset, 0);
        assert_eq!(
            states(&al),
            vec![(1, State::Used(z)), (3, State::Free), (2, State::Used(y))]
        );
        assert_eq!((al.free_units(), al.used_units(), al.body()), (3, 3, 6));
    }

    #[test]
    fn free_coalesces_both_neighbours() {
        let mut al = alloc();
        let ids: Vec<u32> = (0..5).map(|_| new(&mut al, 2)).collect();
        al.free(ids[1]);
        al.free(ids[3]);
        check(&al);
        assert_eq!(al.extents(), 5);
        al.free(ids[2]);
        check(&al);
        assert_eq!(
            states(&al),
            vec![
                (2, State::Used(ids[0])),
                (6, State::Free),
                (2, State::Used(ids[4]))
            ]
        );
        assert_eq!(al.largest_free(), 6);
    }

    #[test]
    fn committed_frees_stay_pending_until_release() {
        let mut al = alloc();
        let x = new(&mut al, 3);
        let y = new(&mut al, 3);
        commit(&mut al);
        assert!(!al.is_fresh(x));
        al.free(x);
        check(&al);
        assert_eq!(states(&al), vec![(3, State::Pending), (3, State::Used(y))]);
        assert_eq!((al.pending_units(), al.free_units()), (3, 0));
        // Pending space is not reused: the new block goes to the end.
        let z = new(&mut al, 3);
        assert_eq!(al.get(z).unwrap().offset, 6);
        // Freeing the fresh block makes it free at once, but not merged into the pending one.
        al.free(y);
        check(&al);
        assert_eq!(
            states(&al),
            vec![
                (3, State::Pending),
                (3, State::Pending),
                (3, State::Used(z))
            ]
        );
        commit(&mut al);
        assert_eq!(states(&al), vec![(6, State::Free), (3, State::Used(z))]);
        // Now reusable.
        let w = new(&mut al, 6);
        assert_eq!(al.get(w).unwrap().offset, 0);
    }

    #[test]
    fn pending_does_not_coalesce_with_free() {
        let mut al = alloc();
        let x = new(&mut al, 2);
        let y = new(&mut al, 2);
        let _end = new(&mut al, 1);
        commit(&mut al);
        let fresh = new(&mut al, 2); // at the end
        al.free(fresh);
        al.free(x); // pending
        let _ = y;
        check(&al);
        assert_eq!(al.pending_units(), 2);
        assert!(al.iter().any(|e| e.state == State::Pending));
    }

    #[test]
    fn buckets_hold_free_extents_by_size_class() {
        let mut al = Allocator::new(BucketConfig::new([1, 2, 4, 8]).unwrap(), u64::MAX);
        let sizes = [1, 9, 2, 9, 3, 9, 5, 9, 8, 9, 20, 9];
        let ids: Vec<u32> = sizes.iter().map(|&s| new(&mut al, s)).collect();
        for (i, &id) in ids.iter().enumerate() {
            if i % 2 == 0 {
                al.free(id);
            }
        }
        check(&al);
        let classes: Vec<Vec<u32>> = (0..4)
            .map(|c| {
                let mut v: Vec<u32> = al.bucket_iter(c).map(|i| al.units(i)).collect();
                v.sort_unstable();
                v
            })
            .collect();
        assert_eq!(classes, vec![vec![1], vec![2], vec![3], vec![5, 8, 20]]);
        assert_eq!(al.mask, 0b1111);
        // 6 units: the best fit among the first few of class 3 (20, 8, 5) is the 8, at 47.
        let six = new(&mut al, 6);
        assert_eq!(al.get(six).unwrap().offset, 47);
        // Its 2-unit rest went to class 1.
        assert_eq!(al.bucket_iter(1).count(), 2);
        // 4 units: class 2 holds al 3 (too small); the head of class 3 (the 20, at 64) is taken.
        let four = new(&mut al, 4);
        assert_eq!(al.get(four).unwrap().offset, 64);
        // 30 units: nothing fits; the body grows.
        let body = al.body();
        assert_eq!(body, sizes.iter().map(|&s| u64::from(s)).sum::<u64>());
        let big = new(&mut al, 30);
        assert_eq!(al.get(big).unwrap().offset, body);
    }

    #[test]
    fn growing_merges_into_a_free_tail() {
        let mut al = alloc();
        let x = new(&mut al, 2);
        let y = new(&mut al, 2);
        al.free(y);
        assert_eq!(al.body(), 4);
        // 5 units: no fit; the free tail (2 units) grows by 3 and is taken.
        let z = new(&mut al, 5);
        assert_eq!(
            al.get(z).unwrap(),
            Extent {
                offset: 2,
                units: 5
            }
        );
        assert_eq!(al.body(), 7);
        assert_eq!(states(&al), vec![(2, State::Used(x)), (5, State::Used(z))]);
    }

    #[test]
    fn resize_in_place() {
        let mut al = alloc();
        let x = new(&mut al, 4);
        let y = new(&mut al, 4);
        let z = new(&mut al, 4);
        // Fresh shrink: the tail is free at once, and coalesces with nothing (y is used).
        assert!(al.resize_in_place(x, 1).unwrap());
        check(&al);
        assert_eq!(al.free_units(), 3);
        // Grow into the free next extent, partly then wholly.
        assert!(al.resize_in_place(x, 2).unwrap());
        check(&al);
        assert!(al.resize_in_place(x, 4).unwrap());
        check(&al);
        assert_eq!(al.extents(), 3);
        // The next extent is used: cannot grow in place.
        assert!(!al.resize_in_place(x, 5).unwrap());
        // The last block grows the body.
        assert!(al.resize_in_place(z, 10).unwrap());
        check(&al);
        assert_eq!(al.body(), 18);
        // Committed shrink: the tail is pending.
        commit(&mut al);
        assert!(al.resize_in_place(y, 1).unwrap());
        check(&al);
        assert_eq!(al.pending_units(), 3);
        commit(&mut al);
        assert_eq!(al.free_units(), 3);
        // A free tail after the block, too small: the block absorbs it and the body grows.
        al.free(z);
        assert!(al.resize_in_place(y, 1).unwrap());
        commit(&mut al);
        assert_eq!(al.trim_tail(), 13);
        assert!(al.resize_in_place(y, 2).unwrap());
        check(&al);
        assert_eq!(al.body(), 6);
    }

    #[test]
    fn relocate_keeps_the_id_and_frees_the_old_place() {
        let mut al = alloc();
        let x = new(&mut al, 2);
        let _y = new(&mut al, 2);
        commit(&mut al);
        let (old, new_e) = al.relocate(x, 4, None).unwrap();
        check(&al);
        assert_eq!(
            old,
            Extent {
                offset: 0,
                units: 2
            }
        );
        assert_eq!(
            new_e,
            Extent {
                offset: 4,
                units: 4
            }
        );
        assert_eq!(al.get(x).unwrap(), new_e);
        assert_eq!(al.pending_units(), 2);
        // Moving below al limit never extends the body.
        assert!(matches!(al.relocate(x, 4, Some(4)), Err(Error::OutOfSpace)));
        check(&al);
    }

    #[test]
    fn placing_below_a_limit_takes_the_lowest_hole() {
        let mut al = alloc();
        let ids: Vec<u32> = (0..8).map(|_| new(&mut al, 2)).collect();
        al.free(ids[5]);
        al.free(ids[1]);
        al.free(ids[3]);
        let (_, moved) = al.relocate(ids[7], 2, Some(14)).unwrap();
        assert_eq!(moved.offset, 2);
        check(&al);
        assert_eq!(al.trim_tail(), 2);
        check(&al);
        assert_eq!(al.block_at_or_before(al.last_node()).unwrap().1, ids[6]);
    }

    #[test]
    fn map_swap_and_restore() {
        let mut al = alloc();
        let m = al.place_map(2, None).unwrap();
        al.bind(MAP_ID, m);
        let x = new(&mut al, 2);
        commit(&mut al);
        let old = al.retire_map().unwrap();
        let new_map = al.place_map(2, None).unwrap();
        check(&al);
        assert_eq!(al.get(MAP_ID).unwrap().offset, 4);
        // The commit fails: back to the old map, the new one's space free.
        al.unplace_map(new_map);
        al.restore_map(old);
        check(&al);
        assert_eq!(al.get(MAP_ID).unwrap().offset, 0);
        assert_eq!(al.pending_units(), 0);
        assert!(al.contains(x));
        assert!(!al.ids().any(|id| id == MAP_ID));
    }

    #[test]
    fn records_stop_at_the_last_used_extent() {
        let mut al = alloc();
        let x = new(&mut al, 2);
        let y = new(&mut al, 3);
        let z = new(&mut al, 4);
        commit(&mut al);
        al.free(z);
        al.free(x);
        let r = al.records();
        assert_eq!(
            r,
            vec![
                Record {
                    id: 0,
                    units: 2,
                    in_use: false
                },
                Record {
                    id: y,
                    units: 3,
                    in_use: true
                },
            ]
        );
    }

    /// Every record `write_records` writes, a few slots at a time.
    fn written(al: &Allocator, slots: usize) -> Vec<Record> {
        let mut cursor = al.record_cursor();
        let mut buf = vec![0u8; slots * RECORD_SIZE];
        let mut out = Vec::new();
        while !cursor.done() {
            let n = al.write_records(&mut cursor, &mut buf);
            assert!(n > 0 && n <= slots);
            for raw in buf[..n * RECORD_SIZE].chunks_exact(RECORD_SIZE) {
                let id = u32::from_le_bytes(raw[..4].try_into().unwrap());
                let size = u32::from_le_bytes(raw[4..].try_into().unwrap());
                out.push(Record {
                    id,
                    units: size & MAX_EXTENT_UNITS,
                    in_use: size & IN_USE != 0,
                });
            }
        }
        out
    }

    #[test]
    fn written_records_follow_the_list_whatever_the_slab_order() {
        let mut al = alloc();
        assert!(written(&al, 4).is_empty());
        let ids: Vec<u32> = (0..40).map(|i| new(&mut al, 1 + i % 5)).collect();
        commit(&mut al);
        // Frees (pending, then free and coalesced), splits of free extents (new nodes out of
        // slab order) and a free tail.
        for &id in ids.iter().step_by(3) {
            al.free(id);
        }
        commit(&mut al);
        for units in [1, 2, 1, 3] {
            new(&mut al, units);
        }
        al.free(ids[39]);
        al.free(ids[1]);
        check(&al);
        let walked = al.records();
        assert!(walked.len() > 30);
        assert!(walked.last().unwrap().in_use);
        for slots in [1, 2, 7, 1000] {
            assert_eq!(written(&al, slots), walked, "{slots} slots at a time");
        }
        let (count, body) = al.map_extent();
        assert_eq!(count, walked.len());
        assert_eq!(body, walked.iter().map(|r| u64::from(r.units)).sum::<u64>());
    }

    #[test]
    fn epochs_wrap_around_without_making_old_extents_fresh() {
        let mut al = alloc();
        let old = new(&mut al, 2);
        al.epoch = NIL - 2;
        let before = new(&mut al, 2);
        commit(&mut al);
        let last = new(&mut al, 2);
        assert_eq!(al.epoch, NIL - 1);
        assert!(al.is_fresh(last));
        commit(&mut al);
        assert_eq!(al.epoch, 1);
        for id in [old, before, last] {
            assert!(!al.is_fresh(id));
        }
        // Committed extents are pending when freed; a fresh one is free at once.
        al.free(last);
        assert_eq!(al.pending_units(), 2);
        let fresh = new(&mut al, 3);
        assert!(al.is_fresh(fresh));
        al.free(fresh);
        assert_eq!(al.pending_units(), 2);
        check(&al);
        commit(&mut al);
        assert_eq!(al.pending_units(), 0);
    }

    #[test]
    fn ids_far_from_the_sequence_and_reopened_ids() {
        let mut al = alloc();
        for id in [MAP_ID - 1, 1 << 30, 7, 3] {
            al.alloc(id, 1).unwrap();
        }
        let seq: Vec<u32> = (0..5000)
            .map(|_| {
                let id = al.new_id().unwrap();
                al.alloc(id, 1).unwrap();
                id
            })
            .collect();
        assert!(!seq.contains(&7) && !seq.contains(&3) && !seq.contains(&(1 << 30)));
        for &id in seq.iter().step_by(2) {
            assert!(al.free(id));
        }
        check(&al);
        let m = al.place_map(1, None).unwrap();
        al.bind(MAP_ID, m);
        let records = al.records();
        let re = Allocator::from_records(BucketConfig::default(), u64::MAX, &records).unwrap();
        check(&re);
        let mut a: Vec<u32> = al.ids().collect();
        let mut b: Vec<u32> = re.ids().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        // The largest id is MAP_ID - 1: new ids start again from 1, skipping live ones.
        let mut re = re;
        assert_eq!(re.new_id(), Some(1));
        assert_eq!(re.new_id(), Some(4));
    }

    #[test]
    fn from_records_coalesces_and_restores_ids() {
        let free = |units| Record {
            id: 0,
            units,
            in_use: false,
        };
        let used = |id, units| Record {
            id,
            units,
            in_use: true,
        };
        let recs = [
            free(1),
            free(2),
            used(7, 1),
            used(MAP_ID, 8),
            free(3),
            used(3, 2),
        ];
        let mut al = Allocator::from_records(BucketConfig::default(), u64::MAX, &recs).unwrap();
        check(&al);
        assert_eq!(al.extents(), 5);
        assert_eq!(al.body(), 17);
        assert_eq!(al.get(7).unwrap().offset, 3);
        assert!(!al.is_fresh(7));
        assert_eq!(al.new_id(), Some(8));
        let mut ids: Vec<u32> = al.ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![3, 7]);
    }

    #[test]
    fn ids_skip_live_and_reserved_ones_and_wrap() {
        let mut al = alloc();
        al.alloc(1, 1).unwrap();
        al.alloc(2, 1).unwrap();
        assert_eq!(al.new_id(), Some(3));
        al.next_id = MAP_ID - 1;
        assert_eq!(al.new_id(), Some(MAP_ID - 1));
        assert_eq!(al.new_id(), Some(3));
    }

    #[test]
    fn body_limit_is_out_of_space() {
        let mut al = Allocator::new(BucketConfig::default(), 10);
        let x = new(&mut al, 8);
        assert!(matches!(al.alloc(99, 3), Err(Error::OutOfSpace)));
        assert!(matches!(al.resize_in_place(x, 11), Err(Error::OutOfSpace)));
        check(&al);
        assert!(al.resize_in_place(x, 10).unwrap());
        check(&al);
    }

    #[test]
    fn huge_free_extents_do_not_coalesce_past_the_size_limit() {
        let mut al = alloc();
        let x = new(&mut al, MAX_EXTENT_UNITS);
        let y = new(&mut al, 5);
        let _z = new(&mut al, 1);
        al.free(x);
        al.free(y);
        check(&al);
        assert_eq!(al.extents(), 3);
        let big = new(&mut al, MAX_EXTENT_UNITS);
        assert_eq!(al.get(big).unwrap().offset, 0);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(u32),
        Free(usize),
        Resize(usize, u32),
        Move(usize, u32),
        Commit,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1u32..40).prop_map(Op::Alloc),
            3 => any::<usize>().prop_map(Op::Free),
            2 => (any::<usize>(), 1u32..60).prop_map(|(i, u)| Op::Resize(i, u)),
            1 => (any::<usize>(), 1u32..60).prop_map(|(i, u)| Op::Move(i, u)),
            1 => Just(Op::Commit),
        ]
    }

    proptest::proptest! {
        /// Random operations against a model of id → size; every invariant holds after each,
        /// and a commit leaves nothing pending.
        #[test]
        fn random_operations_keep_every_invariant(
            ops in proptest::collection::vec(op(), 1..200),
            classes in proptest::sample::select(vec![
                vec![1u32],
                vec![1, 2, 4, 8, 16],
                vec![3, 7, 20],
            ]),
        ) {
            let mut al = Allocator::new(BucketConfig::new(classes).unwrap(), u64::MAX);
            let mut model: BTreeMap<u32, u32> = BTreeMap::new();
            for op in ops {
                let pick = |i: usize| model.keys().nth(i % model.len().max(1)).copied();
                match op {
                    Op::Alloc(units) => {
                        let id = al.new_id().unwrap();
                        al.alloc(id, units).unwrap();
                        model.insert(id, units);
                    }
                    Op::Free(i) => {
                        if let Some(id) = pick(i) {
                            proptest::prop_assert!(al.free(id));
                            model.remove(&id);
                        }
                    }
                    Op::Resize(i, units) => {
                        if let Some(id) = pick(i) {
                            if al.resize_in_place(id, units).unwrap() {
                                model.insert(id, units);
                            } else {
                                proptest::prop_assert!(units > model[&id]);
                            }
                        }
                    }
                    Op::Move(i, units) => {
                        if let Some(id) = pick(i) {
                            let (node, old, new) = al.begin_move(id, units, None).unwrap();
                            proptest::prop_assert_eq!(old.units, model[&id]);
                            let old_end = old.offset + u64::from(old.units);
                            let new_end = new.offset + u64::from(new.units);
                            proptest::prop_assert!(new_end <= old.offset || new.offset >= old_end);
                            al.finish_move(id, node);
                            model.insert(id, units);
                        }
                    }
                    Op::Commit => {
                        al.advance_epoch();
                        al.release_pending();
                        al.trim_tail();
                        proptest::prop_assert_eq!(al.pending_units(), 0);
                        if let Some(last) = al.iter().last() {
                            proptest::prop_assert!(matches!(last.state, State::Used(_)));
                        }
                    }
                }
                let problems = al.validate(&|index, offset| Location::Extent { index, offset });
                proptest::prop_assert!(problems.is_empty(), "{:#?}", problems);
                let sizes: BTreeMap<u32, u32> =
                    model.keys().map(|&id| (id, al.get(id).unwrap().units)).collect();
                proptest::prop_assert_eq!(&sizes, &model);
                proptest::prop_assert_eq!(al.live(), model.len());
                let used: u64 = model.values().map(|&u| u64::from(u)).sum();
                proptest::prop_assert_eq!(al.used_units(), used);
            }
        }
    }

    #[test]
    fn validate_catches_broken_invariants() {
        let mut al = alloc();
        let ids: Vec<u32> = (0..4).map(|_| new(&mut al, 2)).collect();
        al.free(ids[1]);
        let loc = |index, offset| Location::Extent { index, offset };

        let mut b = Allocator {
            ids: al.ids.clone(),
            pending: al.pending.clone(),
            classes: al.classes.clone(),
            buckets: al.buckets.clone(),
            hot: al.hot.clone(),
            cold: al.cold.clone(),
            vacant: al.vacant.clone(),
            ..Allocator::new(BucketConfig::default(), u64::MAX)
        };
        b.head = al.head;
        b.tail = al.tail;
        b.extents = al.extents;
        b.body = al.body;
        b.mask = al.mask;
        b.used_units = al.used_units;
        b.free_units = al.free_units;
        assert!(b.validate(&loc).is_empty());

        // A wrong offset, al wrong size class, al stale id entry, al missing bucket bit.
        let idx = al.ids.get(ids[2]).unwrap() as usize;
        b.cold[idx].offset += 1;
        assert!(!b.validate(&loc).is_empty());
        b.cold[idx].offset -= 1;
        b.ids.insert(ids[2], al.ids.get(ids[3]).unwrap());
        assert!(!b.validate(&loc).is_empty());
        b.ids.insert(ids[2], idx as u32);
        b.mask = 0;
        assert!(!b.validate(&loc).is_empty());
        b.mask = al.mask;
        b.body += 1;
        assert!(!b.validate(&loc).is_empty());
        b.body -= 1;
        // Two adjacent free extents.
        let third = al.ids.get(ids[2]).unwrap();
        b.ids.remove(ids[2]);
        b.hot[third as usize].set_state(State::Free);
        b.used_units -= 2;
        b.free_units += 2;
        b.bucket_insert(third);
        let problems = b.validate(&loc);
        assert!(
            problems.iter().any(|p| p.what.contains("coalesced")),
            "{problems:?}"
        );
    }
}
