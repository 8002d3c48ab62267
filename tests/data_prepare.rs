//! `prepare` on real data: a small tree from the ImageNet sample (plus every kind of bad input) and
//! Fashion-MNIST read back completely (bytes, labels, class order); flat val/ with a label file; an
//! interrupted run's leftovers; keep/force on a re-run.

mod data_common;

use std::fs;
use std::path::Path;

use attnas::data::decode::{decode_jpeg, decode_record};
use attnas::data::format::Encoding;
use attnas::data::prepare::{prepare, PayloadMode, PrepareOptions};
use attnas::data::{fashion_mnist_dir, PackedDataset};
use data_common::{copy_sample_classes, imagenet_sample, sample_file, scratch};

fn quiet(payload: PayloadMode) -> PrepareOptions {
    PrepareOptions { payload, progress: false, ..Default::default() }
}

#[test]
fn imagenet_tree_round_trip_with_bad_inputs() {
    let Some(sample) = imagenet_sample("imagenet_tree_round_trip_with_bad_inputs") else { return };
    let dir = scratch("prepare-tree");
    let src = dir.join("src");
    let classes = copy_sample_classes(&sample, &src, 12);
    let good = sample_file(&sample, &classes[0]);
    let jpeg = fs::read(&good).unwrap();
    let bad_dir = src.join("train").join(&classes[1]);
    fs::write(bad_dir.join("zero.JPEG"), b"").unwrap();
    fs::write(bad_dir.join("notes.txt"), b"this is not an image\n").unwrap();
    fs::write(bad_dir.join("truncated.JPEG"), &jpeg[..jpeg.len() / 2]).unwrap();
    // A download cut short and padded with zeros (what an interrupted copy to a preallocated file leaves).
    let mut padded = jpeg[..jpeg.len() * 2 / 3].to_vec();
    padded.resize(jpeg.len(), 0);
    fs::write(bad_dir.join("zero-padded.JPEG"), &padded).unwrap();
    fs::write(bad_dir.join("garbage.JPEG"), [0xFF, 0xD8, 0xFF, 0x00, 0x12, 0x34]).unwrap();
    // A download cut short and closed with an end-of-image marker (decodes with a grey band if let through).
    let mut closed = jpeg[..jpeg.len() * 3 / 5].to_vec();
    closed.extend([0xFF, 0xD9]);
    fs::write(bad_dir.join("reterminated.JPEG"), &closed).unwrap();
    fs::create_dir(bad_dir.join("nested")).unwrap();
    // A PNG is an image: accepted, re-encoded as JPEG.
    let png_path = src.join("train").join(&classes[2]).join("zz-extra.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 100])).save(&png_path).unwrap();

    let out = dir.join("out");
    let s = prepare(&src, &out, &quiet(PayloadMode::Original)).unwrap();
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!((s.split.as_str(), s.classes, s.images), ("train", 12, 13));
    let mut reasons: Vec<(String, String)> = s
        .skipped
        .iter()
        .map(|k| (k.path.file_name().unwrap().to_string_lossy().into_owned(), k.reason.clone()))
        .collect();
    reasons.sort();
    let names: Vec<&str> = reasons.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        ["garbage.JPEG", "nested", "notes.txt", "reterminated.JPEG", "truncated.JPEG", "zero-padded.JPEG", "zero.JPEG"]
    );
    assert!(reasons.iter().any(|r| r.0 == "zero.JPEG" && r.1 == "zero-byte file"));
    assert!(reasons.iter().any(|r| r.0 == "truncated.JPEG" && r.1.contains("corrupt or truncated JPEG")));
    let why = &reasons.iter().find(|r| r.0 == "reterminated.JPEG").unwrap().1;
    assert!(why.contains("scan data ends before the last block"), "{why}");
    assert!(reasons.iter().any(|r| r.0 == "notes.txt" && r.1.contains("not a decodable image")));
    let report = fs::read_to_string(out.join("train.skipped.tsv")).unwrap();
    assert_eq!(report.lines().count(), 1 + 7, "{report}");
    assert!(report.contains("truncated.JPEG\t"));
    assert!(!out.join(".train.pack.partial").exists());

    // Read back every record: class order, labels, original bytes, decoded size.
    let ds = PackedDataset::open(out.join("train.pack")).unwrap();
    assert_eq!(ds.class_names(), &classes[..]);
    assert_eq!(ds.encoding(), Encoding::Jpeg);
    let mut i = 0;
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<_> = fs::read_dir(sample.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        if label == 2 {
            files.push(png_path.clone());
        }
        for f in files {
            let r = ds.get(i).unwrap();
            assert_eq!(r.label as usize, label, "record {i}");
            let img = decode_record(&r, ds.encoding(), ds.channels()).unwrap();
            assert_eq!((img.width, img.height), (r.width, r.height), "record {i}");
            if f.extension().is_some_and(|e| e == "png") {
                assert_eq!((r.width, r.height), (40, 30));
                // Re-encoded at quality 95: close to the source pixels.
                let src_px = image::open(&f).unwrap().into_rgb8().into_raw();
                let err = src_px.iter().zip(&img.data).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
                assert!(err <= 16, "png re-encode max error {err}");
            } else {
                assert_eq!(r.bytes, &fs::read(&f).unwrap()[..], "record {i} bytes differ from {}", f.display());
            }
            i += 1;
        }
    }
    assert_eq!(i, ds.len());
    drop(ds);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn reencode_and_raw_payloads() {
    let Some(sample) = imagenet_sample("reencode_and_raw_payloads") else { return };
    let dir = scratch("prepare-reencode");
    let src = dir.join("src");
    let classes = copy_sample_classes(&sample, &src, 3);
    let s = prepare(&src, &dir.join("re"), &quiet(PayloadMode::Reencode { max_side: 96, quality: 90 })).unwrap();
    let ds = PackedDataset::open(&s[0].path).unwrap();
    assert_eq!(ds.len(), classes.len());
    for (i, class) in classes.iter().enumerate() {
        let r = ds.get(i).unwrap();
        let orig = decode_jpeg(&fs::read(sample_file(&sample, class)).unwrap(), true).unwrap();
        assert_eq!(r.width.max(r.height), 96.min(orig.width.max(orig.height)));
        let img = decode_record(&r, ds.encoding(), 3).unwrap();
        assert_eq!((img.width, img.height), (r.width, r.height));
        // Aspect ratio kept to within a pixel.
        let want = orig.width as f64 / orig.height as f64;
        assert!((r.width as f64 / r.height as f64 - want).abs() < 2.0 / r.width.min(r.height) as f64 * want.max(1.0));
    }
    let s = prepare(&src, &dir.join("raw"), &quiet(PayloadMode::Raw)).unwrap();
    let ds = PackedDataset::open(&s[0].path).unwrap();
    assert_eq!(ds.encoding(), Encoding::Raw);
    for (i, class) in classes.iter().enumerate() {
        let orig = decode_jpeg(&fs::read(sample_file(&sample, class)).unwrap(), true).unwrap();
        assert_eq!(ds.get(i).unwrap().bytes, &orig.data[..]);
    }
}

#[test]
fn flat_val_with_label_file_and_class_folders() {
    let Some(sample) = imagenet_sample("flat_val_with_label_file_and_class_folders") else { return };
    let dir = scratch("prepare-val");
    let src = dir.join("src");
    let classes = copy_sample_classes(&sample, &src, 4);
    fs::create_dir_all(src.join("val")).unwrap();
    // Flat val/: image k is a copy of class (3 - k)'s image; the label file names classes by folder or index.
    let mut labels = String::from("ImageId,PredictionString\n");
    for k in 0..4 {
        let name = format!("ILSVRC2012_val_{:08}.JPEG", k + 1);
        fs::copy(sample_file(&sample, &classes[3 - k]), src.join("val").join(&name)).unwrap();
        if k % 2 == 0 {
            labels.push_str(&format!("ILSVRC2012_val_{:08},{} 1 2 3 4\n", k + 1, classes[3 - k]));
        } else {
            labels.push_str(&format!("{name} {}\n", 3 - k));
        }
    }
    fs::write(src.join("val").join("unlabelled.JPEG"), fs::read(sample_file(&sample, &classes[0])).unwrap()).unwrap();
    fs::write(src.join("LOC_val_solution.csv"), labels).unwrap();
    let s = prepare(&src, &dir.join("out"), &quiet(PayloadMode::Original)).unwrap();
    assert_eq!(s.len(), 2);
    let val = &s[1];
    assert_eq!((val.split.as_str(), val.images, val.skipped.len()), ("val", 4, 1));
    assert!(val.skipped[0].reason.contains("no label"));
    let ds = PackedDataset::open(&val.path).unwrap();
    assert_eq!(ds.labels(), [3, 2, 1, 0]);
    assert_eq!(ds.class_names(), &classes[..]);

    // val/<class>/ folders instead, one of them unknown to train/.
    fs::remove_dir_all(src.join("val")).unwrap();
    for c in &classes[..2] {
        fs::create_dir_all(src.join("val").join(c)).unwrap();
        fs::copy(sample_file(&sample, c), src.join("val").join(c).join("v.JPEG")).unwrap();
    }
    fs::create_dir_all(src.join("val/n99999999")).unwrap();
    let opts = PrepareOptions { force: true, ..quiet(PayloadMode::Original) };
    let s = prepare(&src, &dir.join("out"), &opts).unwrap();
    let ds = PackedDataset::open(&s[1].path).unwrap();
    assert_eq!(ds.labels(), [0, 1]);
    assert!(s[1].skipped.iter().any(|k| k.reason.contains("not in train/")));
}

#[test]
fn interrupted_run_restarts_and_finished_run_is_kept() {
    let Some(sample) = imagenet_sample("interrupted_run_restarts_and_finished_run_is_kept") else { return };
    let dir = scratch("prepare-resume");
    let src = dir.join("src");
    copy_sample_classes(&sample, &src, 2);
    let out = dir.join("out");
    fs::create_dir_all(&out).unwrap();
    // What a killed run leaves: a partial file (no header yet) and no train.pack.
    fs::write(out.join(".train.pack.partial"), vec![0u8; 1000]).unwrap();
    let s = prepare(&src, &out, &quiet(PayloadMode::Original)).unwrap();
    assert!(!s[0].kept_existing && s[0].images == 2);
    assert!(!out.join(".train.pack.partial").exists());
    let before = fs::metadata(out.join("train.pack")).unwrap().modified().unwrap();
    let s = prepare(&src, &out, &quiet(PayloadMode::Original)).unwrap();
    assert!(s[0].kept_existing && s[0].images == 2);
    assert_eq!(fs::metadata(out.join("train.pack")).unwrap().modified().unwrap(), before);
    // A damaged finished file is rebuilt, not kept.
    let len = fs::metadata(out.join("train.pack")).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(out.join("train.pack")).unwrap();
    f.set_len(len - 10).unwrap();
    let s = prepare(&src, &out, &quiet(PayloadMode::Original)).unwrap();
    assert!(!s[0].kept_existing);
    PackedDataset::open(out.join("train.pack")).unwrap();
}

#[test]
fn unreadable_directory_is_skipped() {
    let Some(sample) = imagenet_sample("unreadable_directory_is_skipped") else { return };
    let dir = scratch("prepare-unreadable");
    let src = dir.join("src");
    let classes = copy_sample_classes(&sample, &src, 3);
    let locked = src.join("train").join(&classes[1]);
    set_mode(&locked, 0o000);
    if fs::read_dir(&locked).is_ok() {
        // Root reads any folder: take the same error path with a class folder that vanished between
        // listing the classes and listing their files.
        set_mode(&locked, 0o755);
        let mut skips = Vec::new();
        let vanished = vec![classes[0].clone(), "n00000000".to_string()];
        let items = attnas::data::prepare::list_class_tree(&src.join("train"), &vanished, &mut skips);
        assert_eq!(items.len(), 1);
        assert_eq!(skips.len(), 1);
        assert!(skips[0].reason.starts_with("unreadable directory"), "{:?}", skips[0]);
        println!("note: unreadable_directory_is_skipped: running as root, checked with a vanished folder instead");
        return;
    }
    let s = prepare(&src, &dir.join("out"), &quiet(PayloadMode::Original));
    set_mode(&locked, 0o755);
    let s = s.unwrap();
    assert_eq!((s[0].images, s[0].classes), (2, 3));
    assert!(s[0].skipped.iter().any(|k| k.path == locked && k.reason.contains("unreadable directory")));
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn fashion_mnist_round_trip() {
    let Some(fm) = fashion_mnist_dir() else {
        let missing = "Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)";
        attnas::testing::skip_or_require("fashion_mnist_round_trip", missing, "REQUIRE_SHARED_DATA");
        return;
    };
    let dir = scratch("prepare-fashion");
    let s = prepare(&fm, &dir, &quiet(PayloadMode::Original)).unwrap();
    assert_eq!(s.len(), 2);
    for (summary, prefix, n) in [(&s[0], "train", 60_000usize), (&s[1], "t10k", 10_000)] {
        // Independent of the crate's IDX parser: fixed 16- and 8-byte headers (README of the data).
        let images = gunzip(&fm.join(format!("{prefix}-images-idx3-ubyte.gz")));
        let labels = gunzip(&fm.join(format!("{prefix}-labels-idx1-ubyte.gz")));
        assert_eq!((images.len(), labels.len()), (16 + n * 784, 8 + n));
        let ds = PackedDataset::open(&summary.path).unwrap();
        assert_eq!(ds.len(), n);
        assert_eq!((ds.encoding(), ds.channels()), (Encoding::Raw, 1));
        assert_eq!(ds.class_names()[0], "T-shirt/top");
        assert_eq!(ds.class_names()[9], "Ankle boot");
        for i in 0..n {
            let r = ds.get(i).unwrap();
            assert_eq!((r.label, r.width, r.height), (labels[8 + i] as u32, 28, 28));
            assert_eq!(r.bytes, &images[16 + i * 784..16 + (i + 1) * 784]);
        }
        // Every class present, 6000 / 1000 each (the set is balanced).
        let mut counts = [0usize; 10];
        ds.labels().iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| c == n / 10), "{counts:?}");
    }
    let _ = fs::remove_dir_all(&dir); // 54 MB; left in place only when an assertion failed
}

fn gunzip(p: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(p).unwrap()).read_to_end(&mut out).unwrap();
    out
}
