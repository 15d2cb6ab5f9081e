//! segcache + objsync over `object_store`'s `InMemory`: a `SegmentStore` with a small cache
//! budget puts segments (cache slot and upload at once), evicts as it goes, and reads them back
//! with a skewed access pattern: hits from the cache, misses downloaded again, every byte
//! checked.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use object_store::memory::InMemory;
use segcache::{CacheConfig, SegmentId, SegmentStore, StoreConfig, StoreStats};

use super::{Rng, Zipf, fmt_time};

const SEGMENTS: usize = 300;
/// Segment sizes are drawn from 1 byte to this many bytes.
const MAX_SEGMENT: u64 = 64 * 1024;
/// A cache budget well below the data put, so that eviction and re-downloads happen.
const BUDGET: u64 = 2 << 20;
/// Puts in flight at once.
const WAVE: usize = 8;
const READS: usize = 3000;

/// Runs the section in `dir`.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a tokio runtime")?;
    runtime.block_on(demo(dir))
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

async fn demo(dir: &Path) -> anyhow::Result<()> {
    let remote = Arc::new(InMemory::new());
    let cache = CacheConfig::new(dir.join("cache")).with_max_bytes(BUDGET);
    let (store, _) =
        SegmentStore::open(cache, remote, "demo/segments", StoreConfig::default()).await?;
    println!(
        "  object store: InMemory; objects named {}; cache budget {} KiB",
        store.object_path(id(0)),
        BUDGET >> 10
    );

    // Put: each segment is written into its cache slot while it uploads.
    let start = Instant::now();
    for wave in (0..SEGMENTS).collect::<Vec<_>>().chunks(WAVE) {
        let puts: Vec<_> = wave
            .iter()
            .map(|&i| {
                let store = store.clone();
                tokio::spawn(async move { store.put(id(i), segment(i)).await.map(drop) })
            })
            .collect();
        for put in puts {
            put.await.context("a put task failed")??;
        }
    }
    let stats = store.stats();
    println!(
        "  put {} segments ({} KiB) in {}",
        stats.puts,
        stats.bytes_put >> 10,
        fmt_time(start.elapsed())
    );
    print_stats("after the puts", &stats);
    ensure!(stats.puts == SEGMENTS as u64, "puts: {stats:?}");
    ensure!(stats.cache.evictions > 0, "a small budget should evict");

    // Read back with a skewed pattern: hot segments stay cached, cold ones are downloaded.
    let start = Instant::now();
    let zipf = Zipf::new(SEGMENTS, 1.0);
    let mut rng = Rng::new(0x5E6);
    let mut checked = 0u64;
    for _ in 0..READS {
        let i = zipf.sample(&mut rng);
        let got = store.get(id(i)).await?;
        ensure!(
            got[..] == segment(i)[..],
            "segment {i} read back differently"
        );
        checked += got.len() as u64;
    }
    // And every segment once, in order.
    for i in 0..SEGMENTS {
        let got = store.get(id(i)).await?;
        ensure!(
            got[..] == segment(i)[..],
            "segment {i} read back differently"
        );
        checked += got.len() as u64;
    }
    let stats = store.stats();
    println!(
        "  {} gets ({} KiB verified byte for byte) in {}: {} hits, {} downloads ({} KiB)",
        stats.gets,
        checked >> 10,
        fmt_time(start.elapsed()),
        stats.hits,
        stats.downloads,
        stats.bytes_downloaded >> 10
    );
    print_stats("after the reads", &stats);
    ensure!(stats.hits > 0 && stats.downloads > 0, "{stats:?}");
    ensure!(
        stats.cache.bytes <= BUDGET,
        "the cache holds {} bytes, over its budget",
        stats.cache.bytes
    );
    Ok(())
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
