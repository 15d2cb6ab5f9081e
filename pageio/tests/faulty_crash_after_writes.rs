//! `FaultyPageIo::crash_after_writes(n)` lets exactly `n` more writes succeed, then refuses every
//! operation with `Error::Crashed` until `crash` restarts the device with the synced state.

use pageio::{Error, Fault, FaultyPageIo, MemPageIo, Op, PageIo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PS: usize = 512;

fn page(byte: u8) -> Vec<u8> {
    vec![byte; PS]
}

fn read(io: &impl PageIo, no: u64) -> pageio::Result<Vec<u8>> {
    let mut buf = page(0xA5);
    io.read_page(no, &mut buf)?;
    Ok(buf)
}

fn crashed<T>(result: &pageio::Result<T>, want: Op) -> bool {
    matches!(*result, Err(Error::Crashed { op }) if op == want)
}

#[test]
fn the_device_dies_after_n_writes_and_refuses_everything() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.write_page(0, &page(1))?;
    io.sync()?;
    io.crash_after_writes(2);
    io.write_page(1, &page(2))?;
    assert!(!io.is_crashed(), "one write left");
    assert_eq!(read(&io, 1)?, page(2), "still working between the writes");
    io.write_page(2, &page(3))?;
    assert!(io.is_crashed());

    assert!(crashed(&io.write_page(3, &page(4)), Op::Write));
    assert!(crashed(&read(&io, 0), Op::Read));
    assert!(crashed(&io.sync(), Op::Sync));
    assert!(crashed(&io.num_pages(), Op::NumPages));
    assert!(crashed(&io.truncate(0), Op::Truncate));
    let mut buf = page(0);
    assert!(crashed(&io.read_pages(&mut [(0, &mut buf[..])]), Op::Read));
    assert!(crashed(&io.write_pages(&[(0, &buf[..])]), Op::Write));
    assert_eq!(
        read(io.inner(), 1)?,
        page(0),
        "the refused sync made nothing durable"
    );

    io.crash();
    assert!(!io.is_crashed());
    assert_eq!(io.num_pages()?, 1);
    assert_eq!(read(&io, 0)?, page(1), "the synced write survived");
    assert_eq!(read(&io, 1)?, page(0), "the unsynced writes did not");
    io.write_page(5, &page(6))?;
    assert_eq!(
        read(&io, 5)?,
        page(6),
        "the restarted device works and is not armed"
    );
    Ok(())
}

#[test]
fn zero_writes_dies_at_once() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.crash_after_writes(0);
    assert!(io.is_crashed());
    assert!(crashed(&read(&io, 0), Op::Read));
    io.crash();
    io.write_page(0, &page(1))?;
    Ok(())
}

#[test]
fn a_batch_dies_midway_and_crash_keeping_can_keep_what_it_wrote() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.crash_after_writes(3);
    let data: Vec<Vec<u8>> = (1..=5).map(page).collect();
    let batch: Vec<(u64, &[u8])> = (0..5).zip(data.iter().map(Vec::as_slice)).collect();
    assert!(crashed(&io.write_pages(&batch), Op::Write));
    assert_eq!(
        io.unsynced_pages(),
        [0, 1, 2],
        "three writes got in before the death"
    );
    io.crash_keeping(|no| no != 1)?;
    assert_eq!(read(&io, 0)?, page(1));
    assert_eq!(read(&io, 1)?, page(0));
    assert_eq!(read(&io, 2)?, page(3));
    assert_eq!(io.num_pages()?, 3);
    Ok(())
}

#[test]
fn failed_writes_do_not_count_towards_the_crash() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.fail(Fault::WriteAt(0));
    io.crash_after_writes(1);
    assert!(io.write_page(0, &page(1)).is_err());
    assert!(!io.is_crashed());
    io.clear_faults();
    io.write_page(0, &page(1))?;
    assert!(io.is_crashed());
    Ok(())
}

#[test]
fn clear_faults_does_not_disarm_the_crash_but_crash_does() -> TestResult {
    let io = FaultyPageIo::new(MemPageIo::new(PS)?);
    io.crash_after_writes(1);
    io.clear_faults();
    io.write_page(0, &page(1))?;
    assert!(io.is_crashed());

    io.crash();
    io.crash_after_writes(1);
    io.crash();
    io.write_page(0, &page(1))?;
    io.write_page(1, &page(1))?;
    assert!(!io.is_crashed());
    Ok(())
}
