//! The CUDA backend over a [`KernelDevice`]. The per-op launchers (argument order, grid geometry,
//! GEMM mapping) live with each op family in `backend::ops`, written once so they run unchanged on a
//! GPU and on the SIMT emulator.

use super::device::{check_args, KernelArg, KernelDevice, LaunchDims};
use super::KernelFn;
use crate::backend::cpu::check_len;
use crate::backend::{Backend, Tensor};
use crate::error::Result;
use crate::timeline;

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
        let _op = timeline::op_range(kernel.name());
        self.device.launch(kernel, dims, args)?;
        Ok(())
    }

    /// Geometry for a 1-D grid-stride element-wise kernel over `n` elements.
    pub fn elementwise(n: usize) -> LaunchDims {
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

    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.device.time_ms(f)
    }

    fn device_handle(&self) -> Option<crate::backend::DeviceHandle> {
        self.device.device_handle()
    }
}
