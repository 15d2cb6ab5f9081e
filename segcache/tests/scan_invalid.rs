//! Open rejects torn or invalid segment files written by hand (too short, bad magic, damaged
//! footer, footer naming another segment, length not matching the file), deletes them and
//! reports why; a hand-written valid file in the documented format is loaded. With
//! `verify_data_on_scan` a data checksum mismatch is rejected too.

mod common;

use common::{cache_dir, content, names, open, seg_name, segment_file_bytes, write_file};
use segcache::{CacheConfig, RejectReason, SegmentId};

fn reasons(report: &segcache::ScanReport) -> Vec<(String, RejectReason, bool)> {
    let mut r: Vec<_> = report
        .rejected
        .iter()
        .map(|r| (r.name.to_string_lossy().into_owned(), r.reason, r.deleted))
        .collect();
    r.sort_by(|a, b| a.0.cmp(&b.0));
    r
}

#[tokio::test]
async fn torn_and_invalid_files_are_rejected() {
    let (_tmp, dir) = cache_dir();
    std::fs::create_dir(&dir).expect("mkdir");
    let id = SegmentId::from_u128;
    let data = content(1, 300);

    write_file(&dir, &seg_name(1), &segment_file_bytes(id(1), &data));
    write_file(&dir, &seg_name(2), b"short");
    let mut bad_magic = segment_file_bytes(id(3), &data);
    bad_magic[300] = b'X';
    write_file(&dir, &seg_name(3), &bad_magic);
    let mut damaged = segment_file_bytes(id(4), &data);
    damaged[300 + 24] ^= 0x10; // the length field; the footer CRC catches it
    write_file(&dir, &seg_name(4), &damaged);
    // A valid file renamed to another id.
    write_file(&dir, &seg_name(5), &segment_file_bytes(id(6), &data));
    // Torn: the footer is intact but half of the data is missing.
    let whole = segment_file_bytes(id(7), &data);
    let torn: Vec<u8> = [&whole[..150], &whole[300..]].concat();
    write_file(&dir, &seg_name(7), &torn);
    // Valid footer, damaged data: only a data check can tell.
    let mut flipped = segment_file_bytes(id(8), &data);
    flipped[10] ^= 1;
    write_file(&dir, &seg_name(8), &flipped);

    let config = CacheConfig::new(&dir).with_verify_data_on_scan(true);
    let (cache, report) = open(config).await;
    assert_eq!(report.loaded, 1);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert_eq!(
        reasons(&report),
        [
            (seg_name(2), RejectReason::TooShort, true),
            (seg_name(3), RejectReason::BadMagic, true),
            (seg_name(4), RejectReason::FooterChecksum, true),
            (seg_name(5), RejectReason::IdMismatch, true),
            (seg_name(7), RejectReason::LengthMismatch, true),
            (seg_name(8), RejectReason::DataChecksum, true),
        ]
    );
    assert_eq!(names(&dir), [seg_name(1)], "rejected files are deleted");
    let seg = cache
        .get(id(1))
        .await
        .expect("get")
        .expect("valid file loaded");
    assert_eq!(&seg[..], &data[..]);
    for n in [2, 3, 4, 5, 6, 7, 8] {
        assert!(!cache.contains(id(n)));
    }
}
