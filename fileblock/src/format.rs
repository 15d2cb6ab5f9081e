//! The on-disk format: superblocks and extent-map pages, as pure functions over byte slices.
//!
//! Everything here works on bytes the caller read, so the decoders can be fuzzed on their own.
//! The decoders treat their input as untrusted: any violation is an [`Error::Corrupt`] naming
//! the location, never a panic.
//!
//! # Layout
//!
//! All integers are little endian. With page size `P` and allocation unit `AU`:
//!
//! ```text
//! page 0        superblock A   (512-byte header, rest of the page zero)
//! page 1        superblock B
//! 2*P ..        the body: extents in offset order, each a whole number of AUs
//! ```
//!
//! The superblock header ([`SUPERBLOCK_SIZE`] bytes):
//!
//! | offset | field | |
//! |---|---|---|
//! | 0   | magic `b"PSFBLK01"` | [`MAGIC`] |
//! | 8   | version u32 | [`VERSION`] |
//! | 12  | header length u32 | 512 |
//! | 16  | generation u64 | bigger is newer |
//! | 24  | page size u32 | |
//! | 28  | allocation unit u32 | power of two, 64 ..= page size |
//! | 32  | body length u64 | in AUs: the sum of all extents |
//! | 40  | map offset u64 | in AUs from the body's start |
//! | 48  | map length u32 | in AUs; = map pages × P / AU |
//! | 52  | map pages u32 | |
//! | 56  | map records u32 | |
//! | 60  | roots: 16 × { name [u8; 24] zero padded, id u32 } | id 0 = empty entry |
//! | 508 | CRC32C of bytes 0..508 | |
//!
//! Generation `g` is written to superblock `g % 2` ([`Slot::for_generation`]).
//!
//! The extent map lives in the body, in the extent whose id is [`MAP_ID`]. It is `map pages`
//! pages of `P` bytes (not necessarily aligned to device pages). Each map page:
//!
//! | offset | field |
//! |---|---|
//! | 0  | magic `b"FBMP"` ([`MAP_PAGE_MAGIC`]) |
//! | 4  | page index u32 |
//! | 8  | generation u64 (the superblock's) |
//! | 16 | record count u32 |
//! | 20 | CRC32C of the whole page, computed with this field zero |
//! | 24 | records: { id u32, size u32 } × count |
//!
//! Records fill the pages in order: every page but the last non-empty one holds
//! [`records_per_page`] records, and pages after it hold none. A record's `size` has bit 31 set
//! when the extent is in use ([`IN_USE`]) and the size in AUs in bits 0..31; a free extent has
//! id 0. The records cover the body from offset 0 in order, the last one is in use, and the
//! map's own extent is among them.

use std::fmt;

use bytemuck::{Pod, Zeroable};

use crate::error::Location;
use crate::ids::IdSet;
use crate::{BlockId, Error, Result};

/// The superblock magic.
pub const MAGIC: [u8; 8] = *b"PSFBLK01";
/// The format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// The length of the superblock header at the start of pages 0 and 1. It fits the smallest
/// page size, so the header can be probed with a 512-byte read whatever the page size.
pub const SUPERBLOCK_SIZE: usize = 512;
/// The number of entries in the roots table.
pub const MAX_ROOTS: usize = 16;
/// The longest root name, in bytes.
pub const ROOT_NAME_LEN: usize = 24;
/// The reserved id of the extent that holds the extent map.
pub const MAP_ID: u32 = u32::MAX;
/// The magic at the start of every map page.
pub const MAP_PAGE_MAGIC: [u8; 4] = *b"FBMP";
/// The length of a map page's header.
pub const MAP_HEADER_SIZE: usize = 24;
/// The length of one extent record.
pub const RECORD_SIZE: usize = 8;
/// The in-use bit of a record's `size`.
pub const IN_USE: u32 = 1 << 31;
/// The largest extent, in allocation units (the 31 bits of a record's size).
pub const MAX_EXTENT_UNITS: u32 = IN_USE - 1;
/// The smallest allocation unit, in bytes.
pub const MIN_ALLOC_UNIT: u32 = 64;
/// The largest file length: the largest offset the OS accepts.
pub(crate) const MAX_FILE_LEN: u64 = i64::MAX as u64;

/// One of the two superblocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Superblock A, page 0: even generations.
    A,
    /// Superblock B, page 1: odd generations.
    B,
}

impl Slot {
    /// The page the superblock lives in.
    #[must_use]
    pub fn page(self) -> u64 {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    /// The slot generation `generation` is written to.
    #[must_use]
    pub fn for_generation(generation: u64) -> Slot {
        if generation.is_multiple_of(2) {
            Slot::A
        } else {
            Slot::B
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// A decoded, checked superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The commit's generation: bigger is newer.
    pub generation: u64,
    /// The page size the file was created with.
    pub page_size: u32,
    /// The allocation unit, in bytes.
    pub alloc_unit: u32,
    /// The body's length in allocation units.
    pub body_units: u64,
    /// The map extent's offset in allocation units from the body's start.
    pub map_offset: u64,
    /// The map extent's length in allocation units.
    pub map_units: u32,
    /// The number of map pages.
    pub map_pages: u32,
    /// The number of extent records in the map.
    pub map_records: u32,
    /// The named roots, in table order.
    pub roots: Vec<(String, BlockId)>,
}

impl Superblock {
    /// The file offset of the body: two pages, after the superblocks.
    #[must_use]
    pub fn data_start(&self) -> u64 {
        2 * u64::from(self.page_size)
    }

    /// The file offset of the map's first page (saturating, for a superblock not checked by
    /// [`decode_superblock`]).
    #[must_use]
    pub fn map_file_offset(&self) -> u64 {
        self.map_offset
            .saturating_mul(u64::from(self.alloc_unit))
            .saturating_add(self.data_start())
    }

    /// The file offset of the body's end: the least length the file may have (saturating).
    #[must_use]
    pub fn body_end(&self) -> u64 {
        self.body_units
            .saturating_mul(u64::from(self.alloc_unit))
            .saturating_add(self.data_start())
    }
}

/// One extent record of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// The block id (or [`MAP_ID`]) of an extent in use; 0 for a free extent.
    pub id: u32,
    /// The extent's length in allocation units.
    pub units: u32,
    /// Whether the extent is in use.
    pub in_use: bool,
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct RawRoot {
    name: [u8; ROOT_NAME_LEN],
    id: u32,
}

/// The superblock header as stored; integer fields hold little-endian values.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct RawSuperblock {
    magic: [u8; 8],
    version: u32,
    header_len: u32,
    generation: u64,
    page_size: u32,
    alloc_unit: u32,
    body_units: u64,
    map_offset: u64,
    map_units: u32,
    map_pages: u32,
    map_records: u32,
    roots: [RawRoot; MAX_ROOTS],
    crc: u32,
}

const _: () = assert!(size_of::<RawSuperblock>() == SUPERBLOCK_SIZE);
const SUPERBLOCK_CRC_AT: usize = SUPERBLOCK_SIZE - 4;

/// A map page's header as stored.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct RawMapHeader {
    magic: [u8; 4],
    index: u32,
    generation: u64,
    count: u32,
    crc: u32,
}

const _: () = assert!(size_of::<RawMapHeader>() == MAP_HEADER_SIZE);
const MAP_CRC_AT: usize = 20;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct RawRecord {
    id: u32,
    size: u32,
}

const _: () = assert!(size_of::<RawRecord>() == RECORD_SIZE);

/// Whether `au` is a usable allocation unit for pages of `page_size` bytes.
#[must_use]
pub fn valid_alloc_unit(au: u32, page_size: u32) -> bool {
    au.is_power_of_two() && au >= MIN_ALLOC_UNIT && au <= page_size
}

fn valid_page_size(ps: u32) -> bool {
    ps.is_power_of_two() && (pageio::MIN_PAGE_SIZE..=pageio::MAX_PAGE_SIZE).contains(&(ps as usize))
}

/// How many records one map page of `page_size` bytes holds.
#[must_use]
pub fn records_per_page(page_size: usize) -> usize {
    page_size.saturating_sub(MAP_HEADER_SIZE) / RECORD_SIZE
}

/// Checks a root name: 1 to [`ROOT_NAME_LEN`] bytes, no NUL.
#[must_use]
pub fn valid_root_name(name: &str) -> bool {
    (1..=ROOT_NAME_LEN).contains(&name.len()) && !name.as_bytes().contains(&0)
}

/// Encodes a superblock header. Fails with [`Error::RootName`] or [`Error::RootsFull`] if the
/// roots do not fit the table; the other fields are written as given.
pub fn encode_superblock(sb: &Superblock) -> Result<[u8; SUPERBLOCK_SIZE]> {
    if sb.roots.len() > MAX_ROOTS {
        return Err(Error::RootsFull);
    }
    let mut roots = [RawRoot::zeroed(); MAX_ROOTS];
    for (raw, (name, id)) in roots.iter_mut().zip(&sb.roots) {
        if !valid_root_name(name) {
            return Err(Error::RootName { name: name.clone() });
        }
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.id = id.0.to_le();
    }
    let raw = RawSuperblock {
        magic: MAGIC,
        version: VERSION.to_le(),
        header_len: (SUPERBLOCK_SIZE as u32).to_le(),
        generation: sb.generation.to_le(),
        page_size: sb.page_size.to_le(),
        alloc_unit: sb.alloc_unit.to_le(),
        body_units: sb.body_units.to_le(),
        map_offset: sb.map_offset.to_le(),
        map_units: sb.map_units.to_le(),
        map_pages: sb.map_pages.to_le(),
        map_records: sb.map_records.to_le(),
        roots,
        crc: 0,
    };
    let mut out = [0u8; SUPERBLOCK_SIZE];
    out.copy_from_slice(bytemuck::bytes_of(&raw));
    let crc = crc32c::crc32c(&out[..SUPERBLOCK_CRC_AT]);
    out[SUPERBLOCK_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes and checks the superblock in `bytes`: the first [`SUPERBLOCK_SIZE`] bytes of its
/// page, or the whole page (then the bytes after the header must be zero). `slot` only names
/// the location in errors.
///
/// Checks: length, magic, CRC, version, header length, page size, allocation unit, that the map
/// lies inside the body and its length matches its page count, that the record count fits the
/// pages, that the body fits the largest file, and the roots table (valid names, no duplicates,
/// no reserved ids, empty entries all zero). It cannot check what needs the map (that the roots
/// name live blocks): [`decode_map`] and open do.
pub fn decode_superblock(bytes: &[u8], slot: Slot) -> Result<Superblock> {
    let at = Location::Superblock(slot);
    let bad = |what: String| Err(Error::corrupt(what, at.clone()));
    let Some(header) = bytes.get(..SUPERBLOCK_SIZE) else {
        return bad(format!(
            "{} bytes is too short for a superblock ({SUPERBLOCK_SIZE})",
            bytes.len()
        ));
    };
    let Ok(raw) = bytemuck::try_pod_read_unaligned::<RawSuperblock>(header) else {
        return bad("unreadable superblock header".into());
    };
    if raw.magic != MAGIC {
        return bad(format!("bad magic {:02x?}", raw.magic));
    }
    let stored = u32::from_le(raw.crc);
    let computed = header.get(..SUPERBLOCK_CRC_AT).map_or(0, crc32c::crc32c);
    if stored != computed {
        return bad(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let version = u32::from_le(raw.version);
    if version != VERSION {
        return bad(format!("unsupported format version {version}"));
    }
    let header_len = u32::from_le(raw.header_len);
    if header_len as usize != SUPERBLOCK_SIZE {
        return bad(format!(
            "header length {header_len}, expected {SUPERBLOCK_SIZE}"
        ));
    }
    let page_size = u32::from_le(raw.page_size);
    if !valid_page_size(page_size) {
        return bad(format!("invalid page size {page_size}"));
    }
    let alloc_unit = u32::from_le(raw.alloc_unit);
    if !valid_alloc_unit(alloc_unit, page_size) {
        return bad(format!(
            "invalid allocation unit {alloc_unit} for page size {page_size}"
        ));
    }
    let generation = u64::from_le(raw.generation);
    if Slot::for_generation(generation) != slot {
        // A misdirected write: trusting it would let the next commit overwrite the superblock
        // it opened.
        return bad(format!(
            "generation {generation} belongs in slot {}, not slot {slot}",
            Slot::for_generation(generation)
        ));
    }
    let sb = Superblock {
        generation,
        page_size,
        alloc_unit,
        body_units: u64::from_le(raw.body_units),
        map_offset: u64::from_le(raw.map_offset),
        map_units: u32::from_le(raw.map_units),
        map_pages: u32::from_le(raw.map_pages),
        map_records: u32::from_le(raw.map_records),
        roots: Vec::new(),
    };
    if let Err(what) = check_layout(&sb) {
        return bad(what);
    }
    let roots = decode_roots(&raw.roots, slot)?;
    if let Some(pos) = bytes
        .get(SUPERBLOCK_SIZE..)
        .and_then(|rest| rest.iter().position(|&b| b != 0))
    {
        return bad(format!(
            "nonzero byte at offset {} after the superblock header",
            SUPERBLOCK_SIZE + pos
        ));
    }
    Ok(Superblock { roots, ..sb })
}

/// Checks the body and map fields of a superblock whose page size and allocation unit are
/// valid.
fn check_layout(sb: &Superblock) -> std::result::Result<(), String> {
    let (ps, au) = (u64::from(sb.page_size), u64::from(sb.alloc_unit));
    let body_fits = sb
        .body_units
        .checked_mul(au)
        .and_then(|b| b.checked_add(2 * ps))
        .is_some_and(|end| end <= MAX_FILE_LEN);
    if !body_fits {
        return Err(format!(
            "body of {} units is larger than the largest file",
            sb.body_units
        ));
    }
    if sb.map_pages == 0 || sb.map_units == 0 || sb.map_units > MAX_EXTENT_UNITS {
        return Err(format!(
            "invalid map size: {} pages, {} units",
            sb.map_pages, sb.map_units
        ));
    }
    if u64::from(sb.map_units) * au != u64::from(sb.map_pages) * ps {
        return Err(format!(
            "map of {} units does not hold exactly {} pages",
            sb.map_units, sb.map_pages
        ));
    }
    if sb
        .map_offset
        .checked_add(u64::from(sb.map_units))
        .is_none_or(|end| end > sb.body_units)
    {
        return Err(format!(
            "map at unit {} of {} units lies outside the body of {} units",
            sb.map_offset, sb.map_units, sb.body_units
        ));
    }
    let capacity = u64::from(sb.map_pages) * records_per_page(sb.page_size as usize) as u64;
    if sb.map_records == 0 || u64::from(sb.map_records) > capacity {
        return Err(format!(
            "{} map records do not fit {} map pages",
            sb.map_records, sb.map_pages
        ));
    }
    Ok(())
}

fn decode_roots(raw: &[RawRoot], slot: Slot) -> Result<Vec<(String, BlockId)>> {
    let mut roots: Vec<(String, BlockId)> = Vec::new();
    for (index, root) in raw.iter().enumerate() {
        let at = || Location::Root {
            slot: Some(slot),
            index,
        };
        let id = u32::from_le(root.id);
        if id == 0 {
            if root.name.iter().any(|&b| b != 0) {
                return Err(Error::corrupt("empty root entry with a name", at()));
            }
            continue;
        }
        if id == MAP_ID {
            return Err(Error::corrupt("root names the reserved map id", at()));
        }
        let len = root
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(ROOT_NAME_LEN);
        let (name, padding) = root.name.split_at(len);
        if len == 0 || padding.iter().any(|&b| b != 0) {
            return Err(Error::corrupt("root name is empty or badly padded", at()));
        }
        let Ok(name) = std::str::from_utf8(name) else {
            return Err(Error::corrupt("root name is not UTF-8", at()));
        };
        if roots.iter().any(|(n, _)| n == name) {
            return Err(Error::corrupt(
                format!("duplicate root name {name:?}"),
                at(),
            ));
        }
        roots.push((name.to_owned(), BlockId(id)));
    }
    Ok(roots)
}

/// Encodes map page `index` of generation `generation` with `records` into `page` (one page
/// long; the whole page is written). Fails with [`Error::InvalidConfig`] if the records do not
/// fit the page.
pub fn encode_map_page(
    records: &[Record],
    index: u32,
    generation: u64,
    page: &mut [u8],
) -> Result<()> {
    if page.len() < MAP_HEADER_SIZE || records.len() > records_per_page(page.len()) {
        return Err(Error::InvalidConfig {
            reason: "map records do not fit the page",
        });
    }
    encode_map_page_from(&mut records.iter().copied(), index, generation, page);
    Ok(())
}

/// Encodes map page `index` of generation `generation` into `page` (at least
/// [`MAP_HEADER_SIZE`] bytes; the whole page is written) with as many records taken from
/// `records` as the page holds; returns how many it took.
pub(crate) fn encode_map_page_from(
    records: &mut impl Iterator<Item = Record>,
    index: u32,
    generation: u64,
    page: &mut [u8],
) -> usize {
    encode_map_page_with(index, generation, page, |slots| {
        let mut count = 0;
        for (slot, record) in slots.chunks_exact_mut(RECORD_SIZE).zip(records.by_ref()) {
            let size = record.units | if record.in_use { IN_USE } else { 0 };
            put_record(slot, record.id, size);
            count += 1;
        }
        count
    })
}

/// Encodes map page `index` of generation `generation` into `page` (at least
/// [`MAP_HEADER_SIZE`] bytes; the whole page is written): `fill` writes the records into the
/// slots it is given ([`RECORD_SIZE`] bytes each, as many as the page holds) with
/// [`put_record`], from the first, and returns how many it wrote.
pub(crate) fn encode_map_page_with(
    index: u32,
    generation: u64,
    page: &mut [u8],
    fill: impl FnOnce(&mut [u8]) -> usize,
) -> usize {
    let (head, body) = page.split_at_mut(MAP_HEADER_SIZE);
    let capacity = body.len() / RECORD_SIZE;
    let count = fill(&mut body[..capacity * RECORD_SIZE]).min(capacity);
    body[count * RECORD_SIZE..].fill(0);
    let header = RawMapHeader {
        magic: MAP_PAGE_MAGIC,
        index: index.to_le(),
        generation: generation.to_le(),
        count: (count as u32).to_le(),
        crc: 0,
    };
    head.copy_from_slice(bytemuck::bytes_of(&header));
    let crc = map_page_crc(page);
    page[MAP_CRC_AT..MAP_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    count
}

/// Writes a record as stored into `slot` ([`RECORD_SIZE`] bytes): `size` is its length in
/// units, with [`IN_USE`] set when the extent is in use.
#[inline]
pub(crate) fn put_record(slot: &mut [u8], id: u32, size: u32) {
    let raw = RawRecord {
        id: id.to_le(),
        size: size.to_le(),
    };
    slot.copy_from_slice(bytemuck::bytes_of(&raw));
}

/// The CRC32C of a map page with its CRC field taken as zero.
fn map_page_crc(page: &[u8]) -> u32 {
    let (Some(before), Some(after)) = (page.get(..MAP_CRC_AT), page.get(MAP_CRC_AT + 4..)) else {
        return 0;
    };
    let crc = crc32c::crc32c(before);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, after)
}

/// Decodes and checks one map page: `page` is the whole page, `index` its index in the map,
/// `generation` the superblock's, `offset` its file offset (for error locations).
///
/// Checks: length, magic, CRC, index, generation, and that the record count fits the page.
/// Checks that need the other pages (sizes, ids, sums) are [`decode_map`]'s.
pub fn decode_map_page(
    page: &[u8],
    index: u32,
    generation: u64,
    offset: u64,
) -> Result<Vec<Record>> {
    let bytes = check_map_page(page, index, generation, offset)?;
    Ok(records_in(bytes).collect())
}

/// The records of a map page's record bytes.
fn records_in(bytes: &[u8]) -> impl Iterator<Item = Record> + '_ {
    bytes.chunks_exact(RECORD_SIZE).map(|chunk| {
        let raw: RawRecord = bytemuck::pod_read_unaligned(chunk);
        let size = u32::from_le(raw.size);
        Record {
            id: u32::from_le(raw.id),
            units: size & MAX_EXTENT_UNITS,
            in_use: size & IN_USE != 0,
        }
    })
}

/// The checks of [`decode_map_page`]; returns the bytes of the page's records.
fn check_map_page(page: &[u8], index: u32, generation: u64, offset: u64) -> Result<&[u8]> {
    let at = Location::MapPage { index, offset };
    let bad = |what: String| Err(Error::corrupt(what, at.clone()));
    let Some(head) = page.get(..MAP_HEADER_SIZE) else {
        return bad(format!("{} bytes is too short for a map page", page.len()));
    };
    let Ok(header) = bytemuck::try_pod_read_unaligned::<RawMapHeader>(head) else {
        return bad("unreadable map page header".into());
    };
    if header.magic != MAP_PAGE_MAGIC {
        return bad(format!("bad magic {:02x?}", header.magic));
    }
    let stored = u32::from_le(header.crc);
    let computed = map_page_crc(page);
    if stored != computed {
        return bad(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let found_index = u32::from_le(header.index);
    if found_index != index {
        return bad(format!("page index {found_index}, expected {index}"));
    }
    let found_generation = u64::from_le(header.generation);
    if found_generation != generation {
        return bad(format!(
            "generation {found_generation}, expected {generation}"
        ));
    }
    let count = u32::from_le(header.count) as usize;
    if count > records_per_page(page.len()) {
        return bad(format!(
            "record count {count} exceeds the page's capacity of {}",
            records_per_page(page.len())
        ));
    }
    let Some(bytes) = page.get(MAP_HEADER_SIZE..MAP_HEADER_SIZE + count * RECORD_SIZE) else {
        return bad("records run past the page".into());
    };
    Ok(bytes)
}

/// Decodes and checks the whole extent map: `map` is the map extent's bytes (`map_pages`
/// pages), `sb` the superblock that points at it.
///
/// Checks every page ([`decode_map_page`]), that the pages are filled in order and hold
/// `map_records` records in all, and every record: nonzero size, id 0 exactly when free, no id
/// twice, exactly one [`MAP_ID`] extent and it lies where the superblock says, the sizes add
/// up to the body length without overflow, and the last extent is in use.
pub fn decode_map(map: &[u8], sb: &Superblock) -> Result<Vec<Record>> {
    let ps = sb.page_size as usize;
    let expected_len = (sb.map_pages as usize).checked_mul(ps);
    if ps == 0 || Some(map.len()) != expected_len {
        return Err(Error::corrupt(
            format!(
                "map is {} bytes, expected {} pages of {ps}",
                map.len(),
                sb.map_pages
            ),
            Location::Map,
        ));
    }
    // Reserve no more than the bytes can hold, whatever the (untrusted) count says.
    let mut sink = Collect::new((sb.map_records as usize).min(map.len() / RECORD_SIZE));
    let mut decoder = MapDecoder::new(sb);
    for page in map.chunks_exact(ps) {
        decoder.page(page, &mut sink)?;
    }
    decoder.finish()?;
    Ok(sink.records)
}

/// Where a [`MapDecoder`] hands the records of a map, in order, each once it passed the checks.
pub(crate) trait RecordSink {
    /// Whether a record handed over before was in use by `id`.
    fn seen(&self, id: u32) -> bool;

    /// Takes the next record.
    fn push(&mut self, record: Record) -> Result<()>;
}

/// A [`RecordSink`] that collects the records.
pub(crate) struct Collect {
    pub records: Vec<Record>,
    ids: IdSet,
}

impl Collect {
    /// A sink for about `expected` records.
    pub fn new(expected: usize) -> Self {
        Self {
            records: Vec::with_capacity(expected),
            ids: IdSet::new(expected),
        }
    }
}

impl RecordSink for Collect {
    fn seen(&self, id: u32) -> bool {
        self.ids.contains(id)
    }

    fn push(&mut self, record: Record) -> Result<()> {
        if record.in_use {
            self.ids.insert(record.id);
        }
        self.records.push(record);
        Ok(())
    }
}

/// [`decode_map`] one page at a time, so the map need not be in memory all at once, handing
/// the records to a [`RecordSink`] as they pass the checks. It reports the error `decode_map`
/// would: a record that fails a check is reported only once every page has been checked (a
/// damaged page after it comes first), and the checks of the whole come last.
pub(crate) struct MapDecoder<'a> {
    sb: &'a Superblock,
    per_page: usize,
    /// Pages decoded so far.
    pages: usize,
    check: RecordCheck<'a>,
    /// The first record that failed a check; no record is handed over after it.
    failed: Option<Error>,
}

impl<'a> MapDecoder<'a> {
    pub fn new(sb: &'a Superblock) -> Self {
        Self {
            sb,
            per_page: records_per_page(sb.page_size as usize),
            pages: 0,
            check: RecordCheck::new(sb),
            failed: None,
        }
    }

    /// Decodes and checks the next page (`page_size` bytes) and hands its records to `sink`.
    pub fn page(&mut self, page: &[u8], sink: &mut impl RecordSink) -> Result<()> {
        let index = self.pages;
        self.pages += 1;
        let offset = self
            .check
            .map_start
            .saturating_add((index * page.len()) as u64);
        let bytes = check_map_page(page, index as u32, self.sb.generation, offset)?;
        let count = bytes.len() / RECORD_SIZE;
        let total = self.sb.map_records as usize;
        let expected = total
            .saturating_sub(index * self.per_page)
            .min(self.per_page);
        if count != expected {
            return Err(Error::corrupt(
                format!("{count} records, expected {expected} of the map's {total}"),
                Location::MapPage {
                    index: index as u32,
                    offset,
                },
            ));
        }
        if self.failed.is_none() {
            for record in records_in(bytes) {
                if let Err(e) = self.check.record(record, |id| sink.seen(id)) {
                    self.failed = Some(e);
                    break;
                }
                sink.push(record)?;
            }
        }
        Ok(())
    }

    /// The checks of the whole map, once every page has been decoded.
    pub fn finish(self) -> Result<()> {
        match self.failed {
            Some(e) => Err(e),
            None => self.check.finish(),
        }
    }
}

/// The checks of the records of a whole map against its superblock (see [`decode_map`]), one
/// record at a time.
struct RecordCheck<'a> {
    sb: &'a Superblock,
    per_page: usize,
    map_start: u64,
    /// The offset of the next record, in units.
    offset: u64,
    map_seen: bool,
    /// Records checked so far.
    count: usize,
    last_in_use: bool,
}

impl<'a> RecordCheck<'a> {
    fn new(sb: &'a Superblock) -> Self {
        Self {
            sb,
            per_page: records_per_page(sb.page_size as usize).max(1),
            map_start: sb.map_file_offset(),
            offset: 0,
            map_seen: false,
            count: 0,
            last_in_use: false,
        }
    }

    /// The location of record `k`.
    fn record_at(&self, k: usize) -> Location {
        Location::MapRecord {
            index: k as u64,
            offset: self
                .map_start
                .saturating_add(
                    ((k / self.per_page) as u64).saturating_mul(self.sb.page_size.into()),
                )
                .saturating_add((MAP_HEADER_SIZE + (k % self.per_page) * RECORD_SIZE) as u64),
        }
    }

    #[cold]
    fn bad(&self, what: String) -> Error {
        Error::corrupt(what, self.record_at(self.count))
    }

    /// Checks the next record; `seen(id)` says whether an earlier record was in use by `id`.
    #[inline]
    fn record(&mut self, r: Record, seen: impl FnOnce(u32) -> bool) -> Result<()> {
        if r.units == 0 {
            return Err(self.bad("extent of size 0".into()));
        }
        if r.in_use {
            if r.id == 0 {
                return Err(self.bad("extent in use with id 0".into()));
            }
            if seen(r.id) {
                return Err(self.bad(format!("id {} appears twice", BlockId(r.id))));
            }
            if r.id == MAP_ID {
                if self.offset != self.sb.map_offset || r.units != self.sb.map_units {
                    return Err(self.bad(format!(
                        "map extent at unit {} of {} units, but the superblock says \
                         unit {} of {} units",
                        self.offset, r.units, self.sb.map_offset, self.sb.map_units
                    )));
                }
                self.map_seen = true;
            }
        } else if r.id != 0 {
            return Err(self.bad(format!("free extent with id {}", r.id)));
        }
        let Some(next) = self.offset.checked_add(u64::from(r.units)) else {
            return Err(self.bad("extent offsets overflow".into()));
        };
        if next > self.sb.body_units {
            return Err(self.bad(format!(
                "extent ends at unit {next}, past the body's {} units",
                self.sb.body_units
            )));
        }
        self.offset = next;
        self.count += 1;
        self.last_in_use = r.in_use;
        Ok(())
    }

    /// The checks of the whole, after the last record.
    fn finish(self) -> Result<()> {
        if self.offset != self.sb.body_units {
            return Err(Error::corrupt(
                format!(
                    "extents add up to {} units, but the body is {} units",
                    self.offset, self.sb.body_units
                ),
                Location::Map,
            ));
        }
        if !self.map_seen {
            return Err(Error::corrupt("no extent holds the map", Location::Map));
        }
        if self.count > 0 && !self.last_in_use {
            return Err(Error::corrupt(
                "the last extent is free",
                self.record_at(self.count - 1),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock() -> Superblock {
        Superblock {
            // Even: its slot is A.
            generation: 8,
            page_size: 4096,
            alloc_unit: 512,
            body_units: 24,
            map_offset: 8,
            map_units: 8,
            map_pages: 1,
            map_records: 4,
            roots: vec![("main".into(), BlockId(3)), ("x".repeat(24), BlockId(5))],
        }
    }

    fn records() -> Vec<Record> {
        vec![
            Record {
                id: 3,
                units: 4,
                in_use: true,
            },
            Record {
                id: 0,
                units: 4,
                in_use: false,
            },
            Record {
                id: MAP_ID,
                units: 8,
                in_use: true,
            },
            Record {
                id: 5,
                units: 8,
                in_use: true,
            },
        ]
    }

    fn map_bytes(sb: &Superblock, records: &[Record]) -> Vec<u8> {
        let ps = sb.page_size as usize;
        let per = records_per_page(ps);
        let mut map = vec![0u8; sb.map_pages as usize * ps];
        for (i, page) in map.chunks_exact_mut(ps).enumerate() {
            let chunk = records.get(i * per..).unwrap_or(&[]);
            let chunk = &chunk[..chunk.len().min(per)];
            encode_map_page(chunk, i as u32, sb.generation, page).unwrap();
        }
        map
    }

    fn corrupt_at(result: Result<impl fmt::Debug>) -> Location {
        match result {
            Err(Error::Corrupt { at, .. }) => at,
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn superblock_round_trip() {
        let sb = superblock();
        let bytes = encode_superblock(&sb).unwrap();
        assert_eq!(decode_superblock(&bytes, Slot::A).unwrap(), sb);
        // As a whole page, zero padded.
        let mut page = vec![0u8; 4096];
        page[..SUPERBLOCK_SIZE].copy_from_slice(&bytes);
        assert_eq!(decode_superblock(&page, Slot::A).unwrap(), sb);
        // Found in the other slot (a misdirected write), it is not trusted.
        assert_eq!(
            corrupt_at(decode_superblock(&page, Slot::B)),
            Location::Superblock(Slot::B)
        );
    }

    #[test]
    fn every_bit_flip_of_a_superblock_is_caught() {
        let mut page = vec![0u8; 1024];
        page[..SUPERBLOCK_SIZE].copy_from_slice(&encode_superblock(&superblock()).unwrap());
        for bit in 0..page.len() * 8 {
            page[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                corrupt_at(decode_superblock(&page, Slot::A)),
                Location::Superblock(Slot::A),
                "bit {bit}"
            );
            page[bit / 8] ^= 1 << (bit % 8);
        }
    }

    /// Re-encodes a superblock whose fields were changed behind the encoder's back (so the CRC
    /// is right) and checks the decoder rejects it.
    fn rejects(change: impl FnOnce(&mut RawSuperblock)) -> Location {
        let bytes = encode_superblock(&superblock()).unwrap();
        let mut raw: RawSuperblock = bytemuck::pod_read_unaligned(&bytes);
        change(&mut raw);
        let mut bytes = bytemuck::bytes_of(&raw).to_vec();
        let crc = crc32c::crc32c(&bytes[..SUPERBLOCK_CRC_AT]);
        bytes[SUPERBLOCK_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        corrupt_at(decode_superblock(&bytes, Slot::A))
    }

    #[test]
    fn insane_superblock_fields_are_rejected() {
        let sb_at = Location::Superblock(Slot::A);
        assert_eq!(rejects(|r| r.version = 2u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.header_len = 511u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.page_size = 3000u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.page_size = 256u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.alloc_unit = 32u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.alloc_unit = 8192u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.body_units = u64::MAX.to_le()), sb_at);
        assert_eq!(rejects(|r| r.body_units = 15u64.to_le()), sb_at);
        assert_eq!(rejects(|r| r.map_offset = u64::MAX.to_le()), sb_at);
        assert_eq!(rejects(|r| r.map_units = 0), sb_at);
        assert_eq!(rejects(|r| r.map_units = 7u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.map_pages = 2u32.to_le()), sb_at);
        assert_eq!(rejects(|r| r.map_records = 0), sb_at);
        assert_eq!(rejects(|r| r.map_records = 510u32.to_le()), sb_at);
        let root0 = Location::Root {
            slot: Some(Slot::A),
            index: 0,
        };
        assert_eq!(rejects(|r| r.roots[0].id = MAP_ID), root0);
        assert_eq!(rejects(|r| r.roots[0].name = [0; 24]), root0);
        assert_eq!(rejects(|r| r.roots[0].name[5] = b'z'), root0);
        assert_eq!(rejects(|r| r.roots[0].name[0] = 0xff), root0);
        let root1 = Location::Root {
            slot: Some(Slot::A),
            index: 1,
        };
        assert_eq!(rejects(|r| r.roots[1].name = r.roots[0].name), root1);
        assert_eq!(
            rejects(|r| r.roots[2].name[0] = b'a'),
            Location::Root {
                slot: Some(Slot::A),
                index: 2
            }
        );
    }

    #[test]
    fn short_and_garbage_superblocks_are_errors() {
        for len in [0, 1, 100, 511] {
            corrupt_at(decode_superblock(&vec![0u8; len], Slot::A));
        }
        corrupt_at(decode_superblock(&[0xff; 4096], Slot::A));
    }

    #[test]
    fn encode_rejects_bad_roots() {
        let mut sb = superblock();
        sb.roots = vec![("a\0b".into(), BlockId(1))];
        assert!(matches!(
            encode_superblock(&sb),
            Err(Error::RootName { .. })
        ));
        sb.roots = vec![(String::new(), BlockId(1))];
        assert!(matches!(
            encode_superblock(&sb),
            Err(Error::RootName { .. })
        ));
        sb.roots = (0..17).map(|i| (format!("r{i}"), BlockId(1))).collect();
        assert!(matches!(encode_superblock(&sb), Err(Error::RootsFull)));
    }

    #[test]
    fn map_round_trip() {
        let sb = superblock();
        let map = map_bytes(&sb, &records());
        assert_eq!(decode_map(&map, &sb).unwrap(), records());
    }

    #[test]
    fn map_round_trip_across_pages_with_an_empty_spare_page() {
        let mut sb = superblock();
        sb.page_size = 512;
        sb.alloc_unit = 64;
        let per = records_per_page(512);
        assert_eq!(per, 61);
        // 100 one-unit blocks, then the map (3 pages of 8 units), the last page spare.
        let mut records: Vec<Record> = (1..=100)
            .map(|id| Record {
                id,
                units: 1,
                in_use: true,
            })
            .collect();
        records.push(Record {
            id: MAP_ID,
            units: 24,
            in_use: true,
        });
        sb.map_pages = 3;
        sb.map_units = 24;
        sb.map_offset = 100;
        sb.body_units = 124;
        sb.map_records = 101;
        sb.roots.clear();
        let map = map_bytes(&sb, &records);
        assert_eq!(decode_map(&map, &sb).unwrap(), records);
        // Every bit flip in the map is caught, and named by its page.
        let mut map = map;
        for bit in (0..map.len() * 8).step_by(7) {
            map[bit / 8] ^= 1 << (bit % 8);
            let at = corrupt_at(decode_map(&map, &sb));
            let page = (bit / 8 / 512) as u32;
            assert_eq!(
                at,
                Location::MapPage {
                    index: page,
                    offset: sb.map_file_offset() + u64::from(page) * 512
                },
                "bit {bit}"
            );
            map[bit / 8] ^= 1 << (bit % 8);
        }
    }

    fn map_rejects(change: impl FnOnce(&mut Vec<Record>, &mut Superblock)) -> Location {
        let mut sb = superblock();
        let mut recs = records();
        change(&mut recs, &mut sb);
        let map = map_bytes(&sb, &recs);
        corrupt_at(decode_map(&map, &sb))
    }

    #[test]
    fn bad_records_are_rejected_with_their_location() {
        let rec = |k: u64| Location::MapRecord {
            index: k,
            offset: superblock().map_file_offset() + 24 + 8 * k,
        };
        assert_eq!(map_rejects(|r, _| r[1].units = 0), rec(1));
        assert_eq!(map_rejects(|r, _| r[0].id = 0), rec(0));
        assert_eq!(map_rejects(|r, _| r[1].id = 9), rec(1));
        assert_eq!(map_rejects(|r, _| r[3].id = 3), rec(3));
        assert_eq!(map_rejects(|r, _| r[2].id = 6), Location::Map);
        assert_eq!(map_rejects(|r, _| r[3].id = MAP_ID), rec(3));
        assert_eq!(
            map_rejects(|r, _| {
                r[0].units = 5;
                r[1].units = 4;
            }),
            rec(2)
        );
        assert_eq!(map_rejects(|r, _| r[3].units = 9), rec(3));
        assert_eq!(map_rejects(|r, _| r[3].units = 7), Location::Map);
        assert_eq!(
            map_rejects(|r, _| {
                r[3].in_use = false;
                r[3].id = 0;
            }),
            rec(3)
        );
        let page0 = Location::MapPage {
            index: 0,
            offset: superblock().map_file_offset(),
        };
        assert_eq!(map_rejects(|r, _| r.truncate(3)), page0);
        assert_eq!(map_rejects(|_, s| s.map_records = 3), page0);
    }

    #[test]
    fn decode_map_survives_unchecked_superblocks() {
        let sb = superblock();
        let map = map_bytes(&sb, &records());
        for (page_size, alloc_unit, map_offset, map_pages) in [
            (0, 0, 0, 0),
            (1, 1, u64::MAX, 1),
            (4096, u32::MAX, u64::MAX, 1),
            (u32::MAX, 512, 8, u32::MAX),
            (16, 64, 0, 256),
            (4096, 512, u64::MAX, 1),
        ] {
            let weird = Superblock {
                page_size,
                alloc_unit,
                map_offset,
                map_pages,
                body_units: u64::MAX,
                map_records: u32::MAX,
                ..superblock()
            };
            let _ = weird.body_end();
            corrupt_at(decode_map(&map, &weird));
        }
    }

    #[test]
    fn map_page_header_checks() {
        let sb = superblock();
        let mut page = vec![0u8; 4096];
        encode_map_page(&records(), 0, 7, &mut page).unwrap();
        assert_eq!(decode_map_page(&page, 0, 7, 0).unwrap(), records());
        corrupt_at(decode_map_page(&page, 1, 7, 0));
        corrupt_at(decode_map_page(&page, 0, 8, 0));
        corrupt_at(decode_map_page(&page[..20], 0, 7, 0));
        corrupt_at(decode_map_page(&page[..100], 0, 7, 0));
        // A map of the wrong length.
        assert_eq!(corrupt_at(decode_map(&page[..4000], &sb)), Location::Map);
        // Too many records for the page, with a valid CRC.
        let mut small = vec![0u8; 48];
        assert!(encode_map_page(&records(), 0, 7, &mut small).is_err());
        encode_map_page(&records()[..1], 0, 7, &mut small).unwrap();
        small[16] = 200;
        let crc = map_page_crc(&small);
        small[MAP_CRC_AT..MAP_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        corrupt_at(decode_map_page(&small, 0, 7, 0));
    }
}
