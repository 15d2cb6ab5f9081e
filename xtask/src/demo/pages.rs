//! pageio + pagecache: write a file through a cache much smaller than it (dirty pages are
//! written back as they are evicted), flush, reopen with a fresh cache and verify every byte,
//! then read with a skewed key mix from two threads to show hits.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use pagecache::{CacheConfig, CacheStats, PageCache};
use pageio::{FdPageIo, PageIo};

use super::{Context, Figures, Progress, Rng, Zipf, fmt_time};

const PAGE_SIZE: usize = 4096;
/// 16 MiB of pages...
const PAGES: u64 = 4096;
/// ...through a 1 MiB cache.
const CAPACITY: usize = 256;
const THREADS: usize = 2;
const READS_PER_THREAD: usize = 100_000;
/// The skew of the read phase: Zipf with this exponent over all pages.
const ZIPF_S: f64 = 1.0;

/// Runs the section in its folder.
pub fn run(cx: &Context<'_>) -> anyhow::Result<Figures> {
    let path = cx.dir.join("pages.db");
    println!(
        "  {}: {PAGES} pages of {PAGE_SIZE} B ({} MiB) through a cache of {CAPACITY} pages ({} KiB)",
        path.display(),
        (PAGES * PAGE_SIZE as u64) >> 20,
        (CAPACITY * PAGE_SIZE) >> 10,
    );
    let config = CacheConfig::default().with_capacity(CAPACITY);
    write_and_flush(&path, config)?;
    let (cache, verified) = reopen_and_verify(&path, config)?;
    let after = read_skewed(&cache, &verified)?;
    print_stats("counters of the reopened cache", &after);
    let reads = (THREADS * READS_PER_THREAD) as u64;
    let hits = after.hits - verified.hits;
    // Page writes, the flush, the verifying reads and the skewed reads; each page access
    // hands out a whole page.
    let accesses = 2 * PAGES + reads;
    Ok(Figures {
        ops: accesses + 1,
        bytes: accesses * PAGE_SIZE as u64,
        hit_ratio: Some(hits as f64 / reads as f64),
        ..Figures::default()
    })
}

/// Writes every page through a cache that holds 1/16 of them, so most are evicted while dirty
/// and must be written back on the way out; then flushes the rest.
fn write_and_flush(path: &Path, config: CacheConfig) -> anyhow::Result<()> {
    let io = Arc::new(FdPageIo::create(path, PAGE_SIZE).context("creating the file")?);
    let cache = PageCache::new(io, config)?;
    let start = Instant::now();
    let progress = Progress::new("writing pages", PAGES);
    for no in 0..PAGES {
        // The whole page is overwritten: no read from the file.
        let page = cache.get_for_overwrite(no)?;
        fill_page(no, &mut page.write());
        progress.inc(1);
    }
    progress.finish();
    let write_time = start.elapsed();
    let written = cache.stats();
    ensure!(
        written.misses == PAGES && written.hits == 0,
        "each page should miss once: {written:?}"
    );
    ensure!(
        written.write_backs == written.evictions && written.dirty == written.cached,
        "every evicted page was dirty and had to be written back: {written:?}"
    );
    ensure!(
        written.evictions + written.cached as u64 == PAGES && written.cached <= CAPACITY,
        "every page is either still cached or was evicted: {written:?}"
    );
    step(
        "write",
        &format!(
            "{PAGES} pages via get_for_overwrite; {} evicted dirty and written back, {} left dirty",
            written.evictions, written.dirty
        ),
        write_time,
    );

    // The dirty remainder in page order, then fdatasync: the commit point.
    let start = Instant::now();
    cache.flush()?;
    let flush_time = start.elapsed();
    let flushed = cache.stats();
    ensure!(
        flushed.dirty == 0 && flushed.flushed == written.dirty as u64,
        "flush should write exactly the dirty pages: {flushed:?}"
    );
    step(
        "flush",
        &format!(
            "{} dirty pages written in page order, then fdatasync",
            flushed.flushed
        ),
        flush_time,
    );
    Ok(())
}

/// Reopens the file with a fresh backend and cache and checks every byte of every page.
fn reopen_and_verify(path: &Path, config: CacheConfig) -> anyhow::Result<(PageCache, CacheStats)> {
    let io = Arc::new(FdPageIo::open(path, PAGE_SIZE).context("reopening the file")?);
    let pages = io.num_pages()?;
    ensure!(
        pages == PAGES,
        "the reopened file has {pages} pages, not {PAGES}"
    );
    let cache = PageCache::new(io, config)?;
    let start = Instant::now();
    let mut expected = vec![0u8; PAGE_SIZE];
    let progress = Progress::new("verifying pages", PAGES);
    for no in 0..PAGES {
        fill_page(no, &mut expected);
        let page = cache.get(no)?;
        ensure!(
            *page.read() == *expected,
            "page {no} read back differs from what was written"
        );
        progress.inc(1);
    }
    progress.finish();
    let verify_time = start.elapsed();
    let verified = cache.stats();
    ensure!(
        verified.misses == PAGES && verified.write_backs == 0,
        "a cold read of every page misses once and writes nothing back: {verified:?}"
    );
    step(
        "verify",
        &format!(
            "reopened: {PAGES} pages read through a fresh cache, all {} MiB as written",
            (PAGES * PAGE_SIZE as u64) >> 20
        ),
        verify_time,
    );
    Ok((cache, verified))
}

/// Skewed reads from several threads sharing the cache: the hot pages stay resident. `before`
/// are the counters at the start; returns the counters at the end.
fn read_skewed(cache: &PageCache, before: &CacheStats) -> anyhow::Result<CacheStats> {
    let zipf = Zipf::new(PAGES as usize, ZIPF_S);
    let start = Instant::now();
    let progress = Progress::new("reading pages", (THREADS * READS_PER_THREAD) as u64);
    thread::scope(|s| -> anyhow::Result<()> {
        let readers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (zipf, progress) = (&zipf, &progress);
                s.spawn(move || read_trace(cache, zipf, t as u64, progress))
            })
            .collect();
        for reader in readers {
            reader
                .join()
                .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
        }
        Ok(())
    })?;
    progress.finish();
    let read_time = start.elapsed();
    let after = cache.stats();
    let reads = (THREADS * READS_PER_THREAD) as u64;
    let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
    ensure!(
        hits + misses == reads && after.write_backs == 0 && after.pinned == 0,
        "skewed phase: {reads} reads, clean pages, no pins left: {after:?}"
    );
    step(
        "read",
        &format!(
            "{reads} reads by {THREADS} threads, Zipf s={ZIPF_S:.1} over {PAGES} pages: \
             {hits} hits ({:.1}%), {misses} misses, {:.2} us per read",
            100.0 * hits as f64 / reads as f64,
            read_time.as_secs_f64() * 1e6 / READS_PER_THREAD as f64,
        ),
        read_time,
    );
    Ok(after)
}

/// Reads `READS_PER_THREAD` pages drawn from `zipf`, checking each one's number stamp.
fn read_trace(
    cache: &PageCache,
    zipf: &Zipf,
    seed: u64,
    progress: &Progress,
) -> anyhow::Result<()> {
    /// Reads counted at once, so the threads do not contend on the counter.
    const BATCH: usize = 1000;
    let mut rng = Rng::new(0xD3_0000 + seed);
    for i in 0..READS_PER_THREAD {
        if i % BATCH == BATCH - 1 {
            progress.inc(BATCH as u64);
        }
        let no = zipf.sample(&mut rng) as u64;
        let page = cache.get(no)?;
        let data = page.read();
        ensure!(
            data[..8] == no.to_le_bytes(),
            "page {no} carries the stamp of another page"
        );
    }
    Ok(())
}

/// The content of page `no`: its number, then bytes from a generator seeded with it.
fn fill_page(no: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&no.to_le_bytes());
    Rng::new(no).fill(&mut buf[8..]);
}

/// One line per phase: name, time, what it did.
fn step(name: &str, what: &str, time: std::time::Duration) {
    println!("  {name:<6} {:>9}  {what}", fmt_time(time));
}

fn print_stats(title: &str, s: &CacheStats) {
    println!(
        "  {title}: hits {}, misses {}, evictions {}, write-backs {}, flushed {}, cached {}, dirty {}, pinned {}",
        s.hits, s.misses, s.evictions, s.write_backs, s.flushed, s.cached, s.dirty, s.pinned
    );
}
