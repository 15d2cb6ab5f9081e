//! Each persist path, forced: the probe's verdict and the cache's behaviour agree. A supported
//! path round-trips segments and handles "already there"; an unsupported one is refused at open
//! with a clear error, never silently replaced by another path.

mod common;

use common::{cache_dir, content, names, open, put, seg_name};
use segcache::{CacheConfig, Error, PersistMode, SegmentCache, SegmentId};

/// Exercises a cache whose persist path is `mode`.
async fn exercise(mode: PersistMode) {
    let (_tmp, dir) = cache_dir();
    let (cache, report) = open(CacheConfig::new(&dir).with_persist_mode(mode)).await;
    assert_eq!(cache.persist_mode(), mode);
    assert_eq!(report.persist_mode, mode);

    let data = content(5, 50_000);
    let seg = put(&cache, 5, &data).await;
    assert_eq!(&seg[..], &data[..]);
    // Only the segment is in the directory: no temporary file survives a persist.
    assert_eq!(names(&dir), [seg_name(5)]);

    // Two slots for one id: the first persist wins, the second returns the first's segment.
    let id = SegmentId::from_u128(6);
    let first = cache.reserve(id, 4).await.expect("reserve");
    let second = cache
        .reserve(id, 4)
        .await
        .expect("second reserve while the first is live");
    first.write_at(0, b"one!").expect("write");
    second.write_at(0, b"two!").expect("write");
    assert_eq!(&first.persist().await.expect("persist")[..], b"one!");
    assert_eq!(&second.persist().await.expect("persist")[..], b"one!");
    assert_eq!(names(&dir), [seg_name(5), seg_name(6)]);
    assert_eq!(cache.stats().already_present, 1);
    drop(seg);

    drop(cache);
    let (cache, report) = open(CacheConfig::new(&dir).with_persist_mode(mode)).await;
    assert_eq!((report.loaded, report.temp_files_deleted), (2, 0));
    let seg = cache
        .get(SegmentId::from_u128(5))
        .await
        .expect("get")
        .expect("cached");
    assert_eq!(&seg[..], &data[..]);
}

/// Forces `mode`: it works if and only if the probe says so.
async fn forced(mode: PersistMode, supported: bool) {
    if supported {
        exercise(mode).await;
        return;
    }
    let (_tmp, dir) = cache_dir();
    match SegmentCache::open(CacheConfig::new(&dir).with_persist_mode(mode)).await {
        Err(Error::PersistUnsupported { mode: m, source }) => {
            assert_eq!(m, mode);
            assert!(
                source.raw_os_error().is_some(),
                "the probe's OS error is kept: {source}"
            );
        }
        other => panic!("{mode:?} is unsupported per the probe, but open gave {other:?}"),
    }
}

#[tokio::test]
async fn each_path_forced_agrees_with_the_probe() {
    let (_tmp, dir) = cache_dir();
    let (cache, report) = open(CacheConfig::new(&dir)).await;
    let probe = report.probe;
    println!("{probe:?}");
    assert_eq!(probe, cache.persist_probe());
    // The named-temp path works on any Linux filesystem the tests run on.
    assert!(probe.rename_noreplace.is_supported(), "{probe:?}");
    // Auto takes the first supported path, in order.
    let expect = if probe.tmpfile_linkat.is_supported() {
        PersistMode::TmpfileLinkat
    } else if probe.proc_self_fd.is_supported() {
        PersistMode::ProcSelfFd
    } else {
        PersistMode::RenameNoReplace
    };
    assert_eq!(cache.persist_mode(), expect);
    drop(cache);

    forced(
        PersistMode::TmpfileLinkat,
        probe.tmpfile_linkat.is_supported(),
    )
    .await;
    forced(PersistMode::ProcSelfFd, probe.proc_self_fd.is_supported()).await;
    forced(PersistMode::RenameNoReplace, true).await;
}
