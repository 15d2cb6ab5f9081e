//! The uploader: bounded, retrying, create-once PUTs and parallel multipart uploads.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, GetOptions, MultipartUpload, ObjectStore, PutMode, PutMultipartOptions, PutOptions,
    PutPayload,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::Instrument;

use crate::retry::{Rng, with_retries};
use crate::stats::{Gate, Stats};
use crate::{Counters, Error, Op, Result, RetryConfig, checksum};

/// The smallest part S3 accepts for any part of a multipart upload but the last: 5 MiB.
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The largest part S3 accepts: 5 GiB.
pub const MAX_PART_SIZE: usize = 5 << 30;
/// The most parts one multipart upload may have (S3's limit).
pub const MAX_PARTS: usize = 10_000;

/// Settings of an [`Uploader`].
///
/// Memory is bounded by `max_queued_bytes` (the bytes of all `put` calls admitted and not yet
/// finished) and store requests by `max_concurrency` (every PUT, part, HEAD, complete and abort
/// takes a slot for its duration).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploaderConfig {
    /// Store requests in flight at most, across all uploads. Default 16.
    pub max_concurrency: usize,
    /// Bytes of admitted uploads (waiting for a request slot or in flight) at most; a `put`
    /// waits until its object fits. An object larger than this waits until it can run alone.
    /// From 1 to `u32::MAX`. Default 256 MiB.
    pub max_queued_bytes: usize,
    /// Objects larger than this go up as multipart uploads; others as one PUT. Default 16 MiB.
    pub multipart_threshold: u64,
    /// The size of every part but the last. From `min_part_size` to [`MAX_PART_SIZE`].
    /// Default 8 MiB.
    pub part_size: usize,
    /// The floor `part_size` is checked against: [`MIN_PART_SIZE`] (S3's rule) by default.
    /// Lower it only for stores without that rule, such as `InMemory` or `LocalFileSystem`
    /// (tests do, to exercise multipart uploads with small objects); [`Uploader::new`] refuses
    /// a lower floor for an S3 store.
    pub min_part_size: usize,
    /// Parts of one multipart upload in flight at most (each also takes a request slot).
    /// Default 4.
    pub part_concurrency: usize,
    /// Retries of transient failures.
    pub retry: RetryConfig,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 16,
            max_queued_bytes: 256 << 20,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            min_part_size: MIN_PART_SIZE,
            part_concurrency: 4,
            retry: RetryConfig::default(),
        }
    }
}

impl UploaderConfig {
    /// Sets [`max_concurrency`](Self::max_concurrency).
    #[must_use]
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = max_concurrency;
        self
    }

    /// Sets [`max_queued_bytes`](Self::max_queued_bytes).
    #[must_use]
    pub fn with_max_queued_bytes(mut self, max_queued_bytes: usize) -> Self {
        self.max_queued_bytes = max_queued_bytes;
        self
    }

    /// Sets [`multipart_threshold`](Self::multipart_threshold).
    #[must_use]
    pub fn with_multipart_threshold(mut self, multipart_threshold: u64) -> Self {
        self.multipart_threshold = multipart_threshold;
        self
    }

    /// Sets [`part_size`](Self::part_size).
    #[must_use]
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size;
        self
    }

    /// Sets [`min_part_size`](Self::min_part_size).
    #[must_use]
    pub fn with_min_part_size(mut self, min_part_size: usize) -> Self {
        self.min_part_size = min_part_size;
        self
    }

    /// Sets [`part_concurrency`](Self::part_concurrency).
    #[must_use]
    pub fn with_part_concurrency(mut self, part_concurrency: usize) -> Self {
        self.part_concurrency = part_concurrency;
        self
    }

    /// Sets [`retry`](Self::retry).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    fn validate(&self, store: &dyn ObjectStore) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.max_concurrency == 0 || self.max_concurrency > Semaphore::MAX_PERMITS {
            return bad(
                "UploaderConfig::max_concurrency",
                format!(
                    "{} is not from 1 to {}",
                    self.max_concurrency,
                    Semaphore::MAX_PERMITS
                ),
            );
        }
        if self.max_queued_bytes == 0 || u32::try_from(self.max_queued_bytes).is_err() {
            return bad(
                "UploaderConfig::max_queued_bytes",
                format!("{} is not from 1 to {}", self.max_queued_bytes, u32::MAX),
            );
        }
        if self.part_concurrency == 0 {
            return bad(
                "UploaderConfig::part_concurrency",
                "must be at least 1".into(),
            );
        }
        if self.min_part_size == 0 {
            return bad("UploaderConfig::min_part_size", "must be at least 1".into());
        }
        if self.min_part_size < MIN_PART_SIZE && is_s3(store) {
            return bad(
                "UploaderConfig::min_part_size",
                format!(
                    "{} is below S3's {MIN_PART_SIZE}-byte minimum part size, and the store is S3",
                    self.min_part_size
                ),
            );
        }
        if self.part_size < self.min_part_size || self.part_size > MAX_PART_SIZE {
            return bad(
                "UploaderConfig::part_size",
                format!(
                    "{} is not from min_part_size ({}) to {MAX_PART_SIZE}",
                    self.part_size, self.min_part_size
                ),
            );
        }
        self.retry.validate("UploaderConfig::retry")
    }
}

/// Whether `store` is (or wraps, by its `Display`) `object_store`'s S3 client.
fn is_s3(store: &dyn ObjectStore) -> bool {
    store.to_string().contains("AmazonS3(")
}

/// What a successful [`Uploader::put`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PutOutcome {
    /// This call created the object.
    Created,
    /// The object was already there with the same size and checksum: an earlier attempt's
    /// acknowledgement was lost, or it had been uploaded before.
    AlreadyPresent,
}

/// Uploads immutable objects: bounded in requests and memory, retried with backoff, written
/// once.
///
/// - Objects up to [`UploaderConfig::multipart_threshold`] go up as one PUT, larger ones as a
///   multipart upload with parts sent in parallel; a failed multipart upload is aborted.
/// - [`put`](Self::put) writes with `PutMode::Create` and stores the object's CRC32C as
///   metadata ([`CHECKSUM_METADATA_KEY`](crate::CHECKSUM_METADATA_KEY)). When the object
///   already exists — an earlier attempt's acknowledgement was lost, or another writer got
///   there first — its size and checksum decide: the same object is
///   [`PutOutcome::AlreadyPresent`], a different one is [`Error::Conflict`]. An object found
///   without a stored checksum is downloaded to compute one.
/// - Multipart uploads cannot be conditional in `object_store`, so for them create-once is a
///   HEAD before the upload: two writers racing on one large object can both succeed, the last
///   one's object staying. Immutable, content-named objects make that harmless.
/// - A store that cannot keep user metadata (`object_store`'s `LocalFileSystem` answers
///   `NotImplemented`) gets the object without it: the uploader notices on the first such
///   answer, sends that request again without metadata and does not send metadata to that store
///   again. Downloads of those objects verify their length only, and create-once comparisons
///   compute the existing object's checksum by downloading it.
/// - Transient failures are retried ([`RetryConfig`]); each attempt is a whole PUT, or a whole
///   multipart upload. Every retry of a create (and every multipart create) first looks for the
///   object with a HEAD, so an attempt that landed is not sent again.
///
/// Cheap to clone: clones share the limits and counters.
#[derive(Clone)]
pub struct Uploader {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    config: UploaderConfig,
    gate: Gate,
    /// Permits are bytes of admitted uploads.
    queued: Semaphore,
    rng: Rng,
    /// False once the store has refused user metadata (see the type's documentation).
    metadata: AtomicBool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Create,
    Overwrite,
}

impl Uploader {
    /// An uploader writing to `store`.
    pub fn new(store: Arc<dyn ObjectStore>, config: UploaderConfig) -> Result<Self> {
        config.validate(store.as_ref())?;
        Ok(Self {
            inner: Arc::new(Inner {
                gate: Gate::new(config.max_concurrency, "uploader"),
                queued: Semaphore::new(config.max_queued_bytes),
                store,
                config,
                rng: Rng::from_entropy(),
                metadata: AtomicBool::new(true),
            }),
        })
    }

    /// Uploads `bytes` as the object at `path`, once: see the type's documentation. Waits for
    /// room under [`UploaderConfig::max_queued_bytes`] first.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<PutOutcome> {
        let span = tracing::debug_span!("objsync.put", %path, size = bytes.len());
        self.inner
            .upload(path, bytes, Mode::Create)
            .instrument(span)
            .await
    }

    /// Uploads `bytes` to `path`, replacing any object there (`PutMode::Overwrite`): for
    /// mutable objects such as [`ObjectPageIo`](crate::ObjectPageIo)'s pages. Retries are safe
    /// since the write is idempotent; limits and checksums are as for [`put`](Self::put).
    pub async fn overwrite(&self, path: &Path, bytes: Bytes) -> Result<()> {
        let span = tracing::debug_span!("objsync.overwrite", %path, size = bytes.len());
        self.inner
            .upload(path, bytes, Mode::Overwrite)
            .instrument(span)
            .await
            .map(|_| ())
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> Counters {
        self.inner.gate.stats.snapshot()
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &UploaderConfig {
        &self.inner.config
    }

    /// The store uploads go to.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }
}

impl fmt::Debug for Uploader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store by its `Display` (e.g. `AmazonS3(bucket)`): its `Debug` may show key ids.
        f.debug_struct("Uploader")
            .field("store", &format_args!("{}", self.inner.store))
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

pub(crate) fn store_error(op: Op, path: &Path, attempt: u32, source: object_store::Error) -> Error {
    match source {
        object_store::Error::NotFound { .. } => Error::NotFound {
            path: path.to_string(),
            source,
        },
        source => Error::Store {
            op,
            path: path.to_string(),
            attempt,
            source,
        },
    }
}

/// Whether `error` is a store refusing user metadata, as `LocalFileSystem` does.
fn refuses_metadata(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotImplemented { operation, .. }
        if operation.contains("attributes"))
}

impl Inner {
    /// Sends `request` with the metadata of an object whose CRC32C is `crc` (none once the
    /// store has refused metadata). If the store refuses it now, notes that (logged once) and
    /// sends `request` once more without: that second request is not a retry.
    async fn with_checksum_metadata<T, Fut>(
        &self,
        crc: u32,
        request: impl Fn(Attributes) -> Fut,
    ) -> Result<object_store::Result<T>>
    where
        Fut: Future<Output = Result<object_store::Result<T>>>,
    {
        if !self.metadata.load(Ordering::Relaxed) {
            return request(Attributes::new()).await;
        }
        let result = request(checksum::attributes(crc)).await?;
        if !matches!(&result, Err(error) if refuses_metadata(error)) {
            return Ok(result);
        }
        if self.metadata.swap(false, Ordering::Relaxed) {
            tracing::info!(
                store = %self.store,
                "the store keeps no user metadata: uploading without stored checksums"
            );
        }
        request(Attributes::new()).await
    }

    async fn upload(&self, path: &Path, bytes: Bytes, mode: Mode) -> Result<PutOutcome> {
        let _queued = self.admit(bytes.len()).await?;
        let crc = crc32c::crc32c(&bytes);
        if bytes.len() as u64 > self.config.multipart_threshold {
            self.put_multipart(path, &bytes, crc, mode).await
        } else {
            self.put_single(path, &bytes, crc, mode).await
        }
    }

    /// Waits until `len` more bytes fit under `max_queued_bytes` (or, for an object larger
    /// than the bound, until nothing else is admitted).
    async fn admit(&self, len: usize) -> Result<Option<SemaphorePermit<'_>>> {
        let want = len.min(self.config.max_queued_bytes);
        // `validate` keeps `max_queued_bytes` within u32.
        let Ok(want) = u32::try_from(want) else {
            return Err(Error::InvalidConfig {
                field: "UploaderConfig::max_queued_bytes",
                reason: "larger than u32::MAX".into(),
            });
        };
        if want == 0 {
            return Ok(None);
        }
        self.queued
            .acquire_many(want)
            .await
            .map(Some)
            .map_err(|_| Error::Shutdown { what: "uploader" })
    }

    async fn put_single(
        &self,
        path: &Path,
        bytes: &Bytes,
        crc: u32,
        mode: Mode,
    ) -> Result<PutOutcome> {
        with_retries(
            &self.config.retry,
            &self.rng,
            &self.gate.stats,
            |attempt| async move {
                // A retry of a create first looks for the object: the failed attempt may have
                // landed (a lost acknowledgement), and a server may answer a conditional PUT of
                // an existing object by closing the connection before reading the body, which
                // looks like a transient failure rather than "already exists".
                if mode == Mode::Create
                    && attempt > 1
                    && let Some((size, found)) = self.existing(path, attempt).await?
                {
                    return self.compare(path, bytes, crc, size, found, attempt).await;
                }
                let put = |attributes: Attributes| async move {
                    let options = PutOptions {
                        mode: match mode {
                            Mode::Create => PutMode::Create,
                            Mode::Overwrite => PutMode::Overwrite,
                        },
                        attributes,
                        ..PutOptions::default()
                    };
                    let _slot = self.gate.slot().await?;
                    Ok::<_, Error>(
                        self.store
                            .put_opts(path, PutPayload::from(bytes.clone()), options)
                            .await,
                    )
                };
                match self.with_checksum_metadata(crc, put).await? {
                    Ok(_) => {
                        Stats::add(&self.gate.stats.bytes_up, bytes.len() as u64);
                        Ok(PutOutcome::Created)
                    }
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) if mode == Mode::Create => match self.existing(path, attempt).await? {
                        Some((size, found)) => {
                            self.compare(path, bytes, crc, size, found, attempt).await
                        }
                        // Gone again between the PUT and the HEAD: worth another attempt.
                        None => Err(Error::Store {
                            op: Op::Head,
                            path: path.to_string(),
                            attempt,
                            source: object_store::Error::Generic {
                                store: "objsync",
                                source: "the object existed on PUT but not on the following HEAD"
                                    .into(),
                            },
                        }),
                    },
                    Err(source) => Err(store_error(Op::Put, path, attempt, source)),
                }
            },
        )
        .await
    }

    /// The size and stored checksum of the object at `path`, or `None` when there is none.
    async fn existing(&self, path: &Path, attempt: u32) -> Result<Option<(u64, Option<u32>)>> {
        let result = {
            let _slot = self.gate.slot().await?;
            self.store
                .get_opts(
                    path,
                    GetOptions {
                        head: true,
                        ..GetOptions::default()
                    },
                )
                .await
        };
        match result {
            Ok(head) => {
                // A malformed checksum is treated as none: `compare` then computes one.
                let found = checksum::stored(&head.attributes).unwrap_or(None);
                Ok(Some((head.meta.size, found)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(store_error(Op::Head, path, attempt, source)),
        }
    }

    /// Decides whether the object found at `path` is the one being uploaded.
    async fn compare(
        &self,
        path: &Path,
        bytes: &Bytes,
        crc: u32,
        found_size: u64,
        found_crc: Option<u32>,
        attempt: u32,
    ) -> Result<PutOutcome> {
        let expected_size = bytes.len() as u64;
        let found_crc = match found_crc {
            None if found_size == expected_size => Some(self.crc_of(path, attempt).await?),
            other => other,
        };
        if found_size == expected_size && found_crc == Some(crc) {
            Stats::add(&self.gate.stats.already_present, 1);
            tracing::debug!(%path, "the object is already there with the same contents");
            Ok(PutOutcome::AlreadyPresent)
        } else {
            Stats::add(&self.gate.stats.conflicts, 1);
            Err(Error::Conflict {
                path: path.to_string(),
                expected_size,
                expected_crc32c: crc,
                found_size,
                found_crc32c: found_crc,
            })
        }
    }

    /// Downloads the object at `path` to compute its CRC32C (for objects stored without one).
    async fn crc_of(&self, path: &Path, attempt: u32) -> Result<u32> {
        let _slot = self.gate.slot().await?;
        let result = self
            .store
            .get_opts(path, GetOptions::default())
            .await
            .map_err(|source| store_error(Op::Get, path, attempt, source))?;
        let mut stream = result.into_stream();
        let mut crc = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| store_error(Op::Get, path, attempt, source))?;
            Stats::add(&self.gate.stats.bytes_down, chunk.len() as u64);
            crc = crc32c::crc32c_append(crc, &chunk);
        }
        Ok(crc)
    }

    async fn put_multipart(
        &self,
        path: &Path,
        bytes: &Bytes,
        crc: u32,
        mode: Mode,
    ) -> Result<PutOutcome> {
        if bytes.len().div_ceil(self.config.part_size) > MAX_PARTS {
            return Err(Error::TooLarge {
                path: path.to_string(),
                size: bytes.len() as u64,
                reason: "it needs more than 10,000 parts at this part_size",
            });
        }
        with_retries(
            &self.config.retry,
            &self.rng,
            &self.gate.stats,
            |attempt| async move {
                if mode == Mode::Create
                    && let Some((size, found)) = self.existing(path, attempt).await?
                {
                    return self.compare(path, bytes, crc, size, found, attempt).await;
                }
                self.upload_parts(path, bytes, crc, attempt).await?;
                Ok(PutOutcome::Created)
            },
        )
        .await
    }

    /// One multipart upload attempt: start, send the parts, complete; abort on failure.
    async fn upload_parts(&self, path: &Path, bytes: &Bytes, crc: u32, attempt: u32) -> Result<()> {
        let start = |attributes: Attributes| async move {
            let options = PutMultipartOptions {
                attributes,
                ..PutMultipartOptions::default()
            };
            let _slot = self.gate.slot().await?;
            Ok::<_, Error>(self.store.put_multipart_opts(path, options).await)
        };
        let mut upload = self
            .with_checksum_metadata(crc, start)
            .await?
            .map_err(|source| store_error(Op::MultipartCreate, path, attempt, source))?;
        Stats::add(&self.gate.stats.multipart_uploads, 1);
        let result = self.send_parts(upload.as_mut(), path, bytes, attempt).await;
        if let Err(error) = &result {
            Stats::add(&self.gate.stats.multipart_aborts, 1);
            tracing::debug!(%path, %error, "aborting a failed multipart upload");
            let aborted = match self.gate.slot().await {
                Ok(_slot) => upload.abort().await,
                Err(_) => Ok(()),
            };
            if let Err(abort_error) = aborted {
                // After a lost acknowledgement of `complete`, the upload is gone and this fails
                // harmlessly; otherwise the store's lifecycle rules must collect the parts.
                tracing::warn!(%path, error = %abort_error, "aborting a multipart upload failed");
            }
        }
        result
    }

    async fn send_parts(
        &self,
        upload: &mut dyn MultipartUpload,
        path: &Path,
        bytes: &Bytes,
        attempt: u32,
    ) -> Result<()> {
        let part_size = self.config.part_size;
        let len = bytes.len();
        let chunks = (0..len.div_ceil(part_size))
            .map(|i| bytes.slice(i * part_size..len.min((i + 1) * part_size)));
        let gate = &self.gate;
        futures::stream::iter(chunks)
            .map(|chunk| {
                let size = chunk.len() as u64;
                // `put_part` numbers the part now; the request starts when the future is
                // polled, after a request slot is free.
                let part = upload.put_part(PutPayload::from(chunk));
                async move {
                    let _slot = gate.slot().await?;
                    part.await
                        .map_err(|source| store_error(Op::MultipartPart, path, attempt, source))?;
                    Stats::add(&gate.stats.bytes_up, size);
                    Ok::<(), Error>(())
                }
            })
            .buffer_unordered(self.config.part_concurrency)
            .try_for_each(|()| futures::future::ready(Ok(())))
            .await?;
        let _slot = self.gate.slot().await?;
        upload
            .complete()
            .await
            .map_err(|source| store_error(Op::MultipartComplete, path, attempt, source))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;
    use crate::{Fault, FaultConfig, FaultOp, FaultyStore};

    fn faulty() -> Arc<FaultyStore> {
        Arc::new(FaultyStore::counting(Arc::new(InMemory::new())))
    }

    /// Small parts so that multipart uploads run on small objects (`InMemory` has no floor).
    fn small_parts() -> UploaderConfig {
        UploaderConfig::default()
            .with_multipart_threshold(1000)
            .with_min_part_size(100)
            .with_part_size(256)
            .with_retry(
                RetryConfig::default()
                    .with_base_delay(Duration::from_millis(1))
                    .with_max_delay(Duration::from_millis(10)),
            )
    }

    fn data(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn create_once() {
        let store = faulty();
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        let path = Path::from("seg/1");
        assert_eq!(
            up.put(&path, data(100, 1)).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            up.put(&path, data(100, 1)).await.unwrap(),
            PutOutcome::AlreadyPresent
        );
        let same_size = up.put(&path, data(100, 2)).await.unwrap_err();
        assert!(
            matches!(
                same_size,
                Error::Conflict {
                    found_size: 100,
                    expected_size: 100,
                    found_crc32c: Some(_),
                    ..
                }
            ),
            "{same_size:?}"
        );
        let other_size = up.put(&path, data(50, 1)).await.unwrap_err();
        assert!(
            matches!(
                other_size,
                Error::Conflict {
                    found_size: 100,
                    ..
                }
            ),
            "{other_size:?}"
        );
        // The first object is untouched, and carries its checksum.
        let stored = store.inner().get(&path).await.unwrap();
        assert_eq!(
            checksum::stored(&stored.attributes),
            Ok(Some(crc32c::crc32c(&data(100, 1))))
        );
        assert_eq!(stored.bytes().await.unwrap(), data(100, 1));
        let stats = up.stats();
        assert_eq!(
            (stats.already_present, stats.conflicts, stats.retries),
            (1, 2, 0)
        );
        assert_eq!(stats.bytes_up, 100);
    }

    #[tokio::test]
    async fn lost_ack_is_recovered_when_the_object_matches() {
        let store = faulty();
        store.script(FaultOp::Put, [Fault::LostAck]);
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        let path = Path::from("seg/lost");
        assert_eq!(
            up.put(&path, data(300, 3)).await.unwrap(),
            PutOutcome::AlreadyPresent
        );
        let stats = up.stats();
        assert_eq!((stats.retries, stats.already_present), (1, 1));
        // The retry found the object with a HEAD and did not send it again.
        let counts = store.counts();
        assert_eq!(
            (
                counts.lost_acks,
                counts.of(FaultOp::Put),
                counts.of(FaultOp::Head)
            ),
            (1, 1, 1)
        );
    }

    #[tokio::test]
    async fn a_retry_that_finds_another_object_is_a_conflict() {
        let store = faulty();
        let path = Path::from("seg/raced");
        // Another writer's object is there; this upload's first attempt fails in transit, and
        // the retry's create finds the other object.
        let theirs = data(300, 9);
        let attributes = checksum::attributes(crc32c::crc32c(&theirs));
        store
            .inner()
            .put_opts(&path, theirs.into(), PutOptions::from(attributes))
            .await
            .unwrap();
        store.script(FaultOp::Put, [Fault::Error]);
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        let error = up.put(&path, data(300, 4)).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Conflict {
                    found_size: 300,
                    expected_size: 300,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!error.is_transient());
        let stats = up.stats();
        assert_eq!((stats.retries, stats.conflicts), (1, 1));
    }

    #[tokio::test]
    async fn objects_without_a_stored_checksum_are_compared_by_content() {
        let store = faulty();
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        let (same, other) = (Path::from("plain/same"), Path::from("plain/other"));
        store.inner().put(&same, data(200, 5).into()).await.unwrap();
        store
            .inner()
            .put(&other, data(200, 6).into())
            .await
            .unwrap();
        assert_eq!(
            up.put(&same, data(200, 5)).await.unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(matches!(
            up.put(&other, data(200, 5)).await.unwrap_err(),
            Error::Conflict {
                found_crc32c: Some(_),
                ..
            }
        ));
        assert_eq!(store.counts().of(FaultOp::Get), 2, "one GET per comparison");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_faults_are_retried_and_counted() {
        let store = Arc::new(FaultyStore::new(
            Arc::new(InMemory::new()),
            FaultConfig::default()
                .with_seed(11)
                .with_error_rate(0.3)
                .with_ops([FaultOp::Put]),
        ));
        let up = Uploader::new(
            store.clone(),
            small_parts().with_retry(RetryConfig::default().with_max_attempts(20)),
        )
        .unwrap();
        for i in 0..40 {
            let path = Path::from(format!("r/{i}"));
            assert_eq!(
                up.put(&path, data(64, i as u8)).await.unwrap(),
                PutOutcome::Created
            );
        }
        let counts = store.counts();
        assert!(counts.errors > 0, "the seed must inject some errors");
        assert_eq!(
            up.stats().retries,
            counts.errors,
            "one retry per injected error"
        );
        assert_eq!(counts.of(FaultOp::Put), 40 + counts.errors);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts() {
        let store = faulty();
        store.script(FaultOp::Put, [Fault::Error; 5]);
        let up = Uploader::new(
            store.clone(),
            small_parts().with_retry(RetryConfig::default().with_max_attempts(3)),
        )
        .unwrap();
        let error = up.put(&Path::from("x"), data(10, 0)).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Store {
                    op: Op::Put,
                    attempt: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.is_transient());
        assert_eq!(up.stats().retries, 2);
        assert_eq!(store.counts().of(FaultOp::Put), 3);
    }

    #[tokio::test]
    async fn large_objects_go_up_in_parallel_parts() {
        let store = faulty();
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        let path = Path::from("big/1");
        let bytes = data(2000, 7);
        assert_eq!(
            up.put(&path, bytes.clone()).await.unwrap(),
            PutOutcome::Created
        );
        let counts = store.counts();
        assert_eq!(counts.of(FaultOp::Put), 0);
        assert_eq!(counts.of(FaultOp::MultipartCreate), 1);
        assert_eq!(counts.of(FaultOp::Part), 8); // 7 × 256 + 208
        assert_eq!(counts.of(FaultOp::Complete), 1);
        let stored = store.inner().get(&path).await.unwrap();
        assert_eq!(
            checksum::stored(&stored.attributes),
            Ok(Some(crc32c::crc32c(&bytes)))
        );
        assert_eq!(stored.bytes().await.unwrap(), bytes);
        // Create-once holds for multipart objects too (by a HEAD first).
        assert_eq!(
            up.put(&path, bytes).await.unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(matches!(
            up.put(&path, data(2000, 8)).await.unwrap_err(),
            Error::Conflict { .. }
        ));
        assert_eq!(store.counts().of(FaultOp::MultipartCreate), 1);
        let stats = up.stats();
        assert_eq!(
            (
                stats.multipart_uploads,
                stats.multipart_aborts,
                stats.bytes_up
            ),
            (1, 0, 2000)
        );
    }

    #[tokio::test]
    async fn a_failed_multipart_upload_is_aborted() {
        let store = faulty();
        store.script(FaultOp::Part, [Fault::Pass, Fault::Error]);
        let up =
            Uploader::new(store.clone(), small_parts().with_retry(RetryConfig::none())).unwrap();
        let path = Path::from("big/failed");
        let error = up.put(&path, data(2000, 1)).await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Store {
                    op: Op::MultipartPart,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(store.counts().of(FaultOp::Abort), 1);
        assert_eq!(store.counts().of(FaultOp::Complete), 0);
        assert!(store.inner().head(&path).await.is_err());
        assert_eq!(up.stats().multipart_aborts, 1);

        // With retries, the next attempt is a whole new upload, which succeeds.
        store.script(FaultOp::Part, [Fault::Error]);
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        assert_eq!(
            up.put(&path, data(2000, 1)).await.unwrap(),
            PutOutcome::Created
        );
        let stats = up.stats();
        assert_eq!(
            (
                stats.multipart_uploads,
                stats.multipart_aborts,
                stats.retries
            ),
            (2, 1, 1)
        );
    }

    #[tokio::test]
    async fn a_lost_multipart_completion_is_recovered() {
        let store = faulty();
        store.script(FaultOp::Complete, [Fault::LostAck]);
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        let path = Path::from("big/lost");
        assert_eq!(
            up.put(&path, data(1500, 2)).await.unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert_eq!(
            store.counts().of(FaultOp::MultipartCreate),
            1,
            "no second upload"
        );
        assert_eq!(
            store
                .inner()
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
            data(1500, 2)
        );
    }

    #[tokio::test]
    async fn overwrite_replaces_objects() {
        let store = faulty();
        let up = Uploader::new(store.clone(), small_parts()).unwrap();
        let path = Path::from("page/0");
        up.overwrite(&path, data(10, 1)).await.unwrap();
        up.overwrite(&path, data(10, 2)).await.unwrap();
        up.overwrite(&path, data(3000, 3)).await.unwrap();
        assert_eq!(
            store
                .inner()
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
            data(3000, 3)
        );
        assert_eq!(store.counts().of(FaultOp::Head), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_never_exceed_the_bound() {
        let store = Arc::new(FaultyStore::new(
            Arc::new(InMemory::new()),
            FaultConfig::default().with_latency(Duration::from_millis(10)),
        ));
        let up = Uploader::new(
            store.clone(),
            small_parts()
                .with_max_concurrency(3)
                .with_part_concurrency(4),
        )
        .unwrap();
        let puts = (0..24).map(|i| {
            let up = up.clone();
            async move {
                // A mix of single PUTs and multipart uploads.
                let len = if i % 3 == 0 { 1800 } else { 200 };
                up.put(&Path::from(format!("c/{i}")), data(len, i as u8))
                    .await
            }
        });
        for result in futures::future::join_all(puts).await {
            result.unwrap();
        }
        let counts = store.counts();
        assert_eq!(
            counts.peak_in_flight, 3,
            "the bound is reached and never exceeded"
        );
        assert_eq!(up.stats().peak_in_flight, 3);
        assert_eq!(up.stats().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_bytes_apply_backpressure() {
        let store = Arc::new(FaultyStore::new(
            Arc::new(InMemory::new()),
            FaultConfig::default().with_latency(Duration::from_millis(10)),
        ));
        // Room for two 400-byte objects at a time, though 16 requests could run.
        let up = Uploader::new(store.clone(), small_parts().with_max_queued_bytes(1000)).unwrap();
        let puts = (0..10).map(|i| {
            let up = up.clone();
            async move {
                up.put(&Path::from(format!("q/{i}")), data(400, i as u8))
                    .await
            }
        });
        let start = tokio::time::Instant::now();
        for result in futures::future::join_all(puts).await {
            result.unwrap();
        }
        assert_eq!(store.counts().peak_in_flight, 2);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "five rounds of two"
        );

        // An object larger than the whole bound still goes, alone.
        let big = up.put(&Path::from("q/big"), data(5000, 1)).await;
        assert_eq!(big.unwrap(), PutOutcome::Created);
    }

    #[test]
    fn bad_configs_are_errors() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let bad = [
            UploaderConfig::default().with_max_concurrency(0),
            UploaderConfig::default().with_max_queued_bytes(0),
            UploaderConfig::default().with_max_queued_bytes(1 << 33),
            UploaderConfig::default().with_part_concurrency(0),
            UploaderConfig::default().with_part_size(MIN_PART_SIZE - 1),
            UploaderConfig::default().with_min_part_size(0),
            UploaderConfig::default().with_part_size(MAX_PART_SIZE + 1),
            UploaderConfig::default().with_retry(RetryConfig::default().with_max_attempts(0)),
        ];
        for config in bad {
            let error = Uploader::new(Arc::clone(&mem), config.clone()).unwrap_err();
            assert!(
                matches!(error, Error::InvalidConfig { .. }),
                "{config:?}: {error:?}"
            );
        }
        Uploader::new(Arc::clone(&mem), UploaderConfig::default()).unwrap();
        Uploader::new(mem, small_parts()).unwrap();
    }

    #[test]
    fn s3_stores_keep_the_5_mib_floor() {
        let s3 = crate::S3Config::new("bucket")
            .with_endpoint("http://127.0.0.1:1")
            .with_allow_http(true)
            .with_credentials("id", "secret")
            .build()
            .unwrap();
        let error = Uploader::new(Arc::clone(&s3), small_parts()).unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidConfig {
                    field: "UploaderConfig::min_part_size",
                    ..
                }
            ),
            "{error:?}"
        );
        // Also through a wrapper that shows the S3 store in its name.
        let wrapped: Arc<dyn ObjectStore> = Arc::new(FaultyStore::counting(Arc::clone(&s3)));
        assert!(Uploader::new(wrapped, small_parts()).is_err());
        Uploader::new(s3, UploaderConfig::default()).unwrap();
    }
}
