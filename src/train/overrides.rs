//! `--set key=value` overrides and the config fingerprint.
//!
//! Overrides work on the serialised form, so every key of [`TrainConfig`] can be set without a table of
//! names to keep in step: serialise the config to a YAML value, replace the leaf at the dotted path,
//! deserialise back (which type-checks the new value). The value is YAML (`5`, `null`, `worstup`,
//! `[0.35, 1]`); an empty value is null. A scalar that fails to type-check is retried as a string, so
//! `data.eval_split=2024` is a path, not a number.
//!
//! The fingerprint is a hash of the settings that shape the training trajectory plus the space, stored
//! in checkpoints so a resume with a different recipe is refused. Settings that only say how the run is
//! executed or reported ([`RUN_ONLY_KEYS`]) are left out: a run may resume with more decode threads or a
//! later `max_steps`.

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::space::config::Space;
use crate::train::config::TrainConfig;

/// Keys that do not change what the run computes, left out of [`TrainConfig::fingerprint`]. `max_steps`
/// only says where to stop (the LR schedule does not depend on it) and the evaluation batch size does not
/// change per-image results.
pub const RUN_ONLY_KEYS: &[&str] = &[
    "max_steps",
    "precision",
    "data.threads",
    "data.prefetch",
    "bn_calib.eval_batch_size",
    "bn_calib.eval_images",
    "checkpoint.every_epochs",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "log.every_steps",
    "log.progress",
    "log.tensorboard",
    "dist.bucket_mb",
];

/// The keys of a mapping, in order, as `prefix.key`.
fn keys_of(map: &Mapping, prefix: &str) -> Vec<String> {
    map.keys().filter_map(|k| k.as_str()).map(|k| format!("{prefix}.{k}")).collect()
}

impl TrainConfig {
    /// Apply one `key=value` override. The key is a dotted path with an optional leading `train.`
    /// (`sampler.num_trials=5`, `train.data.random_crop_scale=[0.35, 1]`, `base_lr=null`). Errors (usage,
    /// exit code 2) name the key: unknown keys list the valid keys at that level, bad values give the
    /// expected type. The config is not re-validated here; call [`TrainConfig::check`] after the last.
    pub fn apply_set(&mut self, assignment: &str) -> Result<()> {
        let fail = |msg: String| Error::usage(format!("--set {assignment}: {msg}"));
        let (key, raw) = assignment
            .split_once('=')
            .ok_or_else(|| fail("expected key=value, e.g. sampler.num_trials=5 or base_lr=null".into()))?;
        let key = key.trim();
        let path: Vec<&str> = key.strip_prefix("train.").unwrap_or(key).split('.').collect();
        if path.iter().any(|seg| seg.is_empty()) {
            return Err(fail(format!("'{key}' is not a dotted key path such as sampler.num_trials")));
        }
        let value: Value = if raw.trim().is_empty() {
            Value::Null
        } else {
            serde_yaml_ng::from_str(raw).map_err(|e| fail(format!("the value is not valid YAML: {e}")))?
        };

        let encode = |cfg: &TrainConfig| {
            serde_yaml_ng::to_value(cfg).map_err(|e| fail(format!("cannot serialise the config: {e}")))
        };
        let mut root = encode(self)?;
        let at = {
            let (leaf, at) = leaf_mut(&mut root, &path).map_err(fail)?;
            *leaf = value.clone();
            at
        };
        let parsed = match TrainConfig::deserialize(root) {
            Ok(cfg) => cfg,
            Err(first) => {
                // A number, bool or null where a string is wanted (a path such as `2024`): try the text.
                let scalar = matches!(value, Value::Number(_) | Value::Bool(_) | Value::Null);
                let mut retry = None;
                if scalar {
                    let mut root = encode(self)?;
                    *leaf_mut(&mut root, &path).map_err(fail)?.0 = Value::String(raw.trim().to_string());
                    retry = TrainConfig::deserialize(root).ok();
                }
                retry.ok_or_else(|| fail(format!("bad value for {at}: {first}")))?
            }
        };
        *self = parsed;
        Ok(())
    }

    /// Apply overrides in order; later ones win.
    pub fn apply_sets<S: AsRef<str>>(&mut self, sets: &[S]) -> Result<()> {
        sets.iter().try_for_each(|s| self.apply_set(s.as_ref()))
    }

    /// A stable hex hash (SHA-256, first 16 bytes) of the effective config without [`RUN_ONLY_KEYS`],
    /// and of the space (name, classes, input channels, every gene's choices). Equal fingerprints mean a
    /// resumed run continues the same training.
    pub fn fingerprint(&self, space: &Space) -> String {
        let mut config = self.to_value();
        for key in RUN_ONLY_KEYS {
            remove_path(&mut config, key);
        }
        // An unset predictor path leaves the fingerprint of runs from before the key existed unchanged;
        // so do the default score averaging and the run-only `dist` section.
        if self.sampler.predictor.is_none() {
            remove_path(&mut config, "sampler.predictor");
        }
        // So does the default KD loss, written as it was before the `kd` section (`sandwich.kd: soft_ce`);
        // the alpha keys only matter with `alpha_divergence`.
        if self.kd.loss == crate::train::config::KdLoss::Kl {
            remove_path(&mut config, "kd");
            if let Some(s) = config.get_mut("sandwich").and_then(|s| s.as_object_mut()) {
                s.insert("kd".into(), "soft_ce".into());
            }
        }
        // Likewise the latency cost keys at their defaults.
        if self.sampler.cost == super::config::SamplerCost::Flops && self.sampler.latency_table.is_none() {
            remove_path(&mut config, "sampler.cost");
            remove_path(&mut config, "sampler.latency_table");
        }
        // and the original's evaluation crop
        if self.data.eval_crop_fraction == crate::data::augment::EVAL_CROP_FRACTION {
            remove_path(&mut config, "data.eval_crop_fraction");
        }
        if self.sampler.global_scores {
            remove_path(&mut config, "sampler.global_scores");
        }
        if config.get("dist").and_then(|d| d.as_object()).is_some_and(|d| d.is_empty()) {
            remove_path(&mut config, "dist");
        }
        let genes: Vec<(String, &[usize])> =
            space.genes().into_iter().map(|g| (space.gene_name(g), space.choices(g))).collect();
        let space_id = serde_json::json!({
            "name": space.name,
            "num_classes": space.num_classes,
            "in_channels": space.in_channels,
            "genes": genes,
        });
        // serde_json maps are sorted by key, so the text is canonical.
        let text = format!("attnas-train-fingerprint-v1\n{space_id}\n{config}");
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

/// The leaf value at a dotted path below the config root, with its full name (`train.sampler.method`).
/// Errors name the unknown key and list the valid ones at its level, or refuse a whole section.
fn leaf_mut<'a>(root: &'a mut Value, path: &[&str]) -> std::result::Result<(&'a mut Value, String), String> {
    let mut node = root;
    let mut at = String::from("train");
    for seg in path {
        let Value::Mapping(map) = node else {
            return Err(format!("{at} is a value, not a section; it has no key '{seg}'"));
        };
        let valid = keys_of(map, &at);
        node = match map.get_mut(*seg) {
            Some(child) => child,
            None => return Err(format!("unknown key {at}.{seg}; valid keys: {}", valid.join(", "))),
        };
        at = format!("{at}.{seg}");
    }
    if let Value::Mapping(map) = &*node {
        return Err(format!("{at} is a section; set one of its keys: {}", keys_of(map, &at).join(", ")));
    }
    Ok((node, at))
}

/// Remove a dotted key from a JSON object, if present.
fn remove_path(value: &mut serde_json::Value, dotted: &str) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut node = value;
    for seg in parts {
        match node.get_mut(seg) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}
