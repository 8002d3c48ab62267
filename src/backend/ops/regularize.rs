//! Dropout (before the classifier) and per-sample drop-connect (main branch of identity-shortcut
//! blocks), spec 3.4. Reference: `backend::cpu::regularize`; kernels: `kernels/regularize.cu`.
//!
//! Masks are a pure function of `(seed, element or sample index)` (a counter-based hash implemented
//! identically in Rust and CUDA), so nothing is stored between forward and backward, and CPU and GPU
//! draw the same masks: the backward is the forward map applied to `dy` with the same seed. A kept
//! value is scaled by `1 / keep` (`keep = 1 - rate`, both computed once in f32 here).

use crate::backend::cpu::{
    check_disjoint, check_len, check_same_dtype, host_values, regularize as reference, write_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelTemplate};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

/// One draw of a mask: the seed (e.g. derived from step, subnet and layer) and the drop rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropMask {
    pub seed: u64,
    /// Probability of dropping, in [0, 1).
    pub rate: f32,
}

impl DropMask {
    /// (keep, scale) as both backends use them; an error names a rate outside [0, 1).
    pub(crate) fn keep_scale(&self) -> Result<(f32, f32)> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::shape("drop rate", "in [0, 1)", self.rate));
        }
        let keep = 1.0 - self.rate;
        Ok((keep, 1.0 / keep))
    }
}

pub trait RegularizeOps: Backend {
    /// y = x * mask(i) / keep, one draw per element.
    fn dropout_fwd(&self, m: &DropMask, x: Tensor, y: Tensor) -> Result<()>;
    /// dx = dy * mask(i) / keep with the forward's mask.
    fn dropout_bwd(&self, m: &DropMask, dy: Tensor, dx: Tensor) -> Result<()>;
    /// y = x * mask(sample) / keep, one draw per sample of `per_sample` contiguous elements.
    fn drop_connect_fwd(&self, m: &DropMask, per_sample: usize, x: Tensor, y: Tensor) -> Result<()>;
    /// dx = dy * mask(sample) / keep with the forward's mask.
    fn drop_connect_bwd(&self, m: &DropMask, per_sample: usize, dy: Tensor, dx: Tensor) -> Result<()>;
}

fn check(op: &str, m: &DropMask, per_sample: Option<usize>, x: Tensor, y: Tensor) -> Result<(f32, f32)> {
    check_len(&format!("{op} output"), y, x.len())?;
    check_same_dtype(op, &[("input", x), ("output", y)])?;
    if let Some(per) = per_sample {
        if per == 0 || x.len() % per != 0 {
            return Err(Error::shape(
                format!("{op} per_sample (elements per sample)"),
                format!("a non-zero divisor of {}", x.len()),
                per,
            ));
        }
    }
    check_disjoint(op, x, y)?;
    m.keep_scale()
}

fn cpu_dropout(op: &str, m: &DropMask, x: Tensor, y: Tensor) -> Result<()> {
    let (keep, scale) = check(op, m, None, x, y)?;
    // SAFETY: live host tensors, checked disjoint.
    unsafe {
        let x = host_values(x);
        write_values(y, |y| reference::dropout(m.seed, keep, scale, &x, y))
    }
}

fn cpu_drop_connect(op: &str, m: &DropMask, per: usize, x: Tensor, y: Tensor) -> Result<()> {
    let (keep, scale) = check(op, m, Some(per), x, y)?;
    // SAFETY: live host tensors, checked disjoint.
    unsafe {
        let x = host_values(x);
        write_values(y, |y| reference::drop_connect(m.seed, keep, scale, per, &x, y))
    }
}

impl RegularizeOps for CpuBackend {
    fn dropout_fwd(&self, m: &DropMask, x: Tensor, y: Tensor) -> Result<()> {
        cpu_dropout("dropout_fwd", m, x, y)
    }

    fn dropout_bwd(&self, m: &DropMask, dy: Tensor, dx: Tensor) -> Result<()> {
        cpu_dropout("dropout_bwd", m, dy, dx)
    }

    fn drop_connect_fwd(&self, m: &DropMask, per_sample: usize, x: Tensor, y: Tensor) -> Result<()> {
        cpu_drop_connect("drop_connect_fwd", m, per_sample, x, y)
    }

    fn drop_connect_bwd(&self, m: &DropMask, per_sample: usize, dy: Tensor, dx: Tensor) -> Result<()> {
        cpu_drop_connect("drop_connect_bwd", m, per_sample, dy, dx)
    }
}

impl<D: KernelDevice> CudaBackend<D> {
    fn launch_dropout(&self, op: &str, m: &DropMask, x: Tensor, y: Tensor) -> Result<()> {
        let (keep, scale) = check(op, m, None, x, y)?;
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): dropout_fwd<T>(T* y, const T* x, long long n,
        // unsigned long long seed, float keep, float scale).
        self.launch(
            self.entry(KernelTemplate::DropoutFwd, x.dtype())?,
            Self::elementwise(x.len()),
            &[
                y.into(),
                x.into(),
                KernelArg::I64(x.len() as i64),
                KernelArg::U64(m.seed),
                KernelArg::F32(keep),
                KernelArg::F32(scale),
            ],
        )
    }

    fn launch_drop_connect(&self, op: &str, m: &DropMask, per: usize, x: Tensor, y: Tensor) -> Result<()> {
        let (keep, scale) = check(op, m, Some(per), x, y)?;
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): drop_connect_fwd<T>(T* y, const T* x, long long n,
        // long long per_sample, unsigned long long seed, float keep, float scale).
        self.launch(
            self.entry(KernelTemplate::DropConnectFwd, x.dtype())?,
            Self::elementwise(x.len()),
            &[
                y.into(),
                x.into(),
                KernelArg::I64(x.len() as i64),
                KernelArg::I64(per as i64),
                KernelArg::U64(m.seed),
                KernelArg::F32(keep),
                KernelArg::F32(scale),
            ],
        )
    }
}

impl<D: KernelDevice> RegularizeOps for CudaBackend<D> {
    fn dropout_fwd(&self, m: &DropMask, x: Tensor, y: Tensor) -> Result<()> {
        self.launch_dropout("dropout_fwd", m, x, y)
    }

    fn dropout_bwd(&self, m: &DropMask, dy: Tensor, dx: Tensor) -> Result<()> {
        self.launch_dropout("dropout_bwd", m, dy, dx)
    }

    fn drop_connect_fwd(&self, m: &DropMask, per_sample: usize, x: Tensor, y: Tensor) -> Result<()> {
        self.launch_drop_connect("drop_connect_fwd", m, per_sample, x, y)
    }

    fn drop_connect_bwd(&self, m: &DropMask, per_sample: usize, dy: Tensor, dx: Tensor) -> Result<()> {
        self.launch_drop_connect("drop_connect_bwd", m, per_sample, dy, dx)
    }
}
