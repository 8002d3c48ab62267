//! The inference forward of a BN-folded static subnet ([`super::model::FoldedModel`]) on any backend:
//! eval mode with no BN layers left, each conv followed by the fused bias + activation epilogue
//! (`kernels/bias.cu`), and no training buffers (no saved statistics, no masks, no gradient scratch).
//!
//! Per layer (NHWC, P = n * h * w of the layer; every op the supernet already has):
//! - resize (only when the input side differs from the resolution): bicubic `[n, side, side, 3]` ->
//!   `[n, r, r, 3]`;
//! - stem: 3x3 stride-2 conv -> pre `[P, c0]`; bias + swish -> out;
//! - block: [1x1 expand GEMM -> `[P_in, mid]`, bias + swish], depthwise k x k (stride s) -> `[P_out, mid]`,
//!   bias + swish, [SE], 1x1 project GEMM -> `[P_out, c_out]` with its bias added in place, shortcut
//!   ([2x2 pool] [1x1 conv]) and the residual add -> out `[P_out, c_out]`;
//! - head: 1x1 final expand GEMM, bias + swish, global pool `[n, 6c]`, feature mix GEMM, swish `[n, w]`,
//!   classifier (GEMM + bias) -> logits `[n, classes]`.
//!
//! Each layer is planned ([`StemPlan::allocate`], ...) and run ([`run_stem`], ...) on its own, so the
//! latency table times one layer exactly as the whole forward ([`forward`]) runs it.

use super::model::{BlockWeights, FoldedModel, HeadWeights, StemWeights};
use crate::backend::ops::bias::{BiasAct, BiasActSpec};
use crate::backend::ops::depthwise::DepthwiseShape;
use crate::backend::ops::linear::LinearShape;
use crate::backend::ops::pool::PoolShape;
use crate::backend::ops::resize::ResizeShape;
use crate::backend::ops::se::SeShape;
use crate::backend::ops::stem_conv::StemShape;
use crate::backend::{Arena, DeviceMemory, GemmSpec, SupernetOps, Tensor};
use crate::error::{Error, Result};
use crate::space::{ActiveBlock, Arch, HeadShape, Space};

/// The model's own bicubic resize of the input batch.
#[derive(Clone, Copy, Debug)]
pub struct ResizePlan {
    pub shape: ResizeShape,
    pub input: Tensor,
    pub out: Tensor,
}

#[derive(Clone, Copy, Debug)]
pub struct StemPlan {
    pub shape: StemShape,
    /// `[n, r, r, 3]`.
    pub input: Tensor,
    pub pre: Tensor,
    pub out: Tensor,
}

#[derive(Clone, Copy, Debug)]
pub struct BlockPlan {
    pub blk: ActiveBlock,
    pub n: usize,
    /// Block input `[P_in, c_in]`.
    pub x: Tensor,
    /// Expand pre-activation and output `[P_in, mid]`.
    pub expand: Option<(Tensor, Tensor)>,
    pub dw: DepthwiseShape,
    pub dw_pre: Tensor,
    pub dw_out: Tensor,
    /// SE shape, output and intermediates.
    pub se: Option<(SeShape, Tensor, Tensor)>,
    /// Project output `[P_out, c_out]` (bias added in place).
    pub project: Tensor,
    pub sc_pool: Option<Tensor>,
    pub sc_conv: Option<Tensor>,
    pub out: Tensor,
}

#[derive(Clone, Copy, Debug)]
pub struct HeadPlan {
    pub shape: HeadShape,
    pub n: usize,
    /// Last block output `[n * size^2, c]`.
    pub x: Tensor,
    pub fe_pre: Tensor,
    pub fe_out: Tensor,
    pub pooled: Tensor,
    pub fm_pre: Tensor,
    pub fm_out: Tensor,
    /// `[n, classes]`.
    pub logits: Tensor,
}

/// Every buffer of one subnet's inference forward on `n` images.
#[derive(Clone, Debug)]
pub struct InferPlan {
    pub arch: Arch,
    pub n: usize,
    pub resize: Option<ResizePlan>,
    pub stem: StemPlan,
    pub blocks: Vec<BlockPlan>,
    pub head: HeadPlan,
}

impl ResizePlan {
    pub fn allocate<M: DeviceMemory>(
        n: usize,
        side: usize,
        r: usize,
        input: Tensor,
        arena: &mut Arena<M>,
    ) -> Result<Self> {
        let shape = ResizeShape { n, c: 3, h_in: side, w_in: side, h_out: r, w_out: r };
        Ok(ResizePlan { shape, input: input.slice(0, shape.input_len())?, out: arena.alloc(shape.output_len())? })
    }
}

impl StemPlan {
    /// The stem of `c0` channels at resolution `r` on `input` (`[n, r, r, 3]`).
    pub fn allocate<M: DeviceMemory>(
        n: usize,
        r: usize,
        c0: usize,
        input: Tensor,
        arena: &mut Arena<M>,
    ) -> Result<Self> {
        let shape = StemShape { n, h: r, w: r, c_out_active: c0, c_out_stored: c0 };
        shape.validate()?;
        let out_len = shape.output_len();
        Ok(StemPlan {
            shape,
            input: input.slice(0, shape.input_len())?,
            pre: arena.alloc(out_len)?,
            out: arena.alloc(out_len)?,
        })
    }
}

impl BlockPlan {
    /// Block `blk` on `x` (`[n * size_in^2, c_in]`).
    pub fn allocate<M: DeviceMemory>(blk: &ActiveBlock, n: usize, x: Tensor, arena: &mut Arena<M>) -> Result<Self> {
        let (p_in, p_out) = (n * blk.size_in * blk.size_in, n * blk.size_out * blk.size_out);
        let expand =
            if blk.has_expand_conv { Some((arena.alloc(p_in * blk.mid)?, arena.alloc(p_in * blk.mid)?)) } else { None };
        let dw = DepthwiseShape {
            n,
            h: blk.size_in,
            w: blk.size_in,
            c_active: blk.mid,
            c_stored: blk.mid,
            kernel: blk.kernel,
            stride: blk.stride,
        };
        dw.validate()?;
        let se = if blk.se {
            let s = SeShape {
                n,
                h: blk.size_out,
                w: blk.size_out,
                c: blk.mid,
                c_stored: blk.mid,
                se: blk.se_mid,
                se_stored: blk.se_mid,
            };
            Some((s, arena.alloc(p_out * blk.mid)?, arena.alloc(s.saved_len())?))
        } else {
            None
        };
        Ok(BlockPlan {
            blk: *blk,
            n,
            x: x.slice(0, p_in * blk.c_in)?,
            expand,
            dw,
            dw_pre: arena.alloc(p_out * blk.mid)?,
            dw_out: arena.alloc(p_out * blk.mid)?,
            se,
            project: arena.alloc(p_out * blk.c_out)?,
            sc_pool: if !blk.identity_shortcut && blk.stride == 2 {
                Some(arena.alloc(p_out * blk.c_in)?)
            } else {
                None
            },
            sc_conv: if blk.shortcut_conv { Some(arena.alloc(p_out * blk.c_out)?) } else { None },
            out: arena.alloc(p_out * blk.c_out)?,
        })
    }

    fn pixels_in(&self) -> usize {
        self.n * self.blk.size_in * self.blk.size_in
    }
    fn pixels_out(&self) -> usize {
        self.n * self.blk.size_out * self.blk.size_out
    }
}

impl HeadPlan {
    /// The head of `shape` on `x` (`[n * size^2, c_in]`).
    pub fn allocate<M: DeviceMemory>(shape: &HeadShape, n: usize, x: Tensor, arena: &mut Arena<M>) -> Result<Self> {
        let p = n * shape.size * shape.size;
        Ok(HeadPlan {
            shape: *shape,
            n,
            x: x.slice(0, p * shape.c_in)?,
            fe_pre: arena.alloc(p * shape.expand)?,
            fe_out: arena.alloc(p * shape.expand)?,
            pooled: arena.alloc(n * shape.expand)?,
            fm_pre: arena.alloc(n * shape.width)?,
            fm_out: arena.alloc(n * shape.width)?,
            logits: arena.alloc(n * shape.num_classes)?,
        })
    }
}

impl InferPlan {
    /// Plans `arch`'s forward on `input` (`[n, side, side, 3]`, normalised; resized to the resolution
    /// first when `side` differs from it).
    pub fn allocate<M: DeviceMemory>(
        space: &Space,
        arch: &Arch,
        n: usize,
        input: Tensor,
        side: usize,
        arena: &mut Arena<M>,
    ) -> Result<Self> {
        space.validate(arch).map_err(Error::usage)?;
        if n == 0 {
            return Err(Error::usage("a forward needs at least one image (batch size 0)"));
        }
        input.require("inference input [n, side, side, 3]", n * side * side * 3)?;
        let r = arch.resolution;
        let resize = if side != r { Some(ResizePlan::allocate(n, side, r, input, arena)?) } else { None };
        let stem = StemPlan::allocate(n, r, arch.width[0], resize.map_or(input, |p| p.out), arena)?;
        let mut x = stem.out;
        let mut blocks = Vec::new();
        for blk in space.active_blocks(arch) {
            let plan = BlockPlan::allocate(&blk, n, x, arena)?;
            x = plan.out;
            blocks.push(plan);
        }
        let head = HeadPlan::allocate(&space.head_shape(arch), n, x, arena)?;
        Ok(InferPlan { arch: arch.clone(), n, resize, stem, blocks, head })
    }
}

/// Activation-arena elements of the largest subnet's inference forward on `n` images of side `side`
/// (the input itself lives elsewhere), plus one alignment step.
pub fn infer_arena_len(space: &Space, n: usize, side: usize) -> Result<usize> {
    let mut arena = Arena::measuring("inference plan");
    let input = arena.alloc(n * side * side * 3)?;
    let before = arena.used();
    // The max arch is at least as large as any subnet in every buffer, so every plan fits.
    InferPlan::allocate(space, &space.max_arch(), n, input, side, &mut arena)?;
    Ok(arena.used() - before + crate::backend::arena::ARENA_ALIGN_ELEMS)
}

fn bias_act<B: SupernetOps>(
    b: &B,
    rows: usize,
    cols: usize,
    act: BiasAct,
    pre: Tensor,
    bias: Tensor,
    out: Tensor,
) -> Result<()> {
    b.bias_act_fwd(&BiasActSpec { rows, cols, act }, pre, bias, out)
}

pub fn run_resize<B: SupernetOps>(b: &B, p: &ResizePlan) -> Result<()> {
    b.bicubic_resize_fwd(&p.shape, p.input, p.out)
}

pub fn run_stem<B: SupernetOps>(b: &B, p: &StemPlan, w: &StemWeights) -> Result<()> {
    b.stem_conv_fwd(&p.shape, p.input, w.w, p.pre)?;
    let pixels = p.shape.n * p.shape.out_h() * p.shape.out_w();
    bias_act(b, pixels, p.shape.c_out_active, BiasAct::Swish, p.pre, w.bias, p.out)
}

pub fn run_block<B: SupernetOps>(b: &B, p: &BlockPlan, w: &BlockWeights) -> Result<()> {
    let blk = &p.blk;
    let (p_in, p_out) = (p.pixels_in(), p.pixels_out());
    let mut dw_in = p.x;
    if let (Some((pre, out)), Some((we, be))) = (p.expand, w.expand) {
        b.gemm(&GemmSpec::pointwise_fwd(p_in, blk.c_in, blk.mid, blk.c_in), p.x, we, pre)?;
        bias_act(b, p_in, blk.mid, BiasAct::Swish, pre, be, out)?;
        dw_in = out;
    }
    b.depthwise_fwd(&p.dw, dw_in, w.depthwise, p.dw_pre)?;
    bias_act(b, p_out, blk.mid, BiasAct::Swish, p.dw_pre, w.depthwise_bias, p.dw_out)?;
    let mut pl_in = p.dw_out;
    if let (Some((shape, out, saved)), Some(se)) = (p.se, w.se.as_ref()) {
        b.se_fwd(&shape, p.dw_out, se, out, saved)?;
        pl_in = out;
    }
    b.gemm(&GemmSpec::pointwise_fwd(p_out, blk.mid, blk.c_out, blk.mid), pl_in, w.project, p.project)?;
    b.bias_add_inplace(p_out, blk.c_out, p.project, w.project_bias)?;
    if let Some(pool) = p.sc_pool {
        b.avg_pool2_fwd(&PoolShape { n: p.n, h: blk.size_in, w: blk.size_in, c: blk.c_in }, p.x, pool)?;
    }
    let sc_in = p.sc_pool.unwrap_or(p.x);
    let shortcut = match (p.sc_conv, w.shortcut) {
        (Some(conv), Some(ws)) => {
            b.gemm(&GemmSpec::pointwise_fwd(p_out, blk.c_in, blk.c_out, blk.c_in), sc_in, ws, conv)?;
            conv
        }
        _ => sc_in,
    };
    b.residual_add_fwd(p.project, shortcut, p.out)
}

pub fn run_head<B: SupernetOps>(b: &B, p: &HeadPlan, w: &HeadWeights) -> Result<()> {
    let s = &p.shape;
    let pixels = p.n * s.size * s.size;
    b.gemm(&GemmSpec::pointwise_fwd(pixels, s.c_in, s.expand, s.c_in), p.x, w.final_expand, p.fe_pre)?;
    bias_act(b, pixels, s.expand, BiasAct::Swish, p.fe_pre, w.final_expand_bias, p.fe_out)?;
    b.global_avg_pool_fwd(&PoolShape { n: p.n, h: s.size, w: s.size, c: s.expand }, p.fe_out, p.pooled)?;
    b.gemm(&GemmSpec::pointwise_fwd(p.n, s.expand, s.width, s.expand), p.pooled, w.feature_mix, p.fm_pre)?;
    b.swish_fwd(p.fm_pre, p.fm_out)?;
    let lin = LinearShape { rows: p.n, in_active: s.width, in_stored: s.width, out: s.num_classes };
    b.linear_fwd(&lin, p.fm_out, w.classifier, p.logits)
}

/// The whole forward of `model` over `plan` (planned for the same arch); logits in `plan.head.logits`.
pub fn forward<B: SupernetOps>(b: &B, plan: &InferPlan, model: &FoldedModel<B::Memory>) -> Result<()> {
    if plan.arch != model.arch || plan.blocks.len() != model.blocks.len() {
        return Err(Error::Other("inference plan and folded model are of different subnets".into()));
    }
    if let Some(r) = &plan.resize {
        run_resize(b, r)?;
    }
    run_stem(b, &plan.stem, &model.stem)?;
    for (p, (_, w)) in plan.blocks.iter().zip(&model.blocks) {
        run_block(b, p, w)?;
    }
    run_head(b, &plan.head, &model.head)
}
