//! Helpers shared by the data tests: scratch folders, the real sample, small packed files.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use attnas::data::format::{self, Encoding, Header, IndexEntry, Section};

/// A fresh, empty scratch folder for one test (removed first if a previous run left it).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attnas-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `../shared/data/imagenet-sample-1000/train`, or `None` after printing one skip line (a failure
/// under REQUIRE_SHARED_DATA=1, which CI sets).
pub fn imagenet_sample(test: &str) -> Option<PathBuf> {
    match attnas::data::shared_data_dir().map(|d| d.join("imagenet-sample-1000/train")).filter(|p| p.is_dir()) {
        Some(p) => Some(p),
        None => {
            let missing =
                "../shared/data/imagenet-sample-1000 not found (or set ATTNAS_SHARED_DATA to the data folder)";
            attnas::testing::skip_or_require(test, missing, "REQUIRE_SHARED_DATA");
            None
        }
    }
}

/// Copies the first `n` classes of the sample (sorted) into `dst/train/<class>/`; returns the class names.
pub fn copy_sample_classes(sample: &Path, dst: &Path, n: usize) -> Vec<String> {
    let mut classes: Vec<String> =
        fs::read_dir(sample).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    classes.sort();
    classes.truncate(n);
    for c in &classes {
        let d = dst.join("train").join(c);
        fs::create_dir_all(&d).unwrap();
        for f in fs::read_dir(sample.join(c)).unwrap() {
            let f = f.unwrap().path();
            fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
        }
    }
    classes
}

/// The one image file of a sample class.
pub fn sample_file(sample: &Path, class: &str) -> PathBuf {
    fs::read_dir(sample.join(class)).unwrap().next().unwrap().unwrap().path()
}

/// Bytes of a valid raw packed file: records are `(label, width, height, pixels)`, 1 channel.
pub fn raw_pack(classes: &[&str], records: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
    let names = classes.join("\n");
    let classes_sec = Section { offset: format::HEADER_LEN as u64, len: names.len() as u64 };
    let payload_len: u64 = records.iter().map(|r| r.3.len() as u64).sum();
    let payload = Section { offset: classes_sec.offset + classes_sec.len, len: payload_len };
    let index = Section { offset: payload.offset + payload.len, len: (records.len() * format::INDEX_ENTRY_LEN) as u64 };
    let header = Header {
        encoding: Encoding::Raw,
        channels: 1,
        num_classes: classes.len() as u32,
        num_records: records.len() as u64,
        classes: classes_sec,
        payload,
        index,
    };
    let mut out = format::encode_header(&header).to_vec();
    out.extend_from_slice(names.as_bytes());
    let mut offset = 0u64;
    let mut entries = Vec::new();
    for (label, w, h, px) in records {
        out.extend_from_slice(px);
        entries.push(IndexEntry { offset, len: px.len() as u32, label: *label, width: *w, height: *h });
        offset += px.len() as u64;
    }
    for e in &entries {
        out.extend_from_slice(&format::encode_entry(e));
    }
    out
}
