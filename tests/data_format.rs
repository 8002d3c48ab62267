//! The packed format and its reader: a hand-built file parses back exactly; wrong magic, version,
//! truncation, trailing bytes and inconsistent index entries give clear errors naming the file; random
//! mutations and truncations of a valid file never panic and never yield an out-of-bounds record.

mod data_common;

use attnas::data::format::{self, Encoding, FormatError};
use attnas::data::PackedDataset;
use data_common::{raw_pack, scratch};
use rand::{RngExt, SeedableRng};

fn sample() -> Vec<u8> {
    raw_pack(&["cat", "dog", "eel"], &[(2, 3, 2, (0..6).collect()), (0, 1, 1, vec![200]), (1, 2, 2, vec![1, 2, 3, 4])])
}

#[test]
fn raw_pack_round_trips_through_reader() {
    let dir = scratch("format-roundtrip");
    let path = dir.join("x.pack");
    std::fs::write(&path, sample()).unwrap();
    let ds = PackedDataset::open(&path).unwrap();
    assert_eq!(ds.class_names(), ["cat", "dog", "eel"]);
    assert_eq!(ds.encoding(), Encoding::Raw);
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.labels(), [2, 0, 1]);
    let r = ds.get(0).unwrap();
    assert_eq!((r.bytes, r.width, r.height), (&[0u8, 1, 2, 3, 4, 5][..], 3, 2));
    assert_eq!(ds.get(1).unwrap().bytes, [200]);
    assert_eq!(ds.get(2).unwrap().bytes, [1, 2, 3, 4]);
    let err = ds.get(3).unwrap_err().to_string();
    assert!(err.contains("record 3") && err.contains("x.pack"), "{err}");
}

fn open_err(name: &str, bytes: &[u8]) -> String {
    let dir = scratch(&format!("format-{name}"));
    let path = dir.join(format!("{name}.pack"));
    std::fs::write(&path, bytes).unwrap();
    let msg = match PackedDataset::open(&path) {
        Ok(_) => panic!("{name}: opened a bad file"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains(&format!("{name}.pack")), "{name}: error does not name the file: {msg}");
    msg
}

#[test]
fn wrong_magic_is_reported() {
    let mut b = sample();
    b[0..8].copy_from_slice(b"GIF89a\0\0");
    assert!(open_err("magic", &b).contains("wrong magic"));
    assert!(open_err("jpegfile", &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F']).contains("wrong magic"));
    assert!(open_err("empty", &[]).contains("shorter than"));
}

#[test]
fn wrong_version_is_reported() {
    let mut b = sample();
    b[8..12].copy_from_slice(&7u32.to_le_bytes());
    let msg = open_err("version", &b);
    assert!(msg.contains("version 7") && msg.contains("reads version 1"), "{msg}");
}

#[test]
fn truncated_and_trailing_bytes_are_reported() {
    let b = sample();
    let msg = open_err("truncated", &b[..b.len() - 1]);
    assert!(msg.contains("truncated") || msg.contains("outside"), "{msg}");
    let msg = open_err("header-only", &b[..format::HEADER_LEN]);
    assert!(msg.contains("outside"), "{msg}");
    let mut long = b.clone();
    long.push(0);
    assert!(open_err("trailing", &long).contains("trailing bytes"));
}

#[test]
fn inconsistent_index_entries_are_reported() {
    let b = sample();
    let idx = b.len() - 3 * format::INDEX_ENTRY_LEN;
    let mut bad_label = b.clone();
    bad_label[idx + 12..idx + 16].copy_from_slice(&3u32.to_le_bytes());
    assert!(open_err("label", &bad_label).contains("record 0: label 3 but only 3 classes"));
    let mut bad_offset = b.clone();
    bad_offset[idx..idx + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_err("offset", &bad_offset).contains("outside the 11-byte payload"));
    let mut bad_size = b.clone();
    bad_size[idx + 16..idx + 20].copy_from_slice(&4u32.to_le_bytes());
    assert!(open_err("rawsize", &bad_size).contains("needs 8 bytes"));
    let mut bad_count = b.clone();
    bad_count[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(open_err("count", &bad_count).contains("index is"));
}

#[test]
fn error_messages_say_what_is_wrong() {
    // Display of each variant carries the numbers a person needs.
    let e = FormatError::Truncated { expected: 100, found: 90 };
    assert_eq!(e.to_string(), "file is 90 bytes but its header describes 100 bytes (truncated)");
}

/// A cheap in-process fuzz (the cargo-fuzz target in fuzz/ does the same at scale): mutated and
/// truncated copies of a valid file either fail to parse or give records inside the buffer.
#[test]
fn mutations_never_panic_or_escape_the_buffer() {
    let base = sample();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for round in 0..20_000 {
        let mut b = base.clone();
        match round % 3 {
            0 => {
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
            1 => b.truncate(rng.random_range(0..b.len())),
            _ => {
                let i = rng.random_range(0..b.len() - 8);
                let v: u64 = if rng.random_bool(0.5) { rng.random() } else { rng.random_range(0..256) };
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        if let Some(v) = format::layout_violation(&b) {
            panic!("round {round}: the reader accepted a layout that breaks its promise: {v}");
        }
    }
}

/// The fuzz target's seed corpus (fuzz/corpus/packed_header), replayed through the check the target
/// asserts: CI runs this instead of building the libFuzzer binary in release. The valid seed must parse.
#[test]
fn fuzz_seed_corpus_replays_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/packed_header");
    let mut seen = 0;
    let mut accepted = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/packed_header") {
        let path = entry.expect("corpus entry").path();
        let bytes = std::fs::read(&path).expect("corpus file");
        assert_eq!(format::layout_violation(&bytes), None, "{}", path.display());
        accepted += format::parse(&bytes).is_ok() as usize;
        seen += 1;
    }
    assert!(seen >= 3, "expected the 3 seeds in {}, found {seen}", dir.display());
    assert!(accepted >= 1, "the valid seed (valid-raw-2) no longer parses");
}
