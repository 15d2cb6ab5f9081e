//! Pages in a file, through `pread`/`pwrite` on an owned descriptor.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::{Error, Op, PageIo, Result, check_buffer, check_buffers, check_page_size, page_offset};

/// The most buffers one `preadv`/`pwritev` call takes. Linux's `IOV_MAX` is 1024, and POSIX
/// guarantees at least 16; runs longer than this are split into several calls.
const MAX_IOVECS: usize = 1024;

/// A [`PageIo`] over a regular file: page `n` is the `page_size` bytes at offset
/// `n * page_size`.
///
/// Reads and writes are positioned (`pread`/`pwrite`, and `preadv`/`pwritev` for runs of
/// consecutive pages in a batch), so one `FdPageIo` is shared by many threads. Short transfers
/// and `EINTR` are retried until the whole page is moved.
///
/// - Every page is read and written whole: a read that races a write of the same page sees all
///   of the old page or all of the new one, and two writes racing on a page leave one of them.
///   Linux does not promise that for buffered `pread`/`pwrite` (a read does not take the
///   inode's lock, and a page spans several page-cache folios), so the pages are spread over
///   64 reader-writer locks (page `n` on lock `n % 64`), each held only for the system call
///   that moves the page: shared by reads, exclusive by writes; a batch takes the locks of a
///   run's pages in ascending order, and [`truncate`](PageIo::truncate) takes all of them. An
///   uncontended lock costs a few atomic operations, far less than the copy of a page.
///   Descriptors and processes that write the file behind this `FdPageIo` are not covered.
/// - A page past the end of the file, or the missing tail of a last partial page, reads as
///   zeros. So does a page whose byte offset no file can reach.
/// - [`num_pages`](PageIo::num_pages) is the file's length rounded up to whole pages.
/// - [`sync`](PageIo::sync) is `fdatasync`.
/// - [`truncate`](PageIo::truncate) sets the file's length to `num_pages * page_size`.
/// - A created file is durable by name: [`create`](Self::create), and
///   [`open_or_create`](Self::open_or_create) when it creates the file, fsync the new file and
///   the directory that names it before returning, so a file whose writes were synced is still
///   there, under its name, after a crash. [`open`](Self::open) and
///   [`from_fd`](Self::from_fd) sync nothing.
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
pub struct FdPageIo {
    fd: OwnedFd,
    page_size: usize,
    /// `stripes[n % STRIPES]` guards the bytes of page `n` in the file: held shared while a
    /// read moves them and exclusive while a write does, across that one system call (the lock
    /// exists to make it atomic), never across a sync.
    stripes: Box<[Stripe; STRIPES]>,
}

/// How many locks the pages are spread over: one bit each in a `u64` set of stripes.
const STRIPES: usize = 64;

/// One page lock, on cache lines of its own so that threads on different stripes do not
/// contend for a line (128 bytes: x86's prefetcher pulls cache lines in pairs).
#[derive(Default)]
#[repr(align(128))]
struct Stripe(RwLock<()>);

/// The set of stripes (bit `i` for stripe `i`) that the `count` pages from page `first` use.
fn stripe_set(first: u64, count: usize) -> u64 {
    if count >= STRIPES {
        u64::MAX
    } else {
        ((1u64 << count) - 1).rotate_left((first % STRIPES as u64) as u32)
    }
}

/// The stripes in `set`, in ascending order: every caller that holds several takes them in
/// this one order, so no two can wait on each other.
fn stripes_in(set: u64) -> impl Iterator<Item = usize> {
    (0..STRIPES).filter(move |&i| set >> i & 1 == 1)
}

impl FdPageIo {
    /// Creates the file at `path`, or truncates it to empty if it exists, and opens it
    /// read-write.
    ///
    /// The file is durable by name when this returns: the new (or emptied) file and the
    /// directory that holds its name are both fsynced, so after a crash the file exists, empty
    /// or holding what was synced since. If a sync fails the error is returned and the file
    /// may or may not survive a crash.
    pub fn create(path: impl AsRef<Path>, page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        let path = path.as_ref();
        let io = Self::open_with(
            path,
            page_size,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )?;
        io.sync_name(path)?;
        Ok(io)
    }

    /// Opens the existing file at `path` read-write, keeping its contents.
    ///
    /// The file's length need not be a multiple of `page_size`: the last, partial page counts as
    /// a page and its missing tail reads as zeros. Nothing is synced: a file that exists was
    /// made durable by whoever created it.
    pub fn open(path: impl AsRef<Path>, page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Self::open_with(path.as_ref(), page_size, &Self::read_write())
    }

    /// Opens the file at `path` read-write, creating it empty if it does not exist.
    ///
    /// When this creates the file, it is durable by name as with [`create`](Self::create): the
    /// file and its directory are fsynced before this returns. An existing file is opened as by
    /// [`open`](Self::open), without a sync, unless it appeared while this call was creating
    /// it (another opener won the race and may not have synced it yet), in which case it is
    /// synced too.
    pub fn open_or_create(path: impl AsRef<Path>, page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        let path = path.as_ref();
        // Open without O_CREAT first, to know whether this call creates the file. A file that
        // appears between the two opens (EEXIST) is opened again without O_CREAT; one that keeps
        // appearing and vanishing in between is given up on after a few rounds.
        let mut raced = false;
        for _ in 0..OPEN_OR_CREATE_ROUNDS {
            match Self::open_with(path, page_size, &Self::read_write()) {
                Ok(io) if raced => {
                    io.sync_name(path)?;
                    return Ok(io);
                }
                Ok(io) => return Ok(io),
                Err(e) if io_kind(&e) == Some(io::ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
            match Self::open_with(path, page_size, Self::read_write().create_new(true)) {
                Ok(io) => {
                    io.sync_name(path)?;
                    return Ok(io);
                }
                Err(e) if io_kind(&e) == Some(io::ErrorKind::AlreadyExists) => raced = true,
                Err(e) => return Err(e),
            }
        }
        Err(path_error(
            "kept appearing and disappearing while opening",
            path,
            io::ErrorKind::NotFound.into(),
        ))
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
        Ok(Self::new(fd, page_size))
    }

    fn new(fd: OwnedFd, page_size: usize) -> Self {
        Self {
            fd,
            page_size,
            stripes: Box::new(std::array::from_fn(|_| Stripe::default())),
        }
    }

    /// Takes the stripes in `set` shared, in ascending order.
    fn read_locks(&self, set: u64) -> Vec<RwLockReadGuard<'_, ()>> {
        stripes_in(set).map(|i| self.stripes[i].0.read()).collect()
    }

    /// Takes the stripes in `set` exclusive, in ascending order.
    fn write_locks(&self, set: u64) -> Vec<RwLockWriteGuard<'_, ()>> {
        stripes_in(set).map(|i| self.stripes[i].0.write()).collect()
    }

    /// The stripe of page `no`.
    fn stripe(&self, no: u64) -> &RwLock<()> {
        &self.stripes[(no % STRIPES as u64) as usize].0
    }

    fn read_write() -> OpenOptions {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        options
    }

    fn open_with(path: &Path, page_size: usize, options: &OpenOptions) -> Result<Self> {
        let with_path = |source| path_error("", path, source);
        let fd = OwnedFd::from(options.open(path).map_err(with_path)?);
        Self::check_fd(fd.as_fd()).map_err(with_path)?;
        Ok(Self::new(fd, page_size))
    }

    /// Makes the file, just created (or emptied) at `path`, durable by name: fsyncs the file,
    /// so its inode and length are on disk, then the directory holding `path`, so the entry
    /// naming it is.
    fn sync_name(&self, path: &Path) -> Result<()> {
        retry(|| rustix::fs::fsync(&self.fd))
            .map_err(|e| path_error("syncing the new file", path, e.into()))?;
        #[cfg(test)]
        tests::record(tests::Synced::File);
        let dir = parent_dir(path);
        let dir_fd = retry(|| {
            rustix::fs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .map_err(|e| path_error("opening the directory", dir, e.into()))?;
        retry(|| rustix::fs::fsync(&dir_fd))
            .map_err(|e| path_error("syncing the directory", dir, e.into()))?;
        #[cfg(test)]
        tests::record(tests::Synced::Dir(dir.to_owned()));
        Ok(())
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

impl fmt::Debug for FdPageIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdPageIo")
            .field("fd", &self.fd)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
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
            Ok(offset) => {
                let _shared = self.stripe(no).read();
                self.read_run(no, offset, &mut [IoSliceMut::new(buf)])
            }
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
        let _exclusive = self.stripe(no).write();
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
                let _shared = self.read_locks(stripe_set(first, chunk.len()));
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
                let _exclusive = self.write_locks(stripe_set(first, chunk.len()));
                self.write_run(first, offset, &mut bufs)?;
            }
        }
        Ok(())
    }

    /// Sets the file's length to `num_pages * page_size`. Growing leaves a hole that reads as
    /// zeros; the new length is durable after [`sync`](PageIo::sync). Every stripe is held
    /// meanwhile, so no read sees a page half cut off.
    fn truncate(&self, num_pages: u64) -> Result<()> {
        let len = crate::byte_len(num_pages, self.page_size)?;
        let _exclusive = self.write_locks(u64::MAX);
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

/// How many times [`FdPageIo::open_or_create`] tries to open the file when it keeps being
/// created and removed by others between its two opens.
const OPEN_OR_CREATE_ROUNDS: usize = 8;

/// The directory whose entry names `path`: its parent, or the current directory for a bare
/// file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The OS error kind inside an open error from [`FdPageIo::open_with`].
fn io_kind(error: &Error) -> Option<io::ErrorKind> {
    match error {
        Error::Io { source, .. } => Some(source.kind()),
        _ => None,
    }
}

/// An open error about the file or directory at `path`, keeping the OS error's kind.
fn path_error(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::io(
        Op::Open,
        None,
        io::Error::new(
            source.kind(),
            PathError {
                action,
                path: path.to_owned(),
                source,
            },
        ),
    )
}

/// An error about the file at `path`: the OS error alone would not say which file.
#[derive(Debug)]
struct PathError {
    /// What was being done to the path, or empty for opening it.
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.action.is_empty() {
            write!(f, "{}", self.path.display())
        } else {
            write!(f, "{} {}", self.action, self.path.display())
        }
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A sync that [`FdPageIo::sync_name`] made.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(super) enum Synced {
        /// The new file itself.
        File,
        /// The directory naming it.
        Dir(PathBuf),
    }

    thread_local! {
        /// The syncs made by this thread's opens. Per thread, so tests running in parallel do
        /// not see each other's.
        static SYNCED: RefCell<Vec<Synced>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record(synced: Synced) {
        SYNCED.with(|log| log.borrow_mut().push(synced));
    }

    /// The syncs made by this thread since the last call.
    fn take_synced() -> Vec<Synced> {
        SYNCED.with(|log| std::mem::take(&mut *log.borrow_mut()))
    }

    #[test]
    fn creating_a_file_syncs_it_and_then_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages");
        let name = [Synced::File, Synced::Dir(dir.path().to_owned())];
        take_synced();

        let io = FdPageIo::create(&path, 4096).unwrap();
        assert_eq!(take_synced(), name, "create of a new file");
        io.write_page(0, &[1; 4096]).unwrap();
        drop(io);
        // Over an existing file, `create` empties it: that is synced too.
        let io = FdPageIo::create(&path, 4096).unwrap();
        assert_eq!(take_synced(), name, "create over an existing file");
        assert_eq!(io.num_pages().unwrap(), 0);
        drop(io);

        let other = dir.path().join("other");
        FdPageIo::open_or_create(&other, 4096).unwrap();
        assert_eq!(take_synced(), name, "open_or_create of a new file");
    }

    #[test]
    fn opening_an_existing_file_syncs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages");
        std::fs::write(&path, [5; 512]).unwrap();
        take_synced();

        let io = FdPageIo::open_or_create(&path, 512).unwrap();
        assert_eq!(
            io.num_pages().unwrap(),
            1,
            "open_or_create kept the contents"
        );
        drop(io);
        FdPageIo::open(&path, 512).unwrap();
        assert_eq!(take_synced(), []);
    }

    #[test]
    fn a_failed_open_syncs_nothing_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("missing").join("pages");
        take_synced();
        for result in [
            FdPageIo::open_or_create(&missing_dir, 4096),
            FdPageIo::create(&missing_dir, 4096),
            FdPageIo::open(dir.path().join("pages"), 4096),
        ] {
            let err = result.unwrap_err();
            assert_eq!(io_kind(&err), Some(io::ErrorKind::NotFound), "{err:?}");
        }
        assert_eq!(take_synced(), []);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_run_of_pages_takes_the_stripes_of_its_pages_in_ascending_order() {
        let stripes = |first, count| stripes_in(stripe_set(first, count)).collect::<Vec<_>>();
        assert_eq!(stripes(5, 1), [5]);
        assert_eq!(stripes(64 * 7 + 5, 3), [5, 6, 7]);
        // A run across a multiple of 64 wraps around; the order stays ascending.
        assert_eq!(stripes(62, 4), [0, 1, 62, 63]);
        assert_eq!(stripes(u64::MAX, 2), [0, 63]);
        assert_eq!(stripes(3, STRIPES), (0..STRIPES).collect::<Vec<_>>());
        assert_eq!(stripes(3, MAX_IOVECS), (0..STRIPES).collect::<Vec<_>>());
        assert_eq!(stripes(9, 0), [] as [usize; 0]);
    }

    #[test]
    fn the_directory_of_a_bare_file_name_is_the_current_one() {
        assert_eq!(parent_dir(Path::new("pages")), Path::new("."));
        assert_eq!(parent_dir(Path::new("./pages")), Path::new("."));
        assert_eq!(parent_dir(Path::new("/a/b/pages")), Path::new("/a/b"));
        assert_eq!(parent_dir(Path::new("a/pages")), Path::new("a"));
    }

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
