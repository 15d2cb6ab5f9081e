//! Guards `ObjectPageIo::truncate` against a crash at any point: it used to delete the page
//! objects at once and record the new size only at the next sync, so a crash in between reopened
//! to neither the old nor the new device. Now a shrink records the size first and deletes after,
//! open deletes leftovers past the recorded size, and a reopen finds the old or the new device;
//! a size record whose acknowledgement was lost is recorded again by the next sync.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use objsync::{
    Fault, FaultOp, FaultyStore, ObjectPageIo, ObjectPageIoConfig, RetryConfig, UploaderConfig,
};
use pageio::PageIo;

const PS: usize = 512;

fn config() -> ObjectPageIoConfig {
    ObjectPageIoConfig::default()
        .with_uploader(UploaderConfig::default().with_retry(RetryConfig::none()))
}

fn open(store: &Arc<dyn ObjectStore>) -> ObjectPageIo {
    ObjectPageIo::new(Arc::clone(store), "dev", PS, config()).expect("open")
}

fn page(no: u64) -> Vec<u8> {
    vec![no as u8 + 1; PS]
}

fn read(io: &ObjectPageIo, no: u64) -> Vec<u8> {
    let mut buf = vec![0xA5; PS];
    io.read_page(no, &mut buf).expect("read");
    buf
}

/// Ten pages, written and synced, and the size recorded (a truncate to the size it has made
/// even the old code record it).
fn ten_pages(store: &Arc<dyn ObjectStore>) {
    let io = open(store);
    for no in 0..10 {
        io.write_page(no, &page(no)).expect("write");
    }
    io.truncate(10).expect("truncate to its size");
    io.sync().expect("sync");
}

/// The device after a reopen is exactly the old one (10 pages) or the new one (`new` pages,
/// zeros past them even once the device grows again).
fn old_or_new(store: &Arc<dyn ObjectStore>, new: u64) -> bool {
    let io = open(store);
    let n = io.num_pages().expect("num_pages");
    assert!(
        n == 10 || n == new,
        "reopened with {n} pages, not 10 or {new}"
    );
    for no in 0..n {
        assert_eq!(read(&io, no), page(no), "page {no} of {n}");
    }
    io.truncate(10).expect("grow");
    for no in n..10 {
        assert_eq!(
            read(&io, no),
            vec![0; PS],
            "page {no} past the end must be zeros"
        );
    }
    n == new
}

#[test]
fn a_truncate_without_a_sync_reopens_to_the_old_or_the_new_size() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    ten_pages(&store);
    let io = open(&store);
    io.truncate(4).expect("truncate");
    drop(io); // a crash before the sync
    old_or_new(&store, 4);
}

#[test]
fn a_truncate_whose_deletes_fail_reopens_to_the_new_size() {
    let faulty = Arc::new(FaultyStore::counting(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    ten_pages(&store);
    let io = open(&store);
    faulty.script(FaultOp::Delete, [Fault::Error]);
    assert!(io.truncate(4).is_err(), "the deletes failed");
    drop(io);
    assert!(
        old_or_new(&store, 4),
        "the size was recorded before the deletes"
    );
}

#[test]
fn a_truncate_whose_size_record_fails_changes_nothing() {
    let faulty = Arc::new(FaultyStore::counting(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    ten_pages(&store);
    let io = open(&store);
    faulty.script(FaultOp::Put, [Fault::Error]);
    assert!(io.truncate(4).is_err(), "the size record failed");
    assert_eq!(io.num_pages().expect("num_pages"), 10);
    for no in 0..10 {
        assert_eq!(read(&io, no), page(no), "nothing was cut");
    }
    drop(io);
    assert!(!old_or_new(&store, 4));
}

/// A shrinking truncate whose size PUT reached the store while its acknowledgement was lost:
/// the store may record the new size while memory still holds the old one. The recorded count
/// becomes unknown, so the next sync records the size again; before, every later sync found
/// "nothing changed", and the next open deleted pages synced since.
#[test]
fn a_synced_write_survives_a_truncate_whose_size_record_lost_its_ack() {
    let faulty = Arc::new(FaultyStore::counting(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    ten_pages(&store);
    let io = open(&store);
    faulty.script(FaultOp::Put, [Fault::LostAck]);
    assert!(io.truncate(4).is_err(), "the size record failed");
    assert_eq!(
        io.num_pages().expect("num_pages"),
        10,
        "memory: nothing cut"
    );
    // The device goes on: page 9 is rewritten and synced, so the write is durable.
    io.write_page(9, &[0xEE; PS]).expect("write");
    io.sync().expect("sync");
    drop(io);

    let io = open(&store);
    assert_eq!(
        io.num_pages().expect("num_pages"),
        10,
        "as of the last sync"
    );
    assert_eq!(read(&io, 9), vec![0xEE; PS], "the synced write survives");
    for no in 4..9 {
        assert_eq!(read(&io, no), page(no), "page {no}");
    }
}
