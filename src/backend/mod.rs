//! The ops of the supernet, twice: `cpu` (the reference, the spec of each op) and `cuda` (hand-written
//! kernels in `kernels/*.cu` and cuBLAS, launched through a [`cuda::KernelDevice`] that is either a real
//! GPU via cudarc or the SIMT emulator on the host).
//!
//! Memory model (llm.c style, planned up front): a backend hands out [`DeviceMemory`] blocks; a
//! [`Tensor`] is a copyable handle to a run of f32 elements inside one of them. Handles carry no
//! lifetime (and a storage [`Dtype`]: f32 unless cut with [`Tensor::view_as`]): the owner of the memory (usually an [`Arena`]) must outlive every handle cut from it, and
//! an op's outputs must not overlap its inputs unless the op says otherwise. Ops check lengths and
//! return [`Error::Shape`] instead of reading out of bounds.

pub mod arena;
pub mod counters;
pub mod cpu;
pub mod cuda;
pub mod dtype;
pub mod gemm;
pub mod ops;

pub use arena::Arena;
pub use counters::OpCounts;
pub use dtype::{Dtype, Precision};
pub use gemm::{GemmSpec, Transpose};
pub use ops::SupernetOps;

use crate::error::{Error, Result};

/// A run of `len` elements of storage type `dtype` (f32 unless said otherwise) at address `addr` in some
/// backend's memory (host or device address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    addr: u64,
    len: usize,
    dtype: Dtype,
}

impl Tensor {
    /// A handle to `len` f32 elements.
    ///
    /// # Safety
    /// `addr` must point to `len` f32 elements owned by memory that outlives every use of the handle.
    pub unsafe fn from_raw(addr: u64, len: usize) -> Self {
        Tensor { addr, len, dtype: Dtype::F32 }
    }

    /// A handle to `len` elements of storage type `dtype`.
    ///
    /// # Safety
    /// `addr` must point to `len` such elements owned by memory that outlives every use of the handle.
    pub unsafe fn from_raw_typed(addr: u64, len: usize, dtype: Dtype) -> Self {
        Tensor { addr, len, dtype }
    }

    pub fn addr(self) -> u64 {
        self.addr
    }

    pub fn len(self) -> usize {
        self.len
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// How the elements are stored.
    pub fn dtype(self) -> Dtype {
        self.dtype
    }

    /// Bytes spanned: `len * dtype.size()`.
    pub fn bytes(self) -> usize {
        self.len * self.dtype.size()
    }

    /// The same bytes as elements of `dtype`: as many whole elements as fit (an f32 tensor of n
    /// elements is a bf16 tensor of 2n). Arenas hand out f32 runs; a bf16 activation is one of those,
    /// viewed as bf16 and sliced to its length.
    pub fn view_as(self, dtype: Dtype) -> Tensor {
        Tensor { addr: self.addr, len: self.bytes() / dtype.size(), dtype }
    }

    /// Elements `offset .. offset + len` of this tensor; an error names the overrun.
    pub fn slice(self, offset: usize, len: usize) -> Result<Tensor> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {
                Ok(Tensor { addr: self.addr + (self.dtype.size() * offset) as u64, len, dtype: self.dtype })
            }
            _ => {
                Err(Error::shape("tensor slice", format!("offset + len <= {}", self.len), format!("{offset} + {len}")))
            }
        }
    }

    /// Errors unless this tensor is stored as `dtype`; `what` names it in the error.
    pub fn require_dtype(self, what: &str, dtype: Dtype) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::shape(what, format!("{dtype} elements"), format!("{} elements", self.dtype)));
        }
        Ok(())
    }

    /// Checks that this tensor holds at least `needed` elements; `what` names it in the error.
    pub fn require(self, what: &str, needed: usize) -> Result<()> {
        if self.len < needed {
            return Err(Error::shape(what, format!(">= {needed} elements"), format!("{} elements", self.len)));
        }
        Ok(())
    }
}

/// One allocation owned by a backend; dropping it frees the memory.
pub trait DeviceMemory {
    /// The whole allocation as a tensor handle.
    fn tensor(&self) -> Tensor;
}

/// Memory and synchronisation on one device. The ops are per-family traits in [`ops`] (each family's
/// trait, CPU impl and CUDA launcher in one file); [`SupernetOps`] gathers them. Every op is
/// asynchronous on a GPU backend; `download` and `synchronize` wait.
pub trait Backend {
    type Memory: DeviceMemory;

    /// A short name for logs: `cpu`, `cuda:0 (NVIDIA H100 ...)`, `emu`.
    fn name(&self) -> String;

    /// Allocates `len` zeroed f32 elements.
    fn alloc(&self, len: usize) -> Result<Self::Memory>;
    /// Fills `dst` (exactly `src.len()` elements) from the host; a bf16 `dst` receives `src` rounded to
    /// nearest even.
    fn upload(&self, dst: Tensor, src: &[f32]) -> Result<()>;
    /// Copies `src` into the first `src.len()` bytes of `dst` (which must hold that many: `dst.bytes()`),
    /// the rest untouched: u8 data such as the loader's pixels, staged for a kernel that reads bytes
    /// (`ops::InputOps`). Both uploads are done with `src` when they return (the host may reuse it), and
    /// ordered on the device like a launch; on a GPU they do not wait for the stream: the bytes go
    /// through a page-locked staging buffer (`cuda::staging`).
    fn upload_bytes(&self, dst: Tensor, src: &[u8]) -> Result<()>;
    /// `dst = src` on the device (`cuMemcpyDtoDAsync` on the stream on a GPU): same storage type and
    /// length, disjoint. The copy engine's bandwidth is the roof the memory-bound kernels' benches report
    /// against (issue #13: each at 70 % of the measured device-to-device copy).
    fn copy(&self, src: Tensor, dst: Tensor) -> Result<()>;
    /// The elements of `src` as f32 (bf16 widens exactly).
    fn download(&self, src: Tensor) -> Result<Vec<f32>>;
    fn synchronize(&self) -> Result<()>;

    /// Milliseconds the device spends on the work `f` enqueues (latency measurement). The default is the
    /// host wall clock from a synchronised start to a synchronised end (the CPU, the emulator); a GPU
    /// records CUDA events on its stream around the work instead.
    fn time_ms(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.synchronize()?;
        let start = std::time::Instant::now();
        f()?;
        self.synchronize()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// The GPU behind this backend, for device-memory collectives (NCCL); `None` for host memory (the
    /// CPU backend and the SIMT emulator), whose collectives go through the host.
    fn device_handle(&self) -> Option<DeviceHandle> {
        None
    }

    /// The device seam's counters so far (launches, GEMMs, allocations, copies, host waits; see
    /// `backend::counters`); `None` where there is no device (the CPU backend).
    fn op_counts(&self) -> Option<OpCounts> {
        None
    }

    /// [`Backend::upload_bytes`] overlapped with the device's work (issue #13 item 4: the next batch is
    /// copied while the current step computes): ordered after all work enqueued before the call, but
    /// work enqueued after it may run concurrently with the copy until [`Backend::join_overlapped_uploads`],
    /// so until then nothing may read or write `dst`. On a GPU the copy runs on a second stream from a
    /// page-locked staging buffer; elsewhere (the CPU, the emulator: one queue) it is `upload_bytes`.
    fn upload_bytes_overlapped(&self, dst: Tensor, src: &[u8]) -> Result<()> {
        self.upload_bytes(dst, src)
    }

    /// Makes the work enqueued from now on wait for every overlapped upload so far (on a GPU, a stream
    /// wait on the copy stream's last event; no host wait). [`Backend::synchronize`] joins them too, and
    /// device memory freed with an overlapped upload into it pending is freed after the copy.
    fn join_overlapped_uploads(&self) -> Result<()> {
        Ok(())
    }

    /// Starts (or stops) measuring the time the GPU sat idle while the host waited for it or prepared
    /// its next work (`backend::cuda::idle`; `bench train`). Ignored where it cannot be measured.
    fn set_idle_probe(&self, _on: bool) {}

    /// The GPU's idle gaps since the probe was turned on or last read: (milliseconds, count); `None`
    /// where it is not measured (the CPU backend; the emulator, which has no queue).
    fn take_gpu_idle(&self) -> Result<Option<(f64, u64)>> {
        Ok(None)
    }

    /// The GPU's compute capability (major, minor); `None` for the CPU backend and the emulator. Picks
    /// the `auto` precision ([`Precision::resolve`]).
    fn compute_capability(&self) -> Option<(i32, i32)> {
        None
    }

    /// The storage type `precision` means on this backend.
    fn resolve_precision(&self, precision: Precision) -> Dtype {
        precision.resolve(self.compute_capability())
    }

    /// Free and total bytes of the device's memory (a GPU's `cuMemGetInfo`); `None` where the backend
    /// has no memory of its own to report (the CPU backend and the emulator use host memory).
    fn memory_info(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A GPU's identity and the stream its ops run on (raw driver handles, for `crate::dist`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceHandle {
    pub ordinal: usize,
    /// `CUcontext` as an integer.
    pub context: u64,
    /// `CUstream` as an integer: every op of the backend is queued on it.
    pub stream: u64,
    /// PCI bus id (`0000:3b:00.0`): two ranks on one GPU are found by it.
    pub pci_bus_id: [u8; 16],
}

/// Allocates `len` zeroed elements of storage type `dtype`: the memory (which frees them when dropped)
/// and the typed handle into it.
pub fn alloc_typed<B: Backend>(backend: &B, len: usize, dtype: Dtype) -> Result<(B::Memory, Tensor)> {
    let mem = backend.alloc((len * dtype.size()).div_ceil(4))?;
    let t = mem.tensor().view_as(dtype).slice(0, len)?;
    Ok((mem, t))
}

/// Allocates `host.len()` elements of storage type `dtype` and fills them from the host (rounded to
/// nearest even for bf16).
pub fn upload_typed<B: Backend>(backend: &B, host: &[f32], dtype: Dtype) -> Result<(B::Memory, Tensor)> {
    let (mem, t) = alloc_typed(backend, host.len(), dtype)?;
    backend.upload(t, host)?;
    Ok((mem, t))
}

/// Allocates a tensor and fills it from the host.
pub fn upload_new<B: Backend>(backend: &B, host: &[f32]) -> Result<B::Memory> {
    let mem = backend.alloc(host.len())?;
    backend.upload(mem.tensor(), host)?;
    Ok(mem)
}
