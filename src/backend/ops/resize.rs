//! Bicubic resize of the input batch (spec 1.3 and 9: the model resizes the 224 batch to each subnet's
//! resolution), forward only: the input needs no gradient. Reference: `backend::cpu::resize`;
//! kernel: `kernels/resize.cu`.

use crate::backend::cpu::{check_disjoint, check_len, host_slice, host_slice_mut, resize as reference, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn, LaunchDims};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

/// One bicubic resize: input `(n, h_in, w_in, c)`, output `(n, h_out, w_out, c)`, both NHWC and dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResizeShape {
    pub n: usize,
    pub c: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub h_out: usize,
    pub w_out: usize,
}

impl ResizeShape {
    pub fn input_len(&self) -> usize {
        self.n * self.h_in * self.w_in * self.c
    }

    pub fn output_len(&self) -> usize {
        self.n * self.h_out * self.w_out * self.c
    }
}

pub trait ResizeOps: Backend {
    /// y = PyTorch `interpolate(x, (h_out, w_out), mode='bicubic', align_corners=False)` (no antialias) in
    /// NHWC: A = -0.75, half-pixel centres, border clamp. Up- and down-sampling; `y` must not overlap `x`.
    fn bicubic_resize_fwd(&self, s: &ResizeShape, x: Tensor, y: Tensor) -> Result<()>;
}

fn check(s: &ResizeShape, x: Tensor, y: Tensor) -> Result<()> {
    let int_max = i32::MAX as usize;
    let dims = [("n", s.n), ("c", s.c), ("h_in", s.h_in), ("w_in", s.w_in), ("h_out", s.h_out), ("w_out", s.w_out)];
    for (name, v) in dims {
        // an empty input has no pixel to clamp to
        if v == 0 || v > int_max {
            return Err(Error::shape(format!("bicubic_resize_fwd {name}"), "1 ..= i32::MAX", v));
        }
    }
    // the kernel computes these in int: rows, row length, and the source-coordinate numerators
    let products = [
        ("n * h_out", s.n.checked_mul(s.h_out)),
        ("w_out * c", s.w_out.checked_mul(s.c)),
        ("(2 h_out + 1) h_in", (2 * s.h_out + 1).checked_mul(s.h_in)),
        ("(2 w_out + 1) w_in", (2 * s.w_out + 1).checked_mul(s.w_in)),
    ];
    for (name, v) in products {
        if v.is_none_or(|v| v > int_max) {
            return Err(Error::shape(format!("bicubic_resize_fwd {name}"), "<= i32::MAX", format!("{v:?}")));
        }
    }
    check_len("bicubic_resize_fwd x (n, h_in, w_in, c)", x, s.input_len())?;
    check_len("bicubic_resize_fwd y (n, h_out, w_out, c)", y, s.output_len())?;
    check_disjoint("bicubic_resize_fwd", x, y)
}

/// Threads per block of the resize kernel (see the launch comment in kernels/resize.cu).
pub const RESIZE_THREADS: u32 = 128;
/// Cap on grid.y (the hardware limit); the kernel grid-strides over output rows beyond it.
pub const RESIZE_MAX_ROW_BLOCKS: u32 = 65535;

impl ResizeOps for CpuBackend {
    fn bicubic_resize_fwd(&self, s: &ResizeShape, x: Tensor, y: Tensor) -> Result<()> {
        check(s, x, y)?;
        // SAFETY: live host tensors of the checked lengths, y disjoint from x.
        unsafe { reference::bicubic_resize_fwd(s, host_slice(x), host_slice_mut(y)) };
        Ok(())
    }
}

impl<D: KernelDevice> ResizeOps for CudaBackend<D> {
    fn bicubic_resize_fwd(&self, s: &ResizeShape, x: Tensor, y: Tensor) -> Result<()> {
        check(s, x, y)?;
        let int = |v: usize| KernelArg::I32(v as i32); // in range: checked above
        let dims = LaunchDims {
            grid: (
                (s.w_out * s.c).div_ceil(RESIZE_THREADS as usize) as u32,
                (s.n * s.h_out).min(RESIZE_MAX_ROW_BLOCKS as usize) as u32,
                1,
            ),
            block: (RESIZE_THREADS, 1, 1),
            shared_bytes: 0,
        };
        // SAFETY (argument order): bicubic_resize_fwd_f32(float* y, const float* x, int n, int c, int h_in,
        // int w_in, int h_out, int w_out).
        self.launch(
            KernelFn::BicubicResizeFwdF32,
            dims,
            &[y.into(), x.into(), int(s.n), int(s.c), int(s.h_in), int(s.w_in), int(s.h_out), int(s.w_out)],
        )
    }
}
