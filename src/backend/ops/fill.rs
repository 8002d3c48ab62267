//! Fill a tensor with one value (zeroing the gradient arena each step, resetting BN running statistics
//! before calibration). Kernel: `kernels/fill.cu`; the CPU form is the reference.

use crate::backend::cpu::{host_slice_mut, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn};
use crate::backend::{Backend, Tensor};
use crate::error::Result;

pub trait FillOps: Backend {
    /// x[i] = value for every element of `x`.
    fn fill(&self, x: Tensor, value: f32) -> Result<()>;
}

impl FillOps for CpuBackend {
    fn fill(&self, x: Tensor, value: f32) -> Result<()> {
        // SAFETY: x is a live host tensor (contract of Tensor).
        unsafe { host_slice_mut(x) }.fill(value);
        Ok(())
    }
}

impl<D: KernelDevice> FillOps for CudaBackend<D> {
    fn fill(&self, x: Tensor, value: f32) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): fill_f32(float* x, long long n, float v).
        self.launch(
            KernelFn::FillF32,
            Self::elementwise(x.len()),
            &[x.into(), KernelArg::I64(x.len() as i64), KernelArg::F32(value)],
        )
    }
}
