//! The cache's error type.

use std::sync::Arc;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the page cache. Backend errors are kept as the `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`CacheConfig`](crate::CacheConfig) value is unusable.
    #[error("invalid cache configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading page `page` from the backend failed. Every caller that was waiting for the same
    /// read gets this error (hence the shared source); the page is not left in the cache, so the
    /// next `get` tries again.
    #[error("reading page {page} from the backend failed")]
    Read {
        /// The page being read.
        page: u64,
        /// The backend's error.
        #[source]
        source: Arc<pageio::Error>,
    },
    /// Writing back dirty page `page` to make room failed. The page stays cached and dirty:
    /// nothing is lost, and a later eviction or flush tries again.
    #[error("writing back dirty page {page} to make room failed; it stays cached and dirty")]
    WriteBack {
        /// The page being written back.
        page: u64,
        /// The backend's error.
        #[source]
        source: pageio::Error,
    },
    /// [`PageCache::truncate`](crate::PageCache::truncate) would drop a page that is pinned.
    #[error("cannot truncate: page {page} past the new end is pinned")]
    Pinned {
        /// The pinned page.
        page: u64,
    },
    /// The backend could not be truncated.
    #[error("truncating the backend to {num_pages} pages failed")]
    Truncate {
        /// The size asked for, in pages.
        num_pages: u64,
        /// The backend's error.
        #[source]
        source: pageio::Error,
    },
    /// A flush failed: a batch write starting at `page`, or the final sync (`page` is `None`).
    /// Every page the flush had not yet made durable stays dirty; flush again to retry.
    #[error("flush failed {}", match .page { Some(p) => format!("writing the batch at page {p}"), None => "syncing the backend".to_owned() })]
    Flush {
        /// The first page of the batch that failed, or `None` when the sync failed.
        page: Option<u64>,
        /// The backend's error.
        #[source]
        source: pageio::Error,
    },
}
