//! `FaultyPageIo::crash` drops exactly the writes and truncates not yet synced, and
//! `crash_keeping` keeps exactly the unsynced writes it is told to; the inner backend holds
//! the synced state throughout, so it can be "reopened" after a crash.

use std::sync::Arc;

use pageio::{FaultyPageIo, FdPageIo, MemPageIo, PageIo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PS: usize = 512;

fn read(io: &impl PageIo, no: u64) -> pageio::Result<Vec<u8>> {
    let mut buf = vec![0xA5; PS];
    io.read_page(no, &mut buf)?;
    Ok(buf)
}

fn page(byte: u8) -> Vec<u8> {
    vec![byte; PS]
}

/// Synced: pages 0..4 hold 1..=4. Unsynced: page 1 holds 11, page 6 holds 16.
fn setup<I: PageIo>(io: &FaultyPageIo<I>) -> pageio::Result<()> {
    for no in 0..4 {
        io.write_page(no, &page(no as u8 + 1))?;
    }
    io.sync()?;
    io.write_page(1, &page(11))?;
    io.write_page(6, &page(16))?;
    Ok(())
}

#[test]
fn crash_drops_exactly_the_unsynced_writes() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    setup(&io)?;
    assert_eq!(read(&io, 1)?, page(11), "read your writes before the crash");
    assert_eq!(io.num_pages()?, 7);
    assert_eq!(io.unsynced_pages(), [1, 6]);
    assert_eq!(
        read(io.inner(), 1)?,
        page(2),
        "the inner backend holds the synced state"
    );

    io.crash();
    assert!(io.unsynced_pages().is_empty());
    assert_eq!(io.num_pages()?, 4);
    for no in 0..4 {
        assert_eq!(read(&io, no)?, page(no as u8 + 1), "synced page {no}");
    }
    assert_eq!(read(&io, 6)?, page(0));

    // The device works normally after the crash.
    io.write_page(6, &page(26))?;
    io.sync()?;
    io.crash();
    assert_eq!(read(&io, 6)?, page(26));
    Ok(())
}

#[test]
fn crash_keeping_keeps_exactly_the_chosen_writes() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    setup(&io)?;
    let mut offered = Vec::new();
    io.crash_keeping(|no| {
        offered.push(no);
        no == 6
    })?;
    assert_eq!(offered, [1, 6], "every unsynced page is offered, in order");
    assert_eq!(read(&io, 1)?, page(2), "the dropped write is gone");
    assert_eq!(read(&io, 6)?, page(16), "the kept write survived");
    assert_eq!(io.num_pages()?, 7);
    // Kept writes are durable: another crash does not undo them.
    io.crash();
    assert_eq!(read(&io, 6)?, page(16));
    assert_eq!(read(io.inner(), 6)?, page(16));
    Ok(())
}

#[test]
fn crash_keeping_nothing_or_everything() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    setup(&io)?;
    io.crash_keeping(|_| true)?;
    assert_eq!(read(&io, 1)?, page(11));
    assert_eq!(read(&io, 6)?, page(16));

    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    setup(&io)?;
    io.crash_keeping(|_| false)?;
    assert_eq!(read(&io, 1)?, page(2));
    assert_eq!(io.num_pages()?, 4);
    Ok(())
}

#[test]
fn crash_undoes_an_unsynced_truncate() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    setup(&io)?;
    io.truncate(2)?;
    assert_eq!(io.num_pages()?, 2);
    assert_eq!(read(&io, 3)?, page(0), "cut off");
    assert_eq!(
        read(io.inner(), 3)?,
        page(4),
        "not yet in the inner backend"
    );
    io.truncate(5)?;
    assert_eq!(
        read(&io, 3)?,
        page(0),
        "growing does not bring the cut page back"
    );
    io.crash();
    assert_eq!(io.num_pages()?, 4);
    assert_eq!(read(&io, 3)?, page(4), "the crash undid the truncate");
    Ok(())
}

#[test]
fn a_synced_truncate_survives_a_crash() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    setup(&io)?;
    io.truncate(2)?;
    io.write_page(3, &page(33))?;
    io.truncate(6)?;
    io.sync()?;
    io.crash();
    assert_eq!(io.num_pages()?, 6);
    assert_eq!(io.inner().num_pages()?, 6);
    assert_eq!(
        read(&io, 1)?,
        page(11),
        "written before the truncate, below its cut"
    );
    assert_eq!(read(&io, 2)?, page(0), "cut off");
    assert_eq!(read(&io, 3)?, page(33), "written after the truncate");
    assert_eq!(read(&io, 6)?, page(0), "cut off before the sync");
    Ok(())
}

#[test]
fn reopen_after_a_crash_sees_the_synced_state() -> TestResult {
    // Shared inner backend: a new wrapper (or upper layer) is a "restart" on the same disk.
    let disk = Arc::new(MemPageIo::new(PS)?);
    let io = FaultyPageIo::new(Arc::clone(&disk));
    setup(&io)?;
    drop(io);
    let reopened = FaultyPageIo::new(disk);
    assert_eq!(reopened.num_pages()?, 4);
    assert_eq!(read(&reopened, 1)?, page(2));

    // The same over a file, through into_inner and a real reopen.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    let io = FaultyPageIo::new(FdPageIo::create(&path, PS)?);
    setup(&io)?;
    drop(io.into_inner());
    let file = FdPageIo::open(&path, PS)?;
    assert_eq!(file.num_pages()?, 4);
    assert_eq!(read(&file, 1)?, page(2));
    assert_eq!(std::fs::metadata(&path)?.len(), 4 * PS as u64);
    Ok(())
}
