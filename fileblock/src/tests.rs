//! Unit tests of `FileBlock` as a whole: round trips through flush and reopen, pending frees,
//! realloc, compaction, crash points of one flush, and bad input.

use std::collections::BTreeMap;
use std::sync::Arc;

use pageio::{FaultyPageIo, MemPageIo, PageIo};

use crate::format::{self, MAP_ID, Slot};
use crate::{BlockId, CompactLimit, Config, Error, ExtentKind, FileBlock, Location};

fn mem(page_size: usize) -> Arc<MemPageIo> {
    Arc::new(MemPageIo::new(page_size).unwrap())
}

fn clean(file: &FileBlock) {
    let problems = file.validate();
    assert!(problems.is_empty(), "{problems:#?}");
}

fn fill(file: &FileBlock, id: BlockId, seed: u8) {
    let mut block = file.write(id).unwrap();
    for (i, b) in block.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
}

fn holds(file: &FileBlock, id: BlockId, seed: u8) -> bool {
    let block = file.read(id).unwrap();
    block
        .iter()
        .enumerate()
        .all(|(i, &b)| b == seed.wrapping_add(i as u8))
}

/// Every live id with its size and the first byte of its contents.
fn state(file: &FileBlock) -> BTreeMap<BlockId, (u64, u8)> {
    file.ids()
        .map(|id| (id, (file.size(id).unwrap(), file.read(id).unwrap()[0])))
        .collect()
}

#[test]
fn file_block_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileBlock>();
}

#[test]
fn create_writes_two_valid_superblocks_and_an_empty_map() {
    let io = mem(4096);
    let file = FileBlock::create(io.clone(), Config::default()).unwrap();
    clean(&file);
    let stats = file.stats();
    assert_eq!(stats.generation, 1);
    assert_eq!(stats.live_blocks, 0);
    assert_eq!(stats.map_len, 4096);
    assert_eq!(stats.body_len, 4096);
    assert_eq!(io.num_pages().unwrap(), 3);
    let mut page = vec![0u8; 4096];
    io.read_page(0, &mut page).unwrap();
    assert_eq!(
        format::decode_superblock(&page, Slot::A)
            .unwrap()
            .generation,
        0
    );
    io.read_page(1, &mut page).unwrap();
    let b = format::decode_superblock(&page, Slot::B).unwrap();
    assert_eq!((b.generation, b.map_records, b.body_units), (1, 1, 8));
    drop(file);
    let file = FileBlock::open(io, Config::default()).unwrap();
    clean(&file);
    assert_eq!(file.stats().generation, 1);
}

#[test]
fn flush_and_reopen_round_trip() {
    let io = mem(512);
    let config = Config::default().with_alloc_unit(64);
    let mut file = FileBlock::create(io.clone(), config.clone()).unwrap();
    let mut expect = BTreeMap::new();
    for i in 0..200u64 {
        let id = file.alloc(1 + i * 37 % 700).unwrap();
        fill(&file, id, i as u8);
        expect.insert(id, i as u8);
    }
    file.alloc_with_id(BlockId(1_000_000), 100).unwrap();
    fill(&file, BlockId(1_000_000), 42);
    expect.insert(BlockId(1_000_000), 42);
    for id in [BlockId(3), BlockId(50), BlockId(51), BlockId(120)] {
        file.free(id).unwrap();
        expect.remove(&id);
    }
    file.set_root("first", Some(BlockId(1))).unwrap();
    file.set_root("big", Some(BlockId(1_000_000))).unwrap();
    clean(&file);
    file.flush().unwrap();
    clean(&file);
    let before = state(&file);
    let generation = file.stats().generation;
    drop(file);

    let file = FileBlock::open(io, config).unwrap();
    clean(&file);
    assert_eq!(state(&file), before);
    assert_eq!(file.stats().generation, generation);
    for (&id, &seed) in &expect {
        assert!(holds(&file, id, seed), "{id}");
    }
    assert_eq!(file.root("first"), Some(BlockId(1)));
    assert_eq!(file.root("big"), Some(BlockId(1_000_000)));
    assert_eq!(file.roots().count(), 2);
    // The map spans several pages of 61 records.
    assert!(file.superblock().map_pages >= 4);
}

#[test]
fn unflushed_changes_are_lost_on_reopen() {
    let io = mem(4096);
    let mut file = FileBlock::create(io.clone(), Config::default()).unwrap();
    let kept = file.alloc(100).unwrap();
    fill(&file, kept, 1);
    file.flush().unwrap();
    let lost = file.alloc(100).unwrap();
    fill(&file, lost, 2);
    file.free(kept).unwrap();
    drop(file);
    let file = FileBlock::open(io, Config::default()).unwrap();
    assert!(file.contains(kept));
    assert!(!file.contains(lost));
    assert!(holds(&file, kept, 1));
}

#[test]
fn freed_space_is_reused_only_after_the_commit() {
    let io = mem(4096);
    let mut file = FileBlock::create(io, Config::default()).unwrap();
    let a = file.alloc(4096).unwrap();
    let _b = file.alloc(4096).unwrap();
    file.flush().unwrap();
    let a_at = file
        .extents()
        .find(|e| e.kind == ExtentKind::Block(a))
        .unwrap()
        .offset;
    file.free(a).unwrap();
    assert_eq!(file.stats().pending, 4096);
    let c = file.alloc(4096).unwrap();
    let c_at = |file: &FileBlock| {
        file.extents()
            .find(|e| e.kind == ExtentKind::Block(c))
            .unwrap()
            .offset
    };
    assert_ne!(c_at(&file), a_at);
    clean(&file);
    file.flush().unwrap();
    clean(&file);
    assert_eq!(file.stats().pending, 0);
    // A fresh block freed before any commit is reusable at once.
    let d = file.alloc(512).unwrap();
    let d_at = file
        .extents()
        .find(|e| e.kind == ExtentKind::Block(d))
        .unwrap()
        .offset;
    file.free(d).unwrap();
    let e = file.alloc(512).unwrap();
    let e_at = file
        .extents()
        .find(|x| x.kind == ExtentKind::Block(e))
        .unwrap()
        .offset;
    assert_eq!(d_at, e_at);
    clean(&file);
}

#[test]
fn realloc_keeps_id_and_bytes() {
    let io = mem(4096);
    let mut file = FileBlock::create(io.clone(), Config::default()).unwrap();
    let a = file.alloc(1024).unwrap();
    let b = file.alloc(1024).unwrap();
    fill(&file, a, 10);
    fill(&file, b, 20);
    file.flush().unwrap();
    // `a` cannot grow in place (b follows): it moves.
    file.realloc(a, 3000).unwrap();
    clean(&file);
    assert_eq!(file.size(a).unwrap(), 3072);
    let head = file.read_at(a, 0, 1024).unwrap();
    assert!(
        head.iter()
            .enumerate()
            .all(|(i, &x)| x == 10u8.wrapping_add(i as u8))
    );
    drop(head);
    // `b` is now followed by free space (a's old place is pending, so not that) — or is last.
    file.realloc(b, 512).unwrap();
    clean(&file);
    assert_eq!(file.size(b).unwrap(), 512);
    file.flush().unwrap();
    clean(&file);
    drop(file);
    let file = FileBlock::open(io, Config::default()).unwrap();
    clean(&file);
    assert_eq!(file.size(a).unwrap(), 3072);
    let bytes = file.read_at(b, 0, 512).unwrap();
    assert!(
        bytes
            .iter()
            .enumerate()
            .all(|(i, &x)| x == 20u8.wrapping_add(i as u8))
    );
}

#[test]
fn compaction_shrinks_the_file_and_keeps_bytes() {
    let io = mem(4096);
    let config = Config::default();
    let mut file = FileBlock::create(io.clone(), config.clone()).unwrap();
    let ids: Vec<BlockId> = (0..64).map(|_| file.alloc(2048).unwrap()).collect();
    for (i, &id) in ids.iter().enumerate() {
        fill(&file, id, i as u8);
    }
    file.flush().unwrap();
    // Free three blocks of every four: the survivors are spread over the whole body.
    for (i, &id) in ids.iter().enumerate() {
        if i % 4 != 3 {
            file.free(id).unwrap();
        }
    }
    file.flush().unwrap();
    let before = file.stats();
    let report = file.compact(CompactLimit::Unbounded).unwrap();
    clean(&file);
    let after = file.stats();
    assert!(report.blocks_moved > 0);
    assert!(after.file_len < before.file_len);
    assert_eq!(report.new_file_len, io.num_pages().unwrap() * 4096);
    assert!(report.new_file_len < report.old_file_len);
    // Live data plus the map plus the superblocks, within one allocation unit.
    let tight = 2 * 4096 + after.used + after.map_len;
    assert!(
        after.file_len <= tight + 512,
        "{after:?} vs {tight}: {report:?}"
    );
    assert_eq!(io.num_pages().unwrap(), after.file_len.div_ceil(4096));
    for (i, &id) in ids.iter().enumerate() {
        if i % 4 == 3 {
            assert!(holds(&file, id, i as u8));
        }
    }
    drop(file);
    let file = FileBlock::open(io, config).unwrap();
    clean(&file);
    assert_eq!(file.stats().live_blocks, 16);
    for (i, &id) in ids.iter().enumerate() {
        if i % 4 == 3 {
            assert!(holds(&file, id, i as u8));
        }
    }
}

#[test]
fn compaction_uses_space_freed_since_the_last_commit() {
    let io = mem(4096);
    let mut file = FileBlock::create(io, Config::default()).unwrap();
    let ids: Vec<BlockId> = (0..10).map(|_| file.alloc(4096).unwrap()).collect();
    for (i, &id) in ids.iter().enumerate() {
        fill(&file, id, i as u8);
    }
    file.flush().unwrap();
    for &id in &ids[..8] {
        file.free(id).unwrap();
    }
    // No flush: the holes are pending when compaction starts.
    let report = file.compact(CompactLimit::Unbounded).unwrap();
    clean(&file);
    let stats = file.stats();
    assert_eq!(stats.body_len, stats.used + stats.map_len, "{report:?}");
    assert!(holds(&file, ids[8], 8) && holds(&file, ids[9], 9));
}

#[test]
fn compaction_respects_a_byte_limit() {
    let io = mem(4096);
    let mut file = FileBlock::create(io, Config::default()).unwrap();
    let ids: Vec<BlockId> = (0..20).map(|_| file.alloc(4096).unwrap()).collect();
    file.flush().unwrap();
    for &id in &ids[..10] {
        file.free(id).unwrap();
    }
    file.flush().unwrap();
    let report = file.compact(CompactLimit::Bytes(3 * 4096)).unwrap();
    clean(&file);
    assert_eq!(report.blocks_moved, 3);
    assert!(report.limited);
    let report = file.compact(CompactLimit::Bytes(0)).unwrap();
    assert_eq!(report.blocks_moved, 0);
    clean(&file);
}

/// Crashes at every write of one flush, reopens, and finds the old or the new commit.
#[test]
fn a_crash_at_any_write_of_a_flush_reopens_to_old_or_new() {
    let setup = |io: Arc<FaultyPageIo<MemPageIo>>| {
        let mut file = FileBlock::create(io, Config::default().with_alloc_unit(256)).unwrap();
        let ids: Vec<BlockId> = (0..40).map(|i| file.alloc(300 + i * 50).unwrap()).collect();
        for (i, &id) in ids.iter().enumerate() {
            fill(&file, id, i as u8);
        }
        file.set_root("r", Some(ids[0])).unwrap();
        file.flush().unwrap();
        let committed = state(&file);
        // The next commit: frees, moves, new blocks, a root change.
        for &id in &ids[..10] {
            file.free(id).unwrap();
        }
        file.realloc(ids[10], 5000).unwrap();
        for i in 0..5u8 {
            let id = file.alloc(700).unwrap();
            fill(&file, id, 100 + i);
        }
        file.set_root("r", Some(ids[11])).unwrap();
        (file, committed)
    };
    // How many writes a whole flush makes.
    let io = Arc::new(FaultyPageIo::new(MemPageIo::new(4096).unwrap()));
    let (mut file, old) = setup(Arc::clone(&io));
    let w0 = io.counts().writes;
    file.flush().unwrap();
    let writes = io.counts().writes - w0;
    let new = state(&file);
    assert!(writes >= 3);
    drop(file);

    let mut outcomes = [0u32; 2];
    for crash_at in 0..writes {
        for keep_some in [false, true] {
            let io = Arc::new(FaultyPageIo::new(MemPageIo::new(4096).unwrap()));
            let (mut file, _) = setup(Arc::clone(&io));
            io.crash_after_writes(crash_at);
            assert!(file.flush().is_err());
            drop(file);
            if keep_some {
                let mut n = 0;
                io.crash_keeping(|_| {
                    n += 1;
                    n % 2 == 0
                })
                .unwrap();
            } else {
                io.crash();
            }
            let reopened = FileBlock::open(io, Config::default()).unwrap();
            clean(&reopened);
            let got = state(&reopened);
            let gen_ok = matches!(reopened.stats().generation, 2 | 3);
            assert!(gen_ok);
            let root = reopened.root("r").unwrap();
            outcomes[usize::from(reopened.stats().generation == 3)] += 1;
            if reopened.stats().generation == 2 {
                // Every block as committed: those written since were new ones, elsewhere.
                assert_eq!(got, old, "crash at {crash_at}");
                assert_eq!(root, BlockId(1));
            } else {
                assert_eq!(got, new, "crash at {crash_at}");
                assert_eq!(root, BlockId(12));
            }
        }
    }
    // Crashes before the superblock write find the old state; the last write is the
    // superblock, so no crash in this loop finds the new one, except when a kept subset
    // includes it.
    assert!(outcomes[0] > 0, "{outcomes:?}");
}

#[test]
fn a_failed_flush_write_can_be_retried_and_a_failed_sync_is_final() {
    let io = Arc::new(FaultyPageIo::new(MemPageIo::new(4096).unwrap()));
    let mut file = FileBlock::create(io.clone(), Config::default()).unwrap();
    let a = file.alloc(5000).unwrap();
    fill(&file, a, 5);
    file.flush().unwrap();
    file.free(a).unwrap();
    let b = file.alloc(100).unwrap();
    fill(&file, b, 6);
    // Fail a write of the flush (data and map): rolled back, retried.
    io.fail(pageio::Fault::WriteAt(io.counts().writes));
    assert!(file.flush().is_err());
    io.clear_faults();
    clean(&file);
    file.flush().unwrap();
    clean(&file);
    // Fail the superblock's sync: the commit is in flight and may or may not be durable; the
    // file refuses to commit again, and a reopen finds one of the two states.
    file.free(b).unwrap();
    let c = file.alloc(100).unwrap();
    fill(&file, c, 7);
    let syncs = io.counts().syncs;
    io.fail(pageio::Fault::SyncAt(syncs + 1));
    assert!(file.flush().is_err());
    io.clear_faults();
    assert!(file.flush().is_err_and(|e| e.is_previous_io()));
    drop(file);
    io.crash();
    let file = FileBlock::open(io, Config::default()).unwrap();
    clean(&file);
    assert!(!file.contains(a));
    assert!(holds(&file, b, 6) || holds(&file, c, 7));
}

#[test]
fn bad_input_gives_clear_errors() {
    let io = mem(4096);
    let mut file = FileBlock::create(io.clone(), Config::default()).unwrap();
    assert!(matches!(file.alloc(0), Err(Error::InvalidSize { size: 0 })));
    assert!(matches!(file.alloc(u64::MAX), Err(Error::TooLarge { .. })));
    assert!(matches!(
        file.alloc((1 << 31) * 512),
        Err(Error::TooLarge { .. })
    ));
    let id = file.alloc(10).unwrap();
    assert!(matches!(
        file.alloc_with_id(id, 10),
        Err(Error::IdInUse { .. })
    ));
    assert!(matches!(
        file.alloc_with_id(BlockId(0), 10),
        Err(Error::ReservedId { .. })
    ));
    assert!(matches!(
        file.alloc_with_id(BlockId(MAP_ID), 10),
        Err(Error::ReservedId { .. })
    ));
    let ghost = BlockId(999);
    assert!(matches!(file.free(ghost), Err(Error::UnknownId { .. })));
    assert!(matches!(file.size(ghost), Err(Error::UnknownId { .. })));
    assert!(matches!(file.read(ghost), Err(Error::UnknownId { .. })));
    assert!(matches!(
        file.read(BlockId(MAP_ID)),
        Err(Error::UnknownId { .. })
    ));
    assert!(matches!(
        file.free(BlockId(MAP_ID)),
        Err(Error::UnknownId { .. })
    ));
    assert!(matches!(
        file.realloc(ghost, 5),
        Err(Error::UnknownId { .. })
    ));
    assert!(matches!(
        file.realloc(id, 0),
        Err(Error::InvalidSize { .. })
    ));
    assert!(!file.contains(BlockId(MAP_ID)));
    assert!(matches!(
        file.read_at(id, 500, 13),
        Err(Error::OutOfBounds { size: 512, .. })
    ));
    assert!(matches!(
        file.read_at(id, u64::MAX, 2),
        Err(Error::OutOfBounds { .. })
    ));
    assert_eq!(file.read_at(id, 500, 12).unwrap().len(), 12);
    // Two live views of one block overlap.
    let view = file.read(id).unwrap();
    assert!(matches!(file.read(id), Err(Error::Block(_))));
    drop(view);
    assert!(matches!(
        file.set_root("", Some(id)),
        Err(Error::RootName { .. })
    ));
    assert!(matches!(
        file.set_root(&"x".repeat(25), Some(id)),
        Err(Error::RootName { .. })
    ));
    assert!(matches!(
        file.set_root("a\0", Some(id)),
        Err(Error::RootName { .. })
    ));
    assert!(matches!(
        file.set_root("g", Some(ghost)),
        Err(Error::UnknownId { .. })
    ));
    for i in 0..16 {
        file.set_root(&format!("r{i}"), Some(id)).unwrap();
    }
    assert!(matches!(
        file.set_root("one-more", Some(id)),
        Err(Error::RootsFull)
    ));
    file.set_root("r3", None).unwrap();
    file.set_root("one-more", Some(id)).unwrap();
    file.free(id).unwrap();
    assert_eq!(file.roots().count(), 0);
    clean(&file);
    // A device that holds a file, a bad allocation unit.
    assert!(matches!(
        FileBlock::create(io.clone(), Config::default()),
        Err(Error::AlreadyCreated { .. })
    ));
    assert!(matches!(
        FileBlock::create(mem(4096), Config::default().with_alloc_unit(100)),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        FileBlock::create(mem(512), Config::default().with_alloc_unit(1024)),
        Err(Error::InvalidConfig { .. })
    ));
}

/// Flips the bits of `mask` in the byte at file offset `at`.
fn flip(io: &dyn PageIo, at: u64, mask: u8) {
    let ps = io.page_size();
    let mut page = vec![0u8; ps];
    io.read_page(at / ps as u64, &mut page).unwrap();
    page[(at % ps as u64) as usize] ^= mask;
    io.write_page(at / ps as u64, &page).unwrap();
}

fn corrupt_at<T: std::fmt::Debug>(result: crate::Result<T>) -> Location {
    match result {
        Err(Error::Corrupt { at, .. }) => at,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn damaged_files_fail_to_open_with_the_location() {
    // Empty device.
    assert_eq!(
        corrupt_at(FileBlock::open(mem(4096), Config::default())),
        Location::Superblocks
    );
    let io = mem(4096);
    let mut file = FileBlock::create(io.clone(), Config::default()).unwrap();
    let id = file.alloc(100_000).unwrap();
    fill(&file, id, 1);
    file.flush().unwrap();
    let map_at = file.superblock().map_file_offset();
    let generation = file.stats().generation;
    drop(file);
    let mut page = vec![0u8; 4096];

    // A flipped bit in the newest superblock: the older one is used instead. Its map was
    // freed by the newer commit; here nothing reused the space, so it still opens (in general
    // the result is the older state or a Corrupt error, never a panic).
    let newest = Slot::for_generation(generation).page();
    io.read_page(newest, &mut page).unwrap();
    let good = page.clone();
    page[100] ^= 4;
    io.write_page(newest, &page).unwrap();
    let older = FileBlock::open(io.clone(), Config::default()).unwrap();
    assert_eq!(older.stats().generation, generation - 1);
    drop(older);
    io.write_page(newest, &good).unwrap();

    // A flipped bit in the map: Corrupt at that map page.
    flip(&*io, map_at + 30, 1);
    assert_eq!(
        corrupt_at(FileBlock::open(io.clone(), Config::default())),
        Location::MapPage {
            index: 0,
            offset: map_at
        }
    );
    flip(&*io, map_at + 30, 1);

    // Both superblocks damaged.
    for no in 0..2 {
        io.read_page(no, &mut page).unwrap();
        page[0] ^= 1;
        io.write_page(no, &page).unwrap();
    }
    assert_eq!(
        corrupt_at(FileBlock::open(io.clone(), Config::default())),
        Location::Superblocks
    );
    for no in 0..2 {
        io.read_page(no, &mut page).unwrap();
        page[0] ^= 1;
        io.write_page(no, &page).unwrap();
    }
    FileBlock::open(io.clone(), Config::default()).unwrap();

    // Truncated: the body is longer than the file.
    let pages = io.num_pages().unwrap();
    io.truncate(pages - 1).unwrap();
    assert!(matches!(
        corrupt_at(FileBlock::open(io.clone(), Config::default())),
        Location::FileLength { .. }
    ));
}

#[test]
fn page_size_mismatch_is_named() {
    let io = mem(4096);
    drop(FileBlock::create(io.clone(), Config::default()).unwrap());
    // Read the same bytes as 512-byte pages.
    let small = mem(512);
    let mut page = vec![0u8; 4096];
    for no in 0..io.num_pages().unwrap() {
        io.read_page(no, &mut page).unwrap();
        for (k, chunk) in page.chunks(512).enumerate() {
            small.write_page(no * 8 + k as u64, chunk).unwrap();
        }
    }
    assert!(matches!(
        FileBlock::open(small, Config::default()),
        Err(Error::PageSizeMismatch {
            file: 4096,
            backend: 512
        })
    ));
}

#[test]
fn stats_add_up() {
    let io = mem(4096);
    let mut file = FileBlock::create(io, Config::default()).unwrap();
    let ids: Vec<BlockId> = (0..8).map(|_| file.alloc(1024).unwrap()).collect();
    file.free(ids[1]).unwrap();
    file.free(ids[5]).unwrap();
    let s = file.stats();
    assert_eq!(s.live_blocks, 6);
    assert_eq!(s.used, 6 * 1024);
    assert_eq!(s.free, 2 * 1024);
    assert_eq!(s.largest_free, 1024);
    assert!((s.fragmentation - 0.5).abs() < 1e-9);
    assert_eq!(s.body_len, s.used + s.free + s.pending + s.map_len);
    assert_eq!(s.extents, 9);
}

#[test]
fn a_committed_block_never_written_still_lies_inside_the_file() {
    let io = mem(4096);
    let mut file = FileBlock::create(io.clone(), Config::default()).unwrap();
    let a = file.alloc(4096).unwrap();
    fill(&file, a, 1);
    file.flush().unwrap();
    // The next map goes into the hole of the first one; the unwritten block is last.
    let b = file.alloc(1 << 20).unwrap();
    file.flush().unwrap();
    let last = file.extents().last().unwrap();
    assert_eq!(last.kind, ExtentKind::Block(b));
    assert!(io.num_pages().unwrap() * 4096 >= last.offset + last.len);
    clean(&file);
    drop(file);
    let file = FileBlock::open(io, Config::default()).unwrap();
    clean(&file);
    assert_eq!(file.size(b).unwrap(), 1 << 20);
}

/// Reads `len` bytes at file offset `at` straight from the device.
fn read_bytes(io: &dyn PageIo, at: u64, len: usize) -> Vec<u8> {
    let ps = io.page_size() as u64;
    let mut page = vec![0u8; ps as usize];
    let mut out = Vec::with_capacity(len);
    let mut pos = at;
    while out.len() < len {
        io.read_page(pos / ps, &mut page).unwrap();
        let from = (pos % ps) as usize;
        let n = (ps as usize - from).min(len - out.len());
        out.extend_from_slice(&page[from..from + n]);
        pos += n as u64;
    }
    out
}

/// Writes `bytes` at file offset `at` straight to the device.
fn write_bytes(io: &dyn PageIo, at: u64, bytes: &[u8]) {
    let ps = io.page_size() as u64;
    let mut page = vec![0u8; ps as usize];
    let mut done = 0;
    while done < bytes.len() {
        let pos = at + done as u64;
        io.read_page(pos / ps, &mut page).unwrap();
        let from = (pos % ps) as usize;
        let n = (ps as usize - from).min(bytes.len() - done);
        page[from..from + n].copy_from_slice(&bytes[done..done + n]);
        io.write_page(pos / ps, &page).unwrap();
        done += n;
    }
}

#[test]
fn multi_page_maps_round_trip_at_any_alignment_and_cache_size() {
    for (ps, au) in [(512usize, 64u32), (4096, 512)] {
        let io = mem(ps);
        let config = Config::default().with_alloc_unit(au);
        let mut file = FileBlock::create(io.clone(), config.clone()).unwrap();
        let mut ids = Vec::new();
        let mut skews = std::collections::BTreeSet::new();
        for round in 0..12u64 {
            for i in 0..(ps as u64 / 3) {
                let id = file
                    .alloc(1 + (i * 7 + round * 13) % (4 * u64::from(au)))
                    .unwrap();
                ids.push(id);
            }
            let gone = ids.swap_remove((round as usize * 31) % ids.len());
            file.free(gone).unwrap();
            file.flush().unwrap();
            clean(&file);
            let sb = file.superblock();
            assert!(sb.map_pages >= 2, "{sb:?}");
            skews.insert(sb.map_file_offset() % ps as u64);
        }
        assert!(skews.len() > 1, "{skews:?}");
        let expect = state(&file);
        drop(file);
        for capacity in [1, 3, 1024] {
            let config = config
                .clone()
                .with_cache(pagecache::CacheConfig::default().with_capacity(capacity));
            let file = FileBlock::open(io.clone(), config).unwrap();
            clean(&file);
            assert_eq!(state(&file), expect, "page {ps}, cache of {capacity}");
        }
    }
}

#[test]
fn open_names_the_damage_decode_map_names_first() {
    let io = mem(512);
    let config = Config::default().with_alloc_unit(64);
    let mut file = FileBlock::create(io.clone(), config.clone()).unwrap();
    for i in 0..300u64 {
        file.alloc(1 + i % 200).unwrap();
    }
    file.flush().unwrap();
    let sb = file.superblock().clone();
    assert!(sb.map_pages >= 4);
    drop(file);
    let ps = 512usize;
    let map_at = sb.map_file_offset();
    let good = read_bytes(&*io, map_at, sb.map_pages as usize * ps);
    let same_as_decode_map = |io: &Arc<MemPageIo>| {
        let map = read_bytes(&**io, map_at, sb.map_pages as usize * ps);
        let decoded = corrupt_at(format::decode_map(&map, &sb));
        assert_eq!(
            corrupt_at(FileBlock::open(io.clone(), config.clone())),
            decoded
        );
        decoded
    };

    // A bad record (size 0) in page 0, with a valid checksum: named by its record.
    let mut map = good.clone();
    let mut records = format::decode_map_page(&map[..ps], 0, sb.generation, map_at).unwrap();
    records[5].units = 0;
    format::encode_map_page(&records, 0, sb.generation, &mut map[..ps]).unwrap();
    write_bytes(&*io, map_at, &map);
    assert!(matches!(
        same_as_decode_map(&io),
        Location::MapRecord { index: 5, .. }
    ));
    // A damaged page after it comes first, as with `decode_map`.
    map[2 * ps + 40] ^= 0x10;
    write_bytes(&*io, map_at, &map);
    assert_eq!(
        same_as_decode_map(&io),
        Location::MapPage {
            index: 2,
            offset: map_at + 2 * ps as u64
        }
    );
    // A duplicate id: the second record of it.
    let mut map = good.clone();
    let mut records = format::decode_map_page(&map[ps..2 * ps], 1, sb.generation, 0).unwrap();
    let first_id = format::decode_map_page(&map[..ps], 0, sb.generation, 0).unwrap()[0].id;
    records[3].id = first_id;
    format::encode_map_page(&records, 1, sb.generation, &mut map[ps..2 * ps]).unwrap();
    write_bytes(&*io, map_at, &map);
    let per_page = format::records_per_page(ps) as u64;
    assert!(matches!(
        same_as_decode_map(&io),
        Location::MapRecord { index, .. } if index == per_page + 3
    ));
    write_bytes(&*io, map_at, &good);
    clean(&FileBlock::open(io, config).unwrap());
}
