//! [`FileBlock`]: the allocator over a block cache, its commit protocol and compaction.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use blockcache::{Block, BlockCache};
use pageio::PageIo;

use crate::alloc::{Allocator, Extent, State};
use crate::error::{Location, Problem};
use crate::format::{
    self, MAP_ID, MAX_EXTENT_UNITS, MAX_FILE_LEN, MAX_ROOTS, Record, SUPERBLOCK_SIZE, Slot,
    Superblock, records_per_page, valid_root_name,
};
use crate::{BlockId, CompactLimit, Config, Error, Result};

/// The size of the chunks a block's bytes are copied in when it moves.
const COPY_CHUNK: usize = 64 * 1024;

/// How many commits one [`FileBlock::compact`] call makes at most.
const MAX_COMPACT_ROUNDS: u32 = 8;

/// The most map pages read through the cache at once (fewer if the cache is smaller).
const MAP_READ_PAGES: usize = 16;

/// An allocator of blocks in the body of a file, with an atomically committed extent map.
///
/// Blocks are named by a [`BlockId`] that stays the same across moves and reopens. Their bytes
/// are reached through [`blockcache::Block`]s (zero copy inside one page). Mutations of the
/// allocation take `&mut self`; reads and writes of block bytes take `&self`, so a block can
/// never be live while [`flush`](Self::flush) or [`compact`](Self::compact) runs.
///
/// # Durability
///
/// [`flush`](Self::flush) commits: after it returns, a crash reopens to exactly this state.
/// A crash at any earlier point reopens to the previous commit, with these rules for block
/// bytes:
/// - a block allocated since the last commit lives in space that was free in that commit, so
///   writing it cannot disturb the committed state;
/// - writing into a block that existed at the last commit changes it in place, like `pwrite`
///   into a file: such writes are durable after the next flush, and a crash before it may leave
///   any mix of old and new bytes in that block;
/// - space freed since the last commit (freed or shrunk blocks, the old place of a moved block,
///   the old map) is not reused until the commit that frees it is durable.
///
/// A failed sync ends the file's life as a commit point: see [`flush`](Self::flush)'s errors.
/// Reopen it from its last commit with [`open`](Self::open).
///
/// Dropping a `FileBlock` without flushing discards the changes since the last flush.
pub struct FileBlock {
    io: Arc<dyn PageIo>,
    cache: BlockCache,
    page_size: usize,
    alloc_unit: u32,
    /// File offset of the body: two pages.
    data_start: u64,
    /// How many map pages are read through the cache at once.
    map_read_pages: usize,
    alloc: Allocator,
    /// Named roots, in table order.
    roots: Vec<(String, u32)>,
    /// The superblock of the last commit (or of the commit in flight, see `unsettled`).
    committed: Superblock,
    /// The allocation or the roots changed since the last commit.
    dirty: bool,
}

/// A snapshot of a [`FileBlock`]'s space, from [`FileBlock::stats`]. Sizes are in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// The file's length as the block cache sees it: the device's length at open, raised by
    /// writes since and cut by compaction.
    pub file_len: u64,
    /// The body's length: superblocks excluded, every extent included.
    pub body_len: u64,
    /// Bytes in live blocks.
    pub used: u64,
    /// Bytes of the extent map.
    pub map_len: u64,
    /// Bytes free for reuse.
    pub free: u64,
    /// Bytes freed since the last commit, reusable after the next one.
    pub pending: u64,
    /// The largest free extent.
    pub largest_free: u64,
    /// Extents in the body: blocks, the map, free and pending.
    pub extents: usize,
    /// Live blocks.
    pub live_blocks: usize,
    /// `1 - largest_free / free`, or 0 when nothing is free: 0 when all free space is one
    /// extent, near 1 when it is scattered.
    pub fragmentation: f64,
    /// The generation of the last commit.
    pub generation: u64,
    /// The allocation unit.
    pub alloc_unit: u32,
    /// The page size.
    pub page_size: usize,
}

/// What a [`FileBlock::compact`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Blocks moved.
    pub blocks_moved: u64,
    /// Bytes of blocks moved.
    pub bytes_moved: u64,
    /// Commits made.
    pub commits: u32,
    /// The device's length before, in bytes (whole pages).
    pub old_file_len: u64,
    /// The device's length after, in bytes (whole pages).
    pub new_file_len: u64,
    /// Whether the limit stopped the moves early.
    pub limited: bool,
    /// Whether the device was cut to the end of the body.
    pub shrink: Shrink,
}

/// Whether [`FileBlock::compact`] shrank the device, from [`CompactReport::shrink`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shrink {
    /// The device was no longer than the body: nothing to cut.
    #[default]
    NotNeeded,
    /// The device was truncated to the end of the body.
    Truncated,
    /// The backend cannot truncate, so the device kept its length.
    Unsupported,
}

/// What an extent of the body holds, from [`FileBlock::extents`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// A block.
    Block(BlockId),
    /// The extent map.
    Map,
    /// Free space.
    Free,
    /// Space freed since the last commit.
    Pending,
}

/// One extent of the body, from [`FileBlock::extents`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentInfo {
    /// Its file offset.
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
    /// What it holds.
    pub kind: ExtentKind,
}

impl FileBlock {
    /// Creates an empty file on `io`: writes the (one-page) extent map, syncs, writes both
    /// superblocks and syncs again.
    ///
    /// The device must be empty, or hold only what a `create` with the same configuration,
    /// interrupted by a crash, leaves: no valid superblock, no more pages than `create` writes,
    /// and each byte either what `create` writes there or zero. Such a device is cut to zero
    /// pages first (when the backend can truncate) and created afresh, so calling `create`
    /// again after a crash during `create` works. A device holding a committed file is refused
    /// with [`Error::AlreadyCreated`] (open it instead); one holding anything else — data of
    /// another kind, a file whose superblocks are both damaged, a file of a newer format —
    /// with [`Error::NotEmpty`], and is left as it was.
    pub fn create(io: Arc<dyn PageIo>, config: Config) -> Result<Self> {
        let page_size = io.page_size();
        config.check_alloc_unit(page_size)?;
        let pages = io.num_pages()?;
        if pages != 0 {
            check_interrupted_create(&*io, pages, &config)?;
            match io.truncate(0) {
                Ok(()) | Err(pageio::Error::Unsupported { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (alloc_unit, cache_config, buckets) = config.into_parts();
        let map_read_pages = cache_config.capacity().clamp(1, MAP_READ_PAGES);
        let cache = BlockCache::new(Arc::clone(&io), cache_config)?;
        let data_start = 2 * page_size as u64;
        let alloc = Allocator::new(buckets, max_body(data_start, alloc_unit));
        let committed = Superblock {
            generation: 0,
            page_size: page_size as u32,
            alloc_unit,
            body_units: 0,
            map_offset: 0,
            map_units: 0,
            map_pages: 0,
            map_records: 0,
            roots: Vec::new(),
        };
        let mut file = Self {
            io,
            cache,
            page_size,
            alloc_unit,
            data_start,
            map_read_pages,
            alloc,
            roots: Vec::new(),
            committed,
            dirty: true,
        };
        // Generation 1 goes to superblock B; then the same state as generation 0 to A, so both
        // superblocks are valid from the start.
        file.commit(None)?;
        let mut first = file.committed.clone();
        first.generation = 0;
        file.write_superblock(&first)?;
        file.cache.flush()?;
        Ok(file)
    }

    /// Opens the file on `io`: reads both superblocks, takes the valid one with the highest
    /// generation (a superblock with a bad magic, checksum or field is ignored), then reads and
    /// checks its extent map. The allocation unit is the file's; `config`'s is not used.
    ///
    /// Fails with [`Error::Corrupt`] naming the location if neither superblock is valid, if the
    /// chosen one's map is damaged, or if the file is shorter than its body; with
    /// [`Error::PageSizeMismatch`] if the file was made with another page size.
    pub fn open(io: Arc<dyn PageIo>, config: Config) -> Result<Self> {
        let page_size = io.page_size();
        let (_, cache_config, buckets) = config.into_parts();
        let map_read_pages = cache_config.capacity().clamp(1, MAP_READ_PAGES);
        let cache = BlockCache::new(Arc::clone(&io), cache_config)?;
        let (slot, sb) = read_superblocks(&cache, page_size)?;
        let file_len = cache.len();
        if file_len < sb.body_end() {
            return Err(Error::corrupt(
                format!(
                    "the file is shorter than the body, which ends at {}",
                    sb.body_end()
                ),
                Location::FileLength { len: file_len },
            ));
        }
        // The map goes straight from the cache, a few pages at a time, into the allocator.
        let data_start = 2 * page_size as u64;
        let mut alloc = Allocator::new(buckets, max_body(data_start, sb.alloc_unit));
        // The map lies inside the file (checked above), so its record count is no bigger than
        // the file makes possible.
        alloc.reserve(sb.map_records as usize);
        read_map(&cache, &sb, map_read_pages, &mut alloc)?;
        alloc.finish_records();
        for (index, (name, id)) in sb.roots.iter().enumerate() {
            if !alloc.contains(id.0) {
                return Err(Error::corrupt(
                    format!("root {name:?} names {id}, which is not a live block"),
                    Location::Root {
                        slot: Some(slot),
                        index,
                    },
                ));
            }
        }
        Ok(Self {
            io,
            cache,
            page_size,
            alloc_unit: sb.alloc_unit,
            data_start,
            map_read_pages,
            alloc,
            roots: sb.roots.iter().map(|(n, id)| (n.clone(), id.0)).collect(),
            committed: sb,
            dirty: false,
        })
    }

    // ----- Allocation -----

    /// Allocates a block of at least `size` bytes (rounded up to whole allocation units) and
    /// returns its new id. Its bytes are unspecified (old contents of freed space, or zeros)
    /// until written.
    pub fn alloc(&mut self, size: u64) -> Result<BlockId> {
        let units = self.units_for(size)?;
        let id = self.alloc.new_id().ok_or_else(|| Error::OutOfSpace)?;
        self.alloc.alloc(id, units)?;
        self.dirty = true;
        Ok(BlockId(id))
    }

    /// Allocates a block of at least `size` bytes under the id the caller chose. Fails with
    /// [`Error::IdInUse`] if it is live, [`Error::ReservedId`] for 0 and
    /// [`MAP_ID`](format::MAP_ID).
    pub fn alloc_with_id(&mut self, id: BlockId, size: u64) -> Result<()> {
        if id.0 == 0 || id.0 == MAP_ID {
            return Err(Error::ReservedId { id });
        }
        if self.alloc.contains(id.0) {
            return Err(Error::IdInUse { id });
        }
        let units = self.units_for(size)?;
        self.alloc.alloc(id.0, units)?;
        self.dirty = true;
        Ok(())
    }

    /// Changes a block's size, keeping its id and its bytes (up to the smaller size). Shrinking
    /// and growing into a free next extent (or past the end of the body) happen in place;
    /// otherwise the block moves and its bytes are copied.
    pub fn realloc(&mut self, id: BlockId, size: u64) -> Result<()> {
        self.extent_of(id)?;
        let units = self.units_for(size)?;
        if self.alloc.resize_in_place(id.0, units)? {
            self.dirty = true;
            return Ok(());
        }
        self.move_block(id.0, units, None)?;
        self.dirty = true;
        Ok(())
    }

    /// Frees a block. Its id may be handed out again. Roots naming it are cleared.
    pub fn free(&mut self, id: BlockId) -> Result<()> {
        if id.0 == MAP_ID || !self.alloc.free(id.0) {
            return Err(Error::UnknownId { id });
        }
        if !self.roots.is_empty() {
            self.roots.retain(|&(_, root)| root != id.0);
        }
        self.dirty = true;
        Ok(())
    }

    /// A block's size in bytes: a whole number of allocation units.
    pub fn size(&self, id: BlockId) -> Result<u64> {
        Ok(self.bytes(self.extent_of(id)?.units))
    }

    /// Whether `id` names a live block.
    #[must_use]
    pub fn contains(&self, id: BlockId) -> bool {
        id.0 != MAP_ID && self.alloc.contains(id.0)
    }

    /// The ids of every live block, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.alloc.ids().map(BlockId)
    }

    /// Every extent of the body in offset order.
    pub fn extents(&self) -> impl Iterator<Item = ExtentInfo> + '_ {
        self.alloc.iter().map(|e| ExtentInfo {
            offset: self.file_offset(e.offset),
            len: self.bytes(e.units),
            kind: match e.state {
                State::Used(MAP_ID) => ExtentKind::Map,
                State::Used(id) => ExtentKind::Block(BlockId(id)),
                State::Pending => ExtentKind::Pending,
                State::Free | State::Vacant => ExtentKind::Free,
            },
        })
    }

    // ----- Block bytes -----

    /// The whole block, for reading. Like any [`Block`], it cannot overlap another live
    /// block: reading the same block twice at once is a [`blockcache::Error::Overlap`].
    pub fn read(&self, id: BlockId) -> Result<Block<'_>> {
        let (offset, len) = self.byte_range(id)?;
        self.block(offset, len, false)
    }

    /// The whole block, for changing: its current bytes, written back when changed.
    pub fn write(&self, id: BlockId) -> Result<Block<'_>> {
        self.read(id)
    }

    /// Bytes `offset..offset + len` of the block, for reading. Fails with
    /// [`Error::OutOfBounds`] if the range is not inside the block.
    pub fn read_at(&self, id: BlockId, offset: u64, len: usize) -> Result<Block<'_>> {
        let start = self.sub_range(id, offset, len)?;
        self.block(start, len, false)
    }

    /// Bytes `offset..offset + len` of the block, for changing (read-modify-write).
    pub fn write_at(&self, id: BlockId, offset: u64, len: usize) -> Result<Block<'_>> {
        self.read_at(id, offset, len)
    }

    /// Bytes `offset..offset + len` of the block, which the caller overwrites entirely: pages
    /// the range covers whole are not read first (their bytes start unspecified), which saves
    /// the reads of a fresh block's first write.
    pub fn overwrite_at(&self, id: BlockId, offset: u64, len: usize) -> Result<Block<'_>> {
        let start = self.sub_range(id, offset, len)?;
        self.block(start, len, true)
    }

    // ----- Roots -----

    /// Names `id` as root `name` (1 to 24 bytes, no NUL), or removes the root with `None`.
    /// Up to 16 roots; they are committed with the allocation. A root always names a live
    /// block: freeing the block clears it.
    pub fn set_root(&mut self, name: &str, id: Option<BlockId>) -> Result<()> {
        if !valid_root_name(name) {
            return Err(Error::RootName { name: name.into() });
        }
        let pos = self.roots.iter().position(|(n, _)| n == name);
        match (id, pos) {
            (None, None) => return Ok(()),
            (None, Some(pos)) => {
                self.roots.remove(pos);
            }
            (Some(id), pos) => {
                self.extent_of(id)?;
                match pos {
                    Some(pos) => self.roots[pos].1 = id.0,
                    None if self.roots.len() >= MAX_ROOTS => return Err(Error::RootsFull),
                    None => self.roots.push((name.to_owned(), id.0)),
                }
            }
        }
        self.dirty = true;
        Ok(())
    }

    /// The block named by root `name`.
    #[must_use]
    pub fn root(&self, name: &str) -> Option<BlockId> {
        self.roots
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, id)| BlockId(id))
    }

    /// Every root, in table order.
    pub fn roots(&self) -> impl Iterator<Item = (&str, BlockId)> {
        self.roots.iter().map(|(n, id)| (n.as_str(), BlockId(*id)))
    }

    // ----- Commit -----

    /// Commits: makes every change since the last flush durable, atomically.
    ///
    /// 1. The old map's extent becomes pending; the new map is placed in free space (or at the
    ///    end) and written into the cache. Its records describe the body up to its last extent
    ///    in use, pending extents as free.
    /// 2. The cache is flushed: block bytes and map pages are written and synced.
    /// 3. The superblock of the next generation is written to the slot the current one is
    ///    not in, and synced: this is the commit point.
    /// 4. Pending extents become free; free extents at the end of the body are dropped.
    ///
    /// With no change to the allocation or roots since the last commit, only step 2 runs (block
    /// bytes written in place become durable) and the generation stays.
    ///
    /// # Errors
    ///
    /// - When a *write* fails (step 2 or 3), nothing is lost and nothing is committed yet (or,
    ///   if the superblock write failed, maybe): `flush` may be called again, and space freed
    ///   since the previous commit stays unused until a flush succeeds.
    /// - When a *sync* fails, the file is done: a failed `fsync` may have dropped writes the
    ///   caches no longer hold (on Linux it reports the error once and may mark the lost pages
    ///   clean), so no retry can know what reached the disk. Every later `flush`, `compact` and
    ///   read of an uncached page fails with an error for which
    ///   [`Error::is_previous_io`] is true. Reopen with [`open`](Self::open): a crash or a
    ///   reopen after a failed sync finds the previous commit, or this one if its superblock
    ///   reached the disk, never a mix.
    pub fn flush(&mut self) -> Result<()> {
        if self.dirty {
            self.commit(None)
        } else {
            Ok(self.cache.flush()?)
        }
    }

    /// Commits a new map (see [`flush`](Self::flush)). With `map_below`, the new map goes into
    /// the lowest free extent below that offset if one fits.
    fn commit(&mut self, map_below: Option<u64>) -> Result<()> {
        let old_map = self.alloc.retire_map();
        let staged = match self.stage_map(map_below) {
            Ok((node, sb)) => match self.make_durable(&sb) {
                Ok(()) => Ok(sb),
                Err(e) => Err((Some(node), e)),
            },
            Err(failed) => Err(failed),
        };
        let sb = match staged {
            Ok(sb) => sb,
            Err((node, e)) => {
                if let Some(node) = node {
                    self.alloc.unplace_map(node);
                }
                if let Some(old) = old_map {
                    self.alloc.restore_map(old);
                }
                return Err(e);
            }
        };
        // From here the commit is in flight: the new superblock is in the cache and reaches
        // the device with the next flush of the cache at the latest, whatever happens. So
        // everything allocated so far belongs to a committed state, and nothing pending may be
        // reused until a sync has succeeded after this point.
        self.committed = sb;
        self.alloc.advance_epoch();
        self.dirty = false;
        if let Err(e) = self.cache.flush() {
            // Unknown whether the new superblock is durable. Keep the pending extents pending
            // and commit again next time (which makes this superblock durable first).
            self.dirty = true;
            return Err(e.into());
        }
        self.alloc.release_pending();
        self.alloc.trim_tail();
        Ok(())
    }

    /// Places the new map and writes it into the cache; returns its node and the superblock
    /// that will point at it. On error the node (if placed) is returned for undoing.
    fn stage_map(
        &mut self,
        map_below: Option<u64>,
    ) -> std::result::Result<(u32, Superblock), (Option<u32>, Error)> {
        let ps = self.page_size;
        let per_page = records_per_page(ps);
        let units_per_page = (ps / self.alloc_unit as usize) as u64;
        // A first guess from the current record count; the placement can add a record (a
        // split), or, when the map lands past the last block, the extents before it.
        let mut guess = self.alloc.map_extent().0 + 1;
        for _ in 0..2 {
            let pages = guess.div_ceil(per_page).max(1) as u64;
            let units = pages
                .checked_mul(units_per_page)
                .filter(|&u| u <= u64::from(MAX_EXTENT_UNITS))
                .ok_or((None, Error::OutOfSpace))? as u32;
            let node = self
                .alloc
                .place_map(units, map_below)
                .map_err(|e| (None, e))?;
            let (records, body_units) = self.alloc.map_extent();
            if records <= pages as usize * per_page {
                let sb = self.new_superblock(node, pages as u32, records, body_units);
                if let Err(e) = self.write_map(&sb) {
                    return Err((Some(node), e));
                }
                return Ok((node, sb));
            }
            self.alloc.unplace_map(node);
            // The placement adds at most one extent to the list.
            guess = self.alloc.extents() + 2;
        }
        Err((None, Error::OutOfSpace))
    }

    fn new_superblock(
        &self,
        map_node: u32,
        map_pages: u32,
        map_records: usize,
        body_units: u64,
    ) -> Superblock {
        let map = self.alloc.node_extent(map_node);
        Superblock {
            generation: self.committed.generation + 1,
            page_size: self.page_size as u32,
            alloc_unit: self.alloc_unit,
            body_units,
            map_offset: map.offset,
            map_units: map.units,
            map_pages,
            map_records: map_records as u32,
            roots: self
                .roots
                .iter()
                .map(|(n, id)| (n.clone(), BlockId(*id)))
                .collect(),
        }
    }

    /// Writes the map pages of `sb` into the cache, encoded straight from the extent list.
    ///
    /// The map is written through blocks of one device page each: the pages it covers whole
    /// are cache pages it writes in place and that are never read (at most the two at its
    /// ends are), whatever the map's alignment. The blocks stay pinned until the last one is
    /// written, so no page is written back on its own to make room in the cache: the flush
    /// that follows writes them all, in batches.
    fn write_map(&self, sb: &Superblock) -> Result<()> {
        let ps = self.page_size;
        let start = sb.map_file_offset();
        let pages = sb.map_pages as usize;
        let mut cursor = self.alloc.record_cursor();
        let mut encode = |index: usize, page: &mut [u8]| {
            format::encode_map_page_with(index as u32, sb.generation, page, |slots| {
                self.alloc.write_records(&mut cursor, slots)
            });
        };
        let mut pinned = Vec::with_capacity(pages + 1);
        let skew = (start % ps as u64) as usize;
        if skew == 0 {
            // Map pages are device pages.
            for index in 0..pages {
                let mut page = self.cache.get_for_write(start + (index * ps) as u64, ps)?;
                encode(index, &mut page);
                pinned.push(page);
            }
        } else {
            // Map page `i` is the last `ps - skew` bytes of device page `i` (counted from the
            // map's first) and the first `skew` bytes of device page `i + 1`.
            let head = ps - skew;
            let mut scratch = vec![0u8; ps];
            let mut device = self.cache.get_for_write(start, head)?;
            let mut at = 0;
            for index in 0..pages {
                encode(index, &mut scratch);
                device[at..at + head].copy_from_slice(&scratch[..head]);
                let next_start = start + ((index + 1) * ps - skew) as u64;
                let next_len = if index + 1 == pages { skew } else { ps };
                let mut next = self.cache.get_for_write(next_start, next_len)?;
                next[..skew].copy_from_slice(&scratch[head..]);
                pinned.push(std::mem::replace(&mut device, next));
                at = skew;
            }
            pinned.push(device);
        }
        debug_assert!(cursor.done(), "records left over");
        Ok(())
    }

    /// Step 2, then the superblock into the cache (not yet flushed).
    fn make_durable(&mut self, sb: &Superblock) -> Result<()> {
        // The device must cover the body the new map describes even where no block was ever
        // written, or a reopen would find the file too short: rewrite the body's last byte.
        let body_end = sb.body_end();
        let device_len = self.io.num_pages()?.saturating_mul(self.page_size as u64);
        if device_len < body_end {
            self.ensure_end(body_end)?;
            let mut last = self.cache.get(body_end - 1, 1)?;
            // Taking the bytes mutably marks the page dirty; the byte itself is unchanged.
            let _: &mut [u8] = &mut last;
        }
        self.cache.flush()?;
        self.write_superblock(sb)
    }

    /// Writes superblock `sb` into its slot's page in the cache.
    fn write_superblock(&self, sb: &Superblock) -> Result<()> {
        let bytes = format::encode_superblock(sb)?;
        let slot = Slot::for_generation(sb.generation);
        let ps = self.page_size;
        let mut page = self.cache.get_for_write(slot.page() * ps as u64, ps)?;
        let (header, rest) = page.split_at_mut(SUPERBLOCK_SIZE);
        header.copy_from_slice(&bytes);
        rest.fill(0);
        Ok(())
    }

    // ----- Compaction -----

    /// Moves blocks from the end of the body into free space nearer its start (keeping their
    /// ids and bytes), commits, and shrinks the file to the end of the last extent in use.
    ///
    /// Each round visits every block, last first, and moves it into the lowest-offset free
    /// extent below it that fits (of the smallest size class that has one), until `limit` is
    /// reached; then it commits, with the new map placed as low as it fits. Space a round
    /// frees (old places of committed blocks, the old map) becomes reusable only after its
    /// commit, so rounds repeat while they make progress (at most 8 commits). Finally the file
    /// is truncated to the end of the last extent in use and synced. Given enough room in the
    /// holes, the file ends up as long as the live blocks plus the map and the superblocks,
    /// rounded up to a page; blocks that fit no hole below them stay where they are.
    ///
    /// A limit stops the moves, not the commits: the call always leaves a committed state, and
    /// like [`flush`](Self::flush) it is a durability barrier: everything written before it is
    /// durable when it returns `Ok`, even when nothing needed to move or commit.
    ///
    /// A backend that cannot truncate ([`PageIo::truncate`] is unsupported) keeps its length:
    /// the moves and commits happen, and the report's [`shrink`](CompactReport::shrink) says
    /// [`Shrink::Unsupported`] (the space past the body stays allocated on the device).
    pub fn compact(&mut self, limit: CompactLimit) -> Result<CompactReport> {
        let start = Instant::now();
        let ps = self.page_size as u64;
        let mut report = CompactReport {
            old_file_len: self.io.num_pages()?.saturating_mul(ps),
            ..CompactReport::default()
        };
        for _ in 0..MAX_COMPACT_ROUNDS {
            let moved = self.move_blocks_down(limit, start, &mut report)?;
            let released = self.alloc.pending_units() > 0;
            if !self.dirty && !released && !self.map_can_move_down() {
                break;
            }
            let below = self.alloc.get(MAP_ID).map(|m| m.offset);
            self.commit(below)?;
            report.commits += 1;
            // Another round helps if this one moved blocks or freed space (holes that are
            // reusable now), or if the map could now move below the last block.
            if report.limited || (moved == 0 && !released && !self.map_can_move_down()) {
                break;
            }
        }
        if self.dirty || self.alloc.pending_units() > 0 {
            self.commit(None)?;
            report.commits += 1;
        }
        let end = self.file_offset(self.alloc.body());
        report.shrink = Shrink::NotNeeded;
        if self.io.num_pages()? > end.div_ceil(ps) {
            report.shrink = match self.cache.truncate(end) {
                Ok(()) => Shrink::Truncated,
                // A backend that cannot truncate keeps its length; the commit stands.
                Err(blockcache::Error::Cache(pagecache::Error::Truncate {
                    source: pageio::Error::Unsupported { .. },
                    ..
                })) => Shrink::Unsupported,
                Err(e) => return Err(e.into()),
            };
        }
        // A durability barrier whatever happened above: bytes written in place before the call
        // are durable (a commit flushed them already; this is then cheap), and so is the cut.
        self.cache.flush()?;
        report.new_file_len = self.io.num_pages()?.saturating_mul(ps);
        Ok(report)
    }

    /// One round of moves: every block, last first, moves to the lowest free extent below it
    /// that fits, if any. Returns how many blocks moved.
    fn move_blocks_down(
        &mut self,
        limit: CompactLimit,
        start: Instant,
        report: &mut CompactReport,
    ) -> Result<u64> {
        let mut moved = 0;
        let mut cursor = self.alloc.last_node();
        while let Some((node, id, extent)) = self.alloc.block_at_or_before(cursor) {
            // The node before stays a node through the move: a merge of the released extent
            // into it keeps it, and a split of it keeps it as the first part.
            cursor = self.alloc.prev_node(node);
            let bytes = self.bytes(extent.units);
            let over = match limit {
                CompactLimit::Unbounded => false,
                CompactLimit::Bytes(max) => report.bytes_moved.saturating_add(bytes) > max,
                CompactLimit::Time(max) => start.elapsed() >= max,
            };
            if over {
                report.limited = true;
                break;
            }
            if self.alloc.largest_free() < extent.units
                || !self.alloc.has_fit_below(extent.units, extent.offset)
            {
                continue;
            }
            self.move_block(id, extent.units, Some(extent.offset))?;
            self.dirty = true;
            moved += 1;
            report.blocks_moved += 1;
            report.bytes_moved += bytes;
        }
        Ok(moved)
    }

    /// Whether the map sits after every block and a free extent below it could take it.
    fn map_can_move_down(&self) -> bool {
        let Some(map) = self.alloc.get(MAP_ID) else {
            return false;
        };
        let last_block_end = self
            .alloc
            .block_at_or_before(self.alloc.last_node())
            .map_or(0, |(_, _, e)| e.offset + u64::from(e.units));
        map.offset >= last_block_end && self.alloc.has_fit_below(map.units, map.offset)
    }

    /// Moves block `id` to a new extent of `units` units (below `max_end` if given), copying
    /// its bytes (up to the smaller size).
    fn move_block(&mut self, id: u32, units: u32, max_end: Option<u64>) -> Result<()> {
        let (node, old, new) = self.alloc.begin_move(id, units, max_end)?;
        let len = self.bytes(old.units.min(new.units));
        match self.copy(
            self.file_offset(old.offset),
            self.file_offset(new.offset),
            len,
        ) {
            Ok(()) => {
                self.alloc.finish_move(id, node);
                Ok(())
            }
            Err(e) => {
                self.alloc.abort_move(node);
                Err(e)
            }
        }
    }

    /// Copies `len` bytes from file offset `from` to `to` (non-overlapping) through the cache.
    fn copy(&self, from: u64, to: u64, len: u64) -> Result<()> {
        self.ensure_end(from + len)?;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(COPY_CHUNK.max(self.page_size) as u64) as usize;
            let src = self.cache.get(from + done, n)?;
            let mut dst = self.cache.get_for_write(to + done, n)?;
            dst.copy_from_slice(&src);
            done += n as u64;
        }
        Ok(())
    }

    // ----- Introspection -----

    /// Counters of the space in the file.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let map_units = self.alloc.get(MAP_ID).map_or(0, |m| m.units);
        let free = self.alloc.free_units() * u64::from(self.alloc_unit);
        let largest_free = self.bytes(self.alloc.largest_free());
        Stats {
            file_len: self.cache.len(),
            body_len: self.alloc.body() * u64::from(self.alloc_unit),
            used: (self.alloc.used_units() - u64::from(map_units)) * u64::from(self.alloc_unit),
            map_len: self.bytes(map_units),
            free,
            pending: self.alloc.pending_units() * u64::from(self.alloc_unit),
            largest_free,
            extents: self.alloc.extents(),
            live_blocks: self.alloc.live().saturating_sub(1),
            fragmentation: if free == 0 {
                0.0
            } else {
                1.0 - largest_free as f64 / free as f64
            },
            generation: self.committed.generation,
            alloc_unit: self.alloc_unit,
            page_size: self.page_size,
        }
    }

    /// The superblock of the last commit.
    #[must_use]
    pub fn superblock(&self) -> &Superblock {
        &self.committed
    }

    /// Checks every invariant and returns what is broken (empty when all is well):
    /// - the extent list: links, offsets that are the sums of the sizes before, sizes within
    ///   limits, no two adjacent free extents (pending ones and pairs past the size limit
    ///   aside), the body length and the used/free/pending totals;
    /// - the size-class buckets: each holds exactly the free extents of its class, linked both
    ///   ways, and the non-empty mask matches;
    /// - the id table: one entry per extent in use, each pointing at its extent;
    /// - the pending list: exactly the pending extents;
    /// - the map: placed, and where the committed superblock says;
    /// - the roots: valid unique names naming live blocks, at most 16;
    /// - the committed state on disk (read through the cache): the superblock of the current
    ///   generation and its map decode, agree with memory, and every extent in use in that
    ///   map is still held, by the same id or as pending, so no allocation since the commit
    ///   can overwrite it;
    /// - the device is at least as long as the committed body.
    #[must_use]
    pub fn validate(&self) -> Vec<Problem> {
        let au = u64::from(self.alloc_unit);
        let data_start = self.data_start;
        let mut problems = self.alloc.validate(&|index, offset| Location::Extent {
            index,
            offset: data_start + offset * au,
        });
        let mut report = |what: String, at: Location| problems.push(Problem { what, at });

        match self.alloc.get(MAP_ID) {
            None => report("the map has no extent".into(), Location::Map),
            Some(map)
                if map.offset != self.committed.map_offset
                    || map.units != self.committed.map_units =>
            {
                report(
                    format!(
                        "map extent at unit {} of {} units, the superblock says unit {} of {}",
                        map.offset, map.units, self.committed.map_offset, self.committed.map_units
                    ),
                    Location::Map,
                );
            }
            Some(_) => {}
        }

        if self.roots.len() > MAX_ROOTS {
            report(
                format!("{} roots, at most {MAX_ROOTS}", self.roots.len()),
                Location::Totals,
            );
        }
        for (index, (name, id)) in self.roots.iter().enumerate() {
            let at = Location::Root { slot: None, index };
            if !valid_root_name(name) {
                report(format!("invalid name {name:?}"), at.clone());
            }
            if self.roots[..index].iter().any(|(n, _)| n == name) {
                report(format!("duplicate name {name:?}"), at.clone());
            }
            if !self.contains(BlockId(*id)) {
                report(format!("names {}, which is not live", BlockId(*id)), at);
            }
        }

        match self.io.num_pages() {
            Ok(pages)
                if pages.saturating_mul(self.page_size as u64) < self.committed.body_end() =>
            {
                report(
                    format!(
                        "shorter than the committed body ({} bytes)",
                        self.committed.body_end()
                    ),
                    Location::FileLength {
                        len: pages.saturating_mul(self.page_size as u64),
                    },
                );
            }
            Ok(_) => {}
            Err(e) => report(
                format!("cannot read the device's length: {e}"),
                Location::Totals,
            ),
        }

        match self.read_committed() {
            Ok(records) => self.check_committed_held(&records, &mut problems),
            Err(e) => problems.push(Problem {
                what: format!("the committed state does not read back: {e}"),
                at: match e {
                    Error::Corrupt { at, .. } => at,
                    _ => Location::Map,
                },
            }),
        }
        problems
    }

    /// Reads the committed superblock and map back through the cache and checks they match
    /// memory; returns the map's records.
    fn read_committed(&self) -> Result<Vec<Record>> {
        let slot = Slot::for_generation(self.committed.generation);
        let ps = self.page_size;
        let sb = {
            let page = self.cache.get(slot.page() * ps as u64, ps)?;
            format::decode_superblock(&page, slot)?
        };
        if sb != self.committed {
            return Err(Error::corrupt(
                format!(
                    "superblock of generation {} differs from the committed one in memory \
                     (generation {})",
                    sb.generation, self.committed.generation
                ),
                Location::Superblock(slot),
            ));
        }
        let mut records = format::Collect::new(sb.map_records as usize);
        read_map(&self.cache, &sb, self.map_read_pages, &mut records)?;
        Ok(records.records)
    }

    /// Checks that every extent in use in the committed map is still held in memory.
    fn check_committed_held(&self, records: &[Record], problems: &mut Vec<Problem>) {
        let current: Vec<_> = self.alloc.iter().collect();
        let mut first = 0;
        let mut offset = 0u64;
        for r in records {
            let (start, end) = (offset, offset + u64::from(r.units));
            offset = end;
            if !r.in_use {
                continue;
            }
            // The in-memory extents overlapping start..end, from the first one ending after
            // `start` (records are in offset order, so `first` only moves forward).
            while current
                .get(first)
                .is_some_and(|e| e.offset + u64::from(e.units) <= start)
            {
                first += 1;
            }
            let mut k = first;
            let mut at = start;
            while at < end {
                let Some(e) = current.get(k) else {
                    problems.push(Problem {
                        what: format!(
                            "committed extent at file offset {} runs past the body in memory",
                            self.file_offset(start)
                        ),
                        at: Location::Id { id: BlockId(r.id) },
                    });
                    break;
                };
                let held = match e.state {
                    State::Used(id) => id == r.id,
                    State::Pending => true,
                    State::Free | State::Vacant => false,
                };
                if !held {
                    problems.push(Problem {
                        what: format!(
                            "its committed extent at file offset {} overlaps an extent that \
                             is {:?} in memory (at {}), so it could be overwritten",
                            self.file_offset(start),
                            e.state,
                            self.file_offset(e.offset)
                        ),
                        at: Location::Id { id: BlockId(r.id) },
                    });
                }
                at = e.offset + u64::from(e.units);
                k += 1;
            }
        }
    }

    // ----- Helpers -----

    fn units_for(&self, size: u64) -> Result<u32> {
        if size == 0 {
            return Err(Error::InvalidSize { size });
        }
        let units = size.div_ceil(u64::from(self.alloc_unit));
        u32::try_from(units)
            .ok()
            .filter(|&u| u <= MAX_EXTENT_UNITS)
            .ok_or_else(|| Error::TooLarge {
                size,
                max: self.bytes(MAX_EXTENT_UNITS),
            })
    }

    fn bytes(&self, units: u32) -> u64 {
        u64::from(units) * u64::from(self.alloc_unit)
    }

    fn file_offset(&self, unit_offset: u64) -> u64 {
        self.data_start + unit_offset * u64::from(self.alloc_unit)
    }

    /// The extent of live block `id` (never the map's).
    fn extent_of(&self, id: BlockId) -> Result<Extent> {
        if id.0 == MAP_ID {
            return Err(Error::UnknownId { id });
        }
        self.alloc.get(id.0).ok_or_else(|| Error::UnknownId { id })
    }

    /// The file offset and length of block `id`.
    fn byte_range(&self, id: BlockId) -> Result<(u64, usize)> {
        let extent = self.extent_of(id)?;
        let len = self.bytes(extent.units);
        let len = usize::try_from(len).map_err(|_| Error::TooLarge {
            size: len,
            max: usize::MAX as u64,
        })?;
        Ok((self.file_offset(extent.offset), len))
    }

    /// The file offset of bytes `offset..offset + len` of block `id`, checked.
    fn sub_range(&self, id: BlockId, offset: u64, len: usize) -> Result<u64> {
        let extent = self.extent_of(id)?;
        let size = self.bytes(extent.units);
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(Error::OutOfBounds {
                id,
                offset,
                len,
                size,
            });
        }
        Ok(self.file_offset(extent.offset) + offset)
    }

    fn block(&self, offset: u64, len: usize, overwrite: bool) -> Result<Block<'_>> {
        self.ensure_end(offset + len as u64)?;
        Ok(if overwrite {
            self.cache.get_for_write(offset, len)?
        } else {
            self.cache.get(offset, len)?
        })
    }

    /// Raises the block cache's end of data to at least `end` (a block allocated at the end of
    /// the body may lie past the device's end until written), by pinning the page of byte
    /// `end - 1` for writing without changing it. Byte `end - 1` belongs to the block about
    /// to be reached, so no other live block covers it.
    fn ensure_end(&self, end: u64) -> Result<()> {
        if end > self.cache.len() {
            drop(self.cache.get_for_write(end - 1, 1)?);
        }
        Ok(())
    }
}

/// The largest body, in units, for a file whose body starts at `data_start`.
fn max_body(data_start: u64, alloc_unit: u32) -> u64 {
    (MAX_FILE_LEN - data_start) / u64::from(alloc_unit)
}

/// Reads the map of `sb` through the cache, `chunk` pages at a time, and decodes and checks it
/// into `sink` (see [`format::decode_map`], whose errors it reports).
fn read_map(
    cache: &BlockCache,
    sb: &Superblock,
    chunk: usize,
    sink: &mut impl format::RecordSink,
) -> Result<()> {
    let ps = sb.page_size as usize;
    let pages = sb.map_pages as usize;
    let start = sb.map_file_offset();
    let mut decoder = format::MapDecoder::new(sb);
    let mut first = 0;
    while first < pages {
        let n = (pages - first).min(chunk);
        let block = cache.get(start + (first * ps) as u64, n * ps)?;
        for page in block.chunks_exact(ps) {
            decoder.page(page, sink)?;
        }
        first += n;
    }
    decoder.finish()
}

/// Checks that a non-empty device holds only what an interrupted [`FileBlock::create`] with
/// this `config` leaves, so that cutting it destroys nothing: no valid superblock, no more pages
/// than `create` writes, and every byte either what `create` writes there or zero (the device's
/// old content: a write that did not reach the disk, or reached it torn, sector by sector).
/// The bytes `create` writes are found by running it on an empty in-memory device.
fn check_interrupted_create(io: &dyn PageIo, pages: u64, config: &Config) -> Result<()> {
    let page_size = io.page_size();
    let mut buf = vec![0u8; page_size];
    for slot in [Slot::A, Slot::B] {
        if slot.page() < pages {
            io.read_page(slot.page(), &mut buf)?;
            if let Ok(sb) = format::decode_superblock(&buf, slot) {
                return Err(Error::AlreadyCreated {
                    generation: sb.generation,
                });
            }
        }
    }
    let image = Arc::new(pageio::MemPageIo::new(page_size)?);
    drop(FileBlock::create(image.clone(), config.clone())?);
    if pages > image.num_pages()? {
        return Err(Error::NotEmpty { pages });
    }
    let mut expected = vec![0u8; page_size];
    for no in 0..pages {
        io.read_page(no, &mut buf)?;
        image.read_page(no, &mut expected)?;
        if buf
            .iter()
            .zip(&expected)
            .any(|(&got, &want)| got != want && got != 0)
        {
            return Err(Error::NotEmpty { pages });
        }
    }
    Ok(())
}

/// Reads both superblocks and picks the valid one with the highest generation.
fn read_superblocks(cache: &BlockCache, page_size: usize) -> Result<(Slot, Superblock)> {
    let read = |slot: Slot| -> Result<Superblock> {
        let offset = slot.page() * page_size as u64;
        if offset + page_size as u64 > cache.len() {
            return Err(Error::corrupt(
                format!("missing: the file is {} bytes", cache.len()),
                Location::Superblock(slot),
            ));
        }
        let page = cache.get(offset, page_size)?;
        // The header alone first, so a file with another page size is named as such rather
        // than as corrupt.
        let header = format::decode_superblock(page.get(..SUPERBLOCK_SIZE).unwrap_or(&page), slot)?;
        if header.page_size as usize != page_size {
            return Err(Error::PageSizeMismatch {
                file: header.page_size,
                backend: page_size,
            });
        }
        format::decode_superblock(&page, slot)
    };
    let a = read(Slot::A);
    let b = read(Slot::B);
    match (a, b) {
        (Ok(a), Ok(b)) if b.generation > a.generation => Ok((Slot::B, b)),
        (Ok(a), Ok(_) | Err(Error::Corrupt { .. })) => Ok((Slot::A, a)),
        (Err(Error::Corrupt { .. }), Ok(b)) => Ok((Slot::B, b)),
        (Err(Error::Corrupt { what: wa, .. }), Err(Error::Corrupt { what: wb, .. })) => {
            Err(Error::corrupt(
                format!("no valid superblock (A: {wa}; B: {wb})"),
                Location::Superblocks,
            ))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

impl fmt::Debug for FileBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBlock")
            .field("page_size", &self.page_size)
            .field("alloc_unit", &self.alloc_unit)
            .field("generation", &self.committed.generation)
            .field("extents", &self.alloc.extents())
            .field("live_blocks", &self.alloc.live().saturating_sub(1))
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}
