//! The elastic depthwise convolution (MBConv step 2, spec sections 1.2 and 1.4): kernel 3 or 5 taken as
//! the centre of the stored 5x5, stride 1 or 2, padding k/2, the first `c_active` of `c_stored`
//! channels. Reference: `backend::cpu::depthwise`; kernels: `kernels/depthwise.cu`.
//!
//! Layouts:
//! - activations `x`, `dx`: [n, h, w, c_active], `y`, `dy`: [n, out_h, out_w, c_active], NHWC contiguous
//!   with exactly `c_active` channels; out = floor((h + 2p - k) / s) + 1.
//! - stored weight and its gradient: [5, 5, c_stored], tap-major with channels contiguous, so one tap
//!   of consecutive channels is one coalesced (vectorisable) load. From PyTorch's [C, 1, 5, 5]:
//!   `ours[(ky * 5 + kx) * c_stored + c] = torch[c][0][ky][kx]` (a permutation (1, 2, 3, 0) then a
//!   squeeze). Kernel 3 uses stored taps ky, kx in 1..=3.
//!
//! Contracts: forward and grad-input overwrite their output; grad-weight adds into the active centre
//! slice (k*k taps x c_active channels) of the stored gradient and leaves every other element as it
//! was (the sandwich rule sums the gradients of 4 subnets). Grad-weight on CUDA is a two-stage
//! reduction whose per-block partials go to a caller-provided `workspace` of
//! [`DepthwiseShape::wgrad_workspace_len`] elements (memory is planned up front, no allocation here);
//! the CPU checks the same length so callers are backend-independent.

use crate::backend::cpu::{
    check_disjoint, check_f32, check_len, check_same_dtype, check_wgrad_operands, depthwise as reference, host_slice,
    host_slice_mut, host_values, update_values, write_values, CpuBackend,
};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn, KernelTemplate, LaunchDims};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

/// Side of the stored (maximum) depthwise kernel.
pub const STORED_KERNEL: usize = 5;

/// One depthwise layer as run by one subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    /// Channels of this subnet (the activations hold exactly this many).
    pub c_active: usize,
    /// Channels of the stored weight (the supernet's maximum), >= `c_active`.
    pub c_stored: usize,
    /// Active kernel size, 3 or 5.
    pub kernel: usize,
    /// 1 or 2.
    pub stride: usize,
}

impl DepthwiseShape {
    pub fn pad(&self) -> usize {
        self.kernel / 2
    }

    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad() - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad() - self.kernel) / self.stride + 1
    }

    /// Offset of the active kernel inside the stored 5x5 (1 for k = 3, 0 for k = 5).
    pub fn tap_offset(&self) -> usize {
        (STORED_KERNEL - self.kernel) / 2
    }

    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.c_active
    }

    pub fn output_len(&self) -> usize {
        self.n * self.out_h() * self.out_w() * self.c_active
    }

    /// Elements of the stored weight (and of its gradient).
    pub fn weight_len(&self) -> usize {
        STORED_KERNEL * STORED_KERNEL * self.c_stored
    }

    /// Elements of the workspace `depthwise_bwd_weight` needs (per-block partial sums).
    pub fn wgrad_workspace_len(&self) -> usize {
        geometry::wgrad_partial_blocks(self) * self.kernel * self.kernel * self.c_active
    }

    /// Errors unless the sizes are ones the kernels support; names the field at fault.
    pub fn validate(&self) -> Result<()> {
        let field = |name: &str, expected: &str, got: usize| {
            Err(Error::shape(format!("depthwise shape field {name}"), expected, got))
        };
        if self.kernel != 3 && self.kernel != 5 {
            return field("kernel", "3 or 5", self.kernel);
        }
        if self.stride != 1 && self.stride != 2 {
            return field("stride", "1 or 2", self.stride);
        }
        if self.c_active == 0 || self.c_active > self.c_stored {
            return field("c_active", &format!("1..={} (c_stored)", self.c_stored), self.c_active);
        }
        for (name, v) in [("n", self.n), ("h", self.h), ("w", self.w)] {
            if v == 0 {
                return field(name, ">= 1", v);
            }
        }
        // the kernels index with i32 within one image and i64 across images
        let image = self.h * self.w * self.c_active;
        if image > i32::MAX as usize || self.n > i32::MAX as usize || self.c_stored * 25 > i32::MAX as usize {
            return field("h * w * c_active", "an image below 2^31 elements", image);
        }
        Ok(())
    }
}

pub trait DepthwiseOps: Backend {
    /// `y = depthwise(x, w)`; `y` overwritten.
    fn depthwise_fwd(&self, s: &DepthwiseShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()>;
    /// `dx = d(sum y*dy)/dx`; `dx` overwritten.
    fn depthwise_bwd_input(&self, s: &DepthwiseShape, dy: Tensor, w: Tensor, dx: Tensor) -> Result<()>;
    /// `dx += ` the grad-input: [`Self::depthwise_bwd_input`] then `add_assign` in one pass (the
    /// residual's backward fan-in where the block has no expand conv); the same f32 sum, so bit for bit
    /// in f32, rounded once in bf16.
    fn depthwise_bwd_input_accumulate(&self, s: &DepthwiseShape, dy: Tensor, w: Tensor, dx: Tensor) -> Result<()>;
    /// `dw[centre k x k, :c_active] += d(sum y*dy)/dw`; the rest of `dw` untouched. `workspace` holds at
    /// least [`DepthwiseShape::wgrad_workspace_len`] elements (contents on return unspecified).
    fn depthwise_bwd_weight(
        &self,
        s: &DepthwiseShape,
        x: Tensor,
        dy: Tensor,
        dw: Tensor,
        workspace: Tensor,
    ) -> Result<()>;
}

fn check_fwd(s: &DepthwiseShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()> {
    s.validate()?;
    check_len("depthwise_fwd x", x, s.input_len())?;
    check_len("depthwise_fwd w", w, s.weight_len())?;
    check_len("depthwise_fwd y", y, s.output_len())?;
    check_same_dtype("depthwise_fwd", &[("x", x), ("y", y)])?;
    check_f32("depthwise_fwd", &[("w", w)])?;
    check_disjoint("depthwise_fwd (y vs x)", x, y)?;
    check_disjoint("depthwise_fwd (y vs w)", w, y)
}

fn check_bwd_input(s: &DepthwiseShape, dy: Tensor, w: Tensor, dx: Tensor) -> Result<()> {
    s.validate()?;
    check_len("depthwise_bwd_input dy", dy, s.output_len())?;
    check_len("depthwise_bwd_input w", w, s.weight_len())?;
    check_len("depthwise_bwd_input dx", dx, s.input_len())?;
    check_same_dtype("depthwise_bwd_input", &[("dy", dy), ("dx", dx)])?;
    check_f32("depthwise_bwd_input", &[("w", w)])?;
    check_disjoint("depthwise_bwd_input (dx vs dy)", dy, dx)?;
    check_disjoint("depthwise_bwd_input (dx vs w)", w, dx)
}

fn check_bwd_weight(s: &DepthwiseShape, x: Tensor, dy: Tensor, dw: Tensor, workspace: Tensor) -> Result<()> {
    s.validate()?;
    check_same_dtype("depthwise_bwd_weight", &[("x", x), ("dy", dy)])?;
    check_f32("depthwise_bwd_weight", &[("dw", dw), ("workspace", workspace)])?;
    check_wgrad_operands(
        "depthwise_bwd_weight",
        (x, s.input_len()),
        (dy, s.output_len()),
        (dw, s.weight_len()),
        (workspace, s.wgrad_workspace_len()),
    )
}

impl DepthwiseOps for CpuBackend {
    fn depthwise_fwd(&self, s: &DepthwiseShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()> {
        check_fwd(s, x, w, y)?;
        // SAFETY: live host tensors, output checked disjoint from the inputs.
        unsafe {
            let x = host_values(x);
            write_values(y, |y| reference::depthwise_fwd(s, &x, host_slice(w), y))
        }
    }

    fn depthwise_bwd_input(&self, s: &DepthwiseShape, dy: Tensor, w: Tensor, dx: Tensor) -> Result<()> {
        check_bwd_input(s, dy, w, dx)?;
        // SAFETY: live host tensors, output checked disjoint from the inputs.
        unsafe {
            let dy = host_values(dy);
            write_values(dx, |dx| reference::depthwise_bwd_input(s, &dy, host_slice(w), dx))
        }
    }

    fn depthwise_bwd_input_accumulate(&self, s: &DepthwiseShape, dy: Tensor, w: Tensor, dx: Tensor) -> Result<()> {
        check_bwd_input(s, dy, w, dx)?;
        // SAFETY: live host tensors, output checked disjoint from the inputs.
        unsafe {
            let dy = host_values(dy);
            let mut grad = vec![0.0f32; dx.len()];
            reference::depthwise_bwd_input(s, &dy, host_slice(w), &mut grad);
            // the f32 grad-input plus dx's values, rounded once at the store (as the kernel does)
            update_values(dx, |dx| dx.iter_mut().zip(&grad).for_each(|(d, g)| *d += g))
        }
    }

    fn depthwise_bwd_weight(
        &self,
        s: &DepthwiseShape,
        x: Tensor,
        dy: Tensor,
        dw: Tensor,
        workspace: Tensor,
    ) -> Result<()> {
        check_bwd_weight(s, x, dy, dw, workspace)?;
        // SAFETY: live host tensors, output checked disjoint from the inputs.
        unsafe { reference::depthwise_bwd_weight(s, &host_values(x), &host_values(dy), host_slice_mut(dw)) };
        Ok(())
    }
}

impl<D: KernelDevice> CudaBackend<D> {
    /// The grad-input launch; with `accumulate`, `dx +=` instead of `dx =`.
    fn launch_depthwise_bwd_input(
        &self,
        s: &DepthwiseShape,
        dy: Tensor,
        w: Tensor,
        dx: Tensor,
        accumulate: bool,
    ) -> Result<()> {
        check_bwd_input(s, dy, w, dx)?;
        let vec = if vec4_ok(s, &[dy, w, dx]) { 4 } else { 1 };
        let (chunks, lanes) = geometry::channel_split(s.c_active, vec);
        // a multiple of the stride, so the tile origin's parity is static
        let tile_rows = geometry::BWD_INPUT_TILE_ROWS.min(s.h.next_multiple_of(s.stride));
        let (rows, cols) = geometry::bwd_input_tile(s, tile_rows);
        let shared = (rows * cols + s.kernel * s.kernel) * lanes * vec * 4;
        let dims = LaunchDims {
            grid: (
                s.w.div_ceil(geometry::BWD_INPUT_STRIP) as u32,
                s.h.div_ceil(tile_rows) as u32,
                (s.n * chunks) as u32,
            ),
            block: (lanes as u32, tile_rows as u32, 1),
            shared_bytes: shared as u32,
        };
        check_grid("depthwise_bwd_input", dims)?;
        // SAFETY (argument order): depthwise_bwd_input<T>(T* dx, const T* dy, const float* w,
        // int h, int w_in, int c, int c_stored, int kernel, int stride, int out_h, int out_w, int chunks,
        // int vec, int accumulate).
        self.launch(
            self.entry(KernelTemplate::DepthwiseBwdInput, dy.dtype())?,
            dims,
            &[
                dx.into(),
                dy.into(),
                w.into(),
                int(s.h),
                int(s.w),
                int(s.c_active),
                int(s.c_stored),
                int(s.kernel),
                int(s.stride),
                int(s.out_h()),
                int(s.out_w()),
                int(chunks),
                int(vec),
                KernelArg::I32(accumulate as i32),
            ],
        )
    }
}

/// Launch geometry shared by the launchers and the workspace size. The `.cu` file derives the same
/// tile sizes from its template parameters and `blockDim`; `geometry_*` tests pin the formulas.
pub mod geometry {
    use super::DepthwiseShape;

    /// Channels one block covers at most (8 lanes of float4, or 32 scalar lanes).
    pub const BLOCK_CHANNELS: usize = 32;
    /// Output rows per forward block (threadIdx.y), by stride.
    pub const FWD_TILE_ROWS: [usize; 2] = [16, 8];
    /// Grad-input rows per block (a multiple of 2 so stride-2 parities are static per tile).
    pub const BWD_INPUT_TILE_ROWS: usize = 16;
    /// Grad-input columns per thread.
    pub const BWD_INPUT_STRIP: usize = 8;
    /// Output rows per grad-weight tile; at most this many row groups per block (threadIdx.z).
    pub const WGRAD_TILE_ROWS: usize = 8;
    pub const WGRAD_MAX_ROW_GROUPS: usize = 4;
    /// Grad-weight threads per block at most: ptxas gives the partial kernel up to 128 registers, and
    /// 256 x 128 stays well inside the 64 K registers of a block.
    pub const WGRAD_MAX_THREADS: usize = 256;
    /// Blocks the grad-weight first stage aims for over all channel chunks (enough to fill an H100
    /// several times over while keeping the partials small next to the activations).
    pub const WGRAD_TARGET_BLOCKS: usize = 2048;
    /// Threads of the grad-weight second stage (one output element each, grid-stride).
    pub const REDUCE_THREADS: u32 = 256;

    /// Output columns per forward / grad-weight thread: a sliding window of 8 (stride 1) or 4 (stride 2).
    pub fn fwd_strip(stride: usize) -> usize {
        if stride == 1 {
            8
        } else {
            4
        }
    }

    /// Floor division for the possibly negative tile origins of the grad-input tile.
    pub fn floor_div(a: i64, b: i64) -> i64 {
        a.div_euclid(b)
    }

    /// (chunks, lanes) over `c` channels with `vec` channels per lane: chunks of at most
    /// BLOCK_CHANNELS channels, lanes balanced so no chunk is mostly idle (40 channels: 2 x 5 lanes).
    pub fn channel_split(c: usize, vec: usize) -> (usize, usize) {
        let chunks = c.div_ceil(BLOCK_CHANNELS);
        let lanes = c.div_ceil(vec).div_ceil(chunks);
        (chunks, lanes)
    }

    /// Forward input tile (rows, cols) with halo for `tile_rows` output rows.
    pub fn fwd_tile(s: &DepthwiseShape, tile_rows: usize) -> (usize, usize) {
        ((tile_rows - 1) * s.stride + s.kernel, (fwd_strip(s.stride) - 1) * s.stride + s.kernel)
    }

    /// Grad-input dy tile (rows, cols) for `tile_rows` dx rows (tile origin a multiple of the stride).
    pub fn bwd_input_tile(s: &DepthwiseShape, tile_rows: usize) -> (usize, usize) {
        let (st, p, k) = (s.stride as i64, s.pad() as i64, s.kernel as i64);
        let lo = floor_div(p - k + 1, st);
        let span = |n: usize| (floor_div(n as i64 - 1 + p, st) - lo + 1) as usize;
        (span(tile_rows), span(BWD_INPUT_STRIP))
    }

    /// Row groups of a grad-weight block of `lanes` x `kernel` threads each.
    pub fn wgrad_row_groups(lanes: usize, kernel: usize) -> usize {
        (WGRAD_MAX_THREADS / (lanes * kernel)).clamp(1, WGRAD_MAX_ROW_GROUPS)
    }

    /// Grad-weight tile rows actually used (small images get short tiles).
    pub fn wgrad_tile_rows(s: &DepthwiseShape) -> usize {
        WGRAD_TILE_ROWS.min(s.out_h())
    }

    /// Number of first-stage grad-weight blocks per channel chunk (= partial sums per element).
    pub fn wgrad_partial_blocks(s: &DepthwiseShape) -> usize {
        let tiles = s.n * s.out_h().div_ceil(wgrad_tile_rows(s).max(1)) * s.out_w().div_ceil(fwd_strip(s.stride));
        let chunks = s.c_active.div_ceil(BLOCK_CHANNELS).max(1);
        WGRAD_TARGET_BLOCKS.div_ceil(chunks).clamp(1, tiles.max(1))
    }
}

/// The 4-channel paths need every channel run and every base pointer aligned to 4 elements of its
/// storage type (16 bytes for f32, 8 for bf16).
fn vec4_ok(s: &DepthwiseShape, tensors: &[Tensor]) -> bool {
    s.c_active % 4 == 0 && s.c_stored % 4 == 0 && tensors.iter().all(|t| t.addr() % (4 * t.dtype().size() as u64) == 0)
}

fn int(v: usize) -> KernelArg {
    // validate() bounds every size passed as int
    KernelArg::I32(v as i32)
}

impl<D: KernelDevice> DepthwiseOps for CudaBackend<D> {
    fn depthwise_fwd(&self, s: &DepthwiseShape, x: Tensor, w: Tensor, y: Tensor) -> Result<()> {
        check_fwd(s, x, w, y)?;
        let vec = if vec4_ok(s, &[x, w, y]) { 4 } else { 1 };
        let (chunks, lanes) = geometry::channel_split(s.c_active, vec);
        let tile_rows = geometry::FWD_TILE_ROWS[s.stride - 1].min(s.out_h());
        let (rows, cols) = geometry::fwd_tile(s, tile_rows);
        let block_channels = lanes * vec;
        let shared = (rows * cols + s.kernel * s.kernel) * block_channels * 4;
        let dims = LaunchDims {
            grid: (
                s.out_w().div_ceil(geometry::fwd_strip(s.stride)) as u32,
                s.out_h().div_ceil(tile_rows) as u32,
                (s.n * chunks) as u32,
            ),
            block: (lanes as u32, tile_rows as u32, 1),
            shared_bytes: shared as u32,
        };
        check_grid("depthwise_fwd", dims)?;
        // SAFETY (argument order): depthwise_fwd<T>(T* y, const T* x, const float* w, int h,
        // int w_in, int c, int c_stored, int kernel, int stride, int out_h, int out_w, int chunks, int vec).
        self.launch(
            self.entry(KernelTemplate::DepthwiseFwd, x.dtype())?,
            dims,
            &[
                y.into(),
                x.into(),
                w.into(),
                int(s.h),
                int(s.w),
                int(s.c_active),
                int(s.c_stored),
                int(s.kernel),
                int(s.stride),
                int(s.out_h()),
                int(s.out_w()),
                int(chunks),
                int(vec),
            ],
        )
    }

    fn depthwise_bwd_input(&self, s: &DepthwiseShape, dy: Tensor, w: Tensor, dx: Tensor) -> Result<()> {
        self.launch_depthwise_bwd_input(s, dy, w, dx, false)
    }

    fn depthwise_bwd_input_accumulate(&self, s: &DepthwiseShape, dy: Tensor, w: Tensor, dx: Tensor) -> Result<()> {
        self.launch_depthwise_bwd_input(s, dy, w, dx, true)
    }

    fn depthwise_bwd_weight(
        &self,
        s: &DepthwiseShape,
        x: Tensor,
        dy: Tensor,
        dw: Tensor,
        workspace: Tensor,
    ) -> Result<()> {
        check_bwd_weight(s, x, dy, dw, workspace)?;
        let vec = if vec4_ok(s, &[x, dy, workspace]) { 4 } else { 1 };
        let (chunks, lanes) = geometry::channel_split(s.c_active, vec);
        let parts = geometry::wgrad_partial_blocks(s);
        let tile_rows = geometry::wgrad_tile_rows(s);
        let (rows, cols) = geometry::fwd_tile(s, tile_rows);
        let block_channels = lanes * vec;
        let groups = geometry::wgrad_row_groups(lanes, s.kernel);
        let tiles_floats = (rows * cols + tile_rows * geometry::fwd_strip(s.stride)) * block_channels;
        let reduce_floats = groups * s.kernel * s.kernel * block_channels;
        let dims = LaunchDims {
            grid: (parts as u32, chunks as u32, 1),
            block: (lanes as u32, s.kernel as u32, groups as u32),
            shared_bytes: (tiles_floats.max(reduce_floats) * 4) as u32,
        };
        check_grid("depthwise_bwd_weight", dims)?;
        // SAFETY (argument order): depthwise_bwd_weight_partial<T>(float* partial, const T* x,
        // const T* dy, int n, int h, int w_in, int c, int kernel, int stride, int out_h, int out_w,
        // int tile_rows, int vec).
        self.launch(
            self.entry(KernelTemplate::DepthwiseBwdWeightPartial, x.dtype())?,
            dims,
            &[
                workspace.into(),
                x.into(),
                dy.into(),
                int(s.n),
                int(s.h),
                int(s.w),
                int(s.c_active),
                int(s.kernel),
                int(s.stride),
                int(s.out_h()),
                int(s.out_w()),
                int(tile_rows),
                int(vec),
            ],
        )?;
        let elements = s.kernel * s.kernel * s.c_active;
        // SAFETY (argument order): depthwise_bwd_weight_reduce_f32(float* dw, const float* partial,
        // int parts, int c, int c_stored, int kernel).
        self.launch(
            KernelFn::DepthwiseBwdWeightReduceF32,
            LaunchDims::linear(elements, geometry::REDUCE_THREADS, 65535),
            &[dw.into(), workspace.into(), int(parts), int(s.c_active), int(s.c_stored), int(s.kernel)],
        )
    }
}

/// Dynamic shared memory stays at or below the 48 KiB every device allows without an opt-in, and
/// grid y/z stay below 65536; the error names the op and the launch.
fn check_grid(op: &str, d: LaunchDims) -> Result<()> {
    if d.shared_bytes > 48 * 1024 || d.grid.1 > 65535 || d.grid.2 > 65535 || d.grid.0 == 0 {
        return Err(Error::shape(format!("{op} launch"), "shared <= 48 KiB, grid y/z <= 65535", format!("{d:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::geometry::*;
    use super::*;

    fn shape(h: usize, c: usize, kernel: usize, stride: usize) -> DepthwiseShape {
        DepthwiseShape { n: 2, h, w: h, c_active: c, c_stored: c + 8, kernel, stride }
    }

    #[test]
    fn channel_split_balances_lanes() {
        assert_eq!(channel_split(24, 4), (1, 6));
        assert_eq!(channel_split(40, 4), (2, 5));
        assert_eq!(channel_split(1344, 4), (42, 8));
        assert_eq!(channel_split(18, 1), (1, 18));
        assert_eq!(channel_split(33, 1), (2, 17));
        assert_eq!(wgrad_row_groups(8, 5), 4);
        assert_eq!(wgrad_row_groups(32, 5), 1);
        assert_eq!(wgrad_row_groups(32, 3), 2);
    }

    /// The dy tile of grad-input is the span of output rows that touch a tile of dx rows: for stride 1
    /// it is rows + k - 1; for stride 2, k 5 and 16 dx rows, oh runs over (-1 ..= 8) = 10 rows. For k 3
    /// the same span is a conservative bound (oh = -1 is never read, by parity) that keeps it static.
    #[test]
    fn bwd_input_tile_spans() {
        assert_eq!(bwd_input_tile(&shape(20, 8, 3, 1), 16), (18, 10));
        assert_eq!(bwd_input_tile(&shape(20, 8, 5, 2), 16), (10, 6));
        assert_eq!(bwd_input_tile(&shape(20, 8, 3, 2), 16), (10, 6));
    }

    /// Every launch the supernet makes fits the 48 KiB of dynamic shared memory (largest tiles:
    /// stride 2, k 5, 32 channels).
    #[test]
    fn worst_case_shared_memory_fits() {
        let s = shape(300, 1344, 5, 2);
        let (r, c) = fwd_tile(&s, FWD_TILE_ROWS[1]);
        assert!((r * c + 25) * 32 * 4 <= 48 * 1024);
        let (r, c) = fwd_tile(&shape(300, 1344, 5, 1), FWD_TILE_ROWS[0]);
        assert!((r * c + 25) * 32 * 4 <= 48 * 1024);
        let (r, c) = bwd_input_tile(&s, BWD_INPUT_TILE_ROWS);
        assert!((r * c + 25) * 32 * 4 <= 48 * 1024);
        let (r, c) = bwd_input_tile(&shape(300, 1344, 5, 1), BWD_INPUT_TILE_ROWS);
        assert!((r * c + 25) * 32 * 4 <= 48 * 1024);
    }

    #[test]
    fn validate_names_the_field() {
        let err = shape(9, 8, 4, 1).validate().unwrap_err().to_string();
        assert!(err.contains("kernel"), "{err}");
        let err = DepthwiseShape { c_active: 9, c_stored: 8, ..shape(9, 8, 3, 1) }.validate().unwrap_err();
        assert!(err.to_string().contains("c_active"), "{err}");
    }
}
