//! Reading and writing safetensors files of named f32 tensors with string metadata (`__metadata__`),
//! through the `safetensors` crate. Writes are atomic (see [`crate::util::atomic`]). Reads accept F32
//! and convert F16, BF16 and F64 to f32, since checkpoints imported from PyTorch may use them; tensors
//! of other dtypes (e.g. the I64 `num_batches_tracked` of BatchNorm) are listed apart, by name, so a
//! caller can ignore or report them. A corrupt or truncated file is an error naming the file (and the
//! tensor, where one is at fault), never a panic.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};

use crate::error::{Error, Result};
use crate::util::atomic::write_atomic_bytes;

/// One named f32 tensor (row-major, `data.len()` = product of `shape`; a scalar has shape `[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRecord {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorRecord {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        TensorRecord { name: name.into(), shape, data }
    }

    /// Number of elements the shape calls for (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A tensor of a dtype that is not read as f32 (integers, bool, fp8, ...): only its name, dtype
/// (as safetensors spells it, e.g. `I64`) and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// Everything read from one file; `tensors` and `skipped` are sorted by name.
#[derive(Clone, Debug, Default)]
pub struct SafetensorsContents {
    pub tensors: Vec<TensorRecord>,
    pub metadata: BTreeMap<String, String>,
    pub skipped: Vec<SkippedTensor>,
}

/// Borrowed f32 tensor in the shape the `safetensors` serializer wants.
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(self.data))
        } else {
            Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }
    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.data)
    }
}

/// A tensor stored as bf16 (rounded to nearest even): `attnas export --precision bf16`.
struct Bf16View<'a> {
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl View for Bf16View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::BF16
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` (f32, little-endian, bit-exact) and `metadata` to `path`, atomically. Tensor names
/// must be unique and not `__metadata__`; each tensor's data length must match its shape.
pub fn write_safetensors(path: &Path, tensors: &[TensorRecord], metadata: &BTreeMap<String, String>) -> Result<()> {
    write_atomic_bytes(path, &serialize_safetensors(path, tensors, metadata)?)
}

/// [`write_safetensors`] with every tensor stored as `dtype` (bf16: rounded to nearest even; readers
/// such as PyTorch's `safetensors.torch.load_file` get `torch.bfloat16` tensors).
pub fn write_safetensors_as(
    path: &Path,
    tensors: &[TensorRecord],
    metadata: &BTreeMap<String, String>,
    dtype: crate::backend::Dtype,
) -> Result<()> {
    if dtype == crate::backend::Dtype::F32 {
        return write_safetensors(path, tensors, metadata);
    }
    check_records(path, tensors)?;
    let views = tensors
        .iter()
        .map(|t| (t.name.as_str(), Bf16View { shape: &t.shape, bytes: crate::backend::dtype::encode(&t.data, dtype) }));
    let info: Option<HashMap<String, String>> =
        (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let bytes = safetensors::serialize(views, info)
        .map_err(|e| Error::Other(format!("{}: cannot serialize tensors: {e}", path.display())))?;
    write_atomic_bytes(path, &bytes)
}

/// Unique names other than `__metadata__`, and data lengths that match the shapes.
fn check_records(path: &Path, tensors: &[TensorRecord]) -> Result<()> {
    let mut seen = HashSet::new();
    for t in tensors {
        if t.name == "__metadata__" {
            return Err(Error::usage(format!("{}: `__metadata__` is reserved, not a tensor name", path.display())));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(Error::usage(format!("{}: tensor `{}` is given twice", path.display(), t.name)));
        }
        if t.data.len() != t.numel() {
            let what = format!("tensor `{}` written to {}", t.name, path.display());
            return Err(Error::shape(what, format!("{} values for shape {:?}", t.numel(), t.shape), t.data.len()));
        }
    }
    Ok(())
}

/// The bytes [`write_safetensors`] writes to `path` (named in errors), for callers that need their size
/// before writing.
pub fn serialize_safetensors(
    path: &Path,
    tensors: &[TensorRecord],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    check_records(path, tensors)?;
    let views = tensors.iter().map(|t| (t.name.as_str(), F32View { shape: &t.shape, data: &t.data }));
    let info: Option<HashMap<String, String>> =
        (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    safetensors::serialize(views, info)
        .map_err(|e| Error::Other(format!("{}: cannot serialize tensors: {e}", path.display())))
}

/// Reads the float tensors and the metadata of `path`; tensors of other dtypes are left out (see
/// [`read_safetensors_all`] to get their names).
pub fn read_safetensors(path: &Path) -> Result<(Vec<TensorRecord>, BTreeMap<String, String>)> {
    let c = read_safetensors_all(path)?;
    Ok((c.tensors, c.metadata))
}

/// Reads every tensor of `path`: float ones converted to f32, the others listed in `skipped`.
pub fn read_safetensors_all(path: &Path) -> Result<SafetensorsContents> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    let (header_len, header) = SafeTensors::read_metadata(&bytes).map_err(|e| parse_error(path, &bytes, e))?;
    let data_section = &bytes[8 + header_len..]; // read_metadata checked that header and data fill the file
    let metadata = header.metadata().as_ref().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
    let mut out = SafetensorsContents { metadata, ..Default::default() };
    for (name, info) in header.tensors() {
        let (start, end) = info.data_offsets;
        let raw = data_section.get(start..end).ok_or_else(|| {
            Error::input(path, 0, format!("tensor `{name}`: data bytes {start}..{end} lie outside the file"))
        })?;
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(le(b))).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| f16::from_le_bytes(le(b)).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| bf16::from_le_bytes(le(b)).to_f32()).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(le(b)) as f32).collect(),
            other => {
                out.skipped.push(SkippedTensor { name, dtype: format!("{other:?}"), shape: info.shape.clone() });
                continue;
            }
        };
        let rec = TensorRecord { name, shape: info.shape.clone(), data };
        if rec.data.len() != rec.numel() {
            // The crate validates sizes, so this guards against a dtype/size mix-up rather than bad input.
            let msg = format!("tensor `{}`: {} values for shape {:?}", rec.name, rec.data.len(), rec.shape);
            return Err(Error::input(path, 0, msg));
        }
        out.tensors.push(rec);
    }
    out.tensors.sort_by(|a, b| a.name.cmp(&b.name));
    out.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A little-endian element's bytes as an array (`chunks_exact` gives slices of exactly `N`).
fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

/// Turns a parse failure into an error naming the file and, for a cut-off data section, the first
/// tensor that does not fit.
fn parse_error(path: &Path, bytes: &[u8], e: SafeTensorError) -> Error {
    let msg = match (&e, truncated_tensor(bytes)) {
        (SafeTensorError::MetadataIncompleteBuffer, Some((name, end, have))) => format!(
            "truncated safetensors file: tensor `{name}` ends at data byte {end} but the data section has {have} bytes; \
             the file was cut off (interrupted copy or write?)"
        ),
        (SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength, _) => format!(
            "not a complete safetensors file ({} bytes; {e}): truncated, or not a safetensors file",
            bytes.len()
        ),
        _ => format!("not a valid safetensors file: {e}"),
    };
    Error::input(path, 0, msg)
}

/// For a file whose header parses but whose data section is short: the first tensor (by end offset)
/// that runs past the end, its end offset and the data bytes present.
fn truncated_tensor(bytes: &[u8]) -> Option<(String, u64, u64)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header_end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(bytes.get(8..header_end)?).ok()?;
    let have = (bytes.len() - header_end) as u64;
    header
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(k, v)| Some((k.clone(), v.get("data_offsets")?.get(1)?.as_u64()?)))
        .filter(|&(_, end)| end > have)
        .min_by_key(|&(_, end)| end)
        .map(|(name, end)| (name, end, have))
}
