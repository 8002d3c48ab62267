//! The CUDA backend over a [`KernelDevice`]. The per-op launchers (argument order, grid geometry,
//! GEMM mapping) live with each op family in `backend::ops`, written once so they run unchanged on a
//! GPU and on the SIMT emulator.

use super::device::{check_args, KernelArg, KernelDevice, LaunchDims};
use super::{KernelFn, KernelTemplate};
use crate::backend::counters::{OpCounters, OpEvent};
use crate::backend::cpu::check_len;
use crate::backend::{dtype, Backend, Dtype, Tensor};
use crate::error::{Error, Result};
use crate::timeline;

/// Threads per block for element-wise kernels, and the cap on their grid (they grid-stride).
pub const ELEMENTWISE_THREADS: u32 = 256;
pub const ELEMENTWISE_MAX_BLOCKS: u32 = 65535 * 4;

pub struct CudaBackend<D: KernelDevice> {
    device: D,
    counters: OpCounters,
}

impl<D: KernelDevice> CudaBackend<D> {
    pub fn new(device: D) -> Self {
        CudaBackend { device, counters: OpCounters::default() }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// Counts one event on the device seam (see `backend::counters`).
    pub fn count(&self, event: OpEvent) {
        self.counters.note(event);
    }

    /// Checks the argument kinds against the `.cu` signature, then launches.
    pub fn launch(&self, kernel: KernelFn, dims: LaunchDims, args: &[KernelArg]) -> Result<()> {
        check_args(kernel, args)?;
        let _op = timeline::op_range(kernel.name());
        self.counters.note(OpEvent::Launch);
        self.device.launch(kernel, dims, args)?;
        Ok(())
    }

    /// The entry point of `template` for storage type `dtype`; an error names both where the template
    /// is not built for it (its `ENTRY_POINTS` line in kernels/).
    pub fn entry(&self, template: KernelTemplate, dtype: Dtype) -> Result<KernelFn> {
        template.entry(dtype).ok_or_else(|| {
            Error::Other(format!(
                "kernel {} has no {dtype} entry point (add {dtype} to its ENTRY_POINTS line in kernels/)",
                template.name()
            ))
        })
    }

    /// Geometry for a 1-D grid-stride element-wise kernel over `n` elements.
    pub fn elementwise(n: usize) -> LaunchDims {
        LaunchDims::linear(n, ELEMENTWISE_THREADS, ELEMENTWISE_MAX_BLOCKS)
    }

    /// Geometry for the vectorised element-wise kernels (kernels/elementwise.cuh): one thread per 4
    /// elements (their scalar tail and unaligned path grid-stride over the same threads).
    pub fn elementwise_vec4(n: usize) -> LaunchDims {
        LaunchDims::linear(n.div_ceil(4), ELEMENTWISE_THREADS, ELEMENTWISE_MAX_BLOCKS)
    }
}

impl<D: KernelDevice> Backend for CudaBackend<D> {
    type Memory = D::Memory;

    fn name(&self) -> String {
        self.device.describe()
    }

    fn alloc(&self, len: usize) -> Result<D::Memory> {
        self.counters.note_allocation(len as u64 * std::mem::size_of::<f32>() as u64);
        Ok(self.device.alloc(len)?)
    }

    fn upload(&self, dst: Tensor, src: &[f32]) -> Result<()> {
        check_len("upload destination", dst, src.len())?;
        self.counters.note(OpEvent::Upload);
        match dst.dtype() {
            Dtype::F32 => Ok(self.device.upload(dst, src)?),
            Dtype::Bf16 => Ok(self.device.upload_bytes(dst, &dtype::encode(src, Dtype::Bf16))?),
        }
    }

    fn upload_bytes(&self, dst: Tensor, src: &[u8]) -> Result<()> {
        crate::backend::cpu::check_byte_capacity(dst, src.len())?;
        self.counters.note(OpEvent::Upload);
        Ok(self.device.upload_bytes(dst, src)?)
    }

    fn copy(&self, src: Tensor, dst: Tensor) -> Result<()> {
        crate::backend::cpu::check_copy(src, dst)?;
        Ok(self.device.copy(src, dst)?)
    }

    fn download(&self, src: Tensor) -> Result<Vec<f32>> {
        self.counters.note(OpEvent::Download);
        match src.dtype() {
            Dtype::F32 => Ok(self.device.download(src)?),
            Dtype::Bf16 => dtype::decode(&self.device.download_bytes(src)?, Dtype::Bf16),
        }
    }

    fn synchronize(&self) -> Result<()> {
        self.counters.note(OpEvent::Synchronization);
        Ok(self.device.synchronize()?)
    }

    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.device.time_ms(f)
    }

    fn device_handle(&self) -> Option<crate::backend::DeviceHandle> {
        self.device.device_handle()
    }

    fn op_counts(&self) -> Option<crate::backend::OpCounts> {
        Some(self.counters.snapshot())
    }

    fn set_idle_probe(&self, on: bool) {
        self.device.set_idle_probe(on)
    }

    fn upload_bytes_overlapped(&self, dst: Tensor, src: &[u8]) -> Result<()> {
        crate::backend::cpu::check_byte_capacity(dst, src.len())?;
        self.counters.note(OpEvent::Upload);
        Ok(self.device.upload_bytes_overlapped(dst, src)?)
    }

    fn join_overlapped_uploads(&self) -> Result<()> {
        Ok(self.device.join_overlapped_uploads()?)
    }

    fn take_gpu_idle(&self) -> Result<Option<(f64, u64)>> {
        Ok(self.device.take_idle()?)
    }

    fn memory_info(&self) -> Option<(u64, u64)> {
        self.device.memory_info()
    }

    fn compute_capability(&self) -> Option<(i32, i32)> {
        self.device.compute_capability()
    }
}
