//! The cache directory is created 0700 and segment files are 0600 on every persist path; a
//! looser directory mode is tightened and reported; a directory owned by another user is
//! refused; a directory already in use by another cache is refused.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{cache_dir, content, mode, open, put, seg_name};
use segcache::{CacheConfig, Error, PersistMode, SegmentCache};

#[tokio::test]
async fn modes_and_ownership() {
    let (tmp, dir) = cache_dir();
    // Created with missing parents; the cache directory itself is exactly 0700.
    let nested = dir.join("a").join("b");
    let (cache, report) = open(CacheConfig::new(&nested)).await;
    assert_eq!(mode(&nested), 0o700);
    assert_eq!(report.dir_mode_fixed, None);
    drop(put(&cache, 1, &content(1, 100)).await);
    assert_eq!(mode(&nested.join(seg_name(1))), 0o600);
    drop(cache);

    // Every supported persist path makes 0600 files.
    for persist in [
        PersistMode::TmpfileLinkat,
        PersistMode::ProcSelfFd,
        PersistMode::RenameNoReplace,
    ] {
        let (_t, d) = cache_dir();
        let Ok((cache, _)) =
            SegmentCache::open(CacheConfig::new(&d).with_persist_mode(persist)).await
        else {
            continue; // unsupported here: covered by tests/persist_paths.rs
        };
        drop(put(&cache, 2, &content(2, 10)).await);
        assert_eq!(mode(&d.join(seg_name(2))), 0o600, "{persist:?}");
    }

    // A looser existing directory is tightened, and the old mode reported.
    fs::set_permissions(&nested, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (cache, report) = open(CacheConfig::new(&nested)).await;
    assert_eq!(report.dir_mode_fixed, Some(0o755));
    assert_eq!(mode(&nested), 0o700);
    assert_eq!(report.loaded, 1);

    // One cache per directory.
    match SegmentCache::open(CacheConfig::new(&nested)).await {
        Err(Error::Locked { path }) => assert_eq!(path, nested),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(cache);
    drop(open(CacheConfig::new(&nested)).await);

    // A directory owned by someone else is not trusted (needs chown rights: root here).
    let foreign = tmp.path().join("foreign");
    fs::create_dir(&foreign).expect("mkdir");
    if std::os::unix::fs::chown(&foreign, Some(4242), None).is_ok() {
        match SegmentCache::open(CacheConfig::new(&foreign)).await {
            Err(Error::UntrustedDir { owner, .. }) => assert_eq!(owner, 4242),
            other => panic!("expected UntrustedDir, got {other:?}"),
        }
        assert!(
            fs::read_dir(&foreign).expect("read_dir").next().is_none(),
            "nothing written"
        );
    }
}
