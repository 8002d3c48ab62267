//! Reference elastic depthwise convolution (the spec of `kernels/depthwise.cu`): plain loops over NHWC
//! slices, f64 accumulation, parallel over images with rayon only where the result does not depend on
//! the split. Layouts and the active-slice rules are documented on [`DepthwiseShape`].
//!
//! For active tap (i, j) of a k x k kernel, the stored tap is (off + i, off + j) with off = (5 - k) / 2
//! (kernel 3 is the centre of the stored 5x5), and padding p = k / 2:
//!   forward      y[n, oh, ow, c]  = sum_{i,j} x[n, oh*s - p + i, ow*s - p + j, c] * w[off+i, off+j, c]
//!   grad input   dx[n, ih, iw, c] = sum over (oh, ow, i, j) with oh*s - p + i = ih, ow*s - p + j = iw of
//!                                   dy[n, oh, ow, c] * w[off+i, off+j, c]               (overwrites dx)
//!   grad weight  dw[off+i, off+j, c] += sum_{n,oh,ow} x[n, oh*s - p + i, ow*s - p + j, c] * dy[n, oh, ow, c]
//!                (only the active centre slice, k*k taps x c_active channels; every other element kept)
//! Out-of-image input positions read as zero.

use crate::backend::ops::depthwise::{DepthwiseShape, STORED_KERNEL};
use rayon::prelude::*;

/// Index of stored tap (active row i, active col j), channel ch in the [5, 5, c_stored] weight.
fn weight_index(s: &DepthwiseShape, i: usize, j: usize, ch: usize) -> usize {
    let off = s.tap_offset();
    ((off + i) * STORED_KERNEL + off + j) * s.c_stored + ch
}

/// Input coordinate `o * stride - pad + t`, or None when it falls in the zero padding.
fn input_coord(o: usize, t: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + t).checked_sub(pad).filter(|&v| v < size)
}

/// Forward. `x`: [n, h, w, c_active]; `w`: [5, 5, c_stored]; `y`: [n, out_h, out_w, c_active] (overwritten).
pub fn depthwise_fwd(s: &DepthwiseShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (c, k, (oh_n, ow_n)) = (s.c_active, s.kernel, (s.out_h(), s.out_w()));
    let img_in = s.h * s.w * c;
    let img_out = oh_n * ow_n * c;
    if img_out == 0 {
        return;
    }
    y.par_chunks_mut(img_out).zip(x.par_chunks(img_in)).for_each(|(yi, xi)| {
        let mut acc = vec![0f64; c];
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for i in 0..k {
                    let Some(ih) = input_coord(oh, i, s.stride, s.pad(), s.h) else { continue };
                    for j in 0..k {
                        let Some(iw) = input_coord(ow, j, s.stride, s.pad(), s.w) else { continue };
                        let xrow = &xi[(ih * s.w + iw) * c..][..c];
                        let wrow = &w[weight_index(s, i, j, 0)..][..c];
                        for ch in 0..c {
                            acc[ch] += xrow[ch] as f64 * wrow[ch] as f64;
                        }
                    }
                }
                let out = &mut yi[(oh * ow_n + ow) * c..][..c];
                for ch in 0..c {
                    out[ch] = acc[ch] as f32;
                }
            }
        }
    });
}

/// Gradient with respect to the input. `dy`: [n, out_h, out_w, c_active]; `dx`: [n, h, w, c_active]
/// (overwritten, not accumulated).
pub fn depthwise_bwd_input(s: &DepthwiseShape, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (c, k, st, p) = (s.c_active, s.kernel, s.stride, s.pad());
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let img_in = s.h * s.w * c;
    let img_out = oh_n * ow_n * c;
    if img_in == 0 {
        return;
    }
    dx.par_chunks_mut(img_in).zip(dy.par_chunks(img_out.max(1))).for_each(|(dxi, dyi)| {
        let mut acc = vec![0f64; c];
        for ih in 0..s.h {
            for iw in 0..s.w {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for i in 0..k {
                    // oh * st = ih + p - i must be a non-negative multiple of the stride inside the output
                    let Some(num) = (ih + p).checked_sub(i) else { continue };
                    if num % st != 0 || num / st >= oh_n {
                        continue;
                    }
                    let oh = num / st;
                    for j in 0..k {
                        let Some(num) = (iw + p).checked_sub(j) else { continue };
                        if num % st != 0 || num / st >= ow_n {
                            continue;
                        }
                        let ow = num / st;
                        let grow = &dyi[(oh * ow_n + ow) * c..][..c];
                        let wrow = &w[weight_index(s, i, j, 0)..][..c];
                        for ch in 0..c {
                            acc[ch] += grow[ch] as f64 * wrow[ch] as f64;
                        }
                    }
                }
                let out = &mut dxi[(ih * s.w + iw) * c..][..c];
                for ch in 0..c {
                    out[ch] = acc[ch] as f32;
                }
            }
        }
    });
}

/// Gradient with respect to the weight, accumulated (`+=`) into the active centre slice of the stored
/// [5, 5, c_stored] gradient `dw`; taps outside the centre and channels >= c_active are not touched.
/// Per-image partial sums in f64 are added in image order, so the result does not depend on threads.
pub fn depthwise_bwd_weight(s: &DepthwiseShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (c, k) = (s.c_active, s.kernel);
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let img_in = s.h * s.w * c;
    let img_out = oh_n * ow_n * c;
    if img_in == 0 || img_out == 0 {
        return;
    }
    let partials: Vec<Vec<f64>> = x
        .par_chunks(img_in)
        .zip(dy.par_chunks(img_out))
        .map(|(xi, dyi)| {
            let mut acc = vec![0f64; k * k * c];
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let grow = &dyi[(oh * ow_n + ow) * c..][..c];
                    for i in 0..k {
                        let Some(ih) = input_coord(oh, i, s.stride, s.pad(), s.h) else { continue };
                        for j in 0..k {
                            let Some(iw) = input_coord(ow, j, s.stride, s.pad(), s.w) else { continue };
                            let xrow = &xi[(ih * s.w + iw) * c..][..c];
                            let a = &mut acc[(i * k + j) * c..][..c];
                            for ch in 0..c {
                                a[ch] += xrow[ch] as f64 * grow[ch] as f64;
                            }
                        }
                    }
                }
            }
            acc
        })
        .collect();
    for i in 0..k {
        for j in 0..k {
            for ch in 0..c {
                let total: f64 = partials.iter().map(|p| p[(i * k + j) * c + ch]).sum();
                let d = &mut dw[weight_index(s, i, j, ch)];
                *d = (*d as f64 + total) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    fn shape(
        n: usize,
        h: usize,
        w: usize,
        c_active: usize,
        c_stored: usize,
        kernel: usize,
        stride: usize,
    ) -> DepthwiseShape {
        DepthwiseShape { n, h, w, c_active, c_stored, kernel, stride }
    }

    /// L = sum(y * g) in f64, y = forward(x, w).
    fn loss(s: &DepthwiseShape, x: &[f32], w: &[f32], g: &[f32]) -> f64 {
        let mut y = vec![0f32; s.output_len()];
        depthwise_fwd(s, x, w, &mut y);
        y.iter().zip(g).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    /// The op is linear in x and in w, so a central difference has no truncation error at any step:
    /// step 0.5 makes the f32 rounding of y (~1e-7 relative, summed over <= a few hundred terms) a
    /// ~1e-5 error in the difference quotient; tolerance 1e-4 absolute + 1e-4 relative.
    fn check_gradients(s: DepthwiseShape) {
        let x = random_vec(1, s.input_len(), -1.0, 1.0);
        let w = random_vec(2, s.weight_len(), -1.0, 1.0);
        let g = random_vec(3, s.output_len(), -1.0, 1.0);
        let mut dx = vec![f32::NAN; s.input_len()];
        depthwise_bwd_input(&s, &g, &w, &mut dx);
        let mut dw = vec![0f32; s.weight_len()];
        depthwise_bwd_weight(&s, &x, &g, &mut dw);
        let h = 0.5f32;
        let close = |fd: f64, an: f32| (fd - an as f64).abs() <= 1e-4 + 1e-4 * fd.abs();
        for idx in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[idx] += h;
            xm[idx] -= h;
            let fd = (loss(&s, &xp, &w, &g) - loss(&s, &xm, &w, &g)) / (2.0 * h as f64);
            assert!(close(fd, dx[idx]), "{s:?} dx[{idx}]: fd {fd} analytic {}", dx[idx]);
        }
        for idx in 0..w.len() {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[idx] += h;
            wm[idx] -= h;
            let fd = (loss(&s, &x, &wp, &g) - loss(&s, &x, &wm, &g)) / (2.0 * h as f64);
            // inactive elements have fd exactly 0 and must have gradient exactly 0 (untouched zeros)
            assert!(close(fd, dw[idx]), "{s:?} dw[{idx}]: fd {fd} analytic {}", dw[idx]);
        }
    }

    #[test]
    fn gradients_match_finite_differences_k3_stride1() {
        check_gradients(shape(2, 5, 4, 3, 4, 3, 1));
    }

    #[test]
    fn gradients_match_finite_differences_k5_stride2_odd_size() {
        check_gradients(shape(2, 7, 6, 2, 3, 5, 2));
    }

    #[test]
    fn gradients_match_finite_differences_k3_stride2_even_size() {
        check_gradients(shape(1, 6, 5, 3, 5, 3, 2));
    }

    /// Hand-computed: a 3x3 all-ones input, kernel 3 of all ones (centre of the stored 5x5), stride 1,
    /// pad 1: each output counts the in-image neighbours (corner 4, edge 6, centre 9).
    #[test]
    fn forward_counts_neighbours_by_hand() {
        let s = shape(1, 3, 3, 1, 1, 3, 1);
        let mut w = vec![100f32; 25]; // the ring outside the centre 3x3 must not be read
        for i in 1..4 {
            for j in 1..4 {
                w[i * 5 + j] = 1.0;
            }
        }
        let mut y = vec![0f32; 9];
        depthwise_fwd(&s, &[1.0; 9], &w, &mut y);
        assert_eq!(y, vec![4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0]);
    }

    /// Output size floor((H + 2p - k)/s) + 1 for the shapes the supernet uses.
    #[test]
    fn output_sizes() {
        assert_eq!(shape(1, 144, 144, 1, 1, 5, 2).out_h(), 72);
        assert_eq!(shape(1, 7, 7, 1, 1, 3, 2).out_h(), 4);
        assert_eq!(shape(1, 9, 9, 1, 1, 5, 1).out_w(), 9);
    }
}
