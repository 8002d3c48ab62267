//! The GEMM op (1x1 convs, SE, the head): one wrapper with sliced leading dimensions. The contract and
//! the row-major/column-major mapping are in `backend::gemm`; the CPU runs it through the host SGEMM,
//! CUDA through cuBLAS (or, emulated, the same host SGEMM behind the device seam).
//!
//! Storage: A and B alike, f32 or bf16; C f32, or bf16 when A and B are. bf16 runs as cuBLAS GemmEx
//! with f32 accumulation; the CPU (and the emulator) widen A and B exactly, accumulate in f32 and
//! round a bf16 C once at the store (`ColMajorGemm::run_host_tensors`).

use crate::backend::cpu::{check_disjoint, check_same_dtype, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelDevice};
use crate::backend::{Backend, Dtype, GemmSpec, Tensor};
use crate::error::{Error, Result};

pub trait GemmOps: Backend {
    /// `C = alpha op(A) op(B) + beta C`, row-major with leading dimensions; see [`GemmSpec`].
    fn gemm(&self, spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()>;
}

fn check(spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
    spec.validate(a.len(), b.len(), c.len())?;
    check_same_dtype("gemm", &[("A", a), ("B", b)])?;
    if a.dtype() == Dtype::F32 && c.dtype() != Dtype::F32 {
        return Err(Error::Other(format!(
            "gemm: f32 A and B with a {} C is not a cuBLAS type combination; use an f32 C and cast it",
            c.dtype()
        )));
    }
    check_disjoint("gemm (C vs A)", a, c)?;
    check_disjoint("gemm (C vs B)", b, c)
}

impl GemmOps for CpuBackend {
    fn gemm(&self, spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
        check(spec, a, b, c)?;
        // Column-major operands are (B, A): see backend::gemm.
        // SAFETY: live host tensors; C checked disjoint from A and B; lengths validated.
        unsafe { spec.col_major().with_dtypes(a.dtype(), c.dtype()).run_host_tensors(b, a, c) }
    }
}

impl<D: KernelDevice> GemmOps for CudaBackend<D> {
    fn gemm(&self, spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
        check(spec, a, b, c)?;
        if spec.m == 0 || spec.n == 0 {
            return Ok(());
        }
        let _op = crate::timeline::op_range("gemm");
        self.count(crate::backend::counters::OpEvent::Gemm);
        // Column-major operands are (B, A): see backend::gemm.
        let g = spec.col_major().with_dtypes(a.dtype(), c.dtype());
        Ok(self.device().gemm_col_major(&g, b.addr(), a.addr(), c.addr())?)
    }
}
