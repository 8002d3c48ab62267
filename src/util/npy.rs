//! NumPy `.npy` files (magic, version, header length, a Python-literal header `{'descr': '<f4',
//! 'fortran_order': False, 'shape': (2, 3), }` padded with spaces, raw data). `attnas eval --dump-*` writes
//! little-endian f32 (version 1.0) so that `numpy.load` (and `scripts/onnx_check.py`) reads exactly the
//! tensors the Rust forward used; [`Npy::read`] reads what `numpy.save` writes (versions 1-3, C order,
//! float and integer dtypes of either byte order) for `attnas grad`. Errors name the file.

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

/// A C-order array read from a `.npy` file: its shape, dtype (`descr`, e.g. `<f4`, `<i8`) and raw bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub descr: String,
    data: Vec<u8>,
}

/// The quoted value after `'key':` in a header dict.
fn header_str<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let rest = &header[header.find(&format!("'{key}'"))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let rest = &rest[1..];
    Some(&rest[..rest.find(quote)?])
}

/// The raw text after `'key':` up to the next `,` or `)` at depth 0 (for `fortran_order` and `shape`).
fn header_raw<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let rest = &header[header.find(&format!("'{key}'"))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

impl Npy {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Npy> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Npy::parse(&bytes).map_err(|msg| Error::input(path, 0, msg))
    }

    /// Parses the bytes of a `.npy` file; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Npy, String> {
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err("not a NumPy .npy file (no \\x93NUMPY magic)".into());
        }
        let (header_len, start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
            v => return Err(format!("unsupported .npy format version {v}")),
        };
        let header = bytes
            .get(start..start + header_len)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or("truncated or non-text .npy header")?;
        let descr = header_str(header, "descr").ok_or("the .npy header has no 'descr'")?.to_string();
        if header_raw(header, "fortran_order") != Some("False") {
            return Err("Fortran-order array; save a C-order one (numpy.ascontiguousarray)".into());
        }
        let shape_text = header_raw(header, "shape").ok_or("the .npy header has no 'shape'")?;
        let shape = shape_text
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.trim_end_matches('L').parse::<usize>().map_err(|_| format!("bad shape {shape_text}")))
            .collect::<std::result::Result<Vec<usize>, String>>()?;
        let width = Npy::item_size(&descr)?;
        let data = bytes[start + header_len..].to_vec();
        let want = shape.iter().product::<usize>() * width;
        if data.len() != want {
            return Err(format!(
                "shape {shape:?} of dtype '{descr}' needs {want} data bytes, the file holds {}",
                data.len()
            ));
        }
        Ok(Npy { shape, descr, data })
    }

    /// Bytes per element of a supported dtype.
    fn item_size(descr: &str) -> std::result::Result<usize, String> {
        let kind = descr.trim_start_matches(['<', '>', '|', '=']);
        match kind {
            "f4" | "i4" | "u4" => Ok(4),
            "f8" | "i8" | "u8" => Ok(8),
            "i2" | "u2" => Ok(2),
            "i1" | "u1" | "b1" => Ok(1),
            _ => Err(format!("unsupported dtype '{descr}' (float32/64 or an integer type)")),
        }
    }

    /// The elements, each as its little-endian bytes (swapped for big-endian files).
    fn items(&self) -> impl Iterator<Item = [u8; 8]> + '_ {
        let width = Npy::item_size(&self.descr).unwrap_or(1);
        let big = self.descr.starts_with('>');
        self.data.chunks_exact(width).map(move |c| {
            let mut v = [0u8; 8];
            v[..width].copy_from_slice(c);
            if big {
                v[..width].reverse();
            }
            v
        })
    }

    fn kind(&self) -> &str {
        self.descr.trim_start_matches(['<', '>', '|', '='])
    }

    /// The data as f32 (from float32 or float64); `None` for other dtypes.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match self.kind() {
            "f4" => Some(self.items().map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
            "f8" => Some(self.items().map(|b| f64::from_le_bytes(b) as f32).collect()),
            _ => None,
        }
    }

    /// The data as i64 (from any integer dtype; u8 values above i64::MAX saturate); `None` for others.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let k = self.kind();
        let signed = k.starts_with('i');
        if !(signed || k.starts_with('u')) {
            return None;
        }
        let width = Npy::item_size(&self.descr).ok()?;
        Some(
            self.items()
                .map(|b| {
                    let raw = u64::from_le_bytes(b);
                    if signed {
                        let shift = 64 - 8 * width as u32;
                        ((raw << shift) as i64) >> shift
                    } else {
                        i64::try_from(raw).unwrap_or(i64::MAX)
                    }
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{npy_bytes, Npy};

    /// What numpy.save writes for np.array([[1, -2, 3]], dtype=...) in version 1.0, big and little endian.
    fn numpy_file(descr: &str, item: &[u8]) -> Vec<u8> {
        numpy_file_with(&format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1, 3), }}"), item)
    }

    fn numpy_file_with(dict: &str, item: &[u8]) -> Vec<u8> {
        let mut header = dict.to_string();
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(item);
        out
    }

    #[test]
    fn reads_what_numpy_writes() {
        let f = Npy::parse(&npy_bytes(&[2, 2], &[1.0, -2.5, 3.0, 4.0]).unwrap()).unwrap();
        assert_eq!((f.shape.clone(), f.to_f32().unwrap()), (vec![2, 2], vec![1.0, -2.5, 3.0, 4.0]));
        assert_eq!(f.to_i64(), None, "floats are not labels");
        let i8le: Vec<u8> = [1i64, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(Npy::parse(&numpy_file("<i8", &i8le)).unwrap().to_i64().unwrap(), [1, -2, 3]);
        let i4be: Vec<u8> = [1i32, -2, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert_eq!(Npy::parse(&numpy_file(">i4", &i4be)).unwrap().to_i64().unwrap(), [1, -2, 3]);
        assert_eq!(Npy::parse(&numpy_file("|u1", &[1, 254, 3])).unwrap().to_i64().unwrap(), [1, 254, 3]);
        let f8: Vec<u8> = [1f64, -2.0, 0.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(Npy::parse(&numpy_file("<f8", &f8)).unwrap().to_f32().unwrap(), [1.0, -2.0, 0.5]);
        // errors say what is wrong
        assert!(Npy::parse(b"PK\x03\x04 not npy").unwrap_err().contains("magic"));
        assert!(Npy::parse(&numpy_file("<i8", &i8le[..16])).unwrap_err().contains("data bytes"));
        assert!(Npy::parse(&numpy_file("<c8", &[0; 24])).unwrap_err().contains("dtype"));
        let fortran = numpy_file_with("{'descr': '<i8', 'fortran_order': True, 'shape': (1, 3), }", &i8le);
        assert!(Npy::parse(&fortran).unwrap_err().contains("Fortran"));
        let scalar = numpy_file_with("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", &i8le[..8]);
        assert_eq!(Npy::parse(&scalar).unwrap().shape, Vec::<usize>::new());
    }

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
