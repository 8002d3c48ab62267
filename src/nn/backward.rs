//! The hand-written backward of one subnet (llm.c style: the network is a fixed chain, each layer's
//! backward reads what its forward saved in the [`Tape`]). Parameter gradients are accumulated (+=) into
//! the active slices of the gradient arena, so the sandwich rule sums its subnets by running several
//! backwards before one optimizer step; the caller zeroes the arena once per step.
//!
//! Gradient buffers: `g[0]`, `g[1]` carry the gradient between blocks (ping-pong), `t[0..3]` hold a
//! block's intermediates; each is sized for the largest activation, and sliced to each layer's size, in
//! the tape's storage type for the trunk's gradients and in f32 for the head's (feature mix, dropout,
//! classifier, the pooled features). The 1x1 convs' grad-input reads `gemm_weights` (the bf16 copies in
//! bf16); every grad-weight GEMM accumulates into the f32 gradients.

use super::handles::{Bn, NetTensors};
use super::tape::{BlockTape, GradBuffers, Tape};
use crate::backend::ops::batchnorm::{BatchNormSpec, BnGrads, BnWork};
use crate::backend::ops::linear::LinearShape;
use crate::backend::ops::pool::PoolShape;
use crate::backend::{GemmSpec, SupernetOps, Tensor};
use crate::error::{Error, Result};

/// Training-mode BN backward: `dx` overwritten, `dgamma`/`dbeta` accumulated.
#[allow(clippy::too_many_arguments)]
fn bn_backward<B: SupernetOps>(
    b: &B,
    spec: &BatchNormSpec,
    x: Tensor,
    dy: Tensor,
    dx: Tensor,
    p: Bn,
    g: Bn,
    saved: Tensor,
    scratch: Tensor,
) -> Result<()> {
    bn_backward_squeezed(b, spec, (x, dy, dx), p, g, saved, scratch, None)
}

/// [`bn_backward`] of a BN whose output an SE block also squeezed: `squeeze` = (the pool's shape, the
/// gradient of the pooled means), added to `dy` as the backward reads it.
#[allow(clippy::too_many_arguments)]
fn bn_backward_squeezed<B: SupernetOps>(
    b: &B,
    spec: &BatchNormSpec,
    (x, dy, dx): (Tensor, Tensor, Tensor),
    p: Bn,
    g: Bn,
    saved: Tensor,
    scratch: Tensor,
    squeeze: Option<(PoolShape, Tensor)>,
) -> Result<()> {
    let grads = BnGrads { dgamma: g.gamma, dbeta: g.beta };
    let work = BnWork { saved, scratch: scratch.slice(0, spec.scratch_len())? };
    match squeeze {
        None => b.batchnorm_train_bwd(spec, x, dy, dx, p.params(), grads, work),
        Some((pool, d_pooled)) => {
            b.batchnorm_train_bwd_pooled(spec, x, dy, dx, p.params(), grads, work, &pool, d_pooled)
        }
    }
}

/// How far a backward has come: after it, the gradients of that part are final for this backward (the
/// head; block `g` and every block after it, active or not; the stem, i.e. everything). The data-parallel
/// reducer (`crate::dist::buckets`) starts each gradient bucket's all-reduce as soon as its part is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackwardProgress {
    Head,
    Block(usize),
    Stem,
}

/// Accumulates the parameter gradients of the forward in `tape` for `dlogits` (`[n, classes]`, the
/// gradient of the loss to be minimised) into `grads`; `on_progress` hears each finished part, in
/// backward order (the work is queued on the device, not necessarily done).
#[allow(clippy::too_many_arguments)]
pub fn backward<B: SupernetOps>(
    b: &B,
    tape: &Tape,
    dlogits: Tensor,
    p: &NetTensors,
    gemm_weights: &NetTensors,
    grads: &NetTensors,
    buf: &GradBuffers,
    on_progress: &mut dyn FnMut(BackwardProgress) -> Result<()>,
) -> Result<()> {
    if tape.options.bn != super::tape::BnMode::Train {
        return Err(Error::Other("backward needs a forward with training-mode BN (batch statistics)".into()));
    }
    let n = tape.n;
    let sl = |t: Tensor, len: usize| t.slice(0, len);
    let act = |t: Tensor, len: usize| t.view_as(tape.dtype).slice(0, len);
    let [t0, t1, t2] = buf.t;
    let scratch = tape.scratch.bn;

    // head: classifier, dropout, feature-mix swish and conv, pool, final expand BN+swish and conv
    let h = &tape.head;
    let hs = h.shape;
    let pixels = n * hs.size * hs.size;
    let lin = LinearShape { rows: n, in_active: hs.width, in_stored: h.width_stored, out: hs.num_classes };
    let d_cls_in = sl(t0, n * hs.width)?;
    b.linear_bwd(&lin, h.classifier_in(), p.head.classifier, dlogits, d_cls_in, grads.head.classifier)?;
    let d_fm_out = match h.dropout {
        Some((_, mask)) => {
            let d = sl(t1, n * hs.width)?;
            b.dropout_bwd(&mask, d_cls_in, d)?;
            d
        }
        None => d_cls_in,
    };
    let d_fm_pre = sl(t2, n * hs.width)?;
    b.swish_bwd(h.fm_pre, d_fm_out, d_fm_pre)?;
    let g = GemmSpec::pointwise_bwd_weight(n, hs.expand, hs.width, h.expand_stored);
    b.gemm(&g, d_fm_pre, h.pooled, grads.head.feature_mix)?;
    let d_pooled = sl(t0, n * hs.expand)?;
    b.gemm(
        &GemmSpec::pointwise_bwd_input(n, hs.expand, hs.width, h.expand_stored),
        d_fm_pre,
        p.head.feature_mix,
        d_pooled,
    )?;
    let d_fe_out = act(t1, pixels * hs.expand)?;
    b.global_avg_pool_bwd(&PoolShape { n, h: hs.size, w: hs.size, c: hs.expand }, d_pooled, d_fe_out, false)?;
    let d_fe_pre = act(t2, pixels * hs.expand)?;
    let (fe_p, fe_g) = (p.head.final_expand_bn, grads.head.final_expand_bn);
    bn_backward(b, &h.fe_bn, h.fe_pre, d_fe_out, d_fe_pre, fe_p, fe_g, h.fe_saved, scratch)?;
    let g = GemmSpec::pointwise_bwd_weight(pixels, hs.c_in, hs.expand, h.c_in_stored);
    b.gemm(&g, d_fe_pre, h.x, grads.head.final_expand)?;
    let mut cur = 0usize;
    let d_x = act(buf.g[cur], pixels * hs.c_in)?;
    let g = GemmSpec::pointwise_bwd_input(pixels, hs.c_in, hs.expand, h.c_in_stored);
    b.gemm(&g, d_fe_pre, gemm_weights.head.final_expand, d_x)?;
    on_progress(BackwardProgress::Head)?;

    for t in tape.blocks.iter().rev() {
        let d_out = act(buf.g[cur], t.pixels_out() * t.blk.c_out)?;
        let d_in = act(buf.g[1 - cur], t.pixels_in() * t.blk.c_in)?;
        let left_in = block_backward(b, tape, t, d_out, d_in, (p, gemm_weights, grads), buf)?;
        on_progress(BackwardProgress::Block(t.blk.global))?;
        if left_in == InputGradient::InOtherBuffer {
            cur = 1 - cur;
        }
    }

    let st = &tape.stem;
    let out_len = st.pre.len();
    let d_stem_out = act(buf.g[cur], out_len)?;
    let d_stem_pre = act(t0, out_len)?;
    bn_backward(b, &st.bn, st.pre, d_stem_out, d_stem_pre, p.stem.bn, grads.stem.bn, st.bn_saved, scratch)?;
    let ws = sl(tape.scratch.stem_workspace, st.shape.wgrad_workspace_len())?;
    b.stem_conv_bwd_weight(&st.shape, st.input, d_stem_pre, grads.stem.w, ws)?;
    on_progress(BackwardProgress::Stem)
}

/// Where [`block_backward`] left the gradient of the block's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputGradient {
    /// In `d_in` (the other ping-pong buffer).
    InOtherBuffer,
    /// In `d_out`'s buffer, over the output gradient: an identity shortcut, whose main branch's first op
    /// (the expand conv's grad-input GEMM, or the depthwise grad-input where there is no expand conv)
    /// added its result to the shortcut's gradient in place.
    InOutputBuffer,
}

/// One MBConv block: the input gradient from `d_out`, left where the result says; parameter gradients
/// accumulated.
///
/// The shortcut's gradient meets the main branch's without a pass of its own where a GEMM produces one
/// of them (issue #13 item 2, the residual's backward fan-in): the GEMM accumulates (`beta = 1`) into the
/// other. Identity shortcut: the expand conv's grad-input GEMM (or, without an expand conv, the
/// depthwise grad-input kernel) adds into `d_out` (which nothing reads afterwards), so the block's input
/// gradient stays in `d_out`'s buffer. 1x1-conv shortcut without pooling: its grad-input GEMM adds into
/// `d_in`. Against writing the result and then `add_assign` this saves a write and a read of the input
/// gradient per block; in f32 it is the same single rounding of `acc + other` (bit-identical on the CPU and
/// the emulator), in bf16 one rounding instead of two. The shortcuts through the 2x2 pool still join with
/// `add_assign`.
#[allow(clippy::too_many_arguments)]
fn block_backward<B: SupernetOps>(
    b: &B,
    tape: &Tape,
    t: &BlockTape,
    d_out: Tensor,
    d_in: Tensor,
    (p, gemm_weights, grads): (&NetTensors, &NetTensors, &NetTensors),
    buf: &GradBuffers,
) -> Result<InputGradient> {
    let n = tape.n;
    let blk = &t.blk;
    let (w, gw) = (&p.blocks[blk.global], &grads.blocks[blk.global]);
    let cw = &gemm_weights.blocks[blk.global];
    let (p_in, p_out) = (t.pixels_in(), t.pixels_out());
    // every gradient of the block is a trunk activation's (the tape's storage type); scratch stays f32
    let sl = |t: Tensor, len: usize| t.view_as(tape.dtype).slice(0, len);
    let scratch_slice = |t: Tensor, len: usize| t.slice(0, len);
    let [t0, t1, t2] = buf.t;
    let scratch = tape.scratch.bn;

    // main branch: drop-connect, project BN and conv
    let d_main = match t.drop {
        Some(mask) => {
            let d = sl(t0, p_out * blk.c_out)?;
            b.drop_connect_bwd(&mask, p_out / n * blk.c_out, d_out, d)?;
            d
        }
        None => d_out,
    };
    let d_pl_pre = sl(t1, p_out * blk.c_out)?;
    bn_backward(b, &t.pl_bn, t.pl_pre, d_main, d_pl_pre, w.project_bn, gw.project_bn, t.pl_saved, scratch)?;
    b.gemm(
        &GemmSpec::pointwise_bwd_weight(p_out, blk.mid, blk.c_out, t.stored.max_mid),
        d_pl_pre,
        t.pl_in(),
        gw.project,
    )?;
    let d_pl_in = sl(t2, p_out * blk.mid)?;
    b.gemm(&GemmSpec::pointwise_bwd_input(p_out, blk.mid, blk.c_out, t.stored.max_mid), d_pl_pre, cw.project, d_pl_in)?;

    // SE, depthwise BN and conv: the squeeze's gradient is added by the BN backward as it reads d_dw_out
    let (d_dw_out, squeeze) = match (t.se, w.se.as_ref(), gw.se.as_ref()) {
        (Some((shape, _, saved)), Some(se), Some(gse)) => {
            let d = sl(t0, p_out * blk.mid)?;
            let se_scratch = scratch_slice(tape.scratch.se, shape.scratch_len())?;
            let d_pooled = b.se_bwd_unsqueezed(&shape, t.dw_out, se, saved, d_pl_in, d, gse, se_scratch)?;
            (d, Some((shape.pool(), d_pooled)))
        }
        _ => (d_pl_in, None),
    };
    let d_dw_pre = sl(t1, p_out * blk.mid)?;
    let (dw_bn, dw_gbn) = (w.depthwise_bn, gw.depthwise_bn);
    let io = (t.dw_pre, d_dw_out, d_dw_pre);
    bn_backward_squeezed(b, &t.dw_bn, io, dw_bn, dw_gbn, t.dw_saved, scratch, squeeze)?;
    let ws = scratch_slice(tape.scratch.dw_workspace, t.dw.wgrad_workspace_len())?;
    b.depthwise_bwd_weight(&t.dw, t.dw_in(), d_dw_pre, gw.depthwise, ws)?;

    // expand BN and conv (or straight into d_in when the stage has no expand conv)
    match (t.expand, w.expand, cw.expand, gw.expand) {
        (Some(e), Some((_, bn)), Some((we, _)), Some((gwe, gbn))) => {
            let d_exp_out = sl(t0, p_in * blk.mid)?;
            b.depthwise_bwd_input(&t.dw, d_dw_pre, w.depthwise, d_exp_out)?;
            let d_exp_pre = sl(t2, p_in * blk.mid)?;
            bn_backward(b, &e.bn, e.pre, d_exp_out, d_exp_pre, bn, gbn, e.bn_saved, scratch)?;
            let g = GemmSpec::pointwise_bwd_weight(p_in, blk.c_in, blk.mid, t.stored.max_c_in);
            b.gemm(&g, d_exp_pre, t.x, gwe)?;
            let g = GemmSpec::pointwise_bwd_input(p_in, blk.c_in, blk.mid, t.stored.max_c_in);
            if blk.identity_shortcut {
                // fan-in fused: d_out += d_exp_pre W (d_out has the input's size; nothing reads it after)
                b.gemm(&GemmSpec { beta: 1.0, ..g }, d_exp_pre, we, d_out)?;
                return Ok(InputGradient::InOutputBuffer);
            }
            b.gemm(&g, d_exp_pre, we, d_in)?;
        }
        _ if blk.identity_shortcut => {
            // fan-in fused: d_out += the depthwise grad-input (d_out has the input's size)
            b.depthwise_bwd_input_accumulate(&t.dw, d_dw_pre, w.depthwise, d_out)?;
            return Ok(InputGradient::InOutputBuffer);
        }
        _ => b.depthwise_bwd_input(&t.dw, d_dw_pre, w.depthwise, d_in)?,
    }

    // shortcut (the identity shortcut's fan-in was fused above): 2x2 pool and/or 1x1 conv
    match (t.sc_conv, t.sc_pool) {
        (Some(_), None) => {
            // fan-in fused: d_in += d_out W_shortcut
            let g = GemmSpec::pointwise_bwd_weight(p_out, blk.c_in, blk.c_out, t.stored.max_c_in);
            b.gemm(&g, d_out, t.sc_in(), gw.shortcut)?;
            let g = GemmSpec::pointwise_bwd_input(p_out, blk.c_in, blk.c_out, t.stored.max_c_in);
            b.gemm(&GemmSpec { beta: 1.0, ..g }, d_out, cw.shortcut, d_in)?;
        }
        (sc_conv, sc_pool) => {
            let d_sc_in = match sc_conv {
                Some(_) => {
                    let g = GemmSpec::pointwise_bwd_weight(p_out, blk.c_in, blk.c_out, t.stored.max_c_in);
                    b.gemm(&g, d_out, t.sc_in(), gw.shortcut)?;
                    let d = sl(t0, p_out * blk.c_in)?;
                    let g = GemmSpec::pointwise_bwd_input(p_out, blk.c_in, blk.c_out, t.stored.max_c_in);
                    b.gemm(&g, d_out, cw.shortcut, d)?;
                    d
                }
                None => d_out,
            };
            match sc_pool {
                // fan-in fused: d_in += the pool's backward
                Some(_) => b.avg_pool2_bwd_accumulate(
                    &PoolShape { n, h: blk.size_in, w: blk.size_in, c: blk.c_in },
                    d_sc_in,
                    d_in,
                )?,
                None => b.add_assign(d_in, d_sc_in)?,
            }
        }
    }
    Ok(InputGradient::InOtherBuffer)
}
