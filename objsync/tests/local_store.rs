//! Stores that keep no user metadata (`object_store`'s `LocalFileSystem`) still work: uploads
//! go through without the stored checksum, create-once still holds, downloads verify length,
//! and `ObjectPageIo` passes the `PageIo` conformance suite on a local directory.

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use objsync::{
    Downloader, DownloaderConfig, Error, ObjectPageIo, ObjectPageIoConfig, PutOutcome, Uploader,
    UploaderConfig,
};

fn local(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap())
}

fn data(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn uploads_and_downloads_work_without_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = local(&dir);
    // Small parts so that the second object goes up as a multipart upload.
    let config = UploaderConfig::default()
        .with_multipart_threshold(4096)
        .with_min_part_size(1024)
        .with_part_size(1024);
    let up = Uploader::new(Arc::clone(&store), config).unwrap();
    let down = Downloader::new(Arc::clone(&store), DownloaderConfig::default()).unwrap();
    for (name, len) in [("small", 1000), ("large", 10_000)] {
        let path = Path::from(format!("objs/{name}"));
        let bytes = data(len, 7);
        assert_eq!(
            up.put(&path, bytes.clone()).await.unwrap(),
            PutOutcome::Created,
            "{name}"
        );
        assert_eq!(down.get(&path).await.unwrap(), bytes, "{name}");
        // Create-once without a stored checksum: the same bytes again are a match (computed by
        // downloading), other bytes a conflict.
        assert_eq!(
            up.put(&path, bytes.clone()).await.unwrap(),
            PutOutcome::AlreadyPresent,
            "{name}"
        );
        let other = up.put(&path, data(len, 8)).await.unwrap_err();
        assert!(matches!(other, Error::Conflict { .. }), "{name}: {other}");
        assert_eq!(
            down.get(&path).await.unwrap(),
            bytes,
            "{name} after the conflict"
        );
    }
    assert_eq!(up.stats().retries, 0, "refused metadata is not a retry");
}

#[test]
fn object_page_io_passes_the_conformance_suite_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let io = ObjectPageIo::new(local(&dir), "pages", 4096, ObjectPageIoConfig::default()).unwrap();
    if let Err(failure) = pageio::conformance::run_all(io) {
        panic!("on LocalFileSystem: {failure}");
    }
}
