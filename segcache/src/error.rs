//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{PersistMode, SegmentId};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the segment cache. Operating-system errors are kept as the `source`,
/// with the operation and the path they concern.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`CacheConfig`](crate::CacheConfig) value is unusable.
    #[error("invalid cache configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// A string is not a segment id (32 hex digits).
    #[error("invalid segment id: {reason}")]
    InvalidId {
        /// What is wrong.
        reason: &'static str,
    },
    /// A system call on the cache directory or one of its files failed.
    #[error("{op} failed on {}", path.display())]
    Io {
        /// What the cache was doing.
        op: &'static str,
        /// The directory or file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The cache directory is owned by another user: its entries could be swapped under us, so
    /// the cache refuses to use it.
    #[error(
        "cache directory {} is owned by uid {owner}, not by this process (euid {euid}); not trusted",
        path.display()
    )]
    UntrustedDir {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        euid: u32,
    },
    /// Another [`SegmentCache`](crate::SegmentCache), in this process or another, has the
    /// directory open (the cache holds an exclusive `flock` on it while open).
    #[error("cache directory {} is in use by another SegmentCache", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The persist path asked for with [`PersistMode`] does not work on this filesystem or
    /// kernel, as probed at open (see [`PersistProbe`](crate::PersistProbe)).
    #[error("persist mode {mode:?} is not supported here")]
    PersistUnsupported {
        /// The mode asked for.
        mode: PersistMode,
        /// What the probe got.
        #[source]
        source: io::Error,
    },
    /// The segment is already cached: [`reserve`](crate::SegmentCache::reserve) refuses to
    /// write it again (segments are immutable); [`get`](crate::SegmentCache::get) it instead.
    #[error("segment {id} is already cached")]
    AlreadyPresent {
        /// The segment.
        id: SegmentId,
    },
    /// The segment can never fit: its file (data plus footer) is larger than the whole budget,
    /// or than this platform can map.
    #[error("segment {id} of {len} bytes does not fit in a cache of {budget} bytes")]
    TooLarge {
        /// The segment.
        id: SegmentId,
        /// Its data length.
        len: u64,
        /// The cache's byte budget.
        budget: u64,
    },
    /// A write to a [`Slot`](crate::Slot) reaches past the length reserved for it.
    #[error("write of {len} bytes at offset {offset} is outside segment {id} of {size} bytes")]
    OutOfBounds {
        /// The segment.
        id: SegmentId,
        /// Where the write starts.
        offset: u64,
        /// How many bytes it writes.
        len: usize,
        /// The reserved length.
        size: u64,
    },
    /// [`Slot::persist`](crate::Slot::persist) was called before every byte of the segment had
    /// been written. The slot is dropped: nothing is left behind.
    #[error("segment {id} is incomplete: {written} of {len} bytes written")]
    Incomplete {
        /// The segment.
        id: SegmentId,
        /// Bytes covered by writes so far.
        written: u64,
        /// The reserved length.
        len: u64,
    },
    /// [`SegmentCache::remove`](crate::SegmentCache::remove) found the segment pinned (or being
    /// mapped); it is left in place.
    #[error("segment {id} is pinned")]
    Pinned {
        /// The segment.
        id: SegmentId,
    },
    /// A segment file's content does not match its footer (length, magic, checksum). The file
    /// has been deleted and the segment dropped from the cache.
    #[error("segment {id} is corrupt: {what}")]
    Corrupt {
        /// The segment.
        id: SegmentId,
        /// What does not match.
        what: &'static str,
    },
    /// A file the cache did not write holds the segment's name (found when persisting or
    /// mapping), and it is not a valid segment of ours: another owner, loose permissions, extra
    /// hard links, or a bad footer. It is left untouched; the segment is not cached.
    #[error("a file the cache does not trust holds segment {id}'s name: {what}")]
    Conflict {
        /// The segment.
        id: SegmentId,
        /// What is wrong with the file.
        what: &'static str,
    },
    /// The object-name prefix given to [`SegmentStore::open`](crate::SegmentStore::open) is not
    /// a valid object path.
    #[error("invalid object prefix {prefix:?}")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// Why it was rejected.
        #[source]
        source: Box<object_store::path::Error>,
    },
    /// The uploader or downloader of a [`SegmentStore`](crate::SegmentStore) refused its
    /// configuration.
    #[error("invalid segment store configuration")]
    StoreConfig {
        /// objsync's error.
        #[source]
        source: Box<objsync::Error>,
    },
    /// Uploading a segment failed (after objsync's retries). Nothing was cached locally.
    #[error("uploading segment {id} to {path} failed")]
    Upload {
        /// The segment.
        id: SegmentId,
        /// Its object name.
        path: String,
        /// objsync's error.
        #[source]
        source: Box<objsync::Error>,
    },
    /// Downloading a segment failed (after objsync's retries).
    #[error("downloading segment {id} from {path} failed")]
    Download {
        /// The segment.
        id: SegmentId,
        /// Its object name.
        path: String,
        /// objsync's error.
        #[source]
        source: Box<objsync::Error>,
    },
    /// The segment is neither cached nor in the object store.
    #[error("segment {id} not found: not cached, and no object {path}")]
    NotFound {
        /// The segment.
        id: SegmentId,
        /// The object name that was looked for.
        path: String,
    },
    /// A download shared by several concurrent `get`s of one segment (single-flight) failed;
    /// the shared error is the source.
    #[error("the shared fetch of segment {id} failed")]
    Shared {
        /// The segment.
        id: SegmentId,
        /// The error of the shared fetch.
        #[source]
        source: Arc<Error>,
    },
    /// A blocking task of the cache panicked or was cancelled by a runtime shutdown.
    #[error("a background task of the segment cache failed")]
    Task {
        /// The task's failure.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// Whether the segment was not found (also through a [`Error::Shared`] fetch).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Shared { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
