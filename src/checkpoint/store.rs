//! A checkpoint directory: `ckpt-<step:09>.safetensors` (weights) plus `ckpt-<step:09>.state.json`
//! (the trainer's state, opaque JSON here), a `latest` file naming the newest stem, and pruning to
//! the last N. A checkpoint exists only once its state file exists: `save` writes weights first and
//! the state last, each atomically, so a crash at any point leaves the previous checkpoints loadable.
//! The state carries the tensors' digest ([`super::digest`]), checked when the weights are read back
//! after writing and on every load ([`super::intact`]). A directory belongs to one trainer at a time
//! (`attnas train` holds the run folder's lock, `crate::train::run_lock`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::digest::{tensor_digest, DIGEST_KEY};
use super::safetensors_io::{read_safetensors, serialize_safetensors, TensorRecord};
use crate::error::{Error, Result};
use crate::util::atomic::{sync_parent_dir, write_atomic_bytes};

pub(super) const WEIGHTS_EXT: &str = ".safetensors";
pub(super) const STATE_EXT: &str = ".state.json";
const LATEST: &str = "latest";

/// A complete checkpoint: both files exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCheckpoint {
    pub step: u64,
    pub weights: PathBuf,
    pub state: PathBuf,
}

pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

impl CheckpointStore {
    /// Opens (creating it if needed) a checkpoint directory that keeps the last `keep` (>= 1) checkpoints.
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Result<Self> {
        let dir = dir.into();
        if keep == 0 {
            return Err(Error::usage("checkpoints to keep must be at least 1 (the one just written)"));
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(CheckpointStore { dir, keep })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Writes the checkpoint for `step` (replacing one of the same step), points `latest` at it and
    /// prunes the oldest complete checkpoints beyond `keep`, never the one just written. `state` (a JSON
    /// object) gets the tensors' digest ([`DIGEST_KEY`]); the weights are read back and checked against it
    /// before the state is written. A write that fails (disk full, folder unwritable) is an error naming
    /// the file, the bytes it needed and the space left, and leaves every earlier checkpoint as it was.
    pub fn save(
        &self,
        step: u64,
        weights: &[TensorRecord],
        metadata: &BTreeMap<String, String>,
        state: &serde_json::Value,
    ) -> Result<SavedCheckpoint> {
        let stem = stem_for(step);
        let ckpt = SavedCheckpoint {
            step,
            weights: self.dir.join(format!("{stem}{WEIGHTS_EXT}")),
            state: self.dir.join(format!("{stem}{STATE_EXT}")),
        };
        let digest = tensor_digest(weights);
        let mut state = state.clone();
        state
            .as_object_mut()
            .ok_or_else(|| Error::usage(format!("{}: a checkpoint state must be a JSON object", ckpt.state.display())))?
            .insert(DIGEST_KEY.to_string(), digest.clone().into());
        let mut state_bytes = serde_json::to_vec_pretty(&state)
            .map_err(|e| Error::Other(format!("{}: cannot encode the state: {e}", ckpt.state.display())))?;
        state_bytes.push(b'\n');
        let weight_bytes = serialize_safetensors(&ckpt.weights, weights, metadata)?;
        if ckpt.state.is_file() {
            // Replacing this step: retire the old pair first so old state never meets new weights.
            fs::remove_file(&ckpt.state).map_err(|e| Error::io(&ckpt.state, e))?;
        }
        self.write(&ckpt.weights, &weight_bytes)?;
        drop(weight_bytes);
        self.verify_written(&ckpt.weights, &digest)?;
        self.write(&ckpt.state, &state_bytes)?;
        self.write(&self.dir.join(LATEST), format!("{stem}\n").as_bytes())?;
        self.prune(step)?;
        Ok(ckpt)
    }

    /// [`write_atomic_bytes`], with the bytes needed and the space left in the error.
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        write_atomic_bytes(path, bytes).map_err(|e| {
            let free = fs4::available_space(&self.dir).map_or_else(|_| "unknown".to_string(), |b| b.to_string());
            Error::Other(format!(
                "cannot write checkpoint file {} ({} bytes needed, {free} bytes available on its file system): {e}",
                path.display(),
                bytes.len()
            ))
        })
    }

    /// Reads a just-written weights file back and compares its digest; a file that does not read back
    /// as written is removed (it is no checkpoint yet: its state was not written).
    fn verify_written(&self, path: &Path, digest: &str) -> Result<()> {
        let back = read_safetensors(path).map(|(t, _)| tensor_digest(&t));
        if back.as_ref().ok().map(String::as_str) == Some(digest) {
            return Ok(());
        }
        let _ = fs::remove_file(path);
        let why = match back {
            Ok(d) => format!("its tensors hash to {d}, not {digest}"),
            Err(e) => e.to_string(),
        };
        Err(Error::Other(format!(
            "checkpoint file {} does not read back as written ({why}); the storage is failing",
            path.display()
        )))
    }

    /// The newest checkpoint: the one `latest` names if complete, else the highest complete step.
    pub fn latest(&self) -> Result<Option<SavedCheckpoint>> {
        latest_in(&self.dir)
    }

    /// The complete checkpoints, by ascending step.
    pub fn list(&self) -> Result<Vec<SavedCheckpoint>> {
        list_in(&self.dir)
    }

    /// Removes complete checkpoints beyond `keep` (oldest step first, sparing `just_written`), weights
    /// left without a state by an interrupted save of an older step, and temporary files of other
    /// (dead) processes.
    fn prune(&self, just_written: u64) -> Result<()> {
        let mut others: Vec<SavedCheckpoint> = self.list()?.into_iter().filter(|c| c.step != just_written).collect();
        let excess = others.len().saturating_sub(self.keep - 1);
        for old in others.drain(..excess) {
            remove(&old.state)?; // the checkpoint ceases to exist here
            remove(&old.weights)?;
        }
        let own_tmp = format!(".tmp-{}", std::process::id());
        for entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let path = entry.map_err(|e| Error::io(&self.dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            let orphan = name.strip_suffix(WEIGHTS_EXT).and_then(step_of).is_some_and(|s| {
                s < just_written && !path.with_file_name(format!("{}{STATE_EXT}", stem_for(s))).exists()
            });
            let stale_tmp = name.starts_with(".ckpt-") && name.contains(".tmp-") && !name.ends_with(&own_tmp);
            if (orphan || stale_tmp) && path.is_file() {
                remove(&path)?;
            }
        }
        sync_parent_dir(&self.dir.join(LATEST));
        Ok(())
    }
}

/// A complete checkpoint from a `--resume`-style argument: a directory (its latest checkpoint),
/// `ckpt-N.safetensors` or `ckpt-N.state.json` (the pair must exist either way). For weights alone,
/// which need no state file (e.g. an imported checkpoint), use [`resolve_weights_arg`].
pub fn resolve_ckpt_arg(arg: &Path) -> Result<SavedCheckpoint> {
    if fs::metadata(arg).map_err(|e| Error::usage(format!("checkpoint {}: {e}", arg.display())))?.is_dir() {
        return latest_in(arg)?.ok_or_else(|| no_checkpoint(arg));
    }
    let (stem, _) = split_name(arg)?;
    let step = step_of(&stem).ok_or_else(|| {
        Error::usage(format!(
            "checkpoint {}: expected a name ckpt-<step>{WEIGHTS_EXT} or ckpt-<step>{STATE_EXT}",
            arg.display()
        ))
    })?;
    let ckpt = SavedCheckpoint {
        step,
        weights: arg.with_file_name(format!("{stem}{WEIGHTS_EXT}")),
        state: arg.with_file_name(format!("{stem}{STATE_EXT}")),
    };
    for p in [&ckpt.weights, &ckpt.state] {
        if !p.is_file() {
            return Err(Error::usage(format!(
                "checkpoint {}: its pair file {} is missing",
                arg.display(),
                p.display()
            )));
        }
    }
    Ok(ckpt)
}

/// The weights file an argument names: a directory (its latest checkpoint's weights), any
/// `.safetensors` file (no state needed), or a `.state.json` (the `.safetensors` beside it).
pub fn resolve_weights_arg(arg: &Path) -> Result<PathBuf> {
    if fs::metadata(arg).map_err(|e| Error::usage(format!("weights {}: {e}", arg.display())))?.is_dir() {
        return Ok(latest_in(arg)?.ok_or_else(|| no_checkpoint(arg))?.weights);
    }
    let (stem, is_weights) = split_name(arg)?;
    let weights = if is_weights { arg.to_path_buf() } else { arg.with_file_name(format!("{stem}{WEIGHTS_EXT}")) };
    if !weights.is_file() {
        return Err(Error::usage(format!("weights {}: {} is missing", arg.display(), weights.display())));
    }
    Ok(weights)
}

/// The complete checkpoints in `dir`, by ascending step.
pub(super) fn list_in(dir: &Path) -> Result<Vec<SavedCheckpoint>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let state = entry.map_err(|e| Error::io(dir, e))?.path();
        let Some(stem) = state.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(STATE_EXT)) else {
            continue;
        };
        let Some(step) = step_of(stem) else { continue };
        let weights = state.with_file_name(format!("{stem}{WEIGHTS_EXT}"));
        if state.is_file() && weights.is_file() {
            out.push(SavedCheckpoint { step, weights, state });
        }
    }
    out.sort_by_key(|c| c.step);
    Ok(out)
}

fn latest_in(dir: &Path) -> Result<Option<SavedCheckpoint>> {
    let pointer = dir.join(LATEST);
    if let Ok(text) = fs::read_to_string(&pointer) {
        let stem = text.trim();
        if let Some(step) = step_of(stem) {
            let weights = dir.join(format!("{stem}{WEIGHTS_EXT}"));
            let state = dir.join(format!("{stem}{STATE_EXT}"));
            if weights.is_file() && state.is_file() {
                return Ok(Some(SavedCheckpoint { step, weights, state }));
            }
        }
    }
    Ok(list_in(dir)?.pop())
}

pub(super) fn stem_for(step: u64) -> String {
    format!("ckpt-{step:09}")
}

/// The step in a stem `ckpt-<digits>`.
fn step_of(stem: &str) -> Option<u64> {
    let digits = stem.strip_prefix("ckpt-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A file name's stem and whether it is the weights (`.safetensors`) rather than the state.
fn split_name(arg: &Path) -> Result<(String, bool)> {
    let name = arg.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if let Some(stem) = name.strip_suffix(WEIGHTS_EXT) {
        return Ok((stem.to_string(), true));
    }
    if let Some(stem) = name.strip_suffix(STATE_EXT) {
        return Ok((stem.to_string(), false));
    }
    Err(Error::usage(format!(
        "checkpoint {}: expected a directory, a {WEIGHTS_EXT} or a {STATE_EXT} file",
        arg.display()
    )))
}

fn no_checkpoint(dir: &Path) -> Error {
    Error::usage(format!(
        "{}: no complete checkpoint here (ckpt-<step>{WEIGHTS_EXT} with its ckpt-<step>{STATE_EXT})",
        dir.display()
    ))
}

fn remove(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io(path, e))
}
