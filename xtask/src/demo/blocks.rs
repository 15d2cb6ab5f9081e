//! fileblock over `FdPageIo`: allocate many blocks of mixed sizes, write them, free half,
//! commit, compact, reopen and verify every surviving block byte for byte.
//!
//! The steps themselves ([`exercise`]) take any way of opening the file, so the `objblocks`
//! section runs them over `ObjectPageIo` too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use fileblock::{BlockId, CompactLimit, CompactReport, Config, ExtentKind, FileBlock, Stats};
use pageio::FdPageIo;

use super::{Compaction, Context, Figures, Progress, Rng, fill, fmt_time, verify};

/// How much work [`exercise`] does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Blocks allocated and written.
    pub blocks: usize,
    /// Block sizes are drawn from 1 byte to this many bytes, skewed small.
    pub max_block: u64,
    /// Bytes of blocks one bounded `compact` call may move (compaction runs as a series of
    /// them, which is what lets it show progress).
    pub compact_step: u64,
    /// Seeds the block sizes and contents.
    pub seed: u64,
}

const PAGE_SIZE: usize = 4096;
const PLAN: Plan = Plan {
    blocks: 20_000,
    max_block: 16 * 1024,
    compact_step: 2 << 20,
    seed: 0xB10C,
};

/// Runs the section in its folder.
pub fn run(cx: &Context<'_>) -> anyhow::Result<Figures> {
    let path = cx.dir.join("blocks.fb");
    println!(
        "  {}: FdPageIo, {PAGE_SIZE} B pages, {} blocks of 1 B to {} KiB",
        path.display(),
        PLAN.blocks,
        PLAN.max_block >> 10
    );
    exercise(PLAN, &mut |create| {
        let io = if create {
            FdPageIo::create(&path, PAGE_SIZE)
        } else {
            FdPageIo::open(&path, PAGE_SIZE)
        }
        .with_context(|| format!("opening {}", path.display()))?;
        let io = Arc::new(io);
        Ok(if create {
            FileBlock::create(io, Config::default())?
        } else {
            FileBlock::open(io, Config::default())?
        })
    })
}

/// Allocates and writes `plan.blocks` blocks, commits, frees every other one, commits,
/// compacts, reopens and verifies every surviving block. `open(true)` creates the file,
/// `open(false)` opens it again.
///
/// The figures leave the hit ratio and hedges to the caller: `FileBlock` does not show its
/// cache's counters.
pub fn exercise(
    plan: Plan,
    open: &mut dyn FnMut(bool) -> anyhow::Result<FileBlock>,
) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();

    // Allocate and fill.
    let mut fb = open(true)?;
    let mut rng = Rng::new(plan.seed);
    let mut live: BTreeMap<BlockId, (u64, u64)> = BTreeMap::new(); // id -> (len, seed)
    let start = Instant::now();
    let mut bytes = 0u64;
    let progress = Progress::new("writing blocks", plan.blocks as u64);
    for _ in 0..plan.blocks {
        // Skewed sizes: mostly small, some up to max_block.
        let r = rng.next_f64();
        let len = 1 + (r * r * r * (plan.max_block - 1) as f64) as u64;
        let id = fb.alloc(len)?;
        let seed = rng.next_u64();
        let size = usize::try_from(len).context("block size")?;
        fill(&mut fb.overwrite_at(id, 0, size)?, seed);
        live.insert(id, (len, seed));
        bytes += len;
        progress.inc(1);
    }
    progress.finish();
    fb.flush()?;
    figures.ops += 2 * plan.blocks as u64 + 1;
    figures.bytes += bytes;
    println!(
        "  allocated and wrote {} blocks ({} KiB of data) and committed in {}",
        plan.blocks,
        bytes >> 10,
        fmt_time(start.elapsed())
    );
    print_stats("after the writes", &fb.stats());

    // Free every other block, then commit: the holes are scattered through the file.
    let doomed: Vec<BlockId> = live.keys().copied().step_by(2).collect();
    for id in &doomed {
        fb.free(*id)?;
        live.remove(id);
    }
    fb.flush()?;
    figures.ops += doomed.len() as u64 + 1;
    println!("  freed {} blocks and committed", doomed.len());
    print_stats("after the frees", &fb.stats());
    check(&fb)?;

    // Compact: tail blocks move into the holes, keeping their ids; the file shrinks.
    let start = Instant::now();
    let report = compact(&mut fb, plan.compact_step)?;
    figures.ops += u64::from(report.commits);
    println!(
        "  compacted in {}: {} blocks ({} KiB) moved in {} commit(s); file {} KiB -> {} KiB \
         ({:.0}% smaller)",
        fmt_time(start.elapsed()),
        report.blocks_moved,
        report.bytes_moved >> 10,
        report.commits,
        report.old_file_len >> 10,
        report.new_file_len >> 10,
        100.0 * (1.0 - report.new_file_len as f64 / report.old_file_len.max(1) as f64),
    );
    ensure!(
        report.new_file_len < report.old_file_len,
        "compaction should shrink a file with half its blocks freed: {report:?}"
    );
    figures.compaction = Some(Compaction {
        before: report.old_file_len,
        after: report.new_file_len,
    });
    check(&fb)?;
    drop(fb);

    // Reopen and check every surviving block.
    let start = Instant::now();
    let fb = open(false)?;
    let open_time = start.elapsed();
    check(&fb)?;
    ensure!(
        fb.stats().live_blocks == live.len(),
        "live blocks after reopen: {} (expected {})",
        fb.stats().live_blocks,
        live.len()
    );
    let start = Instant::now();
    let mut checked = 0u64;
    let progress = Progress::new("verifying blocks", live.len() as u64);
    for (&id, &(len, seed)) in &live {
        let size = usize::try_from(len).context("block size")?;
        let block = fb.read_at(id, 0, size)?;
        ensure!(
            verify(&block, seed),
            "block {id} does not hold what was written"
        );
        checked += len;
        progress.inc(1);
    }
    progress.finish();
    figures.ops += live.len() as u64;
    figures.bytes += checked;
    println!(
        "  reopened in {}; verified {} blocks ({} KiB) byte for byte in {}",
        fmt_time(open_time),
        live.len(),
        checked >> 10,
        fmt_time(start.elapsed())
    );
    print_stats("after compaction and reopen", &fb.stats());
    Ok(figures)
}

/// Compacts as a series of calls bounded to `step` bytes moved each, with a progress bar
/// over the bytes of the blocks past the end the file would have if it were dense. Returns
/// what the calls did together.
fn compact(fb: &mut FileBlock, step: u64) -> anyhow::Result<CompactReport> {
    /// A stop for a series that keeps reporting a limit without getting anywhere.
    const MAX_CALLS: usize = 1000;
    let s = fb.stats();
    // The body's extents cover it from its start, in offset order.
    let body_start = fb.extents().next().map_or(0, |e| e.offset);
    let dense_end = body_start + s.used + s.map_len;
    let to_move: u64 = fb
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Block(_)) && e.offset + e.len > dense_end)
        .map(|e| e.len)
        .sum();
    let progress = Progress::new("compacting", to_move);
    let mut total = CompactReport::default();
    for call in 0..MAX_CALLS {
        let report = fb.compact(CompactLimit::Bytes(step))?;
        if call == 0 {
            total.old_file_len = report.old_file_len;
        }
        total.new_file_len = report.new_file_len;
        total.blocks_moved += report.blocks_moved;
        total.bytes_moved += report.bytes_moved;
        total.commits += report.commits;
        progress.set(total.bytes_moved);
        if !report.limited || report.blocks_moved == 0 {
            break;
        }
    }
    progress.finish();
    Ok(total)
}

/// Fails with the problems `validate` finds.
fn check(fb: &FileBlock) -> anyhow::Result<()> {
    let problems = fb.validate();
    ensure!(problems.is_empty(), "validate: {problems:?}");
    Ok(())
}

fn print_stats(what: &str, s: &Stats) {
    println!(
        "    {what}: file {} KiB, {} live blocks using {} KiB, {} KiB free (largest {} KiB, \
         fragmentation {:.2}), map {} KiB, {} extents, generation {}",
        s.file_len >> 10,
        s.live_blocks,
        s.used >> 10,
        s.free >> 10,
        s.largest_free >> 10,
        s.fragmentation,
        s.map_len >> 10,
        s.extents,
        s.generation,
    );
}
