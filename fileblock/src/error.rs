//! The error type, and the locations that corruption reports and [`Problem`]s name.

use std::fmt;

use crate::BlockId;
use crate::format::Slot;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a [`FileBlock`](crate::FileBlock). Errors of the layers below are kept
/// as the `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes read from the file break the format: a bad magic, checksum, field or record.
    /// `at` says where.
    #[error("corrupt file at {at}: {what}")]
    Corrupt {
        /// What is wrong.
        what: String,
        /// Where in the file.
        at: Location,
    },
    /// No live block has this id.
    #[error("unknown block id {id}")]
    UnknownId {
        /// The id asked for.
        id: BlockId,
    },
    /// [`alloc_with_id`](crate::FileBlock::alloc_with_id) asked for an id that is live.
    #[error("block id {id} is already in use")]
    IdInUse {
        /// The id asked for.
        id: BlockId,
    },
    /// Id 0 and [`MAP_ID`](crate::format::MAP_ID) are reserved and can never name a block.
    #[error("block id {id} is reserved")]
    ReservedId {
        /// The id asked for.
        id: BlockId,
    },
    /// A block of zero bytes was asked for.
    #[error("invalid block size {size}: a block is at least one byte")]
    InvalidSize {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// A block larger than one extent can be (2^31 - 1 allocation units) was asked for.
    #[error("block size {size} is too large: at most {max} bytes")]
    TooLarge {
        /// The size asked for, in bytes.
        size: u64,
        /// The largest block size, in bytes.
        max: u64,
    },
    /// The body cannot grow: it would pass the largest file offset, or every block id is live.
    #[error("out of space: the file cannot grow further, or every block id is in use")]
    OutOfSpace,
    /// A [`Config`](crate::Config) value is unusable.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The file was created with a page size other than the backend's.
    #[error("the file has {file}-byte pages but the backend has {backend}-byte pages")]
    PageSizeMismatch {
        /// The page size recorded in the file.
        file: u32,
        /// The backend's page size.
        backend: usize,
    },
    /// [`create`](crate::FileBlock::create) was given a device that holds pages but no file of
    /// this format, not even an interrupted `create`: its bytes are someone else's.
    #[error(
        "cannot create a file on a device that holds {pages} pages of something else: use an \
         empty device (or truncate this one to zero pages if its bytes are not needed)"
    )]
    NotEmpty {
        /// The device's length in pages.
        pages: u64,
    },
    /// [`create`](crate::FileBlock::create) was given a device that holds a committed file.
    #[error(
        "the device holds a committed file (generation {generation}): open it instead of \
         creating one"
    )]
    AlreadyCreated {
        /// The generation of the file's newest valid superblock.
        generation: u64,
    },
    /// A root name is empty, longer than 24 bytes or contains a NUL byte.
    #[error("invalid root name {name:?}: it must be 1 to 24 bytes with no NUL byte")]
    RootName {
        /// The name given.
        name: String,
    },
    /// All 16 root slots are taken.
    #[error("the roots table is full ({} roots)", crate::format::MAX_ROOTS)]
    RootsFull,
    /// A sub-range of a block reaches past its end.
    #[error("range {offset}..+{len} is out of bounds of block {id} ({size} bytes)")]
    OutOfBounds {
        /// The block.
        id: BlockId,
        /// The offset asked for, inside the block.
        offset: u64,
        /// The length asked for.
        len: usize,
        /// The block's size in bytes.
        size: u64,
    },
    /// The block cache failed (including a page cache or backend failure beneath it); its
    /// message is this error's.
    #[error(transparent)]
    Block(#[from] blockcache::Error),
    /// The page cache failed; its message is this error's.
    #[error(transparent)]
    Cache(#[from] pagecache::Error),
    /// The backend failed; its message is this error's.
    #[error(transparent)]
    Io(#[from] pageio::Error),
}

impl Error {
    /// The backend error underneath, if this error came from the device (directly or through
    /// the caches), without walking the `source` chain. Its
    /// [`kind`](pageio::Error::kind) tells a retry from a reopen.
    #[must_use]
    pub fn backend(&self) -> Option<&pageio::Error> {
        match self {
            Error::Block(e) => e.backend(),
            Error::Cache(e) => e.backend(),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is the refusal of a file whose earlier sync failed
    /// ([`pagecache::Error::PreviousIo`]): nothing can be committed any more, and the file must
    /// be reopened from its last commit (see [`FileBlock::flush`](crate::FileBlock::flush)).
    #[must_use]
    pub fn is_previous_io(&self) -> bool {
        matches!(
            self,
            Error::Block(blockcache::Error::Cache(
                pagecache::Error::PreviousIo { .. }
            )) | Error::Cache(pagecache::Error::PreviousIo { .. })
        )
    }

    pub(crate) fn corrupt(what: impl Into<String>, at: Location) -> Self {
        Error::Corrupt {
            what: what.into(),
            at,
        }
    }
}

/// Where something is: in the file (for [`Error::Corrupt`]) or in the allocator's memory (for a
/// [`Problem`] found by [`validate`](crate::FileBlock::validate)). File offsets are in bytes from
/// the start of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// One superblock.
    Superblock(Slot),
    /// Both superblocks (neither is valid).
    Superblocks,
    /// An entry of the roots table of a superblock.
    Root {
        /// The superblock holding the table; `None` for the in-memory table.
        slot: Option<Slot>,
        /// The entry's index, 0 to 15.
        index: usize,
    },
    /// A page of the extent map.
    MapPage {
        /// The page's index in the map.
        index: u32,
        /// The page's file offset.
        offset: u64,
    },
    /// A record of the extent map.
    MapRecord {
        /// The record's index in the map.
        index: u64,
        /// The record's file offset.
        offset: u64,
    },
    /// The extent map as a whole (its location or length).
    Map,
    /// The file's length.
    FileLength {
        /// The length found, in bytes.
        len: u64,
    },
    /// An extent of the in-memory list.
    Extent {
        /// Its position in the list.
        index: u64,
        /// Its file offset.
        offset: u64,
    },
    /// A size-class bucket of free extents.
    Bucket {
        /// The bucket's index.
        index: usize,
    },
    /// The in-memory entry of a block id.
    Id {
        /// The id.
        id: BlockId,
    },
    /// The allocator's totals (body length, counters, pending list).
    Totals,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Superblock(slot) => write!(f, "superblock {slot} (page {})", slot.page()),
            Location::Superblocks => f.write_str("both superblocks (pages 0 and 1)"),
            Location::Root {
                slot: Some(slot),
                index,
            } => write!(f, "root {index} of superblock {slot}"),
            Location::Root { slot: None, index } => write!(f, "root {index}"),
            Location::MapPage { index, offset } => {
                write!(f, "map page {index} at file offset {offset}")
            }
            Location::MapRecord { index, offset } => {
                write!(f, "map record {index} at file offset {offset}")
            }
            Location::Map => f.write_str("the extent map"),
            Location::FileLength { len } => write!(f, "the file's length ({len} bytes)"),
            Location::Extent { index, offset } => {
                write!(f, "extent {index} at file offset {offset}")
            }
            Location::Bucket { index } => write!(f, "free bucket {index}"),
            Location::Id { id } => write!(f, "block id {id}"),
            Location::Totals => f.write_str("the allocator's totals"),
        }
    }
}

/// A broken invariant found by [`validate`](crate::FileBlock::validate): what is wrong, and
/// where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub what: String,
    /// Where.
    pub at: Location,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}
