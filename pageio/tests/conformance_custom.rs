//! The `custom_backend` example's backend passes the conformance suite, its `main` succeeds, and
//! its checksums catch a damaged page.

#[path = "../examples/custom_backend.rs"]
mod custom_backend;

use custom_backend::{ChecksumMismatch, ChecksumPageIo};
use pageio::{Error, ErrorKind, Op, PageIo, conformance};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn example_backend_passes() -> TestResult {
    for page_size in [512, 4096] {
        conformance::run_all(ChecksumPageIo::new(page_size)?)?;
    }
    Ok(())
}

#[test]
fn example_main_succeeds() -> TestResult {
    custom_backend::main()
}

#[test]
fn damaged_page_is_an_error_naming_the_page() -> TestResult {
    let io = ChecksumPageIo::new(512)?;
    io.write_page(3, &[7; 512])?;
    assert!(io.damage(3));
    assert!(!io.damage(4), "page 4 was never stored");
    let mut buf = [0; 512];
    match io.read_page(3, &mut buf) {
        Err(Error::Backend {
            op: Op::Read,
            page: Some(3),
            kind: ErrorKind::Corrupt,
            source,
        }) => {
            let mismatch = source.downcast_ref::<ChecksumMismatch>();
            assert_eq!(mismatch.map(|m| m.page), Some(3));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // Rewriting the page repairs it.
    io.write_page(3, &[8; 512])?;
    io.read_page(3, &mut buf)?;
    assert_eq!(buf, [8; 512]);
    Ok(())
}
