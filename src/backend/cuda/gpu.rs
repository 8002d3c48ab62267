//! A real GPU through cudarc: context, one stream, the kernel registry and a cuBLAS handle.
//! Memory comes from `cuMemAlloc` via cudarc slices; tensors are raw device addresses inside them.
//! Kernels, GEMMs and copies run on one stream, so cudarc's per-slice event tracking is turned off; the
//! one exception, overlapped uploads on a copy stream, orders itself with its own events (`staging`).

use super::device::{KernelArg, KernelDevice, LaunchDims};
use super::error::{guard, CudaError};
use super::idle::IdleProbe;
use super::probe;
use super::registry::Registry;
use super::staging::{CopyLane, Staged, Staging};
use super::KernelFn;
use crate::backend::gemm::{ColMajorGemm, Transpose};
use crate::backend::{DeviceMemory, Dtype, Tensor};
use cudarc::cublas::{sys as blas_sys, CudaBlas};
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaSlice, CudaStream, DevicePtr};
use std::sync::Arc;

pub struct GpuMemory {
    _slice: CudaSlice<f32>,
    ptr: u64,
    len: usize,
    /// Joined before the slice is freed: an overlapped upload into this memory may still be running on
    /// the copy stream, which the compute stream's stream-ordered free does not know about.
    copies: Arc<CopyLane>,
}

impl Drop for GpuMemory {
    fn drop(&mut self) {
        if let Err(e) = self.copies.join() {
            eprintln!("attnas: joining the copy stream before freeing device memory: {e}");
        }
    }
}

impl DeviceMemory for GpuMemory {
    fn tensor(&self) -> Tensor {
        // SAFETY: ptr/len describe the slice this struct owns.
        unsafe { Tensor::from_raw(self.ptr, self.len) }
    }
}

pub struct GpuDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    registry: Registry,
    blas: CudaBlas,
    /// Idle gaps of the stream, when a bench asks (`bench train`).
    idle: IdleProbe,
    /// Page-locked buffers that uploads are queued from, without a host wait.
    staging: Staging,
    /// The stream overlapped uploads run on (created on first use), shared with the memory.
    copies: Arc<CopyLane>,
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
}

impl GpuDevice {
    /// Opens GPU `ordinal`; never panics (probe first, cudarc calls guarded).
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        let count = probe::device_count()?;
        if count == 0 {
            return Err(CudaError::NoDevice);
        }
        if ordinal >= count {
            return Err(CudaError::BadOrdinal { ordinal, count });
        }
        guard("libcuda", || {
            let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::driver("CudaContext::new", e))?;
            // SAFETY: cudarc's slices are used on this one stream only (ordering is the stream's); the
            // copy stream writes raw addresses and orders itself with explicit events (staging.rs).
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let name = ctx.name().map_err(|e| CudaError::driver("cuDeviceGetName", e))?;
            let cc = ctx.compute_capability().map_err(|e| CudaError::driver("compute capability", e))?;
            let registry = Registry::load(&ctx, cc)?;
            let blas = guard("libcublas", || {
                CudaBlas::new(stream.clone())
                    .map_err(|e| CudaError::Cublas { what: "cublasCreate".into(), detail: format!("{e:?}") })
            })?;
            let copies = Arc::new(CopyLane::new(ctx.clone(), stream.clone()));
            Ok(GpuDevice {
                copies,
                ctx,
                stream,
                registry,
                blas,
                idle: IdleProbe::default(),
                staging: Staging::default(),
                ordinal,
                name,
                compute_capability: cc,
            })
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

/// The PCI bus id of `device` (`0000:3b:00.0`), NUL-padded; zeros when the driver cannot say.
pub fn pci_bus_id(device: drv_sys::CUdevice) -> [u8; 16] {
    let mut buf = [0 as std::ffi::c_char; 16];
    // SAFETY: the buffer is 16 bytes long and the length passed says so; the driver NUL-terminates.
    let ok = unsafe { drv_sys::cuDeviceGetPCIBusId(buf.as_mut_ptr(), buf.len() as i32, device) }.result().is_ok();
    let mut out = [0u8; 16];
    if ok {
        for (o, c) in out.iter_mut().zip(buf) {
            *o = c as u8;
        }
    }
    out
}

/// cuBLAS's storage type for a [`Dtype`].
fn blas_type(d: Dtype) -> blas_sys::cudaDataType {
    match d {
        Dtype::F32 => blas_sys::cudaDataType::CUDA_R_32F,
        Dtype::Bf16 => blas_sys::cudaDataType::CUDA_R_16BF,
    }
}

/// bf16 A and B, f32 or bf16 C: `cublasGemmEx` with f32 accumulation (`CUBLAS_COMPUTE_32F`, f32 alpha and
/// beta) and the default algorithm choice, which uses the tensor cores for bf16.
fn gemm_ex_bf16(
    handle: blas_sys::cublasHandle_t,
    g: &ColMajorGemm,
    (m, n, k): (i32, i32, i32),
    (lda, ldb, ldc): (i32, i32, i32),
    (a, b, c): (u64, u64, u64),
) -> Result<(), CudaError> {
    // SAFETY: handle is live and bound to our stream; a, b, c are live device tensors of the stated
    // storage types whose lengths the caller validated against (m, n, k, ld*); alpha and beta point at
    // f32 fields of `g`, as CUBLAS_COMPUTE_32F requires.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            handle,
            op(g.trans_a),
            op(g.trans_b),
            m,
            n,
            k,
            &g.alpha as *const f32 as *const _,
            a as *const _,
            blas_type(g.ab_dtype),
            lda,
            b as *const _,
            blas_type(g.ab_dtype),
            ldb,
            &g.beta as *const f32 as *const _,
            c as *mut _,
            blas_type(g.c_dtype),
            ldc,
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
        )
    }
    .map_err(|e| CudaError::Cublas { what: "cublasGemmEx (bf16)".into(), detail: format!("{e:?}") })
}

fn op(t: Transpose) -> blas_sys::cublasOperation_t {
    match t {
        Transpose::No => blas_sys::cublasOperation_t::CUBLAS_OP_N,
        Transpose::Yes => blas_sys::cublasOperation_t::CUBLAS_OP_T,
    }
}

impl KernelDevice for GpuDevice {
    type Memory = GpuMemory;

    fn describe(&self) -> String {
        format!("cuda:{} ({}, sm_{}{})", self.ordinal, self.name, self.compute_capability.0, self.compute_capability.1)
    }

    fn alloc(&self, len: usize) -> Result<GpuMemory, CudaError> {
        let slice = self.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| {
            if e.0 == drv_sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                let (free, total) = self.ctx.mem_get_info().unwrap_or((0, 0));
                CudaError::OutOfMemory { what: format!("{len} f32"), bytes: len * 4, free, total }
            } else {
                CudaError::driver("alloc", e)
            }
        })?;
        let ptr = {
            let (p, _sync) = slice.device_ptr(&self.stream);
            p
        };
        Ok(GpuMemory { _slice: slice, ptr, len, copies: self.copies.clone() })
    }

    fn upload(&self, dst: Tensor, src: &[f32]) -> Result<(), CudaError> {
        self.upload_bytes(dst, bytemuck::cast_slice(src))
    }

    fn upload_bytes(&self, dst: Tensor, src: &[u8]) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("bind context", e))?;
        // the gap (if one is open) closes after the host's copy into the staging buffer
        let mut close_gap = || self.idle.close_gap(&self.stream);
        // SAFETY: dst is a live device tensor of at least src.len() bytes (checked by the caller).
        let staged = unsafe { self.staging.upload(&self.ctx, &self.stream, dst.addr(), src, &mut close_gap) }?;
        if staged == Staged::Queued {
            return Ok(());
        }
        self.idle.close_gap(&self.stream)?;
        // SAFETY: as above; the copy is synchronous with respect to the host buffer because we
        // synchronise right after.
        unsafe { drv::memcpy_htod_async(dst.addr(), src, self.stream.cu_stream()) }
            .map_err(|e| CudaError::driver("upload", e))?;
        self.synchronize()
    }

    fn upload_bytes_overlapped(&self, dst: Tensor, src: &[u8]) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("bind context", e))?;
        // No idle gap is closed here: the compute stream gets only an event record. The next launch
        // closes it, after the join's stream wait, so time the compute stream waits for the copy
        // counts as idle.
        // SAFETY: dst is a live device tensor of at least src.len() bytes (checked by the caller), and
        // the caller (Backend::upload_bytes_overlapped's contract) keeps the compute stream off it until
        // join_overlapped_uploads; memory freed before that joins first (GpuMemory's drop).
        match unsafe { self.copies.upload(&self.staging, dst.addr(), src) }? {
            Staged::Queued => Ok(()),
            // in order on the compute stream (synchronous)
            Staged::Pageable => self.upload_bytes(dst, src),
        }
    }

    fn join_overlapped_uploads(&self) -> Result<(), CudaError> {
        self.copies.join()
    }

    fn copy(&self, src: Tensor, dst: Tensor) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("bind context", e))?;
        self.idle.close_gap(&self.stream)?;
        // SAFETY: src and dst are live device tensors of src.bytes() bytes each, disjoint (checked by
        // the caller); the copy is ordered on the stream like a kernel, no host memory involved.
        unsafe { drv::memcpy_dtod_async(dst.addr(), src.addr(), src.bytes(), self.stream.cu_stream()) }
            .map_err(|e| CudaError::driver("device-to-device copy", e))
    }

    fn download(&self, src: Tensor) -> Result<Vec<f32>, CudaError> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("bind context", e))?;
        self.idle.close_gap(&self.stream)?;
        let mut out = vec![0f32; src.len()];
        // SAFETY: src is a live device tensor; out has its length; synchronised before returning.
        unsafe { drv::memcpy_dtoh_async(&mut out, src.addr(), self.stream.cu_stream()) }
            .map_err(|e| CudaError::driver("download", e))?;
        self.synchronize()?;
        Ok(out)
    }

    fn download_bytes(&self, src: Tensor) -> Result<Vec<u8>, CudaError> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("bind context", e))?;
        self.idle.close_gap(&self.stream)?;
        let mut out = vec![0u8; src.bytes()];
        // SAFETY: src is a live device tensor of src.bytes() bytes; out has that length; synchronised
        // before returning.
        unsafe { drv::memcpy_dtoh_async(&mut out, src.addr(), self.stream.cu_stream()) }
            .map_err(|e| CudaError::driver("download", e))?;
        self.synchronize()?;
        Ok(out)
    }

    fn synchronize(&self) -> Result<(), CudaError> {
        // a synchronisation covers the overlapped uploads too (nothing is left running on the copy
        // stream once the host has waited: a step ends joined)
        self.copies.join()?;
        self.idle.open_gap(&self.stream)?;
        self.stream.synchronize().map_err(|e| CudaError::driver("synchronize", e))
    }

    fn set_idle_probe(&self, on: bool) {
        self.idle.set(on);
    }

    fn take_idle(&self) -> Result<Option<(f64, u64)>, CudaError> {
        self.idle.take().map(Some)
    }

    fn launch(&self, kernel: KernelFn, dims: LaunchDims, args: &[KernelArg]) -> Result<(), CudaError> {
        self.idle.close_gap(&self.stream)?;
        let mut values: Vec<KernelArg> = args.to_vec();
        let mut params: Vec<*mut std::ffi::c_void> = values.iter_mut().map(KernelArg::as_param_ptr).collect();
        let f = self.registry.function(kernel).cu_function();
        // SAFETY: the argument kinds were checked against the .cu signature (check_args); every
        // pointer argument is a live device tensor cut from this context's memory; `values` outlives
        // the call, and cuLaunchKernel copies the parameters before returning.
        unsafe { drv::launch_kernel(f, dims.grid, dims.block, dims.shared_bytes, self.stream.cu_stream(), &mut params) }
            .map_err(|e| CudaError::Launch {
                kernel: kernel.name().to_string(),
                detail: format!("{e:?} with {dims:?}"),
            })
    }

    /// CUDA events (timing enabled) recorded on the stream before and after the work: the kernels' and
    /// cuBLAS's device time, without the host's launch loop once the queue is ahead of the GPU.
    fn time_ms(&self, f: &mut dyn FnMut() -> crate::Result<()>) -> crate::Result<f64> {
        let flags = Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(flags).map_err(|e| CudaError::driver("cuEventRecord", e))?;
        f()?;
        let end = self.stream.record_event(flags).map_err(|e| CudaError::driver("cuEventRecord", e))?;
        let ms = start.elapsed_ms(&end).map_err(|e| CudaError::driver("cuEventElapsedTime", e))?;
        Ok(ms as f64)
    }

    fn memory_info(&self) -> Option<(u64, u64)> {
        self.ctx.bind_to_thread().ok()?;
        self.ctx.mem_get_info().ok().map(|(free, total)| (free as u64, total as u64))
    }

    fn compute_capability(&self) -> Option<(i32, i32)> {
        Some(self.compute_capability)
    }

    fn device_handle(&self) -> Option<crate::backend::DeviceHandle> {
        Some(crate::backend::DeviceHandle {
            ordinal: self.ordinal,
            context: self.ctx.cu_ctx() as u64,
            stream: self.stream.cu_stream() as u64,
            pci_bus_id: pci_bus_id(self.ctx.cu_device()),
        })
    }

    fn gemm_col_major(&self, g: &ColMajorGemm, a: u64, b: u64, c: u64) -> Result<(), CudaError> {
        let int = |v: usize, what: &str| {
            i32::try_from(v)
                .map_err(|_| CudaError::Cublas { what: "sgemm".into(), detail: format!("{what} = {v} exceeds i32") })
        };
        let (m, n, k) = (int(g.m, "m")?, int(g.n, "n")?, int(g.k, "k")?);
        let (lda, ldb, ldc) = (int(g.lda.max(1), "lda")?, int(g.ldb.max(1), "ldb")?, int(g.ldc.max(1), "ldc")?);
        self.idle.close_gap(&self.stream)?;
        let handle = *self.blas.handle();
        if g.ab_dtype != Dtype::F32 || g.c_dtype != Dtype::F32 {
            return gemm_ex_bf16(handle, g, (m, n, k), (lda, ldb, ldc), (a, b, c));
        }
        let math = if g.allow_tf32 {
            blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: handle is live and bound to our stream; a, b, c are live device tensors whose
        // lengths the caller validated against (m, n, k, ld*); alpha/beta point at locals.
        unsafe {
            blas_sys::cublasSetMathMode(handle, math)
                .result()
                .map_err(|e| CudaError::Cublas { what: "cublasSetMathMode".into(), detail: format!("{e:?}") })?;
            cudarc::cublas::result::sgemm(
                handle,
                op(g.trans_a),
                op(g.trans_b),
                m,
                n,
                k,
                &g.alpha,
                a as *const f32,
                lda,
                b as *const f32,
                ldb,
                &g.beta,
                c as *mut f32,
                ldc,
            )
        }
        .map_err(|e| CudaError::Cublas { what: "sgemm".into(), detail: format!("{e:?}") })
    }
}
