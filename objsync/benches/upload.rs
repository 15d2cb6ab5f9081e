//! Upload throughput (BENCH.md row `objsync/upload`): many 4 MiB objects through [`Uploader`]
//! to the test S3 server, against plain `object_store` puts of the same bytes at the same
//! concurrency.
//!
//! The server is the one objsync's S3 tests use ([`TestS3`]): an external one when
//! `PAGESTORE_S3_ENDPOINT` (and the `AWS_*` environment) names it, else the in-process s3s-fs
//! server. Both sides keep `CONCURRENCY` requests in flight (`buffer_unordered`, and the
//! uploader's own bound set to the same number) and write fresh keys every round; each round's
//! objects are listed and checked, then deleted, outside the timing. Rounds alternate which side
//! goes first, and each side's figure is the median of its rounds.
//!
//! Not a criterion benchmark: one iteration moves hundreds of MiB, far too slow for criterion's
//! sampling. The figures go to `$PAGESTORE_BENCH_METRICS/objsync_upload.json`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use objsync::testing::{TestS3, pattern};
use objsync::{PutOutcome, Uploader, UploaderConfig};

/// The size of every object.
const OBJECT_SIZE: usize = 4 << 20;
/// Objects per round: BENCH.md's 256, or 64 with `--quick`.
const OBJECTS_FULL: usize = 256;
const OBJECTS_QUICK: usize = 64;
/// Timed rounds per side.
const ROUNDS_FULL: usize = 5;
const ROUNDS_QUICK: usize = 3;
/// Requests in flight on both sides.
const CONCURRENCY: usize = 8;
/// Distinct payloads, reused round-robin so the data set does not take 1 GiB of memory.
const PAYLOADS: usize = 8;
/// Objects per side in the untimed warm-up round (connections, server directories, caches).
const WARM_UP_OBJECTS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ours,
    Baseline,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Baseline => "object_store",
        }
    }
}

struct Bench {
    s3: TestS3,
    store: Arc<dyn ObjectStore>,
    uploader: Uploader,
    payloads: Vec<Bytes>,
}

impl Bench {
    fn payload(&self, i: usize) -> Bytes {
        self.payloads[i % PAYLOADS].clone()
    }

    /// Uploads `objects` objects under a fresh prefix and returns the time it took and the
    /// prefix; nothing but the uploads is timed.
    async fn round(&self, side: Side, objects: usize) -> (Duration, Path) {
        let prefix = self
            .s3
            .unique_prefix(&format!("bench-upload-{}", side.name()));
        let paths: Vec<Path> = (0..objects)
            .map(|i| prefix.clone().join(format!("{i:04}")))
            .collect();
        let start = Instant::now();
        match side {
            Side::Ours => {
                futures::stream::iter(paths.iter().enumerate())
                    .map(|(i, path)| async move {
                        let outcome = self
                            .uploader
                            .put(path, self.payload(i))
                            .await
                            .expect("Uploader::put");
                        assert_eq!(outcome, PutOutcome::Created, "{path}: a fresh key");
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect::<()>()
                    .await;
            }
            Side::Baseline => {
                futures::stream::iter(paths.iter().enumerate())
                    .map(|(i, path)| async move {
                        self.store
                            .put(path, PutPayload::from(self.payload(i)))
                            .await
                            .expect("object_store put");
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect::<()>()
                    .await;
            }
        }
        (start.elapsed(), prefix)
    }

    /// Checks that the round under `prefix` left exactly `objects` objects of the right size,
    /// then deletes them.
    async fn check_and_delete(&self, prefix: &Path, objects: usize) {
        let listed: Vec<_> = self
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .expect("list");
        assert_eq!(listed.len(), objects, "objects under {prefix}");
        for meta in &listed {
            assert_eq!(meta.size, OBJECT_SIZE as u64, "{}", meta.location);
        }
        // One object read back in full: the bytes, not just the sizes, arrived.
        let first = prefix.clone().join("0000");
        let got = self
            .store
            .get(&first)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        assert!(got == self.payload(0), "{first}: content");
        futures::stream::iter(listed)
            .map(|meta| async move {
                self.store.delete(&meta.location).await.expect("delete");
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<()>()
            .await;
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
    }
}

fn metrics_dir() -> PathBuf {
    std::env::var_os("PAGESTORE_BENCH_METRICS").map_or_else(
        || {
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let root = manifest.parent().expect("crate inside the workspace");
            root.join("target").join("bench").join("metrics")
        },
        PathBuf::from,
    )
}

fn list(xs: &[f64]) -> String {
    let items: Vec<String> = xs.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", items.join(", "))
}

fn main() {
    // `cargo bench` (and so `cargo xtask bench`) passes `--bench`; nextest's listing and
    // `cargo test` do not, and then the binary does nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (objects, rounds) = if quick {
        (OBJECTS_QUICK, ROUNDS_QUICK)
    } else {
        (OBJECTS_FULL, ROUNDS_FULL)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let s3 = TestS3::from_env_or_start().expect("an S3 server");
    eprintln!("objsync_upload: {}", s3.description());
    let store = s3.store().expect("S3 store");
    let uploader = Uploader::new(
        Arc::clone(&store),
        UploaderConfig::default().with_max_concurrency(CONCURRENCY),
    )
    .expect("uploader");
    let payloads = (0..PAYLOADS)
        .map(|i| pattern(OBJECT_SIZE, 0x0B15_0000 + i as u64))
        .collect();
    let bench = Bench {
        s3,
        store,
        uploader,
        payloads,
    };

    let (ours_secs, baseline_secs) = runtime.block_on(async {
        for side in [Side::Ours, Side::Baseline] {
            let (_, prefix) = bench.round(side, WARM_UP_OBJECTS).await;
            bench.check_and_delete(&prefix, WARM_UP_OBJECTS).await;
        }
        let (mut ours, mut baseline) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let order = if r % 2 == 0 {
                [Side::Ours, Side::Baseline]
            } else {
                [Side::Baseline, Side::Ours]
            };
            for side in order {
                let (elapsed, prefix) = bench.round(side, objects).await;
                bench.check_and_delete(&prefix, objects).await;
                let secs = elapsed.as_secs_f64();
                eprintln!(
                    "objsync_upload: round {r} {:>12}: {objects} x 4 MiB in {secs:.3} s",
                    side.name()
                );
                match side {
                    Side::Ours => ours.push(secs),
                    Side::Baseline => baseline.push(secs),
                }
            }
        }
        (ours, baseline)
    });
    let stats = bench.uploader.stats();
    let expected_puts = ((WARM_UP_OBJECTS + objects * rounds) * OBJECT_SIZE) as u64;
    assert_eq!(
        stats.bytes_up, expected_puts,
        "the uploader sent every byte"
    );
    assert_eq!(
        stats.retries, 0,
        "no retries: the comparison is of clean runs"
    );

    let bytes = (objects * OBJECT_SIZE) as f64;
    let ours = bytes / median(&ours_secs);
    let baseline = bytes / median(&baseline_secs);
    let json = format!(
        "{{\"ours\": {ours}, \"baseline_value\": {baseline}, \"extra\": {{\"objects\": {objects}, \
         \"object_bytes\": {OBJECT_SIZE}, \"concurrency\": {CONCURRENCY}, \"rounds\": {rounds}, \
         \"quick\": {quick}, \"external_server\": {}, \"ours_secs\": {}, \
         \"baseline_secs\": {}}}}}\n",
        bench.s3.is_external(),
        list(&ours_secs),
        list(&baseline_secs),
    );
    let dir = metrics_dir();
    std::fs::create_dir_all(&dir).expect("create metrics dir");
    let path = dir.join("objsync_upload.json");
    std::fs::write(&path, json).expect("write metrics");
    eprintln!(
        "objsync_upload: ours {:.1} MiB/s, object_store {:.1} MiB/s ({objects} x 4 MiB, median \
         of {rounds}) -> {}",
        ours / f64::from(1 << 20),
        baseline / f64::from(1 << 20),
        path.display()
    );
    // The server (and its temp dir) goes before the runtime its clients ran on.
    drop(bench);
    drop(runtime);
}
