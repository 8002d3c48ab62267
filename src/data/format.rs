//! The packed dataset format (version 1): one file per split, memory-mappable, all integers little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic b"ATNASPK\0"
//! 8       4     version (1)
//! 12      4     payload encoding: 0 = JPEG bytes, 1 = raw u8 pixels (HWC)
//! 16      4     channels of a decoded record (1 or 3)
//! 20      4     number of classes
//! 24      8     number of records
//! 32      8/8   class names: offset, length (UTF-8, one name per line, in label order)
//! 48      8/8   payload: offset, length (records' bytes, back to back)
//! 64      8/8   index: offset, length (records x 24 bytes)
//! ```
//! An index entry is `offset u64` (relative to the payload), `length u32`, `label u32`, `width u32`,
//! `height u32`. The index sits after the payload so the writer can stream records and write the header
//! last; the file must end exactly where the index ends, so a truncated file is always detected.
//! [`parse`] checks every offset, length and label before anything is read, so a reader built on it
//! never reads out of bounds and never panics, whatever the bytes (it is the fuzz target's entry point).

use std::fmt;

pub const MAGIC: [u8; 8] = *b"ATNASPK\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 80;
pub const INDEX_ENTRY_LEN: usize = 24;

/// How a record's bytes encode its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// A JPEG file (original bytes or re-encoded); decoded to `channels` channels.
    Jpeg,
    /// `height * width * channels` bytes, row-major HWC.
    Raw,
}

impl Encoding {
    pub fn code(self) -> u32 {
        match self {
            Encoding::Jpeg => 0,
            Encoding::Raw => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Jpeg => "jpeg",
            Encoding::Raw => "raw",
        }
    }
}

/// The fixed header of a packed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub encoding: Encoding,
    pub channels: u32,
    pub num_classes: u32,
    pub num_records: u64,
    pub classes: Section,
    pub payload: Section,
    pub index: Section,
}

/// A byte range of the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub offset: u64,
    pub len: u64,
}

impl Section {
    fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// One record of the index (offset relative to the payload section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub len: u32,
    pub label: u32,
    pub width: u32,
    pub height: u32,
}

/// A checked layout: header, class names and index, every entry known to lie inside the payload.
#[derive(Clone, Debug)]
pub struct Layout {
    pub header: Header,
    pub class_names: Vec<String>,
    pub entries: Vec<IndexEntry>,
}

/// What is wrong with a packed file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    TooShort { len: u64 },
    BadMagic { found: [u8; 8] },
    UnsupportedVersion { found: u32 },
    BadEncoding { found: u32 },
    BadChannels { found: u32 },
    SectionOutOfBounds { section: &'static str, offset: u64, len: u64, file_len: u64 },
    SectionsOverlap { first: &'static str, second: &'static str },
    Truncated { expected: u64, found: u64 },
    IndexSize { records: u64, index_len: u64 },
    ClassNames { msg: String },
    Record { index: u64, msg: String },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::TooShort { len } => {
                write!(f, "file is {len} bytes, shorter than the {HEADER_LEN}-byte header (not a packed dataset?)")
            }
            FormatError::BadMagic { found } => {
                write!(f, "wrong magic {found:02x?}: not an attnas packed dataset (expected {MAGIC:02x?})")
            }
            FormatError::UnsupportedVersion { found } => {
                write!(f, "format version {found}, this build reads version {VERSION}; re-run `attnas prepare`")
            }
            FormatError::BadEncoding { found } => write!(f, "unknown payload encoding {found} (0 = jpeg, 1 = raw)"),
            FormatError::BadChannels { found } => write!(f, "channels is {found}, expected 1 or 3"),
            FormatError::SectionOutOfBounds { section, offset, len, file_len } => write!(
                f,
                "{section} section [{offset}, +{len}) lies outside the {file_len}-byte file (truncated or corrupt)"
            ),
            FormatError::SectionsOverlap { first, second } => write!(f, "{first} and {second} sections overlap"),
            FormatError::Truncated { expected, found } => write!(
                f,
                "file is {found} bytes but its header describes {expected} bytes ({})",
                if found < expected { "truncated" } else { "trailing bytes" }
            ),
            FormatError::IndexSize { records, index_len } => {
                write!(f, "index is {index_len} bytes, expected {records} records x {INDEX_ENTRY_LEN} bytes")
            }
            FormatError::ClassNames { msg } => write!(f, "class names: {msg}"),
            FormatError::Record { index, msg } => write!(f, "record {index}: {msg}"),
        }
    }
}

impl std::error::Error for FormatError {}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Serialises a header to its 80 bytes.
pub fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&h.encoding.code().to_le_bytes());
    b[16..20].copy_from_slice(&h.channels.to_le_bytes());
    b[20..24].copy_from_slice(&h.num_classes.to_le_bytes());
    b[24..32].copy_from_slice(&h.num_records.to_le_bytes());
    for (at, s) in [(32, h.classes), (48, h.payload), (64, h.index)] {
        b[at..at + 8].copy_from_slice(&s.offset.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&s.len.to_le_bytes());
    }
    b
}

/// Serialises one index entry to its 24 bytes.
pub fn encode_entry(e: &IndexEntry) -> [u8; INDEX_ENTRY_LEN] {
    let mut b = [0u8; INDEX_ENTRY_LEN];
    b[0..8].copy_from_slice(&e.offset.to_le_bytes());
    b[8..12].copy_from_slice(&e.len.to_le_bytes());
    b[12..16].copy_from_slice(&e.label.to_le_bytes());
    b[16..20].copy_from_slice(&e.width.to_le_bytes());
    b[20..24].copy_from_slice(&e.height.to_le_bytes());
    b
}

/// Parses and checks the header only (magic, version, fields, sections against `file_len`).
pub fn parse_header(bytes: &[u8]) -> Result<Header, FormatError> {
    let file_len = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        // A short file with the wrong magic is better reported as the wrong magic.
        if bytes.len() >= 8 && bytes[0..8] != MAGIC {
            let mut found = [0u8; 8];
            found.copy_from_slice(&bytes[0..8]);
            return Err(FormatError::BadMagic { found });
        }
        return Err(FormatError::TooShort { len: file_len });
    }
    if bytes[0..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&bytes[0..8]);
        return Err(FormatError::BadMagic { found });
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion { found: version });
    }
    let encoding = match u32_at(bytes, 12) {
        0 => Encoding::Jpeg,
        1 => Encoding::Raw,
        other => return Err(FormatError::BadEncoding { found: other }),
    };
    let channels = u32_at(bytes, 16);
    if channels != 1 && channels != 3 {
        return Err(FormatError::BadChannels { found: channels });
    }
    let section = |at: usize| Section { offset: u64_at(bytes, at), len: u64_at(bytes, at + 8) };
    let header = Header {
        encoding,
        channels,
        num_classes: u32_at(bytes, 20),
        num_records: u64_at(bytes, 24),
        classes: section(32),
        payload: section(48),
        index: section(64),
    };
    let named = [("class-names", header.classes), ("payload", header.payload), ("index", header.index)];
    for (name, s) in named {
        match s.end() {
            Some(end) if s.offset >= HEADER_LEN as u64 && end <= file_len => {}
            _ => return Err(FormatError::SectionOutOfBounds { section: name, offset: s.offset, len: s.len, file_len }),
        }
    }
    for pair in named.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.1.end().is_none_or(|end| end > b.1.offset) {
            return Err(FormatError::SectionsOverlap { first: a.0, second: b.0 });
        }
    }
    match header.num_records.checked_mul(INDEX_ENTRY_LEN as u64) {
        Some(n) if n == header.index.len => {}
        _ => return Err(FormatError::IndexSize { records: header.num_records, index_len: header.index.len }),
    }
    let expected = header.index.offset + header.index.len; // checked above
    if expected != file_len {
        return Err(FormatError::Truncated { expected, found: file_len });
    }
    Ok(header)
}

/// What the reader promises for any input, checked after the fact: `None` when `bytes` are refused, or
/// accepted with every record inside the payload and the file and every label below the class count;
/// otherwise which record breaks that promise. The fuzz target (fuzz/) and tests/data_format.rs (its
/// seed corpus and seeded mutations) assert this is `None` for every input they try.
pub fn layout_violation(bytes: &[u8]) -> Option<String> {
    let layout = parse(bytes).ok()?;
    let payload = layout.header.payload;
    layout.entries.iter().enumerate().find_map(|(i, e)| {
        let end = payload.offset.checked_add(e.offset).and_then(|s| s.checked_add(e.len as u64));
        match end {
            None => Some(format!("record {i}: offset {} + len {} overflows", e.offset, e.len)),
            Some(end) if end > payload.offset + payload.len || end > bytes.len() as u64 => Some(format!(
                "record {i} ends at byte {end}, past the payload (ends {}) or the file ({} bytes)",
                payload.offset + payload.len,
                bytes.len()
            )),
            Some(_) if e.label as usize >= layout.class_names.len() => {
                Some(format!("record {i}: label {} >= {} classes", e.label, layout.class_names.len()))
            }
            Some(_) => None,
        }
    })
}

/// Parses and checks the whole layout: header, class names, and every index entry (inside the payload,
/// label below the class count, non-zero size, raw records exactly `w * h * channels` bytes).
pub fn parse(bytes: &[u8]) -> Result<Layout, FormatError> {
    let header = parse_header(bytes)?;
    // The sections were checked against the file length, which fits in usize.
    let slice = |s: Section| &bytes[s.offset as usize..(s.offset + s.len) as usize];
    let names_text = std::str::from_utf8(slice(header.classes))
        .map_err(|e| FormatError::ClassNames { msg: format!("not UTF-8 ({e})") })?;
    let class_names: Vec<String> =
        if names_text.is_empty() { Vec::new() } else { names_text.split('\n').map(str::to_string).collect() };
    if class_names.len() as u64 != header.num_classes as u64 {
        return Err(FormatError::ClassNames {
            msg: format!("{} names for {} classes", class_names.len(), header.num_classes),
        });
    }
    let index = slice(header.index);
    let mut entries = Vec::with_capacity(header.num_records as usize);
    for (i, raw) in index.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let e = IndexEntry {
            offset: u64_at(raw, 0),
            len: u32_at(raw, 8),
            label: u32_at(raw, 12),
            width: u32_at(raw, 16),
            height: u32_at(raw, 20),
        };
        let bad = |msg: String| FormatError::Record { index: i as u64, msg };
        if e.offset.checked_add(e.len as u64).is_none_or(|end| end > header.payload.len) {
            return Err(bad(format!(
                "bytes [{}, +{}) lie outside the {}-byte payload",
                e.offset, e.len, header.payload.len
            )));
        }
        if e.label >= header.num_classes {
            return Err(bad(format!("label {} but only {} classes", e.label, header.num_classes)));
        }
        if e.width == 0 || e.height == 0 || e.len == 0 {
            return Err(bad(format!("empty record ({}x{}, {} bytes)", e.width, e.height, e.len)));
        }
        if header.encoding == Encoding::Raw {
            let want = e.width as u64 * e.height as u64 * header.channels as u64;
            if want != e.len as u64 {
                return Err(bad(format!(
                    "raw {}x{}x{} needs {want} bytes, index says {}",
                    e.width, e.height, header.channels, e.len
                )));
            }
        }
        entries.push(e);
    }
    Ok(Layout { header, class_names, entries })
}
