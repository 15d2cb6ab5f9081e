//! The cache directory, temporary files, and the three ways of linking a finished segment into
//! place atomically, with the probe that picks one at open.
//!
//! Every path is built here, relative to the directory's descriptor, from a [`SegmentId`]'s hex
//! digits or from our own temporary-name pattern: nothing a caller passes becomes a path.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::{Error, PersistMode, Result, SegmentId};

/// The prefix of every temporary name the cache creates. The scan deletes regular files of ours
/// whose name is this prefix followed by `[0-9a-z-]`, at most [`TEMP_NAME_MAX`] bytes in all.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";
const TEMP_NAME_MAX: usize = 64;

/// Whether `name` is one of our temporary names.
pub(crate) fn is_temp_name(name: &[u8]) -> bool {
    name.len() <= TEMP_NAME_MAX
        && name.len() > TEMP_PREFIX.len()
        && name.starts_with(TEMP_PREFIX.as_bytes())
        && name[TEMP_PREFIX.len()..]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'-'))
}

/// A name no other temporary file of this process has: `.tmp-<tag>-<pid><counter>`. Other
/// processes cannot be using the directory (the cache holds a `flock` on it), and a leftover of
/// an earlier process with the same pid makes `O_EXCL` fail, which the caller retries.
fn temp_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{tag}-{:08x}{n:08x}", std::process::id())
}

/// The open, locked cache directory.
#[derive(Debug)]
pub(crate) struct CacheDir {
    fd: OwnedFd,
    path: PathBuf,
    euid: u32,
}

impl CacheDir {
    /// Creates (0700) or opens the directory, checks that this process's user owns it, tightens
    /// its mode to 0700 if it was looser (returning the old mode), and takes an exclusive
    /// `flock` on it for as long as the cache lives.
    pub(crate) fn open(path: &Path) -> Result<(Self, Option<u32>)> {
        use std::os::unix::fs::DirBuilderExt;

        let created = match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| Error::io("create cache directory", path, e))?;
                true
            }
            Err(e) => return Err(Error::io("create cache directory", path, e)),
        };
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open cache directory", path, e.into()))?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io("stat cache directory", path, e.into()))?;
        let euid = rustix::process::geteuid().as_raw();
        if st.st_uid != euid {
            return Err(Error::UntrustedDir {
                path: path.to_owned(),
                owner: st.st_uid,
                euid,
            });
        }
        let mode = st.st_mode & 0o7777;
        // A directory we just made may still carry the umask's view of 0700: set it exactly.
        let fixed = if mode == 0o700 {
            None
        } else {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
                .map_err(|e| Error::io("chmod cache directory", path, e.into()))?;
            (!created).then_some(mode)
        };
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(Error::Locked {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(Error::io("lock cache directory", path, e.into())),
        }
        Ok((
            Self {
                fd,
                path: path.to_owned(),
                euid,
            },
            fixed,
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn euid(&self) -> u32 {
        self.euid
    }

    /// The full path of an entry, for error messages.
    pub(crate) fn entry_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Makes the directory's entries durable.
    pub(crate) fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| Error::io("sync cache directory", &self.path, e.into()))
    }

    /// Removes an entry.
    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io::Error::from)
    }

    /// Opens a segment file for reading: never follows a symlink, never blocks on a FIFO.
    pub(crate) fn open_segment(&self, name: &str) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// An anonymous `O_TMPFILE` in the directory, read-write, mode 0600.
    fn anonymous_temp(&self) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        // The umask can only have cleared bits; make the mode exactly 0600.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
        Ok(File::from(fd))
    }

    /// A new named temporary file, read-write, mode 0600, and its name.
    fn named_temp(&self, tag: &str) -> io::Result<(File, String)> {
        loop {
            let name = temp_name(tag);
            match rustix::fs::openat(
                &self.fd,
                name.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    let file = File::from(fd);
                    if let Err(e) = rustix::fs::fchmod(&file, Mode::from_raw_mode(0o600)) {
                        let _ = self.unlink(&name);
                        return Err(e.into());
                    }
                    return Ok((file, name));
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The persist path in use: a [`PersistMode`] other than `Auto`, with what the probe learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    TmpfileLinkat,
    ProcSelfFd,
    /// `link_fallback`: the filesystem rejects `RENAME_NOREPLACE`; use `link` + `unlink`.
    Rename {
        link_fallback: bool,
    },
}

impl Method {
    pub(crate) fn mode(self) -> PersistMode {
        match self {
            Self::TmpfileLinkat => PersistMode::TmpfileLinkat,
            Self::ProcSelfFd => PersistMode::ProcSelfFd,
            Self::Rename { .. } => PersistMode::RenameNoReplace,
        }
    }
}

/// The outcome of probing one persist path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The path works in this directory.
    Supported,
    /// The path failed with this OS error number (`errno`).
    Unsupported {
        /// The raw OS error.
        errno: i32,
    },
}

impl ProbeResult {
    /// Whether the path works.
    #[must_use]
    pub fn is_supported(self) -> bool {
        self == Self::Supported
    }

    /// The error the probe got, if it failed.
    #[must_use]
    pub fn error(self) -> Option<io::Error> {
        match self {
            Self::Supported => None,
            Self::Unsupported { errno } => Some(io::Error::from_raw_os_error(errno)),
        }
    }

    fn from_io(result: io::Result<()>) -> Self {
        match result {
            Ok(()) => Self::Supported,
            Err(e) => Self::Unsupported {
                errno: e.raw_os_error().unwrap_or(0),
            },
        }
    }
}

/// What [`SegmentCache::open`](crate::SegmentCache::open) found out about the three persist
/// paths in the cache directory. Each is tried for real: a throwaway file is created, linked
/// under a temporary name and removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PersistProbe {
    /// `O_TMPFILE` + `linkat(AT_EMPTY_PATH)`.
    pub tmpfile_linkat: ProbeResult,
    /// `O_TMPFILE` + `linkat("/proc/self/fd/N", AT_SYMLINK_FOLLOW)`.
    pub proc_self_fd: ProbeResult,
    /// A named temporary file + `renameat2(RENAME_NOREPLACE)`, or `link` + `unlink`.
    pub rename_noreplace: ProbeResult,
    /// Whether the rename path has to use `link` + `unlink` because the filesystem rejects
    /// `RENAME_NOREPLACE`.
    pub rename_uses_link: bool,
}

impl PersistProbe {
    /// Tries each path in `dir`.
    pub(crate) fn run(dir: &CacheDir) -> Self {
        let tmpfile_linkat = ProbeResult::from_io(
            dir.anonymous_temp()
                .and_then(|f| probe_link(dir, |name| link_empty_path(dir, &f, name))),
        );
        let proc_self_fd = ProbeResult::from_io(
            dir.anonymous_temp()
                .and_then(|f| probe_link(dir, |name| link_proc_self_fd(dir, &f, name))),
        );
        let (rename_noreplace, rename_uses_link) = match probe_rename(dir) {
            Ok(uses_link) => (ProbeResult::Supported, uses_link),
            Err(e) => (ProbeResult::from_io(Err(e)), false),
        };
        Self {
            tmpfile_linkat,
            proc_self_fd,
            rename_noreplace,
            rename_uses_link,
        }
    }

    /// The method for `mode`: the first that works for `Auto`, else the one asked for if it
    /// works.
    pub(crate) fn choose(&self, mode: PersistMode) -> Result<Method> {
        let rename = Method::Rename {
            link_fallback: self.rename_uses_link,
        };
        let candidates = [
            (
                PersistMode::TmpfileLinkat,
                self.tmpfile_linkat,
                Method::TmpfileLinkat,
            ),
            (
                PersistMode::ProcSelfFd,
                self.proc_self_fd,
                Method::ProcSelfFd,
            ),
            (PersistMode::RenameNoReplace, self.rename_noreplace, rename),
        ];
        let mut last = None;
        for (m, result, method) in candidates {
            if mode != PersistMode::Auto && mode != m {
                continue;
            }
            match result.error() {
                None => return Ok(method),
                Some(e) => last = Some(e),
            }
        }
        Err(Error::PersistUnsupported {
            mode,
            source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::Unsupported)),
        })
    }
}

/// Links a probe file under a fresh temporary name with `link`, then removes the name.
fn probe_link(dir: &CacheDir, link: impl FnOnce(&str) -> io::Result<()>) -> io::Result<()> {
    let name = temp_name("probe");
    link(&name)?;
    dir.unlink(&name)
}

/// Probes the rename path; returns whether it needs the `link` + `unlink` fallback.
fn probe_rename(dir: &CacheDir) -> io::Result<bool> {
    let (file, from) = dir.named_temp("probe")?;
    drop(file);
    let to = temp_name("probe");
    let result = match rename_noreplace(dir, &from, &to) {
        Ok(()) => Ok(false),
        Err(e) if rename_flag_unsupported(&e) => link_unlink(dir, &from, &to).map(|()| true),
        Err(e) => Err(e),
    };
    // Whichever name survived goes; failures here leave a temp name the next scan removes.
    let _ = dir.unlink(&from);
    let _ = dir.unlink(&to);
    result
}

/// `renameat2` reports a filesystem without `RENAME_NOREPLACE` as `EINVAL`, and a kernel without
/// `renameat2` as `ENOSYS`.
fn rename_flag_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::INVAL | Errno::NOSYS)
    )
}

fn link_empty_path(dir: &CacheDir, file: &File, name: &str) -> io::Result<()> {
    rustix::fs::linkat(file, "", dir.fd(), name, AtFlags::EMPTY_PATH).map_err(io::Error::from)
}

fn link_proc_self_fd(dir: &CacheDir, file: &File, name: &str) -> io::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", file.as_fd().as_raw_fd());
    rustix::fs::linkat(
        CWD,
        proc_path.as_str(),
        dir.fd(),
        name,
        AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

fn rename_noreplace(dir: &CacheDir, from: &str, to: &str) -> io::Result<()> {
    rustix::fs::renameat_with(dir.fd(), from, dir.fd(), to, RenameFlags::NOREPLACE)
        .map_err(io::Error::from)
}

/// `link` then `unlink`: a no-replace rename for filesystems without `RENAME_NOREPLACE`. A crash
/// between the two leaves the temporary name too, which the scan deletes.
fn link_unlink(dir: &CacheDir, from: &str, to: &str) -> io::Result<()> {
    rustix::fs::linkat(dir.fd(), from, dir.fd(), to, AtFlags::empty())?;
    dir.unlink(from)
}

/// A segment being written: an anonymous or named temporary file in the cache directory. A
/// named one is unlinked on drop unless it was moved into place.
#[derive(Debug)]
pub(crate) struct TempFile {
    file: File,
    /// The temporary name, while one exists.
    name: Option<String>,
    dir: Arc<CacheDir>,
}

/// What linking into place found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Linked {
    /// The segment is now visible under its name.
    Done,
    /// A file already has the name; ours was not linked.
    TargetExists,
}

impl TempFile {
    /// A temporary file for segment `id`, of the kind `method` links.
    pub(crate) fn create(dir: &Arc<CacheDir>, method: Method, id: SegmentId) -> io::Result<Self> {
        let (file, name) = match method {
            Method::TmpfileLinkat | Method::ProcSelfFd => (dir.anonymous_temp()?, None),
            Method::Rename { .. } => {
                let (file, name) = dir.named_temp(&id.to_string())?;
                (file, Some(name))
            }
        };
        Ok(Self {
            file,
            name,
            dir: Arc::clone(dir),
        })
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Links the (complete, synced) file into place as `name`, never replacing an existing
    /// file. Does not sync the directory.
    pub(crate) fn link(&mut self, method: Method, name: &str) -> io::Result<Linked> {
        let dir = &*self.dir;
        let result = match method {
            Method::TmpfileLinkat => link_empty_path(dir, &self.file, name),
            Method::ProcSelfFd => link_proc_self_fd(dir, &self.file, name),
            Method::Rename { link_fallback } => {
                let Some(temp) = self.name.as_deref() else {
                    return Err(io::Error::other("named temporary file without a name"));
                };
                let moved = if link_fallback {
                    link_unlink(dir, temp, name)
                } else {
                    rename_noreplace(dir, temp, name)
                };
                if moved.is_ok() {
                    self.name = None;
                }
                moved
            }
        };
        match result {
            Ok(()) => Ok(Linked::Done),
            Err(e) if e.raw_os_error() == Some(Errno::EXIST.raw_os_error()) => {
                Ok(Linked::TargetExists)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            // Best effort: a name left behind is a temporary name, which the next scan deletes.
            let _ = self.dir.unlink(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        let name = temp_name(&SegmentId::from_u128(9).to_string());
        assert!(is_temp_name(name.as_bytes()), "{name}");
        assert!(is_temp_name(temp_name("probe").as_bytes()));
        for other in [
            &b".tmp-"[..],
            b".tmp-UPPER",
            b".tmp-a/b",
            b"tmp-abc",
            b".tmp-\xff",
            &[b'a'; 65],
        ] {
            assert!(!is_temp_name(other), "{other:?}");
        }
    }
}
