//! Loading a checkpoint with its tensor digest checked ([`load_checked`], [`load`]) and finding the
//! newest checkpoint of a directory that loads and verifies ([`newest_intact`]), naming every newer one
//! that does not and why. `--resume` uses the latter so that one damaged file (a truncated copy, a flipped
//! bit, a node lost mid-write on a file system without atomic rename) costs one checkpoint interval, not
//! the run. Damaged checkpoints newer than the one resumed from can be moved aside ([`set_aside`]) under
//! names the store ignores (`ckpt-<step>.damaged.*`), kept for inspection.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::digest::{self, DigestCheck, DIGEST_KEY};
use super::safetensors_io::{read_safetensors, TensorRecord};
use super::store::{list_in, stem_for, SavedCheckpoint, STATE_EXT, WEIGHTS_EXT};
use crate::error::{Error, Result};

/// A checkpoint read and checked: tensors, weight metadata, the state (without the digest key, exactly
/// as the trainer saved it) and what the digest check found.
#[derive(Clone, Debug)]
pub struct LoadedCheckpoint {
    pub ckpt: SavedCheckpoint,
    pub tensors: Vec<TensorRecord>,
    pub metadata: BTreeMap<String, String>,
    pub state: serde_json::Value,
    pub digest: DigestCheck,
}

/// Reads a checkpoint and checks its tensors against the digest in its state. A truncated or corrupt
/// file, a state that is not JSON or a digest mismatch is an error naming the file and the fault.
pub fn load_checked(ckpt: &SavedCheckpoint) -> Result<LoadedCheckpoint> {
    let (tensors, metadata) = read_safetensors(&ckpt.weights)?;
    let bytes = fs::read(&ckpt.state).map_err(|e| Error::io(&ckpt.state, e))?;
    let mut state: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&ckpt.state, e.line(), format!("checkpoint state is not valid JSON: {e}")))?;
    let digest = digest::check(&ckpt.weights, &tensors, &state)?;
    if let Some(obj) = state.as_object_mut() {
        obj.remove(DIGEST_KEY);
    }
    Ok(LoadedCheckpoint { ckpt: ckpt.clone(), tensors, metadata, state, digest })
}

/// Reads a checkpoint: its f32 tensors (non-float ones left out), weight metadata and state, the tensors
/// checked against the state's digest (a checkpoint without one loads with a notice on stderr).
pub fn load(ckpt: &SavedCheckpoint) -> Result<(Vec<TensorRecord>, BTreeMap<String, String>, serde_json::Value)> {
    let l = load_checked(ckpt)?;
    if l.digest == DigestCheck::Absent {
        eprintln!("{}", digest::absent_notice(&ckpt.weights));
    }
    Ok((l.tensors, l.metadata, l.state))
}

/// A complete checkpoint that failed to load, and why.
#[derive(Clone, Debug)]
pub struct DamagedCheckpoint {
    pub ckpt: SavedCheckpoint,
    pub reason: String,
}

/// What [`newest_intact`] found: the newest checkpoint that loads and verifies (if any) and every newer
/// one it skipped, newest first.
#[derive(Debug)]
pub struct IntactSearch {
    pub found: Option<LoadedCheckpoint>,
    pub damaged: Vec<DamagedCheckpoint>,
}

/// Walks the complete checkpoints of `dir` from the highest step down and stops at the first that loads
/// and verifies. An empty (or missing) directory finds nothing and skips nothing.
pub fn newest_intact(dir: &Path) -> Result<IntactSearch> {
    let mut damaged = Vec::new();
    if !dir.is_dir() {
        return Ok(IntactSearch { found: None, damaged });
    }
    for ckpt in list_in(dir)?.into_iter().rev() {
        match load_checked(&ckpt) {
            Ok(found) => return Ok(IntactSearch { found: Some(found), damaged }),
            Err(e) => damaged.push(DamagedCheckpoint { ckpt, reason: e.to_string() }),
        }
    }
    Ok(IntactSearch { found: None, damaged })
}

/// Renames a damaged checkpoint to `ckpt-<step>.damaged.safetensors` / `.damaged.state.json` (the state
/// first, so it stops being a checkpoint at once); returns the new weights path.
pub fn set_aside(d: &DamagedCheckpoint) -> Result<PathBuf> {
    let stem = format!("{}.damaged", stem_for(d.ckpt.step));
    let state = d.ckpt.state.with_file_name(format!("{stem}{STATE_EXT}"));
    let weights = d.ckpt.weights.with_file_name(format!("{stem}{WEIGHTS_EXT}"));
    fs::rename(&d.ckpt.state, &state).map_err(|e| Error::io(&d.ckpt.state, e))?;
    fs::rename(&d.ckpt.weights, &weights).map_err(|e| Error::io(&d.ckpt.weights, e))?;
    crate::util::atomic::sync_parent_dir(&weights);
    Ok(weights)
}
