//! Guards the on-disk decoders against untrusted bytes: arbitrary and structured input never
//! panics and what decodes obeys the documented rules; bit flips in superblocks and map pages,
//! of generated images and of a real file, are caught with their location; truncated files
//! fail to open with a clear error.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fileblock::format::{
    self, IN_USE, MAP_HEADER_SIZE, MAP_ID, MAX_EXTENT_UNITS, MAX_ROOTS, Record, SUPERBLOCK_SIZE,
    Slot, Superblock, records_per_page,
};
use fileblock::{BlockId, Config, Error, FileBlock, Location};
use pageio::{MemPageIo, PageIo};
use proptest::prelude::*;

const CASES: u32 = 512;
/// The CRC field of the superblock header.
const SB_CRC_AT: usize = SUPERBLOCK_SIZE - 4;
/// The CRC field of a map page header.
const MAP_CRC_AT: usize = 20;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![Just(Slot::A), Just(Slot::B)]
}

/// u32 values at and around every boundary the format has, or anything.
fn edgy_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            7,
            63,
            64,
            100,
            512,
            4096,
            1 << 20,
            1 << 21,
            MAX_EXTENT_UNITS,
            IN_USE,
            u32::MAX
        ]),
        any::<u32>(),
        0u32..64,
    ]
}

fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            8,
            64,
            1 << 31,
            1 << 40,
            i64::MAX as u64,
            u64::MAX / 64,
            u64::MAX
        ]),
        any::<u64>(),
        0u64..200,
    ]
}

fn crc_superblock(header: &mut [u8]) {
    let crc = crc32c::crc32c(&header[..SB_CRC_AT]);
    header[SB_CRC_AT..SUPERBLOCK_SIZE].copy_from_slice(&crc.to_le_bytes());
}

fn crc_map_page(page: &mut [u8]) {
    page[MAP_CRC_AT..MAP_CRC_AT + 4].fill(0);
    let crc = crc32c::crc32c(page);
    page[MAP_CRC_AT..MAP_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

fn corrupt_at<T: std::fmt::Debug>(result: fileblock::Result<T>) -> Location {
    match result {
        Err(Error::Corrupt { at, .. }) => at,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Whether `at` names superblock `slot` or an entry of its roots table.
fn in_superblock(at: &Location, slot: Slot) -> bool {
    match *at {
        Location::Superblock(s) => s == slot,
        Location::Root {
            slot: Some(s),
            index,
        } => s == slot && index < MAX_ROOTS,
        _ => false,
    }
}

/// What `decode_superblock` promises about a superblock it accepts.
fn assert_sane_superblock(sb: &Superblock) {
    let (ps, au) = (u64::from(sb.page_size), u64::from(sb.alloc_unit));
    assert!(sb.page_size.is_power_of_two() && (512..=1 << 20).contains(&sb.page_size));
    assert!(format::valid_alloc_unit(sb.alloc_unit, sb.page_size));
    assert!(sb.map_pages > 0 && sb.map_units > 0 && sb.map_units <= MAX_EXTENT_UNITS);
    assert_eq!(u64::from(sb.map_units) * au, u64::from(sb.map_pages) * ps);
    let map_end = sb.map_offset.checked_add(u64::from(sb.map_units));
    assert!(map_end.is_some_and(|end| end <= sb.body_units));
    let body_end = sb
        .body_units
        .checked_mul(au)
        .and_then(|b| b.checked_add(2 * ps));
    assert!(body_end.is_some_and(|end| i64::try_from(end).is_ok()));
    let capacity = u64::from(sb.map_pages) * records_per_page(sb.page_size as usize) as u64;
    assert!(sb.map_records > 0 && u64::from(sb.map_records) <= capacity);
    assert!(sb.roots.len() <= MAX_ROOTS);
    let names: HashSet<&str> = sb.roots.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), sb.roots.len());
    for (name, id) in &sb.roots {
        assert!(format::valid_root_name(name), "{name:?}");
        assert!(id.0 != 0 && id.0 != MAP_ID);
    }
    // What decodes re-encodes to something that decodes the same.
    let again = format::encode_superblock(sb).expect("re-encode");
    assert_eq!(
        &format::decode_superblock(&again, Slot::for_generation(sb.generation)).expect("re-decode"),
        sb
    );
}

/// A superblock with any field values; roots drawn from valid and invalid names.
fn any_superblock() -> impl Strategy<Value = Superblock> {
    let root = (
        prop_oneof![
            "[a-z]{1,24}",
            Just("x".repeat(24)),
            Just("é".repeat(12)),
            Just("main".to_owned())
        ],
        prop_oneof![1u32..50, Just(MAP_ID - 1)],
    );
    (
        (edgy_u64(), edgy_u32(), edgy_u32(), edgy_u64(), edgy_u64()),
        (edgy_u32(), edgy_u32(), edgy_u32()),
        prop::collection::vec(root, 0..=MAX_ROOTS),
    )
        .prop_map(
            |(
                (generation, page_size, alloc_unit, body_units, map_offset),
                (map_units, map_pages, map_records),
                roots,
            )| {
                let mut seen = HashSet::new();
                Superblock {
                    generation,
                    page_size,
                    alloc_unit,
                    body_units,
                    map_offset,
                    map_units,
                    map_pages,
                    map_records,
                    roots: roots
                        .into_iter()
                        .filter(|(n, _)| seen.insert(n.clone()))
                        .map(|(n, id)| (n, BlockId(id)))
                        .collect(),
                }
            },
        )
}

/// A superblock that is valid by construction.
fn valid_superblock() -> impl Strategy<Value = Superblock> {
    (
        9u32..=20,
        any::<u32>(),
        1u32..=8,
        any::<u64>(),
        0u64..1000,
        any::<u32>(),
    )
        .prop_flat_map(
            |(ps_log, au_pick, map_pages, generation, map_offset, records)| {
                let page_size = 1u32 << ps_log;
                let alloc_unit = 1u32 << (6 + au_pick % (ps_log - 5));
                let map_units = map_pages * (page_size / alloc_unit);
                let capacity = map_pages as usize * records_per_page(page_size as usize);
                let map_records = 1 + records % capacity as u32;
                let names =
                    prop::collection::btree_map("[a-zA-Z0-9_.-]{1,24}", 1u32..MAP_ID, 0..=16);
                (0u64..1000, names).prop_map(move |(extra, roots)| Superblock {
                    generation,
                    page_size,
                    alloc_unit,
                    body_units: map_offset + u64::from(map_units) + extra,
                    map_offset,
                    map_units,
                    map_pages,
                    map_records,
                    roots: roots.into_iter().map(|(n, id)| (n, BlockId(id))).collect(),
                })
            },
        )
}

/// A valid superblock with up to two fields set to edge values: every check of the layout gets
/// reached, and passed or failed by a little.
fn near_valid_superblock() -> impl Strategy<Value = Superblock> {
    let change = (0u8..9, edgy_u64(), any::<bool>());
    (valid_superblock(), prop::collection::vec(change, 0..=2)).prop_map(|(mut sb, changes)| {
        for (field, value, nudge) in changes {
            // Either an edge value, or the current value moved by one.
            let set32 = |old: u32| {
                if nudge {
                    old.wrapping_add(value as u32 % 3).wrapping_sub(1)
                } else {
                    value as u32
                }
            };
            let set64 = |old: u64| {
                if nudge {
                    old.wrapping_add(value % 3).wrapping_sub(1)
                } else {
                    value
                }
            };
            match field {
                0 => sb.page_size = set32(sb.page_size),
                1 => sb.alloc_unit = set32(sb.alloc_unit),
                2 => sb.body_units = set64(sb.body_units),
                3 => sb.map_offset = set64(sb.map_offset),
                4 => sb.map_units = set32(sb.map_units),
                5 => sb.map_pages = set32(sb.map_pages),
                6 => sb.map_records = set32(sb.map_records),
                7 => sb.generation = value,
                _ => sb.roots.truncate(value as usize % 17),
            }
        }
        sb
    })
}

/// The header of an almost valid superblock (or any one), then byte changes inside the header
/// (mostly in the roots table); the CRC is recomputed (mostly), so the checks after the CRC
/// are reached.
fn crafted_superblock() -> impl Strategy<Value = Vec<u8>> {
    let at = prop_oneof![60..SB_CRC_AT, 0..SB_CRC_AT];
    (
        prop_oneof![4 => near_valid_superblock(), 1 => any_superblock()],
        prop::collection::vec((at, any::<u8>()), 0..3),
        prop::bool::weighted(0.9),
        prop_oneof![4 => Just(SUPERBLOCK_SIZE), 2 => Just(1024usize), 1 => 0usize..600],
        prop::option::weighted(0.1, (0usize..1024, 1u8..)),
    )
        .prop_map(|(sb, changes, fix_crc, len, tail)| {
            let mut bytes = vec![0u8; len.max(SUPERBLOCK_SIZE)];
            let Ok(header) = format::encode_superblock(&sb) else {
                return bytes;
            };
            bytes[..SUPERBLOCK_SIZE].copy_from_slice(&header);
            for (at, value) in changes {
                bytes[at] = value;
            }
            if fix_crc {
                crc_superblock(&mut bytes);
            }
            if let Some((at, value)) = tail
                && let Some(b) = bytes.get_mut(SUPERBLOCK_SIZE + at)
            {
                *b = value;
            }
            bytes.truncate(len);
            bytes
        })
}

// ----- Maps -----

/// A layout: records and the superblock pointing at the map they describe.
#[derive(Clone, Debug)]
struct Layout {
    sb: Superblock,
    records: Vec<Record>,
}

impl Layout {
    fn map_bytes(&self) -> Vec<u8> {
        let ps = self.sb.page_size as usize;
        let per = records_per_page(ps);
        let mut map = vec![0u8; self.sb.map_pages as usize * ps];
        for (i, page) in map.chunks_exact_mut(ps).enumerate() {
            let from = (i * per).min(self.records.len());
            let to = (from + per).min(self.records.len());
            format::encode_map_page(&self.records[from..to], i as u32, self.sb.generation, page)
                .expect("encode a map page");
        }
        map
    }
}

/// The documented record rules (see `format::decode_map`), written independently: `None` when
/// the records are a valid map for `sb`.
fn reference_check(records: &[Record], sb: &Superblock) -> Option<&'static str> {
    let mut ids = HashSet::new();
    let mut offset = 0u64;
    let mut map_seen = 0;
    for r in records {
        if r.units == 0 {
            return Some("zero size");
        }
        if r.in_use {
            if r.id == 0 || !ids.insert(r.id) {
                return Some("bad or duplicate id");
            }
            if r.id == MAP_ID {
                if offset != sb.map_offset || r.units != sb.map_units {
                    return Some("map extent misplaced");
                }
                map_seen += 1;
            }
        } else if r.id != 0 {
            return Some("free extent with an id");
        }
        let Some(next) = offset.checked_add(u64::from(r.units)) else {
            return Some("offsets overflow");
        };
        offset = next;
    }
    if offset != sb.body_units {
        return Some("sum differs from the body");
    }
    if map_seen != 1 {
        return Some("no map extent");
    }
    if !records.last().is_some_and(|r| r.in_use) {
        return Some("last extent free");
    }
    None
}

/// A layout that is valid by construction, then (half the time, if `damaged`) with one rule
/// broken.
fn layout(damaged: bool) -> impl Strategy<Value = Layout> {
    let extent = (prop::bool::weighted(0.7), 1u32..=8);
    (
        prop::collection::vec(extent, 0..200),
        any::<prop::sample::Index>(),
        prop_oneof![Just(512u32), Just(1024u32)],
        prop_oneof![Just(64u32), Just(512u32)],
        0u32..2,
        any::<u64>(),
        prop::option::weighted(0.5, (0u8..8, any::<prop::sample::Index>(), edgy_u32()))
            .prop_map(move |damage| damage.filter(|_| damaged)),
    )
        .prop_map(
            |(extents, at, page_size, alloc_unit, spare, generation, damage)| {
                let mut records: Vec<Record> = Vec::new();
                let mut next_id = 1;
                for (in_use, units) in extents {
                    // Adjacent free extents are legal in the format; keep them.
                    let id = if in_use {
                        next_id += 1;
                        next_id * 7 % 100_003
                    } else {
                        0
                    };
                    records.push(Record { id, units, in_use });
                }
                let per = records_per_page(page_size as usize);
                let map_pages = (records.len() + 1).div_ceil(per) as u32 + spare;
                let map_units = map_pages * page_size / alloc_unit;
                let pos = at.index(records.len() + 1);
                records.insert(
                    pos,
                    Record {
                        id: MAP_ID,
                        units: map_units,
                        in_use: true,
                    },
                );
                while records.last().is_some_and(|r| !r.in_use) {
                    records.pop();
                }
                let map_offset = records[..pos].iter().map(|r| u64::from(r.units)).sum();
                let body_units = records.iter().map(|r| u64::from(r.units)).sum();
                let mut layout = Layout {
                    sb: Superblock {
                        generation,
                        page_size,
                        alloc_unit,
                        body_units,
                        map_offset,
                        map_units,
                        map_pages,
                        map_records: records.len() as u32,
                        roots: Vec::new(),
                    },
                    records,
                };
                if let Some((kind, which, value)) = damage {
                    let k = which.index(layout.records.len());
                    let r = &mut layout.records[k];
                    match kind {
                        0 => r.units = 0,
                        1 => r.units = value & MAX_EXTENT_UNITS,
                        2 => r.id = value,
                        3 => r.in_use = !r.in_use,
                        4 => r.id = MAP_ID,
                        5 => {
                            let id = layout.records[which.index(layout.records.len())].id;
                            layout.records[k].id = id;
                        }
                        6 => layout.sb.body_units = u64::from(value),
                        _ => layout.sb.map_offset = u64::from(value),
                    }
                }
                layout
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn superblock_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1200),
                                          slot in slot()) {
        if let Ok(sb) = format::decode_superblock(&bytes, slot) {
            assert_sane_superblock(&sb);
        }
    }

    #[test]
    fn superblock_decoder_checks_every_field(bytes in crafted_superblock(), slot in slot()) {
        match format::decode_superblock(&bytes, slot) {
            Ok(sb) => assert_sane_superblock(&sb),
            Err(Error::Corrupt { at, .. }) => prop_assert!(in_superblock(&at, slot), "{at:?}"),
            Err(e) => prop_assert!(false, "not a Corrupt error: {e:?}"),
        }
    }

    #[test]
    fn valid_superblocks_round_trip_and_every_few_bit_flips_are_caught(
        sb in valid_superblock(),
        flips in prop::collection::btree_set(0usize..8 * 4096, 1..=4),
        page in prop_oneof![Just(512usize), Just(4096usize)],
    ) {
        let slot = Slot::for_generation(sb.generation);
        let other = if slot == Slot::A { Slot::B } else { Slot::A };
        let mut bytes = vec![0u8; page];
        bytes[..SUPERBLOCK_SIZE].copy_from_slice(&format::encode_superblock(&sb).expect("encode"));
        prop_assert_eq!(&format::decode_superblock(&bytes, slot).expect("decode"), &sb);
        // The same bytes in the other slot are a misdirected write, not a superblock.
        prop_assert_eq!(
            corrupt_at(format::decode_superblock(&bytes, other)),
            Location::Superblock(other)
        );
        for &bit in &flips {
            bytes[(bit / 8) % page] ^= 1 << (bit % 8);
        }
        if bytes[..SUPERBLOCK_SIZE] != format::encode_superblock(&sb).expect("encode")[..]
            || bytes[SUPERBLOCK_SIZE..].iter().any(|&b| b != 0)
        {
            prop_assert_eq!(
                corrupt_at(format::decode_superblock(&bytes, slot)),
                Location::Superblock(slot)
            );
        }
    }

    #[test]
    fn map_page_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1100),
                                        index in edgy_u32(), generation in edgy_u64(),
                                        offset in edgy_u64()) {
        if let Ok(records) = format::decode_map_page(&bytes, index, generation, offset) {
            prop_assert!(records.len() <= records_per_page(bytes.len()));
        }
    }

    #[test]
    fn map_page_decoder_checks_the_header(
        len in prop_oneof![Just(512usize), Just(4096usize), 0usize..600],
        count in edgy_u32(),
        index in 0u32..4,
        generation in 0u64..4,
        records in prop::collection::vec(any::<(u32, u32)>(), 0..80),
    ) {
        let mut page = vec![0u8; len];
        if len >= MAP_HEADER_SIZE {
            page[..4].copy_from_slice(&format::MAP_PAGE_MAGIC);
            page[4..8].copy_from_slice(&1u32.to_le_bytes());
            page[8..16].copy_from_slice(&1u64.to_le_bytes());
            page[16..20].copy_from_slice(&count.to_le_bytes());
            for (k, (id, size)) in records.iter().enumerate() {
                let at = MAP_HEADER_SIZE + 8 * k;
                if let Some(slot) = page.get_mut(at..at + 8) {
                    slot[..4].copy_from_slice(&id.to_le_bytes());
                    slot[4..].copy_from_slice(&size.to_le_bytes());
                }
            }
            crc_map_page(&mut page);
        }
        let result = format::decode_map_page(&page, index, generation, 99);
        let fits = len >= MAP_HEADER_SIZE && count as usize <= records_per_page(len);
        if fits && index == 1 && generation == 1 {
            let got = result.expect("a well-formed page");
            prop_assert_eq!(got.len(), count as usize);
            for (k, r) in got.iter().enumerate() {
                let (id, size) = records.get(k).copied().unwrap_or((0, 0));
                let want = (id, size & MAX_EXTENT_UNITS, size & IN_USE != 0);
                prop_assert_eq!((r.id, r.units, r.in_use), want);
            }
        } else {
            prop_assert_eq!(
                corrupt_at(result),
                Location::MapPage { index, offset: 99 }
            );
        }
    }

    #[test]
    fn map_decoder_takes_any_bytes_and_any_superblock(
        sb in any_superblock(),
        map in prop::collection::vec(any::<u8>(), 0..2100),
    ) {
        // Shaped to the length the superblock asks for when that is small, so the pages are
        // decoded rather than the length refused.
        let want = (sb.map_pages as usize)
            .checked_mul(sb.page_size as usize)
            .filter(|&n| n <= 4096);
        let mut map = map;
        if let Some(n) = want {
            map.resize(n, 0);
        }
        if let Ok(records) = format::decode_map(&map, &sb) {
            prop_assert_eq!(reference_check(&records, &sb), None);
        }
    }

    #[test]
    fn map_decoder_agrees_with_the_documented_rules(layout in layout(true)) {
        let map = layout.map_bytes();
        let result = format::decode_map(&map, &layout.sb);
        match reference_check(&layout.records, &layout.sb) {
            None => prop_assert_eq!(result.expect("a valid map"), layout.records),
            Some(why) => {
                let at = corrupt_at(result);
                prop_assert!(
                    matches!(at, Location::MapRecord { .. } | Location::Map),
                    "{why}: {at:?}"
                );
            }
        }
    }

    #[test]
    fn every_few_bit_flips_of_a_valid_map_are_caught_on_their_page(
        layout in layout(false),
        flips in prop::collection::vec(any::<prop::sample::Index>(), 1..=4),
    ) {
        prop_assert_eq!(reference_check(&layout.records, &layout.sb), None);
        let mut map = layout.map_bytes();
        let bits = map.len() * 8;
        let bits: Vec<usize> = flips.iter().map(|i| i.index(bits)).collect();
        for &bit in &bits {
            map[bit / 8] ^= 1 << (bit % 8);
        }
        let ps = layout.sb.page_size as usize;
        let clean = layout.map_bytes();
        // The first page that differs (flips of one bit twice cancel out).
        let Some(first) = map.chunks(ps).zip(clean.chunks(ps)).position(|(a, b)| a != b) else {
            return Ok(());
        };
        prop_assert_eq!(
            corrupt_at(format::decode_map(&map, &layout.sb)),
            Location::MapPage {
                index: first as u32,
                offset: layout.sb.map_file_offset() + (first * ps) as u64,
            }
        );
    }
}

// ----- A real file -----

const PAGE_SIZE: usize = 512;

fn file_config() -> Config {
    Config::default().with_alloc_unit(64)
}

/// Ids with sizes and first bytes, and roots: enough to tell two states apart.
type Summary = (BTreeMap<u32, (u64, Vec<u8>)>, BTreeMap<String, u32>);

fn summary(file: &FileBlock) -> Summary {
    let blocks = file
        .ids()
        .map(|id| {
            let block = file.read(id).expect("read");
            (id.0, (block.len() as u64, block.to_vec()))
        })
        .collect();
    let roots = file.roots().map(|(n, id)| (n.to_owned(), id.0)).collect();
    (blocks, roots)
}

/// A file of 150 written blocks committed at generation `g - 1` (the returned summary), then a
/// root and one more block committed at `g`. Returns the device, the older summary, the newest
/// superblock and the newest summary.
fn real_file() -> (Arc<MemPageIo>, Summary, Superblock, Summary) {
    let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"));
    let mut file = FileBlock::create(io.clone(), file_config()).expect("create");
    for i in 0..150u64 {
        let id = file.alloc(1 + (i * 211) % 900).expect("alloc");
        let mut block = file.write(id).expect("write");
        for (k, b) in block.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(13).wrapping_add(k as u8);
        }
    }
    file.set_root("main", Some(BlockId(7))).expect("root");
    file.flush().expect("flush");
    let older = summary(&file);
    let id = file.alloc(500).expect("alloc");
    file.write(id).expect("write").fill(0xab);
    file.set_root("new", Some(id)).expect("root");
    file.flush().expect("flush");
    assert!(file.superblock().map_pages >= 3, "{:?}", file.superblock());
    let newest = summary(&file);
    let sb = file.superblock().clone();
    drop(file);
    (io, older, sb, newest)
}

/// Flips bit `bit` of the file (counted from the start of the file).
fn flip(io: &MemPageIo, bit: u64) {
    let byte = bit / 8;
    let no = byte / PAGE_SIZE as u64;
    let mut page = vec![0u8; PAGE_SIZE];
    io.read_page(no, &mut page).expect("read");
    page[(byte % PAGE_SIZE as u64) as usize] ^= 1 << (bit % 8);
    io.write_page(no, &page).expect("write");
}

/// What `fileblock check` looks at: both superblocks decoded straight from the device, then
/// open and validate. Returns the location of every problem.
fn check(io: &Arc<MemPageIo>) -> Vec<Location> {
    let mut found = Vec::new();
    let mut page = vec![0u8; PAGE_SIZE];
    for slot in [Slot::A, Slot::B] {
        io.read_page(slot.page(), &mut page).expect("read");
        if let Err(e) = format::decode_superblock(&page, slot) {
            found.push(corrupt_at::<()>(Err(e)));
        }
    }
    match FileBlock::open(io.clone(), file_config()) {
        Ok(file) => found.extend(file.validate().into_iter().map(|p| p.at)),
        Err(e) => found.push(corrupt_at::<()>(Err(e))),
    }
    found
}

#[test]
fn every_bit_flip_of_a_real_files_superblocks_and_map_is_caught() {
    let (io, older, sb, newest) = real_file();
    let newer_slot = Slot::for_generation(sb.generation);
    let older_slot = Slot::for_generation(sb.generation - 1);
    let bits = 8 * PAGE_SIZE as u64;
    let live = newest.0.len();

    // The newest superblock: open falls back to the older one, which is the whole previous
    // commit, untouched (the last commit only used space that was free in it); check reports
    // the damaged superblock. (Reading every block back is done for a sample of the bits.)
    for bit in 0..bits {
        let at = newer_slot.page() * bits + bit;
        flip(&io, at);
        let file =
            FileBlock::open(io.clone(), file_config()).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(file.stats().generation, sb.generation - 1, "bit {bit}");
        assert_eq!(file.stats().live_blocks, live - 1, "bit {bit}");
        if bit % 61 == 0 {
            assert!(summary(&file) == older, "bit {bit}: not the older state");
            drop(file);
            assert_eq!(check(&io), [Location::Superblock(newer_slot)], "bit {bit}");
        }
        flip(&io, at);
    }

    // The older superblock: open uses the newest, and check names the damaged one.
    for bit in 0..bits {
        let at = older_slot.page() * bits + bit;
        flip(&io, at);
        let file =
            FileBlock::open(io.clone(), file_config()).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(file.stats().generation, sb.generation, "bit {bit}");
        if bit % 61 == 0 {
            assert!(summary(&file) == newest, "bit {bit}: not the newest state");
        }
        drop(file);
        assert_eq!(check(&io), [Location::Superblock(older_slot)], "bit {bit}");
        flip(&io, at);
    }

    // Every map page (the map extent need not be page aligned): open fails naming that page.
    let ps = PAGE_SIZE as u64;
    for index in 0..sb.map_pages {
        let offset = sb.map_file_offset() + u64::from(index) * ps;
        for bit in 0..bits {
            flip(&io, offset * 8 + bit);
            let at = corrupt_at(FileBlock::open(io.clone(), file_config()));
            assert_eq!(at, Location::MapPage { index, offset }, "bit {bit}");
            if bit % 61 == 0 {
                assert_eq!(
                    check(&io),
                    [Location::MapPage { index, offset }],
                    "bit {bit}"
                );
            }
            flip(&io, offset * 8 + bit);
        }
    }
    // All restored: clean.
    assert_eq!(check(&io), []);
}

#[test]
fn every_page_granular_truncation_is_a_clear_error() {
    let (io, _, sb, newest) = real_file();
    let pages = io.num_pages().expect("pages");
    let mut page = vec![0u8; PAGE_SIZE];
    let ps = PAGE_SIZE as u64;
    for cut in 0..pages {
        let short = Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"));
        for no in 0..cut {
            io.read_page(no, &mut page).expect("read");
            short.write_page(no, &page).expect("write");
        }
        let result = FileBlock::open(short.clone(), file_config());
        if cut * ps >= sb.body_end() {
            // Only free space past the body was cut.
            let file = result.expect("a cut past the body");
            assert!(file.validate().is_empty());
            assert!(summary(&file) == newest);
        } else if cut == 0 {
            assert_eq!(corrupt_at(result), Location::Superblocks);
        } else {
            // With one page, superblock B is missing and A (also shorter than its body) is
            // used.
            assert_eq!(
                corrupt_at(result),
                Location::FileLength { len: cut * ps },
                "cut at page {cut} of {pages}"
            );
        }
    }
}
