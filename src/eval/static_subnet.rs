//! A standalone (static) subnet cut out of the supernet's weights, named and shaped as AttentiveNAS's
//! `get_active_subnet()` would produce it (`models/attentive_nas_static_model.py`,
//! `models/modules/static_layers.py`), so `AttentiveNasStaticModel.load_state_dict` reads the file.
//!
//! Every tensor is the leading slice of the supernet tensor (spec 1.4): `W[:out, :in]` for convs and the
//! linear layer, the first C channels of each BN (running statistics included: the caller recalibrates
//! them first), and the centre `k x k` of the stored depthwise kernel (the stage's largest). Layouts are PyTorch's (NCHW
//! conv weights `[out, in / groups, kh, kw]`, linear `[out, in]`). Blocks are numbered 0.. over the
//! *active* blocks only, in network order (index `j` below), as the static model's `blocks` list is.
//!
//! Names (supernet name -> static name):
//! - `first_conv.conv.conv.weight` -> `first_conv.conv.weight` `[c0, 3, 3, 3]`;
//!   `first_conv.bn.bn.X` -> `first_conv.bn.X` for X in weight, bias, running_mean, running_var.
//! - `blocks.{g}.mobile_inverted_conv.L.conv.conv.weight` -> `blocks.{j}.mobile_inverted_conv.L.conv.weight`
//!   and `....L.bn.bn.X` -> `....L.bn.X`, for L in `inverted_bottleneck` (`[mid, c_in, 1, 1]`, absent when
//!   the stage never expands), `depth_conv` (`[mid, 1, k, k]`), `point_linear` (`[c_out, mid, 1, 1]`).
//! - `....depth_conv.se.fc.{reduce,expand}.{weight,bias}` keep their names (`[se_mid, mid, 1, 1]`,
//!   `[mid, se_mid, 1, 1]`), SE stages only.
//! - `blocks.{g}.shortcut.conv.conv.weight` -> `blocks.{j}.shortcut.conv.weight` `[c_out, c_in, 1, 1]`: the
//!   static `ShortcutLayer` allocates it for every block; it is applied only when c_in != c_out.
//! - `last_conv.final_expand_layer.*` -> `last_conv.0.*` (conv `[6 c, c, 1, 1]` + BN) and
//!   `last_conv.feature_mix_layer.conv.conv.weight` -> `last_conv.2.conv.weight` `[w, 6 c, 1, 1]` (no BN):
//!   the static head is `nn.Sequential(final_expand_layer, AdaptiveAvgPool2d, feature_mix_layer)`.
//! - `classifier.linear.linear.{weight,bias}` -> `classifier.linear.{weight,bias}` (`[classes, w]`, `[classes]`).
//!
//! BatchNorm's integer `num_batches_tracked` is not written (safetensors here are f32; PyTorch's
//! `load_state_dict` fills a missing `num_batches_tracked` with 0).

use std::collections::HashMap;

use crate::checkpoint::TensorRecord;
use crate::error::{Error, Result};
use crate::nn::NamedTensor;
use crate::space::{Arch, Space};

/// Static name prefixes (shared with the ONNX graph builder, which refers to the same tensors).
pub const STEM: &str = "first_conv";
pub const HEAD_EXPAND: &str = "last_conv.0";
pub const FEATURE_MIX: &str = "last_conv.2";
pub const CLASSIFIER: &str = "classifier.linear";

/// `blocks.{j}.mobile_inverted_conv`: the prefix of active block `j`'s main branch.
pub fn block_prefix(j: usize) -> String {
    format!("blocks.{j}.mobile_inverted_conv")
}

/// The shortcut conv weight of active block `j`.
pub fn shortcut_weight(j: usize) -> String {
    format!("blocks.{j}.shortcut.conv.weight")
}

/// The four tensors of a static BN layer under `prefix` (`{prefix}.bn.weight`, ...).
pub fn bn_names(prefix: &str) -> [String; 4] {
    ["weight", "bias", "running_mean", "running_var"].map(|x| format!("{prefix}.bn.{x}"))
}

/// Copies `len[d]` entries from `start[d]` of each dimension `d` of a row-major tensor of `shape`.
pub fn crop(data: &[f32], shape: &[usize], start: &[usize], len: &[usize]) -> Vec<f32> {
    let rank = shape.len();
    if rank == 0 {
        return data.to_vec();
    }
    let mut strides = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let total: usize = len.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; rank];
    for _ in 0..total {
        let offset: usize = (0..rank).map(|d| (start[d] + idx[d]) * strides[d]).sum();
        out.push(data[offset]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < len[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

struct Extractor<'a> {
    by_name: HashMap<&'a str, &'a NamedTensor>,
    out: Vec<TensorRecord>,
}

impl Extractor<'_> {
    /// Appends `to` = the leading `len` slice of supernet tensor `from`, starting at `start` (zeros if
    /// `None`).
    fn take(&mut self, from: &str, to: String, len: &[usize], start: Option<&[usize]>) -> Result<()> {
        let t = self.by_name.get(from).ok_or_else(|| {
            Error::Other(format!("static subnet: the supernet has no tensor '{from}' (needed for '{to}')"))
        })?;
        let zeros = vec![0; len.len()];
        let start = start.unwrap_or(&zeros);
        let fits = t.shape.len() == len.len() && (0..len.len()).all(|d| start[d] + len[d] <= t.shape[d]);
        if !fits {
            return Err(Error::shape(
                format!("static subnet: slice of '{from}' from {start:?}"),
                format!("{len:?} within {:?}", t.shape),
                format!("{:?}", t.shape),
            ));
        }
        let data = crop(&t.data, &t.shape, start, len);
        self.out.push(TensorRecord { name: to, shape: len.to_vec(), data });
        Ok(())
    }

    fn bn(&mut self, from_prefix: &str, to_prefix: &str, c: usize) -> Result<()> {
        let to = bn_names(to_prefix);
        for (x, to) in ["weight", "bias", "running_mean", "running_var"].into_iter().zip(to) {
            self.take(&format!("{from_prefix}.bn.bn.{x}"), to, &[c], None)?;
        }
        Ok(())
    }

    fn conv1x1(&mut self, from_prefix: &str, to_prefix: &str, c_out: usize, c_in: usize) -> Result<()> {
        let (from, to) = (format!("{from_prefix}.conv.conv.weight"), format!("{to_prefix}.conv.weight"));
        self.take(&from, to, &[c_out, c_in, 1, 1], None)
    }
}

/// The static subnet `arch` of `space` from the supernet's named tensors (PyTorch layout, as
/// [`crate::nn::Supernet::to_named`] gives them), in network order.
pub fn extract(space: &Space, arch: &Arch, supernet: &[NamedTensor]) -> Result<Vec<TensorRecord>> {
    space.validate(arch).map_err(Error::usage)?;
    let mut x = Extractor { by_name: supernet.iter().map(|t| (t.name.as_str(), t)).collect(), out: Vec::new() };
    let c0 = arch.width[0];
    let k0 = space.stem.kernel;
    x.take("first_conv.conv.conv.weight", format!("{STEM}.conv.weight"), &[c0, space.in_channels, k0, k0], None)?;
    x.bn(STEM, STEM, c0)?;
    for (j, blk) in space.active_blocks(arch).enumerate() {
        let from = format!("blocks.{}.mobile_inverted_conv", blk.global);
        let to = block_prefix(j);
        if blk.has_expand_conv {
            x.conv1x1(&format!("{from}.inverted_bottleneck"), &format!("{to}.inverted_bottleneck"), blk.mid, blk.c_in)?;
            x.bn(&format!("{from}.inverted_bottleneck"), &format!("{to}.inverted_bottleneck"), blk.mid)?;
        }
        // The supernet's kernel is the stage's largest (PyTorch's allocation); a smaller one is its centre.
        let (k, dw) = (blk.kernel, format!("{from}.depth_conv.conv.conv.weight"));
        let stored_k = x.by_name.get(dw.as_str()).and_then(|t| t.shape.get(2).copied()).unwrap_or(k);
        let off = stored_k.saturating_sub(k) / 2;
        x.take(&dw, format!("{to}.depth_conv.conv.weight"), &[blk.mid, 1, k, k], Some(&[0, 0, off, off]))?;
        x.bn(&format!("{from}.depth_conv"), &format!("{to}.depth_conv"), blk.mid)?;
        if blk.se {
            for (fc, c_out, c_in) in [("reduce", blk.se_mid, blk.mid), ("expand", blk.mid, blk.se_mid)] {
                let (f, t) = (format!("{from}.depth_conv.se.fc.{fc}"), format!("{to}.depth_conv.se.fc.{fc}"));
                x.take(&format!("{f}.weight"), format!("{t}.weight"), &[c_out, c_in, 1, 1], None)?;
                x.take(&format!("{f}.bias"), format!("{t}.bias"), &[c_out], None)?;
            }
        }
        x.conv1x1(&format!("{from}.point_linear"), &format!("{to}.point_linear"), blk.c_out, blk.mid)?;
        x.bn(&format!("{from}.point_linear"), &format!("{to}.point_linear"), blk.c_out)?;
        x.take(
            &format!("blocks.{}.shortcut.conv.conv.weight", blk.global),
            shortcut_weight(j),
            &[blk.c_out, blk.c_in, 1, 1],
            None,
        )?;
    }
    let head = space.head_shape(arch);
    x.conv1x1("last_conv.final_expand_layer", HEAD_EXPAND, head.expand, head.c_in)?;
    x.bn("last_conv.final_expand_layer", HEAD_EXPAND, head.expand)?;
    x.conv1x1("last_conv.feature_mix_layer", FEATURE_MIX, head.width, head.expand)?;
    let classes = space.num_classes;
    x.take("classifier.linear.linear.weight", format!("{CLASSIFIER}.weight"), &[classes, head.width], None)?;
    x.take("classifier.linear.linear.bias", format!("{CLASSIFIER}.bias"), &[classes], None)?;
    Ok(x.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_takes_leading_and_centre_slices() {
        // [2, 1, 5, 5] with value = 100 * c + 10 * y + x; centre 3x3 of channel 1 only.
        let shape = [2, 1, 5, 5];
        let data: Vec<f32> =
            (0..2).flat_map(|c| (0..25).map(move |i| (100 * c + 10 * (i / 5) + i % 5) as f32)).collect();
        let got = crop(&data, &shape, &[1, 0, 1, 1], &[1, 1, 3, 3]);
        assert_eq!(got, vec![111.0, 112.0, 113.0, 121.0, 122.0, 123.0, 131.0, 132.0, 133.0]);
        let lead = crop(&data, &shape, &[0, 0, 0, 0], &[1, 1, 1, 2]);
        assert_eq!(lead, vec![0.0, 1.0]);
    }

    #[test]
    fn every_static_tensor_is_named_once_and_shaped_by_the_arch() {
        let space = Space::builtin("tiny").unwrap();
        let arch = space.min_arch();
        let table = crate::nn::ParamTable::new(&space).unwrap();
        let named: Vec<NamedTensor> = table
            .params
            .iter()
            .chain(&table.buffers)
            .map(|p| NamedTensor { name: p.name.clone(), shape: p.torch_shape.clone(), data: vec![0.5; p.torch_len()] })
            .collect();
        let out = extract(&space, &arch, &named).unwrap();
        let mut names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), out.len(), "duplicate static names");
        let blocks: usize = arch.depth.iter().sum();
        assert!(out.iter().any(|t| t.name == shortcut_weight(blocks - 1)));
        assert!(!out.iter().any(|t| t.name == shortcut_weight(blocks)));
        let stem = out.iter().find(|t| t.name == "first_conv.conv.weight").unwrap();
        assert_eq!(stem.shape, vec![arch.width[0], 3, 3, 3]);
        let fc = out.iter().find(|t| t.name == "classifier.linear.weight").unwrap();
        assert_eq!(fc.shape, vec![space.num_classes, arch.width[space.num_stages() + 1]]);
        for t in &out {
            assert_eq!(t.data.len(), t.shape.iter().product::<usize>(), "{}", t.name);
        }
    }
}
