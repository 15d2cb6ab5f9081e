//! Peak memory of concurrent misses: 64 `SegmentStore::get`s at once, each of a distinct
//! 16 MiB segment that is in the object store (a `LocalFileSystem` directory, so the objects
//! are on disk, not in this process) but not in a cache whose budget is 64 MiB. Prints the
//! process's peak resident set (`VmHWM`) during the gets, above what it was before them.
//!
//! The budget bounds the cache's disk bytes; the question here is whether it also bounds the
//! memory a burst of misses needs (downloads held in memory before a slot is reserved would
//! take 64 × 16 MiB).
//!
//! `cargo run --release -p segcache --example miss_memory [SEGMENTS [MIB [BUDGET_MIB]]]`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use segcache::{CacheConfig, SegmentId, SegmentStore, StoreConfig};

/// `VmHWM` or `VmRSS` of this process, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field in /proc/self/status")
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let segments = args.next().unwrap_or(64);
    let mib = args.next().unwrap_or(16);
    let budget_mib = args.next().unwrap_or(64);
    let len = (mib << 20) as usize;

    let dir = tempfile::tempdir().expect("tempdir");
    let remote_dir = dir.path().join("remote");
    std::fs::create_dir(&remote_dir).expect("remote dir");
    let remote: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(&remote_dir).expect("local store"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    runtime.block_on(async {
        let store_config = StoreConfig::default();
        let (store, _) = SegmentStore::open(
            CacheConfig::new(dir.path().join("cache")).with_max_bytes(budget_mib << 20),
            Arc::clone(&remote),
            "segments",
            store_config,
        )
        .await
        .expect("open the store");
        // The objects, one at a time (each buffer freed before the next).
        for n in 0..segments {
            let id = SegmentId::from_u128(u128::from(n) + 1);
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ n) as u8).collect();
            remote
                .put(&store.object_path(id), PutPayload::from(Bytes::from(data)))
                .await
                .expect("put the object");
        }
        let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM to VmRSS
        let before = status_kib("VmHWM:");
        let started = Instant::now();
        let gets: Vec<_> = (0..segments)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = SegmentId::from_u128(u128::from(n) + 1);
                    store.get(id).await.map(|segment| segment.len())
                })
            })
            .collect();
        let (mut ok, mut failed) = (0, Vec::new());
        for get in gets {
            match get.await.expect("task") {
                Ok(got) => {
                    assert_eq!(got, len);
                    ok += 1;
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        let peak = status_kib("VmHWM:");
        println!(
            "miss_memory: {segments} concurrent misses of {mib} MiB, budget {budget_mib} MiB: \
             {ok} ok, {} failed, {:.1} s; peak RSS {} MiB above the {} MiB before \
             (all segments: {} MiB)",
            failed.len(),
            started.elapsed().as_secs_f64(),
            peak.saturating_sub(before) >> 10,
            before >> 10,
            (segments * mib),
        );
        if let Some(first) = failed.first() {
            println!("miss_memory: first failure: {first}");
        }
    });
}
