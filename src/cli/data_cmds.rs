//! `attnas prepare SRC OUT` (build a packed dataset) and `attnas data inspect FILE [--index i]` (print
//! the header and a summary, write a contact sheet PNG of augmented samples: what the network sees).

use std::path::PathBuf;
use std::sync::Arc;

use crate::data::loader::{Loader, LoaderConfig};
use crate::data::prepare::{self, PayloadMode, PrepareOptions};
use crate::data::PackedDataset;
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// ImageNet-style folder (train/<class>/*, optional val/) or a folder of IDX files (Fashion-MNIST).
    pub src: PathBuf,
    /// Output folder: <split>.pack and <split>.skipped.tsv.
    pub out: PathBuf,
    /// Payload: `original` JPEG bytes, `reencode` (see --max-side, --quality) or `raw` pixels.
    #[arg(long, default_value = "original")]
    pub payload: String,
    /// Longest side of re-encoded JPEGs.
    #[arg(long, default_value_t = 320)]
    pub max_side: u32,
    /// Quality of re-encoded JPEGs.
    #[arg(long, default_value_t = 90)]
    pub quality: u8,
    /// Label file for a flat val/ folder: lines `<image> <class folder or index>`.
    #[arg(long)]
    pub val_labels: Option<PathBuf>,
    /// The ILSVRC2012 devkit's data/ILSVRC2012_validation_ground_truth.txt, for a flat val/ of
    /// ILSVRC2012_val_*.JPEG (found by itself under SRC/ILSVRC2012_devkit_t12/data/).
    #[arg(long)]
    pub val_ground_truth: Option<PathBuf>,
    /// The devkit's data/meta.mat (maps its ILSVRC2012_IDs to WNIDs), or a text file with the WNID of
    /// ILSVRC2012_ID i on line i; default: meta.mat beside --val-ground-truth.
    #[arg(long)]
    pub devkit_meta: Option<PathBuf>,
    /// Rebuild splits that are already complete.
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run_prepare(a: &PrepareArgs) -> Result<()> {
    let payload = match a.payload.as_str() {
        "original" => PayloadMode::Original,
        "reencode" => {
            if a.max_side == 0 || a.quality == 0 || a.quality > 100 {
                return Err(Error::usage(format!(
                    "--max-side {} must be positive and --quality {} in 1..=100",
                    a.max_side, a.quality
                )));
            }
            PayloadMode::Reencode { max_side: a.max_side, quality: a.quality }
        }
        "raw" => PayloadMode::Raw,
        other => return Err(Error::usage(format!("--payload {other}: expected original, reencode or raw"))),
    };
    let opts = PrepareOptions {
        payload,
        val_labels: a.val_labels.clone(),
        val_ground_truth: a.val_ground_truth.clone(),
        devkit_meta: a.devkit_meta.clone(),
        force: a.force,
        progress: !a.quiet,
    };
    let start = std::time::Instant::now();
    let summaries = prepare::prepare(&a.src, &a.out, &opts)?;
    for s in &summaries {
        let state = if s.kept_existing { " (already complete, kept; --force rebuilds)" } else { "" };
        println!(
            "{}: {} images, {} classes, {:.1} MiB, {} skipped -> {}{state}",
            s.split,
            s.images,
            s.classes,
            s.bytes as f64 / (1u64 << 20) as f64,
            s.skipped.len(),
            s.path.display()
        );
        for k in s.skipped.iter().take(5) {
            println!("  skipped {}: {}", k.path.display(), k.reason);
        }
        if let Some(r) = &s.report {
            if !s.skipped.is_empty() {
                println!("  all skipped files: {}", r.display());
            }
        }
    }
    println!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Print a packed file's header and summary; write a contact sheet of augmented samples.
    Inspect(InspectArgs),
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    pub file: PathBuf,
    /// Show this record and fill the sheet with augmentations of it (default: different images).
    #[arg(long)]
    pub index: Option<usize>,
    /// Contact sheet PNG (default: FILE with extension .sheet.png).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Tiles per side of the sheet.
    #[arg(long, default_value_t = 4)]
    pub grid: u32,
    #[arg(long, default_value_t = 224)]
    pub crop: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Show the evaluation transform instead of training augmentation.
    #[arg(long)]
    pub eval: bool,
}

pub fn run_data(a: &DataArgs) -> Result<()> {
    match &a.command {
        DataCommand::Inspect(i) => run_inspect(i),
    }
}

fn run_inspect(a: &InspectArgs) -> Result<()> {
    let ds = Arc::new(PackedDataset::open(&a.file)?);
    let h = ds.header();
    println!("{}: attnas packed dataset, format version {}", a.file.display(), crate::data::format::VERSION);
    println!(
        "  {} records, {} classes, payload {} ({} channels), {:.1} MiB payload, {:.1} MiB file",
        ds.len(),
        ds.class_names().len(),
        h.encoding.name(),
        h.channels,
        h.payload.len as f64 / (1u64 << 20) as f64,
        ds.file_len() as f64 / (1u64 << 20) as f64
    );
    let names = ds.class_names();
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    println!("  classes: {}{}", shown.join(", "), if names.len() > 5 { ", ..." } else { "" });
    if !ds.is_empty() {
        let mut widths: Vec<u32> = ds.entries().iter().map(|e| e.width).collect();
        let mut heights: Vec<u32> = ds.entries().iter().map(|e| e.height).collect();
        let mut lens: Vec<u32> = ds.entries().iter().map(|e| e.len).collect();
        widths.sort_unstable();
        heights.sort_unstable();
        lens.sort_unstable();
        let mid = ds.len() / 2;
        println!(
            "  width {}..{} (median {}), height {}..{} (median {}), record bytes {}..{} (median {})",
            widths[0],
            widths[ds.len() - 1],
            widths[mid],
            heights[0],
            heights[ds.len() - 1],
            heights[mid],
            lens[0],
            lens[ds.len() - 1],
            lens[mid]
        );
        let mut per_class = vec![0usize; names.len()];
        for e in ds.entries() {
            per_class[e.label as usize] += 1;
        }
        let (lo, hi) = (per_class.iter().min().copied().unwrap_or(0), per_class.iter().max().copied().unwrap_or(0));
        println!("  images per class: {lo}..{hi}");
    }
    if let Some(i) = a.index {
        let r = ds.get(i)?;
        let class = names.get(r.label as usize).map_or("?", String::as_str);
        println!("  record {i}: label {} ({class}), {}x{}, {} bytes", r.label, r.width, r.height, r.bytes.len());
    }
    if ds.is_empty() || a.grid == 0 {
        return Ok(());
    }
    let tiles = (a.grid * a.grid) as usize;
    let mut cfg = if a.eval { LoaderConfig::eval(tiles, a.crop) } else { LoaderConfig::train(tiles, a.crop, a.seed) };
    cfg.drop_last = false;
    let loader = Loader::new(ds.clone(), cfg)?;
    let side = a.crop as usize;
    let per = side * side * 3;
    // Tile k: augmentation k of the chosen image (epoch k), or image k of a shuffled epoch 0.
    let mut tiles_px: Vec<u8> = Vec::with_capacity(per * tiles);
    let mut failed = Vec::new();
    if let Some(i) = a.index {
        for k in 0..tiles {
            let b = loader.load_into(k as u64, &[i as u32], Vec::new());
            failed.extend(b.failed);
            tiles_px.extend_from_slice(&b.images);
        }
    } else {
        let order: Vec<u32> = loader.epoch_indices(0).into_iter().take(tiles).collect();
        let b = loader.load_into(0, &order, Vec::new());
        failed.extend(b.failed);
        tiles_px.extend_from_slice(&b.images);
    }
    for (idx, msg) in &failed {
        println!("  record {idx} failed to decode: {msg}");
    }
    let gap = 4usize;
    let n_tiles = tiles_px.len() / per;
    let g = a.grid as usize;
    let sheet_side = g * side + (g + 1) * gap;
    let mut sheet = image::RgbImage::from_pixel(sheet_side as u32, sheet_side as u32, image::Rgb([255, 255, 255]));
    for t in 0..n_tiles {
        let (ox, oy) = (gap + (t % g) * (side + gap), gap + (t / g) * (side + gap));
        for y in 0..side {
            for x in 0..side {
                let p = &tiles_px[t * per + (y * side + x) * 3..][..3];
                sheet.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb([p[0], p[1], p[2]]));
            }
        }
    }
    let out = a.out.clone().unwrap_or_else(|| a.file.with_extension("sheet.png"));
    sheet.save(&out).map_err(|e| Error::Other(format!("{}: writing the contact sheet: {e}", out.display())))?;
    println!(
        "contact sheet: {} ({} tiles of {}x{}, {})",
        out.display(),
        n_tiles,
        side,
        side,
        if a.eval { "evaluation transform" } else { "training augmentation" }
    );
    Ok(())
}
