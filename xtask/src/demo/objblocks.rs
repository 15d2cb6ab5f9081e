//! fileblock over objsync's `ObjectPageIo`: the `blocks` steps (allocate, write, commit, free,
//! compact, reopen, verify) on a device whose pages are objects in the demo's object store.
//! The reopen is a new `ObjectPageIo` (which finds the pages with a LIST) under a new
//! `FileBlock`, so every byte verified came back from the store.

use std::sync::Arc;

use anyhow::Context as _;
use fileblock::{Config, FileBlock};
use objsync::{Counters, ObjectPageIo, ObjectPageIoConfig};

use super::blocks::{Plan, exercise};
use super::{Context, Figures, Hedges};

/// Pages are objects: large pages mean fewer requests.
const PAGE_SIZE: usize = 64 * 1024;
const PLAN: Plan = Plan {
    blocks: 2000,
    max_block: 8 * 1024,
    compact_step: 512 << 10,
    seed: 0x0B_1B10C,
};

/// Runs the section on the context's object store.
pub fn run(cx: &Context<'_>) -> anyhow::Result<Figures> {
    let prefix = cx.prefix();
    println!(
        "  {}: ObjectPageIo, {} KiB pages as objects under {prefix}/, {} blocks of 1 B to {} KiB",
        cx.remote.describe(),
        PAGE_SIZE >> 10,
        PLAN.blocks,
        PLAN.max_block >> 10
    );
    // Every device opened, kept for its counters.
    let mut devices: Vec<Arc<ObjectPageIo>> = Vec::new();
    let mut figures = exercise(PLAN, &mut |create| {
        let io = ObjectPageIo::new(
            cx.remote.store()?,
            &prefix,
            PAGE_SIZE,
            ObjectPageIoConfig::default(),
        )
        .with_context(|| format!("opening an ObjectPageIo under {prefix}"))?;
        let io = Arc::new(io);
        devices.push(Arc::clone(&io));
        Ok(if create {
            FileBlock::create(io, Config::default())?
        } else {
            FileBlock::open(io, Config::default())?
        })
    })?;
    let (up, down) = devices.iter().fold(
        (Counters::default(), Counters::default()),
        |(up, down), io| {
            (
                add(up, io.uploader().stats()),
                add(down, io.downloader().stats()),
            )
        },
    );
    println!(
        "    requests: {} up ({} KiB, {} retries), {} down ({} KiB, {} retries); hedges {} \
         raised, {} won, {} skipped",
        up.requests,
        up.bytes_up >> 10,
        up.retries,
        down.requests,
        down.bytes_down >> 10,
        down.retries,
        down.hedges_raised,
        down.hedges_won,
        down.hedges_skipped,
    );
    figures.hedges = Some(Hedges {
        raised: down.hedges_raised,
        won: down.hedges_won,
    });
    Ok(figures)
}

/// The counters of two uploaders or downloaders together (those the section prints).
fn add(mut a: Counters, b: Counters) -> Counters {
    a.requests += b.requests;
    a.bytes_up += b.bytes_up;
    a.bytes_down += b.bytes_down;
    a.retries += b.retries;
    a.hedges_raised += b.hedges_raised;
    a.hedges_won += b.hedges_won;
    a.hedges_skipped += b.hedges_skipped;
    a
}
