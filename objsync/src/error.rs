//! The error type of the crate, and which object-store errors are worth a retry.

use std::fmt;
use std::sync::Arc;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The store request an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// A single PUT of a whole object.
    Put,
    /// Starting a multipart upload.
    MultipartCreate,
    /// Uploading one part of a multipart upload.
    MultipartPart,
    /// Completing a multipart upload.
    MultipartComplete,
    /// A GET of a whole object (or of its first range, for a large one).
    Get,
    /// A ranged GET of part of a large object.
    GetRange,
    /// A HEAD (metadata only).
    Head,
    /// A LIST of a prefix.
    List,
    /// A DELETE.
    Delete,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Put => "PUT",
            Op::MultipartCreate => "multipart create",
            Op::MultipartPart => "multipart part PUT",
            Op::MultipartComplete => "multipart complete",
            Op::Get => "GET",
            Op::GetRange => "range GET",
            Op::Head => "HEAD",
            Op::List => "LIST",
            Op::Delete => "DELETE",
        })
    }
}

/// What can go wrong in this crate.
///
/// No variant ever carries a credential: configuration errors name the setting, not its value,
/// and store errors are `object_store`'s, which do not include the signing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The setting, e.g. `UploaderConfig::part_size`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable read by [`S3Config::from_env`](crate::S3Config::from_env) is
    /// missing or malformed. The value itself is never included.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable (or the alternatives) that was looked for.
        var: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `object_store` refused to build the S3 client.
    #[error("could not build the S3 store for bucket {bucket:?}")]
    Build {
        /// The bucket of the configuration.
        bucket: String,
        /// The builder's error.
        #[source]
        source: object_store::Error,
    },
    /// A string is not a valid object path (or prefix).
    #[error("invalid object path {path:?}")]
    InvalidPath {
        /// The string that was given.
        path: String,
        /// Why it was rejected.
        #[source]
        source: object_store::path::Error,
    },
    /// A store request failed, on its last attempt or with an error not worth a retry.
    #[error("{op} of {path} failed (attempt {attempt})")]
    Store {
        /// The request.
        op: Op,
        /// The object (or prefix).
        path: String,
        /// Which attempt failed, counting from 1.
        attempt: u32,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The object does not exist.
    #[error("object {path} not found")]
    NotFound {
        /// The object.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A create-once upload found the object already there with other contents.
    #[error(
        "object {path} already exists with other contents: {found_size} bytes, crc32c {}, \
         where {expected_size} bytes with crc32c {expected_crc32c:08x} were being written",
        fmt_crc(*.found_crc32c)
    )]
    Conflict {
        /// The object.
        path: String,
        /// The size of the upload.
        expected_size: u64,
        /// The CRC32C of the upload.
        expected_crc32c: u32,
        /// The size of the object found.
        found_size: u64,
        /// The CRC32C of the object found, when it was known or computed.
        found_crc32c: Option<u32>,
    },
    /// Downloaded data failed verification (length or checksum), or object metadata is
    /// malformed.
    #[error("object {path} is corrupt: {what}")]
    Corrupt {
        /// The object.
        path: String,
        /// What was wrong.
        what: String,
    },
    /// The object is larger than an upload can be split into parts for, or than this process
    /// can hold in memory.
    #[error("object {path} of {size} bytes is too large: {reason}")]
    TooLarge {
        /// The object.
        path: String,
        /// Its size.
        size: u64,
        /// The limit it broke.
        reason: &'static str,
    },
    /// A download shared by several callers (single-flight) failed; the original error is the
    /// source.
    #[error("the shared download of {path} failed")]
    Shared {
        /// The object.
        path: String,
        /// The error of the shared download.
        #[source]
        source: Arc<Error>,
    },
    /// The tokio runtime for blocking callers could not be started.
    #[error("could not start the objsync I/O runtime")]
    Runtime {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking call was made from the current-thread runtime that would have to run it.
    #[error(
        "{what} was called from a task of the current-thread runtime that must run its I/O: \
         this would deadlock; use a multi-thread runtime, or let ObjectPageIo own its runtime"
    )]
    WouldDeadlock {
        /// The call.
        what: &'static str,
    },
    /// The runtime stopped (or the task panicked) before a blocking call's I/O finished.
    #[error("{what} did not finish: the I/O runtime shut down or the task panicked")]
    Interrupted {
        /// The call.
        what: &'static str,
    },
    /// The uploader or downloader is shutting down.
    #[error("the {what} is shut down")]
    Shutdown {
        /// What was shut down.
        what: &'static str,
    },
    /// The sink of a streamed download ([`Downloader::get_into`](crate::Downloader::get_into))
    /// refused the object or its bytes (no room for it, a failed write). Not retried.
    #[error("the sink of the download of {path} failed")]
    Sink {
        /// The object.
        path: String,
        /// The sink's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

fn fmt_crc(crc: Option<u32>) -> impl fmt::Display {
    struct Crc(Option<u32>);
    impl fmt::Display for Crc {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.0 {
                Some(crc) => write!(f, "{crc:08x}"),
                None => f.write_str("unknown"),
            }
        }
    }
    Crc(crc)
}

impl Error {
    /// Whether the object was not found (also through a [`Error::Shared`] download).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Shared { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// The [`pageio::ErrorKind`] of this error when it reaches a page cache through
    /// [`ObjectPageIo`](crate::ObjectPageIo): what its caller should do about it.
    ///
    /// A transient store error arrives only after the retries are spent, so it means the store
    /// is unavailable (or timed out), not that one more try will do; a body that fails its
    /// checks is corrupt; a misuse (a bad path, configuration or runtime) is invalid input.
    #[must_use]
    pub fn page_io_kind(&self) -> pageio::ErrorKind {
        use pageio::ErrorKind as K;
        match self {
            Error::Store { source, .. } if is_timeout(source) => K::TimedOut,
            Error::Store { source, .. } if is_transient(source) => K::Unavailable,
            Error::Corrupt { .. } => K::Corrupt,
            Error::Shared { source, .. } => source.page_io_kind(),
            Error::InvalidConfig { .. }
            | Error::InvalidPath { .. }
            | Error::TooLarge { .. }
            | Error::WouldDeadlock { .. } => K::InvalidInput,
            Error::Runtime { .. } | Error::Interrupted { .. } | Error::Shutdown { .. } => {
                K::Unavailable
            }
            _ => K::Other,
        }
    }

    /// Whether trying again may succeed: a transient store error (a 5xx, a timeout, a dropped
    /// connection, an injected fault) or a download that failed verification (a truncated or
    /// damaged transfer). Not found, conflicts, bad configuration and 4xx errors are final.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store { source, .. } => is_transient(source),
            Error::Corrupt { .. } => true,
            Error::Shared { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// Whether an `object_store` error is a timeout of the HTTP client.
fn is_timeout(error: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = error else {
        return false;
    };
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            return http.kind() == object_store::client::HttpErrorKind::Timeout;
        }
        next = e.source();
    }
    false
}

/// Whether an `object_store` error is worth a retry.
///
/// The typed variants (not found, already exists, precondition, permission, bad path, not
/// supported) are final. Everything else arrives as `Generic`: a transport error (an
/// `HttpError` in the source chain: retried, whatever its kind, since a decoding error is
/// usually a cut-off body), an HTTP status (`object_store` does not export the type that carries
/// it, so it is read from the message: 4xx other than 408 and 429 are final, everything else is
/// retried), or an error from a wrapper such as `FaultyStore` (retried).
pub(crate) fn is_transient(error: &object_store::Error) -> bool {
    use object_store::Error as E;
    match error {
        E::Generic { source, .. } => generic_is_transient(source.as_ref()),
        E::JoinError { .. } => true,
        _ => false,
    }
}

fn generic_is_transient(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            // Connect, request, timeout, interrupted, decode (a cut-off body) or unknown: all
            // are failures of one exchange, not of the request itself.
            return true;
        }
        if let Some(status) = status_in_message(&e.to_string()) {
            return !(400..500).contains(&status) || status == 408 || status == 429;
        }
        next = e.source();
    }
    true
}

/// Finds the HTTP status in `object_store`'s "... status code: 503 Service Unavailable ..."
/// messages.
fn status_in_message(message: &str) -> Option<u16> {
    const MARKER: &str = "status code: ";
    let at = message.find(MARKER)? + MARKER.len();
    let digits = message.get(at..at + 3)?;
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: message.to_owned().into(),
        }
    }

    #[test]
    fn statuses_decide_generic_errors() {
        assert!(is_transient(&generic(
            "Server returned non-2xx status code: 503 Service Unavailable: slow down"
        )));
        assert!(is_transient(&generic(
            "Server returned non-2xx status code: 429 Too Many Requests"
        )));
        assert!(!is_transient(&generic(
            "Server returned non-2xx status code: 400 Bad Request: <Error>"
        )));
        assert!(!is_transient(&generic(
            "Server returned non-2xx status code: 403 Forbidden"
        )));
        assert!(is_transient(&generic("connection reset")));
        assert_eq!(status_in_message("status code: 5"), None);
        assert_eq!(status_in_message("status code: abc"), None);
    }

    #[test]
    fn typed_errors_are_final() {
        let not_found = object_store::Error::NotFound {
            path: "a".into(),
            source: "gone".into(),
        };
        assert!(!is_transient(&not_found));
        let exists = object_store::Error::AlreadyExists {
            path: "a".into(),
            source: "there".into(),
        };
        assert!(!is_transient(&exists));
    }

    #[test]
    fn conflict_message_names_both_sides() {
        let e = Error::Conflict {
            path: "seg/1".into(),
            expected_size: 10,
            expected_crc32c: 0xab,
            found_size: 11,
            found_crc32c: None,
        };
        let text = e.to_string();
        assert!(text.contains("11 bytes, crc32c unknown"), "{text}");
        assert!(text.contains("000000ab"), "{text}");
    }
}
