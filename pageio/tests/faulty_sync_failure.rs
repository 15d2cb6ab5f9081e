//! A failed sync of `FaultyPageIo` behaves as Linux's `fsync` may after a write-back error
//! (`SyncFailure::LoseSome`, the default): a random subset of the writes since the last good
//! sync is gone — reads see the synced state again and no later sync brings them back — while
//! the rest stay unsynced; the seed picks the subset, and every subset can happen.

use std::collections::BTreeSet;

use pageio::{Error, Fault, FaultyPageIo, MemPageIo, Op, PageIo, SyncFailure};

const PS: usize = 512;
const PAGES: u64 = 16;

fn page(byte: u8) -> Vec<u8> {
    vec![byte; PS]
}

fn read(io: &impl PageIo, no: u64) -> Vec<u8> {
    let mut buf = page(0xA5);
    io.read_page(no, &mut buf).expect("read");
    buf
}

/// Writes pages `0..PAGES` as 1, syncs, rewrites them as 2 and fails the next sync. Returns the
/// device and the pages whose second write survived the failed sync.
fn fail_a_sync(seed: u64) -> (FaultyPageIo<MemPageIo>, BTreeSet<u64>) {
    let io = FaultyPageIo::new(MemPageIo::new(PS).expect("page size")).with_seed(seed);
    for no in 0..PAGES {
        io.write_page(no, &page(1)).expect("write");
    }
    io.sync().expect("first sync");
    for no in 0..PAGES {
        io.write_page(no, &page(2)).expect("write");
    }
    io.fail(Fault::SyncAt(io.counts().syncs));
    assert!(matches!(
        io.sync(),
        Err(Error::Injected {
            op: Op::Sync,
            page: None
        })
    ));
    let mut kept = BTreeSet::new();
    for no in 0..PAGES {
        match read(&io, no)[0] {
            2 => {
                kept.insert(no);
            }
            1 => {}
            other => panic!("seed {seed}: page {no} holds {other}, neither write"),
        }
    }
    (io, kept)
}

#[test]
fn a_failed_sync_loses_a_random_subset_of_the_unsynced_writes() {
    let mut sizes = BTreeSet::new();
    for seed in 0..64 {
        let (io, kept) = fail_a_sync(seed);
        let lost = PAGES - kept.len() as u64;
        assert_eq!(io.counts().discarded, lost, "seed {seed}");
        assert_eq!(
            io.unsynced_pages(),
            kept.iter().copied().collect::<Vec<_>>(),
            "seed {seed}: the survivors are still unsynced"
        );
        // A later good sync makes the survivors durable; the lost writes stay lost.
        io.clear_faults();
        io.sync().expect("sync after the failure");
        io.crash();
        for no in 0..PAGES {
            let want = if kept.contains(&no) { 2 } else { 1 };
            assert_eq!(read(&io, no)[0], want, "seed {seed}: page {no}");
        }
        sizes.insert(kept.len());
    }
    // Different seeds pick different subsets: the loss is neither all nor nothing every time.
    assert!(sizes.len() > 3, "subset sizes seen: {sizes:?}");
}

#[test]
fn the_seed_replays_the_same_subset() {
    assert_eq!(fail_a_sync(7).1, fail_a_sync(7).1);
    assert_ne!(
        (0..8)
            .map(|s| fail_a_sync(s).1)
            .collect::<BTreeSet<_>>()
            .len(),
        1,
        "seeds pick different subsets"
    );
}

#[test]
fn keep_all_loses_nothing() {
    let io = FaultyPageIo::new(MemPageIo::new(PS).expect("page size"))
        .with_sync_failure(SyncFailure::KeepAll);
    io.write_page(3, &page(9)).expect("write");
    io.fail(Fault::SyncAt(0));
    assert!(io.sync().is_err());
    assert_eq!(read(&io, 3), page(9));
    assert_eq!(io.counts().discarded, 0);
    io.clear_faults();
    io.sync().expect("retry");
    io.crash();
    assert_eq!(read(&io, 3), page(9));
}
