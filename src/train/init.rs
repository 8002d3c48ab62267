//! `attnas train --init CKPT`: start a run from the weights of any supernet checkpoint (a run folder,
//! a `ckpt-N.safetensors`, or a converted official checkpoint) with a fresh optimizer and schedule: the
//! parameters and BN buffers are loaded, momentum and step counters are not. A checkpoint whose
//! classifier has another class count (fine-tuning on the user's data) keeps every other tensor and
//! leaves the classifier at this run's fresh initialisation; a checkpoint of another search space is an
//! error naming the first tensor whose shape differs, with both shapes (exit code 2).

use std::path::{Path, PathBuf};

use crate::backend::SupernetOps;
use crate::checkpoint::resolve_weights_arg;
use crate::error::Result;
use crate::nn::{NamedTensor, Supernet};

/// The classifier's tensors, re-initialised when the class count differs.
pub const CLASSIFIER_TENSORS: [&str; 2] = ["classifier.linear.linear.weight", "classifier.linear.linear.bias"];

/// What `--init` loaded.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InitReport {
    /// The weights file read.
    pub weights: PathBuf,
    /// (the checkpoint's classes, this space's classes) when the classifier was re-initialised.
    pub classifier_reinitialised: Option<(usize, usize)>,
}

impl InitReport {
    /// The notice printed when the classifier was re-initialised.
    pub fn notice(&self) -> Option<String> {
        self.classifier_reinitialised.map(|(from, to)| {
            format!(
                "--init {}: the checkpoint's classifier has {from} classes, this space {to}: the classifier \
                 starts from a fresh initialisation, every other tensor from the checkpoint",
                self.weights.display()
            )
        })
    }
}

/// Loads the parameters and BN statistics of `ckpt` into `net` (momentum stays zero).
pub fn init_from_checkpoint<B: SupernetOps>(b: &B, net: &Supernet<B::Memory>, ckpt: &Path) -> Result<InitReport> {
    let run_checkpoints = ckpt.join("checkpoints");
    let ckpt = if run_checkpoints.is_dir() { run_checkpoints.as_path() } else { ckpt };
    let weights = resolve_weights_arg(ckpt)?;
    let (tensors, _meta, _state) = crate::eval::read_weights_checked(&weights)?;
    let classes = net.space.num_classes;
    let fresh = net.to_named(b, false)?;
    let mut reinit = None;
    let mut named: Vec<NamedTensor> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let name = t.name.strip_prefix("module.").unwrap_or(&t.name).to_string();
        if name.starts_with("optimizer.") {
            continue; // a fresh optimizer
        }
        if CLASSIFIER_TENSORS.contains(&name.as_str()) && t.shape.first().is_some_and(|&c| c != classes) {
            let want = fresh.iter().find(|f| f.name == name);
            // only the class dimension may differ: the rest must match, or load_named names the mismatch
            if want.is_some_and(|w| w.shape[1..] == t.shape[1..]) {
                reinit = Some((t.shape[0], classes));
                named.extend(want.cloned());
                continue;
            }
        }
        named.push(NamedTensor { name, shape: t.shape, data: t.data });
    }
    net.load_named(b, &named, &weights.display().to_string())?;
    // load_named keeps what the file lacks (e.g. momentum): make sure the optimizer starts from zero
    b.upload(net.momentum_arena(), &vec![0.0; net.table.params_len])?;
    Ok(InitReport { weights, classifier_reinitialised: reinit })
}
