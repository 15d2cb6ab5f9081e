//! A disk cache of immutable segments, with RAII slots, atomic persist and mmap pins.
//!
//! Segments are immutable blobs named by a 16-byte [`SegmentId`] and stored in one directory as
//! files named by the id's hex digits (`<32 hex>.seg`): nothing a caller passes ever becomes a
//! path. A [`SegmentCache`] keeps them within a byte budget:
//!
//! - **Write**: [`SegmentCache::reserve`] returns a [`Slot`], whose bytes count against the
//!   budget at once. Write into it ([`Slot::write_at`], from several threads if you like, or
//!   [`std::io::Write`]), then [`Slot::persist`] it: the data is synced, linked into place
//!   atomically (never replacing an existing segment), and the directory synced; only then is
//!   it readable. Dropping a slot instead leaves nothing behind.
//! - **Read**: [`SegmentCache::get`] pins a cached segment and returns a [`SegmentRef`]:
//!   `Deref<Target = [u8]>` straight over a shared read-only `mmap` of the file (one mapping per
//!   segment, shared by all its pins). While a pin lives the segment is neither evicted nor
//!   unmapped; dropping the last one makes it evictable again.
//! - **Handles**: one pool bounds open descriptors and live mappings together
//!   ([`CacheConfig::with_max_handles`]). Slots and mappings draw from it; idle mappings stay
//!   mapped until the pool needs room, then go least recently used first. Waiting for a handle
//!   is fair (FIFO) and cancellable.
//! - **Eviction**: when a reservation takes the cache above its high watermark, unpinned
//!   segments are evicted least recently used first, by bytes, down to the low watermark:
//!   unmapped, then unlinked. A mapped file is never truncated or rewritten.
//! - **Open**: [`SegmentCache::open`] creates the directory 0700 (segment files are 0600),
//!   refuses one owned by another user, probes the persist paths, deletes leftover temporary
//!   files, rejects torn or invalid segment files, reports entries it does not expect without
//!   touching them, loads the rest in LRU order and evicts down to the budget ([`ScanReport`]).
//!
//! No I/O happens inside the cache's critical sections: its lock guards bookkeeping only.
//!
//! ```
//! use segcache::{CacheConfig, SegmentCache, SegmentId};
//! use std::io::Write;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let config = CacheConfig::new(dir.path().join("segments")).with_max_bytes(1 << 20);
//! let (cache, report) = SegmentCache::open(config).await?;
//! assert_eq!(report.loaded, 0);
//!
//! // Write a segment: reserve, write, persist. It is readable only after `persist`.
//! let id = SegmentId::from_u128(1);
//! let mut slot = cache.reserve(id, 11).await?;
//! slot.write_all(b"hello world")?;
//! assert!(!cache.contains(id));
//! let pinned = slot.persist().await?;
//! assert_eq!(&pinned[..], b"hello world");
//!
//! // Read it: a pin on the same shared mapping, zero copy.
//! let again = cache.get(id).await?.expect("cached");
//! assert_eq!(&again[..5], b"hello");
//! assert_eq!(cache.stats().pinned, 1);
//! drop((pinned, again));
//!
//! // Segments are immutable: a second reservation of the same id is refused.
//! assert!(matches!(cache.reserve(id, 3).await, Err(segcache::Error::AlreadyPresent { .. })));
//!
//! // Reopening finds it again (after this cache is dropped: a directory has one cache).
//! drop(cache);
//! let config = CacheConfig::new(dir.path().join("segments"));
//! let (cache, report) = SegmentCache::open(config).await?;
//! assert_eq!(report.loaded, 1);
//! assert_eq!(&cache.get(id).await?.expect("cached")[..], b"hello world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! The cache needs a tokio runtime for its async methods (blocking work runs on tokio's
//! blocking pool).
//!
//! # Features
//! None. For the crate's own model test (`tests/shuttle_model.rs`), building with
//! `RUSTFLAGS="--cfg shuttle"` swaps the internal locks and atomics of the cache and the handle
//! pool for shuttle's: a cfg rather than a feature, so no crate in a user's dependency graph can
//! switch it on for everyone. Testing only.
//!
//! # `SegmentStore`
//!
//! [`SegmentStore`] puts the cache in front of an object store (any
//! `Arc<dyn object_store::ObjectStore>`: S3, or `InMemory` as an embedded default) through
//! objsync's `Uploader` and `Downloader`. Objects are named `<prefix>/<32 hex digits>`.
//!
//! - [`SegmentStore::put`] writes the cache slot while the upload runs and persists it only
//!   once the upload has succeeded: it returns when the segment is durable remotely and
//!   readable locally. A failed upload returns its error and leaves no local copy; an object
//!   already there with the same bytes (a lost acknowledgement) is success.
//! - [`SegmentStore::get`] pins a cached segment; on a miss, concurrent callers share one
//!   download (bounded, hedged, verified) into one slot, which is persisted and pinned.
//!
//! ```
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use object_store::memory::InMemory;
//! use segcache::{CacheConfig, SegmentId, SegmentStore, StoreConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
//! # rt.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let remote = Arc::new(InMemory::new());
//! let config = CacheConfig::new(dir.path().join("segments"));
//! let (store, _) =
//!     SegmentStore::open(config, remote.clone(), "segments", StoreConfig::default()).await?;
//! let id = SegmentId::from_u128(7);
//! store.put(id, Bytes::from_static(b"immutable")).await?;
//!
//! // Drop the local copy: the next get downloads it, the one after is a hit.
//! assert!(store.evict_local(id)?);
//! assert_eq!(&store.get(id).await?[..], b"immutable");
//! assert_eq!(&store.get(id).await?[..], b"immutable");
//! let stats = store.stats();
//! assert_eq!((stats.downloads, stats.hits), (1, 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # On disk
//!
//! A segment file is the data followed by a 40-byte footer: magic `PSSEG001`, the id, the data
//! length (u64 LE), the data's CRC32C and the footer's own CRC32C. The scan checks the footer
//! of every file (40 bytes read per file) and, with
//! [`CacheConfig::with_verify_data_on_scan`], the data; otherwise the data checksum is checked
//! on a segment's first mapping. Temporary files are `.tmp-<id hex>-<unique>`.
//!
//! # Persist paths
//!
//! [`PersistMode::Auto`] probes, at open, `O_TMPFILE` + `linkat(AT_EMPTY_PATH)`, then
//! `O_TMPFILE` + `linkat` through `/proc/self/fd`, then a named temporary file +
//! `renameat2(RENAME_NOREPLACE)` (or `link` + `unlink`), and uses the first that works. What
//! the probe found is in [`PersistProbe`].

pub use cache::{SegmentCache, SegmentRef, Slot};
pub use config::{CacheConfig, PersistMode, Stats};
pub use error::{Error, Result};
pub use format::{FOOTER_LEN, RejectReason};
pub use id::SegmentId;
pub use persist::{PersistProbe, ProbeResult};
pub use scan::{Rejected, ScanReport, Unexpected, UnexpectedKind};
pub use store::{SegmentStore, StoreConfig, StoreStats};

mod cache;
mod config;
mod error;
mod format;
mod id;
mod map;
mod persist;
mod pool;
mod scan;
mod store;
mod sync;

// The README's examples are doctests too, so the crates.io page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
