//! Pools and joins: global average pool (SE squeeze, head), 2x2 stride-2 average pool (the stride-2
//! shortcut, spec 1.2 step 5), residual add and gradient fan-in. Reference: `backend::cpu::pool`;
//! kernels: `kernels/pool.cu`.
//!
//! Layouts: NHWC contiguous with exactly `c` channels; pooled vectors `[n, c]`. The 2x2 pool follows
//! the original's shortcut (`F.avg_pool2d(x, 2, padding=1 if odd else 0)`, zeros counted): an odd side
//! is padded by one, the output is `ceil(h/2) x ceil(w/2)` (what the stride-2 depthwise conv gives), and
//! every input pixel is still in exactly one window. The backward of `residual_add_fwd` is the
//! identity into both branches: callers pass dy on, and sum gradients that meet with `add_assign`.

use crate::backend::cpu::{
    check_disjoint, check_f32, check_len, check_same_dtype, host_values, pool as reference, update_values,
    write_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelTemplate, LaunchDims};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

/// Channels per block and pixel lanes of the global pool kernels.
const CHANNEL_TILE: usize = 32;
const PIXEL_LANES: u32 = 8;

/// `n` samples of `h x w` pixels with `c` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl PoolShape {
    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    pub fn pooled_len(&self) -> usize {
        self.n * self.c
    }

    /// Elements of the 2x2 stride-2 pool's output `[n, ceil(h/2), ceil(w/2), c]`.
    pub fn pool2_len(&self) -> usize {
        self.n * reference::pool2_out(self.h) * reference::pool2_out(self.w) * self.c
    }

    /// Grid of the per-(sample, channel tile) kernels (global pool, SE channel scale).
    pub(crate) fn per_sample_channel_dims(&self) -> LaunchDims {
        LaunchDims {
            grid: (self.c.div_ceil(CHANNEL_TILE) as u32, self.n as u32, 1),
            block: (CHANNEL_TILE as u32, PIXEL_LANES, 1),
            shared_bytes: 0,
        }
    }

    /// Checks the sizes passed to kernels as `int` (and the grid's y extent, which is `n`).
    pub(crate) fn check_kernel_ints(&self, op: &str) -> Result<()> {
        for (what, v, max) in
            [("h * w", self.h * self.w, i32::MAX as usize), ("c", self.c, i32::MAX as usize), ("n", self.n, 65_535)]
        {
            if v > max {
                return Err(Error::shape(format!("{op} {what}"), format!("<= {max}"), v));
            }
        }
        Ok(())
    }
}

pub trait PoolOps: Backend {
    /// y[b, ch] = mean over the h*w pixels of x[b, :, :, ch].
    fn global_avg_pool_fwd(&self, s: &PoolShape, x: Tensor, y: Tensor) -> Result<()>;
    /// dx[b, p, ch] = dy[b, ch] / (h*w), or += when `accumulate` (SE adds it to the scale path's dx).
    fn global_avg_pool_bwd(&self, s: &PoolShape, dy: Tensor, dx: Tensor, accumulate: bool) -> Result<()>;
    /// 2x2 stride-2 average pool, `[n, h, w, c] -> [n, ceil(h/2), ceil(w/2), c]`, padded by one on an
    /// odd side with the zeros counted (divisor 4).
    fn avg_pool2_fwd(&self, s: &PoolShape, x: Tensor, y: Tensor) -> Result<()>;
    /// Its backward: dx[b, r, s, ch] = dy[b, (r + h % 2)/2, (s + w % 2)/2, ch] / 4 (overwritten).
    fn avg_pool2_bwd(&self, s: &PoolShape, dy: Tensor, dx: Tensor) -> Result<()>;
    /// The same backward added to `dx` (`dx +=`): the pooled shortcut's gradient joining the block
    /// input's in one pass, where [`Self::avg_pool2_bwd`] into a buffer then [`Self::add_assign`] took two
    /// (the same bits: `dy / 4` is exact).
    fn avg_pool2_bwd_accumulate(&self, s: &PoolShape, dy: Tensor, dx: Tensor) -> Result<()>;
    /// y = a + b (the residual join).
    fn residual_add_fwd(&self, a: Tensor, b: Tensor, y: Tensor) -> Result<()>;
    /// dst += src (gradient fan-in).
    fn add_assign(&self, dst: Tensor, src: Tensor) -> Result<()>;
}

fn check_global_fwd(s: &PoolShape, x: Tensor, y: Tensor) -> Result<()> {
    check_len("global_avg_pool_fwd x", x, s.input_len())?;
    check_len("global_avg_pool_fwd y", y, s.pooled_len())?;
    check_f32("global_avg_pool_fwd", &[("y", y)])?;
    s.check_kernel_ints("global_avg_pool")?;
    check_disjoint("global_avg_pool_fwd", x, y)
}

fn check_global_bwd(s: &PoolShape, dy: Tensor, dx: Tensor) -> Result<()> {
    check_len("global_avg_pool_bwd dy", dy, s.pooled_len())?;
    check_len("global_avg_pool_bwd dx", dx, s.input_len())?;
    check_f32("global_avg_pool_bwd", &[("dy", dy)])?;
    s.check_kernel_ints("global_avg_pool")?;
    check_disjoint("global_avg_pool_bwd", dy, dx)
}

fn check_pool2(op: &str, s: &PoolShape, full: Tensor, half: Tensor) -> Result<()> {
    check_len(&format!("{op} full-size tensor [n, h, w, c]"), full, s.input_len())?;
    check_len(&format!("{op} pooled tensor [n, ceil(h/2), ceil(w/2), c]"), half, s.pool2_len())?;
    check_same_dtype(op, &[("full-size tensor", full), ("pooled tensor", half)])?;
    s.check_kernel_ints(op)?;
    check_disjoint(op, full, half)
}

fn check_add(a: Tensor, b: Tensor, y: Tensor) -> Result<()> {
    check_len("residual_add_fwd b", b, a.len())?;
    check_len("residual_add_fwd y", y, a.len())?;
    check_same_dtype("residual_add_fwd", &[("a", a), ("b", b), ("y", y)])?;
    check_disjoint("residual_add_fwd (y vs a)", a, y)?;
    check_disjoint("residual_add_fwd (y vs b)", b, y)
}

fn check_add_assign(dst: Tensor, src: Tensor) -> Result<()> {
    check_len("add_assign src", src, dst.len())?;
    check_same_dtype("add_assign", &[("dst", dst), ("src", src)])?;
    check_disjoint("add_assign", dst, src)
}

impl PoolOps for CpuBackend {
    fn global_avg_pool_fwd(&self, s: &PoolShape, x: Tensor, y: Tensor) -> Result<()> {
        check_global_fwd(s, x, y)?;
        // SAFETY: live host tensors, checked disjoint.
        unsafe {
            let x = host_values(x);
            write_values(y, |y| reference::global_avg_pool_fwd(&x, s.n, s.h * s.w, s.c, y))
        }
    }

    fn global_avg_pool_bwd(&self, s: &PoolShape, dy: Tensor, dx: Tensor, accumulate: bool) -> Result<()> {
        check_global_bwd(s, dy, dx)?;
        // SAFETY: live host tensors, checked disjoint.
        unsafe {
            let dy = host_values(dy);
            update_values(dx, |dx| reference::global_avg_pool_bwd(&dy, s.n, s.h * s.w, s.c, accumulate, dx))
        }
    }

    fn avg_pool2_fwd(&self, s: &PoolShape, x: Tensor, y: Tensor) -> Result<()> {
        check_pool2("avg_pool2_fwd", s, x, y)?;
        // SAFETY: live host tensors, checked disjoint.
        unsafe {
            let x = host_values(x);
            write_values(y, |y| reference::avg_pool2_fwd(&x, s.n, s.h, s.w, s.c, y))
        }
    }

    fn avg_pool2_bwd(&self, s: &PoolShape, dy: Tensor, dx: Tensor) -> Result<()> {
        check_pool2("avg_pool2_bwd", s, dx, dy)?;
        // SAFETY: live host tensors, checked disjoint.
        unsafe {
            let dy = host_values(dy);
            write_values(dx, |dx| reference::avg_pool2_bwd(&dy, s.n, s.h, s.w, s.c, dx))
        }
    }

    fn avg_pool2_bwd_accumulate(&self, s: &PoolShape, dy: Tensor, dx: Tensor) -> Result<()> {
        check_pool2("avg_pool2_bwd_accumulate", s, dx, dy)?;
        // SAFETY: live host tensors, checked disjoint.
        unsafe {
            let dy = host_values(dy);
            update_values(dx, |dx| reference::avg_pool2_bwd_into(&dy, s.n, s.h, s.w, s.c, true, dx))
        }
    }

    fn residual_add_fwd(&self, a: Tensor, b: Tensor, y: Tensor) -> Result<()> {
        check_add(a, b, y)?;
        // SAFETY: live host tensors; y checked disjoint from a and b.
        unsafe {
            let (a, b) = (host_values(a), host_values(b));
            write_values(y, |y| reference::add(&a, &b, y))
        }
    }

    fn add_assign(&self, dst: Tensor, src: Tensor) -> Result<()> {
        check_add_assign(dst, src)?;
        // SAFETY: live host tensors, checked disjoint.
        unsafe {
            let src = host_values(src);
            update_values(dst, |dst| reference::add_assign(dst, &src))
        }
    }
}

impl<D: KernelDevice> CudaBackend<D> {
    /// `avg_pool2_bwd<T>` over every input element, overwriting `dx` or adding to it.
    fn avg_pool2_bwd_launch(&self, s: &PoolShape, dy: Tensor, dx: Tensor, accumulate: bool) -> Result<()> {
        if s.input_len() == 0 {
            return Ok(());
        }
        // SAFETY (argument order): avg_pool2_bwd<T>(T* dx, const T* dy, long long total_in, int h, int w,
        // int c, int accumulate); lengths and disjointness checked by check_pool2.
        self.launch(
            self.entry(KernelTemplate::AvgPool2Bwd, dx.dtype())?,
            Self::elementwise(s.input_len()),
            &[
                dx.into(),
                dy.into(),
                KernelArg::I64(s.input_len() as i64),
                KernelArg::I32(s.h as i32),
                KernelArg::I32(s.w as i32),
                KernelArg::I32(s.c as i32),
                KernelArg::I32(accumulate as i32),
            ],
        )
    }
}

impl<D: KernelDevice> PoolOps for CudaBackend<D> {
    fn global_avg_pool_fwd(&self, s: &PoolShape, x: Tensor, y: Tensor) -> Result<()> {
        check_global_fwd(s, x, y)?;
        if s.pooled_len() == 0 {
            return Ok(());
        }
        // SAFETY (argument order): global_avg_pool_fwd<T>(float* y, const T* x, int hw, int c).
        self.launch(
            self.entry(KernelTemplate::GlobalAvgPoolFwd, x.dtype())?,
            s.per_sample_channel_dims(),
            &[y.into(), x.into(), KernelArg::I32((s.h * s.w) as i32), KernelArg::I32(s.c as i32)],
        )
    }

    fn global_avg_pool_bwd(&self, s: &PoolShape, dy: Tensor, dx: Tensor, accumulate: bool) -> Result<()> {
        check_global_bwd(s, dy, dx)?;
        if s.input_len() == 0 {
            return Ok(());
        }
        // SAFETY (argument order): global_avg_pool_bwd<T>(T* dx, const float* dy, int hw, int c,
        // int accumulate).
        self.launch(
            self.entry(KernelTemplate::GlobalAvgPoolBwd, dx.dtype())?,
            s.per_sample_channel_dims(),
            &[
                dx.into(),
                dy.into(),
                KernelArg::I32((s.h * s.w) as i32),
                KernelArg::I32(s.c as i32),
                KernelArg::I32(accumulate as i32),
            ],
        )
    }

    fn avg_pool2_fwd(&self, s: &PoolShape, x: Tensor, y: Tensor) -> Result<()> {
        check_pool2("avg_pool2_fwd", s, x, y)?;
        if s.pool2_len() == 0 {
            return Ok(());
        }
        // SAFETY (argument order): avg_pool2_fwd<T>(T* y, const T* x, long long total_out, int h, int w,
        // int c).
        self.launch(
            self.entry(KernelTemplate::AvgPool2Fwd, x.dtype())?,
            Self::elementwise(s.pool2_len()),
            &[
                y.into(),
                x.into(),
                KernelArg::I64(s.pool2_len() as i64),
                KernelArg::I32(s.h as i32),
                KernelArg::I32(s.w as i32),
                KernelArg::I32(s.c as i32),
            ],
        )
    }

    fn avg_pool2_bwd(&self, s: &PoolShape, dy: Tensor, dx: Tensor) -> Result<()> {
        check_pool2("avg_pool2_bwd", s, dx, dy)?;
        self.avg_pool2_bwd_launch(s, dy, dx, false)
    }

    fn avg_pool2_bwd_accumulate(&self, s: &PoolShape, dy: Tensor, dx: Tensor) -> Result<()> {
        check_pool2("avg_pool2_bwd_accumulate", s, dx, dy)?;
        self.avg_pool2_bwd_launch(s, dy, dx, true)
    }

    fn residual_add_fwd(&self, a: Tensor, b: Tensor, y: Tensor) -> Result<()> {
        check_add(a, b, y)?;
        if a.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): residual_add_fwd<T>(T* y, const T* a, const T* b, long long n).
        self.launch(
            self.entry(KernelTemplate::ResidualAddFwd, a.dtype())?,
            Self::elementwise_vec4(a.len()),
            &[y.into(), a.into(), b.into(), KernelArg::I64(a.len() as i64)],
        )
    }

    fn add_assign(&self, dst: Tensor, src: Tensor) -> Result<()> {
        check_add_assign(dst, src)?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY (argument order): add_assign<T>(T* dst, const T* src, long long n).
        self.launch(
            self.entry(KernelTemplate::AddAssign, dst.dtype())?,
            Self::elementwise_vec4(dst.len()),
            &[dst.into(), src.into(), KernelArg::I64(dst.len() as i64)],
        )
    }
}
