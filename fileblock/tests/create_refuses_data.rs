//! Guards `FileBlock::create` against destroying data: it cuts a non-empty device only when the
//! device holds nothing but what an interrupted `create` leaves. Zero superblock pages in front
//! of someone's data, a committed file whose superblocks both fail their checksum, and a file of
//! a newer format version are refused and left exactly as they were.

use std::sync::Arc;

use fileblock::{Config, Error, FileBlock, format};
use pageio::{MemPageIo, PageIo};

const PS: usize = 512;

fn config() -> Config {
    Config::default().with_alloc_unit(64)
}

fn mem() -> Arc<MemPageIo> {
    Arc::new(MemPageIo::new(PS).expect("page size"))
}

fn read(io: &MemPageIo, no: u64) -> Vec<u8> {
    let mut buf = vec![0; PS];
    io.read_page(no, &mut buf).expect("read");
    buf
}

/// A committed file with one block of 0x5A bytes; returns the device, the block's first page.
fn committed_file() -> (Arc<MemPageIo>, Vec<(u64, Vec<u8>)>) {
    let io = mem();
    let mut file = FileBlock::create(io.clone(), config()).expect("create");
    let id = file.alloc(4 * PS as u64).expect("alloc");
    file.write(id).expect("write").fill(0x5A);
    file.flush().expect("flush");
    drop(file);
    let pages = io.num_pages().expect("num_pages");
    let all = (0..pages).map(|no| (no, read(&io, no))).collect();
    (io, all)
}

#[track_caller]
fn assert_refused_and_untouched(io: &Arc<MemPageIo>, before: &[(u64, Vec<u8>)], what: &str) {
    let result = FileBlock::create(io.clone(), config());
    let after: Vec<(u64, Vec<u8>)> = (0..io.num_pages().expect("num_pages"))
        .map(|no| (no, read(io, no)))
        .collect();
    assert!(
        result.is_err(),
        "{what}: create must refuse the device, but it returned Ok after cutting it \
         ({} pages before, {} after)",
        before.len(),
        after.len()
    );
    assert_eq!(after, before, "{what}: the device must be left as it was");
}

#[test]
fn create_refuses_zero_superblock_pages_in_front_of_data() {
    let io = mem();
    let mut data = vec![0u8; PS];
    data[..16].copy_from_slice(b"precious bytes!!");
    io.write_page(2, &data).expect("write");
    io.write_page(7, &data).expect("write");
    let before: Vec<(u64, Vec<u8>)> = (0..8).map(|no| (no, read(&io, no))).collect();
    let result = FileBlock::create(io.clone(), config());
    if let Err(e) = &result {
        assert!(matches!(e, Error::NotEmpty { .. }), "{e:?}");
    }
    drop(result);
    // Only `create`'s own writes may differ if it refused; if it accepted, page 7 is gone.
    assert_eq!(
        io.num_pages().expect("num_pages"),
        8,
        "create cut a device whose pages 2.. hold data an interrupted create never writes"
    );
    assert_eq!(read(&io, 7), before[7].1, "page 7 was destroyed");
}

#[test]
fn create_refuses_a_committed_file_whose_superblocks_fail_their_checksum() {
    let (io, mut before) = committed_file();
    // One flipped byte in each superblock's roots table (bit rot): CRC mismatch in both.
    for slot in [0u64, 1] {
        let mut page = read(&io, slot);
        page[100] ^= 0x01;
        io.write_page(slot, &page).expect("write");
        before[slot as usize].1 = page;
    }
    assert!(matches!(
        FileBlock::open(io.clone(), config()),
        Err(Error::Corrupt { .. })
    ));
    assert_refused_and_untouched(&io, &before, "superblocks with a bad checksum");
}

#[test]
fn create_refuses_a_file_of_a_newer_format_version() {
    let (io, mut before) = committed_file();
    // What a future `VERSION` 2 would write: the same superblocks, version 2, valid CRC.
    for slot in [0u64, 1] {
        let mut page = read(&io, slot);
        assert_eq!(
            crc32c::crc32c(&page[..508]).to_le_bytes(),
            page[508..512],
            "the test's CRC is the format's"
        );
        page[8..12].copy_from_slice(&(format::VERSION + 1).to_le_bytes());
        let crc = crc32c::crc32c(&page[..508]);
        page[508..512].copy_from_slice(&crc.to_le_bytes());
        io.write_page(slot, &page).expect("write");
        before[slot as usize].1 = page;
    }
    assert!(matches!(
        FileBlock::open(io.clone(), config()),
        Err(Error::Corrupt { .. })
    ));
    assert_refused_and_untouched(&io, &before, "a file of a newer format version");
}
