//! The optimizer step (spec 3.1): element-wise gradient clip, coupled weight decay by parameter group,
//! SGD with Nesterov momentum, fused into one kernel pass; and the per-iteration warmup-cosine learning
//! rate (a host function). Reference: `backend::cpu::optimizer`; kernel: `kernels/optimizer.cu`.
//!
//! Parameter groups: the caller lays its parameter, gradient and momentum arenas out so that each weight
//! decay value covers contiguous runs (the recipe has two: 1e-5 on conv/linear weights, 0 on BN and
//! biases) and passes one [`ParamGroup`] per run. A step is then one launch per group, each a single
//! streaming pass (read p, v, g; write p, v: 20 bytes per parameter). Rejected alternatives: a
//! per-element group index adds 4 bytes per parameter (+20% traffic) to carry one bit of information; a
//! device-side segment table needs its own planned buffer and a lookup per element, to save launches
//! that number in the single digits once the arena is grouped.
//!
//! bf16 training (issue #13 item 1): parameters, momentum and gradients stay f32 (the master weights);
//! a group may carry `copy`, the parameters in the storage type the GEMMs read, which the step refreshes
//! in the same pass (`copy = round(p)` after the update) instead of a separate cast over every weight.

use crate::backend::cpu::{
    check_disjoint, check_f32, check_len, host_slice, host_slice_mut, optimizer as reference, store_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelTemplate};
use crate::backend::{Backend, Dtype, Tensor};
use crate::error::{Error, Result};

pub use reference::SgdStep;

/// One contiguous run of parameters sharing a weight decay: `params`, `grads` and `momentum` have the
/// same length and are disjoint; `params` and `momentum` are updated in place, `grads` is only read.
#[derive(Clone, Copy, Debug)]
pub struct ParamGroup {
    pub params: Tensor,
    pub grads: Tensor,
    pub momentum: Tensor,
    /// Coupled (L2) weight decay added to the clipped gradient: 1e-5 for conv/linear weights, 0 for BN
    /// parameters and biases in the recipe.
    pub weight_decay: f32,
    /// The parameters' storage-type copy (bf16 training: what the GEMMs read), `params.len()` elements,
    /// overwritten with the updated parameters rounded to its type; `None` in f32 training.
    pub copy: Option<Tensor>,
}

pub trait OptimizerOps: Backend {
    /// For every element of every group: g = clip(grad, -c, c) + wd * p; v = mu v + g; p -= lr (g + mu v).
    fn sgd_nesterov_step(&self, step: &SgdStep, groups: &[ParamGroup]) -> Result<()>;
}

fn check(step: &SgdStep, groups: &[ParamGroup]) -> Result<()> {
    let scalar = |name: &str, v: f32, ok: bool, want: &str| {
        if ok {
            Ok(())
        } else {
            Err(Error::shape(format!("sgd_nesterov_step {name}"), want, v))
        }
    };
    scalar("lr", step.lr, step.lr.is_finite() && step.lr >= 0.0, "a finite value >= 0")?;
    scalar("momentum", step.momentum, (0.0..1.0).contains(&step.momentum), "a value in [0, 1)")?;
    scalar("clip", step.clip, step.clip > 0.0, "a value > 0 (f32::INFINITY for no clip)")?;
    for (i, g) in groups.iter().enumerate() {
        let name = |t: &str| format!("sgd_nesterov_step group {i} {t}");
        let wd = g.weight_decay;
        scalar(&name("weight_decay"), wd, wd.is_finite() && wd >= 0.0, "a finite value >= 0")?;
        check_f32("sgd_nesterov_step", &[("params", g.params), ("grads", g.grads), ("momentum", g.momentum)])?;
        check_len(&name("grads"), g.grads, g.params.len())?;
        if let Some(copy) = g.copy {
            check_len(&name("copy"), copy, g.params.len())?;
            for (what, t) in [("params", g.params), ("grads", g.grads), ("momentum", g.momentum)] {
                check_disjoint(&name(&format!("(copy vs {what})")), copy, t)?;
            }
        }
        check_len(&name("momentum"), g.momentum, g.params.len())?;
        check_disjoint(&name("(params vs grads)"), g.params, g.grads)?;
        check_disjoint(&name("(params vs momentum)"), g.params, g.momentum)?;
        check_disjoint(&name("(momentum vs grads)"), g.momentum, g.grads)?;
        // a parameter in two groups would be stepped twice
        for (j, other) in groups[..i].iter().enumerate() {
            for (what, a, b) in [("params", g.params, other.params), ("momentum", g.momentum, other.momentum)] {
                check_disjoint(&format!("sgd_nesterov_step {what} of groups {j} and {i}"), a, b)?;
            }
            check_disjoint(
                &format!("sgd_nesterov_step params of group {i} vs momentum of group {j}"),
                g.params,
                other.momentum,
            )?;
            check_disjoint(
                &format!("sgd_nesterov_step momentum of group {i} vs params of group {j}"),
                g.momentum,
                other.params,
            )?;
        }
    }
    Ok(())
}

impl OptimizerOps for CpuBackend {
    fn sgd_nesterov_step(&self, step: &SgdStep, groups: &[ParamGroup]) -> Result<()> {
        check(step, groups)?;
        for g in groups {
            // SAFETY: live host tensors of equal length; params and momentum disjoint from each other, from
            // grads and from every other group's params and momentum (checked above).
            unsafe {
                reference::sgd_nesterov_step(
                    step,
                    g.weight_decay,
                    host_slice_mut(g.params),
                    host_slice_mut(g.momentum),
                    host_slice(g.grads),
                );
                if let Some(copy) = g.copy {
                    store_values(copy, host_slice(g.params))?;
                }
            };
        }
        Ok(())
    }
}

impl<D: KernelDevice> OptimizerOps for CudaBackend<D> {
    fn sgd_nesterov_step(&self, step: &SgdStep, groups: &[ParamGroup]) -> Result<()> {
        check(step, groups)?;
        for g in groups.iter().filter(|g| !g.params.is_empty()) {
            // SAFETY (argument order): sgd_nesterov_step<T>(float* params, float* momentum, const float* grads,
            // T* copy, long long n, float lr, float momentum_coef, float weight_decay, float clip, int has_copy);
            // without a copy the f32 entry point gets params as the never-written copy pointer.
            let copy = g.copy.unwrap_or(g.params);
            let kernel = self.entry(KernelTemplate::SgdNesterovStep, g.copy.map_or(Dtype::F32, |c| c.dtype()))?;
            self.launch(
                kernel,
                Self::elementwise(g.params.len()),
                &[
                    g.params.into(),
                    g.momentum.into(),
                    g.grads.into(),
                    copy.into(),
                    KernelArg::I64(g.params.len() as i64),
                    KernelArg::F32(step.lr),
                    KernelArg::F32(step.momentum),
                    KernelArg::F32(g.weight_decay),
                    KernelArg::F32(step.clip),
                    KernelArg::I32(g.copy.is_some() as i32),
                ],
            )?;
        }
        Ok(())
    }
}

/// The per-iteration learning rate of spec 3.1:
/// `lr(i) = base * w(i) * (1 + cos(pi * i / total)) / 2`, with `w(i) = 0.001 + 0.999 * i / warmup` while
/// `i < warmup` and 1 afterwards. The warmup lies inside `total` (the cosine starts at i = 0) and the
/// final rate is 0 (`clamp_lr_percent: 0`); iterations past `total` stay at 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosineLr {
    base_lr: f64,
    warmup_iters: u64,
    total_iters: u64,
}

/// The recipe's linear scaling rule: 0.1 * max(1, floor(global_batch / 256)) (0.8 at batch 2048).
pub fn scaled_base_lr(global_batch: usize) -> f64 {
    0.1 * (global_batch / 256).max(1) as f64
}

impl WarmupCosineLr {
    pub fn new(base_lr: f64, warmup_iters: u64, total_iters: u64) -> Result<Self> {
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return Err(Error::usage(format!(
                "learning rate schedule: base_lr must be finite and >= 0, got {base_lr}"
            )));
        }
        if total_iters == 0 || warmup_iters > total_iters {
            return Err(Error::usage(format!(
                "learning rate schedule: need 0 <= warmup_iters <= total_iters and total_iters > 0, got warmup {warmup_iters}, total {total_iters}"
            )));
        }
        Ok(WarmupCosineLr { base_lr, warmup_iters, total_iters })
    }

    /// The learning rate for iteration `iter` (0-based, stepped every iteration).
    pub fn lr(&self, iter: u64) -> f32 {
        let i = iter.min(self.total_iters) as f64;
        let warm = if iter < self.warmup_iters { 0.001 + 0.999 * i / self.warmup_iters as f64 } else { 1.0 };
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * i / self.total_iters as f64).cos());
        (self.base_lr * warm * cosine) as f32
    }
}
