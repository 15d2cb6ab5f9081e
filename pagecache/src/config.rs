//! Configuration and statistics.

use crate::{Error, Result};

/// How a [`PageCache`](crate::PageCache) is sized and flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    capacity: usize,
    flush_batch: usize,
}

impl Default for CacheConfig {
    /// 1024 unpinned pages, flushed 64 pages per `write_pages` call.
    fn default() -> Self {
        Self {
            capacity: 1024,
            flush_batch: 64,
        }
    }
}

impl CacheConfig {
    /// The number of *unpinned* pages the cache keeps before it evicts. Pinned pages do not
    /// count, so a caller can always pin as many pages as it needs. At least 1.
    ///
    /// The bound is exact while at most 64 pages are pinned at once. Beyond that, pins are
    /// recounted only as their number doubles (an exact count on every miss would cost time
    /// proportional to the pins), so the cache may keep a few more unpinned pages than this.
    #[must_use]
    pub fn with_capacity(mut self, pages: usize) -> Self {
        self.capacity = pages;
        self
    }

    /// How many pages [`flush`](crate::PageCache::flush) hands to one
    /// [`write_pages`](pageio::PageIo::write_pages) call. At least 1.
    #[must_use]
    pub fn with_flush_batch(mut self, pages: usize) -> Self {
        self.flush_batch = pages;
        self
    }

    /// The capacity in unpinned pages.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The flush batch size in pages.
    #[must_use]
    pub fn flush_batch(&self) -> usize {
        self.flush_batch
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::InvalidConfig {
                reason: "capacity must be at least 1 page",
            });
        }
        if self.flush_batch == 0 {
            return Err(Error::InvalidConfig {
                reason: "flush batch must be at least 1 page",
            });
        }
        Ok(())
    }
}

/// A snapshot of the cache's counters, from [`PageCache::stats`](crate::PageCache::stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found the page resident (possibly still being read by another caller). A
    /// `get` of a page zero-filled by `get_for_overwrite` and not written yet counts here too,
    /// although it reads the backend into the page.
    pub hits: u64,
    /// Lookups that had to bring the page in: one backend read, or a zero fill for
    /// `get_for_overwrite`.
    pub misses: u64,
    /// Pages dropped from the cache to make room.
    pub evictions: u64,
    /// Dirty pages written to the backend by eviction.
    pub write_backs: u64,
    /// Write-backs by eviction that failed (the page stayed cached and dirty).
    pub failed_write_backs: u64,
    /// Pages written to the backend by `flush`.
    pub flushed: u64,
    /// Resident pages with at least one live `PageRef`.
    pub pinned: usize,
    /// Resident pages whose content is newer than the backend's.
    pub dirty: usize,
    /// Resident pages.
    pub cached: usize,
}
