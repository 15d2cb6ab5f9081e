//! fileblock over `FdPageIo`: allocate many blocks of mixed sizes, write them, free half,
//! commit, compact, reopen and verify every surviving block byte for byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use fileblock::{BlockId, CompactLimit, Config, FileBlock, Stats};
use pageio::FdPageIo;

use super::{Rng, fmt_time};

const PAGE_SIZE: usize = 4096;
const BLOCKS: usize = 20_000;
/// Block sizes are drawn from 1 byte to this many bytes, skewed small.
const MAX_BLOCK: u64 = 16 * 1024;

/// Runs the section in `dir`.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("blocks.fb");
    let open = |create: bool| -> anyhow::Result<FileBlock> {
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
    };

    // Allocate and fill.
    let mut fb = open(true)?;
    let mut rng = Rng::new(0xB10C);
    let mut live: BTreeMap<BlockId, (u64, u64)> = BTreeMap::new(); // id -> (len, seed)
    let start = Instant::now();
    let mut bytes = 0u64;
    for _ in 0..BLOCKS {
        // Skewed sizes: mostly small, some up to MAX_BLOCK.
        let r = rng.next_f64();
        let len = 1 + (r * r * r * (MAX_BLOCK - 1) as f64) as u64;
        let id = fb.alloc(len)?;
        let seed = rng.next_u64();
        fill(&mut fb.overwrite_at(id, 0, len as usize)?, seed);
        live.insert(id, (len, seed));
        bytes += len;
    }
    fb.flush()?;
    let alloc_time = start.elapsed();
    println!(
        "  allocated and wrote {BLOCKS} blocks ({} KiB of data) and committed in {}",
        bytes >> 10,
        fmt_time(alloc_time)
    );
    print_stats("after the writes", &fb.stats());

    // Free every other block, then commit: the holes are scattered through the file.
    let doomed: Vec<BlockId> = live.keys().copied().step_by(2).collect();
    for id in &doomed {
        fb.free(*id)?;
        live.remove(id);
    }
    fb.flush()?;
    let before = fb.stats();
    println!("  freed {} blocks and committed", doomed.len());
    print_stats("after the frees", &before);
    ensure!(fb.validate().is_empty(), "validate: {:?}", fb.validate());

    // Compact: tail blocks move into the holes, keeping their ids; the file shrinks.
    let start = Instant::now();
    let report = fb.compact(CompactLimit::Unbounded)?;
    println!(
        "  compacted in {}: {} blocks ({} KiB) moved in {} commit(s); file {} KiB -> {} KiB ({:.0}% smaller)",
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
    drop(fb);

    // Reopen from disk and check every surviving block.
    let start = Instant::now();
    let fb = open(false)?;
    let open_time = start.elapsed();
    ensure!(fb.validate().is_empty(), "validate: {:?}", fb.validate());
    ensure!(
        fb.stats().live_blocks == live.len(),
        "live blocks after reopen: {} (expected {})",
        fb.stats().live_blocks,
        live.len()
    );
    let mut checked = 0u64;
    for (&id, &(len, seed)) in &live {
        let block = fb.read_at(id, 0, len as usize)?;
        ensure!(
            verify(&block, seed),
            "block {id} does not hold what was written"
        );
        checked += len;
    }
    println!(
        "  reopened in {} and verified {} blocks ({} KiB) byte for byte",
        fmt_time(open_time),
        live.len(),
        checked >> 10
    );
    print_stats("after compaction and reopen", &fb.stats());
    Ok(())
}

/// The bytes of a block are a stream of the generator seeded with its seed.
fn fill(buf: &mut [u8], seed: u64) {
    let mut rng = Rng::new(seed);
    for chunk in buf.chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

fn verify(buf: &[u8], seed: u64) -> bool {
    let mut rng = Rng::new(seed);
    buf.chunks(8).all(|chunk| {
        let word = rng.next_u64().to_le_bytes();
        chunk == &word[..chunk.len()]
    })
}

fn print_stats(what: &str, s: &Stats) {
    println!(
        "    {what}: file {} KiB, {} live blocks using {} KiB, {} KiB free (largest {} KiB, fragmentation {:.2}), map {} KiB, {} extents, generation {}",
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
