//! Typed views of one arena laid out by a [`ParamTable`]: the same struct addresses the parameters, their
//! gradients or the momentum (each arena has the same offsets), and [`NetStats`] the BN running statistics.

use super::params::ParamTable;
use crate::backend::ops::batchnorm::BnParams;
use crate::backend::ops::linear::LinearParams;
use crate::backend::ops::se::SeParams;
use crate::backend::Tensor;
use crate::error::Result;
use crate::space::Space;

/// A BN layer's affine pair (parameters or their gradients).
#[derive(Clone, Copy, Debug)]
pub struct Bn {
    pub gamma: Tensor,
    pub beta: Tensor,
}

impl Bn {
    pub fn params(self) -> BnParams {
        BnParams { gamma: self.gamma, beta: self.beta }
    }
}

/// A BN layer's running statistics.
#[derive(Clone, Copy, Debug)]
pub struct RunningStats {
    pub mean: Tensor,
    pub var: Tensor,
}

#[derive(Clone, Copy, Debug)]
pub struct StemTensors {
    /// [3, 3, 3, c0_stored]
    pub w: Tensor,
    pub bn: Bn,
}

#[derive(Clone, Copy, Debug)]
pub struct BlockTensors {
    /// 1x1 expand [mid_stored, c_in_stored] and its BN (absent when the stage never expands).
    pub expand: Option<(Tensor, Bn)>,
    /// Depthwise [5, 5, mid_stored].
    pub depthwise: Tensor,
    pub depthwise_bn: Bn,
    pub se: Option<SeParams>,
    /// 1x1 project [c_out_stored, mid_stored].
    pub project: Tensor,
    pub project_bn: Bn,
    /// 1x1 shortcut [c_out_stored, c_in_stored].
    pub shortcut: Tensor,
}

#[derive(Clone, Copy, Debug)]
pub struct HeadTensors {
    /// 1x1 final expand [6 c_last, c_last] and its BN.
    pub final_expand: Tensor,
    pub final_expand_bn: Bn,
    /// 1x1 feature mix [w_head, 6 c_last] (no BN).
    pub feature_mix: Tensor,
    pub classifier: LinearParams,
}

/// Every parameter (or gradient, or momentum) tensor of the supernet.
#[derive(Clone, Debug)]
pub struct NetTensors {
    pub stem: StemTensors,
    pub blocks: Vec<BlockTensors>,
    pub head: HeadTensors,
}

#[derive(Clone, Copy, Debug)]
pub struct BlockStats {
    pub expand: Option<RunningStats>,
    pub depthwise: RunningStats,
    pub project: RunningStats,
}

/// Every BN running statistic of the supernet.
#[derive(Clone, Debug)]
pub struct NetStats {
    pub stem: RunningStats,
    pub blocks: Vec<BlockStats>,
    pub final_expand: RunningStats,
}

fn bn_prefix(block: usize, part: &str) -> String {
    format!("blocks.{block}.mobile_inverted_conv.{part}")
}

impl NetTensors {
    /// Views into `base`, an arena of `table.params_len` elements.
    pub fn new(space: &Space, table: &ParamTable, base: Tensor) -> Result<NetTensors> {
        let t = |name: &str| -> Result<Tensor> {
            let p = table.param(name)?;
            base.slice(p.offset, p.len)
        };
        let bn = |prefix: &str| -> Result<Bn> {
            Ok(Bn { gamma: t(&format!("{prefix}.bn.bn.weight"))?, beta: t(&format!("{prefix}.bn.bn.bias"))? })
        };
        let stem = StemTensors { w: t("first_conv.conv.conv.weight")?, bn: bn("first_conv")? };
        let mut blocks = Vec::new();
        for blk in space.stored_blocks() {
            let g = blk.global;
            let expand = if blk.has_expand_conv {
                let p = bn_prefix(g, "inverted_bottleneck");
                Some((t(&format!("{p}.conv.conv.weight"))?, bn(&p)?))
            } else {
                None
            };
            let dw = bn_prefix(g, "depth_conv");
            let se = if blk.se {
                Some(SeParams {
                    w_reduce: t(&format!("{dw}.se.fc.reduce.weight"))?,
                    b_reduce: t(&format!("{dw}.se.fc.reduce.bias"))?,
                    w_expand: t(&format!("{dw}.se.fc.expand.weight"))?,
                    b_expand: t(&format!("{dw}.se.fc.expand.bias"))?,
                })
            } else {
                None
            };
            let pl = bn_prefix(g, "point_linear");
            blocks.push(BlockTensors {
                expand,
                depthwise: t(&format!("{dw}.conv.conv.weight"))?,
                depthwise_bn: bn(&dw)?,
                se,
                project: t(&format!("{pl}.conv.conv.weight"))?,
                project_bn: bn(&pl)?,
                shortcut: t(&format!("blocks.{g}.shortcut.conv.conv.weight"))?,
            });
        }
        let head = HeadTensors {
            final_expand: t("last_conv.final_expand_layer.conv.conv.weight")?,
            final_expand_bn: bn("last_conv.final_expand_layer")?,
            feature_mix: t("last_conv.feature_mix_layer.conv.conv.weight")?,
            classifier: LinearParams {
                w: t("classifier.linear.linear.weight")?,
                bias: t("classifier.linear.linear.bias")?,
            },
        };
        Ok(NetTensors { stem, blocks, head })
    }
}

impl NetStats {
    /// Views into `base`, an arena of `table.buffers_len` elements.
    pub fn new(space: &Space, table: &ParamTable, base: Tensor) -> Result<NetStats> {
        let rs = |prefix: &str| -> Result<RunningStats> {
            let m = table.buffer(&format!("{prefix}.bn.bn.running_mean"))?;
            let v = table.buffer(&format!("{prefix}.bn.bn.running_var"))?;
            Ok(RunningStats { mean: base.slice(m.offset, m.len)?, var: base.slice(v.offset, v.len)? })
        };
        let mut blocks = Vec::new();
        for blk in space.stored_blocks() {
            let g = blk.global;
            blocks.push(BlockStats {
                expand: if blk.has_expand_conv { Some(rs(&bn_prefix(g, "inverted_bottleneck"))?) } else { None },
                depthwise: rs(&bn_prefix(g, "depth_conv"))?,
                project: rs(&bn_prefix(g, "point_linear"))?,
            });
        }
        Ok(NetStats { stem: rs("first_conv")?, blocks, final_expand: rs("last_conv.final_expand_layer")? })
    }
}
