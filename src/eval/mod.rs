//! After training: loading a trained (or imported) supernet for evaluation, search and export.
//! [`load_supernet`] resolves `--ckpt` (a run folder, its checkpoint folder, a `ckpt-N.safetensors`, its state
//! file, or any safetensors holding the supernet's tensors, e.g. one converted from an official
//! AttentiveNAS checkpoint), finds the space (`--config`, else the one stored with the checkpoint: in its
//! state file, or for a converted checkpoint in the safetensors metadata `space_yaml`) and
//! loads the weights with shape checks that name the first mismatching tensor. A training checkpoint's
//! tensors are checked against the digest in its state file first: a damaged file is refused with the reason.
//!
//! - [`data`]: calibration and evaluation images (`--data`, `--train-data`, `--eval-data`);
//! - [`evaluate`]: BN recalibration + top-1/top-5 of a list of subnets (`attnas eval`);
//! - [`static_subnet`]: a subnet's weights cut out under AttentiveNAS's static-model names;
//! - [`onnx`]: the static subnet as an ONNX graph; [`export`]: `attnas export`.

pub mod data;
pub mod evaluate;
pub mod export;
pub mod onnx;
pub mod static_subnet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::backend::SupernetOps;
use crate::checkpoint::digest::{self, DigestCheck};
use crate::checkpoint::{read_safetensors, resolve_weights_arg, TensorRecord};
use crate::error::{Error, Result};
use crate::nn::{NamedTensor, Supernet};
use crate::space::Space;
use crate::train::trainer::space_of_checkpoint;

/// A supernet loaded from a checkpoint, with where it came from.
pub struct LoadedSupernet<B: SupernetOps> {
    pub net: Supernet<B::Memory>,
    pub weights: PathBuf,
    /// The training state beside the weights, when there is one.
    pub state: Option<serde_json::Value>,
}

/// The state file beside `weights` (`ckpt-N.state.json` for `ckpt-N.safetensors`), if present and valid JSON.
fn state_beside(weights: &Path) -> Result<Option<serde_json::Value>> {
    let name = weights.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(stem) = name.strip_suffix(".safetensors") else { return Ok(None) };
    let state = weights.with_file_name(format!("{stem}.state.json"));
    if !state.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&state).map_err(|e| Error::io(&state, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::input(&state, e.line(), e.to_string()))
}

/// A checkpoint's tensors, safetensors metadata and the state beside it (if any).
pub type CheckedWeights = (Vec<TensorRecord>, BTreeMap<String, String>, Option<serde_json::Value>);

/// Reads `weights` (a resolved safetensors path) and the state beside it, if any. A training checkpoint's
/// state holds the digest of its tensors: a damaged file is refused naming it and the fault; a checkpoint
/// without a digest (older runs) gets a notice. Imported checkpoints have no state file.
pub fn read_weights_checked(weights: &Path) -> Result<CheckedWeights> {
    let state = state_beside(weights)?;
    let (tensors, meta) = read_safetensors(weights)?;
    if let Some(state) = &state {
        match digest::check(weights, &tensors, state) {
            Ok(DigestCheck::Verified) => {}
            Ok(DigestCheck::Absent) => eprintln!("{}", digest::absent_notice(weights)),
            Err(Error::Input { path, line, msg }) => {
                let msg = format!(
                    "{msg}. Refusing it: pass an older checkpoint of the run (ckpt-<step>.safetensors); attnas train \
                     --resume skips damaged ones"
                );
                return Err(Error::Input { path, line, msg });
            }
            Err(e) => return Err(e),
        }
    }
    Ok((tensors, meta, state))
}

/// Loads `ckpt` onto `b`. `config` overrides the space stored with the checkpoint.
/// A run folder (`attnas train --out`) stands for its `checkpoints/` folder.
pub fn load_supernet<B: SupernetOps>(b: &B, ckpt: &Path, config: Option<&str>) -> Result<LoadedSupernet<B>> {
    let run_checkpoints = ckpt.join("checkpoints");
    let ckpt = if run_checkpoints.is_dir() { run_checkpoints.as_path() } else { ckpt };
    let weights = resolve_weights_arg(ckpt)?;
    let (tensors, meta, state) = read_weights_checked(&weights)?;
    // A converted checkpoint has no state file; the converter stores the space in the metadata instead.
    let stored_space = match (&state, meta.get("space_yaml")) {
        (None, Some(yaml)) => Some(serde_json::json!({ "space_yaml": yaml })),
        _ => None,
    };
    let space: Space = space_of_checkpoint(config, state.as_ref().or(stored_space.as_ref()), &weights)?;
    let named: Vec<NamedTensor> =
        tensors.into_iter().map(|t| NamedTensor { name: t.name, shape: t.shape, data: t.data }).collect();
    let net = Supernet::new(b, space, 0)?;
    net.load_named(b, &named, &weights.display().to_string())?;
    Ok(LoadedSupernet { net, weights, state })
}
