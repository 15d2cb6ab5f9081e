//! Guards `FileBlock` against a model map id → bytes: random sequences of `alloc`,
//! `alloc_with_id`, `realloc`, `free`, `write`, `write_at`, `set_root`, `flush`, `compact` and
//! reopen must keep `validate()`
//! clean and every live block's bytes, size and the roots as the model says after every step,
//! and a reopen must come back to exactly the last flushed state.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Range;
use std::sync::Arc;

use fileblock::{BlockId, BucketConfig, CompactLimit, Config, Error, FileBlock};
use pagecache::CacheConfig;
use pageio::{MemPageIo, PageIo};
use proptest::prelude::*;

/// Small pages, so that the extent map spans several of them.
const PAGE_SIZE: usize = 512;
/// The smallest allocation unit: many extents per page.
const AU: u64 = 64;
/// Unpinned pages the cache keeps: few, so that dirty pages are written back (evicted) between
/// flushes and a reopen may find some writes made since the last flush.
const CACHE_PAGES: usize = 12;
/// Root names: one of exactly 24 bytes, one of several UTF-8 bytes per character, and more
/// than the 16 slots of the table so that it can fill up.
const NAMES: [&str; 18] = [
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "j",
    "k",
    "l",
    "m",
    "n",
    "o",
    "root-name-of-24-bytes-xy",
    "ключ",
    "π",
];

/// Size classes: the default, a single class, and a short coarse list. A reopen may pick
/// another one (they are in-memory only).
fn config(buckets: u8) -> Config {
    let buckets = match buckets % 3 {
        0 => BucketConfig::default(),
        1 => BucketConfig::new([4]).expect("one class"),
        _ => BucketConfig::new([1, 2, 8, 64]).expect("four classes"),
    };
    Config::default()
        .with_alloc_unit(AU as u32)
        .with_cache(CacheConfig::default().with_capacity(CACHE_PAGES))
        .with_buckets(buckets)
}

/// The byte at `at` of block `id` after the write of version `version`: differs between ids,
/// versions and positions, so a block read from the wrong place or the wrong time shows.
fn pattern(id: u32, version: u32, at: usize) -> u8 {
    let x = id
        .wrapping_mul(0x9e37_79b1)
        .wrapping_add(version.wrapping_mul(0x85eb_ca6b))
        .wrapping_add((at as u32).wrapping_mul(0xc2b2_ae35));
    (x ^ (x >> 15) ^ (x >> 24)) as u8
}

fn round_up(size: u64) -> usize {
    size.div_ceil(AU).saturating_mul(AU) as usize
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: u64,
    },
    /// Several allocations in a row: many extents, so maps of several pages.
    AllocMany {
        count: usize,
        size: u64,
    },
    AllocWithId {
        id: u32,
        size: u64,
    },
    Realloc {
        pick: usize,
        size: u64,
    },
    Free {
        pick: usize,
    },
    /// The whole block through `write`.
    Write {
        pick: usize,
    },
    /// A sub-range through `write_at` (`start` and `len` taken modulo the block).
    WriteAt {
        pick: usize,
        start: usize,
        len: usize,
    },
    SetRoot {
        name: usize,
        pick: Option<usize>,
    },
    Flush,
    /// `None` is unbounded, `Some(n)` is `Bytes(n)`.
    Compact {
        limit: Option<u64>,
    },
    /// Drop without flushing and open again, with size classes `buckets`.
    Reopen {
        buckets: u8,
    },
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 1u64..=256, 3 => 1u64..=1024, 1 => 1u64..=4096]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => size().prop_map(|size| Op::Alloc { size }),
        2 => (1usize..=24, 1u64..=300).prop_map(|(count, size)| Op::AllocMany { count, size }),
        2 => (1u32..=48, size()).prop_map(|(id, size)| Op::AllocWithId { id, size }),
        4 => (any::<usize>(), size()).prop_map(|(pick, size)| Op::Realloc { pick, size }),
        5 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        4 => any::<usize>().prop_map(|pick| Op::Write { pick }),
        4 => (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(pick, start, len)| Op::WriteAt { pick, start, len }),
        3 => (0..NAMES.len(), prop::option::weighted(0.8, any::<usize>()))
            .prop_map(|(name, pick)| Op::SetRoot { name, pick }),
        3 => Just(Op::Flush),
        2 => prop::option::weighted(0.5, 0u64..=4096).prop_map(|limit| Op::Compact { limit }),
        2 => any::<u8>().prop_map(|buckets| Op::Reopen { buckets }),
    ]
}

/// Ids, bytes (`None` where unspecified: never written, a grown tail, or possibly lost) and
/// roots.
#[derive(Clone, Debug, Default, PartialEq)]
struct State {
    blocks: BTreeMap<u32, Vec<Option<u8>>>,
    roots: BTreeMap<String, u32>,
}

#[derive(Debug, Default)]
struct Model {
    work: State,
    /// The state of the last flush (or compaction, which commits).
    committed: State,
    /// Byte ranges written since the last point at which every write was durable, by id. After a
    /// reopen these bytes of a committed block may hold the old or the new contents (writes into
    /// a committed block are in place, and the cache may have written them back), so the model
    /// forgets them.
    unsynced: BTreeMap<u32, Vec<Range<usize>>>,
    /// The generation of the last commit.
    generation: u64,
    version: u32,
}

impl Model {
    /// The id `pick` names: usually a live one, sometimes (or when none is live) one that is
    /// not.
    fn pick(&self, pick: usize) -> u32 {
        if self.work.blocks.is_empty() || pick % 16 == 15 {
            return 4_000_000_000 - (pick % 1000) as u32;
        }
        *self
            .work
            .blocks
            .keys()
            .nth(pick % self.work.blocks.len())
            .expect("in range")
    }

    fn wrote(&mut self, id: u32, range: Range<usize>) {
        self.unsynced.entry(id).or_default().push(range);
    }

    /// Everything in memory became durable.
    fn synced(&mut self, generation: u64) {
        self.committed = self.work.clone();
        self.unsynced.clear();
        self.generation = generation;
    }

    /// A drop and reopen: the committed state, with the bytes written since it forgotten.
    fn reopened(&mut self) {
        let mut state = self.committed.clone();
        for (id, ranges) in std::mem::take(&mut self.unsynced) {
            if let Some(bytes) = state.blocks.get_mut(&id) {
                for range in ranges {
                    let end = range.end.min(bytes.len());
                    for b in bytes.get_mut(range.start.min(end)..end).unwrap_or(&mut []) {
                        *b = None;
                    }
                }
            }
        }
        self.committed = state.clone();
        self.work = state;
    }
}

fn expect_unknown<T: std::fmt::Debug>(result: fileblock::Result<T>, id: u32) {
    match result {
        Err(Error::UnknownId { id: got }) => assert_eq!(got, BlockId(id)),
        other => panic!("expected UnknownId for {id}, got {other:?}"),
    }
}

/// Applies one operation to the file and the model, checking what the call returns.
fn apply(file: &mut FileBlock, io: &Arc<MemPageIo>, model: &mut Model, op: &Op) {
    match *op {
        Op::Alloc { size } => alloc(file, model, size),
        Op::AllocMany { count, size } => {
            for _ in 0..count {
                alloc(file, model, size);
            }
        }
        Op::AllocWithId { id, size } => {
            let result = file.alloc_with_id(BlockId(id), size);
            match model.work.blocks.entry(id) {
                Entry::Occupied(_) => assert!(
                    matches!(result, Err(Error::IdInUse { id: got }) if got == BlockId(id)),
                    "{result:?}"
                ),
                Entry::Vacant(slot) => {
                    result.expect("alloc_with_id of a free id");
                    slot.insert(vec![None; round_up(size)]);
                }
            }
        }
        Op::Realloc { pick, size } => {
            let id = model.pick(pick);
            let result = file.realloc(BlockId(id), size);
            match model.work.blocks.get_mut(&id) {
                None => expect_unknown(result, id),
                Some(bytes) => {
                    result.expect("realloc");
                    // The common prefix is kept; a grown tail is unspecified (the docs promise
                    // the bytes "up to the smaller size" only).
                    bytes.resize(round_up(size), None);
                }
            }
        }
        Op::Free { pick } => {
            let id = model.pick(pick);
            let result = file.free(BlockId(id));
            if model.work.blocks.remove(&id).is_some() {
                result.expect("free");
                model.work.roots.retain(|_, root| *root != id);
            } else {
                expect_unknown(result, id);
            }
        }
        Op::Write { pick } => write_whole(file, model, pick),
        Op::WriteAt { pick, start, len } => write_range(file, model, pick, start, len),
        Op::SetRoot { name, pick } => set_root(file, model, NAMES[name], pick),
        Op::Flush => {
            file.flush().expect("flush");
            model.synced(file.stats().generation);
        }
        Op::Compact { limit } => {
            let before = file.stats().generation;
            let report = file
                .compact(limit.map_or(CompactLimit::Unbounded, CompactLimit::Bytes))
                .expect("compact");
            if let Some(max) = limit {
                assert!(report.bytes_moved <= max, "{report:?} over {max}");
            } else {
                assert!(!report.limited, "{report:?}");
                assert_eq!(file.stats().pending, 0, "{report:?}");
            }
            assert_eq!(
                report.new_file_len,
                io.num_pages().expect("pages") * PAGE_SIZE as u64
            );
            // A compaction always leaves a committed state. If it committed, it flushed the
            // cache; if there was nothing to commit, writes since the last flush may still
            // be in the cache only.
            let generation = file.stats().generation;
            let unsynced = std::mem::take(&mut model.unsynced);
            model.synced(generation);
            if generation == before {
                model.unsynced = unsynced;
            }
        }
        Op::Reopen { .. } => unreachable!("run() reopens"),
    }
}

/// `write` of the whole block with a new version of its pattern.
fn write_whole(file: &FileBlock, model: &mut Model, pick: usize) {
    let id = model.pick(pick);
    model.version += 1;
    let version = model.version;
    let Some(bytes) = model.work.blocks.get_mut(&id) else {
        expect_unknown(file.write(BlockId(id)), id);
        return;
    };
    let mut block = file.write(BlockId(id)).expect("write");
    assert_eq!(block.len(), bytes.len(), "block {id}");
    for (at, (b, m)) in block.iter_mut().zip(bytes.iter_mut()).enumerate() {
        *b = pattern(id, version, at);
        *m = Some(*b);
    }
    let len = bytes.len();
    model.wrote(id, 0..len);
}

/// `write_at` of a sub-range (`start` and `len` taken modulo the block).
fn write_range(file: &FileBlock, model: &mut Model, pick: usize, start: usize, len: usize) {
    let id = model.pick(pick);
    model.version += 1;
    let version = model.version;
    let Some(bytes) = model.work.blocks.get_mut(&id) else {
        expect_unknown(file.write_at(BlockId(id), 0, 1), id);
        return;
    };
    let start = start % bytes.len();
    let len = 1 + len % (bytes.len() - start);
    let mut block = file
        .write_at(BlockId(id), start as u64, len)
        .expect("write_at");
    assert_eq!(block.len(), len);
    // Read-modify-write: the range holds the block's current bytes first.
    for (k, (b, m)) in block.iter_mut().zip(&mut bytes[start..]).enumerate() {
        if let Some(want) = *m {
            assert_eq!(*b, want, "block {id} byte {} before write_at", start + k);
        }
        *b = pattern(id, version, start + k);
        *m = Some(*b);
    }
    drop(block);
    model.wrote(id, start..start + len);
}

fn set_root(file: &mut FileBlock, model: &mut Model, name: &str, pick: Option<usize>) {
    let Some(id) = pick.map(|p| model.pick(p)) else {
        file.set_root(name, None).expect("remove a root");
        model.work.roots.remove(name);
        return;
    };
    let result = file.set_root(name, Some(BlockId(id)));
    if !model.work.blocks.contains_key(&id) {
        expect_unknown(result, id);
    } else if !model.work.roots.contains_key(name) && model.work.roots.len() == 16 {
        assert!(matches!(result, Err(Error::RootsFull)), "{result:?}");
    } else {
        result.expect("set_root");
        model.work.roots.insert(name.to_owned(), id);
    }
}

fn alloc(file: &mut FileBlock, model: &mut Model, size: u64) {
    let id = file.alloc(size).expect("alloc");
    assert!(id.0 != 0 && id.0 != u32::MAX, "reserved id {id}");
    assert!(
        !model.work.blocks.contains_key(&id.0),
        "alloc handed out live id {id}"
    );
    model.work.blocks.insert(id.0, vec![None; round_up(size)]);
}

/// Everything the file says must agree with the model.
fn check(file: &FileBlock, model: &Model, step: usize, op: &Op) {
    let problems = file.validate();
    assert!(
        problems.is_empty(),
        "step {step} ({op:?}): {}",
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut ids: Vec<u32> = file.ids().map(|id| id.0).collect();
    ids.sort_unstable();
    let want: Vec<u32> = model.work.blocks.keys().copied().collect();
    assert_eq!(ids, want, "step {step} ({op:?}): ids");
    for (&id, bytes) in &model.work.blocks {
        assert!(file.contains(BlockId(id)));
        assert_eq!(
            file.size(BlockId(id)).expect("size"),
            bytes.len() as u64,
            "step {step} ({op:?}): size of {id}"
        );
        let block = file.read(BlockId(id)).expect("read");
        assert_eq!(block.len(), bytes.len());
        if let Some(at) = block
            .iter()
            .zip(bytes)
            .position(|(got, want)| want.is_some_and(|w| w != *got))
        {
            panic!(
                "step {step} ({op:?}): block {id} byte {at} is {}, the model says {:?}",
                block[at], bytes[at]
            );
        }
    }
    let roots: BTreeMap<String, u32> = file
        .roots()
        .map(|(name, id)| (name.to_owned(), id.0))
        .collect();
    assert_eq!(roots, model.work.roots, "step {step} ({op:?}): roots");
    for (name, &id) in &model.work.roots {
        assert_eq!(file.root(name), Some(BlockId(id)));
    }
    let stats = file.stats();
    assert_eq!(stats.live_blocks, model.work.blocks.len());
    assert_eq!(
        stats.used,
        model
            .work
            .blocks
            .values()
            .map(|b| b.len() as u64)
            .sum::<u64>()
    );
    assert_eq!(
        stats.body_len,
        stats.used + stats.map_len + stats.free + stats.pending,
        "{stats:?}"
    );
}

/// Runs `ops` and returns the largest number of map pages a commit wrote.
fn run(ops: &[Op]) -> u32 {
    let io = Arc::new(MemPageIo::new(PAGE_SIZE).expect("mem"));
    let mut file = FileBlock::create(io.clone(), config(0)).expect("create");
    let mut model = Model {
        generation: file.stats().generation,
        ..Model::default()
    };
    let mut map_pages = 0;
    for (step, op) in ops.iter().enumerate() {
        if let Op::Reopen { buckets } = *op {
            drop(file);
            file = FileBlock::open(io.clone(), config(buckets)).expect("reopen");
            model.reopened();
            assert_eq!(file.stats().generation, model.generation, "step {step}");
        } else {
            apply(&mut file, &io, &mut model, op);
        }
        check(&file, &model, step, op);
        map_pages = map_pages.max(file.superblock().map_pages);
    }
    // Whatever the sequence left, a final flush and reopen reads it all back.
    file.flush().expect("final flush");
    model.synced(file.stats().generation);
    drop(file);
    let file = FileBlock::open(io, config(0)).expect("final reopen");
    model.reopened();
    check(&file, &model, ops.len(), &Op::Flush);
    map_pages
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Failures print the minimal sequence; no regression files are written into the crate.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn file_block_matches_the_model(ops in prop::collection::vec(op(), 1..=50)) {
        run(&ops);
    }
}

/// A fixed sequence that always runs, whatever proptest draws: a map of several pages, frees
/// and moves of committed blocks, partial writes, compaction and reopens with other size
/// classes.
#[test]
fn fixed_sequence_with_a_multi_page_map() {
    let mut ops = vec![
        Op::AllocMany {
            count: 24,
            size: 100,
        },
        Op::AllocMany {
            count: 24,
            size: 300,
        },
        Op::AllocMany {
            count: 24,
            size: 64,
        },
    ];
    ops.extend((0..72).map(|pick| Op::Write { pick }));
    ops.extend([
        Op::SetRoot {
            name: 15,
            pick: Some(3),
        },
        Op::Flush,
    ]);
    ops.extend((0..30).map(|k| Op::Free { pick: k * 2 }));
    ops.extend((0..10).map(|k| Op::Realloc {
        pick: k * 3,
        size: 700,
    }));
    ops.extend((0..10).map(|k| Op::WriteAt {
        pick: k * 5,
        start: 10 + k,
        len: 90,
    }));
    ops.extend([
        Op::Reopen { buckets: 1 },
        Op::Free { pick: 0 },
        Op::Compact { limit: Some(1000) },
        Op::Compact { limit: None },
        Op::Reopen { buckets: 2 },
    ]);
    let map_pages = run(&ops);
    assert!(map_pages >= 2, "the map had {map_pages} page(s)");
}
