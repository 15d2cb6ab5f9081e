//! `FaultyStore`: an `ObjectStore` wrapper that injects latency, errors and lost
//! acknowledgements, and counts requests (feature `faults`, part of `test-utils`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, future};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parking_lot::Mutex;

use crate::retry::Rng;

/// The kinds of request a [`FaultyStore`] tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultOp {
    /// `put_opts`.
    Put,
    /// `put_multipart_opts` (starting a multipart upload).
    MultipartCreate,
    /// `MultipartUpload::put_part`.
    Part,
    /// `MultipartUpload::complete`.
    Complete,
    /// `MultipartUpload::abort`.
    Abort,
    /// `get_opts` for data (ranged or not).
    Get,
    /// `get_opts` with `head` set.
    Head,
    /// `list` and `list_with_delimiter`.
    List,
    /// One path of `delete_stream`.
    Delete,
    /// `copy_opts`.
    Copy,
}

impl FaultOp {
    const ALL: [FaultOp; 10] = [
        FaultOp::Put,
        FaultOp::MultipartCreate,
        FaultOp::Part,
        FaultOp::Complete,
        FaultOp::Abort,
        FaultOp::Get,
        FaultOp::Head,
        FaultOp::List,
        FaultOp::Delete,
        FaultOp::Copy,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Requests whose effect can happen while the caller sees an error.
    fn is_write(self) -> bool {
        matches!(
            self,
            FaultOp::Put | FaultOp::Complete | FaultOp::Part | FaultOp::Delete | FaultOp::Copy
        )
    }
}

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Passes through at once.
    Pass,
    /// Takes this long, then passes through.
    Delay(Duration),
    /// Fails with a transient error without reaching the wrapped store.
    Error,
    /// Reaches the wrapped store, then fails with a transient error anyway: the write happened
    /// but its acknowledgement was lost.
    LostAck,
    /// GETs: the body arrives cut to half its length (the headers still give the full size).
    Truncate,
    /// GETs: one byte of the body arrives flipped.
    Corrupt,
}

/// The random faults of a [`FaultyStore`], drawn per request from a seeded generator (see the
/// type's documentation for what keeps them deterministic).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FaultConfig {
    /// The generator's seed. Default 0.
    pub seed: u64,
    /// Latency added to every request. Default 0.
    pub latency: Duration,
    /// The share of requests, in [0, 1], that take `tail_latency` longer. Default 0.
    pub tail_probability: f64,
    /// The extra latency of a tail request. Default 0.
    pub tail_latency: Duration,
    /// The share of requests, in [0, 1], that fail without reaching the store. Default 0.
    pub error_rate: f64,
    /// The share of writes (PUTs, parts, completes, deletes, copies), in [0, 1], whose
    /// acknowledgement is lost: the write happens, the caller sees an error. Default 0.
    pub lost_ack_rate: f64,
    /// The requests random faults apply to; `None` (the default) means all. Scripted faults
    /// apply regardless.
    pub ops: Option<Vec<FaultOp>>,
    /// Delivers GET bodies in chunks of at most this many bytes, as a network would (the
    /// in-memory store hands out whole objects). Default `None`: as the wrapped store does.
    pub chunk_size: Option<usize>,
    /// Delivers GET bodies at this many bytes per second (each chunk after the time its bytes
    /// take), so a large object takes longer than a small one, as over a network. The
    /// latencies above come before the first byte. Default `None`: at once.
    pub bandwidth: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            latency: Duration::ZERO,
            tail_probability: 0.0,
            tail_latency: Duration::ZERO,
            error_rate: 0.0,
            lost_ack_rate: 0.0,
            ops: None,
            chunk_size: None,
            bandwidth: None,
        }
    }
}

impl FaultConfig {
    /// Sets [`seed`](Self::seed).
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`latency`](Self::latency).
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the tail: `probability` of requests take `extra` longer.
    #[must_use]
    pub fn with_tail(mut self, probability: f64, extra: Duration) -> Self {
        self.tail_probability = probability;
        self.tail_latency = extra;
        self
    }

    /// Sets [`error_rate`](Self::error_rate).
    #[must_use]
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Sets [`lost_ack_rate`](Self::lost_ack_rate).
    #[must_use]
    pub fn with_lost_ack_rate(mut self, rate: f64) -> Self {
        self.lost_ack_rate = rate;
        self
    }

    /// Limits random faults to `ops`.
    #[must_use]
    pub fn with_ops(mut self, ops: impl IntoIterator<Item = FaultOp>) -> Self {
        self.ops = Some(ops.into_iter().collect());
        self
    }

    /// Sets [`chunk_size`](Self::chunk_size).
    #[must_use]
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = Some(chunk_size);
        self
    }

    /// Sets [`bandwidth`](Self::bandwidth), in bytes per second (at least 1).
    #[must_use]
    pub fn with_bandwidth(mut self, bytes_per_second: u64) -> Self {
        self.bandwidth = Some(bytes_per_second.max(1));
        self
    }

    fn applies_to(&self, op: FaultOp) -> bool {
        self.ops.as_ref().is_none_or(|ops| ops.contains(&op))
    }
}

/// The error a [`FaultyStore`] injects, as the source of an `object_store::Error::Generic`
/// (which objsync treats as transient).
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {}{op:?} of {path}", if *.lost_ack { "lost acknowledgement of " } else { "failed " })]
pub struct InjectedFault {
    /// The request.
    pub op: FaultOp,
    /// Its path.
    pub path: String,
    /// Whether the request reached the store (a lost acknowledgement).
    pub lost_ack: bool,
}

/// A snapshot of a [`FaultyStore`]'s counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultCounts {
    /// Requests seen, by kind.
    pub requests: HashMap<FaultOp, u64>,
    /// Errors injected (`Fault::Error`, random or scripted).
    pub errors: u64,
    /// Acknowledgements lost.
    pub lost_acks: u64,
    /// Requests that got the tail latency or a scripted delay.
    pub delayed: u64,
    /// Bodies truncated or corrupted.
    pub damaged: u64,
    /// Requests in flight now (from the call until the wrapped store answered; a GET's body is
    /// not included).
    pub in_flight: u64,
    /// The most requests ever in flight at once.
    pub peak_in_flight: u64,
}

impl FaultCounts {
    /// Requests of kind `op` seen.
    #[must_use]
    pub fn of(&self, op: FaultOp) -> u64 {
        self.requests.get(&op).copied().unwrap_or(0)
    }

    /// All requests seen.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// An [`ObjectStore`] wrapper that injects latency (with a tail), errors, lost
/// acknowledgements and damaged GET bodies, and counts requests and their peak concurrency.
///
/// Faults come from a script first — [`script`](Self::script) queues faults per kind of
/// request, consumed in order — and otherwise from [`FaultConfig`]'s rates, drawn from a
/// generator seeded with [`FaultConfig::seed`]. Draws happen in the order requests arrive, so
/// a run is reproducible when that order is: a single task, or a current-thread runtime
/// (ideally with paused time, where the injected latencies cost nothing). Latency is a tokio
/// sleep before the request reaches the wrapped store.
///
/// Injected errors are `object_store::Error::Generic` with an [`InjectedFault`] source.
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<State>,
}

struct State {
    /// Guards the configuration, the generator and the scripts; held for bookkeeping only.
    plan: Mutex<PlanState>,
    requests: [AtomicU64; FaultOp::ALL.len()],
    errors: AtomicU64,
    lost_acks: AtomicU64,
    delayed: AtomicU64,
    damaged: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

struct PlanState {
    config: FaultConfig,
    rng: Rng,
    scripts: HashMap<FaultOp, VecDeque<Fault>>,
}

/// What one request gets: a delay, then an action.
#[derive(Clone, Copy, Debug)]
struct Plan {
    delay: Duration,
    /// Whether `delay` is a tail or scripted delay (counted as `delayed`).
    slow: bool,
    action: Fault,
}

impl FaultyStore {
    /// Wraps `inner` with the random faults of `config`.
    #[must_use]
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Self {
        Self {
            inner,
            state: Arc::new(State {
                plan: Mutex::new(PlanState {
                    rng: Rng::new(config.seed),
                    config,
                    scripts: HashMap::new(),
                }),
                requests: std::array::from_fn(|_| AtomicU64::new(0)),
                errors: AtomicU64::new(0),
                lost_acks: AtomicU64::new(0),
                delayed: AtomicU64::new(0),
                damaged: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                peak_in_flight: AtomicU64::new(0),
            }),
        }
    }

    /// Wraps `inner` with no random faults: a request counter, until faults are scripted or
    /// configured.
    #[must_use]
    pub fn counting(inner: Arc<dyn ObjectStore>) -> Self {
        Self::new(inner, FaultConfig::default())
    }

    /// Queues `faults` for the next requests of kind `op`, one each, before any random fault.
    pub fn script(&self, op: FaultOp, faults: impl IntoIterator<Item = Fault>) {
        self.state
            .plan
            .lock()
            .scripts
            .entry(op)
            .or_default()
            .extend(faults);
    }

    /// Replaces the random faults (and reseeds the generator); scripts stay.
    pub fn set_config(&self, config: FaultConfig) {
        let mut plan = self.state.plan.lock();
        plan.rng = Rng::new(config.seed);
        plan.config = config;
    }

    /// The counters so far.
    #[must_use]
    pub fn counts(&self) -> FaultCounts {
        let s = &self.state;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FaultCounts {
            requests: FaultOp::ALL
                .iter()
                .map(|&op| (op, get(&s.requests[op.index()])))
                .filter(|&(_, n)| n > 0)
                .collect(),
            errors: get(&s.errors),
            lost_acks: get(&s.lost_acks),
            delayed: get(&s.delayed),
            damaged: get(&s.damaged),
            in_flight: get(&s.in_flight),
            peak_in_flight: get(&s.peak_in_flight),
        }
    }

    /// Zeroes the counters (the peak becomes the current number in flight).
    pub fn reset_counts(&self) {
        let s = &self.state;
        for counter in s
            .requests
            .iter()
            .chain([&s.errors, &s.lost_acks, &s.delayed, &s.damaged])
        {
            counter.store(0, Ordering::Relaxed);
        }
        s.peak_in_flight
            .store(s.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

impl State {
    /// Counts a request of kind `op` and decides its fate.
    fn plan(&self, op: FaultOp) -> Plan {
        self.requests[op.index()].fetch_add(1, Ordering::Relaxed);
        let mut state = self.plan.lock();
        if let Some(fault) = state.scripts.get_mut(&op).and_then(VecDeque::pop_front) {
            return match fault {
                Fault::Delay(delay) => Plan {
                    delay,
                    slow: true,
                    action: Fault::Pass,
                },
                action => Plan {
                    delay: Duration::ZERO,
                    slow: false,
                    action,
                },
            };
        }
        // Always three draws, whatever the outcome, so that one request's fate does not shift
        // the next one's.
        let (tail, error, lost) = (
            state.rng.next_f64(),
            state.rng.next_f64(),
            state.rng.next_f64(),
        );
        let config = &state.config;
        if !config.applies_to(op) {
            return Plan {
                delay: Duration::ZERO,
                slow: false,
                action: Fault::Pass,
            };
        }
        let slow = tail < config.tail_probability;
        let delay = if slow {
            config.latency.saturating_add(config.tail_latency)
        } else {
            config.latency
        };
        let action = if error < config.error_rate {
            Fault::Error
        } else if op.is_write() && lost < config.lost_ack_rate {
            Fault::LostAck
        } else {
            Fault::Pass
        };
        Plan {
            delay,
            slow,
            action,
        }
    }

    fn injected(&self, op: FaultOp, path: &Path, lost_ack: bool) -> object_store::Error {
        let counter = if lost_ack {
            &self.lost_acks
        } else {
            &self.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        object_store::Error::Generic {
            store: "FaultyStore",
            source: Box::new(InjectedFault {
                op,
                path: path.to_string(),
                lost_ack,
            }),
        }
    }

    /// Carries out `plan` around `request`.
    async fn run<T>(
        &self,
        op: FaultOp,
        path: &Path,
        plan: Plan,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let _in_flight = InFlight::new(self);
        if plan.slow {
            self.delayed.fetch_add(1, Ordering::Relaxed);
        }
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        match plan.action {
            Fault::Error => Err(self.injected(op, path, false)),
            Fault::LostAck => {
                request.await?;
                Err(self.injected(op, path, true))
            }
            _ => request.await,
        }
    }
}

/// Counts a request in flight while alive.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn new(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `result` with its body cut or flipped, as `action` says.
async fn damage(result: GetResult, action: Fault) -> object_store::Result<GetResult> {
    let meta = result.meta.clone();
    let range = result.range.clone();
    let attributes = result.attributes.clone();
    let extensions = result.extensions.clone();
    let body = result.bytes().await?;
    let body: Bytes = match action {
        Fault::Truncate => body.slice(..body.len() / 2),
        Fault::Corrupt if !body.is_empty() => {
            let mut flipped = BytesMut::from(body.as_ref());
            let middle = flipped.len() / 2;
            flipped[middle] ^= 0x5A;
            flipped.freeze()
        }
        _ => body,
    };
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(future::ready(Ok(body))).boxed()),
        meta,
        range,
        attributes,
        extensions,
    })
}

/// `result` with its body split into chunks of at most `size` bytes.
fn rechunk(result: GetResult, size: usize) -> GetResult {
    let GetResult {
        payload,
        meta,
        range,
        attributes,
        extensions,
    } = result;
    let body = GetResult {
        payload,
        meta: meta.clone(),
        range: range.clone(),
        attributes: attributes.clone(),
        extensions: extensions.clone(),
    }
    .into_stream();
    let chunks = body.flat_map(move |chunk| {
        let pieces: Vec<object_store::Result<Bytes>> = match chunk {
            Ok(chunk) => (0..chunk.len().div_ceil(size))
                .map(|i| Ok(chunk.slice(i * size..chunk.len().min((i + 1) * size))))
                .collect(),
            Err(error) => vec![Err(error)],
        };
        futures::stream::iter(pieces)
    });
    GetResult {
        payload: GetResultPayload::Stream(chunks.boxed()),
        meta,
        range,
        attributes,
        extensions,
    }
}

/// `result` with each body chunk delivered after the time its bytes take at `rate` bytes per
/// second.
fn throttle(result: GetResult, rate: u64) -> GetResult {
    let GetResult {
        payload,
        meta,
        range,
        attributes,
        extensions,
    } = result;
    let body = GetResult {
        payload,
        meta: meta.clone(),
        range: range.clone(),
        attributes: attributes.clone(),
        extensions: extensions.clone(),
    }
    .into_stream();
    let paced = body.then(move |chunk| async move {
        if let Ok(bytes) = &chunk {
            let nanos = (bytes.len() as u128 * 1_000_000_000) / u128::from(rate);
            tokio::time::sleep(Duration::from_nanos(
                u64::try_from(nanos).unwrap_or(u64::MAX),
            ))
            .await;
        }
        chunk
    });
    GetResult {
        payload: GetResultPayload::Stream(paced.boxed()),
        meta,
        range,
        attributes,
        extensions,
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let plan = self.state.plan(FaultOp::Put);
        self.state
            .run(
                FaultOp::Put,
                location,
                plan,
                self.inner.put_opts(location, payload, opts),
            )
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let plan = self.state.plan(FaultOp::MultipartCreate);
        let upload = self
            .state
            .run(
                FaultOp::MultipartCreate,
                location,
                plan,
                self.inner.put_multipart_opts(location, opts),
            )
            .await?;
        Ok(Box::new(FaultyUpload {
            inner: upload,
            state: Arc::clone(&self.state),
            location: location.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head {
            FaultOp::Head
        } else {
            FaultOp::Get
        };
        let plan = self.state.plan(op);
        let result = self
            .state
            .run(op, location, plan, self.inner.get_opts(location, options))
            .await?;
        let result = match plan.action {
            Fault::Truncate | Fault::Corrupt if op == FaultOp::Get => {
                self.state.damaged.fetch_add(1, Ordering::Relaxed);
                damage(result, plan.action).await?
            }
            _ => result,
        };
        let (chunk_size, bandwidth) = {
            let plan = self.state.plan.lock();
            (plan.config.chunk_size, plan.config.bandwidth)
        };
        let result = match chunk_size {
            Some(size) if op == FaultOp::Get => rechunk(result, size.max(1)),
            _ => result,
        };
        Ok(match bandwidth {
            Some(rate) if op == FaultOp::Get => throttle(result, rate),
            _ => result,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = Arc::clone(&self.inner);
        let state = Arc::clone(&self.state);
        locations
            .then(move |location| {
                let inner = Arc::clone(&inner);
                let state = Arc::clone(&state);
                async move {
                    let location = location?;
                    let plan = state.plan(FaultOp::Delete);
                    let one = futures::stream::once(future::ready(Ok(location.clone()))).boxed();
                    state
                        .run(FaultOp::Delete, &location, plan, async {
                            inner
                                .delete_stream(one)
                                .next()
                                .await
                                .unwrap_or_else(|| Ok(location.clone()))
                        })
                        .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let plan = self.state.plan(FaultOp::List);
        let state = Arc::clone(&self.state);
        let path = prefix.cloned().unwrap_or_default();
        let listing = self.inner.list(prefix);
        futures::stream::once(async move {
            let outcome = state
                .run(FaultOp::List, &path, plan, future::ready(Ok(())))
                .await;
            match outcome {
                Ok(()) => listing,
                Err(error) => futures::stream::once(future::ready(Err(error))).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let plan = self.state.plan(FaultOp::List);
        let path = prefix.cloned().unwrap_or_default();
        self.state
            .run(
                FaultOp::List,
                &path,
                plan,
                self.inner.list_with_delimiter(prefix),
            )
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let plan = self.state.plan(FaultOp::Copy);
        self.state
            .run(
                FaultOp::Copy,
                to,
                plan,
                self.inner.copy_opts(from, to, options),
            )
            .await
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &format_args!("{}", self.inner))
            .field("config", &self.state.plan.lock().config)
            .field("counts", &self.counts())
            .finish()
    }
}

/// A multipart upload whose parts, completion and abort go through the store's faults.
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    state: Arc<State>,
    location: Path,
}

impl fmt::Debug for FaultyUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyUpload")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let plan = self.state.plan(FaultOp::Part);
        let part = self.inner.put_part(data);
        let state = Arc::clone(&self.state);
        let location = self.location.clone();
        Box::pin(async move { state.run(FaultOp::Part, &location, plan, part).await })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let plan = self.state.plan(FaultOp::Complete);
        let state = Arc::clone(&self.state);
        state
            .run(
                FaultOp::Complete,
                &self.location,
                plan,
                self.inner.complete(),
            )
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let plan = self.state.plan(FaultOp::Abort);
        let state = Arc::clone(&self.state);
        state
            .run(FaultOp::Abort, &self.location, plan, self.inner.abort())
            .await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    fn store(config: FaultConfig) -> FaultyStore {
        FaultyStore::new(Arc::new(InMemory::new()), config)
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_faults_come_first_and_in_order() {
        let s = store(FaultConfig::default());
        let path = Path::from("a");
        s.script(FaultOp::Put, [Fault::Error, Fault::LostAck]);
        assert!(s.put(&path, Bytes::from_static(b"x").into()).await.is_err());
        assert!(
            s.inner().head(&path).await.is_err(),
            "an injected error must not write"
        );
        assert!(s.put(&path, Bytes::from_static(b"x").into()).await.is_err());
        assert!(s.inner().head(&path).await.is_ok(), "a lost ack must write");
        s.put(&path, Bytes::from_static(b"y").into()).await.unwrap();
        let counts = s.counts();
        assert_eq!(
            (counts.of(FaultOp::Put), counts.errors, counts.lost_acks),
            (3, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delays_use_tokio_time() {
        let s = store(FaultConfig::default().with_latency(Duration::from_millis(10)));
        s.script(FaultOp::Head, [Fault::Delay(Duration::from_secs(3))]);
        let path = Path::from("a");
        s.put(&path, Bytes::from_static(b"x").into()).await.unwrap();
        let start = tokio::time::Instant::now();
        s.head(&path).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let start = tokio::time::Instant::now();
        s.head(&path).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        assert_eq!(s.counts().delayed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_faults() {
        async fn run(seed: u64) -> Vec<bool> {
            let s = store(FaultConfig::default().with_seed(seed).with_error_rate(0.3));
            let mut outcomes = Vec::new();
            for i in 0..64 {
                let path = Path::from(format!("p{i}"));
                outcomes.push(s.put(&path, Bytes::from_static(b"x").into()).await.is_ok());
            }
            outcomes
        }
        let a = run(42).await;
        assert_eq!(a, run(42).await);
        assert_ne!(a, run(43).await);
        let failures = a.iter().filter(|ok| !**ok).count();
        assert!(
            (5..40).contains(&failures),
            "{failures} of 64 failed at rate 0.3"
        );
    }

    #[tokio::test]
    async fn damaged_bodies_and_filtered_ops() {
        let s = store(
            FaultConfig::default()
                .with_error_rate(1.0)
                .with_ops([FaultOp::Head]),
        );
        let path = Path::from("a");
        s.put(&path, Bytes::from_static(b"0123456789").into())
            .await
            .unwrap();
        assert!(s.head(&path).await.is_err());
        s.script(FaultOp::Get, [Fault::Truncate, Fault::Corrupt]);
        let cut = s.get(&path).await.unwrap();
        assert_eq!(cut.meta.size, 10);
        assert_eq!(cut.bytes().await.unwrap().len(), 5);
        let flipped = s.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(flipped.len(), 10);
        assert_ne!(flipped.as_ref(), b"0123456789");
        assert_eq!(s.counts().damaged, 2);
        assert_eq!(s.to_string(), "FaultyStore(InMemory)");
    }

    #[tokio::test]
    async fn lists_and_deletes_are_counted_and_can_fail() {
        let s = store(FaultConfig::default());
        for name in ["d/1", "d/2"] {
            s.put(&Path::from(name), Bytes::from_static(b"x").into())
                .await
                .unwrap();
        }
        s.script(FaultOp::List, [Fault::Error]);
        let failed: Vec<_> = s.list(Some(&Path::from("d"))).collect().await;
        assert!(failed.len() == 1 && failed[0].is_err());
        let listed: Vec<_> = s.list(Some(&Path::from("d"))).collect().await;
        assert_eq!(listed.len(), 2);
        s.script(FaultOp::Delete, [Fault::Error]);
        assert!(s.delete(&Path::from("d/1")).await.is_err());
        s.delete(&Path::from("d/1")).await.unwrap();
        assert!(s.head(&Path::from("d/1")).await.is_err());
        let counts = s.counts();
        assert_eq!(
            (counts.of(FaultOp::List), counts.of(FaultOp::Delete)),
            (2, 2)
        );
    }
}
