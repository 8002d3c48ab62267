//! The images a search scores subnets on, decoded once and reused for every candidate (spec 6.2; the
//! original re-read its loader per subnet): BN-calibration batches from the training split with the
//! training augmentation (spec 5.1: 32 x 256 images), and a held-out subset of the eval split with the
//! evaluation transform (a seeded random subset of `eval_images`, or all of it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::data::loader::Loader;
use crate::data::reader::PackedDataset;
use crate::error::{Error, Result};
use crate::train::config::DataConfig;
use crate::train::validate::{decode_batches, HostBatch};

/// How many images are used, and how they are batched.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSettings {
    pub calib_batches: usize,
    pub calib_batch_size: usize,
    /// Held-out images; 0 = the whole eval split.
    pub eval_images: usize,
    pub eval_batch_size: usize,
    /// Seeds the calibration order and augmentation and the held-out subset.
    pub seed: u64,
}

/// The packed training file and the eval file: `data` is a .pack (then `eval` is required) or a folder
/// with `train.pack` and `val.pack`; `eval` overrides the eval file.
pub fn resolve_paths(data: &Path, eval: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let train = crate::data::train_pack_of(data)?;
    let eval = match eval {
        Some(p) => p.to_path_buf(),
        None => train.with_file_name("val.pack"),
    };
    if !eval.is_file() {
        return Err(Error::usage(format!(
            "no eval split at {}: candidates are scored on held-out images; pass --eval-data FILE.pack (or put \
             val.pack beside {})",
            eval.display(),
            train.display()
        )));
    }
    Ok((train, eval))
}

/// The decoded batches.
pub struct SearchData {
    pub calib: Vec<HostBatch>,
    pub eval: Vec<HostBatch>,
}

impl SearchData {
    pub fn calib_images(&self) -> usize {
        self.calib.iter().map(HostBatch::len).sum()
    }
    pub fn eval_images(&self) -> usize {
        self.eval.iter().map(HostBatch::len).sum()
    }
    /// Host memory the decoded images take.
    pub fn bytes(&self) -> usize {
        self.calib.iter().chain(&self.eval).map(HostBatch::bytes).sum()
    }
}

/// The two datasets, opened and checked against the class count.
pub struct SearchFiles {
    pub train: Arc<PackedDataset>,
    pub eval: Arc<PackedDataset>,
}

impl SearchFiles {
    pub fn open(train: &Path, eval: &Path, classes: usize) -> Result<SearchFiles> {
        let open = |p: &Path| PackedDataset::open_expecting_classes(p, classes, "the supernet").map(Arc::new);
        Ok(SearchFiles { train: open(train)?, eval: open(eval)? })
    }

    /// What the scores depend on (for the state's identity): file names, record counts, transforms.
    pub fn identity(&self, cfg: &DataConfig, s: &DataSettings) -> Value {
        let name = |d: &PackedDataset| d.path().file_name().map(|n| n.to_string_lossy().to_string());
        json!({
            "train": name(&self.train), "train_records": self.train.len(),
            "eval": name(&self.eval), "eval_records": self.eval.len(),
            "transform": serde_json::to_value(cfg).unwrap_or(Value::Null),
            "calib_batches": s.calib_batches, "calib_batch_size": s.calib_batch_size,
            "eval_images": s.eval_images, "seed": s.seed,
        })
    }

    /// Decodes the calibration batches and the held-out subset.
    pub fn decode(&self, cfg: &DataConfig, s: &DataSettings) -> Result<SearchData> {
        if s.calib_batches == 0 || s.calib_batch_size == 0 || s.eval_batch_size == 0 {
            return Err(Error::usage("--calib-batches, --calib-batch-size and --eval-batch-size must be >= 1"));
        }
        let calib_loader = Loader::new(self.train.clone(), cfg.loader_config(s.calib_batch_size, s.seed))?;
        let calib = decode_batches(&calib_loader, 0, s.calib_batches)?;
        if calib.is_empty() {
            return Err(Error::usage(format!(
                "{} has {} records: not one calibration batch of {}; lower --calib-batch-size",
                self.train.path().display(),
                self.train.len(),
                s.calib_batch_size
            )));
        }
        let n = self.eval.len();
        let mut indices: Vec<u32> = (0..n as u32).collect();
        if s.eval_images > 0 && s.eval_images < n {
            indices.shuffle(&mut rand::rngs::StdRng::seed_from_u64(s.seed ^ 0x4845_4c44));
            indices.truncate(s.eval_images);
            indices.sort_unstable();
        }
        let eval_loader = Loader::with_subset(self.eval.clone(), cfg.eval_loader_config(s.eval_batch_size), indices)?;
        let eval = decode_batches(&eval_loader, 0, usize::MAX)?;
        Ok(SearchData { calib, eval })
    }
}
