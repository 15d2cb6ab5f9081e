//! The public handle types are `Send + Sync` (and the futures of the async methods are `Send`),
//! so they can cross tasks and threads.

use segcache::{CacheConfig, Error, ScanReport, SegmentCache, SegmentId, SegmentRef, Slot, Stats};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>(_: &T) {}

#[test]
fn handle_types_are_send_and_sync() {
    assert_send_sync::<SegmentCache>();
    assert_send_sync::<SegmentRef>();
    assert_send_sync::<Slot>();
    assert_send_sync::<SegmentId>();
    assert_send_sync::<CacheConfig>();
    assert_send_sync::<ScanReport>();
    assert_send_sync::<Stats>();
    assert_send_sync::<Error>();
}

#[allow(
    dead_code,
    reason = "compile-time check only: the futures are built, never polled"
)]
fn futures_are_send(cache: &SegmentCache, slot: Slot) {
    assert_send(&SegmentCache::open(CacheConfig::new("/nonexistent")));
    assert_send(&cache.reserve(SegmentId::from_u128(1), 1));
    assert_send(&cache.get(SegmentId::from_u128(1)));
    assert_send(&slot.persist());
}
