//! `attnas export`: one subnet as a standalone model folder (safetensors weights with recalibrated BN,
//! arch.json, ONNX); see `crate::eval::export`.

use std::path::PathBuf;

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use super::eval_cmd::CalibArgs;
use crate::backend::SupernetOps;
use crate::error::{Error, Result};
use crate::eval::data::DataPaths;
use crate::eval::export::{run_export, ExportJob, ExportReport};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint: a run folder, its checkpoints/ folder, a ckpt-N.safetensors, or any supernet safetensors.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// The subnet: a name of the space (a0..a6, min, max), an arch file, or inline JSON.
    #[arg(long)]
    pub arch: String,
    /// Output folder: model.safetensors, arch.json, model.onnx.
    #[arg(long)]
    pub out: PathBuf,
    /// Prepared data folder: its train.pack gives the BN-recalibration images.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Packed file of calibration (training) images; overrides DIR/train.pack.
    #[arg(long)]
    pub train_data: Option<PathBuf>,
    /// Side of the loader's crop (default: the checkpoint's training config, else 224).
    #[arg(long)]
    pub crop: Option<u32>,
    /// Space YAML or built-in name; default: the space stored with the checkpoint.
    #[arg(long)]
    pub config: Option<String>,
    #[command(flatten)]
    pub calib: CalibArgs,
    /// auto (the GPU when found, else the CPU), cpu, cuda, cuda:N, or emu (SIMT emulator builds).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Keep the BN layers (AttentiveNAS's static-model state dict; ONNX BatchNormalization nodes) instead
    /// of folding them into the convs.
    #[arg(long)]
    pub no_fold_bn: bool,
}

struct Job(ExportJob);

impl BackendJob for Job {
    type Output = ExportReport;
    fn run<B: SupernetOps>(self, backend: &B) -> Result<ExportReport> {
        run_export(backend, &self.0)
    }
}

pub fn run(a: &ExportArgs) -> Result<()> {
    let job = ExportJob {
        ckpt: a.ckpt.clone(),
        config: a.config.clone(),
        arch: a.arch.clone(),
        out: a.out.clone(),
        data: DataPaths { dir: a.data.clone(), train: a.train_data.clone(), eval: None, crop: a.crop },
        calib: a.calib.settings(),
        progress: !a.quiet,
        fold_bn: !a.no_fold_bn,
    };
    let r = run_on(a.device, Job(job))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?);
        return Ok(());
    }
    println!(
        "exported {} ({:.2} MFLOPs, {:.3} M params, resolution {}), BN recalibrated on {} images{}",
        r.arch_name,
        r.mflops,
        r.mparams,
        r.arch.resolution,
        r.calib_images,
        if r.bn_folded { " and folded into the convs" } else { " (BN layers kept)" }
    );
    println!("  weights: {} ({} tensors)", r.weights.display(), r.tensors);
    println!("  arch:    {}", r.arch_json.display());
    println!("  onnx:    {}", r.onnx.display());
    Ok(())
}
