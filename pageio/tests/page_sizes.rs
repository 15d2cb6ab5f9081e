//! Every power of two from 512 B to 1 MiB is accepted as a page size, and anything else is
//! refused with `InvalidPageSize` (never a panic), by every constructor of `FdPageIo` and
//! `MemPageIo`; a refused `FdPageIo` leaves no file behind.

use std::os::fd::OwnedFd;

use pageio::{
    Error, FaultyPageIo, FdPageIo, MAX_PAGE_SIZE, MIN_PAGE_SIZE, MemPageIo, PageIo, check_page_size,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const REJECTED: [usize; 11] = [
    0,
    1,
    256,
    511,
    513,
    3000,
    4095,
    4097,
    2 << 20,
    usize::MAX,
    usize::MAX / 2 + 1,
];

fn valid_sizes() -> impl Iterator<Item = usize> {
    (9..=20).map(|shift| 1usize << shift)
}

#[test]
fn the_bounds_are_512_bytes_and_one_mib() {
    assert_eq!(MIN_PAGE_SIZE, 512);
    assert_eq!(MAX_PAGE_SIZE, 1 << 20);
    assert_eq!(valid_sizes().count(), 12);
}

#[test]
fn check_page_size_accepts_powers_of_two_in_range() {
    for size in valid_sizes() {
        assert!(check_page_size(size).is_ok(), "{size}");
    }
    for size in REJECTED {
        assert!(
            matches!(check_page_size(size), Err(Error::InvalidPageSize { size: s }) if s == size),
            "{size}"
        );
    }
}

#[test]
fn mem_accepts_valid_and_refuses_invalid_sizes() -> TestResult {
    for size in valid_sizes() {
        let io = MemPageIo::new(size)?;
        assert_eq!(io.page_size(), size);
        assert_eq!(FaultyPageIo::new(io).page_size(), size);
    }
    for size in REJECTED {
        assert!(
            matches!(MemPageIo::new(size), Err(Error::InvalidPageSize { size: s }) if s == size),
            "{size}"
        );
    }
    Ok(())
}

#[test]
fn fd_accepts_valid_sizes_with_every_constructor() -> TestResult {
    let dir = tempfile::tempdir()?;
    for size in valid_sizes() {
        let path = dir.path().join(format!("p{size}"));
        let created = FdPageIo::create(&path, size)?;
        assert_eq!(created.page_size(), size);
        // A full page round-trips at this size.
        let page: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        created.write_page(1, &page)?;
        let mut buf = vec![0; size];
        FdPageIo::open(&path, size)?.read_page(1, &mut buf)?;
        assert!(buf == page, "page size {size}");
        assert_eq!(FdPageIo::open_or_create(&path, size)?.page_size(), size);
        let fd = OwnedFd::from(tempfile::tempfile()?);
        assert_eq!(FdPageIo::from_fd(fd, size)?.page_size(), size);
    }
    Ok(())
}

fn is_invalid(result: &pageio::Result<FdPageIo>, size: usize) -> bool {
    matches!(*result, Err(Error::InvalidPageSize { size: s }) if s == size)
}

#[test]
fn fd_refuses_invalid_sizes_with_every_constructor() -> TestResult {
    let dir = tempfile::tempdir()?;
    let existing = dir.path().join("existing");
    std::fs::write(&existing, b"keep me")?;
    for size in REJECTED {
        let fresh = dir.path().join(format!("fresh-{size}"));
        assert!(
            is_invalid(&FdPageIo::create(&fresh, size), size),
            "create {size}"
        );
        assert!(
            is_invalid(&FdPageIo::open_or_create(&fresh, size), size),
            "open_or_create {size}"
        );
        assert!(
            !fresh.exists(),
            "a refused page size still created {}",
            fresh.display()
        );
        assert!(
            is_invalid(&FdPageIo::open(&existing, size), size),
            "open {size}"
        );
        assert!(
            is_invalid(&FdPageIo::create(&existing, size), size),
            "create over a file {size}"
        );
        let fd = OwnedFd::from(tempfile::tempfile()?);
        assert!(
            is_invalid(&FdPageIo::from_fd(fd, size), size),
            "from_fd {size}"
        );
    }
    assert_eq!(
        std::fs::read(&existing)?,
        b"keep me",
        "a refused create truncated the file"
    );
    Ok(())
}
