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
//!
//! # Under Miri
//!
//! Miri cannot map files. Built for Miri (`cfg(miri)`), [`Mapping::map`] copies the file into an
//! anonymous mapping (which Miri supports) with `pread` instead, and keeps it writable (Miri has
//! no `mprotect`); everything else (the checks, the footer read from the mapping, the `&[u8]`
//! that [`Mapping::data`] borrows from it, the pins sharing it through an `Arc`, the unmap on
//! drop) is the same code, so Miri checks how the mapped bytes are borrowed and released.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

#[cfg(not(miri))]
use memmap2::Mmap;
use memmap2::MmapOptions;
// Under Miri the file mapping is an anonymous one holding a copy (see the module docs).
#[cfg(miri)]
use memmap2::MmapMut as Mmap;

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
        #[cfg(not(miri))]
        // SAFETY: `memmap2` requires that the mapped file not be modified or truncated while the
        // mapping lives. `file` is a segment file of this cache: regular, owned by our user,
        // mode 0600 and singly linked (checked just above on this very descriptor), in a 0700
        // directory we own and hold an exclusive lock on. The cache never writes, truncates or
        // rewrites a file once it has a segment name, and unlinks it only after this mapping is
        // dropped (see the module docs). We map exactly the length just read, read-only.
        let mmap = unsafe { MmapOptions::new().len(map_len).map(file) }
            .map_err(|e| MapError::Io("map segment", e))?;
        #[cfg(miri)]
        let mmap =
            copy_to_anonymous_map(file, map_len).map_err(|e| MapError::Io("map segment", e))?;
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

/// Miri's stand-in for mapping `len` bytes of `file`: an anonymous mapping filled by `pread`.
#[cfg(miri)]
fn copy_to_anonymous_map(file: &File, len: usize) -> io::Result<Mmap> {
    use std::os::unix::fs::FileExt as _;

    let mut mmap = MmapOptions::new().len(len).map_anon()?;
    file.read_exact_at(&mut mmap, 0)?;
    Ok(mmap)
}

// These run under Miri too (`cargo xtask miri`), where `map` takes its anonymous-copy path: they
// touch files, so Miri runs them with isolation disabled. Small data keeps them quick there.
#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::path::Path;
    use std::sync::Arc;
    use std::thread;

    use super::*;
    use crate::format::Footer;
    use crate::pool::Pool;

    const ID: SegmentId = SegmentId::from_bytes([7; 16]);

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Writes `bytes` to a new file of mode 0600 (as the cache's are) at `path` and opens it for
    /// reading.
    fn file_with(path: &Path, bytes: &[u8]) -> File {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        file.write_all(bytes).unwrap();
        drop(file);
        File::open(path).unwrap()
    }

    /// A segment file's bytes: `data`, then its footer.
    fn segment(data: &[u8]) -> Vec<u8> {
        let footer = Footer {
            id: ID,
            len: data.len() as u64,
            crc: crc32c::crc32c(data),
        };
        [data, &footer.encode()[..]].concat()
    }

    /// What `map` is to check a file of `len` data bytes against (`None`: from the footer), for
    /// files this test creates.
    fn expect(len: Option<usize>) -> Expect {
        Expect {
            id: ID,
            len: len.map(|n| n as u64),
            euid: our_uid(),
            verify_data: true,
        }
    }

    /// The owner of the files this process creates: its effective uid. Read off a new file
    /// rather than asked for, because Miri's `geteuid` answers a fixed 1000 whoever runs it,
    /// while its `fstat` reports the real owner.
    fn our_uid() -> u32 {
        let owner = tempfile::tempfile().unwrap().metadata().unwrap().uid();
        #[cfg(not(miri))]
        assert_eq!(owner, rustix::process::geteuid().as_raw());
        owner
    }

    #[test]
    fn pins_share_the_mapping_and_the_last_drop_unmaps_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = content(300);
        let file = file_with(&dir.path().join("seg"), &segment(&data));
        let pool = Pool::new(4);
        let handle = pool.try_acquire(1).unwrap();
        let mapping = Mapping::map(&file, &expect(Some(data.len())), handle).unwrap();
        // The descriptor is not needed once mapped: the mapping holds the bytes.
        drop(file);
        assert_eq!(mapping.id(), ID);
        assert_eq!(mapping.data(), &data[..]);

        // Pins as `SegmentRef`s hold them: one `Arc` per pin, read from several threads, each
        // borrowing the mapping's bytes for as long as its pin lives.
        let first = Arc::new(mapping);
        let pins: Vec<Arc<Mapping>> = (0..3).map(|_| Arc::clone(&first)).collect();
        let bytes: &[u8] = first.data();
        thread::scope(|s| {
            for (i, pin) in pins.into_iter().enumerate() {
                let data = &data;
                s.spawn(move || {
                    let view = pin.data();
                    assert_eq!(view, &data[..], "pin {i}");
                    // A pin dropped on its thread while the others still read.
                    drop(pin);
                });
            }
        });
        assert_eq!(
            bytes,
            &data[..],
            "the first pin's borrow outlives the others"
        );
        assert_eq!(Arc::strong_count(&first), 1);
        assert_eq!(pool.in_use(), 1, "the live mapping holds its handle");
        drop(first);
        assert_eq!(pool.in_use(), 0, "unmapped, and the handle returned");
    }

    #[test]
    fn short_corrupt_and_untrusted_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(2);
        let data = content(64);
        let good = segment(&data);
        let check = |name: &str, bytes: &[u8], expect: &Expect| {
            let file = file_with(&dir.path().join(name), bytes);
            let result = Mapping::map(&file, expect, pool.try_acquire(1).unwrap());
            // A rejected file's handle goes back at once; a mapped one's when it drops.
            result.map(|m| m.data().to_vec())
        };
        let corrupt = |result: Result<Vec<u8>, MapError>| match result {
            Err(MapError::Corrupt(why)) => why,
            other => panic!("expected a corrupt file, got {other:?}"),
        };

        assert_eq!(
            check("good", &good, &expect(None)).unwrap(),
            data,
            "the length comes from the footer when not given"
        );
        assert_eq!(
            corrupt(check("short", &good[..FOOTER_SIZE - 1], &expect(None))),
            RejectReason::TooShort.describe()
        );
        assert_eq!(
            corrupt(check("torn", &good[..good.len() - 1], &expect(None))),
            RejectReason::BadMagic.describe(),
            "a file missing its last byte has its footer shifted"
        );
        assert_eq!(
            corrupt(check("len", &good, &expect(Some(data.len() + 1)))),
            "file size does not match the segment length"
        );
        let mut flipped = good.clone();
        flipped[10] ^= 1;
        assert_eq!(
            corrupt(check("data", &flipped, &expect(Some(data.len())))),
            RejectReason::DataChecksum.describe()
        );
        let unverified = Expect {
            verify_data: false,
            ..expect(Some(data.len()))
        };
        assert_eq!(
            check("unverified", &flipped, &unverified).unwrap()[10],
            flipped[10],
            "without verify_data only the footer is checked"
        );
        let other = Expect {
            id: SegmentId::from_bytes([8; 16]),
            ..expect(None)
        };
        assert_eq!(
            corrupt(check("id", &good, &other)),
            RejectReason::IdMismatch.describe()
        );
        let stranger = Expect {
            euid: expect(None).euid.wrapping_add(1),
            ..expect(None)
        };
        assert!(matches!(
            check("owner", &good, &stranger),
            Err(MapError::Untrusted("owned by another user"))
        ));
        assert_eq!(pool.in_use(), 0, "every rejection gave its handle back");
    }
}
