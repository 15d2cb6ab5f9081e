//! `ObjectPageIo`: a `PageIo` whose pages are objects.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use pageio::{Op as PageOp, PageIo};
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tracing::Instrument;

use crate::retry::{Rng, with_retries};
use crate::stats::Stats;
use crate::upload::store_error;
use crate::{Downloader, DownloaderConfig, Error, Op, Result, Uploader, UploaderConfig};

/// The name of the object, under the prefix, that records the page count as of the last sync
/// (or shrinking truncate).
const SIZE_OBJECT: &str = "num_pages";

/// The number of per-page locks (see `ObjectPageIo::page_locks`).
const PAGE_LOCK_STRIPES: usize = 64;

/// Settings of an [`ObjectPageIo`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ObjectPageIoConfig {
    /// The uploader pages are written through (its `max_concurrency` also bounds the requests
    /// of one batch write and of a truncate's deletes).
    pub uploader: UploaderConfig,
    /// The downloader pages are read through.
    pub downloader: DownloaderConfig,
    /// Worker threads of the runtime an `ObjectPageIo` owns (when it is not handed one).
    /// Default 2.
    pub worker_threads: usize,
}

impl Default for ObjectPageIoConfig {
    fn default() -> Self {
        Self {
            uploader: UploaderConfig::default(),
            downloader: DownloaderConfig::default(),
            worker_threads: 2,
        }
    }
}

impl ObjectPageIoConfig {
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

    /// Sets [`worker_threads`](Self::worker_threads).
    #[must_use]
    pub fn with_worker_threads(mut self, worker_threads: usize) -> Self {
        self.worker_threads = worker_threads;
        self
    }
}

/// A [`PageIo`] whose pages are objects in an object store.
///
/// # Layout
///
/// Page `n` is the object `<prefix>/<n as 16 lowercase hex digits>`, exactly one page long. A
/// page with no object reads as zeros. `<prefix>/num_pages` (decimal text) records the page
/// count: written by every [`sync`](PageIo::sync) that finds it changed, and by a shrinking
/// [`truncate`](PageIo::truncate) before it deletes anything.
///
/// # Size
///
/// [`num_pages`](PageIo::num_pages) is kept in memory; writes and truncates update it. At open
/// it is the recorded count, and page objects at or past it — left by a truncate interrupted
/// between recording the size and its deletes, or written past the end and never synced — are
/// deleted, so they can never reappear. Without a recorded count (a prefix never synced) it is
/// one more than the highest page object a LIST finds. Pages at or past it read as zeros
/// without a request. One `ObjectPageIo` at a time may use a prefix.
///
/// A crash (or a dropped `ObjectPageIo`) at any point of a truncate reopens to the size before
/// it or the size after it, with every page below that size holding what it held.
///
/// # Requests
///
/// Writes go through an [`Uploader`] with `PutMode::Overwrite` (pages are mutable), and a
/// write returns once the store acknowledged it — an acknowledged PUT is durable, so
/// [`sync`](PageIo::sync) only waits for writes still in flight on other threads and records
/// the size after a truncate. [`write_pages`](PageIo::write_pages) and
/// [`read_pages`](PageIo::read_pages) run their requests concurrently. Reads go through a
/// [`Downloader`]; after a write, the page's in-flight downloads are forgotten so that later
/// reads cannot join one served before the write. [`truncate`](PageIo::truncate) lists the
/// prefix and deletes every page object at or past the smaller of the old and the new end
/// (while no write is in flight); when it shrinks the device it records the new size first.
///
/// # Threads and runtimes
///
/// [`PageIo`] is synchronous. The requests run on a tokio runtime this value owns (built by
/// [`new`](Self::new), `worker_threads` threads, shut down on drop) or on one it is handed
/// ([`with_handle`](Self::with_handle)); the calling thread waits for them. Calling from inside
/// another runtime — a `#[tokio::test]`, a task of a multi-thread runtime — works. The one case
/// that cannot is a call from the very current-thread runtime it was handed: that is
/// [`Error::WouldDeadlock`] rather than a hang.
pub struct ObjectPageIo {
    store: Arc<dyn ObjectStore>,
    uploader: Uploader,
    downloader: Downloader,
    prefix: Path,
    page_size: usize,
    /// Guards the page count and whether it must be recorded at the next sync.
    size: Mutex<SizeState>,
    /// Writes hold it shared, a truncate exclusively: a truncate's LIST and deletes must not
    /// race a write to a page they cut. Held across the requests on purpose, and always taken
    /// before the other locks.
    writers: RwLock<()>,
    writes: WriteTracker,
    /// Orders the requests of one page (by page number modulo the stripe count): a page's
    /// upload holds its stripe for writing across its PUT, a page's download for reading
    /// across its GET. So two writes of a page never race in the store, and a read never
    /// overlaps a write of its page: some S3-compatible servers (s3s-fs) store an object's data
    /// and metadata non-atomically, and a read racing a write there can see one writer's data
    /// with another's checksum. This is what makes pages atomic (the `PageIo` contract)
    /// whatever the store does with concurrent requests of one key.
    page_locks: Arc<[tokio::sync::RwLock<()>]>,
    handle: Handle,
    /// The runtime this owns, if it was not handed one.
    runtime: Option<Runtime>,
    rng: Rng,
    stats: Stats,
}

#[derive(Debug, Default)]
struct SizeState {
    num_pages: u64,
    /// The count the size object holds, if there is one.
    recorded: Option<u64>,
}

impl ObjectPageIo {
    /// Opens (or creates: there is nothing to create) the device of `page_size`-byte pages
    /// under `prefix` in `store`, on a runtime of its own. `prefix` must be a valid, non-empty
    /// object path such as `"db/pages"`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        page_size: usize,
        config: ObjectPageIoConfig,
    ) -> Result<Self> {
        if config.worker_threads == 0 {
            return Err(Error::InvalidConfig {
                field: "ObjectPageIoConfig::worker_threads",
                reason: "must be at least 1".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("objsync-io")
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        let handle = runtime.handle().clone();
        Self::open(store, prefix, page_size, config, handle, Some(runtime))
    }

    /// As [`new`](Self::new), running requests on `handle`'s runtime instead of its own.
    ///
    /// The runtime must be running while this is used: a multi-thread runtime, or a
    /// current-thread one that some thread drives with `block_on`. Calls from a task of that
    /// multi-thread runtime are fine (the worker is handed off with `block_in_place`); calls from
    /// a task of that current-thread runtime fail with [`Error::WouldDeadlock`].
    pub fn with_handle(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        page_size: usize,
        config: ObjectPageIoConfig,
        handle: Handle,
    ) -> Result<Self> {
        Self::open(store, prefix, page_size, config, handle, None)
    }

    fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        page_size: usize,
        config: ObjectPageIoConfig,
        handle: Handle,
        runtime: Option<Runtime>,
    ) -> Result<Self> {
        pageio::check_page_size(page_size).map_err(|e| Error::InvalidConfig {
            field: "ObjectPageIo page_size",
            reason: e.to_string(),
        })?;
        let prefix_path = Path::parse(prefix).map_err(|source| Error::InvalidPath {
            path: prefix.to_owned(),
            source,
        })?;
        if prefix_path.as_ref().is_empty() {
            return Err(Error::InvalidConfig {
                field: "ObjectPageIo prefix",
                reason: "must not be empty: the pages need a folder of their own".into(),
            });
        }
        let io = Self {
            uploader: Uploader::new(Arc::clone(&store), config.uploader)?,
            downloader: Downloader::new(Arc::clone(&store), config.downloader)?,
            store,
            prefix: prefix_path,
            page_size,
            size: Mutex::new(SizeState::default()),
            writers: RwLock::new(()),
            writes: WriteTracker::default(),
            page_locks: (0..PAGE_LOCK_STRIPES)
                .map(|_| tokio::sync::RwLock::new(()))
                .collect(),
            handle,
            runtime,
            rng: Rng::from_entropy(),
            stats: Stats::default(),
        };
        let (num_pages, recorded) = io.load_size()?;
        *io.size.lock() = SizeState {
            num_pages,
            recorded,
        };
        Ok(io)
    }

    /// The prefix the pages live under.
    #[must_use]
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The uploader pages are written through (for its counters).
    #[must_use]
    pub fn uploader(&self) -> &Uploader {
        &self.uploader
    }

    /// The downloader pages are read through (for its counters).
    #[must_use]
    pub fn downloader(&self) -> &Downloader {
        &self.downloader
    }

    fn page_path(&self, no: u64) -> Path {
        page_path(&self.prefix, no)
    }

    /// The page count found in the store, and the recorded one. With a recorded count, page
    /// objects at or past it are leftovers (of an interrupted truncate, or unsynced writes past
    /// the end) and are deleted.
    fn load_size(&self) -> Result<(u64, Option<u64>)> {
        let downloader = self.downloader.clone();
        let size_path = self.prefix.clone().join(SIZE_OBJECT);
        let recorded = self.run("ObjectPageIo::open", async move {
            match downloader.get(&size_path).await {
                Ok(bytes) => parse_size(&size_path, &bytes).map(Some),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })??;
        let pages = self.list_pages()?;
        if let Some(size) = recorded {
            let leftovers: Vec<u64> = pages.into_iter().filter(|&no| no >= size).collect();
            self.delete_pages(&leftovers)?;
            Ok((size, Some(size)))
        } else {
            let highest = pages.into_iter().max();
            Ok((highest.map_or(0, |page| page.saturating_add(1)), None))
        }
    }

    /// Records `num_pages` in the size object. On error the store may hold the new count or
    /// the old one (a lost acknowledgement), so the recorded count becomes unknown and the next
    /// sync records the size whatever it is.
    fn record_size(&self, num_pages: u64) -> Result<()> {
        let uploader = self.uploader.clone();
        let path = self.prefix.clone().join(SIZE_OBJECT);
        let recorded = self
            .run("ObjectPageIo record size", async move {
                uploader
                    .overwrite(&path, Bytes::from(num_pages.to_string()))
                    .await
            })
            .and_then(|r| r);
        self.size.lock().recorded = recorded.is_ok().then_some(num_pages);
        recorded
    }

    /// Deletes the objects of pages `cut` (a missing one counts as deleted).
    fn delete_pages(&self, cut: &[u64]) -> Result<()> {
        if cut.is_empty() {
            return Ok(());
        }
        let store = Arc::clone(&self.store);
        let paths: Vec<Path> = cut.iter().map(|&no| self.page_path(no)).collect();
        let task_paths = paths.clone();
        let concurrency = self.uploader.config().max_concurrency;
        let retry = self.uploader.config().retry.clone();
        let deleted = self.run_with_retries("ObjectPageIo delete", retry, move |attempt| {
            let store = Arc::clone(&store);
            let paths = task_paths.clone();
            async move {
                futures::stream::iter(paths)
                    .map(|path| {
                        let store = Arc::clone(&store);
                        async move {
                            match store.delete(&path).await {
                                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                                Err(source) => Err(store_error(Op::Delete, &path, attempt, source)),
                            }
                        }
                    })
                    .buffer_unordered(concurrency)
                    .try_for_each(|()| futures::future::ready(Ok(())))
                    .await
            }
        });
        for path in &paths {
            self.downloader.forget_in_flight(path);
        }
        deleted
    }

    /// Every page number with an object under the prefix.
    fn list_pages(&self) -> Result<Vec<u64>> {
        let store = Arc::clone(&self.store);
        let prefix = self.prefix.clone();
        let retry = self.uploader.config().retry.clone();
        self.run_with_retries("ObjectPageIo list", retry, move |attempt| {
            let store = Arc::clone(&store);
            let prefix = prefix.clone();
            async move {
                store
                    .list(Some(&prefix))
                    .map_err(|source| store_error(Op::List, &prefix, attempt, source))
                    .try_filter_map(|meta| {
                        futures::future::ready(Ok(page_number(&prefix, &meta.location)))
                    })
                    .try_collect::<Vec<u64>>()
                    .await
            }
        })
    }

    /// Runs `future` on the I/O runtime and waits for it on this thread.
    fn run<T, F>(&self, what: &'static str, future: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let current = Handle::try_current().ok();
        let same_runtime = current
            .as_ref()
            .is_some_and(|current| current.id() == self.handle.id());
        if same_runtime
            && current
                .as_ref()
                .is_some_and(|c| c.runtime_flavor() == RuntimeFlavor::CurrentThread)
        {
            return Err(Error::WouldDeadlock { what });
        }
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let span = tracing::debug_span!("objsync.page_io", op = what, prefix = %self.prefix);
        self.handle.spawn(
            async move {
                // The receiver only goes away if the waiting thread did, and then nobody wants
                // the result.
                let _ = done.send(future.await);
            }
            .instrument(span),
        );
        let wait = move || result.recv().map_err(|_| Error::Interrupted { what });
        if same_runtime {
            // On a worker of the runtime that must run the request: hand the worker's other
            // tasks to another thread while this one blocks. `block_in_place` refuses (by
            // panicking, before it blocks) where that is impossible, e.g. in a `LocalSet`.
            let wait_here = std::panic::AssertUnwindSafe(|| tokio::task::block_in_place(wait));
            std::panic::catch_unwind(wait_here).unwrap_or(Err(Error::WouldDeadlock { what }))
        } else {
            // Another runtime (or none) runs this thread: blocking it delays only that runtime,
            // and the request runs elsewhere.
            wait()
        }
    }

    fn run_with_retries<T, F, Fut>(
        &self,
        what: &'static str,
        retry: crate::RetryConfig,
        attempt: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(u32) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        // The retry state lives in the task; counters and jitter come from here.
        let seed = self.rng.next_u64();
        let stats = Arc::new(Stats::default());
        let task_stats = Arc::clone(&stats);
        let result = self.run(what, async move {
            with_retries(&retry, &Rng::new(seed), &task_stats, attempt).await
        });
        Stats::add(
            &self.stats.retries,
            stats.retries.load(std::sync::atomic::Ordering::Relaxed),
        );
        result?
    }

    /// Uploads `pages` concurrently. Returns the pages written and the first error.
    fn upload(&self, pages: Vec<(u64, Bytes)>) -> Result<Uploaded> {
        let uploader = self.uploader.clone();
        let prefix = self.prefix.clone();
        let locks = Arc::clone(&self.page_locks);
        let concurrency = uploader.config().max_concurrency;
        let results = self.run("ObjectPageIo write", async move {
            futures::stream::iter(pages)
                .map(|(no, data)| {
                    let uploader = uploader.clone();
                    let path = page_path(&prefix, no);
                    let locks = Arc::clone(&locks);
                    async move {
                        // Each future takes one stripe at a time: no lock-order cycles.
                        let _ordered = locks[(no % locks.len() as u64) as usize].write().await;
                        (no, uploader.overwrite(&path, data).await)
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
        })?;
        let mut written = Vec::with_capacity(results.len());
        let mut first_error = None;
        for (no, result) in results {
            match result {
                Ok(()) => written.push(no),
                Err(error) => {
                    first_error.get_or_insert((no, error));
                }
            }
        }
        Ok(Uploaded {
            written,
            first_error,
        })
    }

    fn write_batch(&self, pages: Vec<(u64, Bytes)>) -> pageio::Result<()> {
        if pages.is_empty() {
            return Ok(());
        }
        let _writers = self.writers.read();
        let _ticket = self.writes.begin();
        let Uploaded {
            written,
            first_error: error,
        } = self
            .upload(pages)
            .map_err(|e| page_error(PageOp::Write, None, e))?;
        if let Some(&highest) = written.iter().max() {
            for &no in &written {
                self.downloader.forget_in_flight(&self.page_path(no));
            }
            let mut size = self.size.lock();
            size.num_pages = size.num_pages.max(highest + 1);
        }
        match error {
            Some((no, error)) => Err(page_error(PageOp::Write, Some(no), error)),
            None => Ok(()),
        }
    }

    /// Downloads the pages `nos` (all below the page count) concurrently; `None` for a page with
    /// no object.
    fn download(&self, nos: Vec<u64>) -> pageio::Result<Vec<(u64, Option<Bytes>)>> {
        let downloader = self.downloader.clone();
        let prefix = self.prefix.clone();
        let locks = Arc::clone(&self.page_locks);
        let concurrency = downloader.config().max_concurrency;
        let results = self
            .run("ObjectPageIo read", async move {
                futures::stream::iter(nos)
                    .map(|no| {
                        let downloader = downloader.clone();
                        let path = page_path(&prefix, no);
                        let locks = Arc::clone(&locks);
                        async move {
                            // One stripe at a time, as in `upload`: no lock-order cycles.
                            let _ordered = locks[(no % locks.len() as u64) as usize].read().await;
                            match downloader.get(&path).await {
                                Ok(bytes) => (no, Ok(Some(bytes))),
                                Err(e) if e.is_not_found() => (no, Ok(None)),
                                Err(e) => (no, Err(e)),
                            }
                        }
                    })
                    .buffer_unordered(concurrency)
                    .collect::<Vec<_>>()
                    .await
            })
            .map_err(|e| page_error(PageOp::Read, None, e))?;
        results
            .into_iter()
            .map(|(no, result)| {
                let page = result.map_err(|e| page_error(PageOp::Read, Some(no), e))?;
                match page {
                    Some(bytes) if bytes.len() != self.page_size => Err(page_error(
                        PageOp::Read,
                        Some(no),
                        Error::Corrupt {
                            path: self.page_path(no).to_string(),
                            what: format!(
                                "the page object is {} bytes, the page size is {}",
                                bytes.len(),
                                self.page_size
                            ),
                        },
                    )),
                    page => Ok((no, page)),
                }
            })
            .collect()
    }

    fn num_pages_now(&self) -> u64 {
        self.size.lock().num_pages
    }
}

/// What a batch upload did: the pages written, and the first page that failed with its error.
struct Uploaded {
    written: Vec<u64>,
    first_error: Option<(u64, Error)>,
}

/// An objsync error as the `PageIo` error of operation `op`, with the kind a caller acts on.
fn page_error(op: PageOp, page: Option<u64>, error: Error) -> pageio::Error {
    pageio::Error::backend_with_kind(op, page, error.page_io_kind(), error)
}

fn page_path(prefix: &Path, no: u64) -> Path {
    prefix.clone().join(format!("{no:016x}").as_str())
}

/// The page number of `location` if it is a page object directly under `prefix`.
fn page_number(prefix: &Path, location: &Path) -> Option<u64> {
    let mut rest = location.prefix_match(prefix)?;
    let name = rest.next()?;
    if rest.next().is_some() {
        return None;
    }
    let name = name.as_ref();
    if name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        u64::from_str_radix(name, 16).ok()
    } else {
        None
    }
}

fn parse_size(path: &Path, bytes: &[u8]) -> Result<u64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| Error::Corrupt {
            path: path.to_string(),
            what: "the recorded page count is not a decimal number".into(),
        })
}

impl PageIo for ObjectPageIo {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        let mut pages = [(no, buf)];
        self.read_pages(&mut pages)
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        self.write_pages(&[(no, buf)])
    }

    fn num_pages(&self) -> pageio::Result<u64> {
        Ok(self.num_pages_now())
    }

    fn sync(&self) -> pageio::Result<()> {
        // Every write that returned before this call is already acknowledged (durable); wait
        // for those still in flight on other threads, then record the size if it changed.
        // Holding the writers lock shared keeps a truncate from changing the size meanwhile.
        self.writes.wait_for_earlier();
        let _writers = self.writers.read();
        let (num_pages, recorded) = {
            let size = self.size.lock();
            (size.num_pages, size.recorded)
        };
        if recorded == Some(num_pages) {
            return Ok(());
        }
        self.record_size(num_pages)
            .map_err(|e| page_error(PageOp::Sync, None, e))
    }

    fn read_pages(&self, pages: &mut [(u64, &mut [u8])]) -> pageio::Result<()> {
        pageio::check_buffers(
            self.page_size,
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        let end = self.num_pages_now();
        let mut wanted: Vec<u64> = pages
            .iter()
            .map(|(no, _)| *no)
            .filter(|&no| no < end)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let fetched = if wanted.is_empty() {
            Vec::new()
        } else {
            self.download(wanted)?
        };
        let fetched: std::collections::HashMap<u64, Option<Bytes>> = fetched.into_iter().collect();
        for (no, buf) in pages.iter_mut() {
            match fetched.get(no) {
                Some(Some(bytes)) => buf.copy_from_slice(bytes),
                _ => buf.fill(0),
            }
        }
        Ok(())
    }

    fn write_pages(&self, pages: &[(u64, &[u8])]) -> pageio::Result<()> {
        pageio::check_buffers(
            self.page_size,
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        for (no, _) in pages {
            pageio::page_offset(*no, self.page_size)?;
        }
        // Distinct pages are the caller's promise; should one repeat, the last copy wins, as
        // it would written one by one.
        let mut batch: Vec<(u64, Bytes)> = Vec::with_capacity(pages.len());
        let mut seen = std::collections::HashMap::with_capacity(pages.len());
        for (no, buf) in pages {
            let data = Bytes::copy_from_slice(buf);
            if let Some(&index) = seen.get(no) {
                batch[index] = (*no, data);
            } else {
                seen.insert(*no, batch.len());
                batch.push((*no, data));
            }
        }
        self.write_batch(batch)
    }

    /// Shrinking records the new size first and then deletes the page objects past it, so a
    /// crash in between reopens to the new size (open deletes the leftovers). Growing deletes
    /// leftover objects past the old end first (they must read as zeros), and the new size is
    /// recorded by the next sync. A failed delete leaves the size cut and some old objects past
    /// it, which open deletes, or a later truncate.
    fn truncate(&self, num_pages: u64) -> pageio::Result<()> {
        pageio::byte_len(num_pages, self.page_size)?;
        let _writers = self.writers.write();
        let fail = |e| page_error(PageOp::Truncate, None, e);
        let old = self.num_pages_now();
        let cut_from = old.min(num_pages);
        if num_pages < old {
            self.record_size(num_pages).map_err(fail)?;
            self.size.lock().num_pages = num_pages;
        }
        // Every page object at or past the smaller end goes: a failed write may have left one
        // past the old end too.
        let cut: Vec<u64> = self
            .list_pages()
            .map_err(fail)?
            .into_iter()
            .filter(|&no| no >= cut_from)
            .collect();
        self.delete_pages(&cut).map_err(fail)?;
        self.size.lock().num_pages = num_pages;
        Ok(())
    }
}

impl fmt::Debug for ObjectPageIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store by its `Display` (e.g. `AmazonS3(bucket)`): its `Debug` may show key ids.
        f.debug_struct("ObjectPageIo")
            .field("store", &format_args!("{}", self.store))
            .field("prefix", &self.prefix.as_ref())
            .field("page_size", &self.page_size)
            .field("num_pages", &self.num_pages_now())
            .field("owns_runtime", &self.runtime.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for ObjectPageIo {
    fn drop(&mut self) {
        // `Runtime`'s own drop blocks, which panics inside another runtime; this does not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Tracks writes in flight so that `sync` can wait for those that began before it.
#[derive(Debug, Default)]
struct WriteTracker {
    /// Guards the next ticket and the tickets in flight.
    state: Mutex<Tickets>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    in_flight: BTreeSet<u64>,
}

struct Ticket<'a> {
    tracker: &'a WriteTracker,
    id: u64,
}

impl WriteTracker {
    fn begin(&self) -> Ticket<'_> {
        let mut state = self.state.lock();
        let id = state.next;
        state.next += 1;
        state.in_flight.insert(id);
        Ticket { tracker: self, id }
    }

    /// Waits until every write that began before this call has finished.
    fn wait_for_earlier(&self) {
        let mut state = self.state.lock();
        let limit = state.next;
        while state.in_flight.first().is_some_and(|&id| id < limit) {
            self.finished.wait(&mut state);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.tracker.state.lock().in_flight.remove(&self.id);
        self.tracker.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;

    use super::*;
    use crate::{FaultConfig, FaultOp, FaultyStore, HedgeConfig, RetryConfig};

    fn config() -> ObjectPageIoConfig {
        let retry = RetryConfig::default()
            .with_max_attempts(10)
            .with_base_delay(Duration::from_millis(1))
            .with_max_delay(Duration::from_millis(5));
        ObjectPageIoConfig::default()
            .with_uploader(UploaderConfig::default().with_retry(retry.clone()))
            .with_downloader(DownloaderConfig::default().with_retry(retry))
    }

    fn mem() -> Arc<dyn ObjectStore> {
        Arc::new(InMemory::new())
    }

    /// The suite on the calling thread, so the tests inside a runtime check it from there.
    fn on_this_thread() -> pageio::conformance::RunConfig {
        pageio::conformance::RunConfig::default().without_time_limit()
    }

    fn conformance(io: impl pageio::PageIo) {
        if let Err(failure) = pageio::conformance::run_all_with(io, &on_this_thread()) {
            let mut chain = vec![failure.to_string()];
            let mut next = std::error::Error::source(&failure);
            while let Some(e) = next {
                chain.push(e.to_string());
                next = e.source();
            }
            panic!("{}", chain.join("\n  caused by: "));
        }
    }

    #[test]
    fn conformance_from_a_plain_thread() {
        conformance(ObjectPageIo::new(mem(), "db/pages", 4096, config()).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_from_a_multi_thread_runtime() {
        let io = ObjectPageIo::new(mem(), "db/pages", 512, config()).unwrap();
        conformance(io);
        // And from a worker thread of that runtime, in a task.
        let io = Arc::new(ObjectPageIo::new(mem(), "db/pages", 512, config()).unwrap());
        let task = tokio::spawn(async move {
            pageio::conformance::run_all_with(io, &on_this_thread()).map_err(|f| f.to_string())
        });
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn conformance_from_a_current_thread_runtime() {
        conformance(ObjectPageIo::new(mem(), "db/pages", 1024, config()).unwrap());
    }

    #[test]
    fn conformance_on_a_handed_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let io = Arc::new(
            ObjectPageIo::with_handle(mem(), "p", 4096, config(), runtime.handle().clone())
                .unwrap(),
        );
        conformance(Arc::clone(&io));
        // Called from tasks of the very runtime that runs its requests, on both workers at
        // once: `block_in_place` keeps that from starving the requests.
        let calls: Vec<_> = (0..4u64)
            .map(|t| {
                let io = Arc::clone(&io);
                runtime.spawn(async move {
                    let page = vec![t as u8 + 1; 4096];
                    io.write_page(1000 + t, &page).unwrap();
                    let mut back = vec![0; 4096];
                    io.read_page(1000 + t, &mut back).unwrap();
                    back == page
                })
            })
            .collect();
        for call in calls {
            assert!(runtime.block_on(call).unwrap());
        }
        drop(io);
        runtime.shutdown_timeout(Duration::from_secs(5));
    }

    #[test]
    fn a_handed_current_thread_runtime_is_refused_from_inside_not_hung() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A current-thread runtime runs only inside `block_on`: drive it from a helper thread
        // until the test is done.
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver = std::thread::spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        });
        let io = Arc::new(
            ObjectPageIo::with_handle(mem(), "p", 4096, config(), handle.clone()).unwrap(),
        );
        io.write_page(0, &[1; 4096]).unwrap();
        // From a task of that runtime, a blocking call would wait for itself.
        let inner = Arc::clone(&io);
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(inner.write_page(1, &[2; 4096]));
        });
        let result = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(&result, Err(pageio::Error::Backend { source, .. }) if source.to_string().contains("deadlock")),
            "{result:?}"
        );
        let _ = stop.send(());
        driver.join().unwrap();
    }

    #[test]
    fn state_survives_reopening() {
        let store = mem();
        let io = ObjectPageIo::new(Arc::clone(&store), "db/pages", 512, config()).unwrap();
        io.write_pages(&[(0, &[1; 512]), (5, &[5; 512])]).unwrap();
        io.truncate(9).unwrap();
        io.sync().unwrap();
        drop(io);

        let io = ObjectPageIo::new(Arc::clone(&store), "db/pages", 512, config()).unwrap();
        assert_eq!(io.num_pages().unwrap(), 9, "the truncate was synced");
        let mut buf = vec![0; 512];
        io.read_page(5, &mut buf).unwrap();
        assert_eq!(buf, vec![5; 512]);
        io.truncate(3).unwrap();
        io.write_page(1, &[7; 512]).unwrap();
        io.sync().unwrap();
        drop(io);

        let io = ObjectPageIo::new(Arc::clone(&store), "db/pages", 512, config()).unwrap();
        assert_eq!(io.num_pages().unwrap(), 3);
        io.read_page(5, &mut buf).unwrap();
        assert_eq!(buf, vec![0; 512], "cut by the truncate");

        // An unsynced write past the recorded size is lost at a reopen (as a crash may lose
        // it), and its object is deleted, so that it cannot reappear inside the device later.
        io.write_page(20, &[2; 512]).unwrap();
        drop(io);
        let io = ObjectPageIo::new(Arc::clone(&store), "db/pages", 512, config()).unwrap();
        assert_eq!(io.num_pages().unwrap(), 3);
        io.truncate(21).unwrap();
        io.read_page(20, &mut buf).unwrap();
        assert_eq!(buf, vec![0; 512], "the leftover object is gone");
        // A synced write past the end is recorded.
        io.write_page(30, &[3; 512]).unwrap();
        io.sync().unwrap();
        drop(io);
        let io = ObjectPageIo::new(store, "db/pages", 512, config()).unwrap();
        assert_eq!(io.num_pages().unwrap(), 31);
        // Another prefix is another device.
        let other = ObjectPageIo::new(io.store.clone(), "db/pages2", 512, config()).unwrap();
        assert_eq!(other.num_pages().unwrap(), 0);
    }

    #[test]
    fn batches_run_concurrently_within_the_bound() {
        let store = Arc::new(FaultyStore::new(
            mem(),
            FaultConfig::default().with_latency(Duration::from_millis(20)),
        ));
        let config = config();
        let config = ObjectPageIoConfig {
            uploader: config.uploader.with_max_concurrency(4),
            downloader: config
                .downloader
                .with_max_concurrency(4)
                .with_hedge(HedgeConfig::disabled()),
            ..config
        };
        let io = ObjectPageIo::new(store.clone(), "c", 512, config).unwrap();
        let pages: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 512]).collect();
        let batch: Vec<(u64, &[u8])> = pages
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, p.as_slice()))
            .collect();
        store.reset_counts();
        let start = std::time::Instant::now();
        io.write_pages(&batch).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(store.counts().peak_in_flight, 4);
        assert!(
            elapsed < Duration::from_millis(16 * 20),
            "{elapsed:?}: not concurrent"
        );

        store.reset_counts();
        let mut bufs = vec![vec![0u8; 512]; 16];
        let mut reads: Vec<(u64, &mut [u8])> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (i as u64, b.as_mut_slice()))
            .collect();
        io.read_pages(&mut reads).unwrap();
        assert_eq!(bufs, pages);
        let counts = store.counts();
        assert_eq!((counts.of(FaultOp::Get), counts.peak_in_flight), (16, 4));
    }

    #[test]
    fn conformance_under_injected_faults() {
        let store = Arc::new(FaultyStore::new(
            mem(),
            FaultConfig::default()
                .with_seed(3)
                .with_error_rate(0.1)
                .with_lost_ack_rate(0.1),
        ));
        let io = Arc::new(ObjectPageIo::new(store.clone(), "f", 512, config()).unwrap());
        conformance(Arc::clone(&io));
        let counts = store.counts();
        assert!(counts.errors > 0 && counts.lost_acks > 0, "{counts:?}");
        assert!(io.uploader().stats().retries > 0);
    }

    #[test]
    fn failures_are_errors_not_panics() {
        let store = Arc::new(FaultyStore::new(mem(), FaultConfig::default()));
        let io = ObjectPageIo::new(store.clone(), "e", 512, config()).unwrap();
        store.set_config(FaultConfig::default().with_error_rate(1.0));
        let write = io.write_page(0, &[1; 512]).unwrap_err();
        assert!(
            matches!(write, pageio::Error::Backend { page: Some(0), .. }),
            "{write:?}"
        );
        assert_eq!(io.num_pages().unwrap(), 0);
        store.set_config(FaultConfig::default());
        io.write_page(0, &[1; 512]).unwrap();
        store.set_config(FaultConfig::default().with_error_rate(1.0));
        let mut buf = vec![0; 512];
        assert!(io.read_page(0, &mut buf).is_err());
        assert!(io.truncate(0).is_err());
        store.set_config(FaultConfig::default());
        io.read_page(0, &mut buf).unwrap();
        assert_eq!(buf, vec![1; 512]);

        // A page object of the wrong size (another page size, say) is reported, not copied.
        let other = ObjectPageIo::new(store.clone(), "e", 1024, config()).unwrap();
        let mut big = vec![0; 1024];
        assert!(matches!(
            other.read_page(0, &mut big).unwrap_err(),
            pageio::Error::Backend { page: Some(0), .. }
        ));
    }

    #[test]
    fn bad_arguments_are_errors() {
        for prefix in ["", "/", "a//b", "a/../b"] {
            let error = ObjectPageIo::new(mem(), prefix, 4096, config()).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidConfig { .. } | Error::InvalidPath { .. }
                ),
                "{prefix:?}: {error:?}"
            );
        }
        for size in [0, 100, 4095, 2 << 20] {
            assert!(
                ObjectPageIo::new(mem(), "p", size, config()).is_err(),
                "{size}"
            );
        }
        let io = ObjectPageIo::new(mem(), "p", 512, config()).unwrap();
        assert!(matches!(
            io.write_page(u64::MAX, &[0; 512]).unwrap_err(),
            pageio::Error::OutOfRange { .. }
        ));
        assert!(io.truncate(u64::MAX).is_err());
        assert!(ObjectPageIo::new(mem(), "p", 512, config().with_worker_threads(0)).is_err());
    }

    #[test]
    fn page_names_parse_back() {
        let prefix = Path::from("db/pages");
        for no in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(page_number(&prefix, &page_path(&prefix, no)), Some(no));
        }
        for other in [
            "db/pages/num_pages",
            "db/pages/00000000000000a",
            "db/pages/000000000000000G",
            "db/pages/sub/0000000000000001",
            "db/other/0000000000000001",
            "db/pages/000000000000000A",
        ] {
            assert_eq!(page_number(&prefix, &Path::from(other)), None, "{other}");
        }
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ObjectPageIo>();
        check::<crate::Uploader>();
        check::<crate::Downloader>();
        check::<crate::S3Config>();
        check::<crate::FaultyStore>();
        check::<Error>();
    }

    #[test]
    fn futures_are_send() {
        fn check<T: Send>(_: &T) {}
        let up = crate::Uploader::new(mem(), UploaderConfig::default()).unwrap();
        let dl = crate::Downloader::new(mem(), DownloaderConfig::default()).unwrap();
        let path = Path::from("x");
        check(&up.put(&path, Bytes::new()));
        check(&up.overwrite(&path, Bytes::new()));
        check(&dl.get(&path));
    }
}
