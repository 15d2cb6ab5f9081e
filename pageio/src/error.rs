//! The error type of every backend.

use std::{fmt, io};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation an error happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Opening or creating the backend.
    Open,
    /// [`PageIo::read_page`](crate::PageIo::read_page) or a batched read.
    Read,
    /// [`PageIo::write_page`](crate::PageIo::write_page) or a batched write.
    Write,
    /// [`PageIo::sync`](crate::PageIo::sync).
    Sync,
    /// [`PageIo::num_pages`](crate::PageIo::num_pages).
    NumPages,
    /// [`PageIo::truncate`](crate::PageIo::truncate).
    Truncate,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Sync => "sync",
            Op::NumPages => "num_pages",
            Op::Truncate => "truncate",
        })
    }
}

/// What can go wrong in a [`PageIo`](crate::PageIo) backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The page size is not a power of two from 512 B to 1 MiB.
    #[error("invalid page size {size}: must be a power of two from 512 B to 1 MiB")]
    InvalidPageSize {
        /// The size that was asked for.
        size: usize,
    },
    /// A buffer passed for one page is not exactly one page long.
    #[error("buffer for page {page} is {actual} bytes, but the page size is {expected}")]
    BufferSize {
        /// The page the buffer was for.
        page: u64,
        /// The page size.
        expected: usize,
        /// The buffer's length.
        actual: usize,
    },
    /// The page number is too large for this backend (its byte offset overflows).
    #[error("page {page} is out of range for this backend")]
    OutOfRange {
        /// The page asked for.
        page: u64,
    },
    /// An operating-system I/O error.
    #[error("{op}{} failed", at_page(*.page))]
    Io {
        /// The operation that failed.
        op: Op,
        /// The page, when the operation was on one page.
        page: Option<u64>,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An error from a backend that is not a local file (an object store, say).
    #[error("{op}{} failed in the backend", at_page(*.page))]
    Backend {
        /// The operation that failed.
        op: Op,
        /// The page, when the operation was on one page.
        page: Option<u64>,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The backend does not support this operation.
    #[error("{op} is not supported by this backend")]
    Unsupported {
        /// The unsupported operation.
        op: Op,
    },
    /// A fault injected on purpose by a test wrapper.
    #[error("injected fault: {op}{} failed", at_page(*.page))]
    Injected {
        /// The operation that was made to fail.
        op: Op,
        /// The page, when the operation was on one page.
        page: Option<u64>,
    },
    /// A test wrapper simulated a crash: the device refuses every operation until it restarts.
    #[error("simulated crash: {op} refused until the device restarts")]
    Crashed {
        /// The operation that was refused.
        op: Op,
    },
}

fn at_page(page: Option<u64>) -> impl fmt::Display {
    struct At(Option<u64>);
    impl fmt::Display for At {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.0 {
                Some(p) => write!(f, " of page {p}"),
                None => Ok(()),
            }
        }
    }
    At(page)
}

impl Error {
    /// Wraps an OS error from operation `op` (on `page`, if any).
    #[must_use]
    pub fn io(op: Op, page: Option<u64>, source: io::Error) -> Self {
        Error::Io { op, page, source }
    }

    /// Wraps an error from a custom backend, keeping it as the `source`.
    #[must_use]
    pub fn backend(
        op: Op,
        page: Option<u64>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            op,
            page,
            source: source.into(),
        }
    }
}
