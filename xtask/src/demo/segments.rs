//! segcache + objsync over the demo's object store (`InMemory`, or S3 with `--s3`): a
//! `SegmentStore` with a small cache budget puts segments (cache slot and upload at once),
//! evicts as it goes, and reads them back with a skewed access pattern: hits from the cache,
//! misses downloaded again, every byte checked.

use std::time::Instant;

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use segcache::{CacheConfig, SegmentId, SegmentStore, StoreConfig, StoreStats};

use super::{Context, Figures, Hedges, Progress, Rng, Zipf, fmt_time};

/// Segment sizes are drawn from 1 byte to this many bytes.
const MAX_SEGMENT: u64 = 64 * 1024;
/// Puts in flight at once.
const WAVE: usize = 8;

/// How much work the section does.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Segments put (about 21 KiB each on average).
    segments: usize,
    /// A cache budget well below the data put, so that eviction and re-downloads happen.
    budget: u64,
    /// Skewed reads, before one read of every segment in order.
    reads: usize,
}

const FULL: Plan = Plan {
    segments: 300,
    budget: 2 << 20,
    reads: 1500,
};

/// For [`Context::small`] runs.
const SMALL: Plan = Plan {
    segments: 60,
    budget: 512 << 10,
    reads: 300,
};

/// Runs the section in its folder, on the context's object store.
pub fn run(cx: &Context<'_>) -> anyhow::Result<Figures> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    runtime.block_on(demo(cx))
}

/// The length and content of segment `i`: regenerated from `i` to check what is read.
fn segment(i: usize) -> Bytes {
    let mut rng = Rng::new(0x5E6_0000 + i as u64);
    let r = rng.next_f64();
    let len = 1 + (r * r * (MAX_SEGMENT - 1) as f64) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn id(i: usize) -> SegmentId {
    SegmentId::from_u128(0xDE30_0000_0000 + i as u128)
}

async fn demo(cx: &Context<'_>) -> anyhow::Result<Figures> {
    let plan = if cx.small { SMALL } else { FULL };
    let cache = CacheConfig::new(cx.dir.join("cache")).with_max_bytes(plan.budget);
    let (store, _) = SegmentStore::open(
        cache,
        cx.remote.store()?,
        &cx.prefix(),
        StoreConfig::default(),
    )
    .await?;
    println!(
        "  {}: objects named {}; cache budget {} KiB",
        cx.remote.describe(),
        store.object_path(id(0)),
        plan.budget >> 10
    );
    put_all(&store, plan.segments).await?;
    let mut checked = evict_and_read(&store, plan.segments - 1).await?;

    // Read back with a skewed pattern: hot segments stay cached, cold ones are downloaded.
    let start = Instant::now();
    let zipf = Zipf::new(plan.segments, 1.0);
    let mut rng = Rng::new(0x5E6);
    let progress = Progress::new("getting segments", (plan.reads + plan.segments) as u64);
    for _ in 0..plan.reads {
        checked += get_checked(&store, zipf.sample(&mut rng)).await?;
        progress.inc(1);
    }
    // And every segment once, in order.
    for i in 0..plan.segments {
        checked += get_checked(&store, i).await?;
        progress.inc(1);
    }
    progress.finish();
    let stats = store.stats();
    println!(
        "  {} gets ({} KiB verified byte for byte) in {}: {} hits, {} misses ({} downloads of \
         {} KiB, {} joined one in flight); hedges {} raised, {} won, {} skipped",
        stats.gets,
        checked >> 10,
        fmt_time(start.elapsed()),
        stats.hits,
        stats.gets - stats.hits,
        stats.downloads,
        stats.bytes_downloaded >> 10,
        stats.coalesced,
        stats.downloader.hedges_raised,
        stats.downloader.hedges_won,
        stats.downloader.hedges_skipped,
    );
    print_stats("after the reads", &stats);
    ensure!(stats.hits > 0 && stats.downloads > 0, "{stats:?}");
    ensure!(
        stats.cache.bytes <= plan.budget,
        "the cache holds {} bytes, over its budget",
        stats.cache.bytes
    );
    Ok(Figures {
        ops: stats.puts + stats.gets,
        bytes: stats.bytes_put + checked,
        hit_ratio: Some(stats.hits as f64 / stats.gets.max(1) as f64),
        hedges: Some(Hedges {
            raised: stats.downloader.hedges_raised,
            won: stats.downloader.hedges_won,
        }),
        ..Figures::default()
    })
}

/// Puts segments `0..segments`, `WAVE` at a time: each is written into its cache slot while it
/// uploads. The small budget makes the cache evict as it goes.
async fn put_all(store: &SegmentStore, segments: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let progress = Progress::new("putting segments", segments as u64);
    for wave in (0..segments).collect::<Vec<_>>().chunks(WAVE) {
        let puts: Vec<_> = wave
            .iter()
            .map(|&i| {
                let store = store.clone();
                tokio::spawn(async move { store.put(id(i), segment(i)).await.map(drop) })
            })
            .collect();
        for put in puts {
            put.await.context("a put task failed")??;
            progress.inc(1);
        }
    }
    progress.finish();
    let stats = store.stats();
    println!(
        "  put {} segments ({} KiB) in {}",
        stats.puts,
        stats.bytes_put >> 10,
        fmt_time(start.elapsed())
    );
    print_stats("after the puts", &stats);
    ensure!(stats.puts == segments as u64, "puts: {stats:?}");
    ensure!(stats.cache.evictions > 0, "a small budget should evict");
    Ok(())
}

/// Evicts segment `i` (cached: the last one put) by hand and reads it, which must download it
/// again. Returns the bytes verified.
async fn evict_and_read(store: &SegmentStore, i: usize) -> anyhow::Result<u64> {
    let before = store.stats();
    ensure!(
        store.evict_local(id(i))? && !store.contains(id(i)),
        "segment {i} should be cached after the puts, and gone after evict_local"
    );
    let checked = get_checked(store, i).await?;
    let after = store.stats();
    ensure!(
        after.downloads == before.downloads + 1 && store.contains(id(i)),
        "a read after evict_local downloads the segment into the cache: {after:?}"
    );
    println!("  evicted segment {i} by hand; reading it downloaded it again");
    Ok(checked)
}

/// Gets segment `i`, checks every byte and returns how many there were.
async fn get_checked(store: &SegmentStore, i: usize) -> anyhow::Result<u64> {
    let got = store.get(id(i)).await?;
    ensure!(
        got[..] == segment(i)[..],
        "segment {i} read back differently"
    );
    Ok(got.len() as u64)
}

fn print_stats(when: &str, s: &StoreStats) {
    println!(
        "  {when}: cache {} segments, {} KiB of {} KiB; {} evictions ({} KiB); requests: {} up, \
         {} down",
        s.cache.segments,
        s.cache.bytes >> 10,
        s.cache.budget >> 10,
        s.cache.evictions,
        s.cache.evicted_bytes >> 10,
        s.uploader.requests,
        s.downloader.requests
    );
}
