//! The cache's unsafe code in small scenarios, for Miri (`cargo xtask miri` runs this file under
//! Stacked and Tree Borrows; it runs as a normal test too): the page buffer's one raw root and
//! every view made from it — read and write guards, a pointer from `as_ptr` used across guards
//! and flushes, buffers reused after eviction and freed with the cache, frames read in after an
//! overwrite pin, and pins crossing threads.

use std::sync::Arc;
use std::thread;

use pagecache::{CacheConfig, PageCache};
use pageio::{MemPageIo, PageIo};

const PS: usize = 512;

fn cache(capacity: usize) -> (Arc<MemPageIo>, PageCache) {
    let mem = Arc::new(MemPageIo::new(PS).expect("page size"));
    let io: Arc<dyn PageIo> = mem.clone();
    let cache = PageCache::new(io, CacheConfig::default().with_capacity(capacity)).expect("cfg");
    (mem, cache)
}

#[test]
fn guards_and_a_raw_pointer_share_one_root() {
    let (_mem, cache) = cache(4);
    let page = cache.get(1).expect("get");
    let ptr = page.as_ptr();
    page.write()[..4].copy_from_slice(b"abcd");
    // SAFETY: the page is pinned; no guard is dereferenced while the pointer writes.
    unsafe { ptr.add(10).write(7) };
    page.mark_dirty();
    assert_eq!(&page.read()[..4], b"abcd");
    assert_eq!(page.read()[10], 7);
    cache.flush().expect("flush");
    // The pointer taken before the guards and the flush is still the page's.
    // SAFETY: as above.
    unsafe { ptr.add(11).write(8) };
    drop(page.write());
    let again = cache.get(1).expect("hit");
    assert_eq!(again.as_ptr(), ptr);
    assert_eq!(again.read()[11], 8);
}

#[test]
fn two_writers_of_one_page_through_disjoint_pointers() {
    let (_mem, cache) = cache(4);
    let a = cache.get(0).expect("get");
    let b = a.clone();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    drop(a.write());
    for round in 0..4u8 {
        // SAFETY: the two pointers write disjoint bytes of a pinned page, and no guard is
        // dereferenced meanwhile; taking and dropping a guard makes no reference.
        unsafe {
            pa.add(usize::from(round)).write(round);
            pb.add(100 + usize::from(round)).write(round + 1);
        }
        drop(b.write());
    }
    let read = a.read();
    assert_eq!(&read[..4], &[0, 1, 2, 3]);
    assert_eq!(&read[100..104], &[1, 2, 3, 4]);
}

#[test]
fn buffers_are_reused_after_eviction_and_freed_with_the_cache() {
    let (mem, cache) = cache(2);
    for no in 0..8u8 {
        let page = cache.get(u64::from(no)).expect("get");
        page.write().fill(no);
    }
    for no in 0..8u8 {
        assert!(
            cache
                .get(u64::from(no))
                .expect("get")
                .read()
                .iter()
                .all(|&b| b == no)
        );
    }
    cache.flush().expect("flush");
    drop(cache);
    let mut buf = vec![0; PS];
    mem.read_page(5, &mut buf).expect("read");
    assert!(buf.iter().all(|&b| b == 5));
}

#[test]
fn an_overwrite_pin_read_in_by_a_get() {
    let (mem, cache) = cache(4);
    mem.write_page(3, &[9; PS]).expect("write");
    let writer = cache.get_for_overwrite(3).expect("overwrite");
    let ptr = writer.as_ptr();
    let reader = cache.get(3).expect("get");
    assert!(reader.read().iter().all(|&b| b == 9));
    drop(writer.write());
    // SAFETY: pinned, a write guard was taken first, and no guard is dereferenced meanwhile.
    unsafe { ptr.write(1) };
    assert_eq!(reader.read()[0], 1);
}

#[test]
fn pins_cross_threads() {
    let (_mem, cache) = cache(3);
    thread::scope(|s| {
        for t in 0..2u8 {
            let cache = &cache;
            s.spawn(move || {
                for round in 0..3u8 {
                    let no = u64::from(t * 3 + round % 2);
                    let page = cache.get(no).expect("get");
                    page.write()[usize::from(t)] = round;
                    assert_eq!(page.read()[usize::from(t)], round);
                }
            });
        }
    });
    cache.flush().expect("flush");
}
