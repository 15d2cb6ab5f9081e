//! Arbitrary byte ranges over a page cache.
//!
//! [`BlockCache`] sits on a [`pagecache::PageCache`] and hands out [`Block`]s: byte ranges of any
//! offset and length that deref to `[u8]`.
//! - A range inside one page is a view straight into the cached page: no copy.
//! - A range across pages gets its own buffer and pins every page it covers; when it was
//!   changed, dropping it copies it back into the pages.
//! - [`BlockCache::get_for_write`] skips the backend read of every page the range covers whole.
//! - Live blocks never overlap: an overlapping request is [`Error::Overlap`], never corruption.
//!
//! ```
//! use std::sync::Arc;
//! use blockcache::BlockCache;
//! use pagecache::CacheConfig;
//! use pageio::MemPageIo;
//!
//! let mut cache = BlockCache::new(Arc::new(MemPageIo::new(512)?), CacheConfig::default())?;
//! cache.get_for_write(100, 2000)?.copy_from_slice(&[7u8; 2000]); // 5 pages, 2 read
//! let header = cache.get(0, 64)?;                                 // zero copy
//! assert!(cache.get(50, 100).is_err());                          // overlaps `header`
//! drop(header);
//! assert_eq!(cache.get(2099, 1)?[0], 7);
//! cache.flush()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use block::Block;
pub use cache::BlockCache;
pub use error::{Error, Result};

mod block;
mod cache;
mod error;

// The README's examples are doctests too, so the crates.io page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pagecache::CacheConfig;
    use pageio::MemPageIo;

    use super::*;

    fn cache() -> BlockCache {
        BlockCache::new(
            Arc::new(MemPageIo::new(512).unwrap()),
            CacheConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn single_page_block_is_the_page_memory() {
        let cache = cache();
        let mut block = cache.get_for_write(512 + 100, 64).unwrap();
        assert!(block.is_zero_copy());
        block.fill(9);
        let page = cache.page_cache().get(1).unwrap();
        // The block's bytes are the page's bytes, at the block's offset in the page.
        assert_eq!(block.as_ptr(), page.as_ptr().wrapping_add(100).cast_const());
        // Seen through the page's own guard while the block is still live: nothing to copy.
        drop(block);
        assert!(page.read()[100..164].iter().all(|&b| b == 9));
        assert!(page.is_dirty());
    }

    #[test]
    fn multi_page_block_copies_back_on_drop() {
        let cache = cache();
        let mut block = cache.get_for_write(500, 600).unwrap();
        assert!(!block.is_zero_copy());
        block.fill(3);
        let page = cache.page_cache().get(1).unwrap();
        drop(block);
        assert!(page.read().iter().all(|&b| b == 3));
        assert!(page.is_dirty());
    }
}
