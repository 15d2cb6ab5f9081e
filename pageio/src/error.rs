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
        /// What the caller can do about it, as the backend judged ([`ErrorKind::Other`] when it
        /// did not say).
        kind: ErrorKind,
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

    /// Wraps an error from a custom backend, keeping it as the `source`. Its
    /// [`kind`](Self::kind) is [`ErrorKind::Other`]; a backend that knows better (a timeout, a
    /// connection refused, a checksum mismatch) uses [`backend_with_kind`](Self::backend_with_kind).
    #[must_use]
    pub fn backend(
        op: Op,
        page: Option<u64>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::backend_with_kind(op, page, ErrorKind::Other, source)
    }

    /// Wraps an error from a custom backend, keeping it as the `source`, with the
    /// [`ErrorKind`] the backend chose, which [`kind`](Self::kind) returns.
    #[must_use]
    pub fn backend_with_kind(
        op: Op,
        page: Option<u64>,
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            op,
            page,
            kind,
            source: source.into(),
        }
    }

    /// What the caller can do about this error; see [`ErrorKind`] for what each kind asks of
    /// it.
    ///
    /// An [`Io`](Error::Io) error's kind follows the OS error's [`io::ErrorKind`]; a
    /// [`Backend`](Error::Backend) error has the kind its backend gave it; the argument errors
    /// ([`InvalidPageSize`](Error::InvalidPageSize), [`BufferSize`](Error::BufferSize),
    /// [`OutOfRange`](Error::OutOfRange)) are [`ErrorKind::InvalidInput`]; an
    /// [`Injected`](Error::Injected) fault is [`ErrorKind::Transient`] (the next call may
    /// succeed) and a simulated [`Crashed`](Error::Crashed) device is
    /// [`ErrorKind::Unavailable`] (nothing succeeds until it restarts).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidPageSize { .. } | Error::BufferSize { .. } | Error::OutOfRange { .. } => {
                ErrorKind::InvalidInput
            }
            Error::Io { source, .. } => ErrorKind::from_io(source.kind()),
            Error::Backend { kind, .. } => *kind,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Injected { .. } => ErrorKind::Transient,
            Error::Crashed { .. } => ErrorKind::Unavailable,
        }
    }

    /// The operation that failed, when the error names one. The argument errors
    /// ([`InvalidPageSize`](Error::InvalidPageSize), [`BufferSize`](Error::BufferSize),
    /// [`OutOfRange`](Error::OutOfRange)) are found before any operation starts and name none.
    #[must_use]
    pub fn op(&self) -> Option<Op> {
        match self {
            Error::Io { op, .. }
            | Error::Backend { op, .. }
            | Error::Unsupported { op }
            | Error::Injected { op, .. }
            | Error::Crashed { op } => Some(*op),
            Error::InvalidPageSize { .. } | Error::BufferSize { .. } | Error::OutOfRange { .. } => {
                None
            }
        }
    }

    /// The page the error is about, when it is about one. For an
    /// [`OutOfRange`](Error::OutOfRange) from [`byte_len`](crate::byte_len) (a truncate), this
    /// is the page count that was refused.
    #[must_use]
    pub fn page(&self) -> Option<u64> {
        match self {
            Error::BufferSize { page, .. } | Error::OutOfRange { page } => Some(*page),
            Error::Io { page, .. } | Error::Backend { page, .. } | Error::Injected { page, .. } => {
                *page
            }
            Error::InvalidPageSize { .. } | Error::Unsupported { .. } | Error::Crashed { .. } => {
                None
            }
        }
    }
}

/// What a caller can do about an [`Error`], from [`Error::kind`].
///
/// The kinds sort errors by the action they call for, not by where they came from: a timeout
/// from an object store and one from a network file system are both [`TimedOut`](Self::TimedOut).
/// New kinds may be added; treat an unknown one as [`Other`](Self::Other).
///
/// Whatever the kind, a failed [`sync`](crate::PageIo::sync) leaves unknown which writes are
/// durable (on Linux a failed `fsync` may already have dropped the dirty pages), so a failed
/// sync is never simply retried: stop committing and reopen, then check what is on the device.
/// A failed write may have written any prefix of its page; writing the whole page again is
/// always safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A passing condition (an interrupted call, a busy resource, an injected fault): the same
    /// call may succeed if made again. Retry it, a bounded number of times with a backoff.
    Transient,
    /// The operation did not finish in time, so its effect is unknown: a write may or may not
    /// have landed. Retrying (with a backoff) is safe, since a page write is idempotent; if
    /// timeouts persist, treat the backend as [`Unavailable`](Self::Unavailable).
    TimedOut,
    /// The backend cannot be reached or has stopped (connection refused or reset, network down,
    /// a stale handle, a simulated crash). Retrying at once will fail the same way: wait and
    /// reopen the backend, or fail over to another.
    Unavailable,
    /// The bytes or the state read are wrong (a checksum mismatch, a short object, a record
    /// that does not decode). Retrying reads the same bytes: do not retry; report it, and
    /// restore the data from a good copy (for a cache, fetch it again from the source of
    /// truth).
    Corrupt,
    /// The call itself is wrong (a buffer of the wrong length, a bad page size, a page out of
    /// range, a path that is not a regular file): a bug in the caller. Retrying fails the same
    /// way: fix the call.
    InvalidInput,
    /// The backend cannot do this operation at all (e.g. [`truncate`](crate::PageIo::truncate)).
    /// Do not retry; do without it or use another backend.
    Unsupported,
    /// Anything else (permission denied, no space, a missing file, an I/O error of the
    /// device). Not expected to go away by itself: give up on the call and report it.
    Other,
}

impl ErrorKind {
    /// The kind for an OS error of kind `kind`.
    #[must_use]
    pub fn from_io(kind: io::ErrorKind) -> Self {
        use io::ErrorKind as Io;
        match kind {
            Io::TimedOut => ErrorKind::TimedOut,
            Io::Interrupted | Io::WouldBlock | Io::ResourceBusy | Io::Deadlock => {
                ErrorKind::Transient
            }
            Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected
            | Io::BrokenPipe
            | Io::AddrNotAvailable
            | Io::NetworkDown
            | Io::NetworkUnreachable
            | Io::HostUnreachable
            | Io::StaleNetworkFileHandle => ErrorKind::Unavailable,
            Io::InvalidData | Io::UnexpectedEof => ErrorKind::Corrupt,
            Io::InvalidInput | Io::InvalidFilename => ErrorKind::InvalidInput,
            Io::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Other,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "transient",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Other => "other",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    fn os(errno: Errno) -> Error {
        Error::io(Op::Read, Some(4), errno.into())
    }

    #[test]
    fn os_errors_get_the_kind_their_remedy_needs() {
        for (errno, want) in [
            (Errno::TIMEDOUT, ErrorKind::TimedOut),
            (Errno::INTR, ErrorKind::Transient),
            (Errno::AGAIN, ErrorKind::Transient),
            (Errno::BUSY, ErrorKind::Transient),
            (Errno::CONNREFUSED, ErrorKind::Unavailable),
            (Errno::CONNRESET, ErrorKind::Unavailable),
            (Errno::PIPE, ErrorKind::Unavailable),
            (Errno::NETDOWN, ErrorKind::Unavailable),
            (Errno::HOSTUNREACH, ErrorKind::Unavailable),
            (Errno::STALE, ErrorKind::Unavailable),
            (Errno::INVAL, ErrorKind::InvalidInput),
            (Errno::NOSYS, ErrorKind::Unsupported),
            (Errno::IO, ErrorKind::Other),
            (Errno::NOSPC, ErrorKind::Other),
            (Errno::NOENT, ErrorKind::Other),
            (Errno::ACCESS, ErrorKind::Other),
        ] {
            assert_eq!(os(errno).kind(), want, "{errno:?}");
        }
        for (kind, want) in [
            (io::ErrorKind::InvalidData, ErrorKind::Corrupt),
            (io::ErrorKind::UnexpectedEof, ErrorKind::Corrupt),
            (io::ErrorKind::WriteZero, ErrorKind::Other),
            (io::ErrorKind::Other, ErrorKind::Other),
        ] {
            let error = Error::io(Op::Write, None, io::Error::new(kind, "test"));
            assert_eq!(error.kind(), want, "{kind:?}");
        }
    }

    #[test]
    fn every_variant_has_its_kind_op_and_page() {
        let bad_buffer = Error::BufferSize {
            page: 3,
            expected: 512,
            actual: 7,
        };
        for (error, kind, op, page) in [
            (
                Error::InvalidPageSize { size: 3 },
                ErrorKind::InvalidInput,
                None,
                None,
            ),
            (bad_buffer, ErrorKind::InvalidInput, None, Some(3)),
            (
                Error::OutOfRange { page: u64::MAX },
                ErrorKind::InvalidInput,
                None,
                Some(u64::MAX),
            ),
            (
                os(Errno::TIMEDOUT),
                ErrorKind::TimedOut,
                Some(Op::Read),
                Some(4),
            ),
            (
                Error::backend(Op::Sync, None, "lost"),
                ErrorKind::Other,
                Some(Op::Sync),
                None,
            ),
            (
                Error::Unsupported { op: Op::Truncate },
                ErrorKind::Unsupported,
                Some(Op::Truncate),
                None,
            ),
            (
                Error::Injected {
                    op: Op::Write,
                    page: Some(9),
                },
                ErrorKind::Transient,
                Some(Op::Write),
                Some(9),
            ),
            (
                Error::Crashed { op: Op::NumPages },
                ErrorKind::Unavailable,
                Some(Op::NumPages),
                None,
            ),
        ] {
            assert_eq!(
                (error.kind(), error.op(), error.page()),
                (kind, op, page),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_backend_error_keeps_the_kind_it_was_given_and_its_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("checksum mismatch")]
        struct Mismatch;

        let error = Error::backend_with_kind(Op::Read, Some(2), ErrorKind::Corrupt, Mismatch);
        assert_eq!(error.kind(), ErrorKind::Corrupt);
        assert_eq!((error.op(), error.page()), (Some(Op::Read), Some(2)));
        let source = std::error::Error::source(&error).expect("the backend's error is the source");
        assert!(source.downcast_ref::<Mismatch>().is_some());
        assert_eq!(error.to_string(), "read of page 2 failed in the backend");

        // Without a kind, even an OS error inside is Other: the backend did not vouch for it.
        let plain = Error::backend(Op::Write, Some(2), io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(plain.kind(), ErrorKind::Other);
    }

    #[test]
    fn kinds_display_as_words() {
        assert_eq!(ErrorKind::TimedOut.to_string(), "timed out");
        assert_eq!(ErrorKind::InvalidInput.to_string(), "invalid input");
    }
}
