//! A reader for the part of MATLAB's MAT-file Level 5 format (files saved as `-v6` or `-v7`) that the
//! ILSVRC devkit's `data/meta.mat` uses: numeric, char, struct and cell arrays, compressed or not, in
//! either byte order. Sparse and object arrays are read as [`MatValue::Other`]; v7.3 files (HDF5) are
//! refused with the fix.
//!
//! Why not a crate: `matfile` reads numeric arrays only (no structs, no chars); `matrw` 0.1 reads structs
//! but only UTF-8/UTF-16 char data (not miUINT16, which MATLAB writes too) and panics on bad UTF-8;
//! `matio-rs` binds the C library, which a build machine would need installed.
//!
//! Format (MathWorks, "MAT-File Format", Level 5): a 128-byte header (text, subsystem offset, version
//! 0x0100, endian indicator `IM` little / `MI` big), then data elements. An element is an 8-byte tag
//! (type u32, byte count u32) and its data padded to 8 bytes, or a "small" element whose first u32
//! holds the byte count (upper 16 bits, non-zero) and the type, with up to 4 data bytes in the next 4.
//! Type 15 (miCOMPRESSED) is zlib data holding one element; type 14 (miMATRIX) is an array: array
//! flags (class in the low byte), dimensions, name, then by class: real (and imaginary) data for
//! numeric classes, character data for char, field-name length + field names + one miMATRIX per
//! element and field (column-major) for struct, one miMATRIX per element for cell. An empty miMATRIX
//! (byte count 0) is an empty array. Reading never panics: every length is checked against the buffer.

use std::io::Read;

/// One MATLAB array.
#[derive(Clone, Debug, PartialEq)]
pub enum MatValue {
    /// A numeric or logical array as f64 (real part), column-major.
    Numeric { dims: Vec<usize>, data: Vec<f64> },
    /// A char array; for a row (1 x N) `text` is the string.
    Char { dims: Vec<usize>, text: String },
    /// A struct array: `elems[i][f]` is field `fields[f]` of element i (column-major).
    Struct { dims: Vec<usize>, fields: Vec<String>, elems: Vec<Vec<MatValue>> },
    /// A cell array, column-major.
    Cell { dims: Vec<usize>, elems: Vec<MatValue> },
    /// A class this reader does not decode (sparse, object, function handle, ...).
    Other { class: u8 },
}

impl MatValue {
    /// The value of a 1-element numeric array.
    pub fn scalar(&self) -> Option<f64> {
        match self {
            MatValue::Numeric { data, .. } if data.len() == 1 => Some(data[0]),
            _ => None,
        }
    }

    /// The text of a char array with at most one row.
    pub fn string(&self) -> Option<&str> {
        match self {
            MatValue::Char { dims, text } if dims.first().is_none_or(|&rows| rows <= 1) => Some(text),
            _ => None,
        }
    }

    /// Field `name` of element `i` of a struct array.
    pub fn field(&self, i: usize, name: &str) -> Option<&MatValue> {
        match self {
            MatValue::Struct { fields, elems, .. } => {
                let f = fields.iter().position(|n| n == name)?;
                elems.get(i)?.get(f)
            }
            _ => None,
        }
    }
}

const HEADER_LEN: usize = 128;
/// Nesting deeper than this (structs of cells of ...) is refused rather than risking the stack.
const MAX_DEPTH: usize = 32;
/// Largest decompressed element accepted (a devkit's meta.mat is about 1 MB).
const MAX_INFLATED: u64 = 1 << 30;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_CHAR: u8 = 4;

/// The variables of a MAT file, in file order, as (name, value).
pub fn read_mat(bytes: &[u8]) -> Result<Vec<(String, MatValue)>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes: too short for a MAT-file header (128 bytes)", bytes.len()));
    }
    let text = String::from_utf8_lossy(&bytes[..116]);
    if text.starts_with("MATLAB 7.3") || bytes.starts_with(b"\x89HDF") {
        return Err("a MAT v7.3 (HDF5) file; re-save it in MATLAB with save(FILE, 'synsets', '-v7')".into());
    }
    let big_endian = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(format!("not a MAT-file (Level 5): endian indicator {other:?}, expected \"IM\" or \"MI\""))
        }
    };
    let mut r = Reader { buf: &bytes[HEADER_LEN..], pos: 0, big_endian };
    let mut vars = Vec::new();
    while r.pos < r.buf.len() {
        let at = HEADER_LEN + r.pos;
        let (ty, data) = r.element().map_err(|e| format!("element at byte {at}: {e}"))?;
        let var = match ty {
            MI_MATRIX => matrix(data, big_endian, 0),
            MI_COMPRESSED => inflate(data).and_then(|inner| {
                let mut ir = Reader { buf: &inner, pos: 0, big_endian };
                let (ity, idata) = ir.element()?;
                if ity != MI_MATRIX {
                    return Err(format!("compressed element holds type {ity}, not an array (14)"));
                }
                matrix(idata, big_endian, 0)
            }),
            _ => continue, // not a variable (never written by MATLAB at the top level)
        };
        vars.push(var.map_err(|e| format!("variable at byte {at}: {e}"))?);
    }
    Ok(vars)
}

fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map_err(|e| format!("compressed element: {e}"))?;
    Ok(out)
}

/// A cursor over a buffer of elements.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    fn u32_at(&self, at: usize) -> Result<u32, String> {
        let b: [u8; 4] = self
            .buf
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("truncated: a tag at byte {at} of {}", self.buf.len()))?;
        Ok(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// The next element: its type and data; moves past its padding.
    fn element(&mut self) -> Result<(u32, &'a [u8]), String> {
        let first = self.u32_at(self.pos)?;
        if first >> 16 != 0 {
            // Small data element: 4 tag bytes, up to 4 data bytes, 8 in all.
            let (ty, n) = (first & 0xFFFF, (first >> 16) as usize);
            if n > 4 {
                return Err(format!("small element of {n} bytes (at most 4)"));
            }
            let data = self.buf.get(self.pos + 4..self.pos + 4 + n).ok_or("truncated small element")?;
            self.pos += 8;
            return Ok((ty, data));
        }
        let n = self.u32_at(self.pos + 4)? as usize;
        let start = self.pos + 8;
        let data = self.buf.get(start..start.saturating_add(n)).ok_or_else(|| {
            format!("truncated: an element of {n} bytes, {} left", self.buf.len() - start.min(self.buf.len()))
        })?;
        // Compressed elements are not padded; everything else is padded to 8 bytes.
        let padded = if first == MI_COMPRESSED { n } else { n.div_ceil(8) * 8 };
        self.pos = (start + padded).min(self.buf.len());
        Ok((first, data))
    }
}

fn numbers(ty: u32, data: &[u8], big_endian: bool) -> Result<Vec<f64>, String> {
    macro_rules! conv {
        ($t:ty) => {{
            const W: usize = std::mem::size_of::<$t>();
            let chunks = data.chunks_exact(W);
            if !chunks.remainder().is_empty() {
                return Err(format!("{} bytes of {}-byte numbers", data.len(), W));
            }
            chunks
                .map(|c| {
                    let a: [u8; W] = c.try_into().unwrap_or([0; W]);
                    (if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }) as f64
                })
                .collect()
        }};
    }
    Ok(match ty {
        MI_INT8 => conv!(i8),
        MI_UINT8 => conv!(u8),
        MI_INT16 => conv!(i16),
        MI_UINT16 => conv!(u16),
        MI_INT32 => conv!(i32),
        MI_UINT32 => conv!(u32),
        MI_SINGLE => conv!(f32),
        MI_DOUBLE => conv!(f64),
        MI_INT64 => conv!(i64),
        MI_UINT64 => conv!(u64),
        other => return Err(format!("data type {other} is not numeric")),
    })
}

fn chars(ty: u32, data: &[u8], big_endian: bool) -> Result<String, String> {
    Ok(match ty {
        MI_UTF8 | MI_UINT8 | MI_INT8 => String::from_utf8_lossy(data).into_owned(),
        MI_UINT16 | MI_UTF16 => {
            let units: Vec<u16> = numbers(MI_UINT16, data, big_endian)?.into_iter().map(|v| v as u16).collect();
            String::from_utf16_lossy(&units)
        }
        MI_UTF32 => numbers(MI_UINT32, data, big_endian)?
            .into_iter()
            .map(|v| char::from_u32(v as u32).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        other => return Err(format!("char data of type {other}")),
    })
}

/// One miMATRIX element's data -> (name, value).
fn matrix(data: &[u8], big_endian: bool, depth: usize) -> Result<(String, MatValue), String> {
    if depth > MAX_DEPTH {
        return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
    }
    if data.is_empty() {
        return Ok((String::new(), MatValue::Numeric { dims: vec![0, 0], data: Vec::new() }));
    }
    let mut r = Reader { buf: data, pos: 0, big_endian };
    let (_, flags) = r.element().map_err(|e| format!("array flags: {e}"))?;
    let class = *flags.first().ok_or("empty array flags")?;
    let class = if big_endian { *flags.get(3).ok_or("short array flags")? } else { class };
    let (dty, dims) = r.element().map_err(|e| format!("dimensions: {e}"))?;
    let dims: Vec<usize> = numbers(dty, dims, big_endian)?.into_iter().map(|d| d.max(0.0) as usize).collect();
    let (_, name) = r.element().map_err(|e| format!("name: {e}"))?;
    let name = String::from_utf8_lossy(name).into_owned();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("dimensions overflow")?;
    let at = |what: &str, e: String| format!("'{name}' {what}: {e}");
    let value = match class {
        MX_CELL | MX_STRUCT => {
            let fields = if class == MX_STRUCT {
                let (ty, len) = r.element().map_err(|e| at("field name length", e))?;
                let len = numbers(ty, len, big_endian)?.first().copied().unwrap_or(0.0) as usize;
                let (_, names) = r.element().map_err(|e| at("field names", e))?;
                if len == 0 || names.len() % len != 0 {
                    return Err(at("field names", format!("{} bytes in names of {len}", names.len())));
                }
                names
                    .chunks(len)
                    .map(|c| String::from_utf8_lossy(c).trim_end_matches('\0').to_string())
                    .collect::<Vec<_>>()
            } else {
                vec![String::new()]
            };
            // Every sub-array takes at least an 8-byte tag: refuse counts the data cannot hold.
            let subs = count.checked_mul(fields.len()).filter(|&s| s <= (data.len() - r.pos) / 8);
            let subs = subs.ok_or_else(|| at("elements", format!("{count} x {} do not fit the data", fields.len())))?;
            let mut values = Vec::with_capacity(subs);
            for k in 0..subs {
                let (ty, sub) = r.element().map_err(|e| at(&format!("element {k}"), e))?;
                if ty != MI_MATRIX {
                    return Err(at(&format!("element {k}"), format!("type {ty}, not an array (14)")));
                }
                values.push(matrix(sub, big_endian, depth + 1).map_err(|e| at(&format!("element {k}"), e))?.1);
            }
            if class == MX_STRUCT {
                let n = fields.len();
                let mut elems = Vec::with_capacity(count);
                let mut it = values.into_iter();
                for _ in 0..count {
                    elems.push(it.by_ref().take(n).collect());
                }
                MatValue::Struct { dims, fields, elems }
            } else {
                MatValue::Cell { dims, elems: values }
            }
        }
        MX_CHAR => {
            let (ty, text) = r.element().map_err(|e| at("chars", e))?;
            MatValue::Char { dims, text: chars(ty, text, big_endian).map_err(|e| at("chars", e))? }
        }
        6..=15 => {
            let (ty, real) = r.element().map_err(|e| at("data", e))?;
            MatValue::Numeric { dims, data: numbers(ty, real, big_endian).map_err(|e| at("data", e))? }
        }
        other => MatValue::Other { class: other },
    };
    Ok((name, value))
}
