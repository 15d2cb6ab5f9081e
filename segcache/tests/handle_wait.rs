//! Waiting for pool handles is fair and cancellable: waiters are served in arrival order, and
//! a waiter that gives up (its future dropped) leaves the queue without taking anything.

mod common;

use common::{cache_dir, open};
use segcache::{CacheConfig, SegmentCache, SegmentId};

async fn wait_for_waiters(cache: &SegmentCache, n: usize) {
    let mut yields = 0;
    while cache.stats().handle_waiters != n {
        assert!(yields < 10_000, "expected {n} waiters: {:?}", cache.stats());
        yields += 1;
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn waiters_are_served_in_order_and_can_give_up() {
    let (_tmp, dir) = cache_dir();
    let (cache, _) = open(CacheConfig::new(&dir).with_max_handles(4)).await;
    let id = SegmentId::from_u128;
    // Two slots take all four handles.
    let first = cache.reserve(id(1), 10).await.expect("reserve");
    let second = cache.reserve(id(2), 10).await.expect("reserve");
    assert_eq!(cache.stats().handles_in_use, 4);

    let spawn_reserve = |n| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.reserve(id(n), 10).await })
    };
    let a = spawn_reserve(3);
    wait_for_waiters(&cache, 1).await;
    let b = spawn_reserve(4);
    wait_for_waiters(&cache, 2).await;
    let c = spawn_reserve(5);
    wait_for_waiters(&cache, 3).await;

    // Two handles come back: the first waiter gets them, the later ones keep waiting.
    drop(first);
    let slot_a = a.await.expect("task").expect("reserve");
    assert_eq!(slot_a.id(), id(3));
    wait_for_waiters(&cache, 2).await;
    assert!(!b.is_finished() && !c.is_finished());

    // The second waiter gives up: it leaves the queue, and takes nothing with it.
    b.abort();
    assert!(b.await.expect_err("aborted").is_cancelled());
    wait_for_waiters(&cache, 1).await;
    assert_eq!(cache.stats().handles_in_use, 4);
    assert_eq!(
        cache.stats().reserved_bytes,
        3 * (10 + segcache::FOOTER_LEN),
        "slots 2 and 3 and the waiting reserve of 5 hold bytes; the cancelled one gave its back"
    );

    // The next release goes to the third waiter.
    drop(second);
    let slot_c = c.await.expect("task").expect("reserve");
    assert_eq!(slot_c.id(), id(5));
    drop((slot_a, slot_c));
    let stats = cache.stats();
    assert_eq!(
        (
            stats.handles_in_use,
            stats.handle_waiters,
            stats.reserved_bytes
        ),
        (0, 0, 0)
    );
}
