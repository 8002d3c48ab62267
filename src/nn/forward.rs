//! The supernet forward of one subnet over a planned [`Tape`] (spec 1.2-1.4): bicubic resize to the
//! subnet's resolution, stem conv + BN + swish, the active MBConv blocks (expand, depthwise, SE,
//! project, drop-connect, shortcut), the MobileNetV3 head (final expand + BN + swish, global pool,
//! feature mix + swish, dropout, classifier). Written once against the op traits.
//!
//! Precision: the trunk's activations are stored as the tape's dtype (f32 or bf16, see
//! [`Tape::dtype`]); the 1x1 convs of the trunk read their weights from `gemm_weights`, the parameters
//! themselves in f32 and their bf16 copies in bf16 (cuBLAS GemmEx wants A and B alike); everything else
//! reads the f32 parameters.

use super::handles::{Bn, NetStats, NetTensors, RunningStats};
use super::tape::{BnMode, Tape};
use crate::backend::ops::batchnorm::{BatchNormSpec, BnWork, DropConnect};
use crate::backend::ops::linear::LinearShape;
use crate::backend::ops::pool::PoolShape;
use crate::backend::ops::resize::ResizeShape;
use crate::backend::{GemmSpec, SupernetOps, Tensor};
use crate::error::{Error, Result};

/// One BN layer of the forward in the tape's mode.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_forward<B: SupernetOps>(
    b: &B,
    mode: BnMode,
    spec: &BatchNormSpec,
    x: Tensor,
    y: Tensor,
    p: Bn,
    stats: RunningStats,
    saved: Tensor,
    scratch: Tensor,
) -> Result<()> {
    bn_forward_add(b, mode, spec, x, y, p, stats, (saved, scratch), None, None)
}

/// [`bn_forward`] fused with the squeeze of the SE block that consumes `y`: `pooled` = the global average
/// pool of `y` over `pool` (`[n, h, w, c]`), as `se_fwd` would compute it.
#[allow(clippy::too_many_arguments)]
fn bn_forward_pooled<B: SupernetOps>(
    b: &B,
    mode: BnMode,
    spec: &BatchNormSpec,
    (x, y): (Tensor, Tensor),
    p: Bn,
    stats: RunningStats,
    (saved, scratch): (Tensor, Tensor),
    (pool, pooled): (PoolShape, Tensor),
) -> Result<()> {
    let work = BnWork { saved, scratch };
    match mode {
        BnMode::Train => b.batchnorm_train_fwd_pooled(spec, x, y, p.params(), work, &pool, pooled),
        BnMode::Eval => b.batchnorm_eval_fwd_pooled(spec, x, y, p.params(), (stats.mean, stats.var), &pool, pooled),
        BnMode::Calibrate { batch } => {
            b.batchnorm_train_fwd_pooled(spec, x, y, p.params(), work, &pool, pooled)?;
            b.batchnorm_calibrate(spec, saved, stats.mean, stats.var, batch)
        }
    }
}

/// [`bn_forward`] with the residual join fused: `y = bn(x) + residual`, and with `drop`, the block's
/// drop-connect between the two (`y = drop_connect(bn(x)) + residual`; training modes only).
#[allow(clippy::too_many_arguments)]
fn bn_forward_add<B: SupernetOps>(
    b: &B,
    mode: BnMode,
    spec: &BatchNormSpec,
    x: Tensor,
    y: Tensor,
    p: Bn,
    stats: RunningStats,
    (saved, scratch): (Tensor, Tensor),
    residual: Option<Tensor>,
    drop: Option<DropConnect>,
) -> Result<()> {
    let work = BnWork { saved, scratch };
    let train = || match (residual, drop) {
        (residual, None) => b.batchnorm_train_fwd(spec, x, y, p.params(), work, residual),
        (Some(r), Some(d)) => b.batchnorm_train_fwd_dropped_join(spec, x, y, p.params(), work, r, &d),
        (None, Some(_)) => Err(Error::Other("tape: drop-connect without its shortcut join".into())),
    };
    match mode {
        BnMode::Train => train(),
        BnMode::Eval if drop.is_some() => {
            Err(Error::Other("tape: drop-connect in an eval-mode forward (it is training-only)".into()))
        }
        BnMode::Eval => b.batchnorm_eval_fwd(spec, x, y, p.params(), stats.mean, stats.var, residual),
        BnMode::Calibrate { batch } => {
            train()?;
            b.batchnorm_calibrate(spec, saved, stats.mean, stats.var, batch)
        }
    }
}

/// Runs the forward recorded in `tape` on `input` (`[n, side, side, 3]`, the tensor the tape was planned
/// with); the logits are `tape.head.logits` (`[n, classes]`). `gemm_weights` holds the trunk's 1x1-conv
/// weights in the tape's storage type (`p` itself in f32).
pub fn forward<B: SupernetOps>(
    b: &B,
    tape: &Tape,
    input: Tensor,
    input_side: usize,
    p: &NetTensors,
    gemm_weights: &NetTensors,
    stats: &NetStats,
) -> Result<()> {
    let mode = tape.options.bn;
    let n = tape.n;
    let bn_scratch = tape.scratch.bn;
    let scratch_for = |spec: &BatchNormSpec| bn_scratch.slice(0, spec.scratch_len());

    // stem
    let st = &tape.stem;
    if let Some(resized) = st.resized {
        let r = st.shape.h;
        let s = ResizeShape { n, c: 3, h_in: input_side, w_in: input_side, h_out: r, w_out: r };
        b.bicubic_resize_fwd(&s, input.slice(0, s.input_len())?, resized)?;
    }
    b.stem_conv_fwd(&st.shape, st.input, p.stem.w, st.pre)?;
    bn_forward(b, mode, &st.bn, st.pre, st.out, p.stem.bn, stats.stem, st.bn_saved, scratch_for(&st.bn)?)?;

    for t in &tape.blocks {
        let blk = &t.blk;
        let (w, s) = (&p.blocks[blk.global], &stats.blocks[blk.global]);
        let gw = &gemm_weights.blocks[blk.global];
        let (p_in, p_out) = (t.pixels_in(), t.pixels_out());
        if let (Some(e), Some((_, bn)), Some((we, _)), Some(rs)) = (t.expand, w.expand, gw.expand, s.expand) {
            let g = GemmSpec::pointwise_fwd(p_in, blk.c_in, blk.mid, t.stored.max_c_in);
            b.gemm(&g, t.x, we, e.pre)?;
            bn_forward(b, mode, &e.bn, e.pre, e.out, bn, rs, e.bn_saved, scratch_for(&e.bn)?)?;
        }
        b.depthwise_fwd(&t.dw, t.dw_in(), w.depthwise, t.dw_pre)?;
        let dw_work = (t.dw_saved, scratch_for(&t.dw_bn)?);
        match (t.se, w.se.as_ref()) {
            // the depthwise BN writes the SE squeeze (the pool of its output) in its own pass
            (Some((shape, out, saved)), Some(se)) => {
                let squeeze = (shape.pool(), shape.pooled(saved)?);
                let (x, y) = (t.dw_pre, t.dw_out);
                bn_forward_pooled(b, mode, &t.dw_bn, (x, y), w.depthwise_bn, s.depthwise, dw_work, squeeze)?;
                b.se_fwd_pooled(&shape, t.dw_out, se, out, saved)?;
            }
            _ => bn_forward(b, mode, &t.dw_bn, t.dw_pre, t.dw_out, w.depthwise_bn, s.depthwise, dw_work.0, dw_work.1)?,
        }
        let g = GemmSpec::pointwise_fwd(p_out, blk.mid, blk.c_out, t.stored.max_mid);
        b.gemm(&g, t.pl_in(), gw.project, t.pl_pre)?;
        // the shortcut branch first, so the projection BN can add it in its own pass
        if let Some(pool) = t.sc_pool {
            let s = PoolShape { n, h: blk.size_in, w: blk.size_in, c: blk.c_in };
            b.avg_pool2_fwd(&s, t.x, pool)?;
        }
        if let Some(conv) = t.sc_conv {
            let g = GemmSpec::pointwise_fwd(p_out, blk.c_in, blk.c_out, t.stored.max_c_in);
            b.gemm(&g, t.sc_in(), gw.shortcut, conv)?;
        }
        let shortcut = t.sc_conv.unwrap_or(t.sc_in());
        let pl_work = (t.pl_saved, scratch_for(&t.pl_bn)?);
        // BN, drop-connect (where the block has it) and the join in one pass
        let drop = t.drop.map(|mask| DropConnect { mask, per_sample: p_out / n * blk.c_out });
        bn_forward_add(b, mode, &t.pl_bn, t.pl_pre, t.out, w.project_bn, s.project, pl_work, Some(shortcut), drop)?;
    }

    let h = &tape.head;
    let hs = h.shape;
    let pixels = n * hs.size * hs.size;
    let g = GemmSpec::pointwise_fwd(pixels, hs.c_in, hs.expand, h.c_in_stored);
    b.gemm(&g, h.x, gemm_weights.head.final_expand, h.fe_pre)?;
    let fe_scratch = scratch_for(&h.fe_bn)?;
    bn_forward(
        b,
        mode,
        &h.fe_bn,
        h.fe_pre,
        h.fe_out,
        p.head.final_expand_bn,
        stats.final_expand,
        h.fe_saved,
        fe_scratch,
    )?;
    b.global_avg_pool_fwd(&PoolShape { n, h: hs.size, w: hs.size, c: hs.expand }, h.fe_out, h.pooled)?;
    let g = GemmSpec::pointwise_fwd(n, hs.expand, hs.width, h.expand_stored);
    b.gemm(&g, h.pooled, p.head.feature_mix, h.fm_pre)?;
    b.swish_fwd(h.fm_pre, h.fm_out)?;
    if let Some((out, mask)) = h.dropout {
        b.dropout_fwd(&mask, h.fm_out, out)?;
    }
    let lin = LinearShape { rows: n, in_active: hs.width, in_stored: h.width_stored, out: hs.num_classes };
    b.linear_fwd(&lin, h.classifier_in(), p.head.classifier, h.logits)
}
