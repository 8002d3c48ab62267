//! A BN-folded static subnet on a device: its weights converted from PyTorch's layout to the ops'
//! layouts and packed into one allocation, per layer ([`StemWeights`], [`BlockWeights`],
//! [`HeadWeights`]). Each layer's weights are stored at exactly the active sizes (stored = active, no
//! slicing), except the depthwise kernel, which the depthwise op reads from a `[5, 5, C]` store with
//! a 3x3 kernel at its centre (the same permutation as the supernet, `nn::params::Layout`).
//!
//! Inputs are the folded tensors of [`super::fold::fold_bn`] (names in `fold`'s docs), or synthetic
//! ones ([`synthetic_stem`], [`synthetic_block`], [`synthetic_head`]): random weights of unit gain
//! (`U(-a, a)`, `a = sqrt(3 / fan_in)`) and small biases, for timing, where values do not matter as
//! long as they stay in the normal float range (activations stay O(1): no overflow, no denormals, which
//! are slow on x86).

use std::collections::HashMap;

use rand::{Rng, RngExt, SeedableRng};

use super::fold::folded_bias;
use crate::backend::ops::linear::LinearParams;
use crate::backend::ops::se::SeParams;
use crate::backend::{Arena, Backend, DeviceMemory, Tensor};
use crate::checkpoint::TensorRecord;
use crate::error::{Error, Result};
use crate::eval::static_subnet::{block_prefix, shortcut_weight, CLASSIFIER, FEATURE_MIX, HEAD_EXPAND, STEM};
use crate::nn::params::{Init, Layout, ParamSpec};
use crate::space::{ActiveBlock, Arch, HeadShape, Space};

/// Stem conv `[3, 3, 3, c0]` (ours) and its folded bias `[c0]`.
#[derive(Clone, Copy, Debug)]
pub struct StemWeights {
    pub w: Tensor,
    pub bias: Tensor,
}

/// One MBConv block: expand `[mid, c_in]` + bias, depthwise `[5, 5, mid]` + bias, SE at active widths,
/// project `[c_out, mid]` + bias, shortcut conv `[c_out, c_in]` when channels change.
#[derive(Clone, Copy, Debug)]
pub struct BlockWeights {
    pub expand: Option<(Tensor, Tensor)>,
    pub depthwise: Tensor,
    pub depthwise_bias: Tensor,
    pub se: Option<SeParams>,
    pub project: Tensor,
    pub project_bias: Tensor,
    pub shortcut: Option<Tensor>,
}

/// Head: final expand `[6c, c]` + bias, feature mix `[w, 6c]` (no bias), classifier `[classes, w]` + bias.
#[derive(Clone, Copy, Debug)]
pub struct HeadWeights {
    pub final_expand: Tensor,
    pub final_expand_bias: Tensor,
    pub feature_mix: Tensor,
    pub classifier: LinearParams,
}

/// How a PyTorch tensor maps to our layout.
#[derive(Clone, Copy, Debug)]
pub enum Conv {
    /// Row-major as is (1x1 convs `[out, in]`, linear, biases).
    Plain,
    /// `[c, 3, k, k]` -> `[k, k, 3, c]`.
    Stem { channels: usize, kernel: usize },
    /// `[c, 1, k, k]` -> `[5, 5, c]`, the k x k kernel centred.
    Depthwise { channels: usize, kernel: usize },
}

/// Hands out one device tensor per named source tensor, converted to our layout.
pub type Take<'a> = dyn FnMut(&str, Conv) -> Result<Tensor> + 'a;

fn convert(t: &TensorRecord, conv: Conv) -> Vec<f32> {
    let (layout, len) = match conv {
        Conv::Plain => return t.data.clone(),
        Conv::Stem { channels, kernel } => {
            (Layout::Stem { channels, in_channels: t.data.len() / (channels * kernel * kernel).max(1), kernel }, 0)
        }
        Conv::Depthwise { channels, kernel } => {
            (Layout::Depthwise { channels, kernel }, crate::backend::ops::depthwise::STORED_KERNEL.pow(2) * channels)
        }
    };
    let spec = ParamSpec {
        name: t.name.clone(),
        shape: Vec::new(),
        torch_shape: t.shape.clone(),
        layout,
        init: Init::Const(0.0),
        offset: 0,
        len: if len == 0 { t.data.len() } else { len },
    };
    spec.from_torch(&t.data)
}

/// Uploads the tensors `build` asks for (by name, from `records`) into one device allocation and
/// returns it with what `build` made of the handles. `build` runs twice with the same requests: once
/// to pack the host copy, once to cut the device tensors at the same offsets.
pub fn pack<B: Backend, T>(
    b: &B,
    records: &[TensorRecord],
    build: impl Fn(&mut Take<'_>) -> Result<T>,
) -> Result<(B::Memory, T)> {
    let by_name: HashMap<&str, &TensorRecord> = records.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut host: Vec<f32> = Vec::new();
    let mut spans: Vec<(String, usize, usize)> = Vec::new();
    let mut counting = Arena::measuring("folded weights");
    build(&mut |name: &str, conv: Conv| {
        let t = by_name
            .get(name)
            .ok_or_else(|| Error::Other(format!("folded model: no tensor '{name}' (is the subnet folded?)")))?;
        let data = convert(t, conv);
        let handle = counting.alloc(data.len())?;
        let start = counting.used() - data.len();
        host.resize(start, 0.0);
        host.extend_from_slice(&data);
        spans.push((name.to_string(), start, data.len()));
        Ok(handle)
    })?;
    let memory = b.alloc(host.len().max(1))?;
    b.upload(memory.tensor().slice(0, host.len())?, &host)?;
    let base = memory.tensor();
    let mut next = spans.into_iter();
    let value = build(&mut |name: &str, _conv: Conv| match next.next() {
        Some((n, start, len)) if n == name => base.slice(start, len),
        _ => Err(Error::Other(format!("folded model: tensor '{name}' requested out of order"))),
    })?;
    Ok((memory, value))
}

/// The stem's tensors (`c0` output channels of a `kernel` x `kernel` conv).
pub fn stem_weights(take: &mut Take<'_>, c0: usize, kernel: usize) -> Result<StemWeights> {
    Ok(StemWeights {
        w: take(&format!("{STEM}.conv.weight"), Conv::Stem { channels: c0, kernel })?,
        bias: take(&folded_bias(STEM), Conv::Plain)?,
    })
}

/// Active block `j`'s tensors.
pub fn block_weights(take: &mut Take<'_>, j: usize, blk: &ActiveBlock) -> Result<BlockWeights> {
    let p = block_prefix(j);
    let conv_bias = |take: &mut Take<'_>, layer: &str, conv: Conv| -> Result<(Tensor, Tensor)> {
        let prefix = format!("{p}.{layer}");
        Ok((take(&format!("{prefix}.conv.weight"), conv)?, take(&folded_bias(&prefix), Conv::Plain)?))
    };
    let expand = if blk.has_expand_conv { Some(conv_bias(take, "inverted_bottleneck", Conv::Plain)?) } else { None };
    let (depthwise, depthwise_bias) =
        conv_bias(take, "depth_conv", Conv::Depthwise { channels: blk.mid, kernel: blk.kernel })?;
    let se = if blk.se {
        let se = format!("{p}.depth_conv.se.fc");
        Some(SeParams {
            w_reduce: take(&format!("{se}.reduce.weight"), Conv::Plain)?,
            b_reduce: take(&format!("{se}.reduce.bias"), Conv::Plain)?,
            w_expand: take(&format!("{se}.expand.weight"), Conv::Plain)?,
            b_expand: take(&format!("{se}.expand.bias"), Conv::Plain)?,
        })
    } else {
        None
    };
    let (project, project_bias) = conv_bias(take, "point_linear", Conv::Plain)?;
    let shortcut = if blk.shortcut_conv { Some(take(&shortcut_weight(j), Conv::Plain)?) } else { None };
    Ok(BlockWeights { expand, depthwise, depthwise_bias, se, project, project_bias, shortcut })
}

/// The head's tensors.
pub fn head_weights(take: &mut Take<'_>) -> Result<HeadWeights> {
    Ok(HeadWeights {
        final_expand: take(&format!("{HEAD_EXPAND}.conv.weight"), Conv::Plain)?,
        final_expand_bias: take(&folded_bias(HEAD_EXPAND), Conv::Plain)?,
        feature_mix: take(&format!("{FEATURE_MIX}.conv.weight"), Conv::Plain)?,
        classifier: LinearParams {
            w: take(&format!("{CLASSIFIER}.weight"), Conv::Plain)?,
            bias: take(&format!("{CLASSIFIER}.bias"), Conv::Plain)?,
        },
    })
}

/// A whole folded subnet on a device.
pub struct FoldedModel<M: DeviceMemory> {
    pub space: Space,
    pub arch: Arch,
    _memory: M,
    pub stem: StemWeights,
    /// The active blocks in order, with their weights.
    pub blocks: Vec<(ActiveBlock, BlockWeights)>,
    pub head: HeadWeights,
}

impl<M: DeviceMemory> FoldedModel<M> {
    /// Uploads `arch`'s folded tensors (from [`super::fold::fold_bn`] or [`synthetic_subnet`]).
    pub fn upload<B: Backend<Memory = M>>(b: &B, space: &Space, arch: &Arch, folded: &[TensorRecord]) -> Result<Self> {
        space.validate(arch).map_err(Error::usage)?;
        let blocks: Vec<ActiveBlock> = space.active_blocks(arch).collect();
        let (memory, (stem, weights, head)) = pack(b, folded, |take| {
            let stem = stem_weights(take, arch.width[0], space.stem.kernel)?;
            let weights =
                blocks.iter().enumerate().map(|(j, blk)| block_weights(take, j, blk)).collect::<Result<Vec<_>>>()?;
            Ok((stem, weights, head_weights(take)?))
        })?;
        Ok(FoldedModel {
            space: space.clone(),
            arch: arch.clone(),
            _memory: memory,
            stem,
            blocks: blocks.into_iter().zip(weights).collect(),
            head,
        })
    }
}

/// `U(-a, a)` with `a = gain * sqrt(3 / fan_in)`: output variance `gain^2` times the input's.
fn unit_gain(rng: &mut impl Rng, n: usize, fan_in: usize, gain: f32) -> Vec<f32> {
    let a = gain * (3.0 / fan_in.max(1) as f32).sqrt();
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

fn small(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-0.1f32..0.1)).collect()
}

fn record(name: String, shape: Vec<usize>, data: Vec<f32>) -> TensorRecord {
    TensorRecord { name, shape, data }
}

/// Synthetic folded stem tensors (`c0` channels, `kernel` x `kernel`, 3 input channels).
pub fn synthetic_stem(c0: usize, kernel: usize, rng: &mut impl Rng) -> Vec<TensorRecord> {
    let fan_in = 3 * kernel * kernel;
    vec![
        record(format!("{STEM}.conv.weight"), vec![c0, 3, kernel, kernel], unit_gain(rng, c0 * fan_in, fan_in, 1.0)),
        record(folded_bias(STEM), vec![c0], small(rng, c0)),
    ]
}

/// Synthetic folded tensors of active block `j` (static names). The project conv has gain 0.5, so the
/// residual sums grow slowly over many blocks.
pub fn synthetic_block<R: Rng>(j: usize, blk: &ActiveBlock, rng: &mut R) -> Vec<TensorRecord> {
    let p = block_prefix(j);
    let mut out = Vec::new();
    let (c_in, mid, c_out, k) = (blk.c_in, blk.mid, blk.c_out, blk.kernel);
    let conv = |out: &mut Vec<TensorRecord>, rng: &mut R, layer: &str, shape: Vec<usize>, fan_in: usize, gain: f32| {
        let n: usize = shape.iter().product();
        let c = shape[0];
        out.push(record(format!("{p}.{layer}.conv.weight"), shape, unit_gain(rng, n, fan_in, gain)));
        out.push(record(folded_bias(&format!("{p}.{layer}")), vec![c], small(rng, c)));
    };
    if blk.has_expand_conv {
        conv(&mut out, rng, "inverted_bottleneck", vec![mid, c_in, 1, 1], c_in, 1.0);
    }
    conv(&mut out, rng, "depth_conv", vec![mid, 1, k, k], k * k, 1.0);
    if blk.se {
        let se = format!("{p}.depth_conv.se.fc");
        let s = blk.se_mid;
        out.push(record(format!("{se}.reduce.weight"), vec![s, mid, 1, 1], unit_gain(rng, s * mid, mid, 1.0)));
        out.push(record(format!("{se}.reduce.bias"), vec![s], small(rng, s)));
        out.push(record(format!("{se}.expand.weight"), vec![mid, s, 1, 1], unit_gain(rng, mid * s, s, 1.0)));
        out.push(record(format!("{se}.expand.bias"), vec![mid], small(rng, mid)));
    }
    conv(&mut out, rng, "point_linear", vec![c_out, mid, 1, 1], mid, 0.5);
    if blk.shortcut_conv {
        out.push(record(shortcut_weight(j), vec![c_out, c_in, 1, 1], unit_gain(rng, c_out * c_in, c_in, 1.0)));
    }
    out
}

/// Synthetic folded head tensors.
pub fn synthetic_head(h: &HeadShape, rng: &mut impl Rng) -> Vec<TensorRecord> {
    let (c, e, w, classes) = (h.c_in, h.expand, h.width, h.num_classes);
    vec![
        record(format!("{HEAD_EXPAND}.conv.weight"), vec![e, c, 1, 1], unit_gain(rng, e * c, c, 1.0)),
        record(folded_bias(HEAD_EXPAND), vec![e], small(rng, e)),
        record(format!("{FEATURE_MIX}.conv.weight"), vec![w, e, 1, 1], unit_gain(rng, w * e, e, 1.0)),
        record(format!("{CLASSIFIER}.weight"), vec![classes, w], unit_gain(rng, classes * w, w, 1.0)),
        record(format!("{CLASSIFIER}.bias"), vec![classes], small(rng, classes)),
    ]
}

/// A whole synthetic folded subnet of `arch` (seeded: same seed, same values).
pub fn synthetic_subnet(space: &Space, arch: &Arch, seed: u64) -> Result<Vec<TensorRecord>> {
    space.validate(arch).map_err(Error::usage)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = synthetic_stem(arch.width[0], space.stem.kernel, &mut rng);
    for (j, blk) in space.active_blocks(arch).enumerate() {
        out.extend(synthetic_block(j, &blk, &mut rng));
    }
    out.extend(synthetic_head(&space.head_shape(arch), &mut rng));
    Ok(out)
}
