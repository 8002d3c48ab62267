//! Reference bicubic resize (the spec of `kernels/resize.cu`): PyTorch's
//! `interpolate(mode='bicubic', align_corners=False)` without antialias, on an NHWC batch.
//!
//! - Source coordinate of output index `o`: `s = (o + 0.5) * in / out - 0.5` (half-pixel centres). Unlike
//!   the bilinear mode, PyTorch does not clamp a negative `s` to 0 for bicubic: `floor(s)` may be -1.
//! - Keys cubic convolution with A = -0.75 on the 4 taps `floor(s) - 1 ..= floor(s) + 2`, fraction
//!   `t = s - floor(s)`: weights `W(t + 1), W(t), W(1 - t), W(2 - t)`.
//! - Taps outside the image read the nearest edge pixel (border clamp / replicate).
//! - Separable: each of the 4 source rows is interpolated along x, then the 4 results along y (the order
//!   PyTorch uses; the kernel follows it). Same-size axes are the identity (t = 0 gives weights 0,1,0,0).
//!
//! The weights and sums are evaluated in f64, so the reference is the more accurate side of every
//! differential test. Down-sampling uses the same 4-tap filter (no antialias), as PyTorch does by default.

use crate::backend::ops::resize::ResizeShape;
use rayon::prelude::*;

/// Keys' cubic convolution coefficient, as in PyTorch (`upsample_bicubic2d`) and OpenCV (`INTER_CUBIC`).
pub const BICUBIC_A: f64 = -0.75;

/// The 4 tap weights for fraction `t` in [0, 1): W(t+1), W(t), W(1-t), W(2-t).
pub fn cubic_weights(t: f64) -> [f64; 4] {
    let a = BICUBIC_A;
    // |d| <= 1: ((a + 2)|d| - (a + 3))|d|^2 + 1;   1 < |d| < 2: ((a|d| - 5a)|d| + 8a)|d| - 4a
    let near = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
    let far = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For output index `o` on an axis resized `len_in -> len_out`: the 4 clamped source indices and weights.
/// The source coordinate `s = (2o + 1) in / (2 out) - 1/2 = ((2o + 1) in - out) / (2 out)` is split into
/// `floor(s)` and `t` with integer arithmetic, so both are exact (PyTorch forms `s` in f32, which is off
/// by up to ~1e-5 px at 288 wide; that is inside the tolerance of the comparisons with it).
pub fn axis_taps(o: usize, len_in: usize, len_out: usize) -> ([usize; 4], [f64; 4]) {
    let num = (2 * o as i64 + 1) * len_in as i64 - len_out as i64;
    let den = 2 * len_out as i64;
    let base = num.div_euclid(den);
    let w = cubic_weights(num.rem_euclid(den) as f64 / den as f64);
    let last = len_in as i64 - 1;
    let idx = std::array::from_fn(|k| (base - 1 + k as i64).clamp(0, last) as usize);
    (idx, w)
}

/// y (n, h_out, w_out, c) = bicubic resize of x (n, h_in, w_in, c). Lengths must match `s` (the op checks).
/// Images are independent, so the batch is split over rayon threads; each image is plain loops.
pub fn bicubic_resize_fwd(s: &ResizeShape, x: &[f32], y: &mut [f32]) {
    let (in_img, out_img) = (s.h_in * s.w_in * s.c, s.h_out * s.w_out * s.c);
    if in_img == 0 || out_img == 0 {
        return;
    }
    let xs: Vec<_> = (0..s.w_out).map(|ox| axis_taps(ox, s.w_in, s.w_out)).collect();
    y.par_chunks_mut(out_img).zip(x.par_chunks(in_img)).for_each(|(y_img, x_img)| {
        let mut rows = vec![0.0f64; 4 * s.c];
        for oy in 0..s.h_out {
            let (iy, wy) = axis_taps(oy, s.h_in, s.h_out);
            for (ox, (ix, wx)) in xs.iter().enumerate() {
                // the 4 source rows, each interpolated along x
                for (r, &row) in iy.iter().enumerate() {
                    for ch in 0..s.c {
                        let at = |col: usize| x_img[(row * s.w_in + col) * s.c + ch] as f64;
                        rows[r * s.c + ch] = (0..4).map(|k| wx[k] * at(ix[k])).sum();
                    }
                }
                let out = &mut y_img[(oy * s.w_out + ox) * s.c..][..s.c];
                for (ch, o) in out.iter_mut().enumerate() {
                    *o = (0..4).map(|r| wy[r] * rows[r * s.c + ch]).sum::<f64>() as f32;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights of a cubic convolution kernel sum to 1 for every fraction (partition of unity), and
    /// t = 0 reproduces the sample exactly.
    #[test]
    fn weights_partition_unity_and_interpolate() {
        for i in 0..100 {
            let w = cubic_weights(i as f64 / 100.0);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "t={} w={w:?}", i as f64 / 100.0);
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    /// Derived by hand (see tests/resize.rs for the derivation): [1, 2, 4, 8] -> 2 wide gives 1.3125 and
    /// 6.1875 (taps clamped at both borders), [1, 2] -> 4 wide starts at 0.89453125 (source -0.25).
    #[test]
    fn hand_derived_rows() {
        let s = ResizeShape { n: 1, c: 1, h_in: 1, w_in: 4, h_out: 1, w_out: 2 };
        let mut y = [0.0f32; 2];
        bicubic_resize_fwd(&s, &[1.0, 2.0, 4.0, 8.0], &mut y);
        assert_eq!(y, [1.3125, 6.1875]);
        let s = ResizeShape { n: 1, c: 1, h_in: 1, w_in: 2, h_out: 1, w_out: 4 };
        let mut y = [0.0f32; 4];
        bicubic_resize_fwd(&s, &[1.0, 2.0], &mut y);
        assert_eq!(y[0], 0.894_531_25);
    }

    /// Same size is the identity; a constant image stays constant under any resize.
    #[test]
    fn identity_and_constant() {
        let s = ResizeShape { n: 2, c: 3, h_in: 5, w_in: 4, h_out: 5, w_out: 4 };
        let x: Vec<f32> = (0..s.input_len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut y = vec![0.0f32; s.output_len()];
        bicubic_resize_fwd(&s, &x, &mut y);
        assert_eq!(x, y);
        let s = ResizeShape { n: 1, c: 2, h_in: 7, w_in: 3, h_out: 4, w_out: 11 };
        let mut y = vec![0.0f32; s.output_len()];
        bicubic_resize_fwd(&s, &vec![0.25f32; s.input_len()], &mut y);
        assert!(y.iter().all(|&v| (v - 0.25).abs() < 1e-7), "{y:?}");
    }
}
