//! `attnas grad`: the loss and every parameter's gradient of one training-mode forward of a subnet on a
//! given batch (`crate::train::grad`), written as safetensors under AttentiveNAS's state-dict names and
//! PyTorch shapes, with the loss as tensor `loss` of shape [1]: how attnas is checked against another
//! framework (load the same checkpoint there, run the same batch, compare). Bad input (an image file at
//! another resolution, labels of another length or out of range, a checkpoint of another space) is a
//! one-line error naming the file and both shapes, exit code 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::SupernetOps;
use crate::checkpoint::{write_safetensors, TensorRecord};
use crate::error::{Error, Result};
use crate::eval::load_supernet;
use crate::space::arch::resolve_arch;
use crate::train::grad::subnet_gradients;
use crate::util::npy::Npy;

#[derive(Args, Debug)]
pub struct GradArgs {
    /// Checkpoint: a run folder, its checkpoints/ folder, a ckpt-N.safetensors, or any supernet safetensors.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// The subnet: a name of the space (a0..a6, min, max), an arch file, or inline JSON.
    #[arg(long)]
    pub arch: String,
    /// Images [N, 3, r, r] float32 at the subnet's resolution r, normalised, NCHW (as `attnas eval
    /// --dump-inputs` writes them).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Labels [N], integer class indices (any integer dtype).
    #[arg(long)]
    pub labels: PathBuf,
    /// Output safetensors: `loss` [1] and the gradient of every supernet parameter.
    #[arg(long)]
    pub out: PathBuf,
    /// Label smoothing of the cross-entropy (the recipe trains the max subnet with 0.1).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Space YAML or built-in name (attentivenas, tiny); default: the space stored with the checkpoint.
    #[arg(long)]
    pub config: Option<String>,
    /// auto (the GPU when found, else the CPU), cpu, cuda, cuda:N, or emu (SIMT emulator builds).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// The batch read from the two files, checked against the subnet and the space.
struct Batch {
    images: Vec<f32>,
    labels: Vec<u32>,
}

fn read_batch(inputs: &Path, labels: &Path, resolution: usize, classes: usize) -> Result<Batch> {
    let x = Npy::read(inputs)?;
    let n = x.shape.first().copied().unwrap_or(0);
    let want = format!("[N, 3, {resolution}, {resolution}]");
    if x.shape.len() != 4 || n == 0 || x.shape[1..] != [3, resolution, resolution] {
        return Err(Error::input(
            inputs,
            0,
            format!(
                "shape {:?} but the subnet (resolution {resolution}) needs {want} with N >= 1: normalised NCHW images \
                 at its resolution, as `attnas eval --arch ... --dump-inputs` writes them",
                x.shape
            ),
        ));
    }
    let images = x.to_f32().ok_or_else(|| {
        Error::input(inputs, 0, format!("dtype '{}' but images must be float32 (or float64)", x.descr))
    })?;
    let y = Npy::read(labels)?;
    if y.shape != [n] {
        return Err(Error::input(
            labels,
            0,
            format!("shape {:?} but {} holds {n} images, so the labels need [{n}]", y.shape, inputs.display()),
        ));
    }
    let values = y
        .to_i64()
        .ok_or_else(|| Error::input(labels, 0, format!("dtype '{}' but labels must be integers", y.descr)))?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, &v)| v < 0 || v as u64 >= classes as u64) {
        return Err(Error::input(
            labels,
            0,
            format!("label {v} at index {i} of shape [{n}] is outside 0..{classes} (the space has {classes} classes)"),
        ));
    }
    Ok(Batch { images, labels: values.iter().map(|&v| v as u32).collect() })
}

struct Job<'a>(&'a GradArgs);

/// What the command reports.
struct GradReport {
    loss: f32,
    tensors: usize,
    n: usize,
    arch: String,
}

impl BackendJob for Job<'_> {
    type Output = GradReport;
    fn run<B: SupernetOps>(self, b: &B) -> Result<GradReport> {
        let a = self.0;
        let loaded = load_supernet(b, &a.ckpt, a.config.as_deref())?;
        let space = &loaded.net.space;
        let arch = resolve_arch(space, &a.arch)?;
        space.validate(&arch).map_err(|e| Error::usage(format!("--arch {}: {e}", a.arch)))?;
        let batch = read_batch(&a.inputs, &a.labels, arch.resolution, space.num_classes)?;
        let g = subnet_gradients(b, &loaded.net, &arch, &batch.images, &batch.labels, a.label_smoothing)?;
        let mut records = vec![TensorRecord { name: "loss".into(), shape: vec![1], data: vec![g.loss] }];
        records.extend(g.grads.into_iter().map(|t| TensorRecord { name: t.name, shape: t.shape, data: t.data }));
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "attnas-grad/1".to_string());
        meta.insert("space".to_string(), space.name.clone());
        meta.insert("arch".to_string(), arch.to_json());
        meta.insert("checkpoint".to_string(), loaded.weights.display().to_string());
        meta.insert("images".to_string(), batch.labels.len().to_string());
        meta.insert("label_smoothing".to_string(), a.label_smoothing.to_string());
        meta.insert(
            "semantics".to_string(),
            "train-mode forward (BN batch statistics, no dropout or drop-connect), mean label-smoothed CE, \
             gradients of every supernet parameter (zeros outside the active slices)"
                .to_string(),
        );
        write_safetensors(&a.out, &records, &meta)?;
        Ok(GradReport { loss: g.loss, tensors: records.len(), n: batch.labels.len(), arch: arch.to_json() })
    }
}

pub fn run(a: &GradArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.label_smoothing) {
        return Err(Error::usage(format!("--label-smoothing must be in [0, 1], got {}", a.label_smoothing)));
    }
    let r = run_on(a.device, Job(a))?;
    println!("loss {:.7} on {} images, arch {}", r.loss, r.n, r.arch);
    println!("gradients: {} ({} tensors: loss [1] + every parameter)", a.out.display(), r.tensors);
    Ok(())
}
