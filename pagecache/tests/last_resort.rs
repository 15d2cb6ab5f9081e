//! Guards eviction's last resort: when every unpinned page's write-back has failed, a miss
//! tries each of them once more (least recently used first) before it fails, so one page that
//! can never be written back does not hide another that can be written now.
//!
//! Capacity 2: page 1 can never be written; page 2's first write-back fails (transient). The
//! first miss fails (both pages failed); a later one gets through by writing page 2 back.

use std::sync::Arc;

use pagecache::{CacheConfig, Error, PageCache};
use pageio::{Fault, FaultyPageIo, MemPageIo, PageIo};

const PS: usize = 512;

#[test]
fn one_bad_page_does_not_starve_every_miss_when_another_victim_is_writable() {
    let io = Arc::new(FaultyPageIo::new(MemPageIo::new(PS).expect("page size")));
    let dyn_io: Arc<dyn PageIo> = io.clone();
    let cache = PageCache::new(dyn_io, CacheConfig::default().with_capacity(2)).expect("config");
    cache.get(1).expect("get").write().fill(1);
    cache.get(2).expect("get").write().fill(2);
    assert_eq!(io.counts().writes, 0);
    io.fail(Fault::WritePage(1)); // page 1: every write fails
    io.fail(Fault::WriteAt(1)); // the second write (page 2's first write-back) fails once

    // Page 1 fails, page 2 fails once, then the last resort tries page 1 again (it fails for
    // good) and page 2 again, which now succeeds: the miss gets through.
    let page = cache
        .get(3)
        .expect("the miss gets through by writing page 2 back");
    drop(page);
    assert!(
        cache.contains(1) && !cache.contains(2),
        "page 2 was written back and evicted"
    );
    assert!(
        cache.get(1).expect("hit").is_dirty(),
        "page 1 stays cached and dirty"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.write_backs, stats.failed_write_backs),
        (1, 3),
        "{stats:?}"
    );
}

/// With only a page that cannot be written back to evict, a miss tries it (the first miss twice:
/// as a normal victim, then as the last resort; later ones once, as it is marked) and reports
/// its failure; the page stays cached and dirty.
#[test]
fn a_miss_with_only_a_bad_victim_fails_after_one_last_try() {
    let io = Arc::new(FaultyPageIo::new(MemPageIo::new(PS).expect("page size")));
    let dyn_io: Arc<dyn PageIo> = io.clone();
    let cache = PageCache::new(dyn_io, CacheConfig::default().with_capacity(1)).expect("config");
    cache.get(1).expect("get").write().fill(1);
    io.fail(Fault::WritePage(1));
    for attempt in 0..3 {
        let writes = io.counts().writes;
        match cache.get(2).map(drop) {
            Err(Error::WriteBack { page: 1, .. }) => {}
            other => panic!("expected page 1's write-back failure, got {other:?}"),
        }
        let tries = if attempt == 0 { 2 } else { 1 };
        assert_eq!(io.counts().writes - writes, tries, "miss {attempt}");
        assert!(cache.contains(1) && !cache.contains(2));
    }
}
