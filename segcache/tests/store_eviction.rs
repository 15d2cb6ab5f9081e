//! `SegmentStore` under a small cache budget while readers hold pins: pinned segments survive
//! (and keep their bytes) past the budget, the budget holds again once the pins are released,
//! and evicted segments come back by download.

mod store_support;

use objsync::testing::TestS3;
use segcache::FOOTER_LEN;
use store_support::{exact_config, id, open};

const SEG: usize = 16 << 10;
const DISK: u64 = SEG as u64 + FOOTER_LEN;
/// Room for ten segments.
const BUDGET: u64 = 10 * DISK;

fn bytes(n: u128) -> bytes::Bytes {
    objsync::testing::pattern(SEG, n as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_survive_eviction_and_the_budget_holds_after_release() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let prefix = s3.unique_prefix("segcache_store_eviction");
    let tmp = tempfile::tempdir().unwrap();
    let (store, _) = open(
        &tmp.path().join("cache"),
        BUDGET,
        s3.store().unwrap(),
        prefix.as_ref(),
        exact_config(),
    )
    .await;

    // Readers pin three segments through `get`.
    for n in 0..6 {
        drop(store.put(id(n), bytes(n)).await.unwrap());
    }
    let mut readers = Vec::new();
    for n in 0..3 {
        readers.push(store.get(id(n)).await.unwrap());
    }
    // Thirty more segments go through a cache of ten: the unpinned ones are evicted.
    for n in 100..130 {
        drop(store.put(id(n), bytes(n)).await.unwrap());
        let stats = store.stats();
        assert!(
            stats.cache.bytes + stats.cache.reserved_bytes <= BUDGET,
            "unpinned segments made room: {stats:?}"
        );
    }
    let stats = store.stats();
    assert!(stats.cache.evictions >= 20, "{stats:?}");
    for (n, pinned) in (0..3).zip(&readers) {
        assert!(store.contains(id(n)), "pinned segment {n} was evicted");
        assert!(pinned[..] == bytes(n)[..], "pinned segment {n} changed");
    }

    // Pins beyond the budget: fourteen segments held at once cannot fit in ten.
    for n in 200..211 {
        readers.push(store.put(id(n), bytes(n)).await.unwrap());
    }
    let stats = store.stats();
    assert!(
        stats.cache.bytes > BUDGET,
        "the pins hold the cache over budget: {stats:?}"
    );
    for pinned in &readers {
        let n = pinned.id().to_u128();
        assert!(store.contains(id(n)));
        assert!(pinned[..] == bytes(n)[..], "pinned segment {n} changed");
    }
    drop(readers);
    let stats = store.stats();
    assert_eq!(stats.cache.pinned, 0, "{stats:?}");
    assert!(
        stats.cache.bytes <= BUDGET,
        "releasing the pins brought the cache back within budget: {stats:?}"
    );

    // Everything comes back, evicted or not, and the budget keeps holding.
    let downloads = store.stats().downloads;
    for n in (0..6).chain(100..130).chain(200..211) {
        let got = store.get(id(n)).await.unwrap();
        assert!(got[..] == bytes(n)[..], "segment {n} read back differently");
        drop(got);
        let stats = store.stats();
        assert!(stats.cache.bytes <= BUDGET, "{stats:?}");
    }
    assert!(
        store.stats().downloads - downloads >= 30,
        "{:?}",
        store.stats()
    );
}
