//! Entries the cache did not make, or cannot trust (unknown names, directories and symlinks
//! under segment names, files owned by another user, readable by others, or hard-linked
//! elsewhere), are reported by open and left exactly as they were: not loaded, not deleted.
//! Persisting an id whose name such a file holds fails with `Conflict` and leaves it alone.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{cache_dir, content, names, open, seg_name, segment_file_bytes, write_file};
use segcache::{CacheConfig, Error, SegmentId, UnexpectedKind};

#[tokio::test]
async fn untrusted_entries_are_reported_and_untouched() {
    let (tmp, dir) = cache_dir();
    fs::create_dir(&dir).expect("mkdir");
    let id = SegmentId::from_u128;
    let data = content(1, 200);
    let valid = |n| segment_file_bytes(id(n), &data);
    // Only lowercase hex names are segment names.
    let upper_name = seg_name(0xabc).to_uppercase().replace(".SEG", ".seg");

    write_file(&dir, "notes.txt", b"hello");
    write_file(&dir, &upper_name, &valid(0xabc));
    fs::create_dir(dir.join(seg_name(2))).expect("mkdir");
    let outside = write_file(tmp.path(), "outside", &valid(3));
    std::os::unix::fs::symlink(&outside, dir.join(seg_name(3))).expect("symlink");
    let loose = write_file(&dir, &seg_name(4), &valid(4));
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).expect("chmod");
    let linked = write_file(&dir, &seg_name(5), &valid(5));
    fs::hard_link(&linked, tmp.path().join("second-name")).expect("link");
    // Another owner: possible only with the privilege to chown (the tests run as root here).
    let foreign = write_file(&dir, &seg_name(6), &valid(6));
    let chowned = std::os::unix::fs::chown(&foreign, Some(4242), None).is_ok();

    let before: Vec<(String, Vec<u8>)> = snapshot(&dir);
    let (cache, report) = open(CacheConfig::new(&dir)).await;
    assert_eq!(report.loaded, 0);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let mut kinds: Vec<(String, UnexpectedKind)> = report
        .unexpected
        .iter()
        .map(|u| (u.name.to_string_lossy().into_owned(), u.kind))
        .collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expect = vec![
        (upper_name.clone(), UnexpectedKind::UnknownName),
        (seg_name(2), UnexpectedKind::NotRegularFile),
        (seg_name(3), UnexpectedKind::NotRegularFile),
        (
            seg_name(4),
            UnexpectedKind::LoosePermissions { mode: 0o644 },
        ),
        (seg_name(5), UnexpectedKind::ExtraLinks { nlink: 2 }),
        ("notes.txt".to_owned(), UnexpectedKind::UnknownName),
    ];
    if chowned {
        expect.push((seg_name(6), UnexpectedKind::ForeignOwner { uid: 4242 }));
    }
    expect.sort_by(|a, b| a.0.cmp(&b.0));
    if !chowned {
        kinds.retain(|k| k.0 != seg_name(6));
    }
    assert_eq!(kinds, expect);
    assert_eq!(snapshot(&dir), before, "nothing was touched");
    for n in [0xabc, 2, 3, 4, 5, 6] {
        assert!(
            !cache.contains(id(n)),
            "untrusted segment {n} is not loaded"
        );
    }

    // Writing segment 4: its name is held by the loose-permission file, which is not trusted.
    let slot = cache.reserve(id(4), 3).await.expect("reserve: not cached");
    slot.write_at(0, b"new").expect("write");
    match slot.persist().await {
        Err(Error::Conflict { id: i, .. }) => assert_eq!(i, id(4)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(snapshot(&dir), before, "still untouched");
    assert_eq!(cache.stats().reserved_bytes, 0);
    assert_eq!(names(&dir).len(), before.len());
}

/// Names and contents of the regular files (following nothing) in `dir`.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let bytes = if meta.file_type().is_file() {
                fs::read(&path).expect("read")
            } else {
                Vec::new()
            };
            (name, bytes)
        })
        .collect()
}
