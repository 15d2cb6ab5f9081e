//! Guards the thread-safety of the public types: `PageCache`, `PageRef`, `CacheStats` and `Error`
//! are `Send + Sync`, and a cache in an `Arc` can move into spawned (`'static`) threads.

use std::sync::Arc;
use std::thread;

use pagecache::{CacheConfig, CacheStats, Error, PageCache, PageRef};
use pageio::{MemPageIo, PageIo};

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_static<T: 'static>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}

// Checked when this file compiles: a type that loses one of these bounds breaks the build of the
// test suite, not a user's code later.
const _: fn() = || {
    assert_send::<PageCache>();
    assert_sync::<PageCache>();
    assert_static::<PageCache>();
    assert_send::<Arc<PageCache>>();
    assert_sync::<Arc<PageCache>>();
    assert_static::<Arc<PageCache>>();

    assert_send::<PageRef<'_>>();
    assert_sync::<PageRef<'_>>();

    assert_send::<CacheStats>();
    assert_sync::<CacheStats>();
    assert_send::<CacheConfig>();
    assert_sync::<CacheConfig>();

    assert_send::<Error>();
    assert_sync::<Error>();
    // So it converts into `Box<dyn Error + Send + Sync>` and `anyhow::Error`.
    assert_error::<Error>();
};

/// The bounds above, used for real: a cache shared through an `Arc` by spawned threads, and one
/// `PageRef` shared by reference between scoped threads.
#[test]
fn cache_and_pins_cross_threads() {
    let io: Arc<dyn PageIo> = Arc::new(MemPageIo::new(512).expect("valid page size"));
    let cache = Arc::new(
        PageCache::new(io, CacheConfig::default().with_capacity(4)).expect("valid config"),
    );

    let writers: Vec<_> = (0..4u8)
        .map(|t| {
            let cache = Arc::clone(&cache);
            thread::spawn(move || -> Result<CacheStats, Error> {
                let pin = cache.get(u64::from(t))?;
                pin.write().fill(t + 1);
                drop(pin);
                Ok(cache.stats())
            })
        })
        .collect();
    for writer in writers {
        let stats = writer
            .join()
            .expect("writer panicked")
            .expect("get on a memory backend");
        assert!(stats.misses >= 1);
    }

    let pin = cache.get(2).expect("get");
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| assert!(pin.read().iter().all(|&b| b == 3)));
        }
    });
    // A pin can also move to another thread and be released there.
    let moved = pin.clone();
    thread::scope(|s| {
        s.spawn(move || {
            assert_eq!(moved.page_no(), 2);
            drop(moved);
        });
    });
    assert_eq!(cache.stats().pinned, 1);
    drop(pin);
    assert_eq!(cache.stats().pinned, 0);
}
