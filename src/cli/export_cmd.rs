//! `attnas export`: one subnet as a standalone model folder (safetensors weights with recalibrated BN,
//! arch.json, ONNX); see `crate::eval::export`. Several `--arch` items export one after another, each
//! into its own sub-folder (each recalibrates on the same seeded calibration batches, decoded per arch).

use std::path::{Path, PathBuf};

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use super::eval_cmd::CalibArgs;
use crate::backend::SupernetOps;
use crate::error::{Error, Result};
use crate::eval::data::DataPaths;
use crate::eval::export::{run_export, ExportJob, ExportReport};
use crate::space::arch::split_arch_list;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint: a run folder, its checkpoints/ folder, a ckpt-N.safetensors, or any supernet safetensors.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// The subnet: a name of the space (a0..a6, min, max), an arch file, or an inline arch {...}. Several
    /// (comma-separated and/or repeated) export each into OUT/<name, file stem or inline-N>/.
    #[arg(long, required = true)]
    pub arch: Vec<String>,
    /// Output folder: model.safetensors, arch.json, model.onnx (one sub-folder per arch when several).
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
    /// Storage of the BN-calibration forward's activations and of model.safetensors' tensors: fp32 (the
    /// default: an exported model is fp32 unless asked), bf16 (tensors rounded to nearest even, the BN
    /// statistics calibrated with bf16 activations), or auto (bf16 on a GPU of compute capability >= 8.0).
    /// model.onnx stays fp32 (onnxruntime's CPU kernels have no bf16 convolutions).
    #[arg(long, default_value = "fp32", value_parser = crate::backend::Precision::parse)]
    pub precision: crate::backend::Precision,
}

struct Job(ExportJob);

impl BackendJob for Job {
    type Output = ExportReport;
    fn run<B: SupernetOps>(self, backend: &B) -> Result<ExportReport> {
        run_export(backend, &self.0)
    }
}

/// The `--arch` items and the folder each is exported to: OUT itself for one arch, else OUT/<label> with
/// the label a name as written, an arch file's stem, or `inline-N`.
fn export_targets(archs: &[String], out: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut items = Vec::new();
    for v in archs {
        items.extend(split_arch_list(v)?);
    }
    if items.len() <= 1 {
        return Ok(items.into_iter().map(|i| (i, out.to_path_buf())).collect());
    }
    let mut inline = 0;
    let mut targets: Vec<(String, PathBuf)> = Vec::new();
    for item in items {
        let dir = if item.starts_with('{') {
            inline += 1;
            format!("inline-{inline}")
        } else if Path::new(&item).is_file() {
            Path::new(&item).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| item.clone())
        } else {
            item.clone()
        };
        let dir = out.join(dir);
        if let Some((other, _)) = targets.iter().find(|(_, d)| *d == dir) {
            return Err(Error::usage(format!(
                "--arch: '{other}' and '{item}' would both export to {}; export them separately",
                dir.display()
            )));
        }
        targets.push((item, dir));
    }
    Ok(targets)
}

pub fn run(a: &ExportArgs) -> Result<()> {
    let targets = export_targets(&a.arch, &a.out)?;
    let n = targets.len();
    let mut reports = Vec::with_capacity(n);
    for (i, (item, out)) in targets.into_iter().enumerate() {
        let job = ExportJob {
            ckpt: a.ckpt.clone(),
            config: a.config.clone(),
            arch: item.clone(),
            out,
            data: DataPaths { dir: a.data.clone(), train: a.train_data.clone(), eval: None, crop: a.crop },
            calib: a.calib.settings(),
            progress: !a.quiet,
            fold_bn: !a.no_fold_bn,
            precision: a.precision,
        };
        let r = run_on(a.device, Job(job)).map_err(|e| match e {
            Error::Usage(m) if n > 1 => Error::usage(format!("--arch item {} of {n} ('{item}'): {m}", i + 1)),
            other => other,
        })?;
        if !a.json {
            print_report(&r);
        }
        reports.push(r);
    }
    if a.json {
        let text = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        println!("{}", text.map_err(|e| Error::Other(e.to_string()))?);
    }
    Ok(())
}

fn print_report(r: &ExportReport) {
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
}
