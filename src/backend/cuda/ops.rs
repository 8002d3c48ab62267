//! The CUDA launchers: argument order, grid geometry and GEMM mapping for every op, written once over
//! [`KernelDevice`] so they run unchanged on a GPU and on the SIMT emulator.

use super::device::{check_args, KernelArg, KernelDevice, LaunchDims};
use super::KernelFn;
use crate::backend::cpu::{check_disjoint, check_len};
use crate::backend::{Backend, GemmSpec, Tensor};
use crate::error::Result;

/// Threads per block for element-wise kernels, and the cap on their grid (they grid-stride).
pub const ELEMENTWISE_THREADS: u32 = 256;
pub const ELEMENTWISE_MAX_BLOCKS: u32 = 65535 * 4;

pub struct CudaBackend<D: KernelDevice> {
    device: D,
}

impl<D: KernelDevice> CudaBackend<D> {
    pub fn new(device: D) -> Self {
        CudaBackend { device }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// Checks the argument kinds against the `.cu` signature, then launches.
    pub fn launch(&self, kernel: KernelFn, dims: LaunchDims, args: &[KernelArg]) -> Result<()> {
        check_args(kernel, args)?;
        self.device.launch(kernel, dims, args)?;
        Ok(())
    }

    fn elementwise(n: usize) -> LaunchDims {
        LaunchDims::linear(n, ELEMENTWISE_THREADS, ELEMENTWISE_MAX_BLOCKS)
    }
}

impl<D: KernelDevice> Backend for CudaBackend<D> {
    type Memory = D::Memory;

    fn name(&self) -> String {
        self.device.describe()
    }

    fn alloc(&self, len: usize) -> Result<D::Memory> {
        Ok(self.device.alloc(len)?)
    }

    fn upload(&self, dst: Tensor, src: &[f32]) -> Result<()> {
        check_len("upload destination", dst, src.len())?;
        Ok(self.device.upload(dst, src)?)
    }

    fn download(&self, src: Tensor) -> Result<Vec<f32>> {
        Ok(self.device.download(src)?)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(self.device.synchronize()?)
    }

    fn swish_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        check_len("swish_fwd y", y, x.len())?;
        check_disjoint("swish_fwd", x, y)?;
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): swish_fwd_f32(float* y, const float* x, long long n).
        self.launch(KernelFn::SwishFwdF32, Self::elementwise(x.len()), &[y.into(), x.into(), KernelArg::I64(x.len() as i64)])
    }

    fn swish_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        check_len("swish_bwd dy", dy, x.len())?;
        check_len("swish_bwd dx", dx, x.len())?;
        check_disjoint("swish_bwd (dx vs x)", x, dx)?;
        check_disjoint("swish_bwd (dx vs dy)", dy, dx)?;
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

    fn gemm(&self, spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
        spec.validate(a.len(), b.len(), c.len())?;
        check_disjoint("gemm (C vs A)", a, c)?;
        check_disjoint("gemm (C vs B)", b, c)?;
        if spec.m == 0 || spec.n == 0 {
            return Ok(());
        }
        // Column-major operands are (B, A): see backend::gemm.
        Ok(self.device.gemm_col_major(&spec.col_major(), b.addr(), a.addr(), c.addr())?)
    }
}
