//! `FdPageIo` reads and writes every page whole, even though Linux does not make a buffered
//! `pread` concurrent with a `pwrite` of the same range see all-old or all-new bytes: a reader
//! racing a writer (single pages and batches) never sees a mix of two writes.

use std::sync::atomic::{AtomicBool, Ordering};

use pageio::{FdPageIo, PageIo};

const PAGE: usize = 64 << 10;
const READS: u64 = 20_000;

/// Whether `page` is one whole write: every write fills its page with one byte value.
fn whole(page: &[u8]) -> bool {
    // Each byte equals the next one (a memcmp, fast even in a debug build).
    page[1..] == page[..PAGE - 1]
}

#[test]
fn a_reader_racing_a_writer_sees_whole_pages() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let io = FdPageIo::create(dir.path().join("pages"), PAGE)?;
    let zeros = vec![0; PAGE];
    io.write_pages(&[(0, &zeros), (1, &zeros)])?;
    let (started, done) = (AtomicBool::new(false), AtomicBool::new(false));
    let (writes, torn) = std::thread::scope(|s| -> pageio::Result<_> {
        // The writer writes until the reader has made all its reads.
        let writer = s.spawn(|| -> pageio::Result<u64> {
            let fills: Vec<Vec<u8>> = (1..=4).map(|b| vec![b; PAGE]).collect();
            let mut writes = 0u64;
            while !done.load(Ordering::Relaxed) {
                started.store(true, Ordering::Relaxed);
                let fill = &fills[(writes % 4) as usize];
                if writes.is_multiple_of(3) {
                    io.write_pages(&[(0, fill), (1, fill)])?;
                } else {
                    io.write_page(writes % 2, fill)?;
                }
                writes += 1;
            }
            Ok(writes)
        });
        let mut torn = 0u64;
        let (mut a, mut b) = (vec![0; PAGE], vec![0; PAGE]);
        while !started.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        let reads = (0..READS).try_for_each(|i| {
            if i % 2 == 0 {
                io.read_pages(&mut [(0, &mut a), (1, &mut b)])?;
                torn += u64::from(!whole(&a)) + u64::from(!whole(&b));
            } else {
                io.read_page(i % 4 / 2, &mut a)?;
                torn += u64::from(!whole(&a));
            }
            Ok(())
        });
        done.store(true, Ordering::Relaxed);
        let written = writer.join().expect("the writer does not panic")?;
        reads?;
        Ok((written, torn))
    })?;
    assert_eq!(
        torn, 0,
        "{torn} torn pages in {READS} reads racing {writes} writes"
    );
    Ok(())
}
