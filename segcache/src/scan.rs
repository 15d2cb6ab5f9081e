//! The startup scan of the cache directory.
//!
//! Every entry is classified by name first, and only names the cache could have made are ever
//! acted on:
//!
//! - `<32 lowercase hex>.seg`: a segment. It is trusted only if it is a regular file owned by
//!   this process's user, mode without group/other bits, and singly linked; then its footer is
//!   read (40 bytes; the data too with `verify_data_on_scan`) and checked against the name and
//!   the file size. A file that fails is torn or damaged: it is deleted and reported as
//!   [`Rejected`]. A valid one is loaded.
//! - `.tmp-…` (see `persist::is_temp_name`): a temporary file left by a crash. Deleted if it is
//!   a regular file of ours.
//! - Anything else, and any of the above that is not a regular file of ours with a safe mode:
//!   reported as [`Unexpected`] and never touched, loaded or trusted.
//!
//! Footers are read on a few threads when there are many files, so that opening a large cache
//! costs little more than listing it.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, MetadataExt};

use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use crate::format::{FOOTER_LEN, FOOTER_SIZE, Footer, RejectReason};
use crate::persist::{CacheDir, PersistProbe, is_temp_name};
use crate::{Error, PersistMode, Result, SegmentId};

/// What [`SegmentCache::open`](crate::SegmentCache::open) found in the cache directory.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ScanReport {
    /// Segments in the cache after the scan (valid ones, less those evicted for the budget).
    pub loaded: usize,
    /// Their disk bytes.
    pub loaded_bytes: u64,
    /// Leftover temporary files deleted.
    pub temp_files_deleted: usize,
    /// Segment files rejected as torn or invalid (deleted).
    pub rejected: Vec<Rejected>,
    /// Entries the cache did not expect: reported, not touched, not loaded.
    pub unexpected: Vec<Unexpected>,
    /// Valid segments evicted (deleted) to bring the cache within its budget, least recently
    /// used first.
    pub evicted: Vec<SegmentId>,
    /// Their disk bytes.
    pub evicted_bytes: u64,
    /// The directory's mode if it was looser than 0700 (it has been set to 0700).
    pub dir_mode_fixed: Option<u32>,
    /// What the persist paths probe found.
    pub probe: PersistProbe,
    /// The persist path chosen.
    pub persist_mode: PersistMode,
}

/// A segment file rejected by the scan.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// Its file name.
    pub name: OsString,
    /// What was wrong.
    pub reason: RejectReason,
    /// Whether it was deleted (it is, unless the unlink failed).
    pub deleted: bool,
}

/// A directory entry the cache did not expect.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unexpected {
    /// Its name (raw bytes from the directory: it may not be UTF-8).
    pub name: OsString,
    /// Why it is unexpected.
    pub kind: UnexpectedKind,
}

/// Why a directory entry is unexpected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnexpectedKind {
    /// A name the cache never creates.
    UnknownName,
    /// A segment or temporary name on something other than a regular file (a directory, a
    /// symlink, a FIFO…).
    NotRegularFile,
    /// A file owned by another user.
    ForeignOwner {
        /// Its owner.
        uid: u32,
    },
    /// A segment file readable or writable by group or others.
    LoosePermissions {
        /// Its permission bits.
        mode: u32,
    },
    /// A segment file with more than one hard link (it could change through the other name).
    ExtraLinks {
        /// Its link count.
        nlink: u64,
    },
    /// A segment or temporary file the scan could not read or delete.
    Unreadable {
        /// The OS error number.
        errno: i32,
    },
}

/// A valid segment found by the scan.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) id: SegmentId,
    pub(crate) len: u64,
    pub(crate) charged: u64,
    /// Last access, then last modification, as (seconds, nanoseconds): the recency order.
    recency: (i64, i64, i64, i64),
}

/// The scan's findings, for `Inner::open` to load.
pub(crate) struct Scanned {
    /// Valid segments, least recently used first.
    pub(crate) found: Vec<Found>,
    pub(crate) temp_files_deleted: usize,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) unexpected: Vec<Unexpected>,
}

enum Outcome {
    Found(Found),
    Rejected(RejectReason),
    Unexpected(UnexpectedKind),
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Below this many segment files, one thread reads the footers.
const PARALLEL_THRESHOLD: usize = 512;

/// Scans `dir`: deletes temporary files and rejected segments, and returns the rest.
///
/// At most `max_fds` segment files are open at once (one per scanning thread), so the scan
/// stays within the handle pool's bound too.
pub(crate) fn scan(dir: &CacheDir, verify_data: bool, max_fds: usize) -> Result<Scanned> {
    let list_err = |e: Errno| Error::io("read cache directory", dir.path(), e.into());
    let mut segments = Vec::new();
    let mut temps = Vec::new();
    let mut unexpected = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir.fd()).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let file_type = entry.file_type();
        let plausible = matches!(file_type, FileType::RegularFile | FileType::Unknown);
        if let Some(id) = SegmentId::from_file_name(name) {
            if plausible {
                segments.push(id);
            } else {
                unexpected.push(unexpected_entry(name, UnexpectedKind::NotRegularFile));
            }
        } else if is_temp_name(name) {
            if plausible {
                temps.push(name.to_vec());
            } else {
                unexpected.push(unexpected_entry(name, UnexpectedKind::NotRegularFile));
            }
        } else {
            unexpected.push(unexpected_entry(name, UnexpectedKind::UnknownName));
        }
    }

    let mut temp_files_deleted = 0;
    for name in temps {
        match delete_temp(dir, &name) {
            Ok(()) => temp_files_deleted += 1,
            Err(kind) => unexpected.push(unexpected_entry(&name, kind)),
        }
    }

    let outcomes = check_all(dir, &segments, verify_data, max_fds);
    let mut found = Vec::with_capacity(outcomes.len());
    let mut rejected = Vec::new();
    for (id, outcome) in segments.iter().zip(outcomes) {
        let name = id.file_name();
        match outcome {
            Outcome::Found(f) => found.push(f),
            Outcome::Rejected(reason) => {
                let deleted = dir.unlink(&name).is_ok();
                rejected.push(Rejected {
                    name: name.into(),
                    reason,
                    deleted,
                });
            }
            Outcome::Unexpected(kind) => unexpected.push(Unexpected {
                name: name.into(),
                kind,
            }),
        }
    }
    found.sort_unstable_by_key(|f| (f.recency, f.id));
    Ok(Scanned {
        found,
        temp_files_deleted,
        rejected,
        unexpected,
    })
}

fn unexpected_entry(name: &[u8], kind: UnexpectedKind) -> Unexpected {
    Unexpected {
        name: OsString::from_vec(name.to_vec()),
        kind,
    }
}

/// Deletes a temporary file if it is a regular file of ours.
fn delete_temp(dir: &CacheDir, name: &[u8]) -> Result<(), UnexpectedKind> {
    let st = rustix::fs::statat(dir.fd(), name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
        UnexpectedKind::Unreadable {
            errno: e.raw_os_error(),
        }
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(UnexpectedKind::NotRegularFile);
    }
    if st.st_uid != dir.euid() {
        return Err(UnexpectedKind::ForeignOwner { uid: st.st_uid });
    }
    rustix::fs::unlinkat(dir.fd(), name, AtFlags::empty()).map_err(|e| UnexpectedKind::Unreadable {
        errno: e.raw_os_error(),
    })
}

/// Checks every segment, on several threads when there are many.
fn check_all(
    dir: &CacheDir,
    segments: &[SegmentId],
    verify_data: bool,
    max_fds: usize,
) -> Vec<Outcome> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(8)
        .min(max_fds);
    if threads < 2 || segments.len() < PARALLEL_THRESHOLD {
        return segments
            .iter()
            .map(|&id| check_segment(dir, id, verify_data))
            .collect();
    }
    let chunk = segments.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = segments
            .chunks(chunk)
            .map(|ids| {
                let work = move || -> Vec<Outcome> {
                    ids.iter()
                        .map(|&id| check_segment(dir, id, verify_data))
                        .collect()
                };
                // If a thread cannot be started, do that chunk here instead.
                std::thread::Builder::new()
                    .name("segcache-scan".into())
                    .spawn_scoped(scope, work)
                    .map_err(|_| work)
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(work) => work(),
            })
            .collect()
    })
}

/// Checks one segment file: trust, size, footer, and optionally the data checksum.
fn check_segment(dir: &CacheDir, id: SegmentId, verify_data: bool) -> Outcome {
    let unreadable =
        |e: &io::Error| Outcome::Unexpected(UnexpectedKind::Unreadable { errno: errno_of(e) });
    let file = match dir.open_segment(&id.file_name()) {
        Ok(file) => file,
        // O_NOFOLLOW on a symlink.
        Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
            return Outcome::Unexpected(UnexpectedKind::NotRegularFile);
        }
        Err(e) => return unreadable(&e),
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => return unreadable(&e),
    };
    if !meta.file_type().is_file() {
        return Outcome::Unexpected(UnexpectedKind::NotRegularFile);
    }
    if meta.uid() != dir.euid() {
        return Outcome::Unexpected(UnexpectedKind::ForeignOwner { uid: meta.uid() });
    }
    if meta.mode() & 0o077 != 0 {
        return Outcome::Unexpected(UnexpectedKind::LoosePermissions {
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.nlink() != 1 {
        return Outcome::Unexpected(UnexpectedKind::ExtraLinks {
            nlink: meta.nlink(),
        });
    }
    let size = meta.len();
    if size < FOOTER_LEN {
        return Outcome::Rejected(RejectReason::TooShort);
    }
    let mut footer = [0u8; FOOTER_SIZE];
    if let Err(e) = file.read_exact_at(&mut footer, size - FOOTER_LEN) {
        return unreadable(&e);
    }
    let footer = match Footer::decode(&footer, id, size) {
        Ok(footer) => footer,
        Err(reason) => return Outcome::Rejected(reason),
    };
    if verify_data {
        let mut buf = vec![0u8; (1 << 20).min(usize::try_from(footer.len).unwrap_or(usize::MAX))];
        let mut crc = 0;
        let mut at = 0;
        while at < footer.len {
            let n = usize::try_from(footer.len - at).map_or(buf.len(), |left| left.min(buf.len()));
            if let Err(e) = file.read_exact_at(&mut buf[..n], at) {
                return unreadable(&e);
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            at += n as u64;
        }
        if crc != footer.crc {
            return Outcome::Rejected(RejectReason::DataChecksum);
        }
    }
    Outcome::Found(Found {
        id,
        len: footer.len,
        charged: size,
        recency: (
            meta.atime(),
            meta.atime_nsec(),
            meta.mtime(),
            meta.mtime_nsec(),
        ),
    })
}
