//! Open deletes temporary files left by a crash (regular files of ours with the cache's
//! temporary-name pattern) and nothing else.

mod common;

use common::{cache_dir, content, names, open, put, seg_name, write_file};
use segcache::{CacheConfig, SegmentId, UnexpectedKind};

#[tokio::test]
async fn leftover_temp_files_are_deleted() {
    let (_tmp, dir) = cache_dir();
    let (cache, _) = open(CacheConfig::new(&dir)).await;
    drop(put(&cache, 1, &content(1, 1000)).await);
    drop(cache);

    // What a crash can leave: a named temp of a slot (partly written), a probe file.
    let slot_temp = format!(".tmp-{}-0000002a00000007", SegmentId::from_u128(2));
    write_file(&dir, &slot_temp, &content(2, 500));
    write_file(&dir, ".tmp-probe-0000002a00000001", b"");
    // Temp-looking names that are not regular files are not ours to delete.
    std::fs::create_dir(dir.join(".tmp-somedir")).expect("mkdir");

    let (cache, report) = open(CacheConfig::new(&dir)).await;
    assert_eq!(report.temp_files_deleted, 2);
    assert_eq!(report.loaded, 1);
    assert!(report.rejected.is_empty());
    assert_eq!(report.unexpected.len(), 1);
    assert_eq!(report.unexpected[0].name, ".tmp-somedir");
    assert_eq!(report.unexpected[0].kind, UnexpectedKind::NotRegularFile);
    assert_eq!(names(&dir), [".tmp-somedir".to_owned(), seg_name(1)]);
    assert!(cache.contains(SegmentId::from_u128(1)));
    assert!(!cache.contains(SegmentId::from_u128(2)));
}
