//! Element-wise activations: swish (trunk), ReLU and hard-sigmoid (inside squeeze-and-excite).
//! Reference: `backend::cpu::activation`; kernels: `kernels/activation.cu`. Every op runs over
//! `x.len()` elements of any layout; the backward takes the forward input `x` and recomputes what it
//! needs from it. Storage f32 or bf16 (all operands alike): arithmetic in f32, bf16 outputs rounded
//! once to nearest even, on the CPU (its bf16 mode) as in the kernels.

use crate::backend::cpu::{
    activation as reference, check_disjoint, check_len, check_same_dtype, host_values, write_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelTemplate};
use crate::backend::{Backend, Tensor};
use crate::error::Result;

pub trait ActivationOps: Backend {
    /// y = x * sigmoid(x), element-wise over `x.len()` elements.
    fn swish_fwd(&self, x: Tensor, y: Tensor) -> Result<()>;
    /// dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x) recomputed from the forward input.
    fn swish_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()>;
    /// y = max(x, 0).
    fn relu_fwd(&self, x: Tensor, y: Tensor) -> Result<()>;
    /// dx = dy where x > 0, else 0.
    fn relu_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()>;
    /// y = relu6(x + 3) / 6.
    fn hard_sigmoid_fwd(&self, x: Tensor, y: Tensor) -> Result<()>;
    /// dx = dy / 6 where -3 < x < 3, else 0.
    fn hard_sigmoid_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()>;
}

fn check_fwd(op: &str, x: Tensor, y: Tensor) -> Result<()> {
    check_len(&format!("{op} y"), y, x.len())?;
    check_same_dtype(op, &[("x", x), ("y", y)])?;
    check_disjoint(op, x, y)
}

fn check_bwd(op: &str, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
    check_len(&format!("{op} dy"), dy, x.len())?;
    check_same_dtype(op, &[("x", x), ("dy", dy), ("dx", dx)])?;
    check_len(&format!("{op} dx"), dx, x.len())?;
    check_disjoint(&format!("{op} (dx vs x)"), x, dx)?;
    check_disjoint(&format!("{op} (dx vs dy)"), dy, dx)
}

type HostFwd = fn(&[f32], &mut [f32]);
type HostBwd = fn(&[f32], &[f32], &mut [f32]);

fn cpu_fwd(op: &str, f: HostFwd, x: Tensor, y: Tensor) -> Result<()> {
    check_fwd(op, x, y)?;
    // SAFETY: live host tensors, checked disjoint above.
    unsafe {
        let x = host_values(x);
        write_values(y, |y| f(&x, y))
    }
}

fn cpu_bwd(op: &str, f: HostBwd, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
    check_bwd(op, x, dy, dx)?;
    // SAFETY: live host tensors, output checked disjoint from both inputs.
    unsafe {
        let (x, dy) = (host_values(x), host_values(dy));
        write_values(dx, |dx| f(&x, &dy, dx))
    }
}

impl ActivationOps for CpuBackend {
    fn swish_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        cpu_fwd("swish_fwd", reference::swish_fwd, x, y)
    }

    fn swish_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        cpu_bwd("swish_bwd", reference::swish_bwd, x, dy, dx)
    }

    fn relu_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        cpu_fwd("relu_fwd", reference::relu_fwd, x, y)
    }

    fn relu_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        cpu_bwd("relu_bwd", reference::relu_bwd, x, dy, dx)
    }

    fn hard_sigmoid_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        cpu_fwd("hard_sigmoid_fwd", reference::hard_sigmoid_fwd, x, y)
    }

    fn hard_sigmoid_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        cpu_bwd("hard_sigmoid_bwd", reference::hard_sigmoid_bwd, x, dy, dx)
    }
}

impl<D: KernelDevice> CudaBackend<D> {
    /// Launches the storage type's entry point of a forward activation template with the signature
    /// `(T* y, const T* x, long long n)`.
    fn activation_fwd(&self, op: &str, kernel: KernelTemplate, x: Tensor, y: Tensor) -> Result<()> {
        check_fwd(op, x, y)?;
        if x.is_empty() {
            return Ok(());
        }
        let kernel = self.entry(kernel, x.dtype())?;
        self.launch(kernel, Self::elementwise_vec4(x.len()), &[y.into(), x.into(), KernelArg::I64(x.len() as i64)])
    }

    /// Launches the storage type's entry point of a backward activation template with the signature
    /// `(T* dx, const T* x, const T* dy, long long n)`.
    fn activation_bwd(&self, op: &str, kernel: KernelTemplate, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        check_bwd(op, x, dy, dx)?;
        if x.is_empty() {
            return Ok(());
        }
        let kernel = self.entry(kernel, x.dtype())?;
        self.launch(
            kernel,
            Self::elementwise_vec4(x.len()),
            &[dx.into(), x.into(), dy.into(), KernelArg::I64(x.len() as i64)],
        )
    }
}

impl<D: KernelDevice> ActivationOps for CudaBackend<D> {
    fn swish_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        // SAFETY (argument order): swish_fwd<T>(T* y, const T* x, long long n).
        self.activation_fwd("swish_fwd", KernelTemplate::SwishFwd, x, y)
    }

    fn swish_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        // SAFETY (argument order): swish_bwd<T>(T* dx, const T* x, const T* dy, long long n).
        self.activation_bwd("swish_bwd", KernelTemplate::SwishBwd, x, dy, dx)
    }

    fn relu_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        // SAFETY (argument order): relu_fwd<T>(T* y, const T* x, long long n).
        self.activation_fwd("relu_fwd", KernelTemplate::ReluFwd, x, y)
    }

    fn relu_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        // SAFETY (argument order): relu_bwd<T>(T* dx, const T* x, const T* dy, long long n).
        self.activation_bwd("relu_bwd", KernelTemplate::ReluBwd, x, dy, dx)
    }

    fn hard_sigmoid_fwd(&self, x: Tensor, y: Tensor) -> Result<()> {
        // SAFETY (argument order): hard_sigmoid_fwd<T>(T* y, const T* x, long long n).
        self.activation_fwd("hard_sigmoid_fwd", KernelTemplate::HardSigmoidFwd, x, y)
    }

    fn hard_sigmoid_bwd(&self, x: Tensor, dy: Tensor, dx: Tensor) -> Result<()> {
        // SAFETY (argument order): hard_sigmoid_bwd<T>(T* dx, const T* x, const T* dy, long long n).
        self.activation_bwd("hard_sigmoid_bwd", KernelTemplate::HardSigmoidBwd, x, dy, dx)
    }
}
