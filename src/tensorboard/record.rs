//! TFRecord framing, the container of TensorBoard event files. Each record is
//!
//! ```text
//! u64 length (little-endian) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
//! ```
//!
//! where `masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xa282ead8` (wrapping): TensorFlow masks the
//! CRC so that a CRC of data that itself contains CRCs is not degenerate. CRC32C (Castagnoli) comes from
//! the `crc32c` crate (SSE4.2 / ARMv8 instructions where present).
//!
//! [`read_records`] is the checking reader: it verifies both CRCs of every record and reports a
//! truncated last record (a writer interrupted mid-record) separately from corruption.

use crate::error::{Error, Result};

/// TensorFlow's mask delta.
const MASK_DELTA: u32 = 0xa282_ead8;

/// Bytes of framing around each record's data: length (8) + its CRC (4) + the data's CRC (4).
pub const FRAMING_BYTES: usize = 16;

/// The masked CRC32C of `data`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data).rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends one framed record holding `data` to `out`.
pub fn frame_into(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(data.len() + FRAMING_BYTES);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// The records of a file's bytes, every CRC checked.
#[derive(Debug)]
pub struct Records<'a> {
    pub records: Vec<&'a [u8]>,
    /// Bytes of an incomplete last record (0 when the file ends on a record boundary).
    pub partial_tail_bytes: usize,
}

/// Splits `bytes` into records, checking the length CRC and the data CRC of each. `origin` names the
/// file in errors, which give the record index and byte offset at fault.
pub fn read_records<'a>(bytes: &'a [u8], origin: &str) -> Result<Records<'a>> {
    let mut records = Vec::new();
    let mut at = 0usize;
    let bad = |index: usize, offset: usize, what: &str| {
        Error::Other(format!("{origin}: record {index} at byte {offset}: {what}; the event file is corrupt"))
    };
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 12 {
            break;
        }
        let len_bytes = &rest[..8];
        let len_crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if masked_crc32c(len_bytes) != len_crc {
            return Err(bad(records.len(), at, "length CRC mismatch"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
        let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(FRAMING_BYTES)) else {
            return Err(bad(records.len(), at, "length does not fit in memory"));
        };
        if rest.len() < total {
            break;
        }
        let data = &rest[12..total - 4];
        let data_crc = u32::from_le_bytes([rest[total - 4], rest[total - 3], rest[total - 2], rest[total - 1]]);
        if masked_crc32c(data) != data_crc {
            return Err(bad(records.len(), at, "data CRC mismatch"));
        }
        records.push(data);
        at += total;
    }
    Ok(Records { records, partial_tail_bytes: bytes.len() - at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_mask_match_known_values() {
        // CRC32C check value (RFC 3720 / iSCSI): "123456789" -> 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // Masked: the value TensorBoard's own writer gives
        // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c(b"123456789")).
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn framed_records_read_back_and_corruption_is_found() {
        let mut file = Vec::new();
        frame_into(b"first", &mut file);
        frame_into(b"", &mut file);
        frame_into(&[7u8; 300], &mut file);
        let r = read_records(&file, "t").unwrap();
        assert_eq!(r.records, vec![&b"first"[..], &b""[..], &[7u8; 300][..]]);
        assert_eq!(r.partial_tail_bytes, 0);
        assert_eq!(file.len(), 5 + 300 + 3 * FRAMING_BYTES);

        // A cut in the middle of the last record is a partial tail, not an error.
        let cut = &file[..file.len() - 10];
        let r = read_records(cut, "t").unwrap();
        assert_eq!((r.records.len(), r.partial_tail_bytes), (2, 300 + FRAMING_BYTES - 10));

        // One flipped bit in a record's data or length is an error naming the record.
        let mut flipped = file.clone();
        flipped[12 + 2] ^= 1; // inside "first"
        let e = read_records(&flipped, "f.tfevents").unwrap_err().to_string();
        assert!(e.contains("f.tfevents") && e.contains("record 0") && e.contains("data CRC"), "{e}");
        let mut flipped = file.clone();
        flipped[5 + FRAMING_BYTES] ^= 0x10; // the second record's length
        let e = read_records(&flipped, "f").unwrap_err().to_string();
        assert!(e.contains("record 1") && e.contains("length CRC"), "{e}");
    }
}
