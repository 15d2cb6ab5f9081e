//! `FdPageIo` on real files: a reopen sees synced data, a length that is not a multiple of the
//! page size reads zero-filled, truncate sets the file's length, the constructors keep or
//! truncate contents as documented, and bad descriptors or paths are clear errors.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;

use pageio::{Error, FdPageIo, Op, PageIo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PS: usize = 4096;

fn read(io: &impl PageIo, no: u64) -> pageio::Result<Vec<u8>> {
    let mut buf = vec![0xA5; PS];
    io.read_page(no, &mut buf)?;
    Ok(buf)
}

fn page(byte: u8) -> Vec<u8> {
    vec![byte; PS]
}

#[test]
fn reopen_sees_synced_data() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    let io = FdPageIo::create(&path, PS)?;
    io.write_page(0, &page(1))?;
    io.write_page(4, &page(5))?;
    io.sync()?;
    drop(io);

    let io = FdPageIo::open(&path, PS)?;
    assert_eq!(io.num_pages()?, 5);
    assert_eq!(read(&io, 0)?, page(1));
    assert_eq!(read(&io, 2)?, page(0), "a hole in the file");
    assert_eq!(read(&io, 4)?, page(5));
    assert_eq!(std::fs::metadata(&path)?.len(), 5 * PS as u64);
    Ok(())
}

#[test]
fn a_partial_last_page_reads_zero_filled() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    let bytes: Vec<u8> = (0..PS + 1000).map(|i| (i % 200 + 1) as u8).collect();
    std::fs::write(&path, &bytes)?;

    let io = FdPageIo::open(&path, PS)?;
    assert_eq!(io.num_pages()?, 2, "the partial page counts");
    assert_eq!(read(&io, 0)?, &bytes[..PS]);
    let last = read(&io, 1)?;
    assert_eq!(&last[..1000], &bytes[PS..]);
    assert!(
        last[1000..].iter().all(|&b| b == 0),
        "the missing tail reads as zeros"
    );

    // A batch across the end of the file zero-fills too.
    let (mut a, mut b, mut c) = (page(0xA5), page(0xA5), page(0xA5));
    io.read_pages(&mut [(0, &mut a[..]), (1, &mut b[..]), (2, &mut c[..])])?;
    assert_eq!(a, &bytes[..PS]);
    assert_eq!(b, last);
    assert_eq!(c, page(0));

    // Writing the partial page completes it.
    io.write_page(1, &page(9))?;
    assert_eq!(std::fs::metadata(&path)?.len(), 2 * PS as u64);
    assert_eq!(read(&io, 1)?, page(9));
    Ok(())
}

#[test]
fn truncate_sets_the_file_length() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    let io = FdPageIo::create(&path, PS)?;
    for no in 0..6 {
        io.write_page(no, &page(no as u8 + 1))?;
    }
    io.truncate(2)?;
    assert_eq!(std::fs::metadata(&path)?.len(), 2 * PS as u64);
    assert_eq!(io.num_pages()?, 2);
    assert_eq!(read(&io, 5)?, page(0));
    io.truncate(10)?;
    assert_eq!(std::fs::metadata(&path)?.len(), 10 * PS as u64);
    assert_eq!(
        read(&io, 5)?,
        page(0),
        "growing leaves a hole, not old data"
    );
    assert_eq!(read(&io, 1)?, page(2));
    io.truncate(0)?;
    assert_eq!(std::fs::metadata(&path)?.len(), 0);
    assert!(matches!(
        io.truncate(u64::MAX),
        Err(Error::OutOfRange { .. })
    ));
    Ok(())
}

#[test]
fn constructors_keep_or_truncate_contents() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    std::fs::write(&path, vec![7; 3 * PS])?;
    assert_eq!(FdPageIo::open(&path, PS)?.num_pages()?, 3);
    assert_eq!(FdPageIo::open_or_create(&path, PS)?.num_pages()?, 3);
    assert_eq!(read(&FdPageIo::open_or_create(&path, PS)?, 2)?, page(7));
    assert_eq!(
        FdPageIo::create(&path, PS)?.num_pages()?,
        0,
        "create truncates"
    );
    assert_eq!(std::fs::metadata(&path)?.len(), 0);

    let fresh = dir.path().join("fresh");
    assert_eq!(FdPageIo::open_or_create(&fresh, PS)?.num_pages()?, 0);
    assert!(fresh.exists());
    Ok(())
}

#[test]
fn opening_a_missing_file_names_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("missing");
    let err = FdPageIo::open(&path, PS).expect_err("the file does not exist");
    let Error::Io {
        op: Op::Open,
        page: None,
        source,
    } = &err
    else {
        panic!("expected an open error, got {err:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(format!("{err:?}").contains("missing"), "{err:?}");
}

#[test]
fn directories_and_append_mode_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = FdPageIo::open(dir.path(), PS).expect_err("a directory is not a page file");
    assert!(matches!(err, Error::Io { op: Op::Open, .. }), "{err:?}");
    let dir_fd = OwnedFd::from(std::fs::File::open(dir.path())?);
    let err = FdPageIo::from_fd(dir_fd, PS).expect_err("a directory is not a page file");
    assert!(matches!(err, Error::Io { op: Op::Open, .. }), "{err:?}");

    let path = dir.path().join("log");
    let append = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let err = FdPageIo::from_fd(append.into(), PS).expect_err("append mode moves every write");
    assert!(err.to_string().contains("open"), "{err}");
    Ok(())
}

#[test]
fn a_read_only_descriptor_reads_and_refuses_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pages");
    std::fs::write(&path, vec![3; PS])?;
    let io = FdPageIo::from_fd(std::fs::File::open(&path)?.into(), PS)?;
    assert_eq!(read(&io, 0)?, page(3));
    let err = io.write_page(0, &page(4)).expect_err("read-only");
    assert!(
        matches!(
            err,
            Error::Io {
                op: Op::Write,
                page: Some(0),
                ..
            }
        ),
        "{err:?}"
    );
    let (a, b) = (page(4), page(5));
    let err = io
        .write_pages(&[(0, &a[..]), (1, &b[..])])
        .expect_err("read-only");
    assert!(matches!(err, Error::Io { op: Op::Write, .. }), "{err:?}");
    assert_eq!(read(&io, 0)?, page(3));
    Ok(())
}

#[test]
fn huge_page_numbers_read_zeros_and_refuse_writes() -> TestResult {
    let io = FdPageIo::from_fd(tempfile::tempfile()?.into(), PS)?;
    let last_ok = (i64::MAX as u64 + 1) / PS as u64 - 2;
    for no in [last_ok + 1, u64::MAX / PS as u64, u64::MAX] {
        assert_eq!(read(&io, no)?, page(0), "page {no}");
        assert!(
            matches!(io.write_page(no, &page(1)), Err(Error::OutOfRange { page }) if page == no),
            "page {no}"
        );
    }
    // The last addressable page reads past the end of the file, without an OS error.
    assert_eq!(read(&io, last_ok)?, page(0));
    let (mut a, mut b) = (page(9), page(9));
    io.read_pages(&mut [(last_ok, &mut a[..]), (last_ok + 1, &mut b[..])])?;
    assert_eq!((a, b), (page(0), page(0)));
    assert_eq!(io.num_pages()?, 0);
    Ok(())
}
