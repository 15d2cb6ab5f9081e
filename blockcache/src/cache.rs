//! The block cache: range checks, the live-range registry, and the page-level operations.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pagecache::{CacheConfig, CacheStats, PageCache, PageRef};
use pageio::PageIo;
use parking_lot::Mutex;

use crate::block::Block;
use crate::{Error, Result};

/// The largest end offset of a block with pages of `page_size`: the end of the last whole page
/// a backend can address (whose last byte has a file offset the OS accepts).
fn max_end(page_size: usize) -> u64 {
    (i64::MAX as u64 / page_size as u64) * page_size as u64
}

/// Byte ranges of any length and alignment over a [`PageCache`].
///
/// [`get`](Self::get) and [`get_for_write`](Self::get_for_write) return a [`Block`] that derefs
/// to the range's bytes:
/// - inside one page, the block *is* the page's memory: no copy, in either direction;
/// - across pages, the block has its own buffer, filled from the pages and copied back into them
///   when it is dropped after a change; every page it covers stays pinned while it lives.
///   A write block does not read the pages it covers whole: they start zeroed, like
///   [`PageCache::get_for_overwrite`].
///
/// Live blocks never overlap: asking for a range that overlaps a live block is
/// [`Error::Overlap`]. Disjoint blocks, even inside one page, may be used from different
/// threads at once.
///
/// [`flush`](Self::flush) takes `&mut self`, so no block can be live when it runs: every change
/// made through a block has been copied into its pages by then (the drop of a multi-page block
/// copies it back), and the borrow checker, rather than a runtime rule, guarantees that flush
/// never reads bytes a block is writing.
///
/// ```
/// use std::sync::Arc;
/// use blockcache::BlockCache;
/// use pagecache::CacheConfig;
/// use pageio::MemPageIo;
///
/// let mut cache = BlockCache::new(Arc::new(MemPageIo::new(4096)?), CacheConfig::default())?;
/// {
///     // Spans pages 0 and 1: its own buffer, copied back on drop.
///     let mut block = cache.get_for_write(4000, 200)?;
///     block.fill(0xAB);
/// }
/// {
///     // Inside page 0: a view straight into the page.
///     let block = cache.get(4000, 96)?;
///     assert!(block.iter().all(|&b| b == 0xAB));
/// }
/// cache.flush()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BlockCache {
    pages: PageCache,
    page_size: usize,
    /// The end of the data in bytes: the device's length at open, raised by write blocks past it.
    end: AtomicU64,
    /// Live blocks, start → end (exclusive). Guards nothing else; held for lookups only.
    live: Mutex<BTreeMap<u64, u64>>,
}

/// Whether a block is being read (its bytes start as the data's) or written whole.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    Read,
    Write,
}

impl BlockCache {
    /// A block cache over `io`, with a page cache configured by `config`.
    pub fn new(io: Arc<dyn PageIo>, config: CacheConfig) -> Result<Self> {
        Self::from_page_cache(PageCache::new(io, config)?)
    }

    /// A block cache over an existing page cache, which it takes over: all access to its pages
    /// must go through the block cache from now on.
    pub fn from_page_cache(pages: PageCache) -> Result<Self> {
        let page_size = pages.page_size();
        let num_pages = pages
            .io()
            .num_pages()
            .map_err(|source| Error::Device { source })?;
        Ok(Self {
            end: AtomicU64::new(num_pages.saturating_mul(page_size as u64)),
            page_size,
            pages,
            live: Mutex::new(BTreeMap::new()),
        })
    }

    /// The page size of the underlying cache.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The end of the data in bytes: reads must stay below it; writes may extend it.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Whether there is no data at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The page cache's counters.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        self.pages.stats()
    }

    /// The number of live blocks.
    #[must_use]
    pub fn live_blocks(&self) -> usize {
        self.live.lock().len()
    }

    /// A block holding bytes `offset..offset + len`, which must lie below [`len`](Self::len).
    /// Changes made through it are kept.
    pub fn get(&self, offset: u64, len: usize) -> Result<Block<'_>> {
        Block::new(self, offset, len, Access::Read)
    }

    /// A block for bytes `offset..offset + len`, which the caller will overwrite entirely. Pages
    /// it covers whole are not read from the backend and start zeroed (unless cached); partial
    /// pages at its edges are read, so the bytes around the block are kept. The range may reach
    /// past [`len`](Self::len), which grows to its end.
    pub fn get_for_write(&self, offset: u64, len: usize) -> Result<Block<'_>> {
        Block::new(self, offset, len, Access::Write)
    }

    /// Writes every changed page to the backend and syncs it (see [`PageCache::flush`]).
    /// No block is live while this runs (it borrows the cache mutably), so every change made
    /// through a block is in its pages and is written.
    pub fn flush(&mut self) -> Result<()> {
        Ok(self.pages.flush()?)
    }

    /// Cuts the data to `len` bytes: cached pages past the end are dropped (changes included),
    /// the bytes of the last page past `len` are zeroed, and the backend is truncated to whole
    /// pages. Durable after the next [`flush`](Self::flush).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        if len > max_end(self.page_size) {
            return Err(Error::OutOfRange {
                offset: len,
                len: 0,
            });
        }
        let ps = self.page_size as u64;
        let tail = (len % ps) as usize;
        // Every step that can fail comes before the first change: pin the last page, cut the
        // backend, and only then zero the last page's tail.
        let last = if tail == 0 {
            None
        } else {
            Some(self.pages.get(len / ps)?)
        };
        self.pages.truncate(len.div_ceil(ps))?;
        if let Some(page) = last {
            page.write()[tail..].fill(0);
        }
        self.end.store(len, Ordering::Release);
        Ok(())
    }

    /// Checks a range and registers it as live; the returned end is `offset + len`.
    pub(crate) fn claim(&self, offset: u64, len: usize, access: Access) -> Result<u64> {
        if len == 0 {
            return Err(Error::ZeroLength { offset });
        }
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= max_end(self.page_size))
            .ok_or(Error::OutOfRange { offset, len })?;
        if access == Access::Read && end > self.len() {
            return Err(Error::PastEnd {
                offset,
                len,
                end: self.len(),
            });
        }
        let mut live = self.live.lock();
        if let Some((&other_offset, &other_end)) = live.range(..end).next_back()
            && other_end > offset
        {
            return Err(Error::Overlap {
                offset,
                len,
                other_offset,
                other_end,
            });
        }
        live.insert(offset, end);
        Ok(end)
    }

    /// Forgets a live range (its block is gone).
    pub(crate) fn release(&self, offset: u64) {
        self.live.lock().remove(&offset);
    }

    /// Raises the end of the data to `end` if it is below.
    pub(crate) fn extend_to(&self, end: u64) {
        self.end.fetch_max(end, Ordering::AcqRel);
    }

    /// Pins page `no`: without reading it when `whole` is set (the caller overwrites it all).
    pub(crate) fn pin(&self, no: u64, whole: bool) -> Result<PageRef<'_>> {
        let page = if whole {
            self.pages.get_for_overwrite(no)?
        } else {
            self.pages.get(no)?
        };
        Ok(page)
    }

    #[cfg(test)]
    pub(crate) fn page_cache(&self) -> &PageCache {
        &self.pages
    }
}
