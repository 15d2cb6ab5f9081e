//! The block cache's error type.

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the block cache. Page-cache errors are kept as the `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A block of zero bytes was asked for.
    #[error("zero-length block at offset {offset}")]
    ZeroLength {
        /// The offset asked for.
        offset: u64,
    },
    /// The range's end overflows, or lies past the largest offset a backend can address.
    #[error("block at offset {offset} of {len} bytes is out of the addressable range")]
    OutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: usize,
    },
    /// A read block reaches past the end of the data (the device's length, or the end of the
    /// furthest block written since).
    #[error("block at offset {offset} of {len} bytes reaches past the end ({end})")]
    PastEnd {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: usize,
        /// The current end of the data, in bytes.
        end: u64,
    },
    /// The range overlaps a block that is still live.
    #[error(
        "block at offset {offset} of {len} bytes overlaps the live block \
         {other_offset}..{other_end}"
    )]
    Overlap {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: usize,
        /// Start of the live block it overlaps.
        other_offset: u64,
        /// End (exclusive) of the live block it overlaps.
        other_end: u64,
    },
    /// Asking the backend for its length failed.
    #[error("reading the device's length failed")]
    Device {
        /// The backend's error.
        #[source]
        source: pageio::Error,
    },
    /// The page cache failed (a backend read, write-back, flush or truncate, or a refusal after
    /// a failed sync); its message is this error's.
    #[error(transparent)]
    Cache(#[from] pagecache::Error),
}

impl Error {
    /// The backend error underneath, if this error came from the backend (directly or through
    /// the page cache), without walking the `source` chain.
    #[must_use]
    pub fn backend(&self) -> Option<&pageio::Error> {
        match self {
            Error::Device { source } => Some(source),
            Error::Cache(e) => e.backend(),
            Error::ZeroLength { .. }
            | Error::OutOfRange { .. }
            | Error::PastEnd { .. }
            | Error::Overlap { .. } => None,
        }
    }
}
