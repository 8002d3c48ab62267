//! IDX files (MNIST, Fashion-MNIST), plain or gzipped: big-endian u32 magic `0x0000080N` (type u8, N
//! dimensions), N big-endian u32 sizes, then the u8 data. Images are 3-dimensional, labels 1-dimensional.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Reads a file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::input(path, 0, format!("gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX u8 array, returning its dimensions and data; checks the size against the dimensions.
pub fn parse_idx_u8(bytes: &[u8], path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |msg: String| Error::input(path, 0, format!("IDX: {msg}"));
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("missing the 00 00 magic (not an IDX file)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("element type 0x{:02x}, expected 0x08 (u8)", bytes[2])));
    }
    let ndim = bytes[3] as usize;
    if ndim != want_dims {
        return Err(bad(format!("{ndim} dimensions, expected {want_dims}")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(format!("{} bytes, shorter than the {header}-byte header", bytes.len())));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes([bytes[4 + 4 * d], bytes[5 + 4 * d], bytes[6 + 4 * d], bytes[7 + 4 * d]]) as usize)
        .collect();
    let count =
        dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| bad("size overflows".into()))?;
    if bytes.len() - header != count {
        return Err(bad(format!("dimensions {dims:?} need {count} data bytes, the file has {}", bytes.len() - header)));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Images (n, rows, cols) and their labels from a pair of IDX files.
pub struct IdxSet {
    pub rows: u32,
    pub cols: u32,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl IdxSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = (self.rows * self.cols) as usize;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Loads an images file and a labels file and checks that the counts agree.
pub fn load_pair(images: &Path, labels: &Path) -> Result<IdxSet> {
    let (dims, pixels) = parse_idx_u8(&read_maybe_gz(images)?, images, 3)?;
    let (ldims, labels_data) = parse_idx_u8(&read_maybe_gz(labels)?, labels, 1)?;
    if dims[0] != ldims[0] {
        return Err(Error::input(
            labels,
            0,
            format!("{} labels for {} images in {}", ldims[0], dims[0], images.display()),
        ));
    }
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::input(images, 0, format!("empty {}x{} images", dims[1], dims[2])));
    }
    Ok(IdxSet { rows: dims[1] as u32, cols: dims[2] as u32, pixels, labels: labels_data })
}
