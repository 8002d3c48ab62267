//! The supernet's parameter and buffer table: every tensor AttentiveNAS's PyTorch state dict holds
//! (same names, spec 1.2-1.5), its shape in our layout and in PyTorch's, its initialisation, and its
//! offset in the one flat arena that holds all parameters (gradients and momentum use the same
//! offsets in their own arenas).
//!
//! Names: `first_conv.conv.conv.weight`, `first_conv.bn.bn.{weight,bias}`,
//! `blocks.{i}.mobile_inverted_conv.{inverted_bottleneck,depth_conv,point_linear}.{conv.conv.weight,bn.bn.*}`,
//! `blocks.{i}.mobile_inverted_conv.depth_conv.se.fc.{reduce,expand}.{weight,bias}`,
//! `blocks.{i}.shortcut.conv.conv.weight` (allocated for every block, used only when channels change),
//! `last_conv.final_expand_layer.{conv.conv.weight,bn.bn.*}`, `last_conv.feature_mix_layer.conv.conv.weight`,
//! `classifier.linear.linear.{weight,bias}`; BN running statistics `*.bn.bn.running_{mean,var}` are
//! buffers. `num_batches_tracked` and the unused `bn_tracking` buffers are not kept.
//!
//! Layout permutations (everything else is PyTorch's own row-major layout, 1x1 convs as `[out, in]`):
//! - depthwise `[C, 1, k, k]` (k the stage's max kernel, as PyTorch allocates it) -> ours `[5, 5, C]`
//!   with the k x k kernel centred (o = (5 - k) / 2): `ours[((ky+o)*5 + kx+o)*C + c] = torch[c][0][ky][kx]`;
//!   the ring outside it (k < 5 only) is never read and stays 0;
//! - stem `[C, 3, 3, 3]` -> ours `[3, 3, 3, C]`: `ours[((ky*3+kx)*3+ci)*C + co] = torch[co][ci][ky][kx]`.
//!
//! Arena order: all weights (conv and linear) first, then BN affine parameters and biases, so the
//! recipe's two weight-decay groups are two contiguous runs (one optimizer launch each).

use std::collections::HashMap;

use crate::backend::arena::ARENA_ALIGN_ELEMS;
use crate::error::{Error, Result};
use crate::space::Space;

/// How our layout of a tensor relates to PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Identical (row-major, same shape up to trailing 1x1 dims).
    Plain,
    /// Depthwise conv: torch `[C, 1, k, k]`, ours `[5, 5, C]` with the k x k kernel at its centre.
    Depthwise { channels: usize, kernel: usize },
    /// Stem conv: torch `[C, cin, k, k]`, ours `[k, k, cin, C]`.
    Stem { channels: usize, in_channels: usize, kernel: usize },
}

/// The initial value of a tensor (spec 1.5: PyTorch's defaults, zero gamma on each block's projection BN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (conv and linear weights).
    KaimingUniform {
        fan_in: usize,
    },
    /// Default conv/linear bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    BiasUniform {
        fan_in: usize,
    },
    Const(f32),
}

/// One named tensor of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    /// Shape in our layout.
    pub shape: Vec<usize>,
    /// Shape in AttentiveNAS's state dict.
    pub torch_shape: Vec<usize>,
    pub layout: Layout,
    pub init: Init,
    /// Offset in the arena (elements).
    pub offset: usize,
    pub len: usize,
}

/// (channel, torch tap ky * k + kx, our index) of every weight of a k x k depthwise kernel stored
/// centred in our `[5, 5, channels]`.
fn depthwise_taps(channels: usize, kernel: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let off = (STORED_DW_KERNEL - kernel) / 2;
    (0..channels).flat_map(move |c| {
        (0..kernel * kernel).map(move |tap| {
            let (ky, kx) = (tap / kernel + off, tap % kernel + off);
            (c, tap, (ky * STORED_DW_KERNEL + kx) * channels + c)
        })
    })
}

impl ParamSpec {
    /// Elements in PyTorch's layout (fewer than `len` for a depthwise kernel below 5 x 5).
    pub fn torch_len(&self) -> usize {
        self.torch_shape.iter().product()
    }

    /// Our layout -> PyTorch's (a copy in PyTorch's element order).
    pub fn to_torch(&self, ours: &[f32]) -> Vec<f32> {
        match self.layout {
            Layout::Plain => ours.to_vec(),
            Layout::Depthwise { channels, kernel } => {
                let mut t = vec![0.0; self.torch_len()];
                for (c, tap, o) in depthwise_taps(channels, kernel) {
                    t[c * kernel * kernel + tap] = ours[o];
                }
                t
            }
            Layout::Stem { channels, in_channels, kernel } => {
                let taps = kernel * kernel;
                let mut t = vec![0.0; ours.len()];
                for co in 0..channels {
                    for ci in 0..in_channels {
                        for tap in 0..taps {
                            t[(co * in_channels + ci) * taps + tap] = ours[(tap * in_channels + ci) * channels + co];
                        }
                    }
                }
                t
            }
        }
    }

    /// PyTorch's layout -> ours.
    pub fn from_torch(&self, torch: &[f32]) -> Vec<f32> {
        match self.layout {
            Layout::Plain => torch.to_vec(),
            Layout::Depthwise { channels, kernel } => {
                let mut o = vec![0.0; self.len];
                for (c, tap, at) in depthwise_taps(channels, kernel) {
                    o[at] = torch[c * kernel * kernel + tap];
                }
                o
            }
            Layout::Stem { channels, in_channels, kernel } => {
                let taps = kernel * kernel;
                let mut o = vec![0.0; torch.len()];
                for co in 0..channels {
                    for ci in 0..in_channels {
                        for tap in 0..taps {
                            o[(tap * in_channels + ci) * channels + co] = torch[(co * in_channels + ci) * taps + tap];
                        }
                    }
                }
                o
            }
        }
    }
}

/// Every parameter and buffer of a space's supernet, with arena offsets.
#[derive(Clone, Debug)]
pub struct ParamTable {
    pub params: Vec<ParamSpec>,
    /// BN running statistics (not trained; recalibrated after training).
    pub buffers: Vec<ParamSpec>,
    /// Arena lengths (elements, aligned).
    pub params_len: usize,
    pub buffers_len: usize,
    /// First element of the no-decay run (BN affine and biases); weights lie before it.
    pub no_decay_start: usize,
    index: HashMap<String, (bool, usize)>,
}

/// Collects specs in two runs (decayed weights, then the rest) before offsets are assigned.
#[derive(Default)]
struct Builder {
    weights: Vec<ParamSpec>,
    others: Vec<ParamSpec>,
    buffers: Vec<ParamSpec>,
}

fn spec(name: String, shape: Vec<usize>, torch_shape: Vec<usize>, layout: Layout, init: Init) -> ParamSpec {
    let len = shape.iter().product();
    ParamSpec { name, shape, torch_shape, layout, init, offset: 0, len }
}

impl Builder {
    fn conv1x1(&mut self, prefix: &str, c_out: usize, c_in: usize) {
        self.weights.push(spec(
            format!("{prefix}.conv.conv.weight"),
            vec![c_out, c_in],
            vec![c_out, c_in, 1, 1],
            Layout::Plain,
            Init::KaimingUniform { fan_in: c_in },
        ));
    }

    fn bn(&mut self, prefix: &str, c: usize, zero_gamma: bool) {
        let p = format!("{prefix}.bn.bn");
        let gamma = if zero_gamma { 0.0 } else { 1.0 };
        self.others.push(spec(format!("{p}.weight"), vec![c], vec![c], Layout::Plain, Init::Const(gamma)));
        self.others.push(spec(format!("{p}.bias"), vec![c], vec![c], Layout::Plain, Init::Const(0.0)));
        self.buffers.push(spec(format!("{p}.running_mean"), vec![c], vec![c], Layout::Plain, Init::Const(0.0)));
        self.buffers.push(spec(format!("{p}.running_var"), vec![c], vec![c], Layout::Plain, Init::Const(1.0)));
    }

    fn se_conv(&mut self, prefix: &str, c_out: usize, c_in: usize) {
        self.weights.push(spec(
            format!("{prefix}.weight"),
            vec![c_out, c_in],
            vec![c_out, c_in, 1, 1],
            Layout::Plain,
            Init::KaimingUniform { fan_in: c_in },
        ));
        self.others.push(spec(
            format!("{prefix}.bias"),
            vec![c_out],
            vec![c_out],
            Layout::Plain,
            Init::BiasUniform { fan_in: c_in },
        ));
    }
}

fn assign(specs: &mut [ParamSpec], start: usize) -> usize {
    let mut at = start;
    for s in specs {
        s.offset = at;
        at = (at + s.len).div_ceil(ARENA_ALIGN_ELEMS) * ARENA_ALIGN_ELEMS;
    }
    at
}

/// Side of the stored depthwise kernel (kernel 3 is its centre).
pub const STORED_DW_KERNEL: usize = 5;

impl ParamTable {
    /// The table of `space`'s supernet. Errors if the space has a layer this model cannot build.
    pub fn new(space: &Space) -> Result<ParamTable> {
        if space.in_channels != 3 || space.stem.kernel != 3 || space.stem.stride != 2 {
            return Err(Error::usage(format!(
                "space '{}': the stem kernel is a 3x3 stride-2 conv on 3 input channels (the loader delivers RGB, \
                 grey images replicated); got in_channels {}, kernel {}, stride {}",
                space.name, space.in_channels, space.stem.kernel, space.stem.stride
            )));
        }
        if space.stages.iter().any(|s| s.max_kernel() > STORED_DW_KERNEL || s.kernel.iter().any(|k| k % 2 == 0)) {
            return Err(Error::usage(format!(
                "space '{}': depthwise kernels must be odd and at most {STORED_DW_KERNEL}",
                space.name
            )));
        }
        let mut b = Builder::default();
        let c0 = space.stem.width.iter().copied().max().unwrap_or(0);
        b.weights.push(spec(
            "first_conv.conv.conv.weight".into(),
            vec![3, 3, 3, c0],
            vec![c0, 3, 3, 3],
            Layout::Stem { channels: c0, in_channels: 3, kernel: 3 },
            Init::KaimingUniform { fan_in: 27 },
        ));
        b.bn("first_conv", c0, false);
        for blk in space.stored_blocks() {
            let p = format!("blocks.{}.mobile_inverted_conv", blk.global);
            let mid = blk.max_mid;
            if blk.has_expand_conv {
                b.conv1x1(&format!("{p}.inverted_bottleneck"), mid, blk.max_c_in);
                b.bn(&format!("{p}.inverted_bottleneck"), mid, false);
            }
            // PyTorch allocates the stage's max kernel; we store every kernel in a centred 5 x 5
            let (k, ks) = (blk.max_kernel, STORED_DW_KERNEL);
            b.weights.push(spec(
                format!("{p}.depth_conv.conv.conv.weight"),
                vec![ks, ks, mid],
                vec![mid, 1, k, k],
                Layout::Depthwise { channels: mid, kernel: k },
                Init::KaimingUniform { fan_in: k * k },
            ));
            b.bn(&format!("{p}.depth_conv"), mid, false);
            if blk.se {
                b.se_conv(&format!("{p}.depth_conv.se.fc.reduce"), blk.max_se_mid, mid);
                b.se_conv(&format!("{p}.depth_conv.se.fc.expand"), mid, blk.max_se_mid);
            }
            b.conv1x1(&format!("{p}.point_linear"), blk.max_c_out, mid);
            b.bn(&format!("{p}.point_linear"), blk.max_c_out, true);
            b.conv1x1(&format!("blocks.{}.shortcut", blk.global), blk.max_c_out, blk.max_c_in);
        }
        let c_last = space.stages.last().map_or(c0, |s| s.max_width());
        let fe = c_last * space.head.expand_ratio;
        let w_head = space.head.width.iter().copied().max().unwrap_or(0);
        b.conv1x1("last_conv.final_expand_layer", fe, c_last);
        b.bn("last_conv.final_expand_layer", fe, false);
        b.conv1x1("last_conv.feature_mix_layer", w_head, fe);
        let classes = space.num_classes;
        b.weights.push(spec(
            "classifier.linear.linear.weight".into(),
            vec![classes, w_head],
            vec![classes, w_head],
            Layout::Plain,
            Init::KaimingUniform { fan_in: w_head },
        ));
        b.others.push(spec(
            "classifier.linear.linear.bias".into(),
            vec![classes],
            vec![classes],
            Layout::Plain,
            Init::BiasUniform { fan_in: w_head },
        ));

        let no_decay_start = assign(&mut b.weights, 0);
        let params_len = assign(&mut b.others, no_decay_start);
        let buffers_len = assign(&mut b.buffers, 0);
        let mut params = b.weights;
        params.extend(b.others);
        let mut index = HashMap::new();
        for (i, p) in params.iter().enumerate() {
            index.insert(p.name.clone(), (true, i));
        }
        for (i, p) in b.buffers.iter().enumerate() {
            index.insert(p.name.clone(), (false, i));
        }
        Ok(ParamTable { params, buffers: b.buffers, params_len, buffers_len, no_decay_start, index })
    }

    /// A parameter by name.
    pub fn param(&self, name: &str) -> Result<&ParamSpec> {
        match self.index.get(name) {
            Some(&(true, i)) => Ok(&self.params[i]),
            _ => Err(Error::Other(format!("supernet has no parameter '{name}'"))),
        }
    }

    /// A buffer (running statistic) by name.
    pub fn buffer(&self, name: &str) -> Result<&ParamSpec> {
        match self.index.get(name) {
            Some(&(false, i)) => Ok(&self.buffers[i]),
            _ => Err(Error::Other(format!("supernet has no buffer '{name}'"))),
        }
    }

    /// A parameter or buffer by name, and whether it is a parameter.
    pub fn lookup(&self, name: &str) -> Option<(&ParamSpec, bool)> {
        self.index
            .get(name)
            .map(|&(is_param, i)| if is_param { (&self.params[i], true) } else { (&self.buffers[i], false) })
    }

    /// Learnable parameter count (PyTorch's: without alignment gaps and unused depthwise rings).
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.torch_len()).sum()
    }
}
