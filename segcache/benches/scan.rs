//! `segcache/scan_100k`: `SegmentCache::open` over a directory of 100 000 segment files (64
//! data bytes each, valid footers), against `std::fs::read_dir` + `DirEntry::metadata` of the
//! same files, measured in this run.
//!
//! Criterion ids (read by `cargo xtask bench`): `segcache_scan_100k/{ours,read_dir_metadata}`.
//!
//! The files are written in the on-disk format, straight into the directory (no sync), once,
//! into `target/bench/segcache_scan_100k`, and reused by later runs while intact (see
//! `files_dir`); the first open of each run checks that every one of them is loaded. Both sides
//! then run on a warm dentry and inode cache.
//!
//! Timed (`iter_custom`, one clock per open): `ours` is the whole `open` (directory checks and
//! `flock`, the persist-path probe, the scan: list, then per file `openat` + `fstat` + a 40-byte
//! `pread` of the footer + `close` on up to 2 threads, sort by recency, index build), polled
//! without a runtime so its blocking work runs inline. Dropping the opened cache (its index of
//! 100 000 entries, the directory lock) happens after the clock stops: a directory has one
//! cache at a time. `read_dir_metadata` lists the directory and `statx`es every entry through
//! the directory handle, on one thread, and sums the sizes.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use segcache::{CacheConfig, SegmentCache};

use common::{create_cache_dir, is_bench_run, now, write_segment_file};

/// Segment files in the directory.
const FILES: usize = 100_000;
/// Data bytes per segment.
const LEN: usize = 64;
/// Bytes per file: data and footer.
const FILE_LEN: u64 = LEN as u64 + 40;

/// Writes the `FILES` segment files on 2 threads.
fn write_files(dir: &Path) {
    create_cache_dir(dir);
    std::thread::scope(|s| {
        for half in 0..2u128 {
            s.spawn(move || {
                for n in (half..FILES as u128).step_by(2) {
                    let data = [(n % 251) as u8; LEN];
                    write_segment_file(dir, n, &data);
                }
            });
        }
    });
}

/// Opens the cache over `dir` and checks it loaded every file; returns it and the elapsed time
/// of the open alone.
fn open_timed(dir: &Path) -> (SegmentCache, Duration) {
    let config = CacheConfig::new(dir);
    let start = Instant::now();
    let (cache, report) = now(SegmentCache::open(config)).expect("open");
    let elapsed = start.elapsed();
    assert_eq!(report.loaded, FILES, "every segment loaded");
    assert_eq!(report.loaded_bytes, FILES as u64 * FILE_LEN, "loaded bytes");
    assert!(report.rejected.is_empty() && report.unexpected.is_empty());
    assert!(report.evicted.is_empty(), "nothing evicted");
    (cache, elapsed)
}

/// The baseline: lists `dir` and stats every entry; returns (entries, bytes).
fn read_dir_metadata(dir: &Path) -> (usize, u64) {
    let mut entries = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let meta = entry.expect("entry").metadata().expect("metadata");
        entries += 1;
        bytes += meta.len();
    }
    (entries, bytes)
}

/// The directory of the `FILES` segment files, kept under `target/bench/` between runs:
/// creating 100 000 files takes seconds and deleting them minutes on a busy disk, so they are
/// written once (into `<dir>.partial`, renamed into place when complete) and reused while they
/// are intact; a directory the first open does not load completely is rebuilt.
fn files_dir() -> PathBuf {
    let bench_dir = std::env::var_os("PAGESTORE_BENCH_METRICS").map_or_else(
        || {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let root = manifest.parent().expect("crate inside the workspace");
            root.join("target").join("bench")
        },
        |metrics| {
            let metrics = PathBuf::from(metrics);
            metrics.parent().map_or(metrics.clone(), Path::to_path_buf)
        },
    );
    std::fs::create_dir_all(&bench_dir).expect("create bench dir");
    let dir = bench_dir.join("segcache_scan_100k");
    if dir.exists() {
        let intact = now(SegmentCache::open(CacheConfig::new(&dir))).is_ok_and(|(_, report)| {
            report.loaded == FILES
                && report.rejected.is_empty()
                && report.unexpected.is_empty()
                && report.evicted.is_empty()
        });
        if intact {
            eprintln!("segcache_scan_100k: reusing {}", dir.display());
            return dir;
        }
        std::fs::remove_dir_all(&dir).expect("remove a damaged file set");
    }
    let partial = bench_dir.join("segcache_scan_100k.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).expect("remove a partial file set");
    }
    let start = Instant::now();
    write_files(&partial);
    std::fs::rename(&partial, &dir).expect("rename the file set into place");
    eprintln!(
        "segcache_scan_100k: wrote {FILES} segment files to {} in {:.1?}",
        dir.display(),
        start.elapsed()
    );
    dir
}

fn main() {
    if !is_bench_run() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();

    let dir = files_dir();
    // The check (and warm-up) of both sides, outside the clock.
    let (cache, first) = open_timed(&dir);
    drop(cache);
    eprintln!("segcache_scan_100k: first open {first:.1?}");
    assert_eq!(
        read_dir_metadata(&dir),
        (FILES, FILES as u64 * FILE_LEN),
        "the baseline sees the same files"
    );

    let mut group = c.benchmark_group("segcache_scan_100k");
    // One open is a fraction of a second: a few samples are plenty.
    group.sample_size(10);
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let (cache, elapsed) = open_timed(&dir);
                timed += elapsed;
                drop(cache);
            }
            timed
        });
    });
    group.bench_function("read_dir_metadata", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let seen = std::hint::black_box(read_dir_metadata(&dir));
                timed += start.elapsed();
                assert_eq!(seen, (FILES, FILES as u64 * FILE_LEN), "entries and bytes");
            }
            timed
        });
    });
    group.finish();
    c.final_summary();
}
