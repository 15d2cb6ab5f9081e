//! A custom [`PageIo`] backend written from scratch, checked with the conformance suite.
//!
//! `ChecksumPageIo` keeps its pages in memory, each with a checksum that every read verifies,
//! so a page damaged behind the backend's back is reported as an error instead of being handed
//! up as data. It shows what a backend has to do to keep the `PageIo` contract:
//!
//! - validate the page size at construction ([`check_page_size`]);
//! - check every buffer's length before touching anything ([`check_buffer`], and
//!   [`check_buffers`] for a whole batch);
//! - refuse pages and sizes no file could hold ([`page_offset`], [`byte_len`]);
//! - read pages never written as zeros, track the size as highest page + 1;
//! - wrap its own errors with [`Error::backend_with_kind`], keeping them as the source and saying
//!   what a caller can do about them (a checksum mismatch is [`ErrorKind::Corrupt`]: a retry
//!   reads the same damaged bytes).
//!
//! Run it with `cargo run -p pageio --example custom_backend --features test-utils`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use pageio::{
    Error, ErrorKind, Op, PageIo, Result, byte_len, check_buffer, check_buffers, check_page_size,
    conformance, page_offset,
};

/// Pages in memory, each stored with a checksum that reads verify.
#[derive(Debug)]
pub struct ChecksumPageIo {
    page_size: usize,
    /// Guards the stored pages and the page count, which change together.
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    pages: HashMap<u64, StoredPage>,
    /// One more than the highest page written or kept by `truncate`.
    num_pages: u64,
}

#[derive(Debug)]
struct StoredPage {
    data: Box<[u8]>,
    checksum: u64,
}

/// A stored page whose contents no longer match their checksum.
#[derive(Debug)]
pub struct ChecksumMismatch {
    /// The damaged page.
    pub page: u64,
}

impl fmt::Display for ChecksumMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {} does not match its checksum", self.page)
    }
}

impl std::error::Error for ChecksumMismatch {}

/// FNV-1a, 64 bits: not cryptographic, but any flipped bit changes it.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl ChecksumPageIo {
    /// An empty device with pages of `page_size` bytes.
    pub fn new(page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Ok(Self {
            page_size,
            state: RwLock::new(State::default()),
        })
    }

    /// Flips one bit of a stored page without updating its checksum, as a failing disk would.
    /// Returns whether the page was stored.
    pub fn damage(&self, page: u64) -> bool {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match state.pages.get_mut(&page) {
            Some(stored) => {
                stored.data[0] ^= 1;
                true
            }
            None => false,
        }
    }
}

impl PageIo for ChecksumPageIo {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        check_buffer(no, self.page_size, buf.len())?;
        // A poisoned lock still holds whole pages: every update below is one insert or store.
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        match state.pages.get(&no) {
            Some(stored) if checksum(&stored.data) != stored.checksum => {
                Err(Error::backend_with_kind(
                    Op::Read,
                    Some(no),
                    ErrorKind::Corrupt,
                    ChecksumMismatch { page: no },
                ))
            }
            Some(stored) => {
                buf.copy_from_slice(&stored.data);
                Ok(())
            }
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        check_buffer(no, self.page_size, buf.len())?;
        page_offset(no, self.page_size)?;
        let page = StoredPage {
            data: buf.into(),
            checksum: checksum(buf),
        };
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.pages.insert(no, page);
        state.num_pages = state.num_pages.max(no + 1);
        Ok(())
    }

    fn num_pages(&self) -> Result<u64> {
        Ok(self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .num_pages)
    }

    fn sync(&self) -> Result<()> {
        // Nothing here outlives the process, so there is nothing to make durable.
        Ok(())
    }

    /// Checksums every page before taking the lock once for the whole batch.
    fn write_pages(&self, pages: &[(u64, &[u8])]) -> Result<()> {
        check_buffers(
            self.page_size,
            pages.iter().map(|(no, buf)| (*no, buf.len())),
        )?;
        for (no, _) in pages {
            page_offset(*no, self.page_size)?;
        }
        let stored: Vec<(u64, StoredPage)> = pages
            .iter()
            .map(|&(no, buf)| {
                let page = StoredPage {
                    data: buf.into(),
                    checksum: checksum(buf),
                };
                (no, page)
            })
            .collect();
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        for (no, page) in stored {
            state.pages.insert(no, page);
            state.num_pages = state.num_pages.max(no + 1);
        }
        Ok(())
    }

    fn truncate(&self, num_pages: u64) -> Result<()> {
        byte_len(num_pages, self.page_size)?;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.pages.retain(|&no, _| no < num_pages);
        state.num_pages = num_pages;
        Ok(())
    }
}

/// Runs the conformance suite on a fresh `ChecksumPageIo`, then shows a damaged page caught.
pub fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    if let Err(failure) = conformance::run_all(ChecksumPageIo::new(4096)?) {
        eprintln!("ChecksumPageIo fails the conformance suite: {failure}");
        return Err(failure.into());
    }
    println!(
        "ChecksumPageIo passes all {} conformance checks",
        conformance::CHECKS.len()
    );

    let io = ChecksumPageIo::new(4096)?;
    io.write_page(0, &[42; 4096])?;
    io.damage(0);
    let mut buf = vec![0; 4096];
    match io.read_page(0, &mut buf) {
        Err(error @ Error::Backend { .. }) => {
            let cause = std::error::Error::source(&error).map(ToString::to_string);
            println!(
                "a damaged page is caught: {error} ({})",
                cause.unwrap_or_default()
            );
            Ok(())
        }
        other => Err(format!("a damaged page was not caught: {other:?}").into()),
    }
}
