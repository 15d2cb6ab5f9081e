//! Guards the block cache's backend traffic, counted per page: write blocks read only their
//! partial edge pages, read blocks read each covered page once, single-page blocks are views into
//! the page buffer (no copy, no I/O), and multi-page blocks copy back on drop only when changed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use blockcache::BlockCache;
use pagecache::CacheConfig;
use pageio::{MemPageIo, PageIo};

const PAGE_SIZE: usize = 512;
const PS: u64 = PAGE_SIZE as u64;
/// Pages the device holds before each scenario.
const PAGES: u64 = 8;

/// A backend that counts reads and writes of every page.
#[derive(Debug)]
struct CountingIo {
    inner: MemPageIo,
    /// Page number → (reads, writes).
    counts: Mutex<BTreeMap<u64, (u64, u64)>>,
}

impl CountingIo {
    /// A device of [`PAGES`] pages, page `no` filled with byte `no + 1`, with nothing counted.
    fn filled() -> Arc<Self> {
        let inner = MemPageIo::new(PAGE_SIZE).expect("page size");
        for no in 0..PAGES {
            inner
                .write_page(no, &[no as u8 + 1; PAGE_SIZE])
                .expect("write");
        }
        Arc::new(Self {
            inner,
            counts: Mutex::new(BTreeMap::new()),
        })
    }

    /// The pages read since the last call, each with its number of reads.
    fn take_reads(&self) -> BTreeMap<u64, u64> {
        self.take(|(reads, _)| reads)
    }

    /// The pages written since the last call, each with its number of writes.
    fn take_writes(&self) -> BTreeMap<u64, u64> {
        self.take(|(_, writes)| writes)
    }

    fn take(&self, which: impl Fn(&mut (u64, u64)) -> &mut u64) -> BTreeMap<u64, u64> {
        let mut counts = self.counts.lock().expect("counts");
        counts
            .iter_mut()
            .filter_map(|(&no, c)| {
                let n = std::mem::take(which(c));
                (n > 0).then_some((no, n))
            })
            .collect()
    }

    fn count(&self, no: u64, read: bool) {
        let mut counts = self.counts.lock().expect("counts");
        let entry = counts.entry(no).or_default();
        if read {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
}

impl PageIo for CountingIo {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn read_page(&self, no: u64, buf: &mut [u8]) -> pageio::Result<()> {
        self.count(no, true);
        self.inner.read_page(no, buf)
    }

    fn write_page(&self, no: u64, buf: &[u8]) -> pageio::Result<()> {
        self.count(no, false);
        self.inner.write_page(no, buf)
    }

    fn num_pages(&self) -> pageio::Result<u64> {
        self.inner.num_pages()
    }

    fn sync(&self) -> pageio::Result<()> {
        self.inner.sync()
    }
}

fn open(io: &Arc<CountingIo>) -> BlockCache {
    let io: Arc<dyn PageIo> = io.clone();
    BlockCache::new(io, CacheConfig::default()).expect("open")
}

/// `(page, 1)` for every page in `pages`: each read exactly once.
fn once(pages: impl IntoIterator<Item = u64>) -> BTreeMap<u64, u64> {
    pages.into_iter().map(|no| (no, 1)).collect()
}

fn backend_page(io: &CountingIo, no: u64) -> Vec<u8> {
    let mut page = vec![0; PAGE_SIZE];
    io.inner.read_page(no, &mut page).expect("read");
    page
}

#[test]
fn write_block_reads_only_its_partial_edge_pages() {
    // (offset, len, pages the backend must read). Covered pages missing from the list are covered
    // whole and must not be read.
    let cases: &[(u64, usize, &[u64])] = &[
        // Pages 0..=4: partial at both ends, three whole pages inside.
        (100, 2000, &[0, 4]),
        // Pages 1..=2: starts on a boundary, ends inside page 2.
        (PS, 1000, &[2]),
        // Pages 0..=1: starts inside page 0, ends on a boundary.
        (100, 924, &[0]),
        // Pages 2..=5, both ends on boundaries.
        (2 * PS, 4 * PAGE_SIZE, &[]),
        // Inside page 1 only: partial, so read.
        (PS + 10, 100, &[1]),
        // Exactly page 3: a whole page, even as a single-page block.
        (3 * PS, PAGE_SIZE, &[]),
        // Pages 6..=9, past the device's end (pages 8 and 9): page 9 is partial and read (as
        // zeros); page 6 whole.
        (6 * PS, 3 * PAGE_SIZE + 7, &[9]),
    ];
    for &(offset, len, reads) in cases {
        let io = CountingIo::filled();
        let mut cache = open(&io);
        let mut block = cache.get_for_write(offset, len).expect("get_for_write");
        assert_eq!(
            io.take_reads(),
            once(reads.iter().copied()),
            "pages read for a write block at {offset} of {len} bytes"
        );
        block.fill(0xEE);
        drop(block);
        cache.flush().expect("flush");
        assert_eq!(io.take_reads(), BTreeMap::new(), "flush reads nothing");

        // The bytes around the block in its edge pages were kept; the block's own are 0xEE.
        let end = offset + len as u64;
        for no in offset / PS..=(end - 1) / PS {
            let page = backend_page(&io, no);
            for (i, &b) in page.iter().enumerate() {
                let at = no * PS + i as u64;
                let want = if (offset..end).contains(&at) {
                    0xEE
                } else if no < PAGES {
                    no as u8 + 1
                } else {
                    0
                };
                assert_eq!(b, want, "byte {at} after a write block at {offset}+{len}");
            }
        }
    }
}

#[test]
fn read_block_reads_every_covered_page_once() {
    let io = CountingIo::filled();
    let cache = open(&io);
    let block = cache.get(100, 2000).expect("get");
    assert_eq!(io.take_reads(), once(0..=4));
    assert!(!block.is_zero_copy());
    for (i, &b) in block.iter().enumerate() {
        assert_eq!(u64::from(b), (100 + i as u64) / PS + 1, "byte {}", 100 + i);
    }

    // A neighbour on the shared last page, while the first block lives: no read, it is pinned.
    let neighbour = cache.get(2100, 300).expect("get");
    assert!(neighbour.is_zero_copy());
    assert_eq!(io.take_reads(), BTreeMap::new());
    drop((block, neighbour));

    // Again, now that the pages are cached: no read.
    let again = cache.get(0, 5 * PAGE_SIZE).expect("get");
    assert_eq!(io.take_reads(), BTreeMap::new());
    drop(again);

    // A read block over whole pages is still a read: the pages are read, not zeroed.
    let whole = cache.get(5 * PS, 2 * PAGE_SIZE).expect("get");
    assert_eq!(io.take_reads(), once(5..=6));
    assert!(whole[..PAGE_SIZE].iter().all(|&b| b == 6));
    assert!(whole[PAGE_SIZE..].iter().all(|&b| b == 7));
    assert_eq!(io.take_writes(), BTreeMap::new(), "reads write nothing");
}

#[test]
fn single_page_blocks_are_views_into_the_page() {
    let io = CountingIo::filled();
    let mut cache = open(&io);
    let mut a = cache.get(PS + 88, 16).expect("get");
    let mut b = cache.get_for_write(PS + 200, 40).expect("get_for_write");
    assert!(a.is_zero_copy() && b.is_zero_copy());
    assert_eq!(
        io.take_reads(),
        once([1]),
        "one read of page 1 for both blocks"
    );

    // Both point into the same page buffer, at their offsets within the page.
    let (pa, pb) = (a.as_ptr() as usize, b.as_ptr() as usize);
    assert_eq!(pb - pa, 200 - 88);

    a.fill(0xA1);
    b.fill(0xB2);
    drop((a, b));
    assert_eq!(
        cache.stats().dirty,
        1,
        "writes through a view dirty the page"
    );

    // A later block on the same bytes sees them, through the same memory, with no I/O at all.
    let a2 = cache.get(PS + 88, 16).expect("get");
    assert_eq!(a2.as_ptr() as usize, pa);
    assert!(a2.iter().all(|&x| x == 0xA1));
    let b2 = cache.get(PS + 200, 40).expect("get");
    assert!(b2.iter().all(|&x| x == 0xB2));
    // And a buffered block that covers the same bytes copies them from the page.
    drop((a2, b2));
    let around = cache.get(PS, 2 * PAGE_SIZE).expect("get");
    assert_eq!(
        io.take_reads(),
        once([2]),
        "only the page not yet cached is read"
    );
    assert!(around[88..104].iter().all(|&x| x == 0xA1));
    assert!(around[200..240].iter().all(|&x| x == 0xB2));
    assert!(around[104..200].iter().all(|&x| x == 2));
    drop(around);
    assert_eq!(
        io.take_writes(),
        BTreeMap::new(),
        "nothing written before the flush"
    );

    cache.flush().expect("flush");
    assert_eq!(
        io.take_writes(),
        once([1]),
        "the flush writes the one changed page"
    );
    let page = backend_page(&io, 1);
    assert!(page[88..104].iter().all(|&x| x == 0xA1));
    assert!(page[200..240].iter().all(|&x| x == 0xB2));
}

#[test]
fn multi_page_block_copies_back_on_drop_only_when_changed() {
    let io = CountingIo::filled();
    let mut cache = open(&io);

    // Read and dropped unchanged: no page becomes dirty, the flush writes nothing.
    let block = cache.get(300, 1500).expect("get");
    assert_eq!(io.take_reads(), once(0..=3));
    assert!(!block.is_changed());
    drop(block);
    assert_eq!(cache.stats().dirty, 0);
    cache.flush().expect("flush");
    assert_eq!(io.take_writes(), BTreeMap::new());

    // Changed: nothing reaches the pages while it lives, all of them when it is dropped.
    let mut block = cache.get(300, 1500).expect("get");
    block[0] = 0xC0;
    block[1499] = 0xC3;
    assert!(block.is_changed());
    assert_eq!(cache.stats().dirty, 0, "no copy-back before the drop");
    drop(block);
    assert_eq!(
        cache.stats().dirty,
        4,
        "the drop copies back into every covered page"
    );
    let first = cache.get(300, 1).expect("get");
    let last = cache.get(1799, 1).expect("get");
    assert_eq!((first[0], last[0]), (0xC0, 0xC3));
    drop((first, last));
    assert_eq!(io.take_reads(), BTreeMap::new());
    cache.flush().expect("flush");
    assert_eq!(io.take_writes(), once(0..=3));
    assert_eq!(backend_page(&io, 0)[300], 0xC0);
    assert_eq!(backend_page(&io, 3)[1799 - 3 * PAGE_SIZE], 0xC3);
    assert_eq!(backend_page(&io, 1), vec![2; PAGE_SIZE]);

    // A write block over cached pages, left unchanged, copies nothing back either.
    let block = cache.get_for_write(300, 1500).expect("get_for_write");
    drop(block);
    assert_eq!(cache.stats().dirty, 0);
    cache.flush().expect("flush");
    assert_eq!(io.take_writes(), BTreeMap::new());
    assert_eq!(io.take_reads(), BTreeMap::new());
}

#[test]
fn pinned_pages_stay_past_capacity_and_are_read_once() {
    // Capacity counts unpinned pages: a block over more pages than that still holds them all,
    // so none is read twice while it lives, and every one is written once at the flush.
    let io = CountingIo::filled();
    let io_dyn: Arc<dyn PageIo> = io.clone();
    let mut cache = BlockCache::new(io_dyn, CacheConfig::default().with_capacity(2)).expect("open");
    let mut block = cache.get(10, 7 * PAGE_SIZE).expect("get");
    assert_eq!(io.take_reads(), once(0..=7));
    block.fill(0x77);
    assert_eq!(cache.stats().pinned, 8);
    drop(block);
    cache.flush().expect("flush");
    assert_eq!(io.take_writes(), once(0..=7));
    assert_eq!(io.take_reads(), BTreeMap::new());
}
