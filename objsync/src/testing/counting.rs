//! `CountingStore`: an `ObjectStore` wrapper that counts requests and how many overlap.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// Wraps a store and counts, at the store boundary, the requests made through it and the most
/// that were in flight at once — what the code under test does, measured from outside it.
///
/// A request is in flight from the first poll of its future until it finishes; a GET until its
/// body stream is finished or dropped, since the body is part of the transfer. A HEAD is a GET
/// with `head` set and is counted apart.
///
/// ```
/// use std::sync::Arc;
/// use object_store::{ObjectStore, ObjectStoreExt, memory::InMemory};
/// use objsync::testing::CountingStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = CountingStore::new(Arc::new(InMemory::new()));
/// store.put(&"a".into(), "hello".into()).await.unwrap();
/// assert_eq!(store.counts().puts, 1);
/// # });
/// ```
#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<Counts>,
}

/// A snapshot of a [`CountingStore`]'s counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// GETs (whole or ranged), not HEADs.
    pub gets: u64,
    /// HEADs.
    pub heads: u64,
    /// Single PUTs.
    pub puts: u64,
    /// Multipart uploads started.
    pub multipart_starts: u64,
    /// Parts uploaded (started).
    pub parts: u64,
    /// Multipart uploads completed (called).
    pub completes: u64,
    /// Multipart uploads aborted (called).
    pub aborts: u64,
    /// Objects deleted, LISTs and copies, together.
    pub other: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// The most requests ever in flight at once (since creation or
    /// [`reset_peak`](CountingStore::reset_peak)).
    pub peak_in_flight: u64,
}

impl RequestCounts {
    /// Every request counted.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.gets
            + self.heads
            + self.puts
            + self.multipart_starts
            + self.parts
            + self.completes
            + self.aborts
            + self.other
    }
}

#[derive(Debug, Default)]
struct Counts {
    gets: AtomicU64,
    heads: AtomicU64,
    puts: AtomicU64,
    multipart_starts: AtomicU64,
    parts: AtomicU64,
    completes: AtomicU64,
    aborts: AtomicU64,
    other: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl Counts {
    /// Counts a request of kind `counter` and marks it in flight until the guard drops.
    fn enter(self: &Arc<Self>, counter: fn(&Counts) -> &AtomicU64) -> InFlight {
        counter(self).fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight.
struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CountingStore {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn counts(&self) -> RequestCounts {
        let c = &self.counts;
        let load = |a: &AtomicU64| a.load(Ordering::Acquire);
        RequestCounts {
            gets: load(&c.gets),
            heads: load(&c.heads),
            puts: load(&c.puts),
            multipart_starts: load(&c.multipart_starts),
            parts: load(&c.parts),
            completes: load(&c.completes),
            aborts: load(&c.aborts),
            other: load(&c.other),
            in_flight: load(&c.in_flight),
            peak_in_flight: load(&c.peak_in_flight),
        }
    }

    /// Restarts the peak from the requests in flight now (say, after a setup phase).
    pub fn reset_peak(&self) {
        let now = self.counts.in_flight.load(Ordering::Acquire);
        self.counts.peak_in_flight.store(now, Ordering::Release);
    }
}

impl fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner)
            .field("counts", &self.counts())
            .finish()
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The inner store's name stays visible (objsync recognises an S3 store by it).
        write!(f, "CountingStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let _in_flight = self.counts.enter(|c| &c.puts);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = {
            let _in_flight = self.counts.enter(|c| &c.multipart_starts);
            self.inner.put_multipart_opts(location, opts).await?
        };
        Ok(Box::new(CountingUpload {
            inner,
            counts: Arc::clone(&self.counts),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let in_flight = if options.head {
            self.counts.enter(|c| &c.heads)
        } else {
            self.counts.enter(|c| &c.gets)
        };
        let mut result = self.inner.get_opts(location, options).await?;
        #[allow(
            unreachable_patterns,
            clippy::match_wildcard_for_single_variants,
            reason = "`GetResultPayload::File` exists only with object_store's `fs` feature"
        )]
        match result.payload {
            GetResultPayload::Stream(body) => {
                // The guard lives in the closure, so the request stays in flight until the body
                // is finished or dropped.
                result.payload = GetResultPayload::Stream(
                    body.map(move |chunk| {
                        let _ = &in_flight;
                        chunk
                    })
                    .boxed(),
                );
            }
            other => result.payload = other,
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let _in_flight = self.counts.enter(|c| &c.gets);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let counts = Arc::clone(&self.counts);
        self.inner
            .delete_stream(locations)
            .inspect(move |_| {
                counts.other.fetch_add(1, Ordering::Relaxed);
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.other.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.counts.other.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let _in_flight = self.counts.enter(|c| &c.other);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let _in_flight = self.counts.enter(|c| &c.other);
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload whose parts, completion and abort are counted.
#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    counts: Arc<Counts>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let counts = Arc::clone(&self.counts);
        // Counted when first polled: a part future made but not yet run is not in flight.
        Box::pin(async move {
            let _in_flight = counts.enter(|c| &c.parts);
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let _in_flight = self.counts.enter(|c| &c.completes);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        let _in_flight = self.counts.enter(|c| &c.aborts);
        self.inner.abort().await
    }
}
