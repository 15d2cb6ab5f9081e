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
    /// Writing back dirty page `page` to make room failed, and no other page could be evicted
    /// instead. The page stays cached and dirty: nothing is lost, and a later eviction or flush
    /// tries again. (While other victims exist, a failing write-back is not an error of the
    /// miss: the page is passed over and the next flush reports the failure.)
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
    /// Every page the flush had not yet made durable stays dirty. After a failed write, flush
    /// again to retry; after a failed sync the cache is poisoned (see [`Error::PreviousIo`]).
    #[error("flush failed {}", match .page { Some(p) => format!("writing the batch at page {p}"), None => "syncing the backend".to_owned() })]
    Flush {
        /// The first page of the batch that failed, or `None` when the sync failed.
        page: Option<u64>,
        /// The backend's error (shared with [`Error::PreviousIo`] when the sync failed).
        #[source]
        source: Arc<pageio::Error>,
    },
    /// A sync failed earlier, so the cache refuses to touch the backend again: a failed sync may
    /// have lost writes (on Linux, `fsync` can drop the pages whose write-back failed and report
    /// it once), and nothing can tell which, so no later commit can be trusted. Pages already
    /// cached can still be read. Reopen the backend from its last good commit and build a new
    /// cache.
    #[error(
        "refused: an earlier sync failed and may have lost writes; reopen the backend from its \
         last commit"
    )]
    PreviousIo {
        /// The failed sync's error.
        #[source]
        source: Arc<pageio::Error>,
    },
}

impl Error {
    /// The backend error underneath, if this error came from the backend.
    #[must_use]
    pub fn backend(&self) -> Option<&pageio::Error> {
        match self {
            Error::Read { source, .. }
            | Error::Flush { source, .. }
            | Error::PreviousIo { source } => Some(source),
            Error::WriteBack { source, .. } | Error::Truncate { source, .. } => Some(source),
            Error::InvalidConfig { .. } | Error::Pinned { .. } => None,
        }
    }
}
