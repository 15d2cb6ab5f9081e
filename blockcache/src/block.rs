//! A live byte range: a view into one page, or a pinned buffer across pages.
//!
//! This is the crate's only `unsafe` code. The soundness argument, in one place:
//! - A block's bytes are its own. [`BlockCache::claim`] refuses a range that overlaps a live
//!   block, and the range is released only when the block is dropped, so no two blocks ever
//!   reach the same byte.
//! - A single-page block's pointer stays valid: the block holds a pin on the page, and a pinned
//!   page's buffer is neither moved nor freed (`PageRef::as_ptr`). The pointer is derived from
//!   the buffer's one raw root, which the page cache's guards never reborrow (they make a slice
//!   only when dereferenced), so taking and dropping a write guard — as a block does before its
//!   first write — leaves other blocks' pointers into the same page valid.
//! - Nothing else writes a block's bytes, and nothing reads them while the block writes: the page
//!   cache is private to the block cache; the block cache touches page bytes only through
//!   blocks (each within its own range) and in `flush`/`truncate`, which take `&mut BlockCache`
//!   and so cannot run while any block (which borrows the cache) is live. The page cache reads a
//!   pinned page only to finish a write-back chosen before the pin; before a block first writes
//!   it takes the page's write guard once (see `PageRef::as_ptr`), which waits for such a
//!   write-back, and no new one can start while the block's pin lives.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use pagecache::PageRef;

use crate::Result;
use crate::cache::{Access, BlockCache};

/// Bytes `offset..offset + len` of a [`BlockCache`], pinned while the block lives.
///
/// Derefs to `[u8]`. Writing through [`DerefMut`] marks the block changed; a changed block's
/// bytes reach the page cache at once (single page) or when it is dropped (several pages).
pub struct Block<'a> {
    cache: &'a BlockCache,
    offset: u64,
    /// Written through `DerefMut` (for a single-page block: and the write guard taken).
    changed: bool,
    view: View<'a>,
}

enum View<'a> {
    /// Inside one page: `ptr` is the block's first byte in the page buffer `page` pins, and the
    /// block's `len` bytes from there are inside that buffer.
    Single {
        page: PageRef<'a>,
        ptr: NonNull<u8>,
        len: usize,
    },
    /// Across pages: the block's bytes, with every page the range touches pinned, in order.
    Multi {
        pages: Vec<PageRef<'a>>,
        buf: Box<[u8]>,
    },
}

// SAFETY: a block owns its byte range exclusively (see the module docs), the pages it points
// into are pinned, and `PageRef` is Send + Sync; so moving a block to another thread, or sharing
// `&Block` (which only reads its own bytes), cannot race with anything.
unsafe impl Send for Block<'_> {}
// SAFETY: as for `Send`: `&Block` gives read access to bytes no one else can reach.
unsafe impl Sync for Block<'_> {}

impl<'a> Block<'a> {
    pub(crate) fn new(
        cache: &'a BlockCache,
        offset: u64,
        len: usize,
        access: Access,
    ) -> Result<Self> {
        let end = cache.claim(offset, len, access)?;
        // From here on the range is registered: every exit path must release it. Building the
        // block first and letting its Drop do it would copy an unfilled buffer back on error, so
        // a small guard does it until the block exists.
        let claim = Claim { cache, offset };
        let view = Self::pin_and_fill(cache, offset, end, access)?;
        std::mem::forget(claim);
        if access == Access::Write {
            cache.extend_to(end);
        }
        Ok(Self {
            cache,
            offset,
            changed: false,
            view,
        })
    }

    fn pin_and_fill(
        cache: &'a BlockCache,
        offset: u64,
        end: u64,
        access: Access,
    ) -> Result<View<'a>> {
        let ps = cache.page_size() as u64;
        let (first, last) = (offset / ps, (end - 1) / ps);
        let len = (end - offset) as usize;
        // Is page `no` covered whole by a write block (so its old contents do not matter)?
        let whole = |no: u64| access == Access::Write && no * ps >= offset && (no + 1) * ps <= end;
        if first == last {
            let page = cache.pin(first, whole(first))?;
            let in_page = (offset - first * ps) as usize;
            let base = NonNull::new(page.as_ptr()).expect("a pinned page has a buffer");
            // SAFETY: `base` is the start of the pinned page's `page_size` buffer, and
            // `in_page + len <= page_size` because the range lies inside this page.
            let ptr = unsafe { base.add(in_page) };
            return Ok(View::Single { page, ptr, len });
        }
        // Pin the pages that must be read (partial edges; every page of a read block) before
        // the ones a write block covers whole, so a failed read leaves nothing behind.
        let mut pinned: Vec<Option<PageRef<'a>>> = (first..=last).map(|_| None).collect();
        for pass_whole in [false, true] {
            for (slot, no) in pinned.iter_mut().zip(first..=last) {
                if whole(no) == pass_whole {
                    *slot = Some(cache.pin(no, pass_whole)?);
                }
            }
        }
        let pages: Vec<PageRef<'a>> = pinned.into_iter().flatten().collect();
        // Filled by appending each page's part in order (the parts are contiguous), so the
        // buffer is written once, never zeroed first.
        let mut buf = Vec::with_capacity(len);
        for page in &pages {
            let (in_page, in_buf, n) = overlap(page.page_no(), ps, offset, end);
            debug_assert_eq!(in_buf, buf.len());
            // SAFETY: the page is pinned and `in_page + n <= page_size`; the bytes are inside
            // this block's claimed range, so no other block writes them (module docs).
            let src = unsafe { std::slice::from_raw_parts(page.as_ptr().add(in_page), n) };
            buf.extend_from_slice(src);
        }
        Ok(View::Multi {
            pages,
            buf: buf.into_boxed_slice(),
        })
    }

    /// The block's first byte offset.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the block lies inside one page and is a view of it (no copy).
    #[must_use]
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.view, View::Single { .. })
    }

    /// Whether the block's bytes were changed through it.
    #[must_use]
    pub fn is_changed(&self) -> bool {
        self.changed
    }
}

impl Deref for Block<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.view {
            // SAFETY: `ptr..ptr + len` is inside a pinned page and owned by this block (module
            // docs); the shared borrow of `self` prevents a `&mut` to the same bytes.
            View::Single { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
            View::Multi { buf, .. } => buf,
        }
    }
}

impl DerefMut for Block<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let first_write = !self.changed;
        self.changed = true;
        match &mut self.view {
            View::Single { page, ptr, len } => {
                if first_write {
                    // Waits for a write-back chosen before our pin, and marks the page dirty
                    // (see the module docs).
                    drop(page.write());
                }
                // SAFETY: as in `deref`; the mutable borrow of `self` makes this the only
                // reference to the block's bytes.
                unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), *len) }
            }
            View::Multi { buf, .. } => buf,
        }
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        if let (true, View::Multi { pages, buf }) = (self.changed, &self.view) {
            let ps = self.cache.page_size() as u64;
            let end = self.offset + buf.len() as u64;
            for page in pages {
                let (in_page, in_buf, n) = overlap(page.page_no(), ps, self.offset, end);
                // Held over the copy: waits for a write-back chosen before our pin, and marks
                // the page dirty. Other blocks' bytes in this page are not touched through it.
                let _write = page.write();
                // SAFETY: the page is pinned, `in_page + n <= page_size`, and the bytes are
                // this block's own (module docs).
                let dst = unsafe { std::slice::from_raw_parts_mut(page.as_ptr().add(in_page), n) };
                dst.copy_from_slice(&buf[in_buf..in_buf + n]);
            }
        }
        self.cache.release(self.offset);
    }
}

impl fmt::Debug for Block<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("offset", &self.offset)
            .field("len", &self.len())
            .field("zero_copy", &self.is_zero_copy())
            .field("changed", &self.changed)
            .finish()
    }
}

/// Releases a claimed range if building its block fails.
struct Claim<'a> {
    cache: &'a BlockCache,
    offset: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.cache.release(self.offset);
    }
}

/// Where page `no` and the range `offset..end` meet: (offset in the page, offset in the block,
/// length).
fn overlap(no: u64, ps: u64, offset: u64, end: u64) -> (usize, usize, usize) {
    let start = offset.max(no * ps);
    let stop = end.min((no + 1) * ps);
    (
        (start - no * ps) as usize,
        (start - offset) as usize,
        (stop - start) as usize,
    )
}
