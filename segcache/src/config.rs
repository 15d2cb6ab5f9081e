//! Configuration, the persist modes, and statistics.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// How a segment is made visible atomically under its final name.
///
/// [`Auto`](Self::Auto) probes the three paths at open and takes the first that works, in the
/// order listed. The others force one path, and [`SegmentCache::open`](crate::SegmentCache::open)
/// fails with [`Error::PersistUnsupported`] if the probe found it does not work here (the cache
/// never silently falls through to another path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PersistMode {
    /// Probe at open and use the first path that works.
    #[default]
    Auto,
    /// An anonymous `O_TMPFILE` in the cache directory, linked into place with
    /// `linkat(fd, "", dir, name, AT_EMPTY_PATH)`. Nothing named ever exists before the
    /// segment is complete. Needs `CAP_DAC_READ_SEARCH` on most kernels.
    TmpfileLinkat,
    /// An anonymous `O_TMPFILE`, linked into place through `/proc/self/fd/N` with
    /// `AT_SYMLINK_FOLLOW` (the unprivileged form of the same idea; needs `/proc` and a kernel
    /// that allows it).
    ProcSelfFd,
    /// A named temporary file (`.tmp-<id>-<unique>`), renamed into place with
    /// `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink` where the filesystem lacks that flag.
    /// Works everywhere; a crash can leave the temporary file, which the next open deletes.
    RenameNoReplace,
}

/// How a [`SegmentCache`](crate::SegmentCache) is laid out and sized.
///
/// ```
/// use segcache::{CacheConfig, PersistMode};
///
/// let config = CacheConfig::new("/var/cache/pagestore/segments")
///     .with_max_bytes(64 << 30)
///     .with_watermarks(0.9, 0.7)
///     .with_max_handles(512)
///     .with_persist_mode(PersistMode::Auto);
/// assert_eq!(config.max_bytes(), 64 << 30);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    dir: PathBuf,
    max_bytes: u64,
    high_watermark: f64,
    low_watermark: f64,
    max_handles: usize,
    persist: PersistMode,
    verify_data_on_scan: bool,
    verify_data_on_map: bool,
}

impl CacheConfig {
    /// A configuration for a cache in `dir` (created 0700 if missing), with a 1 GiB budget,
    /// watermarks 0.9 / 0.7, 256 handles, [`PersistMode::Auto`], data checksums verified on
    /// first map and not at scan.
    ///
    /// There is no `Default`: a cache directory has no sensible default.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: 1 << 30,
            high_watermark: 0.9,
            low_watermark: 0.7,
            max_handles: 256,
            persist: PersistMode::Auto,
            verify_data_on_scan: false,
            verify_data_on_map: true,
        }
    }

    /// The byte budget: the disk bytes (data plus [`FOOTER_LEN`](crate::FOOTER_LEN) per segment)
    /// of cached segments and live slots. At least 1.
    #[must_use]
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Eviction thresholds as fractions of the budget: when a reservation would take the cache
    /// above `high`, least-recently-used unpinned segments are evicted until it would be at or
    /// below `low`. Needs `0 < low <= high <= 1`.
    #[must_use]
    pub fn with_watermarks(mut self, high: f64, low: f64) -> Self {
        self.high_watermark = high;
        self.low_watermark = low;
        self
    }

    /// The size of the handle pool: open file descriptors of slots and mappings together. At
    /// least 2 (mapping a segment briefly needs its descriptor and its mapping).
    #[must_use]
    pub fn with_max_handles(mut self, handles: usize) -> Self {
        self.max_handles = handles;
        self
    }

    /// How segments are persisted (see [`PersistMode`]).
    #[must_use]
    pub fn with_persist_mode(mut self, mode: PersistMode) -> Self {
        self.persist = mode;
        self
    }

    /// Whether the startup scan reads every segment's data to check its checksum. Off by
    /// default: the scan then reads only each file's 40-byte footer (whose own checksum catches
    /// a damaged footer), which keeps opening a large cache close to the cost of listing it;
    /// the data is checked on first map instead (see
    /// [`with_verify_data_on_map`](Self::with_verify_data_on_map)).
    #[must_use]
    pub fn with_verify_data_on_scan(mut self, verify: bool) -> Self {
        self.verify_data_on_scan = verify;
        self
    }

    /// Whether the first mapping of a segment loaded by the scan checks its data checksum (on
    /// by default). A mismatch deletes the file and fails the `get` with
    /// [`Error::Corrupt`]. Segments persisted by this process are checked as they are written.
    #[must_use]
    pub fn with_verify_data_on_map(mut self, verify: bool) -> Self {
        self.verify_data_on_map = verify;
        self
    }

    /// The cache directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The byte budget.
    #[must_use]
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The high and low watermarks, as fractions of the budget.
    #[must_use]
    pub fn watermarks(&self) -> (f64, f64) {
        (self.high_watermark, self.low_watermark)
    }

    /// The size of the handle pool.
    #[must_use]
    pub fn max_handles(&self) -> usize {
        self.max_handles
    }

    /// The persist mode asked for.
    #[must_use]
    pub fn persist_mode(&self) -> PersistMode {
        self.persist
    }

    /// Whether the scan verifies data checksums.
    #[must_use]
    pub fn verify_data_on_scan(&self) -> bool {
        self.verify_data_on_scan
    }

    /// Whether the first map verifies data checksums.
    #[must_use]
    pub fn verify_data_on_map(&self) -> bool {
        self.verify_data_on_map
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason| Err(Error::InvalidConfig { reason });
        if self.dir.as_os_str().is_empty() {
            return invalid("the cache directory path is empty");
        }
        if self.max_bytes == 0 {
            return invalid("max_bytes must be at least 1");
        }
        let (high, low) = (self.high_watermark, self.low_watermark);
        if !(low > 0.0 && low <= high && high <= 1.0) {
            return invalid("watermarks need 0 < low <= high <= 1");
        }
        if self.max_handles < 2 {
            return invalid("max_handles must be at least 2 (a mapping briefly needs two)");
        }
        if u32::try_from(self.max_handles).is_err() {
            return invalid("max_handles must fit in a u32");
        }
        Ok(())
    }

    /// The watermarks in bytes: (high, low).
    pub(crate) fn watermark_bytes(&self) -> (u64, u64) {
        let of = |fraction: f64| (self.max_bytes as f64 * fraction) as u64;
        (
            of(self.high_watermark).min(self.max_bytes),
            of(self.low_watermark).min(self.max_bytes),
        )
    }
}

/// A snapshot of the cache's state and counters, from
/// [`SegmentCache::stats`](crate::SegmentCache::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Segments cached and readable.
    pub segments: usize,
    /// Disk bytes of cached segments (data plus footer each).
    pub bytes: u64,
    /// Disk bytes reserved by live slots.
    pub reserved_bytes: u64,
    /// The byte budget.
    pub budget: u64,
    /// Segments with a live mapping, pinned or idle.
    pub mapped: usize,
    /// Segments with at least one live [`SegmentRef`](crate::SegmentRef).
    pub pinned: usize,
    /// Handles of the pool in use: descriptors of slots and mappings, plus descriptors being
    /// mapped.
    pub handles_in_use: usize,
    /// The size of the handle pool.
    pub max_handles: usize,
    /// Tasks waiting for a handle.
    pub handle_waiters: usize,
    /// `get`s that found the segment.
    pub hits: u64,
    /// `get`s that did not.
    pub misses: u64,
    /// Segments made readable by `persist` (including adopted files).
    pub persisted: u64,
    /// `persist`s that found the segment already there and returned it instead.
    pub already_present: u64,
    /// Segments evicted to stay within the budget.
    pub evictions: u64,
    /// Disk bytes those evictions freed.
    pub evicted_bytes: u64,
    /// Idle mappings unmapped because the pool needed room.
    pub mappings_reclaimed: u64,
    /// Segments found corrupt when mapped (and deleted).
    pub corrupt: u64,
    /// Unlinks of evicted or removed segments that failed (the file stays on disk, outside the
    /// cache's accounting, until the next open's scan).
    pub unlink_failures: u64,
}
