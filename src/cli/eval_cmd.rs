//! `attnas eval`: BN recalibration and top-1 / top-5 of subnets of a trained supernet (spec 5.1, 5.2),
//! as a table or JSON. The data and calibration flags are shared with `attnas export`.

use std::path::PathBuf;

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::SupernetOps;
use crate::dist::launch::{plan, run_ranked, RankArgs};
use crate::error::{Error, Result};
use crate::eval::data::{CalibSettings, DataPaths};
use crate::eval::evaluate::{run_eval, DumpPaths, EvalJob, EvalReport};

/// Where the images come from.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Prepared data folder: train.pack (BN calibration) and val.pack (evaluation), as `attnas prepare` writes.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Packed file of calibration (training) images; overrides DIR/train.pack.
    #[arg(long)]
    pub train_data: Option<PathBuf>,
    /// Packed file of evaluation images; overrides DIR/val.pack.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Side of the loader's crop (default: the checkpoint's training config, else 224).
    #[arg(long)]
    pub crop: Option<u32>,
}

impl DataArgs {
    pub fn paths(&self) -> DataPaths {
        DataPaths {
            dir: self.data.clone(),
            train: self.train_data.clone(),
            eval: self.eval_data.clone(),
            crop: self.crop,
        }
    }
}

/// BN recalibration (spec 5.1: 64 batches of 256 training images with training augmentation).
#[derive(Args, Debug, Clone)]
pub struct CalibArgs {
    /// Training batches forwarded to recalibrate the BN running statistics (cumulative average).
    #[arg(long, default_value_t = 64)]
    pub calib_batches: usize,
    /// Images per calibration batch.
    #[arg(long, default_value_t = 256)]
    pub calib_batch_size: usize,
    /// Seed of the calibration batches' order and augmentation (same seed, same numbers).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl CalibArgs {
    pub fn settings(&self) -> CalibSettings {
        CalibSettings { batches: self.calib_batches, batch_size: self.calib_batch_size, seed: self.seed }
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint: a run folder, its checkpoints/ folder, a ckpt-N.safetensors, or any supernet safetensors.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Subnets, comma-separated and/or repeated: names of the space (a0..a6, min, max), arch files (JSON,
    /// YAML or an AttentiveNAS dict), or inline archs {...}. A value naming a file is that one file.
    #[arg(long, required = true)]
    pub arch: Vec<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Space YAML or built-in name (attentivenas, tiny); default: the space stored with the checkpoint.
    #[arg(long)]
    pub config: Option<String>,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// Evaluate with the checkpoint's stored running statistics (no recalibration). A training checkpoint
    /// holds those of the last subnet its end-of-epoch validation calibrated (the min subnet), as the
    /// original's checkpoints do.
    #[arg(long)]
    pub no_calib: bool,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Evaluate on the first N images of the evaluation split only.
    #[arg(long)]
    pub max_images: Option<usize>,
    /// auto (the GPU when found, else the CPU), cpu, cuda, cuda:N, or emu (SIMT emulator builds).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// One arch only: write the evaluation images as the subnet sees them ([N, 3, r, r], after the
    /// model's resize, normalised) to this .npy file (use with --max-images).
    #[arg(long)]
    pub dump_inputs: Option<PathBuf>,
    /// One arch only: write its eval-mode logits on those images ([N, classes]) to this .npy file.
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    /// Evaluate the supernet's forward with BN layers instead of the BN-folded static subnet (the
    /// deployed model, the default).
    #[arg(long)]
    pub no_fold_bn: bool,
    /// Storage of the activations: auto (bf16 on a GPU of compute capability >= 8.0, else fp32), fp32 or
    /// bf16. bf16 evaluates the supernet's BN forward with bf16 activations (as training validates); the
    /// BN-folded model is evaluated in fp32.
    #[arg(long, default_value = "auto", value_parser = crate::backend::Precision::parse)]
    pub precision: crate::backend::Precision,
    #[command(flatten)]
    pub ranks: RankArgs,
}

struct Job(EvalJob);

impl BackendJob for Job {
    type Output = EvalReport;
    fn run<B: SupernetOps>(self, backend: &B) -> Result<EvalReport> {
        run_eval(backend, &self.0)
    }
}

pub fn run(a: &EvalArgs) -> Result<()> {
    if a.batch_size == 0 {
        return Err(Error::usage("--batch-size must be positive"));
    }
    let job = EvalJob {
        ckpt: a.ckpt.clone(),
        config: a.config.clone(),
        archs: a.arch.clone(),
        data: a.data.paths(),
        calib: if a.no_calib { None } else { Some(a.calib.settings()) },
        batch_size: a.batch_size,
        max_images: a.max_images,
        progress: !a.quiet,
        dump: DumpPaths { inputs: a.dump_inputs.clone(), logits: a.dump_logits.clone() },
        fold_bn: !a.no_fold_bn,
        precision: a.precision,
        ranks: crate::dist::single(),
    };
    let outcome = run_ranked(plan(&a.ranks, a.device)?, a.device, &|ranks, device| {
        run_on(device, Job(EvalJob { progress: job.progress && ranks.is_leader(), ranks, ..job.clone() }))
    })?;
    let Some(report) = outcome.leader() else { return Ok(()) };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::Other(e.to_string()))?);
        return Ok(());
    }
    match &report.calibration {
        Some(c) => println!(
            "BN recalibration: {} batches x {} = {} training images (seed {}) per subnet",
            c.batches, c.batch_size, c.images, c.seed
        ),
        None => println!("BN recalibration: off (--no-calib: the checkpoint's running statistics)"),
    }
    let forward = match (report.bn_folded, report.precision) {
        (true, _) => "BN folded into the convs (the deployed model), fp32".to_string(),
        (false, "bf16") => "BN layers, bf16 activations (the folded model is fp32: --precision fp32)".to_string(),
        (false, p) => format!("BN layers (--no-fold-bn), {p}"),
    };
    println!("forward: {forward}");
    println!(
        "{:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "arch", "MFLOPs", "params(M)", "top-1", "top-5", "images", "seconds"
    );
    for r in &report.results {
        println!(
            "{:<16} {:>10.2} {:>10.3} {:>7.2}% {:>7.2}% {:>8} {:>8.1}",
            r.name, r.mflops, r.mparams, r.top1, r.top5, r.images, r.seconds
        );
    }
    Ok(())
}
