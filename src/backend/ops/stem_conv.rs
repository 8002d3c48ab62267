//! The stem convolution (spec section 1.3): dense 3x3, stride 2, padding 1, no bias, 3 input channels
//! -> the first `c_out_active` of `c_out_stored` output channels (width elasticity slices output
//! filters only). Reference: `backend::cpu::stem_conv`; kernels: `kernels/stem_conv.cu`.
//!
//! Layouts:
//! - input `x`: [n, h, w, 3] NHWC; output `y`, `dy`: [n, out_h, out_w, c_out_active], out = floor((h - 1)/2) + 1.
//! - stored weight and its gradient: [3, 3, 3, c_out_stored] (ky, kx, ci, then output channels
//!   contiguous). From PyTorch's [C_max, 3, 3, 3] = [co][ci][ky][kx]:
//!   `ours[((ky * 3 + kx) * 3 + ci) * c_out_stored + co] = torch[co][ci][ky][kx]` (permutation (2, 3, 1, 0)).
//!
//! Contracts: forward overwrites `y`; grad-weight adds into the first `c_out_active` channels of every
//! stored row and leaves the other channels untouched. Grad-weight on CUDA is a two-stage reduction
//! into a caller-provided `workspace` of [`StemShape::wgrad_workspace_len`] elements (checked on the
//! CPU as well). There is no grad-input: nothing upstream of the image needs a gradient.

use crate::backend::cpu::{
    check_disjoint, check_f32, check_len, check_wgrad_operands, host_slice, host_slice_mut, host_values,
    stem_conv as reference, write_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn, KernelTemplate, LaunchDims};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

pub const STEM_IN_CHANNELS: usize = 3;
pub const STEM_KERNEL: usize = 3;
pub const STEM_STRIDE: usize = 2;
pub const STEM_PAD: usize = 1;
/// Rows of the stored weight: taps x input channels.
pub const STEM_TAPS: usize = STEM_KERNEL * STEM_KERNEL * STEM_IN_CHANNELS;

/// Threads of the forward and reduce kernels; output channels and pixel rows of a grad-weight block.
const THREADS: u32 = 256;
const WGRAD_CO_LANES: usize = 32;
const WGRAD_PIXEL_ROWS: usize = 8;
/// First-stage grad-weight blocks aimed for over all output-channel chunks.
const WGRAD_TARGET_BLOCKS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StemShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c_out_active: usize,
    pub c_out_stored: usize,
}

impl StemShape {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * STEM_PAD - STEM_KERNEL) / STEM_STRIDE + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + 2 * STEM_PAD - STEM_KERNEL) / STEM_STRIDE + 1
    }

    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * STEM_IN_CHANNELS
    }

    pub fn output_len(&self) -> usize {
        self.n * self.out_h() * self.out_w() * self.c_out_active
    }

    pub fn weight_len(&self) -> usize {
        STEM_TAPS * self.c_out_stored
    }

    /// First-stage grad-weight blocks (= partial sums per gradient element).
    fn wgrad_parts(&self) -> usize {
        let pixels = self.n * self.out_h() * self.out_w();
        let chunks = self.c_out_active.div_ceil(WGRAD_CO_LANES).max(1);
        WGRAD_TARGET_BLOCKS.div_ceil(chunks).clamp(1, pixels.div_ceil(WGRAD_PIXEL_ROWS).max(1))
    }

    /// Elements of the workspace `stem_conv_bwd_weight` needs.
    pub fn wgrad_workspace_len(&self) -> usize {
        self.wgrad_parts() * STEM_TAPS * self.c_out_active
    }

    pub fn validate(&self) -> Result<()> {
        let field = |name: &str, expected: String, got: usize| {
            Err(Error::shape(format!("stem shape field {name}"), expected, got))
        };
        // forward stages 27 x c_out weights in the 48 KiB of shared memory
        let max_c = 48 * 1024 / (4 * STEM_TAPS);
        if self.c_out_active == 0 || self.c_out_active > self.c_out_stored || self.c_out_active > max_c {
            return field(
                "c_out_active",
                format!("1..={} (c_out_stored, at most {max_c})", self.c_out_stored),
                self.c_out_active,
            );
        }
        for (name, v) in [("n", self.n), ("h", self.h), ("w", self.w)] {
            if v == 0 {
                return field(name, ">= 1".into(), v);
            }
        }
        if self.h > i32::MAX as usize / 2
            || self.w > i32::MAX as usize / 2
            || self.c_out_stored * STEM_TAPS > i32::MAX as usize
        {
            return field("h, w or c_out_stored", "below 2^30".into(), self.h.max(self.w));
        }
        Ok(())
    }
}

pub trait StemConvOps: Backend {
    /// `y = stem(x, w[.., :c_out_active])`; `y` overwritten.
    fn stem_conv_fwd(&self, s: &StemShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()>;
    /// `dw[.., :c_out_active] += d(sum y*dy)/dw`; other channels untouched. `workspace` holds at least
    /// [`StemShape::wgrad_workspace_len`] elements (contents on return unspecified).
    fn stem_conv_bwd_weight(&self, s: &StemShape, x: Tensor, dy: Tensor, dw: Tensor, workspace: Tensor) -> Result<()>;
}

fn check_fwd(s: &StemShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()> {
    s.validate()?;
    check_len("stem_conv_fwd x", x, s.input_len())?;
    check_len("stem_conv_fwd w", w, s.weight_len())?;
    check_len("stem_conv_fwd y", y, s.output_len())?;
    check_f32("stem_conv_fwd", &[("x", x), ("w", w)])?;
    check_disjoint("stem_conv_fwd (y vs x)", x, y)?;
    check_disjoint("stem_conv_fwd (y vs w)", w, y)
}

fn check_bwd_weight(s: &StemShape, x: Tensor, dy: Tensor, dw: Tensor, workspace: Tensor) -> Result<()> {
    s.validate()?;
    check_f32("stem_conv_bwd_weight", &[("x", x), ("dw", dw), ("workspace", workspace)])?;
    check_wgrad_operands(
        "stem_conv_bwd_weight",
        (x, s.input_len()),
        (dy, s.output_len()),
        (dw, s.weight_len()),
        (workspace, s.wgrad_workspace_len()),
    )
}

impl StemConvOps for CpuBackend {
    fn stem_conv_fwd(&self, s: &StemShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()> {
        check_fwd(s, x, w, y)?;
        // SAFETY: live host tensors, output checked disjoint from the inputs.
        unsafe { write_values(y, |y| reference::stem_conv_fwd(s, host_slice(x), host_slice(w), y)) }
    }

    fn stem_conv_bwd_weight(&self, s: &StemShape, x: Tensor, dy: Tensor, dw: Tensor, workspace: Tensor) -> Result<()> {
        check_bwd_weight(s, x, dy, dw, workspace)?;
        // SAFETY: live host tensors, output checked disjoint from the inputs.
        unsafe { reference::stem_conv_bwd_weight(s, host_slice(x), &host_values(dy), host_slice_mut(dw)) };
        Ok(())
    }
}

fn int(v: usize) -> KernelArg {
    // validate() bounds every size passed as int
    KernelArg::I32(v as i32)
}

impl<D: KernelDevice> StemConvOps for CudaBackend<D> {
    fn stem_conv_fwd(&self, s: &StemShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()> {
        check_fwd(s, x, w, y)?;
        // 4 output channels per thread need y aligned to 4 elements of its storage type
        let vec4 = s.c_out_active % 4 == 0 && s.c_out_stored % 4 == 0 && y.addr() % (4 * y.dtype().size() as u64) == 0;
        let vec = if vec4 { 4 } else { 1 };
        let work = s.n * s.out_h() * s.out_w() * (s.c_out_active / vec);
        let mut dims = LaunchDims::linear(work, THREADS, 65535 * 4);
        dims.shared_bytes = (STEM_TAPS * s.c_out_active * 4) as u32;
        // SAFETY (argument order): stem_conv_fwd<T>(T* y, const float* x, const float* w, int n, int h,
        // int w_in, int c_out, int c_stored, int out_h, int out_w, int vec).
        self.launch(
            self.entry(KernelTemplate::StemConvFwd, y.dtype())?,
            dims,
            &[
                y.into(),
                x.into(),
                w.into(),
                int(s.n),
                int(s.h),
                int(s.w),
                int(s.c_out_active),
                int(s.c_out_stored),
                int(s.out_h()),
                int(s.out_w()),
                int(vec),
            ],
        )
    }

    fn stem_conv_bwd_weight(&self, s: &StemShape, x: Tensor, dy: Tensor, dw: Tensor, workspace: Tensor) -> Result<()> {
        check_bwd_weight(s, x, dy, dw, workspace)?;
        let parts = s.wgrad_parts();
        let chunks = s.c_out_active.div_ceil(WGRAD_CO_LANES);
        let dims = LaunchDims {
            grid: (parts as u32, chunks as u32, 1),
            block: (WGRAD_CO_LANES as u32, WGRAD_PIXEL_ROWS as u32, 1),
            shared_bytes: 0,
        };
        // SAFETY (argument order): stem_conv_bwd_weight_partial<T>(float* partial, const float* x,
        // const T* dy, int n, int h, int w_in, int c_out, int out_h, int out_w).
        self.launch(
            self.entry(KernelTemplate::StemConvBwdWeightPartial, dy.dtype())?,
            dims,
            &[
                workspace.into(),
                x.into(),
                dy.into(),
                int(s.n),
                int(s.h),
                int(s.w),
                int(s.c_out_active),
                int(s.out_h()),
                int(s.out_w()),
            ],
        )?;
        // SAFETY (argument order): stem_conv_bwd_weight_reduce_f32(float* dw, const float* partial, int parts,
        // int c_out, int c_stored).
        self.launch(
            KernelFn::StemConvBwdWeightReduceF32,
            LaunchDims::linear(STEM_TAPS * s.c_out_active, THREADS, 65535),
            &[dw.into(), workspace.into(), int(parts), int(s.c_out_active), int(s.c_out_stored)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_and_validation() {
        let s = StemShape { n: 1, h: 288, w: 192, c_out_active: 24, c_out_stored: 24 };
        assert_eq!((s.out_h(), s.out_w()), (144, 96));
        assert_eq!(StemShape { h: 7, ..s }.out_h(), 4);
        let err = StemShape { c_out_active: 25, ..s }.validate().unwrap_err().to_string();
        assert!(err.contains("c_out_active"), "{err}");
    }
}
