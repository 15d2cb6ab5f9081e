//! Guards compaction: it keeps every id's bytes, sizes and the roots; given room it shrinks the
//! file to the live blocks plus the superblocks and the map; a byte limit bounds what one call
//! moves; everything reads back after a reopen, on memory and on a real file; it is a durability
//! barrier even when nothing moves; and it says when the backend could not be truncated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fileblock::{
    BlockId, CompactLimit, CompactReport, Config, ExtentInfo, ExtentKind, FileBlock, Shrink, Stats,
};
use pageio::{FaultyPageIo, FdPageIo, MemPageIo, PageIo};

const PAGE_SIZE: usize = 4096;
const AU: u64 = 256;
const BLOCKS: u64 = 300;

fn config() -> Config {
    Config::default().with_alloc_unit(AU as u32)
}

fn pattern(id: u32, at: usize) -> u8 {
    let x = id
        .wrapping_mul(0x9e37_79b1)
        .wrapping_add((at as u32).wrapping_mul(0xc2b2_ae35));
    (x ^ (x >> 15) ^ (x >> 24)) as u8
}

/// Blocks 2k and 2k + 1 have the same size (1 to 6 units), so every hole left by freeing the
/// odd ones fits a live block exactly.
fn units(i: u64) -> u64 {
    1 + (i / 2) % 6
}

/// 300 written blocks and two roots, committed; then every odd block freed, and in the last
/// third every block but one in five, committed too (`commit_frees`) or left pending. Returns
/// the file and the live ids.
fn holey_file(io: Arc<dyn PageIo>, commit_frees: bool) -> (FileBlock, Vec<BlockId>) {
    let mut file = FileBlock::create(io, config()).expect("create");
    let ids: Vec<BlockId> = (0..BLOCKS)
        .map(|i| file.alloc(units(i) * AU - i % 7).expect("alloc"))
        .collect();
    for &id in &ids {
        let mut block = file.write(id).expect("write");
        for (at, b) in block.iter_mut().enumerate() {
            *b = pattern(id.0, at);
        }
    }
    file.set_root("low", Some(ids[2])).expect("root");
    file.set_root("high", Some(ids[290])).expect("root");
    file.flush().expect("flush");
    let mut live = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let i = i as u64;
        let tail = i >= BLOCKS * 2 / 3;
        if i % 2 == 1 || (tail && !i.is_multiple_of(5)) {
            file.free(id).expect("free");
        } else {
            live.push(id);
        }
    }
    if commit_frees {
        file.flush().expect("flush the frees");
    }
    (file, live)
}

/// Every live id with its size; the roots.
fn layout(file: &FileBlock) -> (BTreeMap<BlockId, u64>, Vec<(String, BlockId)>) {
    let sizes = file
        .ids()
        .map(|id| (id, file.size(id).expect("size")))
        .collect();
    let mut roots: Vec<(String, BlockId)> =
        file.roots().map(|(n, id)| (n.to_owned(), id)).collect();
    roots.sort();
    (sizes, roots)
}

/// Validate is clean and every live block holds its pattern.
fn intact(file: &FileBlock, live: &[BlockId]) {
    let problems = file.validate();
    assert!(problems.is_empty(), "{problems:#?}");
    let mut ids: Vec<BlockId> = file.ids().collect();
    ids.sort_unstable();
    let mut want = live.to_vec();
    want.sort_unstable();
    assert_eq!(ids, want);
    for &id in live {
        let block = file.read(id).expect("read");
        if let Some(at) = block
            .iter()
            .enumerate()
            .position(|(at, &b)| b != pattern(id.0, at))
        {
            panic!("block {id} byte {at} lost its contents");
        }
    }
}

fn device_len(io: &dyn PageIo) -> u64 {
    io.num_pages().expect("pages") * PAGE_SIZE as u64
}

/// The tightness the docs promise given room: the body is the live blocks plus the map plus
/// at most one allocation unit of free space (a hole no block behind it fits); the device is
/// the two superblock pages plus the body, rounded up to a whole page.
fn assert_tight(stats: &Stats, device: u64, report: &CompactReport) {
    let ps = PAGE_SIZE as u64;
    assert_eq!(stats.pending, 0, "{stats:?}");
    let slack = stats.body_len - stats.used - stats.map_len;
    assert!(
        slack <= AU,
        "{slack} free bytes left in the body: {stats:?} {report:?}"
    );
    assert_eq!(
        device,
        (2 * ps + stats.body_len).next_multiple_of(ps),
        "{stats:?}"
    );
    assert!(device <= (2 * ps + stats.used + stats.map_len + AU).next_multiple_of(ps));
    assert_eq!(stats.file_len.next_multiple_of(ps), device, "{stats:?}");
}

/// What an unbounded compaction leaves whatever the layout: nothing pending, no free tail, and
/// no block that fits a free extent below it (it would have moved); the map too, when it is
/// after every block.
fn assert_settled(file: &FileBlock) {
    assert_eq!(file.stats().pending, 0);
    let extents: Vec<ExtentInfo> = file.extents().collect();
    assert!(
        extents.last().is_some_and(|e| e.kind != ExtentKind::Free),
        "a free tail is left"
    );
    let last_block = extents
        .iter()
        .rposition(|e| matches!(e.kind, ExtentKind::Block(_)));
    let mut largest_free = 0;
    for (k, e) in extents.iter().enumerate() {
        let movable = match e.kind {
            ExtentKind::Free => {
                largest_free = largest_free.max(e.len);
                false
            }
            ExtentKind::Pending => panic!("pending extent {k} after compaction"),
            ExtentKind::Block(_) => true,
            ExtentKind::Map => last_block.is_none_or(|last| k > last),
        };
        assert!(
            !movable || e.len > largest_free,
            "extent {k} ({e:?}) fits a free extent of {largest_free} bytes below it"
        );
    }
}

#[test]
fn unbounded_compaction_shrinks_the_file_to_live_data_and_metadata() {
    // With the frees committed first, and with them still pending when compaction starts (its
    // first commit makes them reusable).
    for commit_frees in [true, false] {
        let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"));
        let (mut file, live) = holey_file(io.clone(), commit_frees);
        let before = layout(&file);
        let old_len = device_len(&*io);
        let report = file.compact(CompactLimit::Unbounded).expect("compact");
        assert!(report.blocks_moved > 0 && !report.limited, "{report:?}");
        assert_eq!(report.old_file_len, old_len);
        assert_eq!(report.new_file_len, device_len(&*io));
        assert!(report.new_file_len < old_len / 2, "{report:?}");
        assert_settled(&file);
        if commit_frees {
            assert_tight(&file.stats(), device_len(&*io), &report);
        }
        intact(&file, &live);
        assert_eq!(layout(&file), before);

        // A second compaction finds nothing to do.
        let again = file
            .compact(CompactLimit::Unbounded)
            .expect("compact again");
        assert_eq!(again.blocks_moved, 0, "{again:?}");
        assert_eq!(again.new_file_len, report.new_file_len);

        let stats = file.stats();
        drop(file);
        let file = FileBlock::open(io.clone(), config()).expect("reopen");
        intact(&file, &live);
        assert_eq!(layout(&file), before);
        let reopened = file.stats();
        assert_eq!(
            (reopened.body_len, reopened.used, reopened.map_len),
            (stats.body_len, stats.used, stats.map_len)
        );
        // The cache's length is in bytes before and the device's whole pages after.
        assert_eq!(reopened.file_len, device_len(&*io));
        assert_eq!(
            stats.file_len.next_multiple_of(PAGE_SIZE as u64),
            device_len(&*io)
        );
    }
}

#[test]
fn bounded_compaction_moves_at_most_its_limit_and_converges() {
    let max_block = 6 * AU;
    for limit in [max_block, 5 * max_block] {
        let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"));
        let (mut file, live) = holey_file(io.clone(), true);
        let before = layout(&file);
        let mut calls = 0;
        let mut moved = 0;
        loop {
            calls += 1;
            assert!(calls < 500, "no convergence after {moved} bytes");
            let report = file.compact(CompactLimit::Bytes(limit)).expect("compact");
            assert!(report.bytes_moved <= limit, "{report:?} over {limit}");
            moved += report.bytes_moved;
            intact(&file, &live);
            assert_eq!(layout(&file), before);
            if report.blocks_moved == 0 && !report.limited {
                assert_settled(&file);
                assert_tight(&file.stats(), device_len(&*io), &report);
                break;
            }
            // Each call makes progress: a block fits the limit.
            assert!(report.blocks_moved > 0, "{report:?}");
            if calls % 7 == 0 {
                drop(file);
                file = FileBlock::open(io.clone(), config()).expect("reopen");
                intact(&file, &live);
            }
        }
        assert!(calls > 2, "a limit of {limit} bytes took {calls} calls");
        drop(file);
        let file = FileBlock::open(io, config()).expect("reopen");
        intact(&file, &live);
        assert_eq!(layout(&file), before);
    }
}

#[test]
fn a_zero_limit_moves_nothing_but_still_commits() {
    for limit in [CompactLimit::Bytes(0), CompactLimit::Time(Duration::ZERO)] {
        let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"));
        let (mut file, live) = holey_file(io.clone(), false);
        let before = layout(&file);
        let generation = file.stats().generation;
        let report = file.compact(limit).expect("compact");
        assert_eq!(report.blocks_moved, 0, "{limit:?}: {report:?}");
        assert_eq!(report.bytes_moved, 0, "{limit:?}: {report:?}");
        assert!(report.limited, "{limit:?}: {report:?}");
        // The pending frees were committed.
        assert!(file.stats().generation > generation);
        assert_eq!(file.stats().pending, 0);
        intact(&file, &live);
        drop(file);
        let file = FileBlock::open(io, config()).expect("reopen");
        intact(&file, &live);
        assert_eq!(layout(&file), before);
    }
}

#[test]
fn compaction_truncates_a_real_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("blocks.fb");
    let io = Arc::new(FdPageIo::create(&path, PAGE_SIZE).expect("create file"));
    let (mut file, live) = holey_file(io, true);
    let before = layout(&file);
    let old_len = std::fs::metadata(&path).expect("metadata").len();
    let report = file.compact(CompactLimit::Unbounded).expect("compact");
    drop(file);
    let new_len = std::fs::metadata(&path).expect("metadata").len();
    assert_eq!(report.old_file_len, old_len);
    assert_eq!(report.new_file_len, new_len);
    assert!(new_len < old_len / 2, "{old_len} -> {new_len}");
    assert_eq!(new_len % PAGE_SIZE as u64, 0);
    let io = Arc::new(FdPageIo::open(&path, PAGE_SIZE).expect("open file"));
    let file = FileBlock::open(io.clone(), config()).expect("reopen");
    intact(&file, &live);
    assert_eq!(layout(&file), before);
    assert_tight(&file.stats(), device_len(&*io), &report);
}

/// The reported loss: write 1, flush, compact, write 2 in place, compact (nothing to move, so no
/// commit and, before, no flush either) — a power cut then found 1. `compact` is a durability
/// barrier: the bytes written before it are durable when it returns.
#[test]
fn compact_with_nothing_to_move_still_makes_writes_durable() {
    let io = Arc::new(FaultyPageIo::new(MemPageIo::new(PAGE_SIZE).expect("mem")));
    let mut file = FileBlock::create(io.clone(), config()).expect("create");
    let id = file.alloc(100).expect("alloc");
    file.write(id).expect("write").fill(1);
    file.flush().expect("flush");
    file.compact(CompactLimit::Unbounded).expect("compact");
    file.write(id).expect("write").fill(2);
    let report = file.compact(CompactLimit::Unbounded).expect("compact");
    assert_eq!(report.commits, 0, "nothing to commit: {report:?}");
    drop(file);
    io.crash();
    let file = FileBlock::open(io, config()).expect("open");
    assert!(
        file.read(id).expect("read").iter().all(|&b| b == 2),
        "the write before compact survives the power cut"
    );
}

/// A backend that cannot truncate: compaction still moves and commits, and its report says the
/// file could not shrink rather than claiming it did.
#[derive(Debug)]
struct NoTruncate(MemPageIo);

impl PageIo for NoTruncate {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        self.0.read_page(no, buf)
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        self.0.write_page(no, buf)
    }
    fn num_pages(&self) -> pageio::Result<u64> {
        self.0.num_pages()
    }
    fn sync(&self) -> pageio::Result<()> {
        self.0.sync()
    }
}

#[test]
fn compact_reports_a_backend_that_cannot_truncate() {
    let io: Arc<dyn PageIo> = Arc::new(NoTruncate(MemPageIo::new(PAGE_SIZE).expect("mem")));
    let (mut file, live) = holey_file(io.clone(), true);
    let report = file.compact(CompactLimit::Unbounded).expect("compact");
    assert!(report.blocks_moved > 0, "{report:?}");
    assert_eq!(report.shrink, Shrink::Unsupported, "{report:?}");
    assert_eq!(report.new_file_len, report.old_file_len, "{report:?}");
    assert!(
        file.stats().body_len + 2 * PAGE_SIZE as u64 <= report.new_file_len,
        "the body is shorter than the file that could not shrink"
    );
    intact(&file, &live);

    let mem: Arc<dyn PageIo> = Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"));
    let (mut file, _) = holey_file(mem, true);
    let report = file.compact(CompactLimit::Unbounded).expect("compact");
    assert_eq!(report.shrink, Shrink::Truncated, "{report:?}");
    assert!(report.new_file_len < report.old_file_len);
    let report = file.compact(CompactLimit::Unbounded).expect("compact");
    assert_eq!(report.shrink, Shrink::NotNeeded, "{report:?}");
}
