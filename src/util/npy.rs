//! NumPy `.npy` files of little-endian f32 (format version 1.0: magic, header length, a Python-literal
//! header padded to a multiple of 64 bytes, raw C-order data). `attnas eval --dump-*` writes them so that
//! `numpy.load` (and `scripts/onnx_check.py`) reads exactly the tensors the Rust forward used.

use std::path::Path;

use crate::error::{Error, Result};
use crate::util::atomic::write_atomic;

/// The bytes of a `.npy` file holding `data` with `shape` (C order).
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(Error::shape("npy data", format!("{n} values for shape {shape:?}"), data.len()));
    }
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let len = u16::try_from(header.len()).map_err(|_| Error::Other("npy header too long".into()))?;
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes `data` with `shape` to `path` as `.npy`, atomically.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes = npy_bytes(shape, data)?;
    write_atomic(path, |w| w.write_all(&bytes).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::npy_bytes;

    #[test]
    fn header_is_aligned_and_data_follows() {
        let b = npy_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'), "{header}");
        assert_eq!(b.len(), 10 + hlen + 24);
        assert_eq!(f32::from_le_bytes(b[10 + hlen..14 + hlen].try_into().unwrap()), 1.0);
        assert!(npy_bytes(&[4], &[1.0]).is_err());
        let one = npy_bytes(&[1], &[1.0]).unwrap();
        assert!(one.windows(4).any(|w| w == b"(1,)"));
    }
}
