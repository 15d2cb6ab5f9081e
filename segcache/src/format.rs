//! The on-disk segment format: the data, then a fixed 40-byte footer.
//!
//! ```text
//! offset        size  field
//! 0             len   the segment's bytes
//! len + 0       8     magic "PSSEG001"
//! len + 8       16    the segment id (must match the file name)
//! len + 24      8     len, u64 little-endian (must equal file size - 40)
//! len + 32      4     CRC32C of the data, u32 little-endian
//! len + 36      4     CRC32C of the 36 footer bytes before it, u32 little-endian
//! ```
//!
//! The footer is written before the file is synced and linked into place, so a file under a
//! segment name is complete or was never there; the footer's own checksum lets the startup scan
//! reject a damaged footer by reading 40 bytes per file. Bytes read from disk are untrusted:
//! decoding never panics and reports what does not match.

use std::fmt;

use crate::SegmentId;

/// The size of the footer that follows a segment's data in its file. A segment of `len` bytes
/// occupies `len + FOOTER_LEN` bytes on disk, and that is what it counts against the budget.
pub const FOOTER_LEN: u64 = 40;

/// The footer size as a buffer length.
pub(crate) const FOOTER_SIZE: usize = 40;

const MAGIC: &[u8; 8] = b"PSSEG001";

/// Why a segment file was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// Shorter than a footer: a torn or truncated file.
    TooShort,
    /// The footer does not start with the magic bytes.
    BadMagic,
    /// The footer's own checksum does not match.
    FooterChecksum,
    /// The footer names another segment than the file name does.
    IdMismatch,
    /// The footer's length plus the footer is not the file's size: a torn or padded file.
    LengthMismatch,
    /// The data's checksum does not match the footer's.
    DataChecksum,
}

impl RejectReason {
    /// A short description, for errors.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::TooShort => "file shorter than a footer",
            Self::BadMagic => "bad footer magic",
            Self::FooterChecksum => "footer checksum mismatch",
            Self::IdMismatch => "footer names another segment",
            Self::LengthMismatch => "footer length does not match the file size",
            Self::DataChecksum => "data checksum mismatch",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A decoded footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    pub(crate) id: SegmentId,
    pub(crate) len: u64,
    pub(crate) crc: u32,
}

impl Footer {
    pub(crate) fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut out = [0u8; FOOTER_SIZE];
        out[..8].copy_from_slice(MAGIC);
        out[8..24].copy_from_slice(self.id.as_bytes());
        out[24..32].copy_from_slice(&self.len.to_le_bytes());
        out[32..36].copy_from_slice(&self.crc.to_le_bytes());
        let own = crc32c::crc32c(&out[..36]);
        out[36..].copy_from_slice(&own.to_le_bytes());
        out
    }

    /// Decodes the last [`FOOTER_LEN`] bytes of a file of `file_len` bytes that is named for
    /// segment `id`, checking everything but the data checksum.
    pub(crate) fn decode(
        bytes: &[u8; FOOTER_SIZE],
        id: SegmentId,
        file_len: u64,
    ) -> Result<Self, RejectReason> {
        let (magic, rest) = bytes.split_at(8);
        if magic != MAGIC {
            return Err(RejectReason::BadMagic);
        }
        let (body, own) = bytes.split_at(36);
        if crc32c::crc32c(body).to_le_bytes() != own {
            return Err(RejectReason::FooterChecksum);
        }
        let mut found = [0u8; 16];
        found.copy_from_slice(&rest[..16]);
        if SegmentId::from_bytes(found) != id {
            return Err(RejectReason::IdMismatch);
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&rest[16..24]);
        let len = u64::from_le_bytes(len);
        if len.checked_add(FOOTER_LEN) != Some(file_len) {
            return Err(RejectReason::LengthMismatch);
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&rest[24..28]);
        Ok(Self {
            id,
            len,
            crc: u32::from_le_bytes(crc),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip_and_each_rejection() {
        let id = SegmentId::from_u128(42);
        let footer = Footer {
            id,
            len: 1000,
            crc: 0xdead_beef,
        };
        let bytes = footer.encode();
        assert_eq!(Footer::decode(&bytes, id, 1040), Ok(footer));
        assert_eq!(
            Footer::decode(&bytes, id, 1041),
            Err(RejectReason::LengthMismatch)
        );
        assert_eq!(
            Footer::decode(&bytes, SegmentId::from_u128(43), 1040),
            Err(RejectReason::IdMismatch)
        );
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(Footer::decode(&bad, id, 1040), Err(RejectReason::BadMagic));
        let mut bad = bytes;
        bad[30] ^= 1;
        assert_eq!(
            Footer::decode(&bad, id, 1040),
            Err(RejectReason::FooterChecksum)
        );
        // A length that would overflow with the footer added is a mismatch, not a panic.
        let huge = Footer {
            id,
            len: u64::MAX,
            crc: 0,
        };
        assert_eq!(
            Footer::decode(&huge.encode(), id, u64::MAX),
            Err(RejectReason::LengthMismatch)
        );
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and a flipped bit is always caught.
        #[test]
        fn decoder_is_total(bytes in proptest::array::uniform32(any::<u8>()), tail in any::<[u8; 8]>(),
                            file_len in any::<u64>(), id in any::<u128>()) {
            let mut footer = [0u8; FOOTER_SIZE];
            footer[..32].copy_from_slice(&bytes);
            footer[32..].copy_from_slice(&tail);
            let _ = Footer::decode(&footer, SegmentId::from_u128(id), file_len);
        }

        #[test]
        fn any_single_bit_flip_is_rejected(len in 0u64..1 << 40, crc in any::<u32>(), id in any::<u128>(),
                                           bit in 0usize..FOOTER_SIZE * 8) {
            let id = SegmentId::from_u128(id);
            let mut bytes = Footer { id, len, crc }.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Footer::decode(&bytes, id, len + FOOTER_LEN).is_err());
        }
    }
}
