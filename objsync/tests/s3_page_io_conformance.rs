//! `ObjectPageIo` keeps the `PageIo` contract against an S3 server: `pageio`'s conformance
//! suite on a fresh prefix, called from a plain thread and from inside a tokio test, and a
//! reopen that finds the pages (and the size) where they were left.

use std::sync::Arc;
use std::time::Duration;

use objsync::testing::TestS3;
use objsync::{DownloaderConfig, ObjectPageIo, ObjectPageIoConfig, RetryConfig, UploaderConfig};
use pageio::PageIo as _;

fn config() -> ObjectPageIoConfig {
    let retry = RetryConfig::default()
        .with_base_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(50));
    ObjectPageIoConfig::default()
        .with_uploader(UploaderConfig::default().with_retry(retry.clone()))
        .with_downloader(DownloaderConfig::default().with_retry(retry))
}

fn fresh_io(s3: &TestS3, scenario: &str, page_size: usize) -> ObjectPageIo {
    let prefix = s3.unique_prefix(scenario);
    ObjectPageIo::new(s3.store().unwrap(), prefix.as_ref(), page_size, config()).unwrap()
}

#[test]
fn the_conformance_suite_passes() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let io = fresh_io(&s3, "s3_page_io_conformance", 4096);
    if let Err(failure) = pageio::conformance::run_all(io) {
        panic!("on {}: {failure}", s3.description());
    }
}

/// The same suite from a task of a current-thread runtime: the blocking `PageIo` calls must
/// neither panic nor deadlock there.
#[tokio::test]
async fn the_conformance_suite_passes_inside_a_tokio_runtime() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let io = fresh_io(&s3, "s3_page_io_conformance_in_runtime", 512);
    let here = pageio::conformance::RunConfig::default().without_time_limit();
    if let Err(failure) = pageio::conformance::run_all_with(io, &here) {
        panic!("on {}: {failure}", s3.description());
    }
}

#[test]
fn a_reopened_device_finds_its_pages() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let prefix = s3.unique_prefix("s3_page_io_reopen");
    let store = s3.store().unwrap();
    let page = |no: u64| vec![(no % 251) as u8 + 1; 1024];
    {
        let io = ObjectPageIo::new(Arc::clone(&store), prefix.as_ref(), 1024, config()).unwrap();
        for no in [0, 3, 9] {
            io.write_page(no, &page(no)).unwrap();
        }
        io.sync().unwrap();
    }
    let io = ObjectPageIo::new(store, prefix.as_ref(), 1024, config()).unwrap();
    assert_eq!(io.num_pages().unwrap(), 10, "on {}", s3.description());
    let mut buf = vec![0xAA; 1024];
    for no in 0..10 {
        io.read_page(no, &mut buf).unwrap();
        let want = if [0, 3, 9].contains(&no) {
            page(no)
        } else {
            vec![0; 1024]
        };
        assert!(buf == want, "page {no} after reopening");
    }
}
