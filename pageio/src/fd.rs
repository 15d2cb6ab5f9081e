//! Pages in a file, through `pread`/`pwrite` on an owned descriptor.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags};
use rustix::io::Errno;

use crate::{Error, Op, PageIo, Result, check_buffer, check_buffers, check_page_size, page_offset};

/// The most buffers one `preadv`/`pwritev` call takes. Linux's `IOV_MAX` is 1024, and POSIX
/// guarantees at least 16; runs longer than this are split into several calls.
const MAX_IOVECS: usize = 1024;

/// A [`PageIo`] over a regular file: page `n` is the `page_size` bytes at offset
/// `n * page_size`.
///
/// Reads and writes are positioned (`pread`/`pwrite`, and `preadv`/`pwritev` for runs of
/// consecutive pages in a batch), so one `FdPageIo` is shared by many threads without a lock.
/// Short transfers and `EINTR` are retried until the whole page is moved.
///
/// - A page past the end of the file, or the missing tail of a last partial page, reads as
///   zeros. So does a page whose byte offset no file can reach.
/// - [`num_pages`](PageIo::num_pages) is the file's length rounded up to whole pages.
/// - [`sync`](PageIo::sync) is `fdatasync`.
/// - [`truncate`](PageIo::truncate) sets the file's length to `num_pages * page_size`.
///
/// ```
/// use pageio::{FdPageIo, PageIo};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("pages");
/// let io = FdPageIo::create(&path, 4096)?;
/// io.write_page(2, &[9u8; 4096])?;
/// io.sync()?;
/// drop(io);
///
/// let io = FdPageIo::open(&path, 4096)?;
/// assert_eq!(io.num_pages()?, 3);
/// let mut buf = vec![0u8; 4096];
/// io.read_page(2, &mut buf)?;
/// assert_eq!(buf, [9u8; 4096]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FdPageIo {
    fd: OwnedFd,
    page_size: usize,
}

impl FdPageIo {
    /// Creates the file at `path`, or truncates it to empty if it exists, and opens it
    /// read-write.
    pub fn create(path: impl AsRef<Path>, page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Self::open_with(
            path.as_ref(),
            page_size,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
    }

    /// Opens the existing file at `path` read-write, keeping its contents.
    ///
    /// The file's length need not be a multiple of `page_size`: the last, partial page counts as
    /// a page and its missing tail reads as zeros.
    pub fn open(path: impl AsRef<Path>, page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Self::open_with(
            path.as_ref(),
            page_size,
            OpenOptions::new().read(true).write(true),
        )
    }

    /// Opens the file at `path` read-write, creating it empty if it does not exist.
    pub fn open_or_create(path: impl AsRef<Path>, page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Self::open_with(
            path.as_ref(),
            page_size,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
    }

    /// Wraps a descriptor the caller opened, which must be a regular file.
    ///
    /// The descriptor should be open for reading and writing; one opened read-only works for
    /// reads, and writes then fail with the OS error (`EBADF`). A descriptor in append mode is
    /// refused: on Linux, `pwrite` ignores the offset in that mode and would put every page at
    /// the end of the file.
    pub fn from_fd(fd: OwnedFd, page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Self::check_fd(fd.as_fd()).map_err(|source| Error::io(Op::Open, None, source))?;
        Ok(Self { fd, page_size })
    }

    fn open_with(path: &Path, page_size: usize, options: &OpenOptions) -> Result<Self> {
        let with_path = |source: io::Error| {
            Error::io(
                Op::Open,
                None,
                io::Error::new(
                    source.kind(),
                    PathError {
                        path: path.to_owned(),
                        source,
                    },
                ),
            )
        };
        let fd = OwnedFd::from(options.open(path).map_err(with_path)?);
        Self::check_fd(fd.as_fd()).map_err(with_path)?;
        Ok(Self { fd, page_size })
    }

    /// Refuses descriptors a page file cannot work on.
    fn check_fd(fd: BorrowedFd<'_>) -> io::Result<()> {
        let stat = retry(|| rustix::fs::fstat(fd))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        if retry(|| rustix::fs::fcntl_getfl(fd))?.contains(OFlags::APPEND) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "descriptor is in append mode, which makes pwrite ignore its offset",
            ));
        }
        Ok(())
    }

    /// The page that byte `done` of a transfer starting at page `first` falls in, for errors.
    fn page_at(&self, first: u64, done: usize) -> u64 {
        first + (done / self.page_size) as u64
    }

    /// Reads consecutive pages starting at `first` (whose offset is `offset`) into `bufs`,
    /// zero-filling whatever lies past the end of the file.
    fn read_run(&self, first: u64, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> Result<()> {
        let mut rest = bufs;
        let mut done = 0usize;
        while !rest.is_empty() {
            let result = if let [one] = rest {
                rustix::io::pread(&self.fd, &mut **one, offset + done as u64)
            } else {
                rustix::io::preadv(&self.fd, rest, offset + done as u64)
            };
            match result {
                Ok(0) => {
                    // End of file: the rest of the run was never written.
                    for buf in rest.iter_mut() {
                        buf.fill(0);
                    }
                    return Ok(());
                }
                Ok(n) => {
                    done += n;
                    IoSliceMut::advance_slices(&mut rest, n);
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    return Err(Error::io(
                        Op::Read,
                        Some(self.page_at(first, done)),
                        e.into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes `bufs` as consecutive pages starting at `first` (whose offset is `offset`).
    fn write_run(&self, first: u64, offset: u64, bufs: &mut [IoSlice<'_>]) -> Result<()> {
        let mut rest = bufs;
        let mut done = 0usize;
        while !rest.is_empty() {
            let result = if let [one] = rest {
                rustix::io::pwrite(&self.fd, one, offset + done as u64)
            } else {
                rustix::io::pwritev(&self.fd, rest, offset + done as u64)
            };
            match result {
                Ok(0) => {
                    // Not an error the OS reports for a regular file, but looping on it would
                    // never end.
                    return Err(Error::io(
                        Op::Write,
                        Some(self.page_at(first, done)),
                        io::ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(n) => {
                    done += n;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    return Err(Error::io(
                        Op::Write,
                        Some(self.page_at(first, done)),
                        e.into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn file_len(&self, op: Op) -> Result<u64> {
        let stat =
            retry(|| rustix::fs::fstat(&self.fd)).map_err(|e| Error::io(op, None, e.into()))?;
        // A regular file's length is never negative.
        Ok(u64::try_from(stat.st_size).unwrap_or(0))
    }
}

impl AsFd for FdPageIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PageIo for FdPageIo {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        check_buffer(no, self.page_size, buf.len())?;
        match page_offset(no, self.page_size) {
            Ok(offset) => self.read_run(no, offset, &mut [IoSliceMut::new(buf)]),
            Err(Error::OutOfRange { .. }) => {
                // No file reaches this far, so the page is past the end.
                buf.fill(0);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        check_buffer(no, self.page_size, buf.len())?;
        let offset = page_offset(no, self.page_size)?;
        self.write_run(no, offset, &mut [IoSlice::new(buf)])
    }

    fn num_pages(&self) -> Result<u64> {
        Ok(self.file_len(Op::NumPages)?.div_ceil(self.page_size as u64))
    }

    fn sync(&self) -> Result<()> {
        retry(|| rustix::fs::fdatasync(&self.fd)).map_err(|e| Error::io(Op::Sync, None, e.into()))
    }

    /// Reads each run of consecutive page numbers with one `preadv`.
    fn read_pages(&self, pages: &mut [(u64, &mut [u8])]) -> Result<()> {
        check_buffers(
            self.page_size,
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        for run in pages.chunk_by_mut(|a, b| a.0.checked_add(1) == Some(b.0)) {
            for chunk in run.chunks_mut(MAX_IOVECS) {
                let first = chunk[0].0;
                let last = chunk[chunk.len() - 1].0;
                let (Ok(offset), Ok(_)) = (
                    page_offset(first, self.page_size),
                    page_offset(last, self.page_size),
                ) else {
                    // The run reaches past any possible end of file: read it page by page, so
                    // that the pages out of range read as zeros.
                    for (no, buf) in chunk.iter_mut() {
                        self.read_page(*no, buf)?;
                    }
                    continue;
                };
                let mut bufs: Vec<IoSliceMut<'_>> = chunk
                    .iter_mut()
                    .map(|(_, buf)| IoSliceMut::new(buf))
                    .collect();
                self.read_run(first, offset, &mut bufs)?;
            }
        }
        Ok(())
    }

    /// Writes each run of consecutive page numbers with one `pwritev`. Every buffer and page
    /// number is checked before anything is written.
    fn write_pages(&self, pages: &[(u64, &[u8])]) -> Result<()> {
        check_buffers(
            self.page_size,
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        for (no, _) in pages {
            page_offset(*no, self.page_size)?;
        }
        for run in pages.chunk_by(|a, b| a.0.checked_add(1) == Some(b.0)) {
            for chunk in run.chunks(MAX_IOVECS) {
                let first = chunk[0].0;
                let offset = page_offset(first, self.page_size)?;
                let mut bufs: Vec<IoSlice<'_>> =
                    chunk.iter().map(|(_, buf)| IoSlice::new(buf)).collect();
                self.write_run(first, offset, &mut bufs)?;
            }
        }
        Ok(())
    }

    /// Sets the file's length to `num_pages * page_size`. Growing leaves a hole that reads as
    /// zeros; the new length is durable after [`sync`](PageIo::sync).
    fn truncate(&self, num_pages: u64) -> Result<()> {
        let len = crate::byte_len(num_pages, self.page_size)?;
        retry(|| rustix::fs::ftruncate(&self.fd, len))
            .map_err(|e| Error::io(Op::Truncate, None, e.into()))
    }
}

/// Runs a system call again for as long as it is interrupted by a signal.
fn retry<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) => {}
            result => return result,
        }
    }
}

/// An error about the file at `path`: the OS error alone would not say which file.
#[derive(Debug)]
struct PathError {
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_error_names_the_path_and_keeps_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let err = FdPageIo::open(&path, 4096).unwrap_err();
        let Error::Io {
            op: Op::Open,
            page: None,
            source,
        } = &err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains(&path.display().to_string()), "{chain}");
        assert!(chain.contains("No such file"), "{chain}");
    }

    #[test]
    fn batch_runs_split_at_gaps_and_iovec_limit() {
        let dir = tempfile::tempdir().unwrap();
        let io = FdPageIo::create(dir.path().join("f"), 512).unwrap();
        // More consecutive pages than one pwritev takes, then a gap, then two more.
        let numbers: Vec<u64> = (0..MAX_IOVECS as u64 + 5).chain([2000, 2001]).collect();
        let data: Vec<Vec<u8>> = numbers.iter().map(|&n| vec![n as u8 ^ 0x5a; 512]).collect();
        let pages: Vec<(u64, &[u8])> = numbers
            .iter()
            .copied()
            .zip(data.iter().map(Vec::as_slice))
            .collect();
        io.write_pages(&pages).unwrap();
        assert_eq!(io.num_pages().unwrap(), 2002);

        let mut bufs: Vec<Vec<u8>> = vec![vec![0xff; 512]; numbers.len() + 1];
        let mut reads: Vec<(u64, &mut [u8])> = numbers
            .iter()
            .copied()
            .chain([2002])
            .zip(bufs.iter_mut().map(Vec::as_mut_slice))
            .collect();
        io.read_pages(&mut reads).unwrap();
        for (i, buf) in bufs.iter().enumerate() {
            let want = data.get(i).map_or(vec![0; 512], Clone::clone);
            assert_eq!(buf, &want, "page index {i}");
        }
    }
}
