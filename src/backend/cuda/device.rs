//! The launch seam: what a CUDA launcher needs from a device. A kernel argument list is a slice of
//! [`KernelArg`] in `.cu` signature order, checked against the kinds build.rs parsed from that
//! signature before anything runs, so a wrong argument order or count is an error, not a corrupted
//! launch.

use super::{CudaError, KernelFn};
use crate::backend::gemm::ColMajorGemm;
use crate::backend::{DeviceMemory, Dtype, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelArgKind {
    Ptr,
    I32,
    U32,
    F32,
    I64,
    U64,
}

/// One kernel argument, by value. Pointers are device (or, emulated, host) addresses; a tensor
/// argument also carries its storage type, checked against the parameter's pointee at launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    Ptr(u64),
    Tensor(u64, Dtype),
    I32(i32),
    U32(u32),
    F32(f32),
    I64(i64),
    U64(u64),
}

impl KernelArg {
    pub fn kind(&self) -> KernelArgKind {
        match self {
            KernelArg::Ptr(_) | KernelArg::Tensor(..) => KernelArgKind::Ptr,
            KernelArg::I32(_) => KernelArgKind::I32,
            KernelArg::U32(_) => KernelArgKind::U32,
            KernelArg::F32(_) => KernelArgKind::F32,
            KernelArg::I64(_) => KernelArgKind::I64,
            KernelArg::U64(_) => KernelArgKind::U64,
        }
    }

    /// A pointer to the storage of the value, as `cuLaunchKernel`'s `kernelParams` wants it.
    pub fn as_param_ptr(&mut self) -> *mut std::ffi::c_void {
        match self {
            KernelArg::Ptr(v) | KernelArg::Tensor(v, _) | KernelArg::U64(v) => v as *mut u64 as *mut _,
            KernelArg::I32(v) => v as *mut i32 as *mut _,
            KernelArg::U32(v) => v as *mut u32 as *mut _,
            KernelArg::F32(v) => v as *mut f32 as *mut _,
            KernelArg::I64(v) => v as *mut i64 as *mut _,
        }
    }
}

impl From<Tensor> for KernelArg {
    fn from(t: Tensor) -> Self {
        KernelArg::Tensor(t.addr(), t.dtype())
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

impl LaunchDims {
    /// A 1-D grid-stride launch over `n` elements: `threads` per block, at most `max_blocks` blocks.
    pub fn linear(n: usize, threads: u32, max_blocks: u32) -> Self {
        let blocks = n.div_ceil(threads as usize).clamp(1, max_blocks as usize) as u32;
        LaunchDims { grid: (blocks, 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
    }
}

/// Checks an argument list against the kernel's signature.
pub fn check_args(kernel: KernelFn, args: &[KernelArg]) -> Result<(), CudaError> {
    let want = kernel.params();
    let got: Vec<KernelArgKind> = args.iter().map(KernelArg::kind).collect();
    if want != got.as_slice() {
        return Err(CudaError::Launch {
            kernel: kernel.name().to_string(),
            detail: format!("arguments {got:?} do not match the .cu signature {want:?}"),
        });
    }
    for (i, (arg, want)) in args.iter().zip(kernel.ptr_dtypes()).enumerate() {
        if let (KernelArg::Tensor(_, got), Some(want)) = (arg, want) {
            if got != want {
                return Err(CudaError::Launch {
                    kernel: kernel.name().to_string(),
                    detail: format!(
                        "argument {i} is a {got} tensor but the kernel's parameter points to {want} (launch the \
                         kernel's {got} entry point, or convert the tensor)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A device the CUDA launchers can run on.
pub trait KernelDevice {
    type Memory: DeviceMemory;

    fn describe(&self) -> String;
    fn alloc(&self, len: usize) -> Result<Self::Memory, CudaError>;
    fn upload(&self, dst: Tensor, src: &[f32]) -> Result<(), CudaError>;
    /// `src` into the first `src.len()` bytes of `dst` (capacity checked by the caller).
    fn upload_bytes(&self, dst: Tensor, src: &[u8]) -> Result<(), CudaError>;
    /// `dst = src`, `src.bytes()` bytes device to device, in stream order (checked by the caller).
    fn copy(&self, src: Tensor, dst: Tensor) -> Result<(), CudaError>;
    /// `src`'s f32 elements (the caller checks it is an f32 tensor).
    fn download(&self, src: Tensor) -> Result<Vec<f32>, CudaError>;
    /// The `src.bytes()` bytes of a tensor of any dtype.
    fn download_bytes(&self, src: Tensor) -> Result<Vec<u8>, CudaError>;
    fn synchronize(&self) -> Result<(), CudaError>;
    /// [`Self::upload_bytes`] on a copy stream (see `Backend::upload_bytes_overlapped`); a device with
    /// one stream (the emulator) uploads in order.
    fn upload_bytes_overlapped(&self, dst: Tensor, src: &[u8]) -> Result<(), CudaError> {
        self.upload_bytes(dst, src)
    }
    /// Orders the work enqueued from now on after the overlapped uploads so far.
    fn join_overlapped_uploads(&self) -> Result<(), CudaError> {
        Ok(())
    }
    /// Starts (or stops) measuring the time the device sat idle while the host waited for it or
    /// prepared the next work (`backend::cuda::idle`); a device that cannot measure it ignores this.
    fn set_idle_probe(&self, _on: bool) {}
    /// The idle gaps since the last call or [`Self::set_idle_probe`]: (milliseconds, count); `None`
    /// where it is not measured (the emulator runs launches synchronously: it has no queue to drain).
    fn take_idle(&self) -> Result<Option<(f64, u64)>, CudaError> {
        Ok(None)
    }
    /// Launches `kernel`; `args` are in `.cu` signature order (checked by the caller via `check_args`).
    fn launch(&self, kernel: KernelFn, dims: LaunchDims, args: &[KernelArg]) -> Result<(), CudaError>;
    /// Column-major SGEMM with cuBLAS's contract on device addresses (operands already mapped, see
    /// `backend::gemm`).
    fn gemm_col_major(&self, g: &ColMajorGemm, a: u64, b: u64, c: u64) -> Result<(), CudaError>;

    /// Milliseconds of device time of the work `f` enqueues. Default (the emulator, whose launches are
    /// synchronous): host wall clock between synchronised ends. A GPU records CUDA events instead.
    fn time_ms(&self, f: &mut dyn FnMut() -> crate::Result<()>) -> crate::Result<f64> {
        self.synchronize()?;
        let start = std::time::Instant::now();
        f()?;
        self.synchronize()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// A real GPU's driver handles (device-memory collectives); `None` for the emulator.
    fn device_handle(&self) -> Option<crate::backend::DeviceHandle> {
        None
    }

    /// Free and total device memory in bytes (`cuMemGetInfo`); `None` for the emulator.
    fn memory_info(&self) -> Option<(u64, u64)> {
        None
    }

    /// The GPU's compute capability; `None` for the emulator.
    fn compute_capability(&self) -> Option<(i32, i32)> {
        None
    }
}
