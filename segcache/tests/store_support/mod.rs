//! Helpers shared by the `SegmentStore` scenario tests (`store_*.rs`) and the crash test.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use objsync::testing::pattern;
use objsync::{DownloaderConfig, HedgeConfig, RetryConfig, UploaderConfig};
use segcache::{CacheConfig, ScanReport, SegmentId, SegmentStore, StoreConfig};

/// Fast retries, so that injected faults cost milliseconds.
pub fn retry(attempts: u32) -> RetryConfig {
    RetryConfig::default()
        .with_max_attempts(attempts)
        .with_base_delay(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(20))
}

/// Fast retries and no hedging, so that request counts are exact.
pub fn exact_config() -> StoreConfig {
    StoreConfig::default()
        .with_uploader(UploaderConfig::default().with_retry(retry(4)))
        .with_downloader(
            DownloaderConfig::default()
                .with_hedge(HedgeConfig::disabled())
                .with_retry(retry(4)),
        )
}

/// Opens a store with the cache in `dir` (a budget of `budget` bytes) over `remote`.
pub async fn open(
    dir: &Path,
    budget: u64,
    remote: Arc<dyn ObjectStore>,
    prefix: &str,
    config: StoreConfig,
) -> (SegmentStore, ScanReport) {
    let cache = CacheConfig::new(dir).with_max_bytes(budget);
    SegmentStore::open(cache, remote, prefix, config)
        .await
        .expect("open the segment store")
}

/// The bytes of segment `n`: a length from 1 byte to about `max_len`, and a pattern seeded by
/// `n`, so that any segment's bytes can be checked from its id alone.
pub fn segment(n: u128, max_len: usize) -> Bytes {
    let seed = (n as u64) ^ ((n >> 64) as u64).rotate_left(17);
    let len = 1 + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % max_len;
    pattern(len, seed)
}

/// The id of segment `n`.
pub fn id(n: u128) -> SegmentId {
    SegmentId::from_u128(n)
}
