//! Guards the kinds of the `pageio` errors `ObjectPageIo` returns, so a page cache's caller can
//! tell a retry from a reopen: a store that keeps failing after the retries is unavailable, a
//! page object of the wrong length is corrupt, and the backend error is one call away from the
//! page cache's.

use std::sync::Arc;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use objsync::{
    Fault, FaultOp, FaultyStore, ObjectPageIo, ObjectPageIoConfig, RetryConfig, UploaderConfig,
};
use pageio::{ErrorKind, PageIo};

const PS: usize = 512;

fn config() -> ObjectPageIoConfig {
    ObjectPageIoConfig::default()
        .with_uploader(UploaderConfig::default().with_retry(RetryConfig::none()))
}

#[test]
fn a_failing_store_is_unavailable() {
    let faulty = Arc::new(FaultyStore::counting(Arc::new(InMemory::new())));
    let io = ObjectPageIo::new(faulty.clone(), "dev", PS, config()).expect("open");
    faulty.script(FaultOp::Put, [Fault::Error]);
    let err = io.write_page(0, &[1; PS]).expect_err("the PUT fails");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert_eq!(err.page(), Some(0));

    // Through a page cache: the same kind, one call away.
    let cache =
        pagecache::PageCache::new(Arc::new(io), pagecache::CacheConfig::default()).expect("cache");
    drop(cache.get(3).expect("get").write());
    faulty.script(FaultOp::Put, [Fault::Error]);
    let err = cache.flush().expect_err("the flush fails");
    assert_eq!(
        err.backend().map(pageio::Error::kind),
        Some(ErrorKind::Unavailable),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_object_of_the_wrong_length_is_corrupt() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let writer = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            let io = ObjectPageIo::new(store, "dev", PS, config()).expect("open");
            io.write_page(1, &[7; PS]).expect("write");
            io.sync().expect("sync");
        })
    };
    writer.await.expect("writer");
    store
        .put(
            &Path::from("dev/0000000000000001"),
            Bytes::from_static(b"short").into(),
        )
        .await
        .expect("damage the page object");
    let err = tokio::task::spawn_blocking(move || {
        let io = ObjectPageIo::new(store, "dev", PS, config()).expect("open");
        io.read_page(1, &mut [0; PS]).expect_err("the read fails")
    })
    .await
    .expect("reader");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
}
