//! Guards `flush` against the deadlock of a reader-writer lock that queues new readers behind a
//! waiting writer: a thread holding a `PageReadGuard` on a dirty page while another thread waits
//! to write that page can still flush.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use pagecache::{CacheConfig, PageCache};
use pageio::MemPageIo;

#[test]
fn flush_while_holding_a_read_guard_with_a_writer_waiting() {
    let cache = Arc::new(
        PageCache::new(
            Arc::new(MemPageIo::new(512).expect("page size")),
            CacheConfig::default(),
        )
        .expect("config"),
    );
    let (done_tx, done_rx) = mpsc::channel();
    let worker = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let page = cache.get(0).expect("get");
            page.write()[0] = 1;
            let guard = page.read();
            thread::scope(|s| {
                let writer = s.spawn(|| {
                    let page = cache.get(0).expect("get");
                    page.write()[0] = 2;
                });
                // Give the writer time to queue on the page's lock behind our read guard.
                thread::sleep(Duration::from_millis(100));
                let flushed = cache.flush();
                drop(guard);
                writer.join().expect("writer");
                done_tx
                    .send(flushed.map_err(|e| e.to_string()))
                    .expect("send");
            });
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("flush deadlocked behind a waiting writer while a read guard was held")
        .expect("flush");
    worker.join().expect("worker");
    assert_eq!(cache.get(0).expect("get").read()[0], 2);
}
