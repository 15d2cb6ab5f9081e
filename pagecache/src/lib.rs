//! A thread-safe, true-LRU page cache over any [`pageio::PageIo`] backend.
//!
//! [`PageCache`] keeps recently used pages of a backend in memory. Callers pin a page with
//! [`PageCache::get`] and get a [`PageRef`]: while it lives, the page cannot be evicted. Its
//! bytes are reached through [`PageRef::read`] and [`PageRef::write`] guards; taking a write
//! guard marks the page dirty, so a change is never forgotten. When more than `capacity`
//! unpinned pages are resident, a miss evicts the least recently used unpinned page, writing it
//! back first if it is dirty. [`PageCache::flush`] writes all dirty pages in page order and syncs
//! the backend: it is the commit point.
//!
//! ```
//! use std::sync::Arc;
//! use pagecache::{CacheConfig, PageCache};
//! use pageio::MemPageIo;
//!
//! let io = Arc::new(MemPageIo::new(4096)?);
//! let cache = PageCache::new(io, CacheConfig::default().with_capacity(128))?;
//!
//! // A page we will overwrite entirely: no read from the backend.
//! let header = cache.get_for_overwrite(0)?;
//! header.write()[..4].copy_from_slice(b"PSv1");
//!
//! // Any number of pins of one page, from any thread.
//! let a = cache.get(0)?;
//! let b = a.clone();
//! assert_eq!(&b.read()[..4], b"PSv1");
//! drop((header, a, b));
//!
//! cache.flush()?;
//! let stats = cache.stats();
//! assert_eq!((stats.hits, stats.misses, stats.dirty), (1, 1, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Guarantees:
//! - No backend I/O happens under the cache's lock; concurrent misses on one page cause exactly
//!   one backend read.
//! - A failed write-back or flush write loses nothing: the pages stay cached and dirty, and the
//!   next flush retries and reports the error.
//! - A failed sync poisons the cache: every later flush, miss, write-back and truncate returns
//!   [`Error::PreviousIo`], because the sync may have lost writes nobody can name (see
//!   [`PageCache::flush`]). Reopen the backend from its last commit.
//! - Dropping the cache writes nothing: unflushed changes are discarded.
//!
//! # Features
//! None. For the crate's own model test (`tests/shuttle_model.rs`), building with
//! `RUSTFLAGS="--cfg shuttle"` swaps the internal locks for shuttle's: a cfg rather than a feature,
//! so no crate in a user's dependency graph can switch it on for everyone. Testing only.

pub use cache::{PageCache, PageReadGuard, PageRef, PageWriteGuard};
pub use config::{CacheConfig, CacheStats};
pub use error::{Error, Result};

mod cache;
mod config;
mod error;
mod lru;
mod sync;

// The README's examples are doctests too, so the crates.io page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
