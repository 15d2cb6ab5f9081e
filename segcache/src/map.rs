//! Mappings of segment files: the only `unsafe` in the crate.
//!
//! # Why mapping a segment file is sound
//!
//! `memmap2` marks mapping a file `unsafe` because the `&[u8]` it hands out is only sound while
//! nobody changes the file (a write changes bytes under a shared reference; a truncation turns
//! reads into `SIGBUS`). The cache makes segment files immutable for as long as a mapping lives:
//!
//! 1. A segment file is written only through its [`Slot`](crate::Slot), before it has a name;
//!    it is synced and linked into place afterwards, and the slot's descriptor is never written
//!    again. The cache never opens a segment file for writing, truncates it, or rewrites it.
//! 2. The file is 0600 and owned by this process's user, in a 0700 directory owned by that user
//!    (checked at open), which the cache holds an exclusive `flock` on, so no other cache, here
//!    or in another process, manages it. [`Mapping::map`] re-checks owner, mode, link count and
//!    size on the descriptor it maps before mapping.
//! 3. A segment file is unlinked (evicted, removed) only once its mapping is gone: the cache
//!    takes the mapping out of its index with `Arc::try_unwrap`, which succeeds only when no
//!    [`SegmentRef`](crate::SegmentRef) holds it, drops it (unmaps), and only then unlinks. An
//!    unlink never truncates anyway; the rule keeps `/proc/self/maps` honest too.
//!
//! What the cache cannot stop is a process running as the same user (or root) writing to the
//! files behind its back; that is outside its contract, as for any file a program maps.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use memmap2::{Mmap, MmapOptions};

use crate::SegmentId;
use crate::format::{FOOTER_LEN, FOOTER_SIZE, Footer, RejectReason};
use crate::pool::Handles;

/// One read-only mapping of a whole segment file (data and footer). Shared by every pin of the
/// segment through an `Arc`.
#[derive(Debug)]
pub(crate) struct Mapping {
    // Field order matters: `mmap` drops (unmaps) before `_handle` returns its permit to the
    // pool, so the pool never counts fewer handles than there are live mappings.
    mmap: Mmap,
    /// The data length; `mmap.len() == data_len + FOOTER_LEN` (checked in `map`).
    data_len: usize,
    id: SegmentId,
    _handle: Handles,
}

/// Why a file could not be mapped as a segment.
#[derive(Debug)]
pub(crate) enum MapError {
    /// A system call failed.
    Io(&'static str, io::Error),
    /// The file is ours but its content does not match its footer (or the expected length).
    Corrupt(&'static str),
    /// The file is not one the cache trusts (type, owner, mode, links): not ours to judge.
    Untrusted(&'static str),
}

/// What [`Mapping::map`] checks the data against.
pub(crate) struct Expect {
    pub(crate) id: SegmentId,
    /// The data length, or `None` to take it from the file (then checked by the footer).
    pub(crate) len: Option<u64>,
    pub(crate) euid: u32,
    /// Whether to check the data checksum.
    pub(crate) verify_data: bool,
}

impl Mapping {
    /// Checks that `file` is a segment file the cache trusts, maps it, and checks its footer
    /// (and, if asked, its data checksum). Holds `handle` for the mapping's lifetime.
    pub(crate) fn map(file: &File, expect: &Expect, handle: Handles) -> Result<Self, MapError> {
        let meta = file
            .metadata()
            .map_err(|e| MapError::Io("stat segment", e))?;
        if !meta.file_type().is_file() {
            return Err(MapError::Untrusted("not a regular file"));
        }
        if meta.uid() != expect.euid {
            return Err(MapError::Untrusted("owned by another user"));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(MapError::Untrusted("readable or writable by others"));
        }
        if meta.nlink() != 1 {
            return Err(MapError::Untrusted("has other hard links"));
        }
        let file_len = meta.len();
        if let Some(len) = expect.len
            && len.checked_add(FOOTER_LEN) != Some(file_len)
        {
            return Err(MapError::Corrupt(
                "file size does not match the segment length",
            ));
        }
        if file_len < FOOTER_LEN {
            return Err(MapError::Corrupt(RejectReason::TooShort.describe()));
        }
        let Ok(map_len) = usize::try_from(file_len) else {
            return Err(MapError::Io(
                "map segment",
                io::Error::from(io::ErrorKind::FileTooLarge),
            ));
        };
        // SAFETY: `memmap2` requires that the mapped file not be modified or truncated while the
        // mapping lives. `file` is a segment file of this cache: regular, owned by our user,
        // mode 0600 and singly linked (checked just above on this very descriptor), in a 0700
        // directory we own and hold an exclusive lock on. The cache never writes, truncates or
        // rewrites a file once it has a segment name, and unlinks it only after this mapping is
        // dropped (see the module docs). We map exactly the length just read, read-only.
        let mmap = unsafe { MmapOptions::new().len(map_len).map(file) }
            .map_err(|e| MapError::Io("map segment", e))?;
        let data_len = map_len - FOOTER_SIZE;
        let mut footer = [0u8; FOOTER_SIZE];
        footer.copy_from_slice(&mmap[data_len..]);
        let footer = Footer::decode(&footer, expect.id, file_len)
            .map_err(|r| MapError::Corrupt(r.describe()))?;
        if expect.verify_data && crc32c::crc32c(&mmap[..data_len]) != footer.crc {
            return Err(MapError::Corrupt(RejectReason::DataChecksum.describe()));
        }
        Ok(Self {
            mmap,
            data_len,
            id: expect.id,
            _handle: handle,
        })
    }

    pub(crate) fn id(&self) -> SegmentId {
        self.id
    }

    /// The segment's data (the file without its footer).
    pub(crate) fn data(&self) -> &[u8] {
        // In bounds: `map` made `mmap.len() == data_len + FOOTER_SIZE`.
        &self.mmap[..self.data_len]
    }
}
