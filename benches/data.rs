//! Data pipeline throughput: images/s for decode + RandomResizedCrop (bicubic) + flip + AutoAugment from
//! a packed file of the real ImageNet sample, on all cores and on one, reported per core. Not a timed test.
//!
//! `cargo bench --bench data` (ATTNAS_BENCH_IMAGES=N limits the images per run, default 2000;
//! ATTNAS_BENCH_PACK=FILE uses an existing packed file instead of preparing the sample).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use attnas::data::loader::{Loader, LoaderConfig};
use attnas::data::prepare::{prepare, PayloadMode, PrepareOptions};
use attnas::data::PackedDataset;

fn packed_file() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ATTNAS_BENCH_PACK") {
        return Some(PathBuf::from(p));
    }
    let Some(src) = attnas::data::shared_data_dir().map(|d| d.join("imagenet-sample-1000")) else {
        println!("skipped: data bench: ../shared/data/imagenet-sample-1000 not found");
        return None;
    };
    let out = std::env::temp_dir().join("attnas-bench-data");
    let opts = PrepareOptions { payload: PayloadMode::Original, progress: false, ..Default::default() };
    match prepare(&src, &out, &opts) {
        Ok(_) => Some(out.join("train.pack")),
        Err(e) => {
            println!("skipped: data bench: prepare failed: {e}");
            None
        }
    }
}

fn run(ds: &Arc<PackedDataset>, threads: usize, images: usize, label: &str, mut cfg: LoaderConfig) {
    cfg.threads = threads;
    cfg.drop_last = false;
    let loader = match Loader::new(ds.clone(), cfg) {
        Ok(l) => l,
        Err(e) => {
            println!("{label}: loader: {e}");
            return;
        }
    };
    let threads = if threads == 0 { rayon::current_num_threads() } else { threads };
    // Warm-up (page cache, allocator), then timed epochs until `images` are done.
    let _ = loader.epoch(0).unwrap().take(1).count();
    let start = Instant::now();
    let mut done = 0usize;
    let mut epoch = 1;
    while done < images {
        let it = loader.epoch(epoch).unwrap();
        for b in it {
            done += b.len();
            if done >= images {
                break;
            }
        }
        epoch += 1;
    }
    let s = start.elapsed().as_secs_f64();
    let rate = done as f64 / s;
    println!(
        "{label:<44} {threads:>3} threads: {rate:>8.1} images/s, {:>7.1} images/s per core",
        rate / threads as f64
    );
}

/// Microseconds per AutoAugment op on a 224x224 image (one thread, best of 30), to see what it costs.
fn autoaugment_ops() {
    use attnas::data::autoaugment::{apply_op, Op, Resample};
    let (w, h) = (224u32, 224u32);
    let base: Vec<u8> = (0..w * h * 3).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let ops: [(Op, f64, Resample); 12] = [
        (Op::Equalize, 0.0, Resample::Nearest),
        (Op::AutoContrast, 0.0, Resample::Nearest),
        (Op::Solarize, 128.0, Resample::Nearest),
        (Op::Posterize, 5.0, Resample::Nearest),
        (Op::Color, 1.5, Resample::Nearest),
        (Op::Contrast, 1.5, Resample::Nearest),
        (Op::Rotate, 20.0, Resample::Nearest),
        (Op::Rotate, 20.0, Resample::Bilinear),
        (Op::Rotate, 20.0, Resample::Bicubic),
        (Op::ShearX, 0.2, Resample::Bicubic),
        (Op::ShearY, 0.2, Resample::Bilinear),
        (Op::TranslateYRel, 0.3, Resample::Bicubic),
    ];
    let mut line = String::from("autoaugment op, us per 224x224 image:");
    for (op, arg, r) in ops {
        let mut img = base.clone();
        // The fastest of 30 runs: robust to a shared, busy machine.
        let mut us = f64::MAX;
        for _ in 0..30 {
            img.copy_from_slice(&base);
            let start = Instant::now();
            apply_op(&mut img, w, h, op, arg, r);
            us = us.min(start.elapsed().as_secs_f64() * 1e6);
        }
        line.push_str(&format!(" {op:?}/{r:?} {us:.0};"));
    }
    println!("{line}");
}

/// Median time per image of each stage on one thread (robust to a busy machine): decode, crop+resize+flip,
/// AutoAugment. Their sum bounds the per-core rate: images/s per core <= 1e6 / total_us.
fn stage_breakdown(ds: &PackedDataset) {
    use attnas::data::augment::{transform_into, TransformConfig};
    use attnas::data::autoaugment::apply_v0;
    use attnas::data::decode::decode_record;
    use attnas::data::rng::sample_rng;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut resizer = fast_image_resize::Resizer::new();
    let cfg = TransformConfig { autoaugment: false, ..TransformConfig::train(224) };
    let mut out = vec![0u8; 224 * 224 * 3];
    let (mut dec, mut crop, mut aa) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ds.len().min(300) {
        let Ok(rec) = ds.get(i) else { continue };
        let t0 = Instant::now();
        let Ok(img) = decode_record(&rec, ds.encoding(), ds.channels()) else { continue };
        let t1 = Instant::now();
        let mut rng = sample_rng(0, 0, i as u64);
        if transform_into(&mut resizer, &img, &cfg, &mut rng, &mut out).is_err() {
            continue;
        }
        let t2 = Instant::now();
        apply_v0(&mut out, 224, 224, &mut rng);
        let t3 = Instant::now();
        dec.push((t1 - t0).as_secs_f64() * 1e6);
        crop.push((t2 - t1).as_secs_f64() * 1e6);
        aa.push((t3 - t2).as_secs_f64() * 1e6);
    }
    if dec.is_empty() {
        return;
    }
    let mean_aa = aa.iter().sum::<f64>() / aa.len() as f64;
    let (d, c, a) = (median(&mut dec), median(&mut crop), median(&mut aa));
    println!(
        "stages, 1 thread, median us per image over {}: decode {d:.0}, crop+resize+flip {c:.0}, AutoAugment {a:.0} \
         (mean {mean_aa:.0}); bound {:.0} images/s per core",
        dec.len(),
        1e6 / (d + c + mean_aa)
    );
}

fn main() {
    autoaugment_ops();
    let Some(path) = packed_file() else { return };
    let ds = match PackedDataset::open(&path) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            println!("skipped: data bench: {e}");
            return;
        }
    };
    let images: usize = std::env::var("ATTNAS_BENCH_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("data bench: {} ({} images), {images} images per run, {cores} cores", path.display(), ds.len());
    stage_breakdown(&ds);
    let train = LoaderConfig::train(64, 224, 0);
    let mut no_aa = train.clone();
    no_aa.transform.autoaugment = false;
    let eval = LoaderConfig::eval(64, 224);
    for threads in [1, cores] {
        run(
            &ds,
            threads,
            images / if threads == 1 { 4 } else { 1 },
            "train 224: decode+RRC+flip+AutoAugment",
            train.clone(),
        );
        run(
            &ds,
            threads,
            images / if threads == 1 { 4 } else { 1 },
            "train 224: decode+RRC+flip (no AutoAugment)",
            no_aa.clone(),
        );
        run(
            &ds,
            threads,
            images / if threads == 1 { 4 } else { 1 },
            "eval 224: decode+resize 256+centre crop",
            eval.clone(),
        );
    }
}
