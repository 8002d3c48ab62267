//! `attnas prepare SRC OUT`: an ImageNet-style tree (`train/<class>/*`; `val/<class>/*` or a flat `val/`
//! with a label file or the ILSVRC devkit's ground truth, see [`super::devkit`]) or a pair of IDX sets (Fashion-MNIST/MNIST) -> `OUT/<split>.pack` in the packed
//! format. Files are encoded in parallel (rayon) in chunks and appended in a fixed order, so the output
//! is the same for any thread count. Each split is written to `OUT/.<split>.pack.partial` and renamed
//! when complete; a finished split is kept on a re-run (unless `force`), an unfinished one restarted.
//! Bad inputs (unreadable, zero-byte, non-image, corrupt or truncated JPEG, unreadable directory) are
//! skipped, counted and listed in `OUT/<split>.skipped.tsv` (path, tab, reason).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::augment::{resize_crop_into, CropBox, ResizeFilter};
use super::decode::{self, RgbImage};
use super::devkit;
use super::format::{self, Encoding, Header, IndexEntry, Section};
use super::idx;
use super::reader::PackedDataset;
use crate::error::{Error, Result};
use crate::util::atomic::sync_parent_dir;

/// What to store for each image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadMode {
    /// The original JPEG bytes (non-JPEG images are re-encoded at quality 95).
    Original,
    /// Re-encoded JPEG, longest side at most `max_side`, at `quality`.
    Reencode { max_side: u32, quality: u8 },
    /// Raw RGB pixels (for small images).
    Raw,
}

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub payload: PayloadMode,
    /// Label file for a flat `val/` (default: `SRC/val_labels.txt` or `SRC/LOC_val_solution.csv`).
    pub val_labels: Option<PathBuf>,
    /// The ILSVRC devkit's `ILSVRC2012_validation_ground_truth.txt` for a flat `val/` (default: found
    /// under SRC by [`devkit::find_devkit`] when no label file is).
    pub val_ground_truth: Option<PathBuf>,
    /// The devkit's `data/meta.mat` (or a text file, line i = WNID of ILSVRC2012_ID i); default: beside
    /// the ground-truth file.
    pub devkit_meta: Option<PathBuf>,
    /// Rebuild splits that are already complete.
    pub force: bool,
    pub progress: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            payload: PayloadMode::Original,
            val_labels: None,
            val_ground_truth: None,
            devkit_meta: None,
            force: false,
            progress: true,
        }
    }
}

/// A file `prepare` did not take, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What one split produced.
#[derive(Clone, Debug)]
pub struct SplitSummary {
    pub split: String,
    pub path: PathBuf,
    pub images: u64,
    pub classes: usize,
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
    pub report: Option<PathBuf>,
    /// The split was already complete and was kept as it was.
    pub kept_existing: bool,
}

/// Where a split's images come from.
enum SplitSource {
    Files { items: Vec<(PathBuf, u32)>, classes: Vec<String>, listing_skips: Vec<Skipped> },
    Idx { set: idx::IdxSet, classes: Vec<String> },
}

const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Runs `prepare` on every split found in `src`.
pub fn prepare(src: &Path, out: &Path, opts: &PrepareOptions) -> Result<Vec<SplitSummary>> {
    let splits = discover(src, opts)?;
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut summaries = Vec::new();
    for (name, source) in splits {
        summaries.push(prepare_split(&name, source, out, opts)?);
    }
    Ok(summaries)
}

fn discover(src: &Path, opts: &PrepareOptions) -> Result<Vec<(String, SplitSource)>> {
    if !src.is_dir() {
        return Err(Error::input(src, 0, "not a directory (expected an ImageNet-style tree or IDX files)"));
    }
    let train = src.join("train");
    if train.is_dir() {
        let (classes, mut listing_skips) = class_dirs(&train)?;
        if classes.is_empty() {
            return Err(Error::input(&train, 0, "no class folders (expected train/<class>/<image>)"));
        }
        let mut out = Vec::new();
        let items = list_class_tree(&train, &classes, &mut listing_skips);
        out.push(("train".to_string(), SplitSource::Files { items, classes: classes.clone(), listing_skips }));
        let val = src.join("val");
        if val.is_dir() {
            out.push(("val".to_string(), val_source(src, &val, &classes, opts)?));
        }
        return Ok(out);
    }
    let find = |stem: &str| -> Option<PathBuf> {
        [format!("{stem}.gz"), stem.to_string()].iter().map(|n| src.join(n)).find(|p| p.is_file())
    };
    let fashion = src.to_string_lossy().to_lowercase().contains("fashion");
    let mut out = Vec::new();
    for (split, prefix) in [("train", "train"), ("val", "t10k")] {
        if let (Some(images), Some(labels)) =
            (find(&format!("{prefix}-images-idx3-ubyte")), find(&format!("{prefix}-labels-idx1-ubyte")))
        {
            let set = idx::load_pair(&images, &labels)?;
            let n_classes = set.labels.iter().copied().max().map_or(0, |m| m as usize + 1).max(10);
            let classes = if fashion && n_classes == 10 {
                FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
            } else {
                (0..n_classes).map(|c| c.to_string()).collect()
            };
            out.push((split.to_string(), SplitSource::Idx { set, classes }));
        }
    }
    if out.is_empty() {
        return Err(Error::input(
            src,
            0,
            "found neither train/<class>/ folders nor {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] files",
        ));
    }
    Ok(out)
}

/// Sorted names of the sub-folders of `dir` (the class order: sorted WNIDs give ImageNet's 0-999).
fn class_dirs(dir: &Path) -> Result<(Vec<String>, Vec<Skipped>)> {
    let mut names = Vec::new();
    let mut skips = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        match entry {
            Ok(e) if e.path().is_dir() => names.push(e.file_name().to_string_lossy().into_owned()),
            Ok(_) => {}
            Err(e) => skips.push(Skipped { path: dir.to_path_buf(), reason: format!("directory entry: {e}") }),
        }
    }
    names.sort();
    Ok((names, skips))
}

/// Regular files of `dir`, sorted; an unreadable directory or entry becomes a skip.
fn files_in(dir: &Path, skips: &mut Vec<Skipped>) -> Vec<PathBuf> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            skips.push(Skipped { path: dir.to_path_buf(), reason: format!("unreadable directory: {e}") });
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in rd {
        match entry {
            Ok(e) => {
                let p = e.path();
                if p.is_dir() {
                    skips.push(Skipped { path: p, reason: "nested directory (not a class image)".into() });
                } else {
                    files.push(p);
                }
            }
            Err(e) => skips.push(Skipped { path: dir.to_path_buf(), reason: format!("directory entry: {e}") }),
        }
    }
    files.sort();
    files
}

/// `(file, label)` for every file of `root/<class>/`, classes in the given (label) order; directories that
/// cannot be listed and nested folders are recorded in `skips`.
pub fn list_class_tree(root: &Path, classes: &[String], skips: &mut Vec<Skipped>) -> Vec<(PathBuf, u32)> {
    let mut items = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        for f in files_in(&root.join(class), skips) {
            items.push((f, label as u32));
        }
    }
    items
}

fn val_source(src: &Path, val: &Path, classes: &[String], opts: &PrepareOptions) -> Result<SplitSource> {
    let (sub, mut skips) = class_dirs(val)?;
    let label_of: HashMap<&str, u32> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    if !sub.is_empty() {
        let mut items = Vec::new();
        for name in &sub {
            match label_of.get(name.as_str()) {
                Some(&label) => items.extend(files_in(&val.join(name), &mut skips).into_iter().map(|f| (f, label))),
                None => skips.push(Skipped { path: val.join(name), reason: "class folder not in train/".into() }),
            }
        }
        return Ok(SplitSource::Files { items, classes: classes.to_vec(), listing_skips: skips });
    }
    let labels = flat_val_labels(src, val, classes, opts)?;
    let mut items = Vec::new();
    for f in files_in(val, &mut skips) {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let name = f.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match labels.labels.get(&name).or_else(|| labels.labels.get(&stem)) {
            Some(&label) => items.push((f, label)),
            None => {
                let reason = match labels.outside.get(&stem) {
                    Some(wnid) => format!("class {wnid} ({}) has no train/ folder", labels.origin.display()),
                    None => format!("no label in {}", labels.origin.display()),
                };
                skips.push(Skipped { path: f, reason });
            }
        }
    }
    Ok(SplitSource::Files { items, classes: classes.to_vec(), listing_skips: skips })
}

/// The labels of a flat `val/`: image name or stem -> label, the images whose class has no train/
/// folder (stem -> WNID), and the file they came from.
struct FlatValLabels {
    labels: HashMap<String, u32>,
    outside: HashMap<String, String>,
    origin: PathBuf,
}

/// Where a flat `val/`'s labels come from: `--val-labels`, else `--val-ground-truth` (+ the devkit's
/// meta.mat), else `SRC/val_labels.txt` / `SRC/LOC_val_solution.csv`, else a devkit under SRC.
fn flat_val_labels(src: &Path, val: &Path, classes: &[String], opts: &PrepareOptions) -> Result<FlatValLabels> {
    let from_file = |file: PathBuf| -> Result<FlatValLabels> {
        Ok(FlatValLabels { labels: read_val_labels(&file, classes)?, outside: HashMap::new(), origin: file })
    };
    if let Some(file) = &opts.val_labels {
        return from_file(file.clone());
    }
    if let Some(gt) = &opts.val_ground_truth {
        let meta = match &opts.devkit_meta {
            Some(m) => m.clone(),
            None => gt.with_file_name(devkit::META),
        };
        if !meta.is_file() {
            return Err(Error::usage(format!(
                "--val-ground-truth {}: its ILSVRC2012_IDs need the devkit's data/meta.mat, not found at {}; pass \
                 --devkit-meta FILE",
                gt.display(),
                meta.display()
            )));
        }
        return devkit_labels(gt, &meta, classes);
    }
    if opts.devkit_meta.is_some() {
        return Err(Error::usage("--devkit-meta needs --val-ground-truth FILE (the devkit's ground truth)"));
    }
    if let Some(file) = ["val_labels.txt", "LOC_val_solution.csv"].iter().map(|n| src.join(n)).find(|p| p.is_file()) {
        return from_file(file);
    }
    if let Some((gt, meta)) = devkit::find_devkit(src) {
        return devkit_labels(&gt, &meta, classes);
    }
    Err(Error::input(
        val,
        0,
        "flat val/ needs labels: --val-labels FILE (lines `<image> <class>`), or the ILSVRC devkit's \
         --val-ground-truth ILSVRC2012_validation_ground_truth.txt --devkit-meta meta.mat",
    ))
}

fn devkit_labels(gt: &Path, meta: &Path, classes: &[String]) -> Result<FlatValLabels> {
    let synsets = devkit::read_synsets(meta)?;
    let truth = devkit::read_ground_truth(gt, &synsets, meta)?;
    let label_of: HashMap<&str, u32> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    let (mut labels, mut outside) = (HashMap::new(), HashMap::new());
    for (stem, wnid) in truth {
        match label_of.get(wnid.as_str()) {
            Some(&l) => {
                labels.insert(stem, l);
            }
            None => {
                outside.insert(stem, wnid);
            }
        }
    }
    Ok(FlatValLabels { labels, outside, origin: gt.to_path_buf() })
}

/// A label file: per line `<image name or stem> <class>` (whitespace or comma separated), the class a
/// folder name of train/ or a 0-based index; Kaggle's LOC_val_solution.csv (`id,wnid x y ...`) fits too.
/// Lines whose class is unknown (a CSV header) are ignored.
pub fn read_val_labels(path: &Path, classes: &[String]) -> Result<HashMap<String, u32>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let label_of: HashMap<&str, u32> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i as u32)).collect();
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut toks = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty());
        let (Some(image), Some(class)) = (toks.next(), toks.next()) else { continue };
        let label = match label_of.get(class) {
            Some(&l) => Some(l),
            None => class.parse::<u32>().ok().filter(|&l| (l as usize) < classes.len()),
        };
        if let Some(l) = label {
            map.insert(image.to_string(), l);
        }
    }
    if map.is_empty() {
        return Err(Error::input(path, 0, "no line names an image and a known class"));
    }
    Ok(map)
}

/// One encoded record.
struct Encoded {
    bytes: Vec<u8>,
    width: u32,
    height: u32,
}

fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(&img.data, img.width, img.height, image::ExtendedColorType::Rgb8)
        .map_err(|e| format!("JPEG encode: {e}"))?;
    Ok(out)
}

fn shrink_to(img: RgbImage, max_side: u32) -> Result<RgbImage, String> {
    let side = img.width.max(img.height);
    if side <= max_side {
        return Ok(img);
    }
    let s = max_side as f64 / side as f64;
    let (w, h) = (((img.width as f64 * s).round() as u32).max(1), ((img.height as f64 * s).round() as u32).max(1));
    let mut data = vec![0u8; w as usize * h as usize * 3];
    let full = CropBox { left: 0.0, top: 0.0, width: img.width as f64, height: img.height as f64 };
    let mut resizer = fast_image_resize::Resizer::new();
    resize_crop_into(&mut resizer, &img, full, ResizeFilter::Bicubic, &mut data, w, h)?;
    Ok(RgbImage::new(w, h, data))
}

/// Reads, checks and encodes one image file.
fn encode_file(path: &Path, mode: PayloadMode) -> Result<Encoded, String> {
    let bytes = fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    if bytes.is_empty() {
        return Err("zero-byte file".into());
    }
    let jpeg = decode::is_jpeg(&bytes);
    let img = if jpeg {
        decode::decode_jpeg(&bytes, true).map_err(|e| format!("corrupt or truncated JPEG: {e}"))?
    } else {
        decode::decode_other(&bytes)?
    };
    let (width, height) = (img.width, img.height);
    match mode {
        PayloadMode::Original if jpeg => Ok(Encoded { bytes, width, height }),
        PayloadMode::Original => Ok(Encoded { bytes: encode_jpeg(&img, 95)?, width, height }),
        PayloadMode::Reencode { max_side, quality } => {
            let small = shrink_to(img, max_side)?;
            Ok(Encoded { bytes: encode_jpeg(&small, quality)?, width: small.width, height: small.height })
        }
        PayloadMode::Raw => Ok(Encoded { bytes: img.data, width, height }),
    }
}

/// Streams records into `OUT/.<split>.pack.partial`; `finish` writes index and header and renames.
struct PackWriter {
    tmp: PathBuf,
    dest: PathBuf,
    file: BufWriter<File>,
    header: Header,
    payload_len: u64,
    entries: Vec<IndexEntry>,
}

impl PackWriter {
    fn create(dest: &Path, encoding: Encoding, channels: u32, classes: &[String]) -> Result<Self> {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.partial"));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        let names = classes.join("\n");
        if classes.iter().any(|c| c.contains('\n')) {
            return Err(Error::input(dest, 0, "a class name contains a newline"));
        }
        let classes_sec = Section { offset: format::HEADER_LEN as u64, len: names.len() as u64 };
        let header = Header {
            encoding,
            channels,
            num_classes: classes.len() as u32,
            num_records: 0,
            classes: classes_sec,
            payload: Section { offset: classes_sec.offset + classes_sec.len, len: 0 },
            index: Section::default(),
        };
        let io = |e| Error::io(&tmp, e);
        file.write_all(&[0u8; format::HEADER_LEN]).map_err(io)?; // placeholder: a killed run has no magic
        file.write_all(names.as_bytes()).map_err(io)?;
        Ok(PackWriter { tmp: tmp.clone(), dest: dest.to_path_buf(), file, header, payload_len: 0, entries: Vec::new() })
    }

    fn push(&mut self, rec: &Encoded, label: u32) -> Result<()> {
        let len = u32::try_from(rec.bytes.len())
            .map_err(|_| Error::input(&self.dest, 0, format!("a record of {} bytes exceeds 4 GiB", rec.bytes.len())))?;
        self.file.write_all(&rec.bytes).map_err(|e| Error::io(&self.tmp, e))?;
        self.entries.push(IndexEntry { offset: self.payload_len, len, label, width: rec.width, height: rec.height });
        self.payload_len += len as u64;
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        let io = |e| Error::io(&self.tmp, e);
        self.header.num_records = self.entries.len() as u64;
        self.header.payload.len = self.payload_len;
        self.header.index = Section {
            offset: self.header.payload.offset + self.payload_len,
            len: self.entries.len() as u64 * format::INDEX_ENTRY_LEN as u64,
        };
        for e in &self.entries {
            self.file.write_all(&format::encode_entry(e)).map_err(io)?;
        }
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file.write_all(&format::encode_header(&self.header)).map_err(io)?;
        let file = self.file.into_inner().map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        sync_parent_dir(&self.dest); // make the rename durable (best effort)
        Ok(self.header.index.offset + self.header.index.len)
    }
}

fn progress_bar(len: u64, split: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix:>5} [{elapsed_precise}] {wide_bar} {pos}/{len} images, {per_sec}, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(split.to_string());
    pb
}

fn prepare_split(split: &str, source: SplitSource, out: &Path, opts: &PrepareOptions) -> Result<SplitSummary> {
    let dest = out.join(format!("{split}.pack"));
    let report_path = out.join(format!("{split}.skipped.tsv"));
    let partial = out.join(format!(".{split}.pack.partial"));
    if partial.exists() {
        fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?; // an interrupted earlier run
    }
    if dest.exists() && !opts.force {
        if let Ok(ds) = PackedDataset::open(&dest) {
            let skipped = read_report(&report_path);
            return Ok(SplitSummary {
                split: split.into(),
                path: dest,
                images: ds.len() as u64,
                classes: ds.class_names().len(),
                bytes: ds.file_len(),
                skipped,
                report: report_path.exists().then_some(report_path),
                kept_existing: true,
            });
        }
    }
    let mut skipped = Vec::new();
    let (total, bytes, classes) = match source {
        SplitSource::Files { items, classes, listing_skips } => {
            skipped.extend(listing_skips);
            let encoding = if opts.payload == PayloadMode::Raw { Encoding::Raw } else { Encoding::Jpeg };
            let mut w = PackWriter::create(&dest, encoding, 3, &classes)?;
            let pb = progress_bar(items.len() as u64, split, opts.progress);
            for chunk in items.chunks(256) {
                let encoded: Vec<_> = chunk.par_iter().map(|(p, _)| encode_file(p, opts.payload)).collect();
                for ((path, label), res) in chunk.iter().zip(encoded) {
                    match res {
                        Ok(rec) => w.push(&rec, *label)?,
                        Err(reason) => skipped.push(Skipped { path: path.clone(), reason }),
                    }
                }
                pb.inc(chunk.len() as u64);
            }
            pb.finish_and_clear();
            let n = w.entries.len() as u64;
            (n, w.finish()?, classes.len())
        }
        SplitSource::Idx { set, classes } => {
            let mut w = PackWriter::create(&dest, Encoding::Raw, 1, &classes)?;
            let pb = progress_bar(set.len() as u64, split, opts.progress);
            for (i, &label) in set.labels.iter().enumerate() {
                let rec = Encoded { bytes: set.image(i).to_vec(), width: set.cols, height: set.rows };
                w.push(&rec, label as u32)?;
                if i % 4096 == 4095 {
                    pb.inc(4096);
                }
            }
            pb.finish_and_clear();
            (set.len() as u64, w.finish()?, classes.len())
        }
    };
    write_report(&report_path, &skipped)?;
    Ok(SplitSummary {
        split: split.into(),
        path: dest,
        images: total,
        classes,
        bytes,
        skipped,
        report: Some(report_path),
        kept_existing: false,
    })
}

fn write_report(path: &Path, skipped: &[Skipped]) -> Result<()> {
    let mut text = String::from("# path\treason\n");
    for s in skipped {
        text.push_str(&format!("{}\t{}\n", s.path.display(), s.reason.replace(['\n', '\t'], " ")));
    }
    fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn read_report(path: &Path) -> Vec<Skipped> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, r)| Skipped { path: PathBuf::from(p), reason: r.to_string() })
        .collect()
}
