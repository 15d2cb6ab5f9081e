//! Segments are immutable: reserving a cached id is refused with `AlreadyPresent`, and of many
//! concurrent writers of one id exactly one links its file; all of them get that segment.

mod common;

use common::{cache_dir, names, open, put, seg_name};
use segcache::{CacheConfig, Error, SegmentId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_wins_and_the_rest_get_its_segment() {
    let (_tmp, dir) = cache_dir();
    let (cache, _) = open(CacheConfig::new(&dir)).await;
    let id = SegmentId::from_u128(21);

    let seg = put(&cache, 21, b"first").await;
    match cache.reserve(id, 5).await {
        Err(Error::AlreadyPresent { id: i }) => assert_eq!(i, id),
        other => panic!("expected AlreadyPresent, got {other:?}"),
    }
    drop(seg);

    // Eight writers of another id, each with its own content, persisting concurrently.
    let id = SegmentId::from_u128(22);
    let mut slots = Vec::new();
    for w in 0..8u8 {
        let slot = cache
            .reserve(id, 4)
            .await
            .expect("reserve while not cached");
        slot.write_at(0, &[w; 4]).expect("write");
        slots.push(slot);
    }
    let tasks: Vec<_> = slots
        .into_iter()
        .map(|slot| tokio::spawn(slot.persist()))
        .collect();
    let mut contents = Vec::new();
    for task in tasks {
        let seg = task.await.expect("task").expect("persist");
        contents.push(seg.to_vec());
    }
    // Everyone sees the same (winning) content.
    assert!(contents.windows(2).all(|w| w[0] == w[1]), "{contents:?}");
    let stats = cache.stats();
    assert_eq!((stats.persisted, stats.already_present), (2, 7));
    assert_eq!(
        stats.reserved_bytes, 0,
        "the losers' reservations are returned"
    );
    assert_eq!(stats.bytes, 2 * (4 + segcache::FOOTER_LEN) + 1);
    assert_eq!(names(&dir), [seg_name(21), seg_name(22)]);
}
