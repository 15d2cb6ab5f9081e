//! Every `Fault` rule of `FaultyPageIo` fires exactly on the operation it names — counting pages
//! of batches, from the wrapper's creation — fails it with `Error::Injected`, changes nothing,
//! and stops at `clear_faults`; `counts` reports what was done.

use pageio::{Error, Fault, FaultyPageIo, MemPageIo, Op, OpCounts, PageIo, SyncFailure};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PS: usize = 512;

fn device() -> FaultyPageIo<MemPageIo> {
    FaultyPageIo::new(MemPageIo::new(PS).expect("512 is a valid page size"))
}

fn page(byte: u8) -> Vec<u8> {
    vec![byte; PS]
}

fn read(io: &impl PageIo, no: u64) -> pageio::Result<Vec<u8>> {
    let mut buf = page(0xA5);
    io.read_page(no, &mut buf)?;
    Ok(buf)
}

fn is_injected(result: &pageio::Result<impl Sized>, want_op: Op, want_page: Option<u64>) -> bool {
    matches!(*result, Err(Error::Injected { op, page }) if op == want_op && page == want_page)
}

#[test]
fn read_at_fails_exactly_that_read() -> TestResult {
    let io = device();
    io.write_page(0, &page(1))?;
    io.fail(Fault::ReadAt(2));
    read(&io, 0)?; // read 0
    read(&io, 5)?; // read 1
    assert!(is_injected(&read(&io, 0), Op::Read, Some(0)), "read 2");
    assert_eq!(
        read(&io, 0)?,
        page(1),
        "read 3 succeeds: the rule fired once"
    );
    assert_eq!(io.counts().reads, 4);
    Ok(())
}

#[test]
fn read_at_counts_pages_of_a_batch() -> TestResult {
    let io = device();
    io.fail(Fault::ReadAt(3));
    let (mut a, mut b, mut c) = (page(0), page(0), page(0));
    io.read_pages(&mut [(0, &mut a[..]), (1, &mut b[..]), (2, &mut c[..])])?; // reads 0..=2
    let result = io.read_pages(&mut [(7, &mut a[..]), (8, &mut b[..])]); // reads 3, 4
    assert!(is_injected(&result, Op::Read, Some(7)));
    // The batch stopped at its failing page: the default batch reads pages one by one.
    assert_eq!(io.counts().reads, 4);
    Ok(())
}

#[test]
fn write_at_fails_exactly_that_write_and_writes_nothing() -> TestResult {
    let io = device();
    io.fail(Fault::WriteAt(1));
    io.write_page(0, &page(1))?; // write 0
    assert!(is_injected(&io.write_page(3, &page(2)), Op::Write, Some(3)));
    assert_eq!(read(&io, 3)?, page(0), "the failed write wrote nothing");
    assert_eq!(
        io.num_pages()?,
        1,
        "the failed write did not grow the device"
    );
    assert_eq!(io.unsynced_pages(), [0]);
    io.write_page(3, &page(2))?; // write 2
    assert_eq!(read(&io, 3)?, page(2));
    assert_eq!(io.counts().writes, 3);
    Ok(())
}

#[test]
fn write_at_counts_pages_of_a_batch() -> TestResult {
    let io = device();
    io.fail(Fault::WriteAt(4));
    let (a, b, c) = (page(1), page(2), page(3));
    io.write_pages(&[(0, &a[..]), (1, &b[..]), (2, &c[..])])?; // writes 0..=2
    let result = io.write_pages(&[(5, &a[..]), (6, &b[..]), (7, &c[..])]); // 3, 4 fails
    assert!(is_injected(&result, Op::Write, Some(6)));
    assert_eq!(
        read(&io, 5)?,
        a,
        "pages before the failing one were written"
    );
    assert_eq!(read(&io, 6)?, page(0), "the failing page was not");
    assert_eq!(io.num_pages()?, 6);
    Ok(())
}

#[test]
fn sync_at_fails_that_sync_and_makes_nothing_durable() -> TestResult {
    let io = device().with_sync_failure(SyncFailure::KeepAll);
    io.fail(Fault::SyncAt(1));
    io.write_page(0, &page(1))?;
    io.sync()?; // sync 0
    io.write_page(1, &page(2))?;
    assert!(is_injected(&io.sync(), Op::Sync, None), "sync 1");
    assert_eq!(
        read(io.inner(), 1)?,
        page(0),
        "nothing reached the inner backend"
    );
    assert_eq!(
        read(&io, 1)?,
        page(2),
        "the write is still visible, unsynced"
    );
    io.crash();
    assert_eq!(
        read(&io, 1)?,
        page(0),
        "a crash after the failed sync loses the write"
    );
    assert_eq!(read(&io, 0)?, page(1));
    io.write_page(1, &page(3))?;
    io.sync()?; // sync 2
    io.crash();
    assert_eq!(read(&io, 1)?, page(3));
    assert_eq!(io.counts().syncs, 3);
    Ok(())
}

#[test]
fn truncate_at_fails_that_truncate_and_changes_nothing() -> TestResult {
    let io = device();
    io.fail(Fault::TruncateAt(0));
    io.write_page(3, &page(1))?;
    assert!(is_injected(&io.truncate(1), Op::Truncate, None));
    assert_eq!(io.num_pages()?, 4);
    assert_eq!(read(&io, 3)?, page(1));
    io.truncate(1)?; // truncate 1
    assert_eq!(io.num_pages()?, 1);
    assert_eq!(io.counts().truncates, 2);
    Ok(())
}

#[test]
fn read_page_fails_every_read_of_that_page_until_cleared() -> TestResult {
    let io = device();
    io.write_page(2, &page(7))?;
    io.fail(Fault::ReadPage(2));
    for _ in 0..3 {
        assert!(is_injected(&read(&io, 2), Op::Read, Some(2)));
    }
    assert_eq!(read(&io, 1)?, page(0), "other pages read normally");
    let (mut a, mut b) = (page(0), page(0));
    let result = io.read_pages(&mut [(1, &mut a[..]), (2, &mut b[..])]);
    assert!(
        is_injected(&result, Op::Read, Some(2)),
        "a batch holding the page fails"
    );
    io.clear_faults();
    assert_eq!(read(&io, 2)?, page(7));
    Ok(())
}

#[test]
fn write_page_fails_every_write_of_that_page_until_cleared() -> TestResult {
    let io = device();
    io.fail(Fault::WritePage(4));
    for byte in 1..4 {
        assert!(is_injected(
            &io.write_page(4, &page(byte)),
            Op::Write,
            Some(4)
        ));
    }
    assert_eq!(io.num_pages()?, 0);
    io.write_page(3, &page(9))?;
    let (a, b) = (page(1), page(2));
    let result = io.write_pages(&[(5, &a[..]), (4, &b[..])]);
    assert!(is_injected(&result, Op::Write, Some(4)));
    io.clear_faults();
    io.write_page(4, &page(5))?;
    assert_eq!(read(&io, 4)?, page(5));
    Ok(())
}

#[test]
fn the_oldest_matching_rule_decides() -> TestResult {
    let io = device();
    io.write_page(0, &page(1))?; // write 0
    io.fail(Fault::WriteAt(1));
    io.fail(Fault::ShortWriteAt {
        index: 1,
        bytes: 100,
    });
    assert!(is_injected(&io.write_page(0, &page(2)), Op::Write, Some(0)));
    assert_eq!(read(&io, 0)?, page(1), "a plain failure, not a torn write");
    Ok(())
}

#[test]
fn rejected_arguments_are_not_counted_and_fire_no_rule() {
    let io = device();
    io.fail(Fault::WriteAt(0));
    io.fail(Fault::ReadAt(0));
    assert!(matches!(
        io.write_page(0, &[0; 10]),
        Err(Error::BufferSize { .. })
    ));
    assert!(matches!(
        io.write_page(u64::MAX, &page(1)),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        io.read_page(0, &mut [0; 1000]),
        Err(Error::BufferSize { .. })
    ));
    assert_eq!(io.counts(), OpCounts::default());
    assert!(is_injected(&io.write_page(0, &page(1)), Op::Write, Some(0)));
    assert!(is_injected(&read(&io, 0), Op::Read, Some(0)));
}

#[test]
fn counts_add_up_over_a_session() -> TestResult {
    let io = device();
    let (a, b) = (page(1), page(2));
    io.write_pages(&[(0, &a[..]), (1, &b[..])])?;
    io.write_page(2, &a)?;
    io.sync()?;
    let (mut x, mut y) = (page(0), page(0));
    io.read_pages(&mut [(0, &mut x[..]), (1, &mut y[..])])?;
    io.read_page(9, &mut x)?;
    io.truncate(2)?;
    io.sync()?;
    assert_eq!(
        io.counts(),
        OpCounts {
            reads: 3,
            writes: 3,
            syncs: 2,
            truncates: 1,
            discarded: 0,
        }
    );
    Ok(())
}
