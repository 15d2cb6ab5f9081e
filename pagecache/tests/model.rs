//! Guards the cache's single-threaded semantics against a reference model: page contents, true-LRU
//! eviction order, pin counts, dirty tracking, write-back on eviction, flush and reopen.

mod common;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use common::{PAGE_SIZE, Rng, assert_page, read_backend};
use pagecache::{CacheConfig, PageCache, PageRef};
use pageio::{MemPageIo, PageIo};
use proptest::prelude::*;

/// Pages `0..KEYS` are the key space of the generated traces.
const KEYS: u64 = 12;

/// One step of a generated trace.
#[derive(Clone, Debug)]
enum Op {
    /// `get(no)`, keeping the returned pin.
    Get(u64),
    /// `get_for_overwrite(no)`, keeping the returned pin.
    GetForOverwrite(u64),
    /// Writes a fresh, distinct pattern through the held pin at this index (modulo the number of
    /// pins held; nothing happens when none is held).
    Write(usize),
    /// Drops the held pin at this index (modulo, as for `Write`).
    Release(usize),
    /// `flush()`.
    Flush,
    /// Drops every pin and the cache, then builds a new cache over the same backend.
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS).prop_map(Op::Get),
        2 => (0..KEYS).prop_map(Op::GetForOverwrite),
        4 => (0..8usize).prop_map(Op::Write),
        5 => (0..8usize).prop_map(Op::Release),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// What the model knows about one resident page.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The logical clock value of the last `get`/`get_for_overwrite` of the page.
    last_use: u64,
    pins: usize,
    dirty: bool,
    /// Zero-filled by `get_for_overwrite` and not written since: the zeros are not content, so
    /// a `get` reads the backend into the page.
    zeroed: bool,
}

/// The counters of `CacheStats` that accumulate over a cache's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    hits: u64,
    misses: u64,
    evictions: u64,
    write_backs: u64,
    flushed: u64,
}

/// The reference model. Page contents are tags (see `common::pattern`); tag 0 is a page of zeros.
#[derive(Debug)]
struct Model {
    capacity: usize,
    /// The content a reader of each page must see.
    logical: Vec<u64>,
    /// The content of each page on the backend.
    backend: Vec<u64>,
    resident: BTreeMap<u64, Entry>,
    clock: u64,
    counters: Counters,
}

impl Model {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            logical: vec![0; KEYS as usize],
            backend: vec![0; KEYS as usize],
            resident: BTreeMap::new(),
            clock: 0,
            counters: Counters::default(),
        }
    }

    fn unpinned(&self) -> usize {
        self.resident.values().filter(|e| e.pins == 0).count()
    }

    /// A `get` (or `get_for_overwrite`) of page `no`, following API.md's eviction rule.
    fn lookup(&mut self, no: u64, overwrite: bool) {
        self.clock += 1;
        if let Some(entry) = self.resident.get_mut(&no) {
            entry.last_use = self.clock;
            entry.pins += 1;
            self.counters.hits += 1;
            if entry.zeroed && !overwrite {
                entry.zeroed = false;
                self.logical[no as usize] = self.backend[no as usize];
            }
            return;
        }
        self.counters.misses += 1;
        while self.unpinned() >= self.capacity {
            let (&victim, entry) = self
                .resident
                .iter()
                .filter(|(_, e)| e.pins == 0)
                .min_by_key(|(_, e)| e.last_use)
                .expect("unpinned() >= capacity >= 1, so there is an unpinned page");
            if entry.dirty {
                self.backend[victim as usize] = self.logical[victim as usize];
                self.counters.write_backs += 1;
            } else {
                // A clean page leaves nothing behind: a zero-filled page nobody wrote goes back
                // to the backend's content.
                self.logical[victim as usize] = self.backend[victim as usize];
            }
            self.resident.remove(&victim);
            self.counters.evictions += 1;
        }
        let i = no as usize;
        if overwrite {
            self.logical[i] = 0;
        } else {
            assert_eq!(
                self.logical[i], self.backend[i],
                "model invariant: a non-resident page's content is on the backend"
            );
        }
        self.resident.insert(
            no,
            Entry {
                last_use: self.clock,
                pins: 1,
                // `get_for_overwrite` zero-fills but does not dirty: only a write does.
                dirty: false,
                zeroed: overwrite,
            },
        );
    }

    fn release(&mut self, no: u64) {
        let entry = self
            .resident
            .get_mut(&no)
            .expect("a pinned page is resident");
        entry.pins -= 1;
    }

    fn write(&mut self, no: u64, tag: u64) {
        self.logical[no as usize] = tag;
        let entry = self
            .resident
            .get_mut(&no)
            .expect("a pinned page is resident");
        entry.dirty = true;
        entry.zeroed = false;
    }

    fn flush(&mut self) {
        for (&no, entry) in &mut self.resident {
            if entry.dirty {
                self.backend[no as usize] = self.logical[no as usize];
                entry.dirty = false;
                self.counters.flushed += 1;
            }
        }
    }

    /// A new cache over the same backend: unflushed content that was never written back is gone.
    fn reopen(&mut self) {
        self.resident.clear();
        self.logical.clone_from(&self.backend);
        self.counters = Counters::default();
    }
}

/// Runs one generated trace against a real cache and the model, checking after every step.
struct Runner {
    mem: Arc<MemPageIo>,
    model: Model,
    flush_batch: usize,
    next_tag: u64,
}

impl Runner {
    fn new(capacity: usize, flush_batch: usize) -> Self {
        Self {
            mem: Arc::new(MemPageIo::new(PAGE_SIZE).expect("valid page size")),
            model: Model::new(capacity),
            flush_batch,
            next_tag: 1,
        }
    }

    fn open(&self) -> PageCache {
        let io: Arc<dyn PageIo> = self.mem.clone();
        let config = CacheConfig::default()
            .with_capacity(self.model.capacity)
            .with_flush_batch(self.flush_batch);
        PageCache::new(io, config).expect("valid config")
    }

    fn run(&mut self, ops: &[Op]) {
        let epochs: Vec<&[Op]> = ops.split(|op| matches!(op, Op::Reopen)).collect();
        let last = epochs.len() - 1;
        for (n, epoch) in epochs.into_iter().enumerate() {
            self.model.reopen();
            let cache = self.open();
            let mut pins: Vec<PageRef<'_>> = Vec::new();
            self.check(&cache, &pins, "after (re)open");
            for (step, op) in epoch.iter().enumerate() {
                self.apply(&cache, &mut pins, op);
                self.check(&cache, &pins, &format!("epoch {n} step {step} ({op:?})"));
            }
            if n == last {
                for pin in pins.drain(..) {
                    self.model.release(pin.page_no());
                }
                self.read_everything(&cache);
            }
        }
        // What was flushed (or written back) survives a reopen; the rest does not.
        self.model.reopen();
        let cache = self.open();
        self.read_everything(&cache);
    }

    fn apply<'c>(&mut self, cache: &'c PageCache, pins: &mut Vec<PageRef<'c>>, op: &Op) {
        match *op {
            Op::Get(no) | Op::GetForOverwrite(no) => {
                let overwrite = matches!(op, Op::GetForOverwrite(_));
                let pin = if overwrite {
                    cache.get_for_overwrite(no)
                } else {
                    cache.get(no)
                }
                .expect("a memory backend does not fail");
                assert_eq!(pin.page_no(), no);
                self.model.lookup(no, overwrite);
                pins.push(pin);
            }
            Op::Write(i) if !pins.is_empty() => {
                let pin = &pins[i % pins.len()];
                let tag = self.next_tag;
                self.next_tag += 1;
                pin.write()
                    .copy_from_slice(&common::pattern(tag, pin.page_no()));
                self.model.write(pin.page_no(), tag);
            }
            Op::Release(i) if !pins.is_empty() => {
                let pin = pins.swap_remove(i % pins.len());
                self.model.release(pin.page_no());
            }
            Op::Write(_) | Op::Release(_) => {}
            Op::Flush => {
                cache.flush().expect("a memory backend does not fail");
                self.model.flush();
            }
            Op::Reopen => unreachable!("the trace is split at reopens"),
        }
    }

    /// Everything observable without disturbing the cache's state must match the model.
    fn check(&self, cache: &PageCache, pins: &[PageRef<'_>], at: &str) {
        let model = &self.model;
        for pin in pins {
            let no = pin.page_no();
            assert_page(&pin.read(), model.logical[no as usize], no, at);
            assert_eq!(
                pin.is_dirty(),
                model.resident[&no].dirty,
                "{at}: dirty flag of page {no}"
            );
        }
        for no in 0..KEYS {
            assert_eq!(
                cache.contains(no),
                model.resident.contains_key(&no),
                "{at}: residency of page {no}; model resident set {:?}",
                model.resident.keys().collect::<Vec<_>>()
            );
            let on_backend = read_backend(self.mem.as_ref(), no);
            assert_page(
                &on_backend,
                model.backend[no as usize],
                no,
                &format!("{at}: backend"),
            );
        }
        let stats = cache.stats();
        let counters = Counters {
            hits: stats.hits,
            misses: stats.misses,
            evictions: stats.evictions,
            write_backs: stats.write_backs,
            flushed: stats.flushed,
        };
        assert_eq!(counters, model.counters, "{at}: stats counters");
        let pinned = model.resident.values().filter(|e| e.pins > 0).count();
        let dirty = model.resident.values().filter(|e| e.dirty).count();
        assert_eq!(
            (stats.cached, stats.pinned, stats.dirty),
            (model.resident.len(), pinned, dirty),
            "{at}: stats (cached, pinned, dirty)"
        );
    }

    /// Reads every page of the key space through the cache (one get + drop each, modelled).
    fn read_everything(&mut self, cache: &PageCache) {
        for no in 0..KEYS {
            let pin = cache.get(no).expect("a memory backend does not fail");
            self.model.lookup(no, false);
            assert_page(
                &pin.read(),
                self.model.logical[no as usize],
                no,
                "final read",
            );
            drop(pin);
            self.model.release(no);
            self.check(cache, &[], &format!("final read of page {no}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cache_matches_model(
        capacity in 1usize..=5,
        flush_batch in 1usize..=4,
        ops in proptest::collection::vec(op_strategy(), 0..=60),
    ) {
        Runner::new(capacity, flush_batch).run(&ops);
    }
}

/// A trace of get + drop (with some `get_for_overwrite`, which has the same recency rule) hits and
/// misses exactly like `lru::LruCache` of the same capacity, and keeps the same resident set.
#[test]
fn get_and_drop_trace_matches_lru_crate() {
    const PAGES: u64 = 16;
    for capacity in 1..=6usize {
        let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(PAGE_SIZE).expect("valid page size"));
        let cache = PageCache::new(io, CacheConfig::default().with_capacity(capacity))
            .expect("valid config");
        let mut reference =
            lru::LruCache::<u64, ()>::new(NonZeroUsize::new(capacity).expect("capacity >= 1"));
        let mut rng = Rng::new(0x1bad_b002 + capacity as u64);
        let mut hits = 0;
        for step in 0..3000 {
            // Mostly a hot set slightly larger than the capacity, so both hits and evictions are
            // frequent and recency decides which page goes.
            let no = if rng.chance(75) {
                rng.below(capacity as u64 + 2)
            } else {
                rng.below(PAGES)
            };
            let expect_hit = reference.get(&no).is_some();
            if !expect_hit {
                reference.put(no, ());
            }
            let before = cache.stats();
            let pin = if rng.chance(10) {
                cache.get_for_overwrite(no)
            } else {
                cache.get(no)
            }
            .expect("a memory backend does not fail");
            drop(pin);
            let after = cache.stats();
            assert_eq!(
                (after.hits - before.hits, after.misses - before.misses),
                if expect_hit { (1, 0) } else { (0, 1) },
                "capacity {capacity}, step {step}: get({no}) hit/miss differs from lru::LruCache"
            );
            hits += u64::from(expect_hit);
            for page in 0..PAGES {
                assert_eq!(
                    cache.contains(page),
                    reference.contains(&page),
                    "capacity {capacity}, step {step}: residency of page {page}"
                );
            }
            assert_eq!(after.cached, reference.len());
        }
        // The trace is only a meaningful comparison if it exercised both paths.
        assert!(
            hits > 300 && hits < 2700,
            "capacity {capacity}: {hits} hits of 3000"
        );
    }
}
