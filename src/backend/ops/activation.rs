//! Element-wise activations. Reference: `backend::cpu::activation`; kernels: `kernels/activation.cu`.

use crate::backend::cpu::{activation as reference, check_disjoint, check_len, host_slice, host_slice_mut, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn};
use crate::backend::{Backend, Tensor};
use crate::error::Result;

pub trait ActivationOps: Backend {
    /// y = x * sigmoid(x), element-wise over `x.len()` elements.
    fn swish_fwd(&self, x: Tensor, y: Tensor) -> Result<()>;
    /// dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x) recomputed from the forward input.
    fn swish_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()>;
}

fn check_fwd(x: Tensor, y: Tensor) -> Result<()> {
    check_len("swish_fwd y", y, x.len())?;
    check_disjoint("swish_fwd", x, y)
}

fn check_bwd(x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
    check_len("swish_bwd dy", dy, x.len())?;
    check_len("swish_bwd dx", dx, x.len())?;
    check_disjoint("swish_bwd (dx vs x)", x, dx)?;
    check_disjoint("swish_bwd (dx vs dy)", dy, dx)
}

impl ActivationOps for CpuBackend {
    fn swish_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        check_fwd(x, y)?;
        // SAFETY: live host tensors, checked disjoint above.
        unsafe { reference::swish_fwd(host_slice(x), host_slice_mut(y)) };
        Ok(())
    }

    fn swish_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        check_bwd(x, dy, dx)?;
        // SAFETY: live host tensors, output checked disjoint from both inputs.
        unsafe { reference::swish_bwd(host_slice(x), host_slice(dy), host_slice_mut(dx)) };
        Ok(())
    }
}

impl<D: KernelDevice> ActivationOps for CudaBackend<D> {
    fn swish_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        check_fwd(x, y)?;
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): swish_fwd_f32(float* y, const float* x, long long n).
        self.launch(
            KernelFn::SwishFwdF32,
            Self::elementwise(x.len()),
            &[y.into(), x.into(), KernelArg::I64(x.len() as i64)],
        )
    }

    fn swish_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        check_bwd(x, dy, dx)?;
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): swish_bwd_f32(float* dx, const float* x, const float* dy, long long n).
        self.launch(
            KernelFn::SwishBwdF32,
            Self::elementwise(x.len()),
            &[dx.into(), x.into(), dy.into(), KernelArg::I64(x.len() as i64)],
        )
    }
}
