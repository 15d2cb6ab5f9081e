//! Guards the answers to bad input: truncated files, unknown and reserved ids, zero, huge and
//! overflowing sizes, ids in use, bad root names, a full roots table, out-of-bounds ranges, a
//! body that cannot grow and failing devices each give their own error variant, never a panic,
//! change nothing, and leave the `FileBlock` working.

use std::sync::Arc;

use fileblock::format::{MAP_ID, MAX_EXTENT_UNITS, SUPERBLOCK_SIZE};
use fileblock::{BlockId, Config, Error, FileBlock, Location, Stats};
use pageio::{Fault, FaultyPageIo, FdPageIo, MemPageIo};

const PAGE_SIZE: usize = 4096;
const AU: u64 = 512;

fn mem() -> Arc<MemPageIo> {
    Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"))
}

fn fill(file: &FileBlock, id: BlockId, seed: u8) {
    let mut block = file.write(id).expect("write");
    for (at, b) in block.iter_mut().enumerate() {
        *b = seed.wrapping_add(at as u8);
    }
}

fn holds(file: &FileBlock, id: BlockId, seed: u8) -> bool {
    let block = file.read(id).expect("read");
    block
        .iter()
        .enumerate()
        .all(|(at, &b)| b == seed.wrapping_add(at as u8))
}

/// The counters (generation included), the ids with their sizes, and the roots.
type Fingerprint = (Stats, Vec<(BlockId, u64)>, Vec<(String, BlockId)>);

/// What a failed call must not change.
fn fingerprint(file: &FileBlock) -> Fingerprint {
    let mut ids: Vec<(BlockId, u64)> = file
        .ids()
        .map(|id| (id, file.size(id).expect("size")))
        .collect();
    ids.sort_unstable();
    let roots = file.roots().map(|(n, id)| (n.to_owned(), id)).collect();
    (file.stats(), ids, roots)
}

fn clean(file: &FileBlock) {
    let problems = file.validate();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Runs a call that must fail, checks the error with `expect`, and that nothing changed.
macro_rules! fails {
    ($file:expr, $call:expr, $pattern:pat $(if $guard:expr)?) => {{
        let before = fingerprint(&$file);
        let result = $call;
        assert!(
            matches!(result, Err($pattern) $(if $guard)?),
            "{}: {:?}",
            stringify!($call),
            result.map(|_| ())
        );
        assert!(fingerprint(&$file) == before, "{} changed the file", stringify!($call));
    }};
}

#[test]
fn unknown_and_reserved_ids_are_unknown() {
    let io = mem();
    let mut file = FileBlock::create(io.clone(), Config::default()).expect("create");
    let live = file.alloc(1000).expect("alloc");
    fill(&file, live, 1);
    let freed = file.alloc(1000).expect("alloc");
    file.free(freed).expect("free");
    file.flush().expect("flush");
    let committed_then_freed = file.alloc(100).expect("alloc");
    file.flush().expect("flush");
    file.free(committed_then_freed).expect("free");

    for id in [
        BlockId(0),
        BlockId(MAP_ID),
        BlockId(live.0 + 1000),
        freed,
        committed_then_freed,
    ] {
        let unknown = |e: &Error| matches!(e, Error::UnknownId { id: got } if *got == id);
        assert!(!file.contains(id), "{id}");
        fails!(file, file.size(id), ref e if unknown(e));
        fails!(file, file.read(id), ref e if unknown(e));
        fails!(file, file.write(id), ref e if unknown(e));
        fails!(file, file.read_at(id, 0, 1), ref e if unknown(e));
        fails!(file, file.write_at(id, 0, 1), ref e if unknown(e));
        fails!(file, file.overwrite_at(id, 0, 1), ref e if unknown(e));
        fails!(file, file.free(id), ref e if unknown(e));
        fails!(file, file.realloc(id, 100), ref e if unknown(e));
        fails!(file, file.set_root("r", Some(id)), ref e if unknown(e));
        clean(&file);
    }
    // Freeing a block clears its roots; its id stays unknown across a reopen.
    file.set_root("r", Some(live)).expect("root");
    file.free(live).expect("free");
    assert_eq!(file.root("r"), None);
    file.flush().expect("flush");
    drop(file);
    let mut file = FileBlock::open(io, Config::default()).expect("reopen");
    fails!(file, file.read(live), Error::UnknownId { .. });
    fails!(
        file,
        file.free(committed_then_freed),
        Error::UnknownId { .. }
    );
    clean(&file);
    let id = file.alloc(10).expect("still works");
    fill(&file, id, 9);
    assert!(holds(&file, id, 9));
}

fn too_large(e: &Error, size: u64, max: u64) -> bool {
    matches!(e, Error::TooLarge { size: s, max: m } if *s == size && *m == max)
}

#[test]
fn bad_sizes_are_refused_and_change_nothing() {
    let io = mem();
    let mut file = FileBlock::create(io.clone(), Config::default()).expect("create");
    let id = file.alloc(3 * AU).expect("alloc");
    fill(&file, id, 3);
    file.flush().expect("flush");
    let max = u64::from(MAX_EXTENT_UNITS) * AU;

    fails!(file, file.alloc(0), Error::InvalidSize { size: 0 });
    fails!(file, file.realloc(id, 0), Error::InvalidSize { size: 0 });
    fails!(
        file,
        file.alloc_with_id(BlockId(77), 0),
        Error::InvalidSize { size: 0 }
    );
    for size in [
        u64::MAX,
        u64::MAX - AU + 2,
        max + 1,
        max + AU,
        (1 << 31) * AU,
        u64::from(u32::MAX) * AU,
        u64::from(u32::MAX) * AU + 1,
    ] {
        fails!(file, file.alloc(size), ref e if too_large(e, size, max));
        fails!(file, file.realloc(id, size), ref e if too_large(e, size, max));
        fails!(file, file.alloc_with_id(BlockId(77), size), ref e if too_large(e, size, max));
    }
    assert!(!file.contains(BlockId(77)));
    assert!(holds(&file, id, 3));
    clean(&file);

    // The largest block is allowed (in memory: it is never read whole here), commits and
    // reopens; its last bytes are reachable.
    let huge = file.alloc(max).expect("the largest block");
    assert_eq!(file.size(huge).expect("size"), max);
    file.write_at(huge, max - 8, 8)
        .expect("its end")
        .copy_from_slice(b"the end!");
    fails!(
        file,
        file.read_at(huge, max - 8, 9),
        Error::OutOfBounds { .. }
    );
    clean(&file);
    file.flush().expect("flush");
    drop(file);
    let mut file = FileBlock::open(io, Config::default()).expect("reopen");
    clean(&file);
    assert_eq!(file.size(huge).expect("size"), max);
    assert_eq!(
        &file.read_at(huge, max - 8, 8).expect("read")[..],
        b"the end!"
    );
    assert!(holds(&file, id, 3));
    file.free(huge).expect("free");
    file.flush().expect("flush");
    clean(&file);
}

#[test]
fn ids_in_use_and_reserved_ids_cannot_be_chosen() {
    let mut file = FileBlock::create(mem(), Config::default()).expect("create");
    let id = file.alloc(100).expect("alloc");
    fill(&file, id, 5);
    fails!(file, file.alloc_with_id(id, 100), Error::IdInUse { id: got } if got == id);
    fails!(
        file,
        file.alloc_with_id(BlockId(0), 100),
        Error::ReservedId { id: BlockId(0) }
    );
    fails!(
        file,
        file.alloc_with_id(BlockId(MAP_ID), 100),
        Error::ReservedId {
            id: BlockId(MAP_ID)
        }
    );
    assert!(holds(&file, id, 5));
    // The largest usable id is fine; ids handed out later skip it.
    file.alloc_with_id(BlockId(MAP_ID - 1), 100)
        .expect("the largest id");
    file.alloc_with_id(BlockId(id.0 + 1), 100)
        .expect("the next id");
    for _ in 0..10 {
        let new = file.alloc(10).expect("alloc");
        assert!(new.0 != 0 && new.0 < MAP_ID - 1 && new != id && new.0 != id.0 + 1);
    }
    clean(&file);
}

#[test]
fn bad_root_names_and_a_full_table_are_refused() {
    let io = mem();
    let mut file = FileBlock::create(io.clone(), Config::default()).expect("create");
    let id = file.alloc(100).expect("alloc");
    let too_long = "x".repeat(25);
    let multi_byte_25 = format!("{}a", "é".repeat(12));
    for name in ["", too_long.as_str(), "a\0b", "\0", multi_byte_25.as_str()] {
        let bad = |e: &Error| matches!(e, Error::RootName { name: got } if got == name);
        fails!(file, file.set_root(name, Some(id)), ref e if bad(e));
        fails!(file, file.set_root(name, None), ref e if bad(e));
        assert_eq!(file.root(name), None);
    }
    // Exactly 24 bytes, in ASCII and in two-byte characters.
    let names: Vec<String> = (0..14)
        .map(|i| format!("root-{i}"))
        .chain(["y".repeat(24), "é".repeat(12)])
        .collect();
    for name in &names {
        file.set_root(name, Some(id)).expect("a valid name");
    }
    fails!(file, file.set_root("one-more", Some(id)), Error::RootsFull);
    // Removing a root that does not exist is fine; replacing one in a full table too.
    file.set_root("one-more", None)
        .expect("remove a missing root");
    let other = file.alloc(100).expect("alloc");
    file.set_root(&names[3], Some(other)).expect("replace");
    fails!(file, file.set_root("one-more", Some(id)), Error::RootsFull);
    file.set_root(&names[0], None).expect("remove");
    file.set_root("one-more", Some(id)).expect("room again");
    clean(&file);
    file.flush().expect("flush");
    drop(file);
    let file = FileBlock::open(io, Config::default()).expect("reopen");
    clean(&file);
    assert_eq!(file.roots().count(), 16);
    assert_eq!(file.root(&"é".repeat(12)), Some(id));
    assert_eq!(file.root(&names[3]), Some(other));
    assert_eq!(file.root(&names[0]), None);
}

#[test]
fn ranges_outside_a_block_are_out_of_bounds() {
    let mut file = FileBlock::create(mem(), Config::default()).expect("create");
    let id = file.alloc(1000).expect("alloc");
    let size = 1024;
    fill(&file, id, 7);
    for (offset, len) in [
        (size, 1),
        (size - 10, 11),
        (0, size as usize + 1),
        (u64::MAX, 1),
        (u64::MAX - 5, 10),
        (1, usize::MAX),
        (size + 1, 0),
        (u64::MAX, 0),
    ] {
        let oob = |e: &Error| {
            matches!(e, Error::OutOfBounds { id: i, offset: o, len: l, size: s }
                if *i == id && *o == offset && *l == len && *s == size)
        };
        fails!(file, file.read_at(id, offset, len), ref e if oob(e));
        fails!(file, file.write_at(id, offset, len), ref e if oob(e));
        fails!(file, file.overwrite_at(id, offset, len), ref e if oob(e));
    }
    assert!(holds(&file, id, 7));
    // An empty range inside the block is not out of bounds; it is refused by the block cache
    // below (blocks are never empty), as an error, not a panic.
    for offset in [0, 100, size] {
        let result = file.read_at(id, offset, 0);
        assert!(
            matches!(result, Err(Error::Block(_))) || result.is_ok_and(|b| b.is_empty()),
            "an empty range at {offset}"
        );
    }
    // The edges themselves are fine.
    assert_eq!(
        file.read_at(id, size - 1, 1).expect("last byte")[0],
        7u8.wrapping_add(255)
    );
    assert_eq!(
        file.read_at(id, 0, size as usize).expect("whole").len(),
        1024
    );
    clean(&file);
    file.flush().expect("still works");
}

#[test]
fn a_body_that_cannot_grow_is_out_of_space() {
    // With 1 MiB allocation units the largest block is 2^31 - 1 MiB, and about 4096 of them
    // reach the largest file length (i64::MAX bytes). Nothing is written: only the allocation
    // is exercised.
    let ps = 1 << 20;
    let io = Arc::new(MemPageIo::new(ps).expect("mem"));
    let config = Config::default().with_alloc_unit(ps as u32);
    let mut file = FileBlock::create(io, config).expect("create");
    let largest = u64::from(MAX_EXTENT_UNITS) * ps as u64;
    let mut ids = Vec::new();
    let last = loop {
        match file.alloc(largest) {
            Ok(id) => ids.push(id),
            Err(Error::OutOfSpace) => break ids.pop().expect("some allocations"),
            Err(e) => panic!("{e:?}"),
        }
        assert!(ids.len() < 5000, "the body never filled up");
    };
    assert!(ids.len() > 4000, "{}", ids.len());
    fails!(file, file.alloc(largest), Error::OutOfSpace);
    fails!(
        file,
        file.alloc_with_id(BlockId(999_999), largest),
        Error::OutOfSpace
    );
    // The last block cannot grow past the end either. (Smaller blocks still fit at the end.)
    let small = file.alloc(ps as u64).expect("a small block fits");
    fails!(file, file.realloc(small, largest), Error::OutOfSpace);
    clean(&file);
    // Space comes back after a free (at once: nothing here was committed).
    file.free(last).expect("free");
    file.free(small).expect("free");
    file.alloc(largest).expect("room again");
    clean(&file);
}

/// A chain of sources reaches a `pageio::Error::Injected` (the page cache shares it in an
/// `Arc`): the device error is kept, not flattened.
fn caused_by_injection(e: &Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let device = s
            .downcast_ref::<pageio::Error>()
            .or_else(|| s.downcast_ref::<Arc<pageio::Error>>().map(|a| &**a));
        if matches!(device, Some(pageio::Error::Injected { .. })) {
            return true;
        }
        source = s.source();
    }
    false
}

#[test]
fn device_errors_are_kept_as_sources_and_leave_the_file_usable() {
    let io = Arc::new(FaultyPageIo::new(MemPageIo::new(PAGE_SIZE).expect("mem")));
    let mut file = FileBlock::create(io.clone(), Config::default()).expect("create");
    let id = file.alloc(3 * PAGE_SIZE as u64).expect("alloc");
    fill(&file, id, 4);
    file.flush().expect("flush");
    drop(file);

    // A failing read of a block's page (not cached after a reopen).
    let mut file = FileBlock::open(io.clone(), Config::default()).expect("open");
    let page = file
        .extents()
        .find(|e| e.kind == fileblock::ExtentKind::Block(id));
    let page = page.expect("the block's extent").offset / PAGE_SIZE as u64;
    io.fail(Fault::ReadPage(page));
    let result = file.read(id);
    let err = result.map(|_| ()).expect_err("the read fails");
    assert!(matches!(err, Error::Block(_)), "{err:?}");
    assert!(caused_by_injection(&err), "{err:?}");
    io.clear_faults();
    assert!(holds(&file, id, 4));

    // A failing write during a flush: the flush fails, nothing is lost, a retry commits.
    let new = file.alloc(1000).expect("alloc");
    fill(&file, new, 6);
    io.fail(Fault::WriteAt(io.counts().writes));
    let err = file.flush().expect_err("the flush fails");
    assert!(caused_by_injection(&err), "{err:?}");
    io.clear_faults();
    clean(&file);
    file.flush().expect("the retry");
    clean(&file);
    drop(file);
    io.crash();
    let file = FileBlock::open(io.clone(), Config::default()).expect("reopen");
    clean(&file);
    assert!(holds(&file, id, 4) && holds(&file, new, 6));

    // A failing superblock read at open: an error with its source, not a fallback to the
    // other superblock or a panic.
    io.fail(Fault::ReadPage(0));
    let err = FileBlock::open(io.clone(), Config::default()).expect_err("open fails");
    assert!(caused_by_injection(&err), "{err:?}");
    io.clear_faults();
    FileBlock::open(io, Config::default()).expect("open again");
}

#[test]
fn truncated_files_fail_to_open_with_the_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("blocks.fb");
    let io = Arc::new(FdPageIo::create(&path, PAGE_SIZE).expect("create file"));
    let mut file = FileBlock::create(io, Config::default()).expect("create");
    let ids: Vec<BlockId> = (0..40)
        .map(|i| file.alloc(700 + i * 300).expect("alloc"))
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        fill(&file, id, i as u8);
    }
    file.flush().expect("flush");
    let body_end = file.superblock().body_end();
    let map_at = file.superblock().map_file_offset();
    drop(file);
    let image = std::fs::read(&path).expect("read the file");
    let ps = PAGE_SIZE as u64;
    assert!(image.len() as u64 >= body_end);

    let cuts = [
        0,
        100,
        SUPERBLOCK_SIZE as u64 - 1,
        SUPERBLOCK_SIZE as u64,
        ps - 1,
        ps,
        ps + 600,
        2 * ps,
        2 * ps + 1,
        map_at + 50,
        body_end - ps - 1,
        body_end.next_multiple_of(ps) - ps,
    ];
    for cut in cuts {
        std::fs::write(&path, &image[..cut as usize]).expect("write the cut file");
        let io = Arc::new(FdPageIo::open(&path, PAGE_SIZE).expect("open file"));
        let at = match FileBlock::open(io, Config::default()) {
            Err(Error::Corrupt { at, .. }) => at,
            other => panic!("cut at {cut}: {other:?}"),
        };
        let expected = if cut < SUPERBLOCK_SIZE as u64 {
            // Superblock A's header torn (its page reads as zeros past the cut), B missing.
            Location::Superblocks
        } else {
            Location::FileLength {
                len: cut.next_multiple_of(ps),
            }
        };
        assert_eq!(at, expected, "cut at {cut} of {}", image.len());
    }
    // Restored, it opens and holds everything.
    std::fs::write(&path, &image).expect("restore");
    let file = FileBlock::open(
        Arc::new(FdPageIo::open(&path, PAGE_SIZE).expect("open file")),
        Config::default(),
    )
    .expect("open");
    clean(&file);
    for (i, &id) in ids.iter().enumerate() {
        assert!(holds(&file, id, i as u8));
    }
}

/// A superblock found in the slot of the other parity (a misdirected write put generation G+1,
/// which belongs in slot B, into slot A) is not trusted: `open` takes the valid superblock of the
/// right slot, so the next commit does not overwrite the superblock it opened.
#[test]
fn a_superblock_in_the_wrong_slot_is_not_trusted() {
    use fileblock::format::{self, Slot};
    use pageio::PageIo;

    let io = mem();
    let mut file = FileBlock::create(io.clone(), Config::default()).expect("create");
    let id = file.alloc(1000).expect("alloc");
    fill(&file, id, 1);
    file.flush().expect("flush");
    fill(&file, id, 2);
    file.set_root("r", Some(id)).expect("root");
    file.flush().expect("flush");
    let current = file.superblock().clone();
    drop(file);
    let slot = Slot::for_generation(current.generation);
    let other = if slot == Slot::A { Slot::B } else { Slot::A };

    // Generation G + 1 written into the slot of G, which it does not belong in.
    let mut misdirected = current.clone();
    misdirected.generation += 1;
    let mut page = vec![0u8; PAGE_SIZE];
    page[..SUPERBLOCK_SIZE].copy_from_slice(&format::encode_superblock(&misdirected).expect("enc"));
    let at = Location::Superblock(slot);
    match format::decode_superblock(&page, slot) {
        Err(Error::Corrupt { at: got, what }) => {
            assert_eq!(got, at);
            assert!(what.contains("slot"), "{what}");
        }
        other => panic!("decoded a superblock from the wrong slot: {other:?}"),
    }
    io.write_page(slot.page(), &page)
        .expect("misdirected write");

    let file = FileBlock::open(io.clone(), Config::default()).expect("open");
    assert_eq!(
        Slot::for_generation(file.superblock().generation),
        other,
        "open trusts only the superblock of the right slot"
    );
    assert!(file.superblock().generation < current.generation);
    clean(&file);
}

/// The backend error is reachable from a fileblock error without walking sources, for read
/// misses (whose error the page cache shares in an `Arc`) and flushes alike, and the top-level
/// message says what failed.
#[test]
fn the_backend_error_is_one_call_away() {
    let io = Arc::new(FaultyPageIo::new(MemPageIo::new(PAGE_SIZE).expect("mem")));
    let mut file = FileBlock::create(io.clone(), Config::default()).expect("create");
    let id = file.alloc(3 * PAGE_SIZE as u64).expect("alloc");
    fill(&file, id, 3);
    file.flush().expect("flush");
    drop(file);

    let mut file = FileBlock::open(io.clone(), Config::default()).expect("open");
    let page = file
        .extents()
        .find(|e| e.kind == fileblock::ExtentKind::Block(id))
        .expect("extent")
        .offset
        / PAGE_SIZE as u64;
    io.fail(Fault::ReadPage(page));
    let err = file.read(id).map(|_| ()).expect_err("read fails");
    assert!(
        matches!(err.backend(), Some(pageio::Error::Injected { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("page {page}")),
        "says what failed: {text}"
    );
    io.clear_faults();

    fill(&file, id, 4);
    io.fail(Fault::WriteAt(io.counts().writes));
    let err = file.flush().expect_err("flush fails");
    assert!(
        matches!(err.backend(), Some(pageio::Error::Injected { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("flush"), "says what failed: {err}");
    assert!(!err.to_string().contains("block cache error"), "{err}");
}
