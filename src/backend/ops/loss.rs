//! Losses and metrics on the head's logits (spec 3.2): label-smoothing cross-entropy (the max subnet
//! against the labels), soft cross-entropy against teacher logits (in-place distillation), AlphaNet's
//! alpha-divergence distillation loss ([`AlphaDivergence`]), top-1/top-5 counts. Reference: `backend::cpu::loss`; kernels: `kernels/loss.cu`.
//!
//! Labels are class indices stored as f32 (exact for k <= 2^24), so they live in the same arenas as
//! every other tensor. The CPU backend rejects an invalid label with an error naming the row; a kernel
//! cannot return one, so on CUDA that row's loss, gradient and rank are NaN (visible, never silent).
//! Batch values are per-row results followed by one deterministic single-block reduction: no float
//! atomics, so the same inputs always give the same bits and CPU and GPU agree tightly.

use crate::backend::cpu::{check_disjoint, check_len, host_slice, host_slice_mut, loss as reference, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn, LaunchDims};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

pub use crate::backend::cpu::loss::AlphaDivergence;

/// Logits `(n, classes)`, row-major and dense; labels and per-row outputs `(n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossShape {
    pub n: usize,
    pub classes: usize,
}

impl LossShape {
    pub fn logits_len(&self) -> usize {
        self.n * self.classes
    }
}

pub trait LossOps: Backend {
    /// row_loss (n) = -sum_c target_c log_softmax(z)_c with target = (1 - eps) onehot(label) + eps / classes;
    /// loss (1) = mean of row_loss.
    fn label_smoothing_ce_fwd(
        &self,
        s: &LossShape,
        eps: f32,
        logits: Tensor,
        labels: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()>;

    /// dlogits (n, classes) = (softmax(z) - target) / n: the gradient of the batch-mean loss (overwritten).
    fn label_smoothing_ce_bwd(
        &self,
        s: &LossShape,
        eps: f32,
        logits: Tensor,
        labels: Tensor,
        dlogits: Tensor,
    ) -> Result<()>;

    /// row_loss (n) = -sum_c softmax(teacher)_c log_softmax(z)_c; loss (1) = mean of row_loss.
    fn soft_ce_fwd(&self, s: &LossShape, logits: Tensor, teacher: Tensor, row_loss: Tensor, loss: Tensor)
        -> Result<()>;

    /// dlogits (n, classes) = (softmax(z) - softmax(teacher)) / n (overwritten); no gradient to the teacher.
    fn soft_ce_bwd(&self, s: &LossShape, logits: Tensor, teacher: Tensor, dlogits: Tensor) -> Result<()>;

    /// row_loss (n) = AlphaNet's alpha-divergence surrogate of each row against the teacher's (see
    /// [`AlphaDivergence`]); loss (1) = mean of row_loss.
    fn alpha_divergence_fwd(
        &self,
        s: &LossShape,
        cfg: &AlphaDivergence,
        logits: Tensor,
        teacher: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()>;

    /// dlogits (n, classes) = (q sum_c a_c - a) / n, the gradient of the batch-mean surrogate (overwritten);
    /// no gradient to the teacher.
    fn alpha_divergence_bwd(
        &self,
        s: &LossShape,
        cfg: &AlphaDivergence,
        logits: Tensor,
        teacher: Tensor,
        dlogits: Tensor,
    ) -> Result<()>;

    /// row_rank (n) = #{c : z_c > z_y} + #{c < y : z_c == z_y} (0 = top-1); counts (2) = [rows with
    /// rank < 1, rows with rank < 5] as exact small integers in f32.
    fn topk_correct(
        &self,
        s: &LossShape,
        logits: Tensor,
        labels: Tensor,
        row_rank: Tensor,
        counts: Tensor,
    ) -> Result<()>;
}

/// Labels, ranks and counts are integers held in f32: exact up to 2^24.
pub const MAX_EXACT_F32_INT: usize = 1 << 24;

fn check_shape(op: &str, s: &LossShape) -> Result<()> {
    // also keeps the kernels' int sizes and the one-block-per-row grid (grid.x <= 2^31 - 1) in range;
    // row offsets are 64-bit in the kernels
    for (name, v) in [("n", s.n), ("classes", s.classes)] {
        if v == 0 || v > MAX_EXACT_F32_INT {
            return Err(Error::shape(format!("{op} {name}"), "1 ..= 2^24 (integers exact in f32)", v));
        }
    }
    Ok(())
}

/// The second input of a loss: the labels `(n)` or the teacher logits `(n, classes)`.
#[derive(Clone, Copy)]
enum Target {
    Labels(Tensor),
    Teacher(Tensor),
}

impl Target {
    fn check(self, op: &str, s: &LossShape) -> Result<(&'static str, Tensor)> {
        let (name, t, len) = match self {
            Target::Labels(t) => ("labels (n)", t, s.n),
            Target::Teacher(t) => ("teacher (n, classes)", t, s.logits_len()),
        };
        check_len(&format!("{op} {name}"), t, len)?;
        Ok((name, t))
    }
}

/// Lengths of the inputs, the per-row output `(n)` and the batch output (`batch` = tensor and expected
/// length), and that no output aliases an input or the other output.
fn check_rows(
    op: &str,
    s: &LossShape,
    logits: Tensor,
    target: Target,
    rows: Tensor,
    batch: (Tensor, usize),
) -> Result<()> {
    check_shape(op, s)?;
    check_len(&format!("{op} logits (n, classes)"), logits, s.logits_len())?;
    let (target_name, target) = target.check(op, s)?;
    check_len(&format!("{op} per-row output (n)"), rows, s.n)?;
    check_len(&format!("{op} batch output"), batch.0, batch.1)?;
    for (what, output) in [("per-row output", rows), ("batch output", batch.0)] {
        check_disjoint(&format!("{op} ({what} vs logits)"), logits, output)?;
        check_disjoint(&format!("{op} ({what} vs {target_name})"), target, output)?;
    }
    check_disjoint(&format!("{op} (per-row vs batch output)"), rows, batch.0)
}

fn check_grad(op: &str, s: &LossShape, logits: Tensor, target: Target, dlogits: Tensor) -> Result<()> {
    check_shape(op, s)?;
    check_len(&format!("{op} logits (n, classes)"), logits, s.logits_len())?;
    let (target_name, target) = target.check(op, s)?;
    check_len(&format!("{op} dlogits (n, classes)"), dlogits, s.logits_len())?;
    check_disjoint(&format!("{op} (dlogits vs logits)"), logits, dlogits)?;
    check_disjoint(&format!("{op} (dlogits vs {target_name})"), target, dlogits)
}

fn check_eps(op: &str, eps: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&eps) {
        return Err(Error::shape(format!("{op} eps"), "label smoothing in [0, 1]", eps));
    }
    Ok(())
}

/// alpha in [-1e3, 1e3] (finite) and a positive importance-weight clip; both alphas may be equal.
fn check_alpha(op: &str, cfg: &AlphaDivergence) -> Result<()> {
    for (name, v) in [("alpha_min", cfg.alpha_min), ("alpha_max", cfg.alpha_max)] {
        if !v.is_finite() || v.abs() > 1e3 {
            return Err(Error::shape(format!("{op} {name}"), "a finite alpha in [-1000, 1000]", v));
        }
    }
    if !(cfg.iw_clip.is_finite() && cfg.iw_clip > 0.0) {
        return Err(Error::shape(format!("{op} iw_clip"), "a positive finite importance-weight clip", cfg.iw_clip));
    }
    Ok(())
}

/// The CPU side can read its labels: an invalid one is an error naming the row.
fn check_labels(op: &str, classes: usize, labels: &[f32]) -> Result<()> {
    match labels.iter().position(|&l| reference::label_index(l, classes).is_none()) {
        Some(i) => Err(Error::shape(format!("{op} labels[{i}]"), format!("a class index in 0..{classes}"), labels[i])),
        None => Ok(()),
    }
}

impl LossOps for CpuBackend {
    fn label_smoothing_ce_fwd(
        &self,
        s: &LossShape,
        eps: f32,
        logits: Tensor,
        labels: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()> {
        let op = "label_smoothing_ce_fwd";
        check_rows(op, s, logits, Target::Labels(labels), row_loss, (loss, 1))?;
        check_eps(op, eps)?;
        // SAFETY: live host tensors of the checked lengths; outputs disjoint from inputs and each other.
        unsafe {
            check_labels(op, s.classes, host_slice(labels))?;
            let rows = host_slice_mut(row_loss);
            reference::label_smoothing_ce_fwd(s.classes, eps, host_slice(logits), host_slice(labels), rows);
            host_slice_mut(loss)[0] = reference::batch_mean(rows);
        }
        Ok(())
    }

    fn label_smoothing_ce_bwd(
        &self,
        s: &LossShape,
        eps: f32,
        logits: Tensor,
        labels: Tensor,
        dlogits: Tensor,
    ) -> Result<()> {
        let op = "label_smoothing_ce_bwd";
        check_grad(op, s, logits, Target::Labels(labels), dlogits)?;
        check_eps(op, eps)?;
        // SAFETY: live host tensors of the checked lengths; dlogits disjoint from both inputs.
        unsafe {
            check_labels(op, s.classes, host_slice(labels))?;
            reference::label_smoothing_ce_bwd(
                s.classes,
                eps,
                host_slice(logits),
                host_slice(labels),
                host_slice_mut(dlogits),
            );
        }
        Ok(())
    }

    fn soft_ce_fwd(
        &self,
        s: &LossShape,
        logits: Tensor,
        teacher: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()> {
        check_rows("soft_ce_fwd", s, logits, Target::Teacher(teacher), row_loss, (loss, 1))?;
        // SAFETY: live host tensors of the checked lengths; outputs disjoint from inputs and each other.
        unsafe {
            let rows = host_slice_mut(row_loss);
            reference::soft_ce_fwd(s.classes, host_slice(logits), host_slice(teacher), rows);
            host_slice_mut(loss)[0] = reference::batch_mean(rows);
        }
        Ok(())
    }

    fn soft_ce_bwd(&self, s: &LossShape, logits: Tensor, teacher: Tensor, dlogits: Tensor) -> Result<()> {
        check_grad("soft_ce_bwd", s, logits, Target::Teacher(teacher), dlogits)?;
        // SAFETY: live host tensors of the checked lengths; dlogits disjoint from both inputs.
        unsafe { reference::soft_ce_bwd(s.classes, host_slice(logits), host_slice(teacher), host_slice_mut(dlogits)) };
        Ok(())
    }

    fn alpha_divergence_fwd(
        &self,
        s: &LossShape,
        cfg: &AlphaDivergence,
        logits: Tensor,
        teacher: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()> {
        let op = "alpha_divergence_fwd";
        check_rows(op, s, logits, Target::Teacher(teacher), row_loss, (loss, 1))?;
        check_alpha(op, cfg)?;
        // SAFETY: live host tensors of the checked lengths; outputs disjoint from inputs and each other.
        unsafe {
            let rows = host_slice_mut(row_loss);
            reference::alpha_divergence_fwd(s.classes, cfg, host_slice(logits), host_slice(teacher), rows);
            host_slice_mut(loss)[0] = reference::batch_mean(rows);
        }
        Ok(())
    }

    fn alpha_divergence_bwd(
        &self,
        s: &LossShape,
        cfg: &AlphaDivergence,
        logits: Tensor,
        teacher: Tensor,
        dlogits: Tensor,
    ) -> Result<()> {
        let op = "alpha_divergence_bwd";
        check_grad(op, s, logits, Target::Teacher(teacher), dlogits)?;
        check_alpha(op, cfg)?;
        // SAFETY: live host tensors of the checked lengths; dlogits disjoint from both inputs.
        unsafe {
            let dz = host_slice_mut(dlogits);
            reference::alpha_divergence_bwd(s.classes, cfg, host_slice(logits), host_slice(teacher), dz);
        }
        Ok(())
    }

    fn topk_correct(
        &self,
        s: &LossShape,
        logits: Tensor,
        labels: Tensor,
        row_rank: Tensor,
        counts: Tensor,
    ) -> Result<()> {
        let op = "topk_correct";
        check_rows(op, s, logits, Target::Labels(labels), row_rank, (counts, 2))?;
        // SAFETY: live host tensors of the checked lengths; outputs disjoint from inputs and each other.
        unsafe {
            check_labels(op, s.classes, host_slice(labels))?;
            let ranks = host_slice_mut(row_rank);
            reference::topk_rank(s.classes, host_slice(logits), host_slice(labels), ranks);
            host_slice_mut(counts).copy_from_slice(&reference::topk_count(ranks));
        }
        Ok(())
    }
}

/// Threads for the row kernels: a whole number of warps covering the row, at most 256 (k = 1000 gives
/// each thread 4 classes; k = 10 runs one warp instead of 8 idle ones).
pub const ROW_MAX_THREADS: u32 = 256;
/// Threads of the single-block batch reductions.
pub const REDUCE_THREADS: u32 = 256;

fn one_block_per_row(s: &LossShape) -> LaunchDims {
    let threads = (s.classes.div_ceil(32) * 32).min(ROW_MAX_THREADS as usize) as u32;
    LaunchDims { grid: (s.n as u32, 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
}

fn single_block() -> LaunchDims {
    LaunchDims { grid: (1, 1, 1), block: (REDUCE_THREADS, 1, 1), shared_bytes: 0 }
}

impl<D: KernelDevice> CudaBackend<D> {
    /// out[0] = mean of the n per-row values, one block, fixed summation order.
    fn launch_batch_mean(&self, s: &LossShape, rows: Tensor, out: Tensor) -> Result<()> {
        // SAFETY (argument order): batch_mean_fwd_f32(float* mean, const float* values, int n).
        self.launch(KernelFn::BatchMeanFwdF32, single_block(), &[out.into(), rows.into(), KernelArg::I32(s.n as i32)])
    }
}

impl<D: KernelDevice> LossOps for CudaBackend<D> {
    fn label_smoothing_ce_fwd(
        &self,
        s: &LossShape,
        eps: f32,
        logits: Tensor,
        labels: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()> {
        check_rows("label_smoothing_ce_fwd", s, logits, Target::Labels(labels), row_loss, (loss, 1))?;
        check_eps("label_smoothing_ce_fwd", eps)?;
        // SAFETY (argument order): label_smoothing_ce_fwd_f32(float* row_loss, const float* logits,
        // const float* labels, int k, float eps).
        self.launch(
            KernelFn::LabelSmoothingCeFwdF32,
            one_block_per_row(s),
            &[row_loss.into(), logits.into(), labels.into(), KernelArg::I32(s.classes as i32), KernelArg::F32(eps)],
        )?;
        self.launch_batch_mean(s, row_loss, loss)
    }

    fn label_smoothing_ce_bwd(
        &self,
        s: &LossShape,
        eps: f32,
        logits: Tensor,
        labels: Tensor,
        dlogits: Tensor,
    ) -> Result<()> {
        check_grad("label_smoothing_ce_bwd", s, logits, Target::Labels(labels), dlogits)?;
        check_eps("label_smoothing_ce_bwd", eps)?;
        // SAFETY (argument order): label_smoothing_ce_bwd_f32(float* dlogits, const float* logits,
        // const float* labels, int k, float eps, float inv_n).
        self.launch(
            KernelFn::LabelSmoothingCeBwdF32,
            one_block_per_row(s),
            &[
                dlogits.into(),
                logits.into(),
                labels.into(),
                KernelArg::I32(s.classes as i32),
                KernelArg::F32(eps),
                KernelArg::F32((1.0 / s.n as f64) as f32),
            ],
        )
    }

    fn soft_ce_fwd(
        &self,
        s: &LossShape,
        logits: Tensor,
        teacher: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()> {
        check_rows("soft_ce_fwd", s, logits, Target::Teacher(teacher), row_loss, (loss, 1))?;
        // SAFETY (argument order): soft_ce_fwd_f32(float* row_loss, const float* logits, const float* teacher,
        // int k).
        self.launch(
            KernelFn::SoftCeFwdF32,
            one_block_per_row(s),
            &[row_loss.into(), logits.into(), teacher.into(), KernelArg::I32(s.classes as i32)],
        )?;
        self.launch_batch_mean(s, row_loss, loss)
    }

    fn soft_ce_bwd(&self, s: &LossShape, logits: Tensor, teacher: Tensor, dlogits: Tensor) -> Result<()> {
        check_grad("soft_ce_bwd", s, logits, Target::Teacher(teacher), dlogits)?;
        // SAFETY (argument order): soft_ce_bwd_f32(float* dlogits, const float* logits, const float* teacher,
        // int k, float inv_n).
        self.launch(
            KernelFn::SoftCeBwdF32,
            one_block_per_row(s),
            &[
                dlogits.into(),
                logits.into(),
                teacher.into(),
                KernelArg::I32(s.classes as i32),
                KernelArg::F32((1.0 / s.n as f64) as f32),
            ],
        )
    }

    fn alpha_divergence_fwd(
        &self,
        s: &LossShape,
        cfg: &AlphaDivergence,
        logits: Tensor,
        teacher: Tensor,
        row_loss: Tensor,
        loss: Tensor,
    ) -> Result<()> {
        check_rows("alpha_divergence_fwd", s, logits, Target::Teacher(teacher), row_loss, (loss, 1))?;
        check_alpha("alpha_divergence_fwd", cfg)?;
        // SAFETY (argument order): alpha_divergence_fwd_f32(float* row_loss, const float* logits,
        // const float* teacher, int k, float alpha_min, float alpha_max, float clip).
        self.launch(
            KernelFn::AlphaDivergenceFwdF32,
            one_block_per_row(s),
            &[
                row_loss.into(),
                logits.into(),
                teacher.into(),
                KernelArg::I32(s.classes as i32),
                KernelArg::F32(cfg.alpha_min),
                KernelArg::F32(cfg.alpha_max),
                KernelArg::F32(cfg.iw_clip),
            ],
        )?;
        self.launch_batch_mean(s, row_loss, loss)
    }

    fn alpha_divergence_bwd(
        &self,
        s: &LossShape,
        cfg: &AlphaDivergence,
        logits: Tensor,
        teacher: Tensor,
        dlogits: Tensor,
    ) -> Result<()> {
        check_grad("alpha_divergence_bwd", s, logits, Target::Teacher(teacher), dlogits)?;
        check_alpha("alpha_divergence_bwd", cfg)?;
        // SAFETY (argument order): alpha_divergence_bwd_f32(float* dlogits, const float* logits,
        // const float* teacher, int k, float alpha_min, float alpha_max, float clip, float inv_n).
        self.launch(
            KernelFn::AlphaDivergenceBwdF32,
            one_block_per_row(s),
            &[
                dlogits.into(),
                logits.into(),
                teacher.into(),
                KernelArg::I32(s.classes as i32),
                KernelArg::F32(cfg.alpha_min),
                KernelArg::F32(cfg.alpha_max),
                KernelArg::F32(cfg.iw_clip),
                KernelArg::F32((1.0 / s.n as f64) as f32),
            ],
        )
    }

    fn topk_correct(
        &self,
        s: &LossShape,
        logits: Tensor,
        labels: Tensor,
        row_rank: Tensor,
        counts: Tensor,
    ) -> Result<()> {
        check_rows("topk_correct", s, logits, Target::Labels(labels), row_rank, (counts, 2))?;
        // SAFETY (argument order): topk_rank_fwd_f32(float* row_rank, const float* logits, const float* labels,
        // int k).
        self.launch(
            KernelFn::TopkRankFwdF32,
            one_block_per_row(s),
            &[row_rank.into(), logits.into(), labels.into(), KernelArg::I32(s.classes as i32)],
        )?;
        // SAFETY (argument order): topk_count_fwd_f32(float* counts, const float* row_rank, int n).
        self.launch(
            KernelFn::TopkCountFwdF32,
            single_block(),
            &[counts.into(), row_rank.into(), KernelArg::I32(s.n as i32)],
        )
    }
}
