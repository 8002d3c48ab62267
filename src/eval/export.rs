//! `attnas export`: one subnet as a standalone model. Loads the supernet, recalibrates BN for the subnet
//! on the training images (spec 5.1), cuts the static subnet out of the weights and writes, atomically,
//! into the output folder:
//! - `model.safetensors`: the static subnet's tensors, by default with every BN folded into the conv
//!   before it (`crate::deploy::fold`: conv weights scaled, a `.conv.bias` per folded conv, no BN
//!   tensors; format `attnas-folded-subnet/1`); with `--no-fold-bn` named and shaped exactly as
//!   AttentiveNAS's static model (see [`super::static_subnet`], loadable by its `load_state_dict`) with
//!   the recalibrated BN statistics (format `attnas-static-subnet/1`); the metadata holds the arch, its
//!   cost, the input convention, the calibration settings and `bn_folded`;
//! - `arch.json`: the arch in our JSON form plus `flops` (MFLOPs, AttentiveNAS's key) and `params`
//!   (millions); `--arch DIR/arch.json` reads it back;
//! - `model.onnx`: the same network as an ONNX graph (see [`super::onnx`]): Conv with bias and no
//!   BatchNormalization node when folded, Conv + BatchNormalization with `--no-fold-bn`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::data::{calibration_batches, data_config_of, CalibSettings, DataPaths};
use super::evaluate::{batch_bar, Evaluator};
use super::{load_supernet, onnx, static_subnet};
use crate::backend::SupernetOps;
use crate::checkpoint::write_safetensors_as;
use crate::data::augment::{IMAGENET_MEAN, IMAGENET_STD};
use crate::deploy::fold::{fold_bn, FOLDED_FORMAT};
use crate::error::{Error, Result};
use crate::space::arch::resolve_arch;
use crate::space::{flops, Arch};
use crate::train::validate::HostBatch;
use crate::util::atomic::write_atomic_bytes;

/// What `attnas export` was asked to do.
#[derive(Clone, Debug)]
pub struct ExportJob {
    pub ckpt: PathBuf,
    pub config: Option<String>,
    pub arch: String,
    pub out: PathBuf,
    pub data: DataPaths,
    pub calib: CalibSettings,
    pub progress: bool,
    /// Fold BN into the convs (default); false: `--no-fold-bn`.
    pub fold_bn: bool,
    /// `--precision`: the storage of the calibration forward's activations and of model.safetensors'
    /// tensors (the ONNX graph stays fp32: onnxruntime's CPU kernels have no bf16 convolutions).
    pub precision: crate::backend::Precision,
}

/// What was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    pub arch_name: String,
    pub arch: Arch,
    pub mflops: f64,
    pub mparams: f64,
    pub tensors: usize,
    pub calib_images: usize,
    pub weights: PathBuf,
    pub arch_json: PathBuf,
    pub onnx: PathBuf,
    pub device: String,
    pub bn_folded: bool,
    /// Storage of model.safetensors' tensors: `fp32` or `bf16`.
    pub precision: &'static str,
}

/// `arch.json`: the arch's own keys (so `--arch` reads it), then its cost.
#[derive(serde::Serialize)]
struct ArchFile<'a> {
    resolution: usize,
    width: &'a [usize],
    depth: &'a [usize],
    kernel: &'a [usize],
    expand: &'a [usize],
    /// MFLOPs (multiply-accumulates / 1e6), AttentiveNAS's `flops` key.
    flops: f64,
    /// Millions of parameters of the static subnet (spec 5.3's count).
    params: f64,
}

/// A description of the network input, shared by the safetensors and ONNX metadata.
fn input_note(r: usize, crop: u32, eval_crop_fraction: f64) -> String {
    format!(
        "images [N, 3, {r}, {r}] float32 NCHW RGB: the loader's {crop}x{crop} crop (eval: resize the short side to \
         crop/{eval_crop_fraction}, centre crop), bicubically resized to {r} (PyTorch interpolate, A=-0.75, align_corners=False, \
         no antialias), normalised per channel as (x/255 - mean)/std with mean {IMAGENET_MEAN:?} and std \
         {IMAGENET_STD:?}; grey images are replicated to RGB"
    )
}

fn layout_note(folded: bool) -> &'static str {
    if folded {
        "AttentiveNAS static subnet names, PyTorch NCHW, BN folded: each conv followed by BN in the static model \
         carries `<prefix>.conv.bias` and scaled weights instead, and there are no `.bn.` tensors"
    } else {
        "AttentiveNAS static subnet (AttentiveNasStaticModel state dict), PyTorch NCHW"
    }
}

/// Runs `attnas export` on backend `b`.
pub fn run_export<B: SupernetOps>(b: &B, job: &ExportJob) -> Result<ExportReport> {
    let mut loaded = load_supernet(b, &job.ckpt, job.config.as_deref())?;
    let dtype = b.resolve_precision(job.precision);
    loaded.net.set_precision(b, dtype)?;
    let space = &loaded.net.space;
    let arch = resolve_arch(space, &job.arch)?;
    let data_cfg = data_config_of(loaded.state.as_ref(), job.data.crop)?;
    let train_path = job.data.train_file()?;
    if job.out.is_file() {
        return Err(Error::usage(format!("--out {}: is a file; give a folder", job.out.display())));
    }
    std::fs::create_dir_all(&job.out).map_err(|e| Error::io(&job.out, e))?;

    let t = Instant::now();
    let calib = calibration_batches(&train_path, space, &data_cfg, &job.calib)?;
    let calib_images: usize = calib.iter().map(HostBatch::len).sum();
    let mut ev = Evaluator::new(b, &loaded.net, job.calib.batch_size, data_cfg.crop as usize, false)?;
    let bar = batch_bar(job.progress, calib.len() as u64);
    bar.set_message("calibrating BN");
    ev.calibrate(&arch, &calib)?;
    bar.finish_and_clear();
    drop(calib);

    let named = loaded.net.to_named(b, false)?;
    let tensors = static_subnet::extract(space, &arch, &named)?;
    let tensors = if job.fold_bn { fold_bn(space, &arch, &tensors)? } else { tensors };
    let format = if job.fold_bn { FOLDED_FORMAT } else { "attnas-static-subnet/1" };
    let cost = flops::cost(space, &arch);
    let r = arch.resolution;
    let calib_note = serde_json::json!({
        "batches": job.calib.batches, "batch_size": job.calib.batch_size, "images": calib_images,
        "seed": job.calib.seed, "train_data": train_path.display().to_string(),
        "augmentation": "training transform of the checkpoint's config (spec 5.1)",
        "seconds": t.elapsed().as_secs_f64(),
    });
    let meta: Vec<(String, String)> = vec![
        ("format".into(), format.into()),
        ("layout".into(), layout_note(job.fold_bn).into()),
        ("bn_folded".into(), job.fold_bn.to_string()),
        ("space".into(), space.name.clone()),
        ("arch".into(), arch.to_json()),
        ("resolution".into(), r.to_string()),
        ("num_classes".into(), space.num_classes.to_string()),
        ("mflops".into(), format!("{:.4}", cost.mflops())),
        ("mparams".into(), format!("{:.6}", cost.mparams())),
        ("input".into(), input_note(r, data_cfg.crop, data_cfg.eval_crop_fraction)),
        ("bn_calibration".into(), calib_note.to_string()),
        ("checkpoint".into(), loaded.weights.display().to_string()),
        ("precision".into(), crate::train::memory_plan::precision_name(dtype).into()),
    ];

    let weights = job.out.join("model.safetensors");
    let meta_map: BTreeMap<String, String> = meta.iter().cloned().collect();
    write_safetensors_as(&weights, &tensors, &meta_map, dtype)?;

    let arch_json = job.out.join("arch.json");
    let file = ArchFile {
        resolution: r,
        width: &arch.width,
        depth: &arch.depth,
        kernel: &arch.kernel,
        expand: &arch.expand,
        flops: (cost.mflops() * 1e4).round() / 1e4,
        params: (cost.mparams() * 1e6).round() / 1e6,
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Other(e.to_string()))? + "\n";
    write_atomic_bytes(&arch_json, text.as_bytes())?;

    let onnx_path = job.out.join("model.onnx");
    let model = onnx::build_model(space, &arch, &tensors, &meta)?;
    write_atomic_bytes(&onnx_path, &model.to_bytes())?;

    Ok(ExportReport {
        arch_name: job.arch.clone(),
        arch,
        mflops: cost.mflops(),
        mparams: cost.mparams(),
        tensors: tensors.len(),
        calib_images,
        weights,
        arch_json,
        onnx: onnx_path,
        device: b.name(),
        bn_folded: job.fold_bn,
        precision: crate::train::memory_plan::precision_name(dtype),
    })
}
