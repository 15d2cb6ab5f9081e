//! An allocator for the body of a file, with stable block ids and atomic commits.
//!
//! [`FileBlock`] sits on a [`blockcache::BlockCache`] (over a [`pagecache::PageCache`] over any
//! [`pageio::PageIo`]) and divides the file's body into blocks named by a [`BlockId`] that stays
//! the same when a block moves and across reopens. Block bytes are read and written through
//! [`Block`]s: zero copy when a block lies inside one page.
//!
//! - **Allocation**: [`alloc`](FileBlock::alloc), [`alloc_with_id`](FileBlock::alloc_with_id),
//!   [`realloc`](FileBlock::realloc) (in place when it can, else moves and copies) and
//!   [`free`](FileBlock::free) are fronts of one core function that searches size-class
//!   buckets of free extents ([`BucketConfig`]) and otherwise grows the body. Free neighbours
//!   coalesce.
//! - **Commit**: [`flush`](FileBlock::flush) writes a new extent map to free space, syncs,
//!   then writes the other one of two superblocks (generation + 1, CRC32C) and syncs. A crash
//!   at any point reopens to the last commit; space freed since then is not reused until the
//!   commit that frees it is durable.
//! - **Roots**: a table of 16 named block ids, committed with the map
//!   ([`set_root`](FileBlock::set_root)).
//! - **Compaction**: [`compact`](FileBlock::compact) moves blocks from the end into holes,
//!   keeping their ids, and truncates the file; it can be bounded by bytes or time.
//! - **Checks**: [`stats`](FileBlock::stats), and [`validate`](FileBlock::validate), which
//!   checks every invariant and returns [`Problem`]s with their location. Bytes read from the
//!   file are untrusted: damage is an [`Error::Corrupt`] naming where, never a panic. The
//!   decoders are public in [`format`](mod@format), which also documents the on-disk layout.
//!
//! ```
//! use std::sync::Arc;
//! use fileblock::{Config, FileBlock};
//! use pageio::MemPageIo;
//!
//! let io = Arc::new(MemPageIo::new(4096)?);
//! let mut file = FileBlock::create(io.clone(), Config::default())?;
//! let id = file.alloc(1000)?; // rounded up to two 512-byte allocation units
//! file.write(id)?[..5].copy_from_slice(b"hello");
//! file.set_root("main", Some(id))?;
//! file.flush()?; // the atomic commit
//! drop(file);
//!
//! let file = FileBlock::open(io, Config::default())?;
//! let id = file.root("main").unwrap();
//! assert_eq!(&file.read(id)?[..5], b"hello");
//! assert_eq!(file.size(id)?, 1024);
//! assert!(file.validate().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! - `cli`: the `fileblock` binary: `stat`, `check`, `dump` and `compact` of a file. It
//!   finds the page size from the superblock (or takes `--page-size`).

use std::fmt;

pub use blockcache::Block;
pub use config::{BucketConfig, CompactLimit, Config};
pub use error::{Error, Location, Problem, Result};
pub use file::{CompactReport, ExtentInfo, ExtentKind, FileBlock, Shrink, Stats};

mod alloc;
mod config;
mod error;
mod file;
pub mod format;
mod ids;

// The README's examples are doctests too, so the crates.io page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The name of a block: stable while the block lives, across moves and reopens.
///
/// Ids are handed out by [`FileBlock::alloc`] or chosen with [`FileBlock::alloc_with_id`]. Id 0
/// and [`format::MAP_ID`] are reserved. A freed block's id may be handed out again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests;
