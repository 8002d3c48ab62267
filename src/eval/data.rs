//! The images `eval`, `export` (and later `search`) feed a trained supernet: BN-calibration batches
//! (training split, training augmentation, spec 5.1) decoded once and reused for every subnet, and the
//! evaluation split (eval transform, spec 5.2), cached in memory when small enough and streamed from the
//! loader otherwise.
//!
//! Where the files are: `--data DIR` names a prepared folder (`train.pack` for calibration, `val.pack`
//! for evaluation, as `attnas prepare` writes them); `--train-data FILE` / `--eval-data FILE` name the
//! packed files directly and take precedence. The transforms and the loader's crop come from the
//! training config stored with the checkpoint (so a Fashion-MNIST run evaluates at its 28-pixel crop),
//! else from the published defaults (224 crop, AutoAugment), which fit an imported AttentiveNAS model;
//! `--crop` overrides the crop side.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::loader::Loader;
use crate::data::reader::PackedDataset;
use crate::error::{Error, Result};
use crate::space::Space;
use crate::train::config::{DataConfig, TrainConfig};
use crate::train::validate::{decode_batches, HostBatch};

/// Evaluation images kept decoded in memory (8-bit) up to this many bytes; larger splits are streamed.
pub const EVAL_CACHE_BYTES: usize = 2 << 30;

/// Where the packed files are, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct DataPaths {
    /// A folder with `train.pack` and `val.pack`.
    pub dir: Option<PathBuf>,
    /// Calibration images (overrides `dir/train.pack`).
    pub train: Option<PathBuf>,
    /// Evaluation images (overrides `dir/val.pack`).
    pub eval: Option<PathBuf>,
    /// The loader's crop side, overriding the checkpoint's config (e.g. 28 for an imported tiny model
    /// evaluated on Fashion-MNIST).
    pub crop: Option<u32>,
}

impl DataPaths {
    fn pick(&self, explicit: &Option<PathBuf>, file: &str, flag: &str) -> Result<PathBuf> {
        if let Some(p) = explicit {
            return if p.is_file() {
                Ok(p.clone())
            } else {
                Err(Error::usage(format!(
                    "{flag} {}: no such file (give a .pack file from `attnas prepare`)",
                    p.display()
                )))
            };
        }
        let Some(dir) = &self.dir else {
            return Err(Error::usage(format!("no {file}: pass --data DIR (a folder with {file}) or {flag} FILE")));
        };
        if dir.is_file() {
            return Err(Error::usage(format!(
                "--data {}: is a file; --data takes a prepared folder (train.pack + val.pack), or name the files with \
                 --train-data / --eval-data",
                dir.display()
            )));
        }
        let p = dir.join(file);
        if !p.is_file() {
            return Err(Error::usage(format!(
                "--data {}: no {file} there (make the folder with `attnas prepare`, or pass {flag} FILE)",
                dir.display()
            )));
        }
        Ok(p)
    }

    /// The calibration (training) file.
    pub fn train_file(&self) -> Result<PathBuf> {
        self.pick(&self.train, "train.pack", "--train-data")
    }

    /// The evaluation file.
    pub fn eval_file(&self) -> Result<PathBuf> {
        self.pick(&self.eval, "val.pack", "--eval-data")
    }
}

/// The loader settings of a checkpoint: the `data` section of its stored training config, or the
/// defaults when it has none (an imported checkpoint); `crop` overrides the crop side.
pub fn data_config_of(state: Option<&serde_json::Value>, crop: Option<u32>) -> Result<DataConfig> {
    let mut cfg = match state.and_then(|s| s.get("config")) {
        Some(c) => TrainConfig::from_value(c.clone())?.data,
        None => DataConfig::default(),
    };
    if let Some(c) = crop {
        if c == 0 {
            return Err(Error::usage("--crop must be positive"));
        }
        cfg.crop = c;
    }
    Ok(cfg)
}

/// Opens a packed file and checks that its classes match the space.
pub fn open_dataset(path: &Path, space: &Space) -> Result<Arc<PackedDataset>> {
    let ds = PackedDataset::open_expecting_classes(path, space.num_classes, &format!("the space '{}'", space.name))?;
    if ds.is_empty() {
        return Err(Error::usage(format!("{}: no records", path.display())));
    }
    Ok(Arc::new(ds))
}

/// How many calibration batches of which size, and the seed of their order and augmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CalibSettings {
    pub batches: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for CalibSettings {
    /// Spec 5.1, the eval config: 64 batches of 256 images.
    fn default() -> Self {
        CalibSettings { batches: 64, batch_size: 256, seed: 0 }
    }
}

/// Decodes the calibration batches once: the first `batches` shuffled batches of epoch 0 of a training
/// loader seeded with `seed` (training augmentation). Fewer are returned when the split is smaller.
pub fn calibration_batches(
    path: &Path,
    space: &Space,
    cfg: &DataConfig,
    settings: &CalibSettings,
) -> Result<Vec<HostBatch>> {
    calibration_batches_shard(path, space, cfg, settings, 0, 1)
}

/// Rank `rank`'s share of [`calibration_batches`]: batch `i` of that list goes to rank `i mod world`,
/// so the ranks together calibrate on exactly the batches one device would.
pub fn calibration_batches_shard(
    path: &Path,
    space: &Space,
    cfg: &DataConfig,
    settings: &CalibSettings,
    rank: usize,
    world: usize,
) -> Result<Vec<HostBatch>> {
    if settings.batches == 0 || settings.batch_size == 0 {
        return Err(Error::usage("--calib-batches and --calib-batch-size must be positive (or use --no-calib)"));
    }
    let ds = open_dataset(path, space)?;
    let loader = Loader::new(ds, cfg.loader_config(settings.batch_size, settings.seed))?;
    if loader.batches_per_epoch() == 0 {
        return Err(Error::usage(format!(
            "{}: {} records make no full calibration batch of {}; lower --calib-batch-size",
            path.display(),
            loader.len(),
            settings.batch_size
        )));
    }
    let batches = if world <= 1 {
        decode_batches(&loader, 0, settings.batches)?
    } else {
        let order = loader.epoch_indices(0);
        let (bs, total) = (settings.batch_size, settings.batches.min(loader.batches_per_epoch()));
        (rank..total)
            .step_by(world)
            .map(|i| {
                let b = loader.load_into(0, &order[i * bs..(i + 1) * bs], Vec::new());
                HostBatch { pixels: b.images, labels: b.labels, side: b.side as usize }
            })
            .collect()
    };
    let available = settings.batches.min(loader.batches_per_epoch());
    if available < settings.batches && rank == 0 {
        eprintln!(
            "note: {} holds {} calibration batches of {}; calibrating on those instead of {}",
            path.display(),
            available,
            settings.batch_size,
            settings.batches
        );
    }
    Ok(batches)
}

/// The evaluation images: decoded once when they fit [`EVAL_CACHE_BYTES`], else re-read per subnet.
pub enum EvalSource {
    Cached(Vec<HostBatch>),
    Streamed(Loader),
}

impl EvalSource {
    /// The first `max_images` records (all when `None`) of `path` with the eval transform.
    pub fn open(
        path: &Path,
        space: &Space,
        cfg: &DataConfig,
        batch_size: usize,
        max_images: Option<usize>,
    ) -> Result<EvalSource> {
        Self::open_shard(path, space, cfg, batch_size, max_images, 0, 1)
    }

    /// Rank `rank`'s share of [`EvalSource::open`]'s images (no overlap, every image on one rank).
    pub fn open_shard(
        path: &Path,
        space: &Space,
        cfg: &DataConfig,
        batch_size: usize,
        max_images: Option<usize>,
        rank: usize,
        world: usize,
    ) -> Result<EvalSource> {
        if batch_size == 0 || max_images == Some(0) {
            return Err(Error::usage("--batch-size and --max-images must be positive"));
        }
        let ds = open_dataset(path, space)?;
        let n = max_images.map_or(ds.len(), |m| m.min(ds.len()));
        let loader_cfg = crate::data::loader::LoaderConfig { rank, world, ..cfg.eval_loader_config(batch_size) };
        let loader = Loader::with_subset(ds, loader_cfg, (0..n as u32).collect())?;
        let side = cfg.crop as usize;
        if n * side * side * 3 <= EVAL_CACHE_BYTES {
            Ok(EvalSource::Cached(decode_batches(&loader, 0, usize::MAX)?))
        } else {
            Ok(EvalSource::Streamed(loader))
        }
    }

    /// Number of batches per pass.
    pub fn num_batches(&self) -> usize {
        match self {
            EvalSource::Cached(b) => b.len(),
            EvalSource::Streamed(l) => l.batches_per_epoch(),
        }
    }

    /// Calls `f` on every batch, in order.
    pub fn for_each(&self, mut f: impl FnMut(&HostBatch) -> Result<()>) -> Result<()> {
        match self {
            EvalSource::Cached(batches) => batches.iter().try_for_each(f),
            EvalSource::Streamed(loader) => {
                for batch in loader.epoch(0)? {
                    let host = HostBatch {
                        pixels: batch.images.clone(),
                        labels: batch.labels.clone(),
                        side: batch.side as usize,
                    };
                    f(&host)?;
                }
                Ok(())
            }
        }
    }
}
