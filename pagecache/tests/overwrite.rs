//! Guards `get_for_overwrite`: its zero fill is not content. A page pinned for overwrite and
//! never written must not hide the backend's bytes — a later `get` reads them, whatever the
//! cache pressure — while a page that was written keeps what was written.

mod common;

use std::sync::Arc;

use common::{PAGE_SIZE, assert_page, pattern};
use pagecache::{CacheConfig, PageCache};
use pageio::{MemPageIo, PageIo};

fn cache_over(tag: u64, no: u64) -> (Arc<MemPageIo>, PageCache) {
    let mem = Arc::new(MemPageIo::new(PAGE_SIZE).expect("valid page size"));
    mem.write_page(no, &pattern(tag, no)).expect("write");
    let io: Arc<dyn PageIo> = mem.clone();
    let cache = PageCache::new(io, CacheConfig::default().with_capacity(8)).expect("config");
    (mem, cache)
}

#[test]
fn an_unwritten_overwrite_pin_does_not_hide_the_backend() {
    let (_mem, cache) = cache_over(55, 5);
    let pin = cache.get_for_overwrite(5).expect("overwrite");
    assert!(pin.read().iter().all(|&b| b == 0), "starts zeroed");
    assert!(!pin.is_dirty());
    drop(pin);
    // Still cached, but what a reader sees must be the backend's page, not the zeros.
    assert!(cache.contains(5));
    let pin = cache.get(5).expect("get");
    assert_page(&pin.read(), 55, 5, "after an unwritten overwrite pin");
    drop(pin);
    cache.flush().expect("flush");
    let pin = cache.get(5).expect("get");
    assert_page(&pin.read(), 55, 5, "after a flush");
}

#[test]
fn a_reader_alongside_an_unwritten_overwrite_pin_reads_the_backend() {
    let (_mem, cache) = cache_over(7, 2);
    let writer = cache.get_for_overwrite(2).expect("overwrite");
    let reader = cache.get(2).expect("get");
    assert_page(&reader.read(), 7, 2, "the reader");
    // The overwriter still overwrites, and then everyone sees its bytes.
    writer.write().copy_from_slice(&pattern(8, 2));
    assert_page(&reader.read(), 8, 2, "after the overwrite");
    drop((writer, reader));
    assert_page(&cache.get(2).expect("get").read(), 8, 2, "a later get");
}

#[test]
fn a_written_overwrite_pin_keeps_its_bytes() {
    let (mem, cache) = cache_over(3, 1);
    let pin = cache.get_for_overwrite(1).expect("overwrite");
    pin.write()[..4].copy_from_slice(b"new!");
    drop(pin);
    let pin = cache.get(1).expect("get");
    assert_eq!(&pin.read()[..4], b"new!");
    assert!(
        pin.read()[4..].iter().all(|&b| b == 0),
        "the rest is the zero fill"
    );
    drop(pin);
    cache.flush().expect("flush");
    let mut buf = vec![0; PAGE_SIZE];
    mem.read_page(1, &mut buf).expect("read");
    assert_eq!(&buf[..4], b"new!");
}
