//! Guards `ObjectPageIo`'s size record against a lost acknowledgement: a shrinking truncate
//! whose `num_pages` PUT reached the store while the caller saw an error used to leave memory
//! believing the old count was recorded, so later syncs recorded nothing and the next open
//! deleted pages synced since. Now a failed record makes the recorded count unknown and the
//! next sync writes it again.

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

fn page(no: u64, version: u8) -> Vec<u8> {
    vec![(no as u8).wrapping_mul(16).wrapping_add(version); PS]
}

fn read(io: &ObjectPageIo, no: u64) -> Vec<u8> {
    let mut buf = vec![0xA5; PS];
    io.read_page(no, &mut buf).expect("read");
    buf
}

#[test]
fn a_synced_write_survives_a_truncate_whose_size_record_lost_its_ack() {
    let faulty = Arc::new(FaultyStore::counting(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    {
        let io = open(&store);
        for no in 0..10 {
            io.write_page(no, &page(no, 1)).expect("write");
        }
        io.sync().expect("sync");
    }
    let io = open(&store);
    assert_eq!(io.num_pages().expect("num_pages"), 10);
    // The size PUT reaches the store, its acknowledgement is lost: the truncate fails.
    faulty.script(FaultOp::Put, [Fault::LostAck]);
    assert!(io.truncate(4).is_err(), "the size record failed");
    assert_eq!(
        io.num_pages().expect("num_pages"),
        10,
        "memory: nothing cut"
    );
    // The device goes on: page 9 is rewritten and synced. After this `Ok` the write is durable.
    io.write_page(9, &page(9, 2)).expect("write");
    io.sync().expect("sync");
    drop(io);

    let io = open(&store);
    assert_eq!(
        io.num_pages().expect("num_pages"),
        10,
        "the last successful sync saw 10 pages"
    );
    assert_eq!(read(&io, 9), page(9, 2), "a synced write was deleted");
    for no in 4..9 {
        assert_eq!(read(&io, no), page(no, 1), "page {no}");
    }
}
