//! Open loads valid segments in least-recently-used order by file access time and, when they
//! exceed the budget, evicts the least recently used down to the low watermark.

mod common;

use std::fs::{File, FileTimes};
use std::time::{Duration, SystemTime};

use common::{cache_dir, content, names, open, seg_name, segment_file_bytes, write_file};
use segcache::{CacheConfig, SegmentId};

#[tokio::test]
async fn open_evicts_down_to_budget_in_lru_order() {
    let (_tmp, dir) = cache_dir();
    std::fs::create_dir(&dir).expect("mkdir");
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // Ten 100-byte files; access times make the recency order 3 1 4 5 9 2 6 8 0 7 (LRU first).
    let recency = [3u128, 1, 4, 5, 9, 2, 6, 8, 0, 7];
    for (rank, &n) in recency.iter().enumerate() {
        let path = write_file(
            &dir,
            &seg_name(n),
            &segment_file_bytes(SegmentId::from_u128(n), &content(n, 60)),
        );
        let t = base + Duration::from_secs(rank as u64 * 10);
        File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_times(FileTimes::new().set_accessed(t).set_modified(base))
            .expect("set times");
    }

    // 1000 bytes on disk, budget 800: above the high watermark (720), down to the low (600).
    let config = CacheConfig::new(&dir)
        .with_max_bytes(800)
        .with_watermarks(0.9, 0.75);
    let (cache, report) = open(config).await;
    let evicted: Vec<u128> = report.evicted.iter().map(SegmentId::to_u128).collect();
    assert_eq!(evicted, [3, 1, 4, 5]);
    assert_eq!(
        (report.evicted_bytes, report.loaded, report.loaded_bytes),
        (400, 6, 600)
    );
    let mut kept: Vec<String> = [9u128, 2, 6, 8, 0, 7]
        .iter()
        .map(|&n| seg_name(n))
        .collect();
    kept.sort();
    assert_eq!(names(&dir), kept);
    assert_eq!(cache.stats().bytes, 600);

    // The loaded order is kept: 600 + 130 > 720, so the next reservation evicts the two least
    // recently used, 9 then 2, and no more.
    let slot = cache
        .reserve(SegmentId::from_u128(100), 90)
        .await
        .expect("reserve");
    let gone: Vec<u128> = [9u128, 2, 6, 8, 0, 7]
        .into_iter()
        .filter(|&n| !cache.contains(SegmentId::from_u128(n)))
        .collect();
    assert_eq!(gone, [9, 2]);
    drop(slot);
}
