//! Moving immutable objects to and from object storage, over [`object_store`].
//!
//! - [`Uploader`]: bounded concurrency and bounded queued bytes (backpressure), one PUT up to a
//!   threshold and a parallel multipart upload above it, `PutMode::Create` with lost-ack
//!   recovery (an object already there with the same size and CRC32C is success, a different
//!   one is [`Error::Conflict`]), retries with exponential backoff and full jitter on
//!   transient errors, aborts of failed multipart uploads.
//! - [`Downloader`]: bounded concurrency, single-flight per key, hedged GETs (the delay a
//!   percentile of recent latencies, clamped, after a minimum of samples; one hedge per
//!   request, the loser cancelled, a budget on hedges), parallel range GETs for large objects,
//!   length and checksum verification.
//! - [`ObjectPageIo`]: a [`pageio::PageIo`] whose pages are objects under a prefix; safe to
//!   call from inside a tokio runtime.
//! - [`S3Config`]: an S3 (`MinIO`, s3s, …) store from explicit settings or the `AWS_*`
//!   environment, credentials redacted everywhere.
//! - [`Counters`] and `tracing` spans (`objsync.put`, `objsync.overwrite`, `objsync.get`,
//!   `objsync.page_io`) for what happened; no span or event carries a credential.
//!
//! Everything works on an `Arc<dyn ObjectStore>`: S3 from [`S3Config::build`], or
//! `object_store`'s `InMemory` and `LocalFileSystem` as embedded defaults.
//!
//! ```
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use object_store::memory::InMemory;
//! use object_store::path::Path;
//! use objsync::{Downloader, DownloaderConfig, PutOutcome, Uploader, UploaderConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), objsync::Error> {
//! let store = Arc::new(InMemory::new());
//! let uploader = Uploader::new(store.clone(), UploaderConfig::default())?;
//! let downloader = Downloader::new(store, DownloaderConfig::default())?;
//!
//! let path = Path::from("segments/0001");
//! let segment = Bytes::from_static(b"immutable bytes");
//! assert_eq!(uploader.put(&path, segment.clone()).await?, PutOutcome::Created);
//! // Uploading the same object again is not an error: it is already there.
//! assert_eq!(uploader.put(&path, segment.clone()).await?, PutOutcome::AlreadyPresent);
//! assert_eq!(downloader.get(&path).await?, segment);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//! - `faults`: `FaultyStore` (latency with a tail, injected errors, lost acknowledgements,
//!   damaged bodies, request counts), for fault-injection runs outside the test suite (e.g.
//!   a soak) without the test server's dependencies.
//! - `test-utils`: `faults`, `pageio`'s conformance suite, and the `testing` module (an
//!   in-process S3 server for integration tests).

pub use checksum::CHECKSUM_METADATA_KEY;
pub use download::{DownloadSink, Downloaded, Downloader, DownloaderConfig, SinkResult};
pub use error::{Error, Op, Result};
#[cfg(any(test, feature = "faults"))]
pub use faulty::{Fault, FaultConfig, FaultCounts, FaultOp, FaultyStore, InjectedFault};
pub use hedge::HedgeConfig;
pub use page_io::{ObjectPageIo, ObjectPageIoConfig};
pub use retry::RetryConfig;
pub use s3::S3Config;
pub use stats::Counters;
pub use upload::{MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, PutOutcome, Uploader, UploaderConfig};

#[cfg(feature = "test-utils")]
pub mod testing;

mod checksum;
mod download;
mod error;
#[cfg(any(test, feature = "faults"))]
mod faulty;
mod hedge;
mod page_io;
mod retry;
mod s3;
mod stats;
mod upload;

// The README's examples are doctests too, so the crates.io page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
