//! `FdPageIo` passes the conformance suite on a temporary file, through every constructor and at
//! the smallest, a common and the largest page size.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;

use pageio::{FdPageIo, conformance};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn create_passes_at_every_tested_page_size() -> TestResult {
    let dir = tempfile::tempdir()?;
    for page_size in [512, 4096, 1 << 20] {
        let io = FdPageIo::create(dir.path().join(format!("pages-{page_size}")), page_size)?;
        conformance::run_all(io)?;
    }
    Ok(())
}

#[test]
fn open_or_create_of_a_new_file_passes() -> TestResult {
    let dir = tempfile::tempdir()?;
    conformance::run_all(FdPageIo::open_or_create(dir.path().join("pages"), 4096)?)?;
    Ok(())
}

#[test]
fn open_of_an_empty_file_passes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    std::fs::write(&path, b"")?;
    conformance::run_all(FdPageIo::open(&path, 8192)?)?;
    Ok(())
}

#[test]
fn from_fd_passes() -> TestResult {
    let file = tempfile::tempfile()?;
    conformance::run_all(FdPageIo::from_fd(OwnedFd::from(file), 4096)?)?;

    let dir = tempfile::tempdir()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("pages"))?;
    conformance::run_all(FdPageIo::from_fd(file.into(), 512)?)?;
    Ok(())
}
