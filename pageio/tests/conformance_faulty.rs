//! `FaultyPageIo` with no faults armed passes the conformance suite over `MemPageIo`, over
//! `FdPageIo`, and over a backend that cannot truncate; so do the backends it leaves behind.

use std::sync::Arc;

use pageio::{FaultyPageIo, FdPageIo, MemPageIo, PageIo, Result, conformance};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[test]
fn faulty_over_mem_passes() -> TestResult {
    for page_size in [512, 4096] {
        let io = Arc::new(FaultyPageIo::new(MemPageIo::new(page_size)?));
        conformance::run_all(Arc::clone(&io))?;
        // After a sync, the inner backend holds exactly what the wrapper shows.
        io.sync()?;
        assert!(io.unsynced_pages().is_empty());
        let n = io.num_pages()?;
        assert_eq!(io.inner().num_pages()?, n);
        let (mut outer, mut inner) = (vec![0; page_size], vec![0; page_size]);
        for no in 0..n {
            io.read_page(no, &mut outer)?;
            io.inner().read_page(no, &mut inner)?;
            assert!(outer == inner, "page {no} differs after sync");
        }
        // And the inner backend still keeps the contract.
        conformance::round_trip(io.inner())?;
    }
    Ok(())
}

#[test]
fn faulty_over_fd_passes() -> TestResult {
    let dir = tempfile::tempdir()?;
    conformance::run_all(FaultyPageIo::new(FdPageIo::create(
        dir.path().join("pages"),
        4096,
    )?))?;
    Ok(())
}

/// `MemPageIo` with the trait's default (unsupported) truncate.
#[derive(Debug)]
struct NoTruncate(MemPageIo);

impl PageIo for NoTruncate {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        self.0.read_page(no, buf)
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        self.0.write_page(no, buf)
    }
    fn num_pages(&self) -> Result<u64> {
        self.0.num_pages()
    }
    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
}

#[test]
fn faulty_over_a_backend_without_truncate_passes() -> TestResult {
    conformance::run_all(NoTruncate(MemPageIo::new(4096)?))?;
    let io = Arc::new(FaultyPageIo::new(NoTruncate(MemPageIo::new(4096)?)));
    conformance::run_all(Arc::clone(&io))?;
    assert!(matches!(
        io.truncate(0),
        Err(pageio::Error::Unsupported {
            op: pageio::Op::Truncate
        })
    ));
    Ok(())
}
