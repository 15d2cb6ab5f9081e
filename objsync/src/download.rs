//! The downloader: bounded, single-flight, hedged GETs, with parallel ranges for large objects.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{Attributes, GetOptions, GetRange, ObjectMeta, ObjectStore};
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use crate::hedge::Hedger;
use crate::retry::{Attempts, Rng, with_retries};
use crate::stats::{Gate, Slot, Stats};
use crate::upload::store_error;
use crate::{Counters, Error, HedgeConfig, Op, Result, RetryConfig, checksum};

/// Settings of a [`Downloader`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DownloaderConfig {
    /// Store requests in flight at most (GETs, hedges, range GETs). Default 16.
    pub max_concurrency: usize,
    /// Hedged GETs.
    pub hedge: HedgeConfig,
    /// Objects larger than this are fetched as parallel range GETs. Default 32 MiB.
    pub range_threshold: u64,
    /// The size of each range GET. Default 8 MiB.
    pub range_size: u64,
    /// Range GETs of one object in flight at most (each also takes a request slot). Default 4.
    pub range_concurrency: usize,
    /// Retries of transient failures (and of transfers that failed verification).
    pub retry: RetryConfig,
}

impl Default for DownloaderConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 16,
            hedge: HedgeConfig::default(),
            range_threshold: 32 << 20,
            range_size: 8 << 20,
            range_concurrency: 4,
            retry: RetryConfig::default(),
        }
    }
}

impl DownloaderConfig {
    /// Sets [`max_concurrency`](Self::max_concurrency).
    #[must_use]
    pub fn with_max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = max_concurrency;
        self
    }

    /// Sets [`hedge`](Self::hedge).
    #[must_use]
    pub fn with_hedge(mut self, hedge: HedgeConfig) -> Self {
        self.hedge = hedge;
        self
    }

    /// Sets [`range_threshold`](Self::range_threshold).
    #[must_use]
    pub fn with_range_threshold(mut self, range_threshold: u64) -> Self {
        self.range_threshold = range_threshold;
        self
    }

    /// Sets [`range_size`](Self::range_size).
    #[must_use]
    pub fn with_range_size(mut self, range_size: u64) -> Self {
        self.range_size = range_size;
        self
    }

    /// Sets [`range_concurrency`](Self::range_concurrency).
    #[must_use]
    pub fn with_range_concurrency(mut self, range_concurrency: usize) -> Self {
        self.range_concurrency = range_concurrency;
        self
    }

    /// Sets [`retry`](Self::retry).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.max_concurrency == 0 || self.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS {
            return bad(
                "DownloaderConfig::max_concurrency",
                format!("{} is not at least 1", self.max_concurrency),
            );
        }
        if self.range_size == 0 {
            return bad("DownloaderConfig::range_size", "must be at least 1".into());
        }
        if self.range_concurrency == 0 {
            return bad(
                "DownloaderConfig::range_concurrency",
                "must be at least 1".into(),
            );
        }
        self.hedge.validate()?;
        self.retry.validate("DownloaderConfig::retry")
    }
}

/// Downloads objects: bounded, single-flight, hedged, verified.
///
/// - **Bounded**: at most [`DownloaderConfig::max_concurrency`] store requests in flight.
/// - **Single-flight**: concurrent [`get`](Self::get)s of one path share one download. The
///   download runs as long as at least one caller awaits it; when the last one gives up, it is
///   cancelled. A `get` that starts after a download finished starts a new one (this is not a
///   cache).
/// - **Hedged**: see [`HedgeConfig`]. The first GET of an object is raced against a second one
///   raised after a delay taken from recent times to first byte, until one of them brings its
///   first bytes; the other is cancelled. A hedge needs a free request slot at once and budget
///   left, or it is skipped.
/// - **Ranged**: an object larger than [`DownloaderConfig::range_threshold`] (its size is
///   learnt from the first GET's headers) is read as parallel range GETs of
///   [`DownloaderConfig::range_size`]: the first range from the first GET's body, the rest
///   pinned to its `ETag`.
/// - **Verified**: the length must match the object's size, and the CRC32C stored by the
///   [`Uploader`](crate::Uploader) (when there is one) must match. A failed verification is
///   retried like a transient error.
/// - **Streamed**, with [`get_into`](Self::get_into): the bytes go to a [`DownloadSink`] as they
///   arrive (a cache slot, a file), so memory stays at the in-flight chunks, whatever the
///   object's size. [`get`](Self::get) is `get_into` a buffer, shared by its callers.
///
/// Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Downloader {
    inner: Arc<Inner>,
}

type Download = BoxFuture<'static, Result<Bytes, Arc<Error>>>;
type Flight = Shared<Download>;

struct Inner {
    store: Arc<dyn ObjectStore>,
    config: DownloaderConfig,
    gate: Gate,
    hedger: Hedger,
    rng: Rng,
    /// Downloads in flight by path; each entry is removed by its download's [`FlightGuard`]
    /// when the download finishes or is dropped. Guards only the map: never held across an
    /// `.await`, and no strong [`Flight`] is dropped while it is held.
    flights: Mutex<HashMap<Path, (u64, WeakShared<Download>)>>,
    next_flight: AtomicU64,
}

/// Removes its flight from the map when the download finishes or is cancelled.
struct FlightGuard {
    inner: Arc<Inner>,
    path: Path,
    id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = self.inner.flights.lock();
        if flights
            .get(&self.path)
            .is_some_and(|(id, _)| *id == self.id)
        {
            flights.remove(&self.path);
        }
    }
}

/// A first GET of an object that has brought its first body bytes, with the rest of its body
/// to come. Holds its request slot.
struct Opened<'a> {
    meta: ObjectMeta,
    attributes: Attributes,
    /// The first chunk (`None` for an empty body).
    first: Option<Bytes>,
    rest: BoxStream<'static, object_store::Result<Bytes>>,
    _slot: Slot<'a>,
}

/// What the sink of a streamed download says: `Err` stops the download (not retried).
pub type SinkResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>>;

/// Where [`Downloader::get_into`] puts an object's bytes as they arrive: a cache slot, a file, a
/// buffer.
///
/// The downloader calls [`begin`](Self::begin) with the object's length, then
/// [`write`](Self::write) with its bytes in order, from offset 0 to the end. A transfer that
/// fails part-way and is tried again starts over: `begin` again, then writes from 0. The bytes
/// are verified (length and checksum) only once they are all written, so until `get_into`
/// returns `Ok` the sink holds bytes nobody should trust.
pub trait DownloadSink: Send {
    /// The object is `len` bytes long; called before its first byte, and again before a transfer
    /// that starts over. An error refuses the object (say, no room for it): the download fails
    /// with [`Error::Sink`], or with the error itself when it is an objsync [`Error`].
    fn begin(&mut self, len: u64) -> impl Future<Output = SinkResult> + Send;

    /// `data` is the object's bytes from `offset` on.
    fn write(&mut self, offset: u64, data: Bytes) -> impl Future<Output = SinkResult> + Send;
}

/// What [`Downloader::get_into`] put into its sink: the object's length and the CRC32C of its
/// bytes, verified against the stored checksum when there is one (so a cache can keep it
/// without reading the bytes again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// The object's length in bytes.
    pub len: u64,
    /// The CRC32C of its bytes.
    pub crc32c: u32,
}

/// The sink of [`Downloader::get`]: the object in memory.
#[derive(Default)]
struct BufferSink {
    /// The whole object when it came as one chunk (no copy), else `None`.
    whole: Option<Bytes>,
    buf: Vec<u8>,
    len: usize,
    path: String,
}

impl BufferSink {
    fn into_bytes(self) -> Bytes {
        self.whole.unwrap_or_else(|| Bytes::from(self.buf))
    }
}

impl DownloadSink for BufferSink {
    async fn begin(&mut self, len: u64) -> SinkResult {
        let too_large = || Error::TooLarge {
            path: self.path.clone(),
            size: len,
            reason: "it does not fit in memory",
        };
        let len = usize::try_from(len).map_err(|_| too_large())?;
        self.whole = None;
        self.buf.clear();
        self.len = len;
        Ok(())
    }

    async fn write(&mut self, offset: u64, data: Bytes) -> SinkResult {
        if offset == 0 && data.len() == self.len {
            self.whole = Some(data);
            return Ok(());
        }
        if self.buf.capacity() < self.len {
            self.buf
                .try_reserve_exact(self.len - self.buf.len())
                .map_err(|_| Error::TooLarge {
                    path: self.path.clone(),
                    size: self.len as u64,
                    reason: "it does not fit in memory",
                })?;
        }
        self.buf.extend_from_slice(&data);
        Ok(())
    }
}

impl Downloader {
    /// A downloader reading from `store`.
    pub fn new(store: Arc<dyn ObjectStore>, config: DownloaderConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                gate: Gate::new(config.max_concurrency, "downloader"),
                hedger: Hedger::new(config.hedge.clone()),
                store,
                config,
                rng: Rng::from_entropy(),
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
            }),
        })
    }

    /// The whole object at `path`, verified. A missing object is [`Error::NotFound`] (check
    /// with [`Error::is_not_found`], which also sees through [`Error::Shared`]). When this call
    /// joined a download that failed, the error is [`Error::Shared`] unless this was its only
    /// caller.
    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        let (flight, joined) = self.flight(path);
        if joined {
            Stats::add(&self.inner.gate.stats.coalesced, 1);
        }
        flight
            .await
            .map_err(|shared| match Arc::try_unwrap(shared) {
                Ok(error) => error,
                Err(shared) => Error::Shared {
                    path: path.to_string(),
                    source: shared,
                },
            })
    }

    /// Streams the object at `path` into `sink` (see [`DownloadSink`]) and returns its length
    /// and verified checksum. Bounded, hedged, ranged, retried and verified like
    /// [`get`](Self::get), but not coalesced: each call has a sink of its own, so callers that
    /// want one download per object coalesce themselves (as `segcache::SegmentStore` does).
    /// Memory in use is the chunks in flight — at most `range_concurrency` ranges of
    /// `range_size` for an object past `range_threshold`, else the store's chunks — not the
    /// object.
    ///
    /// A missing object is [`Error::NotFound`]; a sink that fails is [`Error::Sink`] (or its own
    /// objsync error). On any error the sink holds unverified bytes.
    pub async fn get_into<S: DownloadSink>(&self, path: &Path, sink: &mut S) -> Result<Downloaded> {
        let span = tracing::debug_span!("objsync.get_into", %path);
        self.inner.download(path, sink).instrument(span).await
    }

    /// Makes later [`get`](Self::get)s of `path` start a new download instead of joining one in
    /// flight. Call it after overwriting a mutable object, so that no read that starts after
    /// the write joins a download that may have been served before it.
    pub fn forget_in_flight(&self, path: &Path) {
        // The removed entry is weak: dropping it never drops a download (so never runs a
        // `FlightGuard`, which takes this lock).
        let removed = self.inner.flights.lock().remove(path);
        drop(removed);
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> Counters {
        self.inner.gate.stats.snapshot()
    }

    /// The delay after which a GET would be hedged now, or `None` while hedging is off or has
    /// too few samples.
    #[must_use]
    pub fn hedge_delay(&self) -> Option<Duration> {
        self.inner.hedger.current_delay()
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &DownloaderConfig {
        &self.inner.config
    }

    /// The store downloads come from.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The download in flight for `path` (and true), or a new one (and false).
    fn flight(&self, path: &Path) -> (Flight, bool) {
        let mut flights = self.inner.flights.lock();
        if let Some(flight) = flights.get(path).and_then(|(_, weak)| weak.upgrade()) {
            return (flight, true);
        }
        let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
        let guard = FlightGuard {
            inner: Arc::clone(&self.inner),
            path: path.clone(),
            id,
        };
        let span = tracing::debug_span!("objsync.get", %path);
        let download = async move {
            let mut sink = BufferSink {
                path: guard.path.to_string(),
                ..BufferSink::default()
            };
            let result = guard
                .inner
                .download(&guard.path, &mut sink)
                .await
                .map(|_| sink.into_bytes());
            // The entry goes before the result is handed out: a `get` from now on starts anew.
            drop(guard);
            result.map_err(Arc::new)
        }
        .instrument(span)
        .boxed()
        .shared();
        if let Some(weak) = download.downgrade() {
            flights.insert(path.clone(), (id, weak));
        }
        (download, false)
    }
}

impl fmt::Debug for Downloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store by its `Display` (e.g. `AmazonS3(bucket)`): its `Debug` may show key ids.
        f.debug_struct("Downloader")
            .field("store", &format_args!("{}", self.inner.store))
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Downloads `path` into `sink`, trying the whole transfer again after a transient failure
    /// or a failed verification.
    async fn download<S: DownloadSink>(&self, path: &Path, sink: &mut S) -> Result<Downloaded> {
        let mut attempts = Attempts::new(&self.config.retry, &self.rng, &self.gate.stats);
        loop {
            match self.transfer(path, sink, attempts.number()).await {
                Ok(downloaded) => return Ok(downloaded),
                Err(error) => attempts.retry_after(error).await?,
            }
        }
    }

    /// One transfer of `path` into `sink`: the hedged first GET's body (all of it, or the first
    /// range of a large object), then the rest as parallel range GETs (each retried on its own),
    /// written in order; then the length and checksum are verified.
    async fn transfer<S: DownloadSink>(
        &self,
        path: &Path,
        sink: &mut S,
        attempt: u32,
    ) -> Result<Downloaded> {
        let opened = self.hedged_open(path, attempt).await?;
        let size = opened.meta.size;
        let meta = opened.meta.clone();
        let attributes = opened.attributes.clone();
        sink.begin(size).await.map_err(|e| sink_error(path, e))?;
        let first_end = if size > self.config.range_threshold {
            self.config.range_size.min(size)
        } else {
            size
        };
        let mut at = 0u64;
        let mut crc = 0u32;
        let Opened {
            mut first,
            mut rest,
            _slot: slot,
            ..
        } = opened;
        loop {
            let chunk = match first.take() {
                Some(chunk) => chunk,
                // Everything received is kept: a store that sends more than `range_size` in its
                // first chunks (an in-memory or local one sends it all) saves range requests.
                None if at >= first_end => break,
                None => match rest.next().await {
                    Some(chunk) => {
                        chunk.map_err(|source| store_error(Op::Get, path, attempt, source))?
                    }
                    None => break,
                },
            };
            Stats::add(&self.gate.stats.bytes_down, chunk.len() as u64);
            let end = at + chunk.len() as u64;
            if end > size {
                return Err(corrupt(
                    path,
                    format!("the body is longer than its {size} bytes"),
                ));
            }
            crc = crc32c::crc32c_append(crc, &chunk);
            sink.write(at, chunk)
                .await
                .map_err(|e| sink_error(path, e))?;
            at = end;
        }
        // Ends the first GET's transfer (the rest comes as ranges) and frees its slot.
        drop((rest, slot));
        if at < first_end {
            return Err(corrupt(
                path,
                format!("the body ended after {at} of {size} bytes"),
            ));
        }
        if at < size {
            let step = self.config.range_size;
            let ranges = (0..(size - at).div_ceil(step))
                .map(move |i| at + i * step..(at + (i + 1) * step).min(size));
            let e_tag = meta.e_tag.as_deref();
            let mut parts = futures::stream::iter(ranges)
                .map(|range| {
                    with_retries(
                        &self.config.retry,
                        &self.rng,
                        &self.gate.stats,
                        move |attempt| self.get_range(path, range.clone(), e_tag, attempt),
                    )
                })
                .buffered(self.config.range_concurrency);
            while let Some(part) = parts.try_next().await? {
                let end = at + part.len() as u64;
                crc = crc32c::crc32c_append(crc, &part);
                sink.write(at, part)
                    .await
                    .map_err(|e| sink_error(path, e))?;
                at = end;
            }
        }
        verify_checksum(path, &attributes, crc)?;
        Ok(Downloaded {
            len: size,
            crc32c: crc,
        })
    }

    /// The first GET of `path`, hedged on its time to first byte.
    async fn hedged_open(&self, path: &Path, attempt: u32) -> Result<Opened<'_>> {
        let slot = self.gate.slot().await?;
        let delay = self.hedger.start();
        let started = Instant::now();
        let primary = self.open(path, attempt, slot);
        let Some(delay) = delay else {
            return self.recorded(primary.await, started);
        };
        tokio::pin!(primary);
        tokio::select! {
            biased;
            result = &mut primary => return self.recorded(result, started),
            () = tokio::time::sleep(delay) => {}
        }
        let stats = &self.gate.stats;
        let hedge_slot = if self.hedger.try_hedge() {
            self.gate.try_slot()
        } else {
            None
        };
        let Some(hedge_slot) = hedge_slot else {
            Stats::add(&stats.hedges_skipped, 1);
            return self.recorded(primary.await, started);
        };
        Stats::add(&stats.hedges_raised, 1);
        tracing::debug!(%path, ?delay, "raising a hedged GET");
        let hedge_started = Instant::now();
        let hedge = self.open(path, attempt, hedge_slot);
        tokio::pin!(hedge);
        tokio::select! {
            biased;
            result = &mut primary => match result {
                // The hedge is dropped here: its request is cancelled.
                Ok(opened) => self.recorded(Ok(opened), started),
                Err(_) => self.hedge_result(hedge.await, hedge_started),
            },
            result = &mut hedge => match result {
                Ok(opened) => {
                    // The primary is dropped (cancelled) on return. Its time so far is a lower
                    // bound on its time to first byte: keeping it stops the window from
                    // forgetting slow requests just because their hedges won.
                    self.hedger.record(started.elapsed());
                    self.hedge_result(Ok(opened), hedge_started)
                }
                Err(_) => self.recorded(primary.await, started),
            },
        }
    }

    fn recorded<'a>(&self, result: Result<Opened<'a>>, started: Instant) -> Result<Opened<'a>> {
        if result.is_ok() {
            self.hedger.record(started.elapsed());
        }
        result
    }

    fn hedge_result<'a>(&self, result: Result<Opened<'a>>, started: Instant) -> Result<Opened<'a>> {
        if result.is_ok() {
            Stats::add(&self.gate.stats.hedges_won, 1);
        }
        self.recorded(result, started)
    }

    /// One GET of `path`, up to its first body bytes (or its end, for an empty object). Holds
    /// `slot` until the transfer is dropped.
    async fn open<'a>(&self, path: &Path, attempt: u32, slot: Slot<'a>) -> Result<Opened<'a>> {
        let result = self
            .store
            .get_opts(path, GetOptions::default())
            .await
            .map_err(|source| store_error(Op::Get, path, attempt, source))?;
        let meta = result.meta.clone();
        let attributes = result.attributes.clone();
        let mut rest = result.into_stream();
        let first = match rest.next().await {
            Some(chunk) => {
                Some(chunk.map_err(|source| store_error(Op::Get, path, attempt, source))?)
            }
            None => None,
        };
        Ok(Opened {
            meta,
            attributes,
            first,
            rest,
            _slot: slot,
        })
    }

    async fn get_range(
        &self,
        path: &Path,
        range: Range<u64>,
        e_tag: Option<&str>,
        attempt: u32,
    ) -> Result<Bytes> {
        let _slot = self.gate.slot().await?;
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: e_tag.map(str::to_owned),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(path, options)
            .await
            .map_err(|source| store_error(Op::GetRange, path, attempt, source))?;
        if result.range != range {
            return Err(corrupt(
                path,
                format!(
                    "asked for bytes {range:?}, the store sent {:?}",
                    result.range
                ),
            ));
        }
        let data = result
            .bytes()
            .await
            .map_err(|source| store_error(Op::GetRange, path, attempt, source))?;
        Stats::add(&self.gate.stats.bytes_down, data.len() as u64);
        if data.len() as u64 != range.end - range.start {
            return Err(corrupt(
                path,
                format!("bytes {range:?} came back as {} bytes", data.len()),
            ));
        }
        Ok(data)
    }
}

fn corrupt(path: &Path, what: String) -> Error {
    Error::Corrupt {
        path: path.to_string(),
        what,
    }
}

/// A sink's error as the download's: its own when it is an objsync error, else
/// [`Error::Sink`].
fn sink_error(path: &Path, error: Box<dyn std::error::Error + Send + Sync + 'static>) -> Error {
    match error.downcast::<Error>() {
        Ok(own) => *own,
        Err(source) => Error::Sink {
            path: path.to_string(),
            source,
        },
    }
}

/// Checks the CRC32C of the bytes received against the one stored with the object, if any.
fn verify_checksum(path: &Path, attributes: &Attributes, actual: u32) -> Result<()> {
    match checksum::stored(attributes) {
        Ok(None) => Ok(()),
        Ok(Some(expected)) if actual == expected => Ok(()),
        Ok(Some(expected)) => Err(corrupt(
            path,
            format!("crc32c is {actual:08x}, the object's metadata says {expected:08x}"),
        )),
        Err(what) => Err(corrupt(path, what)),
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutOptions};

    use super::*;
    use crate::{Fault, FaultConfig, FaultOp, FaultyStore};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn store_with(config: FaultConfig) -> Arc<FaultyStore> {
        Arc::new(FaultyStore::new(Arc::new(InMemory::new()), config))
    }

    fn data(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(17).wrapping_add(seed))
            .collect()
    }

    /// Stores `bytes` at `path` with its checksum, as the uploader would, without counting.
    async fn put(store: &FaultyStore, path: &Path, bytes: &Bytes) {
        let options = PutOptions::from(checksum::attributes(crc32c::crc32c(bytes)));
        store
            .inner()
            .put_opts(path, bytes.clone().into(), options)
            .await
            .unwrap();
    }

    fn no_hedging() -> DownloaderConfig {
        DownloaderConfig::default()
            .with_hedge(HedgeConfig::disabled())
            .with_retry(
                RetryConfig::default()
                    .with_base_delay(ms(1))
                    .with_max_delay(ms(10)),
            )
    }

    #[tokio::test]
    async fn gets_and_not_found() {
        let store = store_with(FaultConfig::default());
        let path = Path::from("a/1");
        put(&store, &path, &data(100, 1)).await;
        let dl = Downloader::new(store.clone(), no_hedging()).unwrap();
        assert_eq!(dl.get(&path).await.unwrap(), data(100, 1));
        let missing = dl.get(&Path::from("a/2")).await.unwrap_err();
        assert!(missing.is_not_found(), "{missing:?}");
        assert!(!missing.is_transient());
        // Empty objects are objects too.
        store
            .inner()
            .put(&Path::from("a/empty"), Bytes::new().into())
            .await
            .unwrap();
        assert!(dl.get(&Path::from("a/empty")).await.unwrap().is_empty());
        assert_eq!(dl.stats().requests, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_gets_share_one_request() {
        let store = store_with(FaultConfig::default().with_latency(ms(50)));
        let path = Path::from("sf/1");
        put(&store, &path, &data(1000, 2)).await;
        let dl = Downloader::new(store.clone(), no_hedging()).unwrap();
        let gets = (0..10).map(|_| dl.get(&path));
        for result in futures::future::join_all(gets).await {
            assert_eq!(result.unwrap(), data(1000, 2));
        }
        assert_eq!(store.counts().of(FaultOp::Get), 1);
        assert_eq!(dl.stats().coalesced, 9);
        // Not a cache: a later get asks again.
        dl.get(&path).await.unwrap();
        assert_eq!(store.counts().of(FaultOp::Get), 2);
        assert!(dl.inner.flights.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_failure_reaches_every_caller() {
        let store = store_with(FaultConfig::default().with_latency(ms(5)));
        let dl = Downloader::new(store.clone(), no_hedging()).unwrap();
        let path = Path::from("sf/missing");
        let (a, b) = futures::future::join(dl.get(&path), dl.get(&path)).await;
        let (a, b) = (a.unwrap_err(), b.unwrap_err());
        assert!(a.is_not_found() && b.is_not_found(), "{a:?} {b:?}");
        assert!(matches!(b, Error::Shared { .. }) || matches!(a, Error::Shared { .. }));
        assert_eq!(store.counts().of(FaultOp::Get), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_download_survives_its_first_caller_but_not_its_last() {
        let store = store_with(FaultConfig::default().with_latency(ms(100)));
        let path = Path::from("sf/2");
        put(&store, &path, &data(10, 3)).await;
        let dl = Downloader::new(store.clone(), no_hedging()).unwrap();

        let leader = tokio::spawn({
            let (dl, path) = (dl.clone(), path.clone());
            async move { dl.get(&path).await }
        });
        tokio::time::sleep(ms(10)).await;
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let (dl, path) = (dl.clone(), path.clone());
                tokio::spawn(async move { dl.get(&path).await })
            })
            .collect();
        tokio::time::sleep(ms(10)).await;
        leader.abort();
        for follower in followers {
            assert_eq!(follower.await.unwrap().unwrap(), data(10, 3));
        }
        assert_eq!(store.counts().of(FaultOp::Get), 1);

        // When every caller gives up, the request is cancelled and the key is free again.
        let lone = tokio::spawn({
            let (dl, path) = (dl.clone(), path.clone());
            async move { dl.get(&path).await }
        });
        tokio::time::sleep(ms(10)).await;
        assert_eq!(store.counts().in_flight, 1);
        lone.abort();
        tokio::task::yield_now().await;
        assert_eq!(store.counts().in_flight, 0);
        assert!(dl.inner.flights.lock().is_empty());
        assert_eq!(dl.get(&path).await.unwrap(), data(10, 3));
        assert_eq!(store.counts().of(FaultOp::Get), 3);
    }

    fn hedging(min_samples: usize, max_delay: Duration, ratio: f64) -> DownloaderConfig {
        no_hedging().with_hedge(
            HedgeConfig::default()
                .with_min_samples(min_samples)
                .with_window(16)
                .with_percentile(0.5)
                .with_min_delay(ms(1))
                .with_max_delay(max_delay)
                .with_max_hedge_ratio(ratio),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_wins_over_a_slow_request() {
        let store = store_with(FaultConfig::default());
        let path = Path::from("h/1");
        put(&store, &path, &data(500, 4)).await;
        let dl = Downloader::new(store.clone(), hedging(5, ms(500), 1.0)).unwrap();

        // Until there are 5 samples, nothing is hedged.
        store.script(FaultOp::Get, [Fault::Delay(ms(10)); 5]);
        for _ in 0..5 {
            assert_eq!(dl.hedge_delay(), None);
            dl.get(&path).await.unwrap();
        }
        assert_eq!(dl.hedge_delay(), Some(ms(10)));

        // The next primary stalls for 10 s; the hedge goes out after 10 ms and takes 10 ms.
        store.script(
            FaultOp::Get,
            [Fault::Delay(Duration::from_secs(10)), Fault::Delay(ms(10))],
        );
        let start = tokio::time::Instant::now();
        assert_eq!(dl.get(&path).await.unwrap(), data(500, 4));
        assert_eq!(start.elapsed(), ms(20));
        let stats = dl.stats();
        assert_eq!(
            (stats.hedges_raised, stats.hedges_won, stats.hedges_skipped),
            (1, 1, 0)
        );
        let counts = store.counts();
        assert_eq!(counts.of(FaultOp::Get), 7);
        assert_eq!(counts.in_flight, 0, "the slow primary was cancelled");
        assert_eq!(stats.in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_hedge_per_request_and_the_first_answer_wins() {
        let store = store_with(FaultConfig::default());
        let path = Path::from("h/2");
        put(&store, &path, &data(50, 5)).await;
        let dl = Downloader::new(store.clone(), hedging(1, ms(500), 1.0)).unwrap();
        store.script(FaultOp::Get, [Fault::Delay(ms(10))]);
        dl.get(&path).await.unwrap();

        // Both slow: still only one hedge, and the primary (first to finish) wins.
        store.script(
            FaultOp::Get,
            [Fault::Delay(ms(1000)), Fault::Delay(ms(1000))],
        );
        let start = tokio::time::Instant::now();
        dl.get(&path).await.unwrap();
        assert_eq!(start.elapsed(), ms(1000));
        assert_eq!(store.counts().of(FaultOp::Get), 3);
        let stats = dl.stats();
        assert_eq!((stats.hedges_raised, stats.hedges_won), (1, 0));

        // A fast hedge beats a slow primary.
        store.script(FaultOp::Get, [Fault::Delay(ms(1000)), Fault::Delay(ms(10))]);
        let start = tokio::time::Instant::now();
        dl.get(&path).await.unwrap();
        assert!(start.elapsed() < ms(1000));
        assert_eq!(dl.stats().hedges_won, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_hedges() {
        // Every request takes 10 ms and the delay is clamped to 2 ms: every GET after the first
        // wants a hedge, and the budget allows one per 10 GETs.
        let store = store_with(FaultConfig::default().with_latency(ms(10)));
        let path = Path::from("h/3");
        put(&store, &path, &data(50, 6)).await;
        let dl = Downloader::new(store.clone(), hedging(1, ms(2), 0.1)).unwrap();
        for _ in 0..100 {
            dl.get(&path).await.unwrap();
        }
        let stats = dl.stats();
        assert_eq!(stats.hedges_raised, 10);
        assert_eq!(stats.hedges_skipped, 89);
        assert_eq!(store.counts().of(FaultOp::Get), 110);
    }

    /// Mixed sizes over a link of 1 MB/s: a 4 MiB object takes seconds to arrive but answers as
    /// fast as a small one, so it is not hedged (with whole-transfer samples it would be, and be
    /// downloaded twice); a small object whose first byte is late is.
    #[tokio::test(start_paused = true)]
    async fn hedging_follows_the_time_to_first_byte() {
        let store = store_with(
            FaultConfig::default()
                .with_latency(ms(5))
                .with_chunk_size(4096)
                .with_bandwidth(1_000_000),
        );
        let small = Path::from("m/small");
        let large = Path::from("m/large");
        put(&store, &small, &data(4096, 7)).await;
        put(&store, &large, &data(4 << 20, 8)).await;
        let dl = Downloader::new(store.clone(), hedging(5, ms(500), 1.0)).unwrap();
        for _ in 0..10 {
            dl.get(&small).await.unwrap();
        }
        let delay = dl.hedge_delay().expect("enough samples");
        assert!(delay < ms(20), "{delay:?}");

        let start = tokio::time::Instant::now();
        assert_eq!(dl.get(&large).await.unwrap(), data(4 << 20, 8));
        assert!(
            start.elapsed() > Duration::from_secs(4),
            "the transfer takes its time"
        );
        assert_eq!(
            dl.stats().hedges_raised,
            0,
            "a slow transfer is not a slow answer"
        );
        assert_eq!(store.counts().of(FaultOp::Get), 11);

        // A late first byte is hedged.
        store.script(FaultOp::Get, [Fault::Delay(Duration::from_secs(2))]);
        let start = tokio::time::Instant::now();
        dl.get(&small).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!((dl.stats().hedges_raised, dl.stats().hedges_won), (1, 1));
    }

    /// A streamed download puts the verified bytes into the sink in order, reports their
    /// checksum, and starts over (from `begin`) when a transfer fails part-way.
    #[tokio::test(start_paused = true)]
    async fn get_into_streams_in_order_and_starts_over_after_a_failure() {
        struct Refuse;
        impl DownloadSink for Refuse {
            async fn begin(&mut self, _: u64) -> SinkResult {
                Err("no room".into())
            }
            async fn write(&mut self, _: u64, _: Bytes) -> SinkResult {
                unreachable!("refused at begin")
            }
        }
        #[derive(Default)]
        struct Recorder {
            begins: Vec<u64>,
            bytes: Vec<u8>,
            chunks: usize,
        }
        impl DownloadSink for Recorder {
            async fn begin(&mut self, len: u64) -> SinkResult {
                self.begins.push(len);
                self.bytes.clear();
                Ok(())
            }
            async fn write(&mut self, offset: u64, data: Bytes) -> SinkResult {
                assert_eq!(offset, self.bytes.len() as u64, "in order");
                self.bytes.extend_from_slice(&data);
                self.chunks += 1;
                Ok(())
            }
        }
        let store = store_with(FaultConfig::default().with_chunk_size(1000));
        let path = Path::from("s/1");
        let bytes = data(10_000, 9);
        put(&store, &path, &bytes).await;
        let config = no_hedging()
            .with_range_threshold(4000)
            .with_range_size(3000);
        let dl = Downloader::new(store.clone(), config).unwrap();
        let mut sink = Recorder::default();
        let done = dl.get_into(&path, &mut sink).await.unwrap();
        assert_eq!(done.len, 10_000);
        assert_eq!(done.crc32c, crc32c::crc32c(&bytes));
        assert_eq!(sink.bytes, bytes);
        assert_eq!(sink.begins, [10_000]);
        // The first range came from the first GET in chunks; the rest as ranges of 3000.
        assert_eq!(sink.chunks, 3 + 3);

        // A damaged range fails verification: the transfer starts over and the sink ends whole.
        store.script(FaultOp::Get, [Fault::Pass, Fault::Corrupt]);
        let mut sink = Recorder::default();
        dl.get_into(&path, &mut sink).await.unwrap();
        assert_eq!(sink.begins, [10_000, 10_000]);
        assert_eq!(sink.bytes, bytes);

        // A sink that refuses stops the download at once, not retried.
        let gets = store.counts().of(FaultOp::Get);
        let err = dl.get_into(&path, &mut Refuse).await.unwrap_err();
        assert!(matches!(err, Error::Sink { .. }), "{err:?}");
        assert_eq!(store.counts().of(FaultOp::Get), gets + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_never_exceed_the_request_bound() {
        let store = store_with(FaultConfig::default().with_latency(ms(10)));
        let dl = Downloader::new(
            store.clone(),
            hedging(1, ms(2), 1.0).with_max_concurrency(2),
        )
        .unwrap();
        for i in 0..6 {
            put(&store, &Path::from(format!("b/{i}")), &data(100, i)).await;
        }
        let gets = (0..6).map(|i| {
            let dl = dl.clone();
            async move { dl.get(&Path::from(format!("b/{i}"))).await }
        });
        for result in futures::future::join_all(gets).await {
            result.unwrap();
        }
        assert_eq!(store.counts().peak_in_flight, 2);
        assert_eq!(dl.stats().peak_in_flight, 2);
    }

    fn ranged() -> DownloaderConfig {
        no_hedging()
            .with_range_threshold(1000)
            .with_range_size(300)
            .with_range_concurrency(3)
            .with_max_concurrency(4)
    }

    #[tokio::test(start_paused = true)]
    async fn large_objects_come_down_as_parallel_ranges() {
        let store = store_with(
            FaultConfig::default()
                .with_latency(ms(10))
                .with_chunk_size(100),
        );
        let path = Path::from("big/1");
        let bytes = data(2500, 7);
        put(&store, &path, &bytes).await;
        let dl = Downloader::new(store.clone(), ranged()).unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(dl.get(&path).await.unwrap(), bytes);
        // The probe, then 8 ranges of 300 bytes (the last 100), 3 at a time.
        assert_eq!(store.counts().of(FaultOp::Get), 9);
        assert_eq!(store.counts().peak_in_flight, 3);
        assert_eq!(start.elapsed(), ms(40));
        // At the threshold exactly, one GET.
        let edge = Path::from("big/edge");
        put(&store, &edge, &data(1000, 8)).await;
        assert_eq!(dl.get(&edge).await.unwrap(), data(1000, 8));
        assert_eq!(store.counts().of(FaultOp::Get), 10);
        // A store that sends more than a range at once saves range requests.
        store.set_config(FaultConfig::default().with_chunk_size(1000));
        assert_eq!(dl.get(&path).await.unwrap(), bytes);
        assert_eq!(store.counts().of(FaultOp::Get), 10 + 1 + 5); // 1000 bytes, then 5 ranges
    }

    #[tokio::test(start_paused = true)]
    async fn damaged_transfers_are_caught_and_retried() {
        let store = store_with(FaultConfig::default());
        let path = Path::from("v/1");
        put(&store, &path, &data(400, 9)).await;

        let strict =
            Downloader::new(store.clone(), no_hedging().with_retry(RetryConfig::none())).unwrap();
        store.script(FaultOp::Get, [Fault::Truncate]);
        let short = strict.get(&path).await.unwrap_err();
        assert!(
            matches!(&short, Error::Corrupt { what, .. } if what.contains("ended after 200")),
            "{short:?}"
        );
        store.script(FaultOp::Get, [Fault::Corrupt]);
        let flipped = strict.get(&path).await.unwrap_err();
        assert!(
            matches!(&flipped, Error::Corrupt { what, .. } if what.contains("crc32c")),
            "{flipped:?}"
        );

        let dl = Downloader::new(store.clone(), no_hedging()).unwrap();
        store.script(FaultOp::Get, [Fault::Truncate, Fault::Corrupt]);
        assert_eq!(dl.get(&path).await.unwrap(), data(400, 9));
        assert_eq!(dl.stats().retries, 2);

        // A damaged range is retried alone.
        let big = Path::from("v/big");
        put(&store, &big, &data(2500, 1)).await;
        let ranged = Downloader::new(store.clone(), ranged()).unwrap();
        store.set_config(FaultConfig::default().with_chunk_size(100));
        store.reset_counts();
        store.script(FaultOp::Get, [Fault::Pass, Fault::Truncate]);
        assert_eq!(ranged.get(&big).await.unwrap(), data(2500, 1));
        assert_eq!(ranged.stats().retries, 1);
        assert_eq!(store.counts().of(FaultOp::Get), 10);

        // Objects stored without a checksum are checked by length only.
        let plain = Path::from("v/plain");
        store.inner().put(&plain, data(30, 2).into()).await.unwrap();
        assert_eq!(dl.get(&plain).await.unwrap(), data(30, 2));
    }

    #[test]
    fn bad_configs_are_errors() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for config in [
            DownloaderConfig::default().with_max_concurrency(0),
            DownloaderConfig::default().with_range_size(0),
            DownloaderConfig::default().with_range_concurrency(0),
            DownloaderConfig::default().with_hedge(HedgeConfig::default().with_percentile(2.0)),
            DownloaderConfig::default().with_retry(RetryConfig::default().with_max_attempts(0)),
        ] {
            assert!(matches!(
                Downloader::new(Arc::clone(&mem), config).unwrap_err(),
                Error::InvalidConfig { .. }
            ));
        }
    }
}
