//! Segment ids, and the only file names the cache ever builds from them.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::OnceLock;

use crate::Error;

/// The name of an immutable segment: 16 opaque bytes.
///
/// A segment's file is named by the id's 32 lowercase hex digits plus `.seg`, so nothing a
/// caller passes ever reaches the filesystem as a path: every byte of an id maps to two hex
/// digits. `Display` and `FromStr` use the same 32-digit form.
///
/// ```
/// use segcache::SegmentId;
///
/// let id = SegmentId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
/// assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
/// assert_eq!("0123456789abcdef0011223344556677".parse::<SegmentId>()?, id);
/// assert!("not hex".parse::<SegmentId>().is_err());
/// # Ok::<(), segcache::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentId([u8; 16]);

/// The length of a segment file name: 32 hex digits and `.seg`.
pub(crate) const FILE_NAME_LEN: usize = 36;

const HEX: &[u8; 16] = b"0123456789abcdef";

impl SegmentId {
    /// The id with these bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id whose bytes are `n` in big-endian order, so that its hex form reads as `n` does.
    #[must_use]
    pub const fn from_u128(n: u128) -> Self {
        Self(n.to_be_bytes())
    }

    /// The id's bytes read as a big-endian number (the inverse of [`from_u128`](Self::from_u128)).
    #[must_use]
    pub const fn to_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// The 32 lowercase hex digits.
    fn hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }

    /// The segment's file name: `<32 lowercase hex>.seg`.
    pub(crate) fn file_name(&self) -> String {
        let mut name = String::with_capacity(FILE_NAME_LEN);
        for &c in &self.hex() {
            name.push(char::from(c));
        }
        name.push_str(".seg");
        name
    }

    /// The id whose file name is `name`, if `name` is exactly `<32 lowercase hex>.seg`.
    pub(crate) fn from_file_name(name: &[u8]) -> Option<Self> {
        let hex = name.strip_suffix(b".seg")?;
        if hex.len() != 32 || hex.iter().any(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        parse_hex(hex).ok()
    }
}

/// Parses exactly 32 hex digits (either case).
fn parse_hex(hex: &[u8]) -> Result<SegmentId, Error> {
    if hex.len() != 32 {
        return Err(Error::InvalidId {
            reason: "a segment id is exactly 32 hex digits",
        });
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(Error::InvalidId {
            reason: "a segment id contains only hex digits",
        }),
    };
    let mut bytes = [0u8; 16];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(SegmentId(bytes))
}

impl FromStr for SegmentId {
    type Err = Error;

    /// Parses 32 hex digits. Upper-case digits are accepted; files are always named in lower
    /// case.
    fn from_str(s: &str) -> Result<Self, Error> {
        parse_hex(s.as_bytes())
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // The digits come from `HEX`, so they are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({self})")
    }
}

impl From<[u8; 16]> for SegmentId {
    fn from(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

impl Hash for SegmentId {
    /// Two words, so that the cache's index hasher sees the id in two multiply rounds.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let n = u128::from_le_bytes(self.0);
        state.write_u64(n as u64);
        state.write_u64((n >> 64) as u64);
    }
}

/// A fast hasher for segment ids in the cache's index.
///
/// Ids may come from outside (object names), so the hash is keyed with a per-process random seed
/// taken from the standard library's `RandomState`; a multiply-rotate mix of the two words is
/// enough to spread sequential and strided ids, and much cheaper than `SipHash` on the hit path.
#[derive(Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Fold the product's high bits down: the table picks buckets from the low bits, and
        // for ids numbered in sequence only the high bits of the product differ.
        let m = (self.0 ^ (self.0 >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        m ^ (m >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0xA076_1D64_78BD_642F)
            .rotate_left(29);
    }
}

/// Builds [`IdHasher`]s with the per-process seed.
#[derive(Clone, Copy)]
pub(crate) struct IdHashBuilder(u64);

impl Default for IdHashBuilder {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        Self(*SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u64)))
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sequential_ids_spread_over_buckets() {
        use std::hash::BuildHasher as _;
        let builder = super::IdHashBuilder::default();
        let buckets: std::collections::HashSet<u64> = (0..4096u128)
            .map(|n| builder.hash_one(super::SegmentId::from_u128(n)) & 8191)
            .collect();
        assert!(buckets.len() > 2048, "only {} buckets used", buckets.len());
    }

    use super::*;

    #[test]
    fn hex_round_trip_and_file_names() {
        let id = SegmentId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(id.file_name(), format!("{}.seg", "ab".repeat(16)));
        assert_eq!(
            SegmentId::from_file_name(id.file_name().as_bytes()),
            Some(id)
        );
        assert_eq!("AB".repeat(16).parse::<SegmentId>().ok(), Some(id));
        assert_eq!(SegmentId::from_u128(7).to_u128(), 7);
        assert_eq!(
            format!("{:?}", SegmentId::from_u128(1)),
            format!("SegmentId({:032x})", 1)
        );
    }

    #[test]
    fn rejects_bad_ids_and_names() {
        for bad in [
            "",
            "00",
            &"0".repeat(31),
            &"0".repeat(33),
            &"g".repeat(32),
            "../etc/passwd",
        ] {
            assert!(bad.parse::<SegmentId>().is_err(), "{bad:?} parsed");
        }
        let upper = format!("{}.seg", "AB".repeat(16));
        for bad in [
            upper.as_bytes(),
            b"0123.seg",
            &[b'0'; 36],
            format!("{}.tmp", "0".repeat(32)).as_bytes(),
        ] {
            assert_eq!(SegmentId::from_file_name(bad), None);
        }
    }

    #[test]
    fn hasher_spreads_sequential_ids() {
        let build = IdHashBuilder::default();
        let low: std::collections::HashSet<u64> = (0..1024u128)
            .map(|n| build.hash_one(SegmentId::from_u128(n << 64)) & 1023)
            .collect();
        assert!(low.len() > 512, "ids collide: {}", low.len());
    }
}
