//! The page-backend workload: a [`FileBlock`] on a temp file through a [`FaultyPageIo`], one
//! per worker thread.
//!
//! Each worker allocates, writes, reallocates, frees and reads blocks, commits with `flush`
//! and `compact`, and keeps a model of the bytes of every block. Blocks are written only while
//! uncommitted (a new block, or the new tail of a grown one): bytes written in place into a
//! committed block are not atomic with a commit, so a model of them after a crash would be a
//! guess. Only a successful commit *acknowledges* the state.
//!
//! Faults come as rules on the backend: a page write or read fails, a write is torn, a sync
//! fails — and, as Linux's `fsync` may, loses a random subset of the writes since the last good
//! sync — or the device dies after some more writes (a crash point, armed before commits).
//! Any failure, and a timer now and then, leads to a power cut: the file is dropped as it is,
//! the backend keeps a random subset of the unsynced writes (torn ones included) and drops the
//! rest, and the file is opened again. It must then hold exactly the acknowledged state, or
//! the state of the commit that was under way (which may or may not have become durable):
//! the same ids, every byte the same, nothing else, and `validate()` clean.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fileblock::{BlockId, CompactLimit, Config, FileBlock};
use pageio::{Fault, FaultyPageIo, FdPageIo, PageIo};

use super::tally::{Kind, Tally};
use crate::rng::Rng;

const PAGE_SIZE: usize = 4096;
const ALLOC_UNIT: u32 = 512;
/// A page cache this small writes dirty pages back on eviction, between commits.
const CACHE_PAGES: usize = 48;
/// Blocks are 1 byte to this long (skewed towards small ones).
const MAX_BLOCK: u64 = 12 << 10;
/// Above this many live blocks, allocations turn into frees.
const MAX_BLOCKS: usize = 300;
/// Power cuts come every this long at least...
const CRASH_MIN_MS: u64 = 300;
/// ... and at most this much later.
const CRASH_SPREAD_MS: u64 = 1500;

/// Block contents by id: a state of the file as the worker expects it.
type Model = BTreeMap<u32, Arc<[u8]>>;

fn config() -> Config {
    Config::default()
        .with_alloc_unit(ALLOC_UNIT)
        .with_cache(pagecache::CacheConfig::default().with_capacity(CACHE_PAGES))
}

/// The backend as the file sees it: the faulty device, with the injected faults and the
/// refusals of a dead device that reach the caller counted.
#[derive(Debug)]
struct Counted {
    inner: Arc<FaultyPageIo<FdPageIo>>,
    tally: Arc<Tally>,
    /// Injected faults returned, and operations a dead device refused.
    trouble: AtomicU64,
}

impl Counted {
    fn count<T>(&self, result: pageio::Result<T>) -> pageio::Result<T> {
        match &result {
            Err(pageio::Error::Injected { .. }) => {
                self.tally.page_fault();
                self.trouble.fetch_add(1, Ordering::Relaxed);
            }
            Err(pageio::Error::Crashed { .. }) => {
                self.trouble.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        result
    }
}

impl PageIo for Counted {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        self.count(self.inner.read_page(no, buf))
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        self.count(self.inner.write_page(no, buf))
    }
    fn num_pages(&self) -> pageio::Result<u64> {
        self.count(self.inner.num_pages())
    }
    fn sync(&self) -> pageio::Result<()> {
        self.count(self.inner.sync())
    }
    fn read_pages(&self, pages: &mut [(u64, &mut [u8])]) -> pageio::Result<()> {
        self.count(self.inner.read_pages(pages))
    }
    fn write_pages(&self, pages: &[(u64, &[u8])]) -> pageio::Result<()> {
        self.count(self.inner.write_pages(pages))
    }
    fn truncate(&self, num_pages: u64) -> pageio::Result<()> {
        self.count(self.inner.truncate(num_pages))
    }
}

/// One worker's state, all but the file itself (which a crash replaces).
struct Worker {
    name: String,
    /// The page backend and the tally, through the counting wrapper that holds both.
    io: Arc<Counted>,
    rng: Rng,
    /// The state as of now.
    work: Model,
    /// The state of the last successful commit.
    acked: Model,
    /// The state of a commit that failed: after a crash the file may hold it instead.
    pending: Option<Model>,
    next_crash: Instant,
}

/// What the step loop does next.
enum Next {
    Go,
    /// Cut the power now.
    Crash,
}

impl Worker {
    fn schedule_crash(&mut self) {
        self.next_crash =
            Instant::now() + Duration::from_millis(CRASH_MIN_MS + self.rng.below(CRASH_SPREAD_MS));
    }

    /// Adds fault rules for operations a little ahead.
    fn inject(&mut self) {
        let counts = self.io.inner.counts();
        let rng = &mut self.rng;
        if rng.chance(0.01) {
            self.io
                .inner
                .fail(Fault::WriteAt(counts.writes + rng.below(32)));
        }
        if rng.chance(0.005) {
            self.io.inner.fail(Fault::ShortWriteAt {
                index: counts.writes + rng.below(32),
                bytes: rng.index(PAGE_SIZE),
            });
        }
        if rng.chance(0.005) {
            self.io
                .inner
                .fail(Fault::ReadAt(counts.reads + rng.below(16)));
        }
        if rng.chance(0.003) {
            self.io
                .inner
                .fail(Fault::SyncAt(counts.syncs + rng.below(2)));
        }
    }

    /// A random live block.
    fn pick(&mut self) -> Option<u32> {
        let at = self.rng.index(self.work.len());
        self.work.keys().nth(at).copied()
    }

    fn random_size(&mut self) -> u64 {
        let r = self.rng.next_f64();
        1 + (r * r * (MAX_BLOCK - 1) as f64) as u64
    }

    fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.rng.fill(&mut out);
        out
    }

    /// A new block, written whole.
    fn alloc(&mut self, file: &mut FileBlock) -> fileblock::Result<()> {
        let size = self.random_size();
        let id = file.alloc(size)?;
        let len = file.size(id)? as usize;
        let bytes = self.random_bytes(len);
        file.overwrite_at(id, 0, len)?.copy_from_slice(&bytes);
        self.work.insert(id.0, bytes.into());
        Ok(())
    }

    /// One operation.
    fn step(&mut self, file: &mut FileBlock) -> fileblock::Result<Next> {
        if Instant::now() >= self.next_crash {
            return Ok(Next::Crash);
        }
        self.inject();
        let mut choice = self.rng.below(100);
        if choice < 30 && self.work.len() >= MAX_BLOCKS {
            choice = 30;
        }
        match choice {
            0..30 => self.alloc(file)?,
            30..45 => {
                if let Some(id) = self.pick() {
                    file.free(BlockId(id))?;
                    self.work.remove(&id);
                }
            }
            45..55 => {
                if let Some(id) = self.pick() {
                    let size = self.random_size();
                    file.realloc(BlockId(id), size)?;
                    let len = file.size(BlockId(id))? as usize;
                    let old = self.work.get(&id).cloned().unwrap_or_default();
                    let new: Arc<[u8]> = if len <= old.len() {
                        old[..len].into()
                    } else {
                        let tail = self.random_bytes(len - old.len());
                        file.write_at(BlockId(id), old.len() as u64, tail.len())?
                            .copy_from_slice(&tail);
                        [&old[..], &tail[..]].concat().into()
                    };
                    self.work.insert(id, new);
                }
            }
            55..85 => {
                if let Some(id) = self.pick() {
                    let block = file.read(BlockId(id))?;
                    let expected = self.work.get(&id).cloned().unwrap_or_default();
                    self.io.tally.verify(
                        format_args!("{}: block {id} (uncrashed)", self.name),
                        &expected,
                        &block,
                    );
                }
            }
            85..97 => return self.commit(file, FileBlock::flush),
            _ => {
                let limit = if self.rng.chance(0.5) {
                    CompactLimit::Bytes(self.rng.below(64 << 10))
                } else {
                    CompactLimit::Unbounded
                };
                return self.commit(file, |file| file.compact(limit).map(drop));
            }
        }
        Ok(Next::Go)
    }

    /// A commit (`flush`, or `compact`, which commits the state as it is): sometimes with a
    /// crash point armed. A failed commit is tried once more half of the time: the docs allow
    /// it after a failed write, and after a failed sync the file must refuse it (a retry that
    /// "succeeds" there may commit writes the sync lost, and is a problem). Else the power goes.
    fn commit(
        &mut self,
        file: &mut FileBlock,
        mut commit: impl FnMut(&mut FileBlock) -> fileblock::Result<()>,
    ) -> fileblock::Result<Next> {
        if self.rng.chance(0.1) {
            self.io.inner.crash_after_writes(self.rng.below(40));
        }
        let mut result = commit(file);
        if let Err(err) = &result {
            self.pending = Some(self.work.clone());
            let sync_failed = matches!(
                err.backend(),
                Some(
                    pageio::Error::Injected {
                        op: pageio::Op::Sync,
                        ..
                    } | pageio::Error::Crashed {
                        op: pageio::Op::Sync
                    }
                )
            );
            if !self.io.inner.is_crashed() && self.rng.chance(0.5) {
                self.io.tally.op();
                result = commit(file);
                if sync_failed && result.is_ok() {
                    self.io.tally.problem(
                        Kind::Lost,
                        format!(
                            "{}: a commit retried after a failed sync succeeded; the sync may \
                             have lost writes it then claimed",
                            self.name
                        ),
                    );
                }
            }
        }
        result?;
        self.acked = self.work.clone();
        self.pending = None;
        Ok(Next::Go)
    }

    /// Cuts the power under `file`, opens it again and checks it.
    fn crash_and_reopen(&mut self, file: FileBlock) -> anyhow::Result<FileBlock> {
        drop(file);
        let keep = match self.rng.below(4) {
            0 => 0.0,
            1 => 1.0,
            _ => self.rng.next_f64(),
        };
        let mut keep_rng = Rng::new(self.rng.next_u64());
        self.io
            .inner
            .crash_keeping(|_| keep_rng.chance(keep))
            .context("writing the pages a crash keeps")?;
        self.io.inner.clear_faults();
        let file = match FileBlock::open(self.io.clone(), config()) {
            Ok(file) => {
                self.check_reopened(&file);
                file
            }
            Err(err) => {
                self.io.tally.problem(
                    Kind::Lost,
                    format!(
                        "{}: the file does not open after a crash ({} acknowledged blocks): \
                         {err:#}",
                        self.name,
                        self.acked.len()
                    ),
                );
                // Start over on an empty device, so the soak goes on.
                self.io.inner.truncate(0).context("emptying the device")?;
                self.io.inner.sync().context("emptying the device")?;
                self.acked.clear();
                FileBlock::create(self.io.clone(), config()).context("creating the file again")?
            }
        };
        self.work = self.acked.clone();
        self.pending = None;
        self.schedule_crash();
        Ok(file)
    }

    /// Compares the reopened file with the acknowledged state and the pending one; counts a
    /// crash survived when it is exactly one of them.
    fn check_reopened(&mut self, file: &FileBlock) {
        let before = self.io.tally.problem_count();
        let mut found = Model::new();
        for id in file.ids() {
            match file.read(id) {
                Ok(block) => {
                    found.insert(id.0, Arc::from(&block[..]));
                }
                Err(err) => self.io.tally.problem(
                    Kind::Corrupt,
                    format!(
                        "{}: block {id} does not read after a crash: {err:#}",
                        self.name
                    ),
                ),
            }
        }
        for problem in file.validate() {
            self.io.tally.problem(
                Kind::Corrupt,
                format!("{}: validate after a crash: {problem}", self.name),
            );
        }
        if found == self.acked {
            self.io.tally.verified(model_bytes(&found));
        } else if self.pending.as_ref() == Some(&found) {
            // The commit under way became durable after all: it is the acknowledged state now.
            self.io.tally.verified(model_bytes(&found));
            self.acked = found;
        } else {
            self.describe_damage(&found);
            // Go on from what is there, so the same damage is not counted again.
            self.acked = found;
        }
        self.io.tally.crash_checked(before);
    }

    /// Counts what differs between `found` and the acknowledged state (or the pending one,
    /// whichever is closer).
    fn describe_damage(&self, found: &Model) {
        let expected = match &self.pending {
            Some(pending) if differences(pending, found) < differences(&self.acked, found) => {
                pending
            }
            _ => &self.acked,
        };
        for (id, want) in expected {
            match found.get(id) {
                None => self.io.tally.problem(
                    Kind::Lost,
                    format!(
                        "{}: acknowledged block {id} ({} bytes) is gone after a crash",
                        self.name,
                        want.len()
                    ),
                ),
                Some(got) => {
                    self.io.tally.verify(
                        format_args!("{}: block {id} after a crash", self.name),
                        want,
                        got,
                    );
                }
            }
        }
        for (id, got) in found {
            if !expected.contains_key(id) {
                self.io.tally.problem(
                    Kind::Corrupt,
                    format!(
                        "{}: block {id} ({} bytes) was never acknowledged, yet it is there \
                         after a crash",
                        self.name,
                        got.len()
                    ),
                );
            }
        }
    }
}

fn model_bytes(model: &Model) -> u64 {
    model.values().map(|b| b.len() as u64).sum()
}

/// How many blocks differ between two states.
fn differences(a: &Model, b: &Model) -> usize {
    let changed = a
        .iter()
        .filter(|(id, bytes)| b.get(id) != Some(bytes))
        .count();
    changed + b.keys().filter(|id| !a.contains_key(id)).count()
}

/// Runs worker `index` in `dir` until `deadline`; ends with a commit and a last crash check.
pub fn run(
    dir: &Path,
    index: u64,
    seed: u64,
    deadline: Instant,
    tally: &Arc<Tally>,
) -> anyhow::Result<()> {
    let path = dir.join(format!("blocks-{index}.fb"));
    let fd = FdPageIo::create(&path, PAGE_SIZE)
        .with_context(|| format!("creating {}", path.display()))?;
    let io = Arc::new(Counted {
        // A failed sync loses a random subset of the unsynced writes (the default, as Linux's
        // fsync may), picked from the soak's seed.
        inner: Arc::new(FaultyPageIo::new(fd).with_seed(seed ^ (0xF5_0000 + index))),
        tally: Arc::clone(tally),
        trouble: AtomicU64::new(0),
    });
    let mut file = FileBlock::create(io.clone(), config()).context("creating the block file")?;
    let mut worker = Worker {
        name: format!("blocks-{index}"),
        io,
        rng: Rng::derive(seed, 0xB10C_0000 + index),
        work: Model::new(),
        acked: Model::new(),
        pending: None,
        next_crash: Instant::now(),
    };
    worker.schedule_crash();
    let mut crashes = 0u64;
    while Instant::now() < deadline {
        let trouble = worker.io.trouble.load(Ordering::Relaxed);
        let next = worker.step(&mut file);
        tally.op();
        match next {
            Ok(Next::Go) => continue,
            Ok(Next::Crash) => {}
            Err(err) => {
                // Only injected faults and a dead device may make an operation fail.
                if worker.io.trouble.load(Ordering::Relaxed) == trouble {
                    tally.problem(
                        Kind::Error,
                        format!(
                            "{}: an operation failed with no fault injected: {err:#}",
                            worker.name
                        ),
                    );
                }
            }
        }
        file = worker.crash_and_reopen(file)?;
        crashes += 1;
    }
    // The end: a power cut and check (which also clears the faults), a few blocks written and
    // committed with no fault injected, and one more power cut and check.
    file = worker.crash_and_reopen(file)?;
    let committed = (0..8)
        .try_for_each(|_| worker.alloc(&mut file))
        .and_then(|()| file.flush());
    tally.ops(9);
    match committed {
        Ok(()) => worker.acked = worker.work.clone(),
        Err(err) => tally.problem(
            Kind::Error,
            format!(
                "{}: the last commit failed with no fault injected: {err:#}",
                worker.name
            ),
        ),
    }
    drop(worker.crash_and_reopen(file)?);
    println!(
        "soak: {}: {} crashes, {} blocks ({} bytes) acknowledged at the end, {} page writes, \
         {} syncs, {} unsynced writes lost by failed syncs",
        worker.name,
        crashes + 2,
        worker.acked.len(),
        model_bytes(&worker.acked),
        worker.io.inner.counts().writes,
        worker.io.inner.counts().syncs,
        worker.io.inner.counts().discarded,
    );
    Ok(())
}
