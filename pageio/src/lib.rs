//! Fixed-size page I/O behind one trait.
//!
//! [`PageIo`] is the bottom of the pagestore stack: a device of numbered, fixed-size pages that
//! can be read, written and made durable. Everything above it (the page cache, block cache and
//! allocator) talks to storage only through this trait, so a storage engine can bring its own
//! backend — a raw block device, an object store, an encrypted file — and keep the rest.
//!
//! Backends in this crate:
//! - [`FdPageIo`]: a file, with `pread`/`pwrite` on an owned descriptor and `fdatasync`.
//! - [`MemPageIo`]: pages in memory, for tests and embedded use.
//! - `FaultyPageIo` (feature `test-utils`): a wrapper that injects errors, short writes, failed
//!   syncs that lose writes (as Linux's `fsync` may) and crashes that drop unsynced writes.
//!
//! Every [`Error`] has a [`kind`](Error::kind), an [`ErrorKind`] that says what the caller can
//! do about it: retry ([`Transient`](ErrorKind::Transient), [`TimedOut`](ErrorKind::TimedOut)),
//! reopen ([`Unavailable`](ErrorKind::Unavailable)), or give up
//! ([`Corrupt`](ErrorKind::Corrupt), [`InvalidInput`](ErrorKind::InvalidInput), ...).
//!
//! A custom backend implements [`PageIo`] with the help of [`check_page_size`],
//! [`check_buffer`] / [`check_buffers`] and [`page_offset`] / [`byte_len`], and checks itself
//! against the contract with `conformance::run_all` (feature `test-utils`); the crate's
//! `custom_backend` example shows one.
//!
//! ```
//! use pageio::{MemPageIo, PageIo};
//!
//! let io = MemPageIo::new(4096)?;
//! let page = vec![7u8; 4096];
//! io.write_page(3, &page)?;
//! io.sync()?;
//!
//! let mut buf = vec![0u8; 4096];
//! io.read_page(3, &mut buf)?;
//! assert_eq!(buf, page);
//! io.read_page(9, &mut buf)?; // past the end: zeros
//! assert!(buf.iter().all(|&b| b == 0));
//! assert_eq!(io.num_pages()?, 4);
//! # Ok::<(), pageio::Error>(())
//! ```
//!
//! # Features
//! - `test-utils`: `FaultyPageIo` and the `conformance` suite.

use std::fmt;

pub use error::{Error, ErrorKind, Op, Result};
#[cfg(feature = "test-utils")]
pub use faulty::{Fault, FaultyPageIo, OpCounts, SyncFailure};
pub use fd::FdPageIo;
pub use mem::MemPageIo;

#[cfg(feature = "test-utils")]
pub mod conformance;
mod error;
#[cfg(feature = "test-utils")]
mod faulty;
mod fd;
mod mem;

// The README's examples are doctests too, so the crates.io page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The smallest page size a backend accepts: 512 bytes.
pub const MIN_PAGE_SIZE: usize = 512;
/// The largest page size a backend accepts: 1 MiB.
pub const MAX_PAGE_SIZE: usize = 1 << 20;

/// A device of numbered, fixed-size pages.
///
/// # Contract
///
/// Every backend, built in or custom, keeps these promises; `conformance::run_all` checks them.
///
/// - **Page size.** [`page_size`](PageIo::page_size) is a power of two from [`MIN_PAGE_SIZE`] to
///   [`MAX_PAGE_SIZE`], fixed for the backend's life. Every buffer passed in is exactly one page
///   long; any other length is [`Error::BufferSize`], never a panic and never a partial I/O (in a
///   batch, one bad buffer fails the whole call before anything is read or written).
/// - **Zero fill.** A page never written — past the end, in a hole below it, or cut off by
///   [`truncate`](PageIo::truncate) — reads as zeros.
/// - **Range.** A page whose bytes would lie past `i64::MAX` (see [`page_offset`]) cannot be
///   written: writing it fails with [`Error::OutOfRange`], and reading it reads zeros or fails
///   the same way.
/// - **Read your writes.** A successful [`write_page`](PageIo::write_page) is seen by every later
///   read through this backend, from any thread, synced or not.
/// - **Size.** [`num_pages`](PageIo::num_pages) is one more than the highest page ever written
///   (or kept by [`truncate`](PageIo::truncate)), and 0 for an empty device.
/// - **Durability.** Only [`sync`](PageIo::sync) is a barrier: once it returns `Ok`, every write
///   that returned `Ok` before the call began survives a crash. Writes not yet synced may be lost
///   in a crash, wholly or in part.
/// - **Failure.** A write that returns an error may have written any prefix of the page, or
///   nothing. A failed batch may have written any subset of its pages. Errors are returned, never
///   turned into panics, and the backend stays usable for later calls.
/// - **Threads.** All methods take `&self` and may be called concurrently. A page is read and
///   written whole: concurrent writes to the *same* page leave one of them, never a mix, and a
///   read racing a write of a page sees all of the page before it or all of the write (in a
///   batch, each page is whole; a batch as a whole is not atomic). Writes to different pages do
///   not interfere.
///
/// Only the five methods without defaults are required. The batch methods have default
/// implementations that loop over single pages; backends with a cheaper batched or concurrent
/// path (the object-store backend issues its requests in parallel) override them.
pub trait PageIo: Send + Sync + fmt::Debug + 'static {
    /// The size of every page, in bytes.
    fn page_size(&self) -> usize;

    /// Reads page `no` into `buf`, which is exactly one page long. A page never written reads as
    /// zeros.
    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes `buf`, exactly one page long, to page `no`, growing the device if needed.
    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()>;

    /// The number of pages: one more than the highest page written, or 0 when empty.
    fn num_pages(&self) -> Result<u64>;

    /// Durability barrier: returns once every write that completed before the call is durable.
    fn sync(&self) -> Result<()>;

    /// Reads several pages, each `(page number, one-page buffer)`.
    ///
    /// Every buffer is checked before any is read: one of the wrong length fails the whole batch
    /// with [`Error::BufferSize`] and no buffer is touched. The default then reads the pages one
    /// by one in the given order and stops at the first error.
    fn read_pages(&self, pages: &mut [(u64, &mut [u8])]) -> Result<()> {
        check_buffers(
            self.page_size(),
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        for (no, buf) in pages.iter_mut() {
            self.read_page(*no, buf)?;
        }
        Ok(())
    }

    /// Writes several pages, each `(page number, one-page buffer)`, with distinct page numbers.
    ///
    /// Every buffer is checked before any is written: one of the wrong length fails the whole
    /// batch with [`Error::BufferSize`] and nothing is written. Past that, nothing is promised
    /// about order or atomicity: on an I/O error, any subset may have been written. The default
    /// writes the pages one by one in the given order and stops at the first error.
    fn write_pages(&self, pages: &[(u64, &[u8])]) -> Result<()> {
        check_buffers(
            self.page_size(),
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        for (no, buf) in pages {
            self.write_page(*no, buf)?;
        }
        Ok(())
    }

    /// Shrinks (or grows) the device to `num_pages` pages; pages at or past the new end read as
    /// zeros afterwards. Not every backend can do this: the default returns
    /// [`Error::Unsupported`]. Like a write, the new size is durable only after
    /// [`sync`](PageIo::sync).
    fn truncate(&self, num_pages: u64) -> Result<()> {
        let _ = num_pages;
        Err(Error::Unsupported { op: Op::Truncate })
    }
}

/// Checks that `size` is a valid page size: a power of two from [`MIN_PAGE_SIZE`] to
/// [`MAX_PAGE_SIZE`]. Backends call this at construction.
pub fn check_page_size(size: usize) -> Result<()> {
    if size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(Error::InvalidPageSize { size })
    }
}

/// Checks that a buffer for page `page` is exactly `page_size` bytes long.
pub fn check_buffer(page: u64, page_size: usize, buf_len: usize) -> Result<()> {
    if buf_len == page_size {
        Ok(())
    } else {
        Err(Error::BufferSize {
            page,
            expected: page_size,
            actual: buf_len,
        })
    }
}

/// Checks every `(page, buffer length)` of a batch with [`check_buffer`], returning the first
/// mismatch. Batch methods call this before any I/O, so a bad buffer changes nothing.
pub fn check_buffers(
    page_size: usize,
    buffers: impl IntoIterator<Item = (u64, usize)>,
) -> Result<()> {
    buffers
        .into_iter()
        .try_for_each(|(page, len)| check_buffer(page, page_size, len))
}

/// The byte offset of page `page`, or [`Error::OutOfRange`] when the page does not end at or
/// below `i64::MAX` (the largest file offset the OS accepts), so that every byte of every page
/// this accepts can be read and written.
pub fn page_offset(page: u64, page_size: usize) -> Result<u64> {
    page.checked_add(1)
        .and_then(|pages| byte_len(pages, page_size).ok())
        .map(|end| end - page_size as u64)
        .ok_or(Error::OutOfRange { page })
}

/// The length in bytes of a device of `num_pages` pages, or [`Error::OutOfRange`] (naming
/// `num_pages`) when it exceeds `i64::MAX`, the largest file length the OS accepts. Backends
/// check a [`PageIo::truncate`] target with this.
pub fn byte_len(num_pages: u64, page_size: usize) -> Result<u64> {
    num_pages
        .checked_mul(page_size as u64)
        .filter(|&len| i64::try_from(len).is_ok())
        .ok_or(Error::OutOfRange { page: num_pages })
}

impl<T: PageIo + ?Sized> PageIo for std::sync::Arc<T> {
    fn page_size(&self) -> usize {
        (**self).page_size()
    }
    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_page(no, buf)
    }
    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        (**self).write_page(no, buf)
    }
    fn num_pages(&self) -> Result<u64> {
        (**self).num_pages()
    }
    fn sync(&self) -> Result<()> {
        (**self).sync()
    }
    fn read_pages(&self, pages: &mut [(u64, &mut [u8])]) -> Result<()> {
        (**self).read_pages(pages)
    }
    fn write_pages(&self, pages: &[(u64, &[u8])]) -> Result<()> {
        (**self).write_pages(pages)
    }
    fn truncate(&self, num_pages: u64) -> Result<()> {
        (**self).truncate(num_pages)
    }
}
