//! Storage-type conversion (issue #13 item 1): f32 to f32 or bf16 (round to nearest even), and f32 or
//! bf16 to f32 (exact). The bf16 copies of the weights and the f32 views of bf16 values go through here.
//! Reference: `backend::cpu::{host_values, store_values}`; kernels: `kernels/cast.cu`.

use crate::backend::cpu::{check_disjoint, check_len, host_values, store_values, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelTemplate};
use crate::backend::{Backend, Dtype, Tensor};
use crate::error::{Error, Result};

pub trait CastOps: Backend {
    /// y = x converted to y's storage type; one side must be f32. `x.len() == y.len()`.
    fn cast(&self, x: Tensor, y: Tensor) -> Result<()>;
}

fn check_cast(x: Tensor, y: Tensor) -> Result<()> {
    check_len("cast y", y, x.len())?;
    if x.dtype() != Dtype::F32 && y.dtype() != Dtype::F32 {
        return Err(Error::Other(format!(
            "cast from {} to {}: one side must be f32 (cast through an f32 buffer)",
            x.dtype(),
            y.dtype()
        )));
    }
    check_disjoint("cast", x, y)
}

impl CastOps for CpuBackend {
    fn cast(&self, x: Tensor, y: Tensor) -> Result<()> {
        check_cast(x, y)?;
        // SAFETY: live host tensors, checked disjoint; the input is copied out before the store.
        unsafe {
            let values = host_values(x).into_owned();
            store_values(y, &values)
        }
    }
}

impl<D: KernelDevice> CastOps for CudaBackend<D> {
    fn cast(&self, x: Tensor, y: Tensor) -> Result<()> {
        check_cast(x, y)?;
        if x.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): cast_from_f32<T>(T* y, const float* x, long long n) and
        // cast_to_f32<T>(float* y, const T* x, long long n); T is the non-f32 side (f32 when both are).
        let kernel = if x.dtype() == Dtype::F32 {
            self.entry(KernelTemplate::CastFromF32, y.dtype())?
        } else {
            self.entry(KernelTemplate::CastToF32, x.dtype())?
        };
        self.launch(kernel, Self::elementwise(x.len()), &[y.into(), x.into(), KernelArg::I64(x.len() as i64)])
    }
}
