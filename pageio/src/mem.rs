//! Pages in memory.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::{PageIo, Result, check_buffer, check_page_size};

/// A [`PageIo`] that keeps its pages in memory: for tests, benchmarks and embedded defaults.
///
/// Pages never written take no memory and read as zeros. `sync` is a no-op: nothing here
/// survives the process.
#[derive(Debug)]
pub struct MemPageIo {
    page_size: usize,
    /// Guards the written pages and the page count (which [`PageIo::truncate`] can set below or
    /// above the highest written page).
    state: RwLock<MemState>,
}

#[derive(Debug, Default)]
struct MemState {
    pages: HashMap<u64, Box<[u8]>>,
    num_pages: u64,
}

impl MemPageIo {
    /// An empty device with pages of `page_size` bytes.
    pub fn new(page_size: usize) -> Result<Self> {
        check_page_size(page_size)?;
        Ok(Self {
            page_size,
            state: RwLock::new(MemState::default()),
        })
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, MemState> {
        // A panic while holding the lock cannot leave `MemState` half-updated (every update is a
        // single insert or field store), so a poisoned lock is still consistent.
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, MemState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PageIo for MemPageIo {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> Result<()> {
        check_buffer(no, self.page_size, buf.len())?;
        match self.state().pages.get(&no) {
            Some(page) => buf.copy_from_slice(page),
            None => buf.fill(0),
        }
        Ok(())
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> Result<()> {
        check_buffer(no, self.page_size, buf.len())?;
        crate::page_offset(no, self.page_size)?;
        let mut state = self.state_mut();
        state.pages.insert(no, buf.into());
        state.num_pages = state.num_pages.max(no + 1);
        Ok(())
    }

    fn num_pages(&self) -> Result<u64> {
        Ok(self.state().num_pages)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn truncate(&self, num_pages: u64) -> Result<()> {
        // The same limit as a file: the device's length in bytes must be a valid file offset.
        crate::byte_len(num_pages, self.page_size)?;
        let mut state = self.state_mut();
        state.pages.retain(|&no, _| no < num_pages);
        state.num_pages = num_pages;
        Ok(())
    }
}
