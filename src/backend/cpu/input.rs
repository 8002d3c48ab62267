//! CPU reference of input normalisation: u8 NHWC pixels (RGB innermost) -> f32 network input,
//! `out[i] = (pixels[i] / 255 - mean[i % 3]) / std[i % 3]` in f32, in that order. The loader's host path
//! (`data::augment::normalize_nhwc_into`) and the CUDA kernel (`kernels/input.cu`) compute exactly this,
//! bit for bit.

/// Normalises `pixels` into `out` (same length).
pub fn normalize_u8_nhwc(pixels: &[u8], mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    debug_assert_eq!(pixels.len(), out.len());
    for (i, (&v, o)) in pixels.iter().zip(out.iter_mut()).enumerate() {
        let c = i % 3;
        *o = (v as f32 / 255.0 - mean[c]) / std[c];
    }
}
