//! A slot dropped without persisting (or failing to persist) leaves nothing behind: no file, no
//! reserved bytes, no handles, and the id can be reserved again. Checked for every persist path
//! the machine supports, since the named-temp path has a real file to clean up.

mod common;

use std::io::Write;

use common::{cache_dir, content, names, open};
use segcache::{CacheConfig, Error, PersistMode, SegmentId};

async fn drop_leaves_nothing(mode: PersistMode) {
    let (_tmp, dir) = cache_dir();
    let (cache, _) = open(CacheConfig::new(&dir).with_persist_mode(mode)).await;
    let id = SegmentId::from_u128(11);
    let data = content(11, 30_000);

    // Dropped half written.
    let mut slot = cache.reserve(id, data.len() as u64).await.expect("reserve");
    slot.write_all(&data[..10_000]).expect("write");
    let stats = cache.stats();
    assert_eq!(
        stats.reserved_bytes,
        data.len() as u64 + segcache::FOOTER_LEN
    );
    assert_eq!(stats.handles_in_use, 2, "a slot holds two handles");
    if mode == PersistMode::RenameNoReplace {
        assert_eq!(
            names(&dir).len(),
            1,
            "the named temporary file exists while writing"
        );
    }
    drop(slot);
    assert!(names(&dir).is_empty(), "{mode:?}: {:?}", names(&dir));
    let stats = cache.stats();
    assert_eq!(
        (stats.reserved_bytes, stats.handles_in_use, stats.segments),
        (0, 0, 0)
    );

    // A failed persist (not every byte written) drops the slot the same way.
    let slot = cache
        .reserve(id, data.len() as u64)
        .await
        .expect("reserve again");
    slot.write_at(0, &data[..100]).expect("write");
    slot.write_at(200, &data[200..]).expect("write");
    match slot.persist().await {
        Err(Error::Incomplete {
            id: i,
            written,
            len,
        }) => {
            assert_eq!(
                (i, written, len),
                (id, data.len() as u64 - 100, data.len() as u64)
            );
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert!(names(&dir).is_empty(), "{mode:?}: {:?}", names(&dir));
    let stats = cache.stats();
    assert_eq!((stats.reserved_bytes, stats.handles_in_use), (0, 0));
    assert!(!cache.contains(id));

    // Nothing of the abandoned slots shows up after a reopen either.
    drop(cache);
    let (_cache, report) = open(CacheConfig::new(&dir).with_persist_mode(mode)).await;
    assert_eq!((report.loaded, report.temp_files_deleted), (0, 0));
}

#[tokio::test]
async fn dropped_slots_leave_nothing() {
    let (_tmp, dir) = cache_dir();
    let (cache, report) = open(CacheConfig::new(&dir)).await;
    drop(cache);
    drop_leaves_nothing(PersistMode::RenameNoReplace).await;
    if report.probe.tmpfile_linkat.is_supported() {
        drop_leaves_nothing(PersistMode::TmpfileLinkat).await;
    }
    if report.probe.proc_self_fd.is_supported() {
        drop_leaves_nothing(PersistMode::ProcSelfFd).await;
    }
}
