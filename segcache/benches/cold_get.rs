//! `segcache/cold_get`: `SegmentStore::get` of a segment that is in the object store but not in
//! the local cache (miss → download → write a slot → persist → map → pin), against a plain
//! `object_store` get of the same object and a write of its bytes to a file in the same
//! directory, measured in this run. The remote is `object_store::memory::InMemory`, so the
//! figures are the local costs on top of a free network.
//!
//! Criterion ids (read by `cargo xtask bench`): `segcache_cold_get/{ours,object_store_get_write}`.
//!
//! Both sides run in one current-thread tokio runtime (time enabled, for the downloader's
//! hedging), built before the group; each operation is one `block_on`, timed alone
//! (`iter_custom`).
//! - `ours`: `SegmentStore::get` with the default `StoreConfig`: the downloader's get (checksum
//!   verified), `reserve`, the write on the blocking pool, `persist` (footer, `fdatasync`,
//!   `linkat`, directory `fsync`, open + map).
//! - `object_store_get_write`: `ObjectStore::get` + `bytes()`, then create the file, write the
//!   bytes, `sync_data`, and `fsync` the directory: the same durability work as ours, without
//!   the checksum, the atomic link or the mapping.
//!
//! Outside the clock: checking the bytes, dropping the pin and `evict_local` (unmap + unlink)
//! for ours, unlinking the file for the baseline. The objects were uploaded once with
//! `SegmentStore::put` (which stores their checksums) before the group.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use segcache::{CacheConfig, SegmentId, SegmentStore, StoreConfig};

use common::is_bench_run;

/// Data bytes per segment.
const LEN: usize = 1 << 20;
/// Objects in the store; the operations go round them.
const OBJECTS: u128 = 8;

/// The baseline: get the object, write it to `file_path`, sync the file and the directory.
async fn get_and_write(
    remote: &dyn ObjectStore,
    path: &object_store::path::Path,
    file_path: &Path,
    dir_handle: &File,
) -> usize {
    let bytes = remote
        .get(path)
        .await
        .expect("object_store get")
        .bytes()
        .await
        .expect("object bytes");
    let mut file = File::create_new(file_path).expect("create file");
    file.write_all(&bytes).expect("write");
    file.sync_data().expect("sync_data");
    dir_handle.sync_all().expect("fsync dir");
    bytes.len()
}

/// Everything the group uses, built and checked before it starts.
struct Setup {
    rt: tokio::runtime::Runtime,
    store: SegmentStore,
    remote: Arc<InMemory>,
    data: Vec<Vec<u8>>,
    dir_handle: File,
    baseline_file: PathBuf,
    /// Holds the cache directory; dropped last.
    _tmp: tempfile::TempDir,
}

/// Opens the store, uploads the objects (then drops their local copies), and runs one checked
/// warm-up round of each side.
fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("segments");
    let remote = Arc::new(InMemory::new());
    let (store, _) = rt
        .block_on(SegmentStore::open(
            CacheConfig::new(&dir),
            remote.clone(),
            "segments",
            StoreConfig::default(),
        ))
        .expect("open store");
    let data: Vec<Vec<u8>> = (0..OBJECTS)
        .map(|n| {
            (0..LEN)
                .map(|i| ((i as u128 * 7 + n) % 251) as u8)
                .collect()
        })
        .collect();
    for n in 0..OBJECTS {
        let id = SegmentId::from_u128(n);
        let seg = rt
            .block_on(store.put(id, Bytes::from(data[n as usize].clone())))
            .expect("put");
        assert!(*seg == *data[n as usize], "put bytes");
        drop(seg);
        assert!(store.evict_local(id).expect("evict_local"), "cached");
    }
    let dir_handle = File::open(&dir).expect("open dir");
    let baseline_file = dir.join("baseline.bin");
    for n in 0..OBJECTS {
        let id = SegmentId::from_u128(n);
        let seg = rt.block_on(store.get(id)).expect("get");
        assert!(*seg == *data[n as usize], "downloaded bytes");
        drop(seg);
        assert!(store.evict_local(id).expect("evict_local"));
        let path = store.object_path(id);
        let len = rt.block_on(get_and_write(
            remote.as_ref(),
            &path,
            &baseline_file,
            &dir_handle,
        ));
        assert_eq!(len, LEN);
        assert!(std::fs::read(&baseline_file).expect("read back") == data[n as usize]);
        std::fs::remove_file(&baseline_file).expect("remove");
    }
    Setup {
        rt,
        store,
        remote,
        data,
        dir_handle,
        baseline_file,
        _tmp: tmp,
    }
}

fn main() {
    if !is_bench_run() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let Setup {
        rt,
        store,
        remote,
        data,
        dir_handle,
        baseline_file,
        _tmp,
    } = setup();
    let downloads_before = store.stats().downloads;

    let mut group = c.benchmark_group("segcache_cold_get");
    let mut next = 0u128;
    let mut ours_ops = 0u64;
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let n = next % OBJECTS;
                next += 1;
                let id = SegmentId::from_u128(n);
                let start = Instant::now();
                let seg = rt.block_on(store.get(id)).expect("get");
                timed += start.elapsed();
                assert_eq!(seg.len(), LEN, "segment length");
                assert!(seg[LEN / 2] == data[n as usize][LEN / 2], "segment bytes");
                drop(seg);
                assert!(store.evict_local(id).expect("evict_local"), "was cached");
                ours_ops += 1;
            }
            timed
        });
    });
    group.bench_function("object_store_get_write", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let n = next % OBJECTS;
                next += 1;
                let path = store.object_path(SegmentId::from_u128(n));
                let start = Instant::now();
                let len = rt.block_on(get_and_write(
                    remote.as_ref(),
                    &path,
                    &baseline_file,
                    &dir_handle,
                ));
                timed += start.elapsed();
                assert_eq!(len, LEN, "file length");
                std::fs::remove_file(&baseline_file).expect("remove");
            }
            timed
        });
    });
    group.finish();

    // Every timed `get` was a miss that downloaded; nothing is left cached.
    let stats = store.stats();
    assert_eq!(
        stats.downloads - downloads_before,
        ours_ops,
        "one download per get"
    );
    assert_eq!(stats.cache.segments, 0, "every segment evicted again");
    c.final_summary();
}
