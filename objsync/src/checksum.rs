//! The CRC32C stored with every uploaded object, as user-defined metadata.

use object_store::{Attribute, AttributeValue, Attributes};

/// The user-defined metadata key under which uploads store the object's CRC32C (8 lowercase hex
/// digits). On S3 it travels as the `x-amz-meta-crc32c` header.
pub const CHECKSUM_METADATA_KEY: &str = "crc32c";

fn key() -> Attribute {
    Attribute::Metadata(CHECKSUM_METADATA_KEY.into())
}

/// Attributes carrying `crc`.
pub(crate) fn attributes(crc: u32) -> Attributes {
    let mut attributes = Attributes::with_capacity(1);
    attributes.insert(key(), AttributeValue::from(format!("{crc:08x}")));
    attributes
}

/// The CRC32C stored in `attributes`: `Ok(None)` when there is none, `Err` (a description) when
/// the value is malformed.
pub(crate) fn stored(attributes: &Attributes) -> Result<Option<u32>, String> {
    let Some(value) = attributes.get(&key()) else {
        return Ok(None);
    };
    let text = value.as_ref().trim();
    if text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(text, 16)
            .map(Some)
            .map_err(|e| e.to_string())
    } else {
        Err(format!(
            "metadata {CHECKSUM_METADATA_KEY:?} is {:?}, not 8 hex digits",
            text.chars().take(32).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed_values() {
        let crc = crc32c::crc32c(b"hello");
        assert_eq!(stored(&attributes(crc)), Ok(Some(crc)));
        assert_eq!(stored(&Attributes::new()), Ok(None));
        for bad in ["", "xyz", "123456789", "-1234567", "0x123456"] {
            let mut a = Attributes::new();
            a.insert(key(), AttributeValue::from(bad));
            assert!(stored(&a).is_err(), "{bad:?} was accepted");
        }
    }
}
