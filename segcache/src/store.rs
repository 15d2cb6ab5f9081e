//! `SegmentStore`: the segment cache in front of an object store, through objsync's uploader
//! and downloader.
//!
//! A segment is durable once it is in the object store; the cache holds copies. Two rules keep
//! the copies honest:
//!
//! - `put` writes the cache slot while the upload runs, and persists the slot only after the
//!   upload succeeded. A local segment therefore always has its object behind it (a crash
//!   before the persist leaves at most a temporary file, which the next open deletes), and a
//!   failed upload leaves nothing local.
//! - `get` misses are single-flight per segment here (one download, one slot, one persist for
//!   all concurrent callers), on top of the downloader's own single-flight per object.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared, WeakShared};
use object_store::ObjectStore;
use object_store::path::Path;
use objsync::{Counters, Downloader, DownloaderConfig, PutOutcome, Uploader, UploaderConfig};
use parking_lot::Mutex;

use crate::{
    CacheConfig, Error, Result, ScanReport, SegmentCache, SegmentId, SegmentRef, Slot, Stats,
};

/// How many times a fetch goes back to the cache when its reservation finds the segment cached
/// and a `get` then finds it evicted again (each round needs an eviction to race it).
const FETCH_ROUNDS: usize = 8;

/// Settings of a [`SegmentStore`]'s uploader and downloader.
///
/// ```
/// use objsync::{DownloaderConfig, HedgeConfig, UploaderConfig};
/// use segcache::StoreConfig;
///
/// let config = StoreConfig::default()
///     .with_uploader(UploaderConfig::default().with_max_concurrency(8))
///     .with_downloader(DownloaderConfig::default().with_hedge(HedgeConfig::disabled()));
/// assert_eq!(config.uploader.max_concurrency, 8);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The uploader's settings (bounded, retried, create-once uploads).
    pub uploader: UploaderConfig,
    /// The downloader's settings (bounded, hedged, verified downloads).
    pub downloader: DownloaderConfig,
}

impl StoreConfig {
    /// Sets [`uploader`](Self::uploader).
    #[must_use]
    pub fn with_uploader(mut self, uploader: UploaderConfig) -> Self {
        self.uploader = uploader;
        self
    }

    /// Sets [`downloader`](Self::downloader).
    #[must_use]
    pub fn with_downloader(mut self, downloader: DownloaderConfig) -> Self {
        self.downloader = downloader;
        self
    }
}

/// A snapshot of a [`SegmentStore`]'s counters, with those of its cache, uploader and
/// downloader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// `put`s that returned `Ok`.
    pub puts: u64,
    /// `put`s that returned an error.
    pub put_failures: u64,
    /// Successful `put`s whose object was already in the store with the same bytes (a lost
    /// acknowledgement, or an earlier `put` of the segment).
    pub remote_already_present: u64,
    /// Data bytes of successful `put`s.
    pub bytes_put: u64,
    /// `get` calls.
    pub gets: u64,
    /// `get`s served from the cache at once.
    pub hits: u64,
    /// `get`s that joined a fetch of the same segment already under way.
    pub coalesced: u64,
    /// Segments downloaded by `get` misses.
    pub downloads: u64,
    /// Bytes of those downloads.
    pub bytes_downloaded: u64,
    /// `get`s that found the segment neither cached nor in the store.
    pub not_found: u64,
    /// The cache's state and counters.
    pub cache: Stats,
    /// The uploader's counters.
    pub uploader: Counters,
    /// The downloader's counters.
    pub downloader: Counters,
}

/// A disk cache of immutable segments backed by an object store: see the
/// [crate docs](crate#segmentstore).
///
/// Objects are named `<prefix>/<32 hex digits of the id>`: the validated prefix is the only
/// part of a name that does not come from a [`SegmentId`].
///
/// Cheap to clone (an `Arc`); `Send + Sync`. All methods take `&self`.
#[derive(Clone)]
pub struct SegmentStore {
    inner: Arc<Inner>,
}

type Fetch = BoxFuture<'static, Result<SegmentRef, Arc<Error>>>;
type Flight = Shared<Fetch>;

struct Inner {
    cache: SegmentCache,
    uploader: Uploader,
    downloader: Downloader,
    prefix: Path,
    /// Fetches in flight by segment; each entry is removed by its fetch's [`FlightGuard`] when
    /// the fetch finishes or is dropped. Guards only the map: never held across an `.await`,
    /// and no strong [`Flight`] is dropped while it is held (dropping the last one would run
    /// the guard, which takes this lock).
    flights: Mutex<HashMap<SegmentId, (u64, WeakShared<Fetch>)>>,
    next_flight: AtomicU64,
    counters: StoreCounters,
}

#[derive(Default)]
struct StoreCounters {
    puts: AtomicU64,
    put_failures: AtomicU64,
    remote_already_present: AtomicU64,
    bytes_put: AtomicU64,
    gets: AtomicU64,
    hits: AtomicU64,
    coalesced: AtomicU64,
    downloads: AtomicU64,
    bytes_downloaded: AtomicU64,
    not_found: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Removes its flight from the map when the fetch finishes or is cancelled.
struct FlightGuard {
    inner: Arc<Inner>,
    id: SegmentId,
    flight: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = self.inner.flights.lock();
        if flights
            .get(&self.id)
            .is_some_and(|(n, _)| *n == self.flight)
        {
            flights.remove(&self.id);
        }
    }
}

/// Writes `bytes` into `slot` on the blocking pool (a segment may be many megabytes) and hands
/// the slot back. If the caller goes away, the task finishes and drops the slot, which leaves
/// nothing behind.
async fn fill(slot: Slot, bytes: Bytes) -> Result<Slot> {
    if bytes.is_empty() {
        return Ok(slot);
    }
    tokio::task::spawn_blocking(move || slot.write_at(0, &bytes).map(|()| slot))
        .await
        .map_err(|source| Error::Task { source })?
}

impl SegmentStore {
    /// Opens the cache (see [`SegmentCache::open`]) in front of `store`, whose objects are
    /// named `<prefix>/<32 hex>`.
    ///
    /// `prefix` must be a valid object path (`segments`, `tenant-1/segments`; no empty, `.`
    /// or `..` parts) or empty; [`Error::InvalidPrefix`] otherwise. A configuration objsync
    /// refuses is [`Error::StoreConfig`]. Both are checked before the cache directory is
    /// touched.
    pub async fn open(
        cache: CacheConfig,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        config: StoreConfig,
    ) -> Result<(Self, ScanReport)> {
        let prefix = Path::parse(prefix).map_err(|source| Error::InvalidPrefix {
            prefix: prefix.to_owned(),
            source: Box::new(source),
        })?;
        let uploader = Uploader::new(Arc::clone(&store), config.uploader).map_err(|source| {
            Error::StoreConfig {
                source: Box::new(source),
            }
        })?;
        let downloader =
            Downloader::new(store, config.downloader).map_err(|source| Error::StoreConfig {
                source: Box::new(source),
            })?;
        let (cache, report) = SegmentCache::open(cache).await?;
        let inner = Arc::new(Inner {
            cache,
            uploader,
            downloader,
            prefix,
            flights: Mutex::new(HashMap::new()),
            next_flight: AtomicU64::new(0),
            counters: StoreCounters::default(),
        });
        Ok((Self { inner }, report))
    }

    /// Stores segment `id`: writes it into a cache slot while uploading it, and returns once
    /// it is durable in the object store and readable in the cache, pinned.
    ///
    /// - The upload is create-once: an object already there with the same bytes (a lost
    ///   acknowledgement, or an earlier `put`) is success; one with other bytes is
    ///   [`Error::Upload`] with objsync's `Conflict` as the source.
    /// - If the upload fails, the slot is dropped unpersisted: no local copy is left, and the
    ///   error is [`Error::Upload`].
    /// - If the segment is already cached, only the upload is done (segments are immutable;
    ///   the upload still checks the store has these bytes).
    /// - Cache errors ([`Error::TooLarge`], I/O) are returned as they are; one that comes
    ///   after the upload succeeded leaves the object in the store, so a retry finds it there.
    ///
    /// Dropping the future before it finishes leaves no local copy; the upload may or may not
    /// have happened.
    pub async fn put(&self, id: SegmentId, bytes: Bytes) -> Result<SegmentRef> {
        let result = self.put_inner(id, bytes).await;
        let counters = &self.inner.counters;
        match &result {
            Ok((segment, outcome)) => {
                add(&counters.puts, 1);
                add(&counters.bytes_put, segment.len() as u64);
                if *outcome == PutOutcome::AlreadyPresent {
                    add(&counters.remote_already_present, 1);
                }
            }
            Err(_) => add(&counters.put_failures, 1),
        }
        result.map(|(segment, _)| segment)
    }

    async fn put_inner(&self, id: SegmentId, bytes: Bytes) -> Result<(SegmentRef, PutOutcome)> {
        let inner = &self.inner;
        let path = self.object_path(id);
        let slot = match inner.cache.reserve(id, bytes.len() as u64).await {
            Ok(slot) => Some(slot),
            Err(Error::AlreadyPresent { .. }) => None,
            Err(error) => return Err(error),
        };
        let write = async {
            match slot {
                Some(slot) => fill(slot, bytes.clone()).await.map(Some),
                None => Ok(None),
            }
        };
        let (written, uploaded) = tokio::join!(write, inner.uploader.put(&path, bytes.clone()));
        let outcome = match uploaded {
            Ok(outcome) => outcome,
            Err(source) => {
                // The slot (if it was written) is dropped here, unpersisted: nothing local.
                drop(written);
                return Err(Error::Upload {
                    id,
                    path: path.to_string(),
                    source: Box::new(source),
                });
            }
        };
        let segment = match written? {
            Some(slot) => slot.persist().await?,
            // Cached before this put; if it has been evicted since, fetch it back from the
            // object just confirmed.
            None => self.get(id).await?,
        };
        Ok((segment, outcome))
    }

    /// Pins segment `id`: from the cache if it is there; otherwise downloaded (through the
    /// downloader: bounded, hedged, verified) into a cache slot, persisted, and pinned.
    ///
    /// Concurrent `get`s of one segment that miss share one download and one slot. A segment
    /// in neither place is [`Error::NotFound`] (see [`Error::is_not_found`]); a failed download
    /// is [`Error::Download`], or [`Error::Shared`] for the callers that joined it.
    ///
    /// A hit completes without waiting, so each `get` spends a unit of tokio's cooperative
    /// budget first: a task that only ever hits still gives its worker thread back now and
    /// then (and can be aborted), as with tokio's own channels and locks.
    pub async fn get(&self, id: SegmentId) -> Result<SegmentRef> {
        tokio::task::consume_budget().await;
        let counters = &self.inner.counters;
        add(&counters.gets, 1);
        if let Some(segment) = self.inner.cache.get(id).await? {
            add(&counters.hits, 1);
            return Ok(segment);
        }
        let (flight, joined) = self.flight(id);
        if joined {
            add(&counters.coalesced, 1);
        }
        let result = flight.await;
        result.map_err(|shared| {
            if shared.is_not_found() {
                // Every caller gets its own, plain `NotFound`.
                add(&counters.not_found, 1);
                return Error::NotFound {
                    id,
                    path: self.object_path(id).to_string(),
                };
            }
            match Arc::try_unwrap(shared) {
                Ok(error) => error,
                Err(source) => Error::Shared { id, source },
            }
        })
    }

    /// The fetch of `id` under way, or a new one; and whether it was under way.
    fn flight(&self, id: SegmentId) -> (Flight, bool) {
        let mut flights = self.inner.flights.lock();
        if let Some(flight) = flights.get(&id).and_then(|(_, weak)| weak.upgrade()) {
            return (flight, true);
        }
        let n = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
        let guard = FlightGuard {
            inner: Arc::clone(&self.inner),
            id,
            flight: n,
        };
        let inner = Arc::clone(&self.inner);
        let fetch: Fetch = async move {
            let _guard = guard;
            inner.fetch(id).await.map_err(Arc::new)
        }
        .boxed();
        let flight = fetch.shared();
        if let Some(weak) = flight.downgrade() {
            // Replacing a dead entry drops only a weak reference.
            flights.insert(id, (n, weak));
        }
        drop(flights);
        (flight, false)
    }

    /// Whether segment `id` is in the local cache (without pinning it).
    #[must_use]
    pub fn contains(&self, id: SegmentId) -> bool {
        self.inner.cache.contains(id)
    }

    /// Drops segment `id` from the local cache only (see [`SegmentCache::remove`]); its object
    /// stays, so a later [`get`](Self::get) downloads it again.
    pub fn evict_local(&self, id: SegmentId) -> Result<bool> {
        self.inner.cache.remove(id)
    }

    /// The object name of segment `id`: `<prefix>/<32 hex>`.
    #[must_use]
    pub fn object_path(&self, id: SegmentId) -> Path {
        self.inner.prefix.clone().join(id.to_string().as_str())
    }

    /// The object-name prefix.
    #[must_use]
    pub fn prefix(&self) -> &Path {
        &self.inner.prefix
    }

    /// The local cache.
    #[must_use]
    pub fn cache(&self) -> &SegmentCache {
        &self.inner.cache
    }

    /// The uploader.
    #[must_use]
    pub fn uploader(&self) -> &Uploader {
        &self.inner.uploader
    }

    /// The downloader.
    #[must_use]
    pub fn downloader(&self) -> &Downloader {
        &self.inner.downloader
    }

    /// A snapshot of the counters. Costs what [`SegmentCache::stats`] costs.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreStats {
            puts: get(&c.puts),
            put_failures: get(&c.put_failures),
            remote_already_present: get(&c.remote_already_present),
            bytes_put: get(&c.bytes_put),
            gets: get(&c.gets),
            hits: get(&c.hits),
            coalesced: get(&c.coalesced),
            downloads: get(&c.downloads),
            bytes_downloaded: get(&c.bytes_downloaded),
            not_found: get(&c.not_found),
            cache: self.inner.cache.stats(),
            uploader: self.inner.uploader.stats(),
            downloader: self.inner.downloader.stats(),
        }
    }
}

impl Inner {
    /// The body of a single-flight fetch: the cache once more (a fetch that just finished may
    /// have brought the segment), else download, reserve, write, persist.
    async fn fetch(&self, id: SegmentId) -> Result<SegmentRef> {
        if self.cache.contains(id)
            && let Some(segment) = self.cache.get(id).await?
        {
            return Ok(segment);
        }
        let path = self.prefix.clone().join(id.to_string().as_str());
        let bytes = self.downloader.get(&path).await.map_err(|source| {
            if source.is_not_found() {
                Error::NotFound {
                    id,
                    path: path.to_string(),
                }
            } else {
                Error::Download {
                    id,
                    path: path.to_string(),
                    source: Box::new(source),
                }
            }
        })?;
        add(&self.counters.downloads, 1);
        add(&self.counters.bytes_downloaded, bytes.len() as u64);
        let mut last = None;
        for _ in 0..FETCH_ROUNDS {
            match self.cache.reserve(id, bytes.len() as u64).await {
                Ok(slot) => return fill(slot, bytes).await?.persist().await,
                // A `put` of the same segment got there first.
                Err(error @ Error::AlreadyPresent { .. }) => {
                    if let Some(segment) = self.cache.get(id).await? {
                        return Ok(segment);
                    }
                    last = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last.unwrap_or(Error::AlreadyPresent { id }))
    }
}

impl fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentStore")
            .field("cache", &self.inner.cache)
            .field("prefix", &self.inner.prefix)
            .field("uploader", &self.inner.uploader)
            .finish_non_exhaustive()
    }
}
