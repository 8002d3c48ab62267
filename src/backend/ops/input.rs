//! Input normalisation on the device (issue #13 item 4): the loader's u8 NHWC batch is uploaded as bytes
//! (a quarter of the f32 batch) into a byte staging tensor ([`Backend::upload_bytes`]) and normalised
//! there into the f32 network input. Kernel: `kernels/input.cu`; the CPU form calls the reference
//! `backend::cpu::input`, which is also the loader's host formula, so both paths give identical bits.

use crate::backend::cpu::{check_disjoint, host_slice, host_slice_mut, input, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

/// f32 words of a staging tensor that holds `bytes` bytes.
pub fn staging_words(bytes: usize) -> usize {
    bytes.div_ceil(4)
}

pub trait InputOps: Backend {
    /// `out[i] = (pixels[i] / 255 - mean[i % 3]) / std[i % 3]` for `i < out.len()`, where `pixels[i]` is
    /// byte `i` of the staging tensor `pixels` (filled by [`Backend::upload_bytes`]; it must hold at least
    /// `out.len()` bytes) and `out` is NHWC with 3 channels.
    fn normalize_u8_nhwc(&self, pixels: Tensor, mean: [f32; 3], std: [f32; 3], out: Tensor) -> Result<()>;
}

/// Shape checks shared by both backends.
fn check(pixels: Tensor, out: Tensor) -> Result<()> {
    if out.len() % 3 != 0 {
        return Err(Error::shape(
            "normalised input (NHWC, 3 channels)",
            "a multiple of 3 values".to_string(),
            format!("{} values", out.len()),
        ));
    }
    if pixels.len() < staging_words(out.len()) {
        return Err(Error::shape(
            "pixel staging tensor",
            format!("at least {} f32 words for {} bytes", staging_words(out.len()), out.len()),
            format!("{} words", pixels.len()),
        ));
    }
    check_disjoint("normalize_u8_nhwc (pixels, out)", pixels, out)
}

impl InputOps for CpuBackend {
    fn normalize_u8_nhwc(&self, pixels: Tensor, mean: [f32; 3], std: [f32; 3], out: Tensor) -> Result<()> {
        check(pixels, out)?;
        // SAFETY: both are live, disjoint host tensors (contract of Tensor, checked above).
        let (src, dst) = unsafe { (host_slice(pixels), host_slice_mut(out)) };
        let bytes: &[u8] = bytemuck::cast_slice(src);
        input::normalize_u8_nhwc(&bytes[..dst.len()], mean, std, dst);
        Ok(())
    }
}

impl<D: KernelDevice> InputOps for CudaBackend<D> {
    fn normalize_u8_nhwc(&self, pixels: Tensor, mean: [f32; 3], std: [f32; 3], out: Tensor) -> Result<()> {
        check(pixels, out)?;
        if out.is_empty() {
            return Ok(());
        }
        let n = out.len();
        // SAFETY (argument order): normalize_u8_nhwc_f32(const unsigned char* src, float* out, long long n,
        // float m0, float m1, float m2, float s0, float s1, float s2); src holds >= n bytes (checked).
        self.launch(
            KernelFn::NormalizeU8NhwcF32,
            Self::elementwise(n.div_ceil(4)),
            &[
                pixels.into(),
                out.into(),
                KernelArg::I64(n as i64),
                KernelArg::F32(mean[0]),
                KernelArg::F32(mean[1]),
                KernelArg::F32(mean[2]),
                KernelArg::F32(std[0]),
                KernelArg::F32(std[1]),
                KernelArg::F32(std[2]),
            ],
        )
    }
}
