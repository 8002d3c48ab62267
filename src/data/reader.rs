//! Opens a packed dataset file: memory-maps it, checks the whole layout once ([`format::parse`]), then
//! hands out records as borrowed byte slices. After `open` succeeds no access can go out of bounds.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::{self, Encoding, Header, IndexEntry};
use crate::error::{Error, Result};

/// A memory-mapped, validated packed dataset.
pub struct PackedDataset {
    path: PathBuf,
    map: Mmap,
    header: Header,
    class_names: Vec<String>,
    entries: Vec<IndexEntry>,
}

/// One record: its encoded bytes (borrowed from the map) and its index entry.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub bytes: &'a [u8],
    pub label: u32,
    pub width: u32,
    pub height: u32,
}

impl PackedDataset {
    /// Maps and validates `path`. Errors name the file and what is wrong with it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only; the file is ours (written by `prepare` and renamed into place,
        // never modified afterwards). A concurrent truncation by another process would be a user error
        // that mmap cannot guard against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let layout = format::parse(&map).map_err(|e| Error::input(&path, 0, e.to_string()))?;
        Ok(PackedDataset { path, map, header: layout.header, class_names: layout.class_names, entries: layout.entries })
    }

    /// [`PackedDataset::open`], then checks that the file has `classes` classes; `model` names who expects
    /// them in the error (e.g. "the space 'tiny'").
    pub fn open_expecting_classes(path: impl AsRef<Path>, classes: usize, model: &str) -> Result<Self> {
        let ds = Self::open(path)?;
        if ds.class_names().len() != classes {
            return Err(Error::usage(format!(
                "{} has {} classes but {model} has {classes}; train, evaluate and search on data of the same classes",
                ds.path.display(),
                ds.class_names().len()
            )));
        }
        Ok(ds)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn encoding(&self) -> Encoding {
        self.header.encoding
    }
    pub fn channels(&self) -> u32 {
        self.header.channels
    }
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }
    /// Total size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Record `i`, or an error naming the file and the count when `i` is out of range.
    pub fn get(&self, i: usize) -> Result<Record<'_>> {
        let e = self.entries.get(i).ok_or_else(|| {
            Error::input(&self.path, 0, format!("record {i} requested, the file has {}", self.entries.len()))
        })?;
        // In bounds: `format::parse` checked offset + len <= payload.len and the payload against the file.
        let start = (self.header.payload.offset + e.offset) as usize;
        Ok(Record { bytes: &self.map[start..start + e.len as usize], label: e.label, width: e.width, height: e.height })
    }

    /// The labels of all records, in file order.
    pub fn labels(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.label).collect()
    }
}
