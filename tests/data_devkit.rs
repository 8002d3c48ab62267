//! `prepare` with the ILSVRC2012 devkit's own validation labels: a synthetic devkit whose `meta.mat` is
//! written here byte by byte after MathWorks' MAT-file Level 5 layout (independently of the reader:
//! plain and zlib-compressed, little- and big-endian, chars as UTF-16 code units and as UTF-8, small
//! data elements, empty arrays, an inner synset and a class without a train/ folder), ILSVRC2012_IDs in
//! an order that is not the sorted-WNID order of the label indices. Errors name the file, line and fix;
//! damaged MAT files give errors, never a panic.

mod data_common;

use std::fs;
use std::io::Write;
use std::path::Path;

use attnas::data::devkit::{read_ground_truth, read_synsets};
use attnas::data::matfile::{read_mat, MatValue};
use attnas::data::prepare::{prepare, PayloadMode, PrepareOptions};
use attnas::data::PackedDataset;
use data_common::scratch;

/// MAT Level 5 writer for the test (data types and classes by number, as in the format document).
struct MatWriter {
    big: bool,
}

const MI_INT8: u32 = 1;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;

impl MatWriter {
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// A data element: tag + data padded to 8 bytes; the small format when the data fits in 4 bytes.
    fn element(&self, ty: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if !data.is_empty() && data.len() <= 4 {
            out.extend(self.u32(((data.len() as u32) << 16) | ty));
            out.extend(data);
            out.resize(8, 0);
            return out;
        }
        out.extend(self.u32(ty));
        out.extend(self.u32(data.len() as u32));
        out.extend(data);
        out.resize(8 + data.len().div_ceil(8) * 8, 0);
        out
    }

    fn matrix(&self, class: u8, dims: &[u32], name: &str, body: &[u8]) -> Vec<u8> {
        let flags = if self.big { [0, 0, 0, class, 0, 0, 0, 0] } else { [class, 0, 0, 0, 0, 0, 0, 0] };
        let mut data = self.element(MI_UINT32, &flags);
        data.extend(self.element(MI_INT32, &dims.iter().flat_map(|&d| self.u32(d)).collect::<Vec<_>>()));
        data.extend(self.element(MI_INT8, name.as_bytes()));
        data.extend(body);
        self.element(MI_MATRIX, &data)
    }

    /// A double scalar stored as miUINT16 (MATLAB narrows integer-valued doubles like this).
    fn double_as_u16(&self, v: u16) -> Vec<u8> {
        let b = if self.big { v.to_be_bytes() } else { v.to_le_bytes() };
        self.matrix(6, &[1, 1], "", &self.element(MI_UINT16, &b))
    }

    fn double(&self, v: f64) -> Vec<u8> {
        let b = if self.big { v.to_be_bytes() } else { v.to_le_bytes() };
        self.matrix(6, &[1, 1], "", &self.element(MI_DOUBLE, &b))
    }

    fn string(&self, s: &str, utf8: bool) -> Vec<u8> {
        let n = s.chars().count() as u32;
        let body = if utf8 {
            self.element(MI_UTF8, s.as_bytes())
        } else {
            let units: Vec<u8> =
                s.encode_utf16().flat_map(|u| if self.big { u.to_be_bytes() } else { u.to_le_bytes() }).collect();
            self.element(MI_UINT16, &units)
        };
        self.matrix(4, &[1, n], "", &body)
    }

    /// The empty `children` of a leaf synset: an miMATRIX of 0 bytes.
    fn empty(&self) -> Vec<u8> {
        self.element(MI_MATRIX, &[])
    }

    /// `synsets`: (ILSVRC2012_ID, WNID, num_children) rows, the devkit's 8 fields.
    fn synsets(&self, rows: &[(u16, &str, u16)], utf8: bool) -> Vec<u8> {
        let fields = [
            "ILSVRC2012_ID",
            "WNID",
            "words",
            "gloss",
            "num_children",
            "children",
            "wordnet_height",
            "num_train_images",
        ];
        let mut body = self.element(MI_INT32, &self.u32(32));
        let mut names = Vec::new();
        for f in fields {
            let mut b = f.as_bytes().to_vec();
            b.resize(32, 0);
            names.extend(b);
        }
        body.extend(self.element(MI_INT8, &names));
        for &(id, wnid, children) in rows {
            body.extend(self.double_as_u16(id));
            body.extend(self.string(wnid, utf8));
            body.extend(self.string(&format!("thing {id}, another name"), utf8));
            body.extend(self.string("a gloss: \u{e9}t\u{e9}", utf8));
            body.extend(self.double_as_u16(children));
            body.extend(if children == 0 { self.empty() } else { self.double(1.0) });
            body.extend(self.double(0.0));
            body.extend(self.double(1300.0));
        }
        self.matrix(2, &[rows.len() as u32, 1], "synsets", &body)
    }

    fn file(&self, vars: &[Vec<u8>], compress: bool) -> Vec<u8> {
        let mut out =
            format!("{:<116}", "MATLAB 5.0 MAT-file, Platform: GLNXA64, written by the attnas test").into_bytes();
        out.extend([0u8; 8]);
        out.extend(if self.big { [0x01, 0x00] } else { [0x00, 0x01] });
        out.extend(if self.big { *b"MI" } else { *b"IM" });
        for v in vars {
            if compress {
                let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                z.write_all(v).unwrap();
                let z = z.finish().unwrap();
                out.extend(self.u32(MI_COMPRESSED));
                out.extend(self.u32(z.len() as u32));
                out.extend(z);
            } else {
                out.extend(v);
            }
        }
        out
    }
}

/// Train classes (sorted WNIDs = label order) and the devkit's synsets in its own ID order: ID 1 is
/// the fourth class, an inner node (num_children 2), and a class with no train/ folder (ID 7).
const CLASSES: [&str; 5] = ["n01000001", "n01000002", "n01000003", "n01000004", "n01000005"];
const SYNSETS: [(u16, &str, u16); 7] = [
    (1, "n01000004", 0),
    (2, "n01000001", 0),
    (3, "n01000005", 0),
    (4, "n01000002", 0),
    (5, "n01000003", 0),
    (7, "n09999999", 0),
    (1001, "n00000042", 2),
];
/// Ground truth of val images 1..=6 (ILSVRC2012_IDs) and the labels they must get (None: skipped).
const TRUTH: [u16; 6] = [4, 1, 2, 7, 5, 3];
const LABELS: [Option<u32>; 6] = [Some(1), Some(3), Some(0), None, Some(2), Some(4)];

fn png(path: &Path, seed: u32) {
    image::RgbImage::from_fn(20, 16, |x, y| image::Rgb([(x * 9 + seed * 40) as u8, (y * 11) as u8, seed as u8]))
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

/// SRC with train/<wnid>/ and a flat val/ of ILSVRC2012_val_0000000k.JPEG (PNG content; prepare reads
/// any image); val image k is drawn with seed k so its record can be told apart.
fn tree(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    for (i, c) in CLASSES.iter().enumerate() {
        fs::create_dir_all(src.join("train").join(c)).unwrap();
        png(&src.join("train").join(c).join("a.png"), 100 + i as u32);
    }
    fs::create_dir_all(src.join("val")).unwrap();
    for k in 1..=TRUTH.len() as u32 {
        png(&src.join("val").join(format!("ILSVRC2012_val_{k:08}.JPEG")), k);
    }
    src
}

fn truth_text() -> String {
    TRUTH.iter().map(|id| format!("{id}\n")).collect()
}

fn quiet() -> PrepareOptions {
    PrepareOptions { payload: PayloadMode::Raw, progress: false, ..Default::default() }
}

/// The val split's labels in record order and the skip reasons.
fn val_labels(out: &Path, opts: &PrepareOptions, src: &Path) -> (Vec<u32>, Vec<String>) {
    let s = prepare(src, out, opts).unwrap();
    let val = s.iter().find(|s| s.split == "val").unwrap();
    let ds = PackedDataset::open(&val.path).unwrap();
    assert_eq!(ds.class_names(), &CLASSES.map(String::from)[..]);
    (ds.labels().to_vec(), val.skipped.iter().map(|k| k.reason.clone()).collect())
}

fn want_labels() -> Vec<u32> {
    LABELS.iter().flatten().copied().collect()
}

#[test]
fn devkit_ground_truth_labels_the_flat_val_split() {
    let dir = scratch("devkit");
    let src = tree(&dir);
    // 1. The devkit's own layout under SRC, found without flags: plain little-endian, UTF-16 chars.
    let data = src.join("ILSVRC2012_devkit_t12/data");
    fs::create_dir_all(&data).unwrap();
    let le = MatWriter { big: false };
    fs::write(data.join("meta.mat"), le.file(&[le.synsets(&SYNSETS, false)], false)).unwrap();
    fs::write(data.join("ILSVRC2012_validation_ground_truth.txt"), truth_text()).unwrap();
    let (labels, skipped) = val_labels(&dir.join("auto"), &quiet(), &src);
    assert_eq!(labels, want_labels());
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("class n09999999") && skipped[0].contains("has no train/ folder"), "{skipped:?}");

    // 2. Named by flags: compressed big-endian meta.mat with UTF-8 chars and another variable first.
    let be = MatWriter { big: true };
    let other = be.matrix(6, &[1, 1], "version", &be.element(MI_DOUBLE, &2.0f64.to_be_bytes()));
    let meta = dir.join("meta-be.mat");
    fs::write(&meta, be.file(&[other, be.synsets(&SYNSETS, true)], true)).unwrap();
    let gt = dir.join("gt.txt");
    fs::write(&gt, truth_text()).unwrap();
    let opts = PrepareOptions { val_ground_truth: Some(gt.clone()), devkit_meta: Some(meta.clone()), ..quiet() };
    assert_eq!(val_labels(&dir.join("flags"), &opts, &src).0, want_labels());

    // 3. A synset text file instead of meta.mat: line i is the WNID of ILSVRC2012_ID i.
    let mut by_id = ["n00000000"; 7];
    for (id, wnid, children) in SYNSETS {
        if children == 0 {
            by_id[id as usize - 1] = wnid;
        }
    }
    let txt = dir.join("synsets.txt");
    fs::write(&txt, by_id.iter().map(|w| format!("{w} some words\n")).collect::<String>()).unwrap();
    let opts = PrepareOptions { val_ground_truth: Some(gt), devkit_meta: Some(txt), ..quiet() };
    assert_eq!(val_labels(&dir.join("text"), &opts, &src).0, want_labels());

    // The reader itself: fields, strings with non-ASCII, the inner synset left out of the classes.
    let vars = read_mat(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(vars.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["version", "synsets"]);
    let s = &vars[1].1;
    assert_eq!(s.field(6, "ILSVRC2012_ID").and_then(MatValue::scalar), Some(1001.0));
    assert_eq!(s.field(0, "gloss").and_then(MatValue::string), Some("a gloss: \u{e9}t\u{e9}"));
    assert_eq!(s.field(0, "children"), Some(&MatValue::Numeric { dims: vec![0, 0], data: vec![] }));
    let synsets = read_synsets(&meta).unwrap();
    assert_eq!((synsets.len(), synsets[&1].as_str(), synsets.get(&1001)), (6, "n01000004", None));
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn devkit_errors_name_file_line_and_fix() {
    let dir = scratch("devkit-errors");
    let src = tree(&dir);
    let le = MatWriter { big: false };
    let meta = dir.join("meta.mat");
    let good = le.file(&[le.synsets(&SYNSETS, false)], false);
    fs::write(&meta, &good).unwrap();
    let synsets = read_synsets(&meta).unwrap();
    let gt = dir.join("gt.txt");
    let err = |text: &str| {
        fs::write(&gt, text).unwrap();
        read_ground_truth(&gt, &synsets, &meta).unwrap_err()
    };
    let e = err("4\n1\nabc\n");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with(&format!("{}:3: 'abc' is not an ILSVRC2012_ID", gt.display())), "{e}");
    assert!(e.to_string().contains("line i for ILSVRC2012_val_00000003.JPEG"), "{e}");
    let e = err("4\n\n1\n");
    assert!(e.to_string().starts_with(&format!("{}:2:", gt.display())), "{e}");
    let e = err("4\n1001\n");
    assert!(
        e.to_string().contains(":2: ILSVRC2012_ID 1001 is not a class of") && e.to_string().contains("6 classes"),
        "{e}"
    );

    // A ground truth without meta.mat beside it: the fix names the flag.
    let opts = PrepareOptions { val_ground_truth: Some(src.join("gt.txt")), ..quiet() };
    fs::write(src.join("gt.txt"), truth_text()).unwrap();
    let e = prepare(&src, &dir.join("out"), &opts).unwrap_err();
    assert!(e.to_string().contains("--devkit-meta FILE") && e.exit_code() == 2, "{e}");

    // MAT files that are not the devkit's, or damaged: errors naming the file, never a panic.
    let other = le.file(&[le.double(3.0)], false);
    fs::write(&meta, &other).unwrap();
    let e = read_synsets(&meta).unwrap_err().to_string();
    assert!(e.starts_with(&meta.display().to_string()) && e.contains("no variable 'synsets'"), "{e}");
    let mut hdf = b"MATLAB 7.3 MAT-file".to_vec();
    hdf.resize(512, b' ');
    fs::write(&meta, &hdf).unwrap();
    assert!(read_synsets(&meta).unwrap_err().to_string().contains("'-v7'"));
    let compressed = le.file(&[le.synsets(&SYNSETS, true)], true);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for base in [&good, &compressed] {
        for cut in (0..base.len()).step_by(7) {
            let _ = read_mat(&base[..cut]);
        }
        for _ in 0..300 {
            let mut m = base.clone();
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = 128 + (rng as usize) % (m.len() - 128);
                m[i] = (rng >> 40) as u8;
            }
            let _ = read_mat(&m);
        }
    }
    fs::remove_dir_all(&dir).ok();
}
