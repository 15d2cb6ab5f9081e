//! Miss-path benchmark of `PageCache` over `FdPageIo`: every operation misses, evicts a dirty
//! page (written back) and reads the new one, against the same `pread` + `pwrite` done by hand.
//!
//! Criterion ids (read by `cargo xtask bench`): `pagecache_miss/{ours,raw_pread_pwrite}`.
//!
//! Both run over the same temporary file of `FILE_PAGES` 4 KiB pages, prewritten and read once
//! so it sits in the OS page cache, and synced before each side's warm-up so both start from the
//! same clean state; neither syncs while measured. Page `p` is read at step `s` (`p = s mod
//! FILE_PAGES`, sequential so every step misses), gets byte 0 set from byte 1 and the step, and
//! is written back `CAPACITY` steps later, when it is the least recently used page.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use criterion::Criterion;
use pagecache::{CacheConfig, PageCache};
use pageio::{FdPageIo, PageIo};

const PAGE_SIZE: usize = 4096;
/// Pages in the file: 16 Ki × 4 KiB = 64 MiB, a multiple of `CAPACITY`.
const FILE_PAGES: u64 = 16 * 1024;
/// Cached (unpinned) pages: tiny against the file, so every sequential get misses.
const CAPACITY: usize = 64;

/// The byte every page `no` of the prewritten file is filled with.
fn pattern(no: u64) -> u8 {
    (no % 251) as u8
}

/// Salts of the two sides' stamps, so the check of the second side cannot pass on pages the
/// first one wrote.
const OURS_SALT: u8 = 0;
const RAW_SALT: u8 = 0x80;

/// The byte step `step` stores at offset 0 of its page, computed from byte 1 (which no step
/// changes) so the page's content must have been read to produce it.
fn stamp(byte1: u8, step: u64, salt: u8) -> u8 {
    byte1.wrapping_add(step as u8) ^ salt
}

/// The file, created through `FdPageIo` (which truncates) and prewritten and read back through a
/// second descriptor of it.
struct Fixture {
    _dir: tempfile::TempDir,
    io: Arc<FdPageIo>,
    file: File,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("miss.pages");
        let io = Arc::new(FdPageIo::create(&path, PAGE_SIZE).expect("FdPageIo::create"));
        let file = prewrite(&path);
        Self {
            _dir: dir,
            io,
            file,
        }
    }

    /// Writes the file's dirty pages back and waits, so each side starts from the same clean OS
    /// page cache rather than racing the kernel's background write-back of the other side's
    /// (or the prewrite's) dirty pages.
    fn settle(&self) {
        self.file.sync_all().expect("fsync");
    }

    /// Byte 0 of page `no`, read from the file (not through any cache).
    fn byte0(&self, no: u64) -> u8 {
        let mut byte = [0u8; 1];
        self.file
            .read_exact_at(&mut byte, no * PAGE_SIZE as u64)
            .expect("pread");
        byte[0]
    }
}

fn prewrite(path: &Path) -> File {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut chunk = vec![0u8; PAGE_SIZE * 256];
    for first in (0..FILE_PAGES).step_by(256) {
        for (i, page) in chunk.chunks_mut(PAGE_SIZE).enumerate() {
            page.fill(pattern(first + i as u64));
        }
        file.write_all(&chunk).expect("prewrite");
    }
    // One read of every page puts the file in the OS page cache and checks it.
    let mut page = vec![0u8; PAGE_SIZE];
    for no in 0..FILE_PAGES {
        file.read_exact_at(&mut page, no * PAGE_SIZE as u64)
            .expect("pread");
        assert!(page.iter().all(|&b| b == pattern(no)), "page {no} content");
    }
    file
}

/// The cache side: a cache of `CAPACITY` pages over the file and the next step.
struct Ours {
    cache: PageCache,
    step: u64,
}

impl Ours {
    fn new(fixture: &Fixture) -> Self {
        fixture.settle();
        let io: Arc<dyn PageIo> = fixture.io.clone();
        let cache =
            PageCache::new(io, CacheConfig::default().with_capacity(CAPACITY)).expect("cache");
        let mut ours = Self { cache, step: 0 };
        // Warm up past one full cycle of the cache, then check that the first pages came back
        // from eviction with their stamps and that the steady state holds.
        for _ in 0..4 * CAPACITY {
            ours.step();
        }
        check_stamped(fixture, 0..3 * CAPACITY as u64, OURS_SALT);
        let stats = ours.cache.stats();
        assert_eq!(stats.misses, 4 * CAPACITY as u64, "every get missed");
        assert_eq!(stats.hits, 0, "no get hit");
        assert_eq!(
            stats.write_backs,
            3 * CAPACITY as u64,
            "every eviction wrote back"
        );
        assert_eq!(stats.cached, CAPACITY, "cache full");
        assert_eq!(stats.pinned, 0, "nothing pinned");
        ours
    }

    #[inline]
    fn step(&mut self) {
        let no = self.step % FILE_PAGES;
        let page = self.cache.get(no).expect("get");
        let mut data = page.write();
        data[0] = stamp(data[1], self.step, OURS_SALT);
        black_box(&data[..]);
        self.step += 1;
    }
}

/// Asserts that pages `range` (stepped once, at step = page number) hold their stamp on disk.
fn check_stamped(fixture: &Fixture, range: std::ops::Range<u64>, salt: u8) {
    for no in range {
        let expected = stamp(pattern(no), no, salt);
        assert_eq!(fixture.byte0(no), expected, "page {no} written back");
    }
}

/// The hand-written side: `CAPACITY` page buffers used as a ring; slot `s mod CAPACITY` holds
/// the page of step `s` until step `s + CAPACITY` writes it back and reuses the buffer.
struct Raw<'f> {
    file: &'f File,
    ring: Vec<Box<[u8]>>,
    step: u64,
}

impl<'f> Raw<'f> {
    fn new(fixture: &'f Fixture) -> Self {
        fixture.settle();
        let mut raw = Self {
            file: &fixture.file,
            ring: (0..CAPACITY)
                .map(|_| vec![0u8; PAGE_SIZE].into_boxed_slice())
                .collect(),
            step: 0,
        };
        for _ in 0..4 * CAPACITY {
            raw.step();
        }
        check_stamped(fixture, 0..3 * CAPACITY as u64, RAW_SALT);
        raw
    }

    #[inline]
    fn step(&mut self) {
        let buf = &mut self.ring[(self.step % CAPACITY as u64) as usize];
        if let Some(victim_step) = self.step.checked_sub(CAPACITY as u64) {
            let victim = victim_step % FILE_PAGES;
            self.file
                .write_all_at(buf, victim * PAGE_SIZE as u64)
                .expect("pwrite");
        }
        let no = self.step % FILE_PAGES;
        self.file
            .read_exact_at(buf, no * PAGE_SIZE as u64)
            .expect("pread");
        buf[0] = stamp(buf[1], self.step, RAW_SALT);
        black_box(&buf[..]);
        self.step += 1;
    }
}

fn bench_miss(c: &mut Criterion) {
    let fixture = Fixture::new();
    let mut group = c.benchmark_group("pagecache_miss");
    // Each side is set up (and its cache dropped) outside criterion's clock: quick mode counts
    // time spent in a benchmark function's first call against its budget.
    let mut ours = Ours::new(&fixture);
    group.bench_function("ours", |b| b.iter(|| ours.step()));
    drop(ours);
    let mut raw = Raw::new(&fixture);
    group.bench_function("raw_pread_pwrite", |b| b.iter(|| raw.step()));
    group.finish();
}

fn main() {
    // `cargo bench` (and so `cargo xtask bench`) passes `--bench`; nextest's listing and
    // `cargo test` do not. Outside a bench run, building the data sets (up to 1 GiB) would only
    // slow the test suite down, so the binary lists no benchmarks and does nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_miss(&mut c);
    c.final_summary();
}
