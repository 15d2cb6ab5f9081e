//! `remove` evicts an unpinned segment at once (unmap, then unlink), refuses a pinned one and
//! changes nothing, and reports an absent one.

mod common;

use common::{cache_dir, content, names, open, put, seg_name};
use segcache::{CacheConfig, Error, SegmentId};

#[tokio::test]
async fn remove_unpinned_refuse_pinned() {
    let (_tmp, dir) = cache_dir();
    let (cache, _) = open(CacheConfig::new(&dir)).await;
    let (a, b) = (SegmentId::from_u128(1), SegmentId::from_u128(2));
    let pinned = put(&cache, 1, &content(1, 1000)).await;
    drop(put(&cache, 2, &content(2, 1000)).await);

    match cache.remove(a) {
        Err(Error::Pinned { id }) => assert_eq!(id, a),
        other => panic!("expected Pinned, got {other:?}"),
    }
    assert!(cache.contains(a));
    assert_eq!(&pinned[..], &content(1, 1000)[..]);

    assert!(cache.remove(b).expect("remove"));
    assert!(!cache.contains(b));
    assert_eq!(names(&dir), [seg_name(1)]);
    assert!(!cache.remove(b).expect("remove again"), "already gone");
    assert!(!cache.remove(SegmentId::from_u128(3)).expect("never there"));

    drop(pinned);
    assert!(cache.remove(a).expect("remove after release"));
    assert!(names(&dir).is_empty());
    let stats = cache.stats();
    assert_eq!(
        (
            stats.segments,
            stats.bytes,
            stats.mapped,
            stats.handles_in_use
        ),
        (0, 0, 0, 0)
    );
}
