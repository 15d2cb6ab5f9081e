//! A task that only ever hits the cache still yields its worker thread: on a current-thread
//! runtime, other tasks run and the looping task can be aborted.

mod store_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use store_support::{exact_config, id, open, segment};

#[test]
fn a_loop_of_hits_lets_other_tasks_run() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // The runtime runs on its own thread, so that a hang fails this test instead of hanging it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let tmp = tempfile::tempdir().unwrap();
            let remote: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let (store, _) = open(
                &tmp.path().join("cache"),
                64 << 20,
                remote,
                "yields",
                exact_config(),
            )
            .await;
            let bytes = segment(1, 4096);
            drop(store.put(id(1), bytes.clone()).await.unwrap());
            let hits = Arc::new(AtomicU64::new(0));
            let looping = {
                let (store, hits) = (store.clone(), Arc::clone(&hits));
                tokio::spawn(async move {
                    loop {
                        let got = store.get(id(1)).await.unwrap();
                        assert!(got[..] == bytes[..]);
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            // This task gets the thread back only if the loop yields.
            tokio::task::yield_now().await;
            while hits.load(Ordering::Relaxed) < 1000 {
                tokio::task::yield_now().await;
            }
            looping.abort();
            assert!(looping.await.unwrap_err().is_cancelled());
        });
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_mins(1))
        .expect("the loop of cache hits never gave the thread back");
}
