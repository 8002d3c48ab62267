//! Elastic BatchNorm (spec 1.4 `DynamicBatchNorm2d`, 3.3, 5.1) with an optional fused swish.
//! Reference: `backend::cpu::batchnorm`; kernels: `kernels/batchnorm.cu`.
//!
//! Layouts: activations `x`, `y`, `dy`, `dx` are `[pixels, c_active]` (NHWC, `pixels = N*H*W`, exactly
//! `c_active` channels); `gamma`, `beta`, `running_mean`, `running_var`, `dgamma`, `dbeta` are stored
//! at `c_stored` (the supernet max) and only the first `c_active` entries are read or written.
//! `saved` (>= `2 * c_active`) receives `[mean, biased var]` from the training forward and is read by
//! the backward and by calibration. `scratch` (>= [`BatchNormSpec::scratch_len`]) holds the CUDA
//! two-stage reduction's per-chunk partials; the CPU checks the same length, so callers plan one
//! buffer for both backends (no allocation inside a step).
//!
//! Residual: both forwards take an optional `residual` (`[pixels, c_active]`, disjoint from `y`) added
//! to the output in the same pass (`y = act(bn(x)) + residual`): the MBConv block's projection BN and
//! its shortcut join, fused (one write of `y` instead of a write, a read and a write); the sum is the
//! same f32 addition the separate join does, so fused and unfused agree bit for bit. Where drop-connect
//! sits between that BN and the join (training, blocks with a positive rate),
//! `batchnorm_train_fwd_dropped_join` applies the sample's drop factor in the same pass
//! (`y = drop_connect(act(bn(x))) + residual`): one pass where BN, drop-connect and join took three.
//!
//! Storage: the activations (`x`, `y`, `residual`, `dy`, `dx`) are all f32 or all bf16; everything else
//! is f32. Arithmetic is f32 on widened values (the statistics fold in f64 as in f32 mode), and a bf16
//! `y` or `dx` is rounded once, at its store, on the CPU (its bf16 mode) as in the kernels.
//!
//! Contracts: forward and backward overwrite `y`/`dx`; the backward adds into `dgamma[..c]`,
//! `dbeta[..c]` (the sandwich rule sums 4 subnets) and leaves the inactive tail untouched; the
//! training forward never touches the running stats; `batchnorm_calibrate` after the training
//! forward of batch `k` (1-based) folds that batch into the cumulative running stats.

use crate::backend::cpu::{
    batchnorm as reference, check_disjoint, check_f32, check_len, check_same_dtype, host_slice, host_slice_mut,
    host_values, pool as pool_reference, write_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn, KernelTemplate, LaunchDims};
use crate::backend::ops::pool::{PoolOps, PoolShape};
use crate::backend::ops::regularize::DropMask;
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

/// Channel lanes per block (one warp across consecutive channels) and row lanes per block in the kernels.
const CHANNEL_TILE: usize = 32;
/// Consecutive channels per channel lane in the per-pixel kernels (`kernels/channel_vec.cuh`): a block's
/// tile spans `CHANNEL_TILE * CHANNELS_PER_LANE` channels. The finalize kernels keep one per lane.
const CHANNELS_PER_LANE: usize = 4;
const ROW_LANES: u32 = 8;
/// Chunk lanes of the finalize kernels.
const FINAL_LANES: u32 = 32;
/// Aim for about this many blocks per per-pixel launch, with at least `MIN_ROWS_PER_CHUNK` rows each.
const TARGET_BLOCKS: usize = 1024;
const MIN_ROWS_PER_CHUNK: usize = 64;

/// What follows the affine transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnActivation {
    Identity,
    Swish,
}

impl BnActivation {
    fn is_swish(self) -> bool {
        self == BnActivation::Swish
    }
}

/// One BatchNorm layer as run by one subnet on one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormSpec {
    /// N * H * W.
    pub pixels: usize,
    pub c_active: usize,
    pub c_stored: usize,
    pub activation: BnActivation,
}

impl BatchNormSpec {
    /// (chunks, rows per chunk) of the per-pixel launches; see the header of `kernels/batchnorm.cu`.
    pub fn chunking(&self) -> (usize, usize) {
        let tiles = self.c_active.div_ceil(CHANNEL_TILE * CHANNELS_PER_LANE).max(1);
        let wanted = TARGET_BLOCKS.div_ceil(tiles).min(self.pixels.div_ceil(MIN_ROWS_PER_CHUNK)).max(1);
        let rows = self.pixels.div_ceil(wanted).max(1);
        (self.pixels.div_ceil(rows).max(1), rows)
    }

    /// Elements of `scratch` the training forward and backward need: the two partial planes
    /// `[2][chunks][c]` and the `[2][c]` batch sums of the backward.
    pub fn scratch_len(&self) -> usize {
        let (chunks, _) = self.chunking();
        2 * self.c_active * chunks + 2 * self.c_active
    }

    pub fn elements(&self) -> usize {
        self.pixels * self.c_active
    }
}

/// The affine parameters (stored at `c_stored`).
#[derive(Clone, Copy, Debug)]
pub struct BnParams {
    pub gamma: Tensor,
    pub beta: Tensor,
}

/// Their gradients (stored at `c_stored`, accumulated into the first `c_active`).
#[derive(Clone, Copy, Debug)]
pub struct BnGrads {
    pub dgamma: Tensor,
    pub dbeta: Tensor,
}

/// Per-layer buffers of the training mode: `saved` (>= 2 c) and `scratch` (>= `scratch_len`).
#[derive(Clone, Copy, Debug)]
pub struct BnWork {
    pub saved: Tensor,
    pub scratch: Tensor,
}

/// The drop-connect of a fused projection join: `mask` as `RegularizeOps::drop_connect_fwd` takes it, one
/// draw per sample of `per_sample` contiguous elements (`H * W * c_active`).
#[derive(Clone, Copy, Debug)]
pub struct DropConnect {
    pub mask: DropMask,
    pub per_sample: usize,
}

pub trait BatchNormOps: Backend + PoolOps {
    /// Training mode: batch statistics into `work.saved`, `y = act(gamma * xhat + beta) [+ residual]`.
    fn batchnorm_train_fwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        work: BnWork,
        residual: Option<Tensor>,
    ) -> Result<()>;
    /// Training mode with drop-connect and the shortcut join in one pass:
    /// `y = drop_connect(act(gamma * xhat + beta)) + residual`, the composition of
    /// [`Self::batchnorm_train_fwd`], `RegularizeOps::drop_connect_fwd` and `PoolOps::residual_add_fwd`
    /// (the same f32 operations, so bit for bit in f32; rounded once in bf16).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_train_fwd_dropped_join(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        work: BnWork,
        residual: Tensor,
        drop: &DropConnect,
    ) -> Result<()>;
    /// [`Self::batchnorm_train_fwd`] (no residual) fused with the squeeze of the SE block that consumes
    /// `y`: `pooled` (`[n, c]`, f32) = the mean over each sample's pixels of `y` as stored, what
    /// `PoolOps::global_avg_pool_fwd` of `y` gives (bit for bit on the same backend), without reading
    /// `y` back. `pool` is `y`'s `[n, h, w, c_active]`.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_train_fwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        work: BnWork,
        pool: &PoolShape,
        pooled: Tensor,
    ) -> Result<()>;
    /// The eval-mode forward with the same fused squeeze.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_eval_fwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        running: (Tensor, Tensor),
        pool: &PoolShape,
        pooled: Tensor,
    ) -> Result<()>;
    /// Training-mode backward: `dx` overwritten; `dgamma`, `dbeta` accumulated (active slice only).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_train_bwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        dy: Tensor,
        dx: Tensor,
        p: BnParams,
        g: BnGrads,
        work: BnWork,
    ) -> Result<()>;
    /// [`Self::batchnorm_train_bwd`] of a BN whose output also fed a global pool (the squeeze of an SE
    /// block): the gradient reaching that output is `dy` plus the pool's backward of `d_pooled` (`[n, c]`,
    /// f32), which `PoolOps::global_avg_pool_bwd(pool, d_pooled, dy, accumulate)` would add to `dy` in a
    /// pass of its own; here the two kernels of the backward add it as they read `dy` (bit for bit in
    /// f32; in bf16 the sum is not rounded to storage first). `pool` is `[n, h, w, c_active]`.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_train_bwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        dy: Tensor,
        dx: Tensor,
        p: BnParams,
        g: BnGrads,
        work: BnWork,
        pool: &PoolShape,
        d_pooled: Tensor,
    ) -> Result<()>;
    /// Eval mode with the running statistics (`[+ residual]` as in training).
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_eval_fwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        running_mean: Tensor,
        running_var: Tensor,
        residual: Option<Tensor>,
    ) -> Result<()>;
    /// Calibration: after the training forward of batch number `batch` (1-based), fold its mean and
    /// unbiased variance from `saved` into the cumulative running stats (PyTorch `momentum=None`).
    fn batchnorm_calibrate(
        &self,
        s: &BatchNormSpec,
        saved: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        batch: u32,
    ) -> Result<()>;
}

fn check_spec(s: &BatchNormSpec) -> Result<()> {
    if s.c_active > s.c_stored {
        return Err(Error::shape("batchnorm c_active", format!("<= c_stored {}", s.c_stored), s.c_active));
    }
    if s.pixels == 0 || s.c_active == 0 {
        return Err(Error::shape("batchnorm pixels x c_active", "> 0", format!("{} x {}", s.pixels, s.c_active)));
    }
    Ok(())
}

fn check_stored(what: &str, s: &BatchNormSpec, t: Tensor) -> Result<()> {
    check_len(&format!("batchnorm {what} (stored at c_stored)"), t, s.c_stored)
}

/// The residual has y's shape and is only read: it may alias x (never y).
fn check_residual(s: &BatchNormSpec, y: Tensor, residual: Option<Tensor>) -> Result<()> {
    match residual {
        Some(r) => {
            check_len("batchnorm residual", r, s.elements())?;
            check_same_dtype("batchnorm", &[("y", y), ("residual", r)])?;
            check_disjoint("batchnorm forward (y vs residual)", y, r)
        }
        None => Ok(()),
    }
}

/// The fused drop-connect: whole samples of whole pixels; returns (keep, scale, pixels per sample).
fn check_drop(s: &BatchNormSpec, drop: &DropConnect) -> Result<(f32, f32, usize)> {
    let per = drop.per_sample;
    if per == 0 || per % s.c_active != 0 || s.elements() % per != 0 {
        return Err(Error::shape(
            "batchnorm drop-connect per_sample (elements per sample)",
            format!("a non-zero multiple of c_active {} dividing {} elements", s.c_active, s.elements()),
            per,
        ));
    }
    let (keep, scale) = drop.mask.keep_scale()?;
    Ok((keep, scale, per / s.c_active))
}

/// The fused squeeze: `pool` is y's `[n, h, w, c_active]`, `pooled` an f32 `[n, c_active]` apart from y.
fn check_pooled(s: &BatchNormSpec, y: Tensor, pool: &PoolShape, pooled: Tensor) -> Result<()> {
    if pool.n * pool.h * pool.w != s.pixels || pool.c != s.c_active || pool.n == 0 {
        return Err(Error::shape(
            "batchnorm pooled: the pool shape [n, h, w, c]",
            format!("n * h * w = {} pixels and c = {} (n > 0)", s.pixels, s.c_active),
            format!("{pool:?}"),
        ));
    }
    pool.check_kernel_ints("batchnorm pooled")?;
    check_len("batchnorm pooled [n, c]", pooled, pool.pooled_len())?;
    check_f32("batchnorm pooled", &[("pooled", pooled)])?;
    check_disjoint("batchnorm pooled (pooled vs y)", y, pooled)
}

/// The squeeze gradient of [`BatchNormOps::batchnorm_train_bwd_pooled`]: the pool covers the BN's pixels
/// and channels, `d_pooled` is `[n, c]` f32 and is not written.
fn check_pooled_bwd(s: &BatchNormSpec, dx: Tensor, pool: &PoolShape, d_pooled: Tensor) -> Result<()> {
    if pool.n * pool.h * pool.w != s.pixels || pool.c != s.c_active || pool.n == 0 {
        return Err(Error::shape(
            "batchnorm backward with a pool gradient: the pool shape [n, h, w, c]",
            format!("n * h * w = {} pixels and c = {} (n > 0)", s.pixels, s.c_active),
            format!("{pool:?}"),
        ));
    }
    pool.check_kernel_ints("batchnorm backward with a pool gradient")?;
    check_len("batchnorm d_pooled [n, c]", d_pooled, pool.pooled_len())?;
    check_f32("batchnorm backward with a pool gradient", &[("d_pooled", d_pooled)])?;
    check_disjoint("batchnorm_train_bwd_pooled (dx vs d_pooled)", dx, d_pooled)
}

fn check_train_fwd(s: &BatchNormSpec, x: Tensor, y: Tensor, p: BnParams, w: BnWork) -> Result<()> {
    check_spec(s)?;
    check_len("batchnorm x", x, s.elements())?;
    check_len("batchnorm y", y, s.elements())?;
    check_same_dtype("batchnorm", &[("x", x), ("y", y)])?;
    check_f32("batchnorm", &[("gamma", p.gamma), ("beta", p.beta), ("saved", w.saved), ("scratch", w.scratch)])?;
    check_stored("gamma", s, p.gamma)?;
    check_stored("beta", s, p.beta)?;
    w.saved.require("batchnorm saved", 2 * s.c_active)?;
    w.scratch.require("batchnorm scratch", s.scratch_len())?;
    for (what, t) in [("y", y), ("saved", w.saved), ("scratch", w.scratch)] {
        check_disjoint(&format!("batchnorm_train_fwd ({what} vs x)"), x, t)?;
    }
    for (what, t) in [("saved", w.saved), ("gamma", p.gamma), ("beta", p.beta)] {
        check_disjoint(&format!("batchnorm_train_fwd (y vs {what})"), y, t)?;
    }
    check_disjoint("batchnorm_train_fwd (scratch vs saved)", w.scratch, w.saved)
}

fn check_train_bwd(
    s: &BatchNormSpec,
    x: Tensor,
    dy: Tensor,
    dx: Tensor,
    p: BnParams,
    g: BnGrads,
    w: BnWork,
) -> Result<()> {
    check_spec(s)?;
    check_len("batchnorm x", x, s.elements())?;
    check_len("batchnorm dy", dy, s.elements())?;
    check_len("batchnorm dx", dx, s.elements())?;
    check_same_dtype("batchnorm", &[("x", x), ("dy", dy), ("dx", dx)])?;
    check_f32(
        "batchnorm",
        &[
            ("gamma", p.gamma),
            ("beta", p.beta),
            ("dgamma", g.dgamma),
            ("dbeta", g.dbeta),
            ("saved", w.saved),
            ("scratch", w.scratch),
        ],
    )?;
    check_stored("gamma", s, p.gamma)?;
    check_stored("beta", s, p.beta)?;
    check_stored("dgamma", s, g.dgamma)?;
    check_stored("dbeta", s, g.dbeta)?;
    w.saved.require("batchnorm saved", 2 * s.c_active)?;
    w.scratch.require("batchnorm scratch", s.scratch_len())?;
    for (what, t) in [("x", x), ("dy", dy), ("saved", w.saved), ("scratch", w.scratch), ("dgamma", g.dgamma)] {
        check_disjoint(&format!("batchnorm_train_bwd (dx vs {what})"), dx, t)?;
    }
    check_disjoint("batchnorm_train_bwd (dgamma vs dbeta)", g.dgamma, g.dbeta)?;
    check_disjoint("batchnorm_train_bwd (scratch vs saved)", w.scratch, w.saved)
}

fn check_eval(s: &BatchNormSpec, x: Tensor, y: Tensor, p: BnParams, rm: Tensor, rv: Tensor) -> Result<()> {
    check_spec(s)?;
    check_len("batchnorm x", x, s.elements())?;
    check_len("batchnorm y", y, s.elements())?;
    check_same_dtype("batchnorm", &[("x", x), ("y", y)])?;
    check_f32("batchnorm", &[("gamma", p.gamma), ("beta", p.beta), ("running_mean", rm), ("running_var", rv)])?;
    for (what, t) in [("gamma", p.gamma), ("beta", p.beta), ("running_mean", rm), ("running_var", rv)] {
        check_stored(what, s, t)?;
    }
    for (what, t) in [("x", x), ("gamma", p.gamma), ("beta", p.beta), ("running_mean", rm), ("running_var", rv)] {
        check_disjoint(&format!("batchnorm_eval_fwd (y vs {what})"), y, t)?;
    }
    Ok(())
}

fn check_calibrate(s: &BatchNormSpec, saved: Tensor, rm: Tensor, rv: Tensor, batch: u32) -> Result<()> {
    check_spec(s)?;
    if s.pixels < 2 {
        return Err(Error::shape("batchnorm_calibrate pixels (unbiased variance)", ">= 2", s.pixels));
    }
    if batch == 0 {
        return Err(Error::shape("batchnorm_calibrate batch number", ">= 1 (1-based)", 0));
    }
    check_f32("batchnorm_calibrate", &[("saved", saved), ("running_mean", rm), ("running_var", rv)])?;
    saved.require("batchnorm saved", 2 * s.c_active)?;
    check_stored("running_mean", s, rm)?;
    check_stored("running_var", s, rv)?;
    check_disjoint("batchnorm_calibrate (running_mean vs running_var)", rm, rv)?;
    check_disjoint("batchnorm_calibrate (running_mean vs saved)", rm, saved)?;
    check_disjoint("batchnorm_calibrate (running_var vs saved)", rv, saved)
}

/// `y += residual` after the CPU reference wrote `y` into the f32 buffer `out` (the fused op is that
/// composition; the caller stores `out`, rounding once in bf16).
///
/// # Safety
/// `residual` is a live host tensor of `out.len()` elements (checked by `check_residual`).
unsafe fn add_residual_cpu(out: &mut [f32], residual: Option<Tensor>) {
    if let Some(r) = residual {
        crate::backend::cpu::pool::add_assign(out, &host_values(r));
    }
}

/// The CPU backward on `dy` as f32 values (widened from its storage type, plus a pool gradient when
/// fused); `dx` rounded at its store.
///
/// # Safety
/// Live host tensors; `dx`, `dgamma` and `dbeta` disjoint from each other and the inputs (checked by
/// the callers).
unsafe fn cpu_train_bwd(
    s: &BatchNormSpec,
    x: Tensor,
    dy: &[f32],
    dx: Tensor,
    p: BnParams,
    g: BnGrads,
    w: BnWork,
) -> Result<()> {
    let c = s.c_active;
    let x = host_values(x);
    write_values(dx, |dx| {
        reference::train_bwd(
            &x,
            dy,
            c,
            &host_slice(p.gamma)[..c],
            &host_slice(p.beta)[..c],
            &host_slice(w.saved)[..2 * c],
            s.activation.is_swish(),
            dx,
            &mut host_slice_mut(g.dgamma)[..c],
            &mut host_slice_mut(g.dbeta)[..c],
        )
    })
}

impl BatchNormOps for CpuBackend {
    fn batchnorm_train_fwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        w: BnWork,
        residual: Option<Tensor>,
    ) -> Result<()> {
        check_train_fwd(s, x, y, p, w)?;
        check_residual(s, y, residual)?;
        let c = s.c_active;
        // SAFETY: live host tensors; outputs (y, saved) checked disjoint from each other and the inputs.
        unsafe {
            let x = host_values(x);
            write_values(y, |y| {
                reference::train_fwd(
                    &x,
                    c,
                    &host_slice(p.gamma)[..c],
                    &host_slice(p.beta)[..c],
                    s.activation.is_swish(),
                    y,
                    &mut host_slice_mut(w.saved)[..2 * c],
                );
                add_residual_cpu(y, residual);
            })
        }
    }

    fn batchnorm_train_fwd_dropped_join(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        w: BnWork,
        residual: Tensor,
        drop: &DropConnect,
    ) -> Result<()> {
        check_train_fwd(s, x, y, p, w)?;
        check_residual(s, y, Some(residual))?;
        let (keep, scale, _) = check_drop(s, drop)?;
        let c = s.c_active;
        // SAFETY: live host tensors; outputs (y, saved) checked disjoint from each other and the inputs.
        unsafe {
            let x = host_values(x);
            write_values(y, |y| {
                reference::train_fwd(
                    &x,
                    c,
                    &host_slice(p.gamma)[..c],
                    &host_slice(p.beta)[..c],
                    s.activation.is_swish(),
                    y,
                    &mut host_slice_mut(w.saved)[..2 * c],
                );
                let bn_out = y.to_vec();
                crate::backend::cpu::regularize::drop_connect(drop.mask.seed, keep, scale, drop.per_sample, &bn_out, y);
                add_residual_cpu(y, Some(residual));
            })
        }
    }

    fn batchnorm_train_fwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        w: BnWork,
        pool: &PoolShape,
        pooled: Tensor,
    ) -> Result<()> {
        check_pooled(s, y, pool, pooled)?;
        // the composition is the reference: the pool reads y as stored (rounded, in bf16)
        self.batchnorm_train_fwd(s, x, y, p, w, None)?;
        self.global_avg_pool_fwd(pool, y, pooled)
    }

    fn batchnorm_eval_fwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        (running_mean, running_var): (Tensor, Tensor),
        pool: &PoolShape,
        pooled: Tensor,
    ) -> Result<()> {
        check_pooled(s, y, pool, pooled)?;
        self.batchnorm_eval_fwd(s, x, y, p, running_mean, running_var, None)?;
        self.global_avg_pool_fwd(pool, y, pooled)
    }

    fn batchnorm_train_bwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        dy: Tensor,
        dx: Tensor,
        p: BnParams,
        g: BnGrads,
        w: BnWork,
    ) -> Result<()> {
        check_train_bwd(s, x, dy, dx, p, g, w)?;
        // SAFETY: live host tensors; dx, dgamma, dbeta checked disjoint from each other and the inputs.
        unsafe { cpu_train_bwd(s, x, &host_values(dy), dx, p, g, w) }
    }

    fn batchnorm_train_bwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        dy: Tensor,
        dx: Tensor,
        p: BnParams,
        g: BnGrads,
        w: BnWork,
        pool: &PoolShape,
        d_pooled: Tensor,
    ) -> Result<()> {
        check_train_bwd(s, x, dy, dx, p, g, w)?;
        check_pooled_bwd(s, dx, pool, d_pooled)?;
        // SAFETY: live host tensors; dx, dgamma, dbeta checked disjoint from each other and the inputs.
        unsafe {
            // dy widened to f32 plus the pool's gradient, added as the pool backward adds it, unrounded
            let mut dy = host_values(dy).into_owned();
            pool_reference::global_avg_pool_bwd(&host_values(d_pooled), pool.n, pool.h * pool.w, pool.c, true, &mut dy);
            cpu_train_bwd(s, x, &dy, dx, p, g, w)
        }
    }

    fn batchnorm_eval_fwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        running_mean: Tensor,
        running_var: Tensor,
        residual: Option<Tensor>,
    ) -> Result<()> {
        check_eval(s, x, y, p, running_mean, running_var)?;
        check_residual(s, y, residual)?;
        let c = s.c_active;
        // SAFETY: live host tensors; y checked disjoint from x (the parameters are only read).
        unsafe {
            let x = host_values(x);
            write_values(y, |y| {
                reference::eval_fwd(
                    &x,
                    c,
                    &host_slice(p.gamma)[..c],
                    &host_slice(p.beta)[..c],
                    &host_slice(running_mean)[..c],
                    &host_slice(running_var)[..c],
                    s.activation.is_swish(),
                    y,
                );
                add_residual_cpu(y, residual);
            })
        }
    }

    fn batchnorm_calibrate(&self, s: &BatchNormSpec, saved: Tensor, rm: Tensor, rv: Tensor, batch: u32) -> Result<()> {
        check_calibrate(s, saved, rm, rv, batch)?;
        let c = s.c_active;
        // SAFETY: live host tensors; running_mean and running_var checked disjoint.
        unsafe {
            reference::calibrate(
                &host_slice(saved)[..2 * c],
                c,
                s.pixels,
                batch,
                &mut host_slice_mut(rm)[..c],
                &mut host_slice_mut(rv)[..c],
            )
        };
        Ok(())
    }
}

/// Geometry shared by the CUDA launchers of one spec.
struct Geometry {
    per_pixel: LaunchDims,
    finalize: LaunchDims,
    chunks: i32,
    rows_per_chunk: i32,
}

fn geometry(s: &BatchNormSpec) -> Result<Geometry> {
    let (chunks, rows) = s.chunking();
    let tiles = s.c_active.div_ceil(CHANNEL_TILE * CHANNELS_PER_LANE) as u32;
    let finalize_tiles = s.c_active.div_ceil(CHANNEL_TILE) as u32;
    let too_big = |what: &str, v: usize| Error::shape(format!("batchnorm {what} (kernel int argument)"), "< 2^31", v);
    i32::try_from(s.c_active).map_err(|_| too_big("c_active", s.c_active))?;
    Ok(Geometry {
        per_pixel: LaunchDims {
            grid: (tiles, chunks as u32, 1),
            block: (CHANNEL_TILE as u32, ROW_LANES, 1),
            shared_bytes: 0,
        },
        finalize: LaunchDims {
            grid: (finalize_tiles, 1, 1),
            block: (CHANNEL_TILE as u32, FINAL_LANES, 1),
            shared_bytes: 0,
        },
        chunks: i32::try_from(chunks).map_err(|_| too_big("chunks", chunks))?,
        rows_per_chunk: i32::try_from(rows).map_err(|_| too_big("rows per chunk", rows))?,
    })
}

impl<D: KernelDevice> CudaBackend<D> {
    /// The per-pixel normalisation of both forwards, with `(mean, var)` the batch or running stats.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_apply(
        &self,
        s: &BatchNormSpec,
        g: &Geometry,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        (mean, var): (Tensor, Tensor),
        residual: Option<Tensor>,
        drop: Option<&DropConnect>,
    ) -> Result<()> {
        let (keep, scale, rows_per_sample) = match drop {
            Some(d) => check_drop(s, d)?,
            None => (1.0, 1.0, s.pixels),
        };
        // SAFETY (argument order): batchnorm_apply_fwd<T>(T* y, const T* x, const float* gamma,
        // const float* beta, const float* mean, const float* var, const T* residual, long long pixels,
        // int c, int rows_per_chunk, int swish, int has_residual, int has_drop, long long rows_per_sample,
        // unsigned long long drop_seed, float drop_keep, float drop_scale); without a residual x stands in
        // for the pointer, never read.
        self.launch(
            self.entry(KernelTemplate::BatchnormApplyFwd, x.dtype())?,
            g.per_pixel,
            &[
                y.into(),
                x.into(),
                p.gamma.into(),
                p.beta.into(),
                mean.into(),
                var.into(),
                residual.unwrap_or(x).into(),
                KernelArg::I64(s.pixels as i64),
                KernelArg::I32(s.c_active as i32),
                KernelArg::I32(g.rows_per_chunk),
                KernelArg::I32(s.activation.is_swish() as i32),
                KernelArg::I32(residual.is_some() as i32),
                KernelArg::I32(drop.is_some() as i32),
                KernelArg::I64(rows_per_sample as i64),
                KernelArg::U64(drop.map_or(0, |d| d.mask.seed)),
                KernelArg::F32(keep),
                KernelArg::F32(scale),
            ],
        )
    }

    /// The training forward's statistics (two stages) into `w.saved`; returns its (mean, var) halves.
    fn batchnorm_train_stats(&self, s: &BatchNormSpec, g: &Geometry, x: Tensor, w: BnWork) -> Result<(Tensor, Tensor)> {
        let (pixels, c) = (KernelArg::I64(s.pixels as i64), KernelArg::I32(s.c_active as i32));
        // SAFETY (argument order): batchnorm_stats_partial<T>(float* partial, const T* x, long long pixels,
        // int c, int rows_per_chunk).
        self.launch(
            self.entry(KernelTemplate::BatchnormStatsPartial, x.dtype())?,
            g.per_pixel,
            &[w.scratch.into(), x.into(), pixels, c, KernelArg::I32(g.rows_per_chunk)],
        )?;
        // SAFETY (argument order): batchnorm_stats_finalize<T>(float* saved, const float* partial,
        // const T* x, long long pixels, int c, int chunks).
        self.launch(
            self.entry(KernelTemplate::BatchnormStatsFinalize, x.dtype())?,
            g.finalize,
            &[w.saved.into(), w.scratch.into(), x.into(), pixels, c, KernelArg::I32(g.chunks)],
        )?;
        Ok((w.saved.slice(0, s.c_active)?, w.saved.slice(s.c_active, s.c_active)?))
    }

    /// The training backward's three launches (partial sums, finalize, dx), with the squeeze's gradient
    /// added to dy as it is read when `pool` is given (`batchnorm_train_bwd_pooled`).
    fn batchnorm_bwd(
        &self,
        s: &BatchNormSpec,
        (x, dy, dx): (Tensor, Tensor, Tensor),
        p: BnParams,
        gr: BnGrads,
        w: BnWork,
        pool: Option<(&PoolShape, Tensor)>,
    ) -> Result<()> {
        let g = geometry(s)?;
        let (pixels, c) = (KernelArg::I64(s.pixels as i64), KernelArg::I32(s.c_active as i32));
        let swish = KernelArg::I32(s.activation.is_swish() as i32);
        // without a pool gradient gamma stands in for the pointer, never read
        let dpool = KernelArg::from(pool.map_or(p.gamma, |(_, d)| d));
        let has_dpool = KernelArg::I32(pool.is_some() as i32);
        let rows_per_sample = KernelArg::I64(pool.map_or(s.pixels, |(sh, _)| sh.h * sh.w) as i64);
        let partial_len = 2 * s.c_active * g.chunks as usize;
        let sums = w.scratch.slice(partial_len, 2 * s.c_active)?;
        // SAFETY (argument order): batchnorm_grad_partial<T>(float* partial, const T* x, const T* dy,
        // const float* gamma, const float* beta, const float* saved, const float* dpool, long long pixels,
        // int c, int rows_per_chunk, int swish, int has_dpool, long long rows_per_sample).
        self.launch(
            self.entry(KernelTemplate::BatchnormGradPartial, x.dtype())?,
            g.per_pixel,
            &[
                w.scratch.into(),
                x.into(),
                dy.into(),
                p.gamma.into(),
                p.beta.into(),
                w.saved.into(),
                dpool,
                pixels,
                c,
                KernelArg::I32(g.rows_per_chunk),
                swish,
                has_dpool,
                rows_per_sample,
            ],
        )?;
        // SAFETY (argument order): batchnorm_grad_finalize_f32(float* sums, float* dgamma, float* dbeta,
        // const float* partial, int c, int chunks).
        self.launch(
            KernelFn::BatchnormGradFinalizeF32,
            g.finalize,
            &[sums.into(), gr.dgamma.into(), gr.dbeta.into(), w.scratch.into(), c, KernelArg::I32(g.chunks)],
        )?;
        // SAFETY (argument order): batchnorm_grad_input<T>(T* dx, const T* x, const T* dy,
        // const float* gamma, const float* beta, const float* saved, const float* sums, const float* dpool,
        // long long pixels, int c, int rows_per_chunk, int swish, int has_dpool, long long rows_per_sample).
        self.launch(
            self.entry(KernelTemplate::BatchnormGradInput, x.dtype())?,
            g.per_pixel,
            &[
                dx.into(),
                x.into(),
                dy.into(),
                p.gamma.into(),
                p.beta.into(),
                w.saved.into(),
                sums.into(),
                dpool,
                pixels,
                c,
                KernelArg::I32(g.rows_per_chunk),
                swish,
                has_dpool,
                rows_per_sample,
            ],
        )
    }

    /// The apply pass fused with the SE squeeze (`batchnorm_apply_pool_fwd`), geometry of the global pool.
    fn batchnorm_apply_pool(
        &self,
        s: &BatchNormSpec,
        (x, y): (Tensor, Tensor),
        p: BnParams,
        (mean, var): (Tensor, Tensor),
        pool: &PoolShape,
        pooled: Tensor,
    ) -> Result<()> {
        // the global pool's own geometry (pool.c == s.c_active, checked): the same per-thread partial sums
        // in the same order, so the pooled values equal BN then pool bit for bit
        let dims = pool.per_sample_channel_dims();
        // SAFETY (argument order): batchnorm_apply_pool_fwd<T>(T* y, float* pooled, const T* x,
        // const float* gamma, const float* beta, const float* mean, const float* var, int hw, int c,
        // int swish); lengths and disjointness checked by check_train_fwd / check_eval / check_pooled.
        self.launch(
            self.entry(KernelTemplate::BatchnormApplyPoolFwd, x.dtype())?,
            dims,
            &[
                y.into(),
                pooled.into(),
                x.into(),
                p.gamma.into(),
                p.beta.into(),
                mean.into(),
                var.into(),
                KernelArg::I32((pool.h * pool.w) as i32),
                KernelArg::I32(s.c_active as i32),
                KernelArg::I32(s.activation.is_swish() as i32),
            ],
        )
    }
}

impl<D: KernelDevice> BatchNormOps for CudaBackend<D> {
    fn batchnorm_train_fwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        w: BnWork,
        residual: Option<Tensor>,
    ) -> Result<()> {
        check_train_fwd(s, x, y, p, w)?;
        check_residual(s, y, residual)?;
        let g = geometry(s)?;
        let stats = self.batchnorm_train_stats(s, &g, x, w)?;
        self.batchnorm_apply(s, &g, x, y, p, stats, residual, None)
    }

    fn batchnorm_train_fwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        w: BnWork,
        pool: &PoolShape,
        pooled: Tensor,
    ) -> Result<()> {
        check_train_fwd(s, x, y, p, w)?;
        check_pooled(s, y, pool, pooled)?;
        let g = geometry(s)?;
        let stats = self.batchnorm_train_stats(s, &g, x, w)?;
        self.batchnorm_apply_pool(s, (x, y), p, stats, pool, pooled)
    }

    fn batchnorm_eval_fwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        running: (Tensor, Tensor),
        pool: &PoolShape,
        pooled: Tensor,
    ) -> Result<()> {
        check_eval(s, x, y, p, running.0, running.1)?;
        check_pooled(s, y, pool, pooled)?;
        self.batchnorm_apply_pool(s, (x, y), p, running, pool, pooled)
    }

    fn batchnorm_train_fwd_dropped_join(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        w: BnWork,
        residual: Tensor,
        drop: &DropConnect,
    ) -> Result<()> {
        check_train_fwd(s, x, y, p, w)?;
        check_residual(s, y, Some(residual))?;
        check_drop(s, drop)?;
        let g = geometry(s)?;
        let stats = self.batchnorm_train_stats(s, &g, x, w)?;
        self.batchnorm_apply(s, &g, x, y, p, stats, Some(residual), Some(drop))
    }

    fn batchnorm_train_bwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        dy: Tensor,
        dx: Tensor,
        p: BnParams,
        gr: BnGrads,
        w: BnWork,
    ) -> Result<()> {
        check_train_bwd(s, x, dy, dx, p, gr, w)?;
        self.batchnorm_bwd(s, (x, dy, dx), p, gr, w, None)
    }

    fn batchnorm_train_bwd_pooled(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        dy: Tensor,
        dx: Tensor,
        p: BnParams,
        gr: BnGrads,
        w: BnWork,
        pool: &PoolShape,
        d_pooled: Tensor,
    ) -> Result<()> {
        check_train_bwd(s, x, dy, dx, p, gr, w)?;
        check_pooled_bwd(s, dx, pool, d_pooled)?;
        self.batchnorm_bwd(s, (x, dy, dx), p, gr, w, Some((pool, d_pooled)))
    }

    fn batchnorm_eval_fwd(
        &self,
        s: &BatchNormSpec,
        x: Tensor,
        y: Tensor,
        p: BnParams,
        running_mean: Tensor,
        running_var: Tensor,
        residual: Option<Tensor>,
    ) -> Result<()> {
        check_eval(s, x, y, p, running_mean, running_var)?;
        check_residual(s, y, residual)?;
        let g = geometry(s)?;
        self.batchnorm_apply(s, &g, x, y, p, (running_mean, running_var), residual, None)
    }

    fn batchnorm_calibrate(&self, s: &BatchNormSpec, saved: Tensor, rm: Tensor, rv: Tensor, batch: u32) -> Result<()> {
        check_calibrate(s, saved, rm, rv, batch)?;
        geometry(s)?;
        let batch = i32::try_from(batch).map_err(|_| Error::shape("batchnorm_calibrate batch", "< 2^31", batch))?;
        // SAFETY (argument order): batchnorm_calibrate_f32(float* running_mean, float* running_var,
        // const float* saved, int c, long long pixels, int batches).
        self.launch(
            KernelFn::BatchnormCalibrateF32,
            LaunchDims::linear(s.c_active, 256, 65535),
            &[
                rm.into(),
                rv.into(),
                saved.into(),
                KernelArg::I32(s.c_active as i32),
                KernelArg::I64(s.pixels as i64),
                KernelArg::I32(batch),
            ],
        )
    }
}
