//! Squeeze-and-excite with sliced widths (spec 1.2 step 3, 1.4): the channel-scale primitive
//! ([`ChannelScaleOps`], kernels in `kernels/se.cu`) and the whole block ([`SqueezeExciteOps`]),
//! composed once for every backend from the global pool, the GEMM wrapper, the bias + ReLU /
//! hard-sigmoid epilogues and the channel scale. Reference of the whole block: `backend::cpu::se`.
//!
//! Layouts: `x`, `y`, `dy`, `dx` NHWC `[n, h, w, c]` with exactly `c` (active mid) channels. Weights
//! are PyTorch's 1x1 conv weights `[out, in, 1, 1]`, i.e. row-major `[out, in]`, at max widths:
//! `w_reduce [se_stored, c_stored]`, `b_reduce [se_stored]`, `w_expand [c_stored, se_stored]`,
//! `b_expand [c_stored]`; the block uses `w_reduce[:se, :c]` (GEMM with B transposed, ldb = c_stored),
//! `w_expand[:c, :se]` (ldb = se_stored) and the leading bias slices, never a copy.
//!
//! Forward: pooled = mean_hw(x); r = relu(pooled W_r^T + b_r); s = hsig(r W_e^T + b_e); y = x * s.
//! `saved` (>= [`SeShape::saved_len`]) keeps pooled, the two pre-activations, r and s for the
//! backward; `scratch` (>= [`SeShape::scratch_len`]) holds the backward's per-sample gradients.
//! The backward overwrites `dx` and accumulates into the active slices of the four parameter
//! gradients (their inactive parts are left untouched).

use super::bias::{BiasAct, BiasActSpec, BiasOps};
use super::gemm::GemmOps;
use super::pool::{PoolOps, PoolShape};
use crate::backend::cpu::{
    check_disjoint, check_f32, check_len, check_same_dtype, host_slice, host_slice_mut, host_values, se as reference,
    write_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelTemplate};
use crate::backend::{Backend, GemmSpec, Tensor, Transpose};
use crate::error::{Error, Result};

pub trait ChannelScaleOps: Backend {
    /// y[b, p, ch] = x[b, p, ch] * s[b, ch].
    fn channel_scale_fwd(&self, shape: &PoolShape, x: Tensor, s: Tensor, y: Tensor) -> Result<()>;
    /// dx = dy * s[b, ch]; ds[b, ch] = sum_p dy * x (both overwritten).
    #[allow(clippy::too_many_arguments)]
    fn channel_scale_bwd(
        &self,
        shape: &PoolShape,
        x: Tensor,
        s: Tensor,
        dy: Tensor,
        dx: Tensor,
        ds: Tensor,
    ) -> Result<()>;
}

fn check_scale_fwd(sh: &PoolShape, x: Tensor, s: Tensor, y: Tensor) -> Result<()> {
    check_len("channel_scale_fwd x", x, sh.input_len())?;
    check_len("channel_scale_fwd s", s, sh.pooled_len())?;
    check_len("channel_scale_fwd y", y, sh.input_len())?;
    check_same_dtype("channel_scale_fwd", &[("x", x), ("y", y)])?;
    check_f32("channel_scale_fwd", &[("s", s)])?;
    sh.check_kernel_ints("channel_scale_fwd")?;
    check_disjoint("channel_scale_fwd (y vs x)", x, y)?;
    check_disjoint("channel_scale_fwd (y vs s)", s, y)
}

fn check_scale_bwd(sh: &PoolShape, x: Tensor, s: Tensor, dy: Tensor, dx: Tensor, ds: Tensor) -> Result<()> {
    for (what, t, len) in [
        ("x", x, sh.input_len()),
        ("s", s, sh.pooled_len()),
        ("dy", dy, sh.input_len()),
        ("dx", dx, sh.input_len()),
        ("ds", ds, sh.pooled_len()),
    ] {
        check_len(&format!("channel_scale_bwd {what}"), t, len)?;
    }
    sh.check_kernel_ints("channel_scale_bwd")?;
    check_same_dtype("channel_scale_bwd", &[("x", x), ("dy", dy), ("dx", dx)])?;
    check_f32("channel_scale_bwd", &[("s", s), ("ds", ds)])?;
    for (what, t) in [("x", x), ("s", s), ("dy", dy), ("ds", ds)] {
        check_disjoint(&format!("channel_scale_bwd (dx vs {what})"), dx, t)?;
    }
    for (what, t) in [("x", x), ("s", s), ("dy", dy)] {
        check_disjoint(&format!("channel_scale_bwd (ds vs {what})"), ds, t)?;
    }
    Ok(())
}

impl ChannelScaleOps for CpuBackend {
    fn channel_scale_fwd(&self, sh: &PoolShape, x: Tensor, s: Tensor, y: Tensor) -> Result<()> {
        check_scale_fwd(sh, x, s, y)?;
        // SAFETY: live host tensors; y checked disjoint from both inputs.
        unsafe {
            let x = host_values(x);
            write_values(y, |y| reference::channel_scale_fwd(&x, host_slice(s), sh.n, sh.h * sh.w, sh.c, y))
        }
    }

    fn channel_scale_bwd(
        &self,
        sh: &PoolShape,
        x: Tensor,
        s: Tensor,
        dy: Tensor,
        dx: Tensor,
        ds: Tensor,
    ) -> Result<()> {
        check_scale_bwd(sh, x, s, dy, dx, ds)?;
        // SAFETY: live host tensors; dx and ds checked disjoint from each other and the inputs.
        unsafe {
            let (x, dy) = (host_values(x), host_values(dy));
            write_values(dx, |dx| {
                reference::channel_scale_bwd(&x, host_slice(s), &dy, sh.n, sh.h * sh.w, sh.c, dx, host_slice_mut(ds))
            })
        }
    }
}

impl<D: KernelDevice> ChannelScaleOps for CudaBackend<D> {
    fn channel_scale_fwd(&self, sh: &PoolShape, x: Tensor, s: Tensor, y: Tensor) -> Result<()> {
        check_scale_fwd(sh, x, s, y)?;
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): channel_scale_fwd<T>(T* y, const T* x, const float* s, int hw, int c).
        self.launch(
            self.entry(KernelTemplate::ChannelScaleFwd, x.dtype())?,
            sh.per_sample_channel_dims(),
            &[y.into(), x.into(), s.into(), KernelArg::I32((sh.h * sh.w) as i32), KernelArg::I32(sh.c as i32)],
        )
    }

    fn channel_scale_bwd(
        &self,
        sh: &PoolShape,
        x: Tensor,
        s: Tensor,
        dy: Tensor,
        dx: Tensor,
        ds: Tensor,
    ) -> Result<()> {
        check_scale_bwd(sh, x, s, dy, dx, ds)?;
        if s.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): channel_scale_bwd<T>(T* dx, float* ds, const T* x, const float* s,
        // const T* dy, int hw, int c).
        self.launch(
            self.entry(KernelTemplate::ChannelScaleBwd, x.dtype())?,
            sh.per_sample_channel_dims(),
            &[
                dx.into(),
                ds.into(),
                x.into(),
                s.into(),
                dy.into(),
                KernelArg::I32((sh.h * sh.w) as i32),
                KernelArg::I32(sh.c as i32),
            ],
        )
    }
}

/// One SE block as run by one subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    /// Active mid channels and the stored max.
    pub c: usize,
    pub c_stored: usize,
    /// Active squeeze width and the stored max.
    pub se: usize,
    pub se_stored: usize,
}

impl SeShape {
    /// The squeeze: the global average pool over the block's `[n, h, w, c]` input.
    pub fn pool(&self) -> PoolShape {
        PoolShape { n: self.n, h: self.h, w: self.w, c: self.c }
    }

    /// The `pooled` piece of `saved` (`[n, c]`, f32): where the squeeze's result goes, whether `se_fwd`
    /// pools or the producer of the SE input did (`BatchNormOps::batchnorm_*_fwd_pooled`).
    pub fn pooled(&self, saved: Tensor) -> Result<Tensor> {
        saved.require("se saved", self.saved_len())?;
        Ok(self.pieces(saved)?[0])
    }

    /// `saved`: pooled [n, c], reduce pre-activation [n, se], reduce output [n, se], expand
    /// pre-activation [n, c], scale [n, c].
    pub fn saved_len(&self) -> usize {
        3 * self.n * self.c + 2 * self.n * self.se
    }

    /// `scratch`: d scale [n, c], d reduce output [n, se], d reduce pre-activation [n, se],
    /// d expand pre-activation [n, c], d pooled [n, c].
    pub fn scratch_len(&self) -> usize {
        self.saved_len()
    }

    /// The five [n, c] / [n, se] pieces of a `saved`- or `scratch`-sized buffer, in the order above.
    fn pieces(&self, t: Tensor) -> Result<[Tensor; 5]> {
        let (nc, ns) = (self.n * self.c, self.n * self.se);
        Ok([
            t.slice(0, nc)?,
            t.slice(nc, ns)?,
            t.slice(nc + ns, ns)?,
            t.slice(nc + 2 * ns, nc)?,
            t.slice(2 * nc + 2 * ns, nc)?,
        ])
    }

    fn check(&self, p: &SeParams) -> Result<()> {
        if self.c > self.c_stored || self.se > self.se_stored {
            return Err(Error::shape(
                "se widths (c <= c_stored, se <= se_stored)",
                format!("<= {} and <= {}", self.c_stored, self.se_stored),
                format!("c {} se {}", self.c, self.se),
            ));
        }
        p.w_reduce.require("se w_reduce [se_stored, c_stored]", self.se_stored * self.c_stored)?;
        p.b_reduce.require("se b_reduce [se_stored]", self.se_stored)?;
        p.w_expand.require("se w_expand [c_stored, se_stored]", self.c_stored * self.se_stored)?;
        p.b_expand.require("se b_expand [c_stored]", self.c_stored)
    }

    fn gemm(m: usize, n: usize, k: usize) -> GemmSpec {
        GemmSpec::new(m, n, k)
    }
}

/// The four SE parameters (or their gradients), stored at max widths.
#[derive(Clone, Copy, Debug)]
pub struct SeParams {
    pub w_reduce: Tensor,
    pub b_reduce: Tensor,
    pub w_expand: Tensor,
    pub b_expand: Tensor,
}

pub trait SqueezeExciteOps: GemmOps + PoolOps + BiasOps + ChannelScaleOps {
    /// y = x * hsig(W_e relu(W_r mean_hw(x) + b_r) + b_e); intermediates into `saved`.
    fn se_fwd(&self, s: &SeShape, x: Tensor, p: &SeParams, y: Tensor, saved: Tensor) -> Result<()> {
        s.check(p)?;
        self.global_avg_pool_fwd(&s.pool(), x, s.pooled(saved)?)?;
        self.se_fwd_pooled(s, x, p, y, saved)
    }

    /// [`Self::se_fwd`] after the squeeze: `saved`'s pooled piece ([`SeShape::pooled`]) already holds
    /// `mean_hw(x)`, written by the producer of `x` in its own pass.
    fn se_fwd_pooled(&self, s: &SeShape, x: Tensor, p: &SeParams, y: Tensor, saved: Tensor) -> Result<()> {
        s.check(p)?;
        saved.require("se saved", s.saved_len())?;
        let [pooled, r_pre, r_act, e_pre, scale] = s.pieces(saved)?;
        // r_pre[n, se] = pooled[n, c] . w_reduce[:se, :c]^T
        let mut g = SeShape::gemm(s.n, s.se, s.c);
        g.trans_b = Transpose::Yes;
        g.ldb = s.c_stored;
        self.gemm(&g, pooled, p.w_reduce, r_pre)?;
        self.bias_act_fwd(&BiasActSpec { rows: s.n, cols: s.se, act: BiasAct::Relu }, r_pre, p.b_reduce, r_act)?;
        // e_pre[n, c] = r_act[n, se] . w_expand[:c, :se]^T
        let mut g = SeShape::gemm(s.n, s.c, s.se);
        g.trans_b = Transpose::Yes;
        g.ldb = s.se_stored;
        self.gemm(&g, r_act, p.w_expand, e_pre)?;
        self.bias_act_fwd(&BiasActSpec { rows: s.n, cols: s.c, act: BiasAct::HardSigmoid }, e_pre, p.b_expand, scale)?;
        self.channel_scale_fwd(&s.pool(), x, scale, y)
    }

    /// dx (overwritten) and the parameter gradients (accumulated into the active slices), from the
    /// forward's `saved`; `scratch` holds the per-sample intermediate gradients.
    #[allow(clippy::too_many_arguments)]
    fn se_bwd(
        &self,
        s: &SeShape,
        x: Tensor,
        p: &SeParams,
        saved: Tensor,
        dy: Tensor,
        dx: Tensor,
        grads: &SeParams,
        scratch: Tensor,
    ) -> Result<()> {
        let d_pooled = self.se_bwd_unsqueezed(s, x, p, saved, dy, dx, grads, scratch)?;
        self.global_avg_pool_bwd(&s.pool(), d_pooled, dx, true)
    }

    /// [`Self::se_bwd`] but for the squeeze's gradient: `dx = dy * scale` only, and the returned `[n, c]`
    /// f32 piece of `scratch` holds the gradient of the pooled means, which `se_bwd` spreads over the
    /// pixels and adds to `dx` in a pass of its own. The producer of `x` adds it instead as it reads
    /// `dx` (`BatchNormOps::batchnorm_train_bwd_pooled`), saving that read and write of `[n, h, w, c]`.
    #[allow(clippy::too_many_arguments)]
    fn se_bwd_unsqueezed(
        &self,
        s: &SeShape,
        x: Tensor,
        p: &SeParams,
        saved: Tensor,
        dy: Tensor,
        dx: Tensor,
        grads: &SeParams,
        scratch: Tensor,
    ) -> Result<Tensor> {
        s.check(p)?;
        s.check(grads)?;
        saved.require("se saved", s.saved_len())?;
        scratch.require("se scratch", s.scratch_len())?;
        let [pooled, r_pre, r_act, e_pre, scale] = s.pieces(saved)?;
        let [d_scale, d_r_act, d_r_pre, d_e_pre, d_pooled] = s.pieces(scratch)?;
        self.channel_scale_bwd(&s.pool(), x, scale, dy, dx, d_scale)?;
        let hsig = BiasActSpec { rows: s.n, cols: s.c, act: BiasAct::HardSigmoid };
        self.bias_act_bwd(&hsig, e_pre, p.b_expand, d_scale, d_e_pre, grads.b_expand)?;
        // dw_expand[:c, :se] += d_e_pre^T[c, n] . r_act[n, se]
        let mut g = SeShape::gemm(s.c, s.se, s.n);
        g.trans_a = Transpose::Yes;
        g.lda = s.c;
        g.ldc = s.se_stored;
        g.beta = 1.0;
        self.gemm(&g, d_e_pre, r_act, grads.w_expand)?;
        // d_r_act[n, se] = d_e_pre[n, c] . w_expand[:c, :se]
        let mut g = SeShape::gemm(s.n, s.se, s.c);
        g.ldb = s.se_stored;
        self.gemm(&g, d_e_pre, p.w_expand, d_r_act)?;
        let relu = BiasActSpec { rows: s.n, cols: s.se, act: BiasAct::Relu };
        self.bias_act_bwd(&relu, r_pre, p.b_reduce, d_r_act, d_r_pre, grads.b_reduce)?;
        // dw_reduce[:se, :c] += d_r_pre^T[se, n] . pooled[n, c]
        let mut g = SeShape::gemm(s.se, s.c, s.n);
        g.trans_a = Transpose::Yes;
        g.lda = s.se;
        g.ldc = s.c_stored;
        g.beta = 1.0;
        self.gemm(&g, d_r_pre, pooled, grads.w_reduce)?;
        // d_pooled[n, c] = d_r_pre[n, se] . w_reduce[:se, :c]
        let mut g = SeShape::gemm(s.n, s.c, s.se);
        g.ldb = s.c_stored;
        self.gemm(&g, d_r_pre, p.w_reduce, d_pooled)?;
        Ok(d_pooled)
    }
}

impl<T: GemmOps + PoolOps + BiasOps + ChannelScaleOps> SqueezeExciteOps for T {}
