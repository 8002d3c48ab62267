//! The ILSVRC2012 devkit's validation labels, for `attnas prepare` on a flat `val/` folder.
//!
//! `data/ILSVRC2012_validation_ground_truth.txt` holds one ILSVRC2012_ID per line, line i (1-based)
//! for `ILSVRC2012_val_%08d.JPEG` with the number i. The IDs are the devkit's own numbering (1-1000 for
//! the leaf synsets, 1001-1860 for the inner ones), not the sorted-WNID order of the train/ folders
//! (ID 1 is n02119789, kit fox; sorted WNIDs start with n01440764, tench): `data/meta.mat` maps them,
//! its variable `synsets` being a struct array with fields ILSVRC2012_ID, WNID, words, gloss,
//! num_children, children, wordnet_height, num_train_images, the 1000 classes those with
//! num_children = 0 (torchvision's `ImageNet` reads the same two files the same way). Where meta.mat
//! cannot be read, a text file with the WNID of ID i on line i serves instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::matfile::{read_mat, MatValue};
use crate::error::{Error, Result};

/// The ground-truth file's name in the devkit.
pub const GROUND_TRUTH: &str = "ILSVRC2012_validation_ground_truth.txt";
/// The synset file's name in the devkit.
pub const META: &str = "meta.mat";

/// ILSVRC2012_ID -> WNID of the classes (leaf synsets), from `meta.mat` or a synset text file.
pub fn read_synsets(path: &Path) -> Result<HashMap<u32, String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"MATLAB") || bytes.starts_with(b"\x89HDF") {
        synsets_from_mat(path, &bytes)
    } else {
        synsets_from_text(path, &bytes)
    }
}

fn synsets_from_mat(path: &Path, bytes: &[u8]) -> Result<HashMap<u32, String>> {
    let bad = |msg: String| Error::input(path, 0, msg);
    let vars = read_mat(bytes).map_err(bad)?;
    let Some((_, synsets)) = vars.iter().find(|(n, _)| n == "synsets") else {
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        return Err(bad(format!(
            "no variable 'synsets' (found: {}); give the devkit's data/meta.mat",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    };
    let MatValue::Struct { fields, elems, .. } = synsets else {
        return Err(bad("'synsets' is not a struct array".into()));
    };
    for f in ["ILSVRC2012_ID", "WNID", "num_children"] {
        if !fields.iter().any(|n| n == f) {
            return Err(bad(format!("'synsets' has no field '{f}' (fields: {})", fields.join(", "))));
        }
    }
    let mut map = HashMap::new();
    for i in 0..elems.len() {
        let get = |f: &str| synsets.field(i, f);
        let id = get("ILSVRC2012_ID").and_then(MatValue::scalar);
        let wnid = get("WNID").and_then(MatValue::string);
        let children = get("num_children").and_then(MatValue::scalar);
        let (Some(id), Some(wnid), Some(children)) = (id, wnid, children) else {
            return Err(bad(format!(
                "synsets({}): ILSVRC2012_ID, WNID or num_children is not a scalar / string",
                i + 1
            )));
        };
        if children != 0.0 {
            continue; // an inner node of the hierarchy, not a class
        }
        if id < 1.0 || id.fract() != 0.0 || id > u32::MAX as f64 {
            return Err(bad(format!("synsets({}): ILSVRC2012_ID {id} is not a positive integer", i + 1)));
        }
        if map.insert(id as u32, wnid.to_string()).is_some() {
            return Err(bad(format!("synsets({}): ILSVRC2012_ID {id} appears twice", i + 1)));
        }
    }
    if map.is_empty() {
        return Err(bad("'synsets' has no leaf synset (num_children = 0)".into()));
    }
    Ok(map)
}

fn synsets_from_text(path: &Path, bytes: &[u8]) -> Result<HashMap<u32, String>> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::input(path, 0, "neither a MAT-file nor UTF-8 text (give the devkit's data/meta.mat, or a text file with the WNID of ILSVRC2012_ID i on line i)")
    })?;
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some(wnid) = line.split_whitespace().next() else {
            return Err(Error::input(path, i + 1, "blank line: line i holds the WNID of ILSVRC2012_ID i"));
        };
        map.insert(i as u32 + 1, wnid.to_string());
    }
    if map.is_empty() {
        return Err(Error::input(path, 0, "empty synset file"));
    }
    Ok(map)
}

/// What the ground truth says about the val images: image stem -> WNID.
pub fn read_ground_truth(
    path: &Path,
    synsets: &HashMap<u32, String>,
    synsets_from: &Path,
) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let mut out = HashMap::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let tok = line.trim();
        let id: u32 = tok.parse().map_err(|_| {
            Error::input(
                path,
                i + 1,
                format!(
                    "'{tok}' is not an ILSVRC2012_ID: one integer per line, line i for ILSVRC2012_val_{:08}.JPEG",
                    i + 1
                ),
            )
        })?;
        let wnid = synsets.get(&id).ok_or_else(|| {
            Error::input(
                path,
                i + 1,
                format!(
                    "ILSVRC2012_ID {id} is not a class of {} ({} classes); is this the ground truth of the same devkit?",
                    synsets_from.display(),
                    synsets.len()
                ),
            )
        })?;
        out.insert(format!("ILSVRC2012_val_{:08}", i + 1), wnid.clone());
    }
    if out.is_empty() {
        return Err(Error::input(path, 0, "empty ground-truth file"));
    }
    Ok(out)
}

/// The devkit's two files found under `src`: `SRC/ILSVRC2012_devkit_t12/data/`, `SRC/devkit/data/`,
/// `SRC/data/` or `SRC/` itself.
pub fn find_devkit(src: &Path) -> Option<(PathBuf, PathBuf)> {
    ["ILSVRC2012_devkit_t12/data", "devkit/data", "data", "."].iter().map(|d| src.join(d)).find_map(|d| {
        let (gt, meta) = (d.join(GROUND_TRUTH), d.join(META));
        (gt.is_file() && meta.is_file()).then_some((gt, meta))
    })
}
