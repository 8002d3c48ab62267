//! The GEMM op (1x1 convs, SE, the head): one wrapper with sliced leading dimensions. The contract and
//! the row-major/column-major mapping are in `backend::gemm`; the CPU runs it through the host SGEMM,
//! CUDA through cuBLAS (or, emulated, the same host SGEMM behind the device seam).

use crate::backend::cpu::{check_disjoint, host_slice, host_slice_mut, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelDevice};
use crate::backend::{Backend, GemmSpec, Tensor};
use crate::error::Result;

pub trait GemmOps: Backend {
    /// `C = alpha op(A) op(B) + beta C`, row-major with leading dimensions; see [`GemmSpec`].
    fn gemm(&self, spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()>;
}

fn check(spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
    spec.validate(a.len(), b.len(), c.len())?;
    check_disjoint("gemm (C vs A)", a, c)?;
    check_disjoint("gemm (C vs B)", b, c)
}

impl GemmOps for CpuBackend {
    fn gemm(&self, spec: &GemmSpec, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
        check(spec, a, b, c)?;
        // Column-major operands are (B, A): see backend::gemm.
        // SAFETY: live host tensors; C checked disjoint from A and B; lengths validated.
        unsafe { spec.col_major().run_host(host_slice(b), host_slice(a), host_slice_mut(c)) };
        Ok(())
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
        Ok(self.device().gemm_col_major(&spec.col_major(), b.addr(), a.addr(), c.addr())?)
    }
}
