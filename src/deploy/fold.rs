//! BatchNorm folding of a static subnet (inference only): every conv followed by a BN in eval mode,
//! `y = gamma * (conv(x, W) - mean) / sqrt(var + eps) + beta`, becomes one conv with a bias,
//! `y = conv(x, W * s) + (beta - mean * s)` with `s = gamma / sqrt(var + eps)` per output channel.
//!
//! Input: the static subnet's tensors in PyTorch layout under AttentiveNAS's static-model names
//! ([`crate::eval::static_subnet::extract`], BN running statistics recalibrated). Output: the same list
//! with each `{prefix}.bn.{weight,bias,running_mean,running_var}` quartet removed and replaced by
//! `{prefix}.conv.bias` (`[c_out]`), the conv weight scaled per output channel (dimension 0 of
//! `[c_out, c_in / groups, k, k]`). The folded layers are the stem, each block's expand, depthwise and
//! project convs and the head's final expand; the SE convs, shortcut convs, feature mix and classifier
//! have no BN and are copied unchanged. `s` and the bias are computed in f64 and rounded once.
//!
//! Numerics: folding reorders float operations (the scale moves inside the conv's sum, the mean is
//! subtracted from a bias instead of from the conv output), so a folded forward equals the unfolded one
//! to rounding, not to the bit; `tests/deploy_fold.rs` states the tolerance.

use std::collections::{HashMap, HashSet};

use crate::backend::cpu::batchnorm::BN_EPS;
use crate::checkpoint::TensorRecord;
use crate::error::{Error, Result};
use crate::eval::static_subnet::{block_prefix, bn_names, HEAD_EXPAND, STEM};
use crate::space::{Arch, Space};

/// The safetensors `format` metadata of a folded static subnet.
pub const FOLDED_FORMAT: &str = "attnas-folded-subnet/1";

/// The conv + BN prefixes of `arch`'s static subnet, in network order.
pub fn folded_prefixes(space: &Space, arch: &Arch) -> Vec<String> {
    let mut out = vec![STEM.to_string()];
    for (j, blk) in space.active_blocks(arch).enumerate() {
        let p = block_prefix(j);
        if blk.has_expand_conv {
            out.push(format!("{p}.inverted_bottleneck"));
        }
        out.push(format!("{p}.depth_conv"));
        out.push(format!("{p}.point_linear"));
    }
    out.push(HEAD_EXPAND.to_string());
    out
}

/// The bias name a folded conv under `prefix` carries.
pub fn folded_bias(prefix: &str) -> String {
    format!("{prefix}.conv.bias")
}

/// Whether `tensors` hold a folded subnet (a stem bias and no stem BN).
pub fn is_folded(tensors: &[TensorRecord]) -> bool {
    let bias = folded_bias(STEM);
    tensors.iter().any(|t| t.name == bias)
}

/// Folds every BN of `arch`'s static subnet `tensors` into the conv before it (see the module docs).
pub fn fold_bn(space: &Space, arch: &Arch, tensors: &[TensorRecord]) -> Result<Vec<TensorRecord>> {
    space.validate(arch).map_err(Error::usage)?;
    let by_name: HashMap<&str, &TensorRecord> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let get = |name: &str| {
        by_name.get(name).copied().ok_or_else(|| Error::Other(format!("BN folding: the static subnet has no '{name}'")))
    };
    let mut folded: HashMap<String, TensorRecord> = HashMap::new();
    let mut dropped: HashSet<String> = HashSet::new();
    for prefix in folded_prefixes(space, arch) {
        let w = get(&format!("{prefix}.conv.weight"))?;
        let [gamma, beta, mean, var] = bn_names(&prefix).map(|n| get(&n));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let c = w.shape.first().copied().unwrap_or(0);
        for t in [gamma, beta, mean, var] {
            if t.data.len() != c {
                return Err(Error::shape(format!("BN folding: '{}'", t.name), c, t.data.len()));
            }
        }
        let per_out = w.data.len().checked_div(c).unwrap_or(0);
        let mut weight = w.data.clone();
        let mut bias = vec![0f32; c];
        for o in 0..c {
            let s = gamma.data[o] as f64 / (var.data[o] as f64 + BN_EPS as f64).sqrt();
            for v in &mut weight[o * per_out..(o + 1) * per_out] {
                *v = (*v as f64 * s) as f32;
            }
            bias[o] = (beta.data[o] as f64 - mean.data[o] as f64 * s) as f32;
        }
        folded.insert(w.name.clone(), TensorRecord { name: w.name.clone(), shape: w.shape.clone(), data: weight });
        folded.insert(folded_bias(&prefix), TensorRecord { name: folded_bias(&prefix), shape: vec![c], data: bias });
        dropped.extend(bn_names(&prefix));
    }
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        if dropped.contains(&t.name) {
            continue;
        }
        match folded.remove(&t.name) {
            Some(w) => {
                out.push(w);
                // the bias right after its weight, in network order
                let prefix = t.name.trim_end_matches(".conv.weight");
                if let Some(b) = folded.remove(&folded_bias(prefix)) {
                    out.push(b);
                }
            }
            None => out.push(t.clone()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{NamedTensor, ParamTable};

    /// A 1-channel conv + BN folds to the closed form, every BN tensor disappears, and every other
    /// tensor is kept unchanged.
    #[test]
    fn folding_matches_the_closed_form_and_removes_every_bn() {
        let space = Space::builtin("tiny").unwrap();
        let arch = space.min_arch();
        let table = ParamTable::new(&space).unwrap();
        let named: Vec<NamedTensor> = table
            .params
            .iter()
            .chain(&table.buffers)
            .map(|p| {
                let v = if p.name.ends_with("running_var") { 3.0 } else { 0.5 };
                NamedTensor { name: p.name.clone(), shape: p.torch_shape.clone(), data: vec![v; p.torch_len()] }
            })
            .collect();
        let tensors = crate::eval::static_subnet::extract(&space, &arch, &named).unwrap();
        let out = fold_bn(&space, &arch, &tensors).unwrap();
        assert!(is_folded(&out) && !is_folded(&tensors));
        assert!(!out.iter().any(|t| t.name.contains(".bn.")), "a BN tensor survived");
        let prefixes = folded_prefixes(&space, &arch);
        assert_eq!(out.len(), tensors.len() - 4 * prefixes.len() + prefixes.len());
        // gamma 0.5, var 3, beta 0.5, mean 0.5: s = 0.5 / sqrt(3 + 1e-5), bias = 0.5 - 0.5 s.
        let s = 0.5 / (3.0f64 + 1e-5).sqrt();
        let stem_w = out.iter().find(|t| t.name == "first_conv.conv.weight").unwrap();
        assert!(stem_w.data.iter().all(|&v| (v as f64 - 0.5 * s).abs() < 1e-7));
        let stem_b = out.iter().find(|t| t.name == "first_conv.conv.bias").unwrap();
        assert_eq!(stem_b.shape, vec![arch.width[0]]);
        assert!(stem_b.data.iter().all(|&v| (v as f64 - (0.5 - 0.5 * s)).abs() < 1e-7));
        let se = out.iter().find(|t| t.name.ends_with("se.fc.reduce.weight")).unwrap();
        assert!(se.data.iter().all(|&v| v == 0.5), "SE weights are not folded");
    }
}
