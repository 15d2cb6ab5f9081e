//! Put/get round trips against an S3 server: small objects as one PUT each, a multipart-sized
//! object as parallel 5 MiB parts, read back whole and as parallel range GETs, byte for byte,
//! with the CRC32C stored as object metadata.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStore, ObjectStoreExt as _};
use objsync::testing::{CountingStore, TestS3, pattern};
use objsync::{
    CHECKSUM_METADATA_KEY, Downloader, DownloaderConfig, HedgeConfig, MIN_PART_SIZE, PutOutcome,
    RetryConfig, Uploader, UploaderConfig,
};

fn retry() -> RetryConfig {
    RetryConfig::default()
        .with_base_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(50))
}

/// The checksum metadata the server keeps for `path`, read with a plain HEAD.
async fn stored_crc(store: &dyn ObjectStore, path: &Path) -> Option<String> {
    let head = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let result = store.get_opts(path, head).await.unwrap();
    result
        .attributes
        .get(&Attribute::Metadata(CHECKSUM_METADATA_KEY.into()))
        .map(|v| v.as_ref().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_round_trip_as_single_puts() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = CountingStore::new(s3.store().unwrap());
    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default().with_retry(retry()),
    )
    .unwrap();
    let downloader = Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_hedge(HedgeConfig::disabled())
            .with_retry(retry()),
    )
    .unwrap();
    let prefix = s3.unique_prefix("s3_put_get_small");
    let sizes = [0_usize, 1, 1000, 64 << 10, 1 << 20];
    for (i, &len) in sizes.iter().enumerate() {
        let path = prefix.clone().join(format!("object-{i}"));
        let bytes = pattern(len, i as u64);
        let outcome = uploader.put(&path, bytes.clone()).await;
        assert_eq!(
            outcome.unwrap(),
            PutOutcome::Created,
            "{len} bytes on {}",
            s3.description()
        );
        let got = downloader.get(&path).await.unwrap();
        assert!(got == bytes, "the {len}-byte object read back differently");
        assert_eq!(
            stored_crc(&store, &path).await,
            Some(format!("{:08x}", crc32c::crc32c(&bytes))),
            "the checksum is stored with the {len}-byte object"
        );
    }
    let counts = store.counts();
    assert_eq!(counts.puts, sizes.len() as u64, "{counts:?}");
    assert_eq!(counts.multipart_starts, 0, "{counts:?}");
    assert_eq!(uploader.stats().multipart_uploads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_object_round_trips_whole_and_in_ranges() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let store = CountingStore::new(s3.store().unwrap());
    let uploader = Uploader::new(
        Arc::new(store.clone()),
        UploaderConfig::default()
            .with_multipart_threshold(MIN_PART_SIZE as u64)
            .with_part_size(MIN_PART_SIZE)
            .with_part_concurrency(3)
            .with_retry(retry()),
    )
    .unwrap();
    // Three parts: two of 5 MiB and a short last one.
    let len = 2 * MIN_PART_SIZE + (123 << 10);
    let bytes = pattern(len, 42);
    let path = s3.unique_prefix("s3_put_get_multipart").join("big");
    assert_eq!(
        uploader.put(&path, bytes.clone()).await.unwrap(),
        PutOutcome::Created,
        "on {}",
        s3.description()
    );
    let up = store.counts();
    assert_eq!(
        (
            up.puts,
            up.multipart_starts,
            up.parts,
            up.completes,
            up.aborts
        ),
        (0, 1, 3, 1, 0),
        "{up:?}"
    );
    assert_eq!(uploader.stats().multipart_uploads, 1);

    // Read back independently of the downloader first: what the server holds.
    let raw = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert!(raw == bytes, "the server holds other bytes than were put");
    assert_eq!(
        stored_crc(&store, &path).await,
        Some(format!("{:08x}", crc32c::crc32c(&bytes)))
    );

    // Whole, below the range threshold.
    let whole = Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_hedge(HedgeConfig::disabled())
            .with_range_threshold(u64::MAX)
            .with_retry(retry()),
    )
    .unwrap();
    assert!(whole.get(&path).await.unwrap() == bytes);

    // In odd-sized ranges, four at a time.
    let range_size = (1 << 20) + 7;
    let ranged = Downloader::new(
        Arc::new(store.clone()),
        DownloaderConfig::default()
            .with_hedge(HedgeConfig::disabled())
            .with_range_threshold(1 << 20)
            .with_range_size(range_size)
            .with_range_concurrency(4)
            .with_retry(retry()),
    )
    .unwrap();
    let before = store.counts().gets;
    assert!(ranged.get(&path).await.unwrap() == bytes);
    // The first GET's body supplies the first range (and whatever else arrived with it), the
    // rest come as range GETs.
    let gets = store.counts().gets - before;
    assert!(
        gets >= 2,
        "one GET for {len} bytes: it was not read in ranges"
    );
}
