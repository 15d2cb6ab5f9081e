//! A `Fault::ShortWriteAt` leaves a torn page — the new prefix over the old rest — visible to
//! reads and in the size until a crash drops it (or a sync makes it durable), and reports the
//! write as failed.

use pageio::{Error, Fault, FaultyPageIo, MemPageIo, Op, PageIo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PS: usize = 4096;

fn read(io: &impl PageIo, no: u64) -> pageio::Result<Vec<u8>> {
    let mut buf = vec![0xA5; PS];
    io.read_page(no, &mut buf)?;
    Ok(buf)
}

fn torn(new: u8, old: u8, bytes: usize) -> Vec<u8> {
    let mut page = vec![old; PS];
    page[..bytes].fill(new);
    page
}

#[test]
fn torn_page_is_visible_until_a_crash() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.write_page(3, &[1; PS])?; // write 0
    io.sync()?;
    io.fail(Fault::ShortWriteAt {
        index: 1,
        bytes: 100,
    });
    let result = io.write_page(3, &[2; PS]);
    assert!(
        matches!(
            result,
            Err(Error::Injected {
                op: Op::Write,
                page: Some(3)
            })
        ),
        "{result:?}"
    );
    assert_eq!(read(&io, 3)?, torn(2, 1, 100));
    assert_eq!(io.unsynced_pages(), [3]);
    assert_eq!(
        read(io.inner(), 3)?,
        vec![1; PS],
        "the torn page is not durable"
    );
    io.crash();
    assert_eq!(
        read(&io, 3)?,
        vec![1; PS],
        "the crash dropped the torn page"
    );
    assert!(io.unsynced_pages().is_empty());
    Ok(())
}

#[test]
fn torn_page_past_the_end_grows_the_device_until_a_crash() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.write_page(0, &[1; PS])?;
    io.sync()?;
    io.fail(Fault::ShortWriteAt { index: 1, bytes: 7 });
    assert!(io.write_page(5, &[2; PS]).is_err());
    assert_eq!(
        read(&io, 5)?,
        torn(2, 0, 7),
        "the rest of a new page is zeros"
    );
    assert_eq!(io.num_pages()?, 6);
    io.crash();
    assert_eq!(io.num_pages()?, 1);
    assert_eq!(read(&io, 5)?, vec![0; PS]);
    Ok(())
}

#[test]
fn a_synced_torn_page_survives_a_crash() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.write_page(0, &[1; PS])?;
    io.fail(Fault::ShortWriteAt {
        index: 1,
        bytes: 2048,
    });
    assert!(io.write_page(0, &[2; PS]).is_err());
    io.sync()?;
    io.crash();
    assert_eq!(read(&io, 0)?, torn(2, 1, 2048));
    Ok(())
}

#[test]
fn edge_lengths_write_nothing_or_everything_and_still_fail() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.write_page(0, &[1; PS])?;
    io.write_page(1, &[1; PS])?;
    io.fail(Fault::ShortWriteAt { index: 2, bytes: 0 });
    io.fail(Fault::ShortWriteAt {
        index: 3,
        bytes: usize::MAX,
    });
    assert!(io.write_page(0, &[2; PS]).is_err());
    assert!(io.write_page(1, &[2; PS]).is_err());
    assert_eq!(read(&io, 0)?, vec![1; PS], "0 bytes: nothing written");
    assert_eq!(
        read(&io, 1)?,
        vec![2; PS],
        "more than a page: the whole page written"
    );
    Ok(())
}

#[test]
fn a_torn_write_in_a_batch_stops_the_batch() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.fail(Fault::ShortWriteAt {
        index: 1,
        bytes: 10,
    });
    let (a, b, c) = ([1; PS], [2; PS], [3; PS]);
    assert!(
        io.write_pages(&[(0, &a[..]), (1, &b[..]), (2, &c[..])])
            .is_err()
    );
    assert_eq!(read(&io, 0)?, vec![1; PS]);
    assert_eq!(read(&io, 1)?, torn(2, 0, 10));
    assert_eq!(read(&io, 2)?, vec![0; PS]);
    assert_eq!(io.unsynced_pages(), [0, 1]);
    Ok(())
}
