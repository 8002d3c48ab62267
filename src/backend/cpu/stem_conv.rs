//! Reference stem convolution (the spec of `kernels/stem_conv.cu`): dense 3x3, stride 2, padding 1,
//! 3 input channels -> the first c_out_active of c_out_stored output channels. Layouts on [`StemShape`].
//!   forward      y[n, oh, ow, co] = sum_{ky,kx,ci} x[n, 2oh - 1 + ky, 2ow - 1 + kx, ci] * w[ky, kx, ci, co]
//!   grad weight  w_grad[ky, kx, ci, co] += sum_{n,oh,ow} x[n, 2oh - 1 + ky, 2ow - 1 + kx, ci] * dy[n, oh, ow, co]
//!                for co < c_out_active only (other output channels untouched)
//! There is no grad-input: the stem's input is the image.

use crate::backend::ops::stem_conv::{StemShape, STEM_IN_CHANNELS, STEM_KERNEL, STEM_PAD, STEM_STRIDE};
use rayon::prelude::*;

fn input_coord(o: usize, t: usize, size: usize) -> Option<usize> {
    (o * STEM_STRIDE + t).checked_sub(STEM_PAD).filter(|&v| v < size)
}

/// Row of the stored weight for tap (ky, kx) and input channel ci.
fn tap_row(ky: usize, kx: usize, ci: usize) -> usize {
    (ky * STEM_KERNEL + kx) * STEM_IN_CHANNELS + ci
}

/// Forward. `x`: [n, h, w, 3]; `w`: [3, 3, 3, c_out_stored]; `y`: [n, out_h, out_w, c_out_active] (overwritten).
pub fn stem_conv_fwd(s: &StemShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (co_n, (oh_n, ow_n)) = (s.c_out_active, (s.out_h(), s.out_w()));
    let img_in = s.h * s.w * STEM_IN_CHANNELS;
    let img_out = oh_n * ow_n * co_n;
    if img_out == 0 {
        return;
    }
    y.par_chunks_mut(img_out).zip(x.par_chunks(img_in)).for_each(|(yi, xi)| {
        let mut acc = vec![0f64; co_n];
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for ky in 0..STEM_KERNEL {
                    let Some(ih) = input_coord(oh, ky, s.h) else { continue };
                    for kx in 0..STEM_KERNEL {
                        let Some(iw) = input_coord(ow, kx, s.w) else { continue };
                        for ci in 0..STEM_IN_CHANNELS {
                            let xv = xi[(ih * s.w + iw) * STEM_IN_CHANNELS + ci] as f64;
                            let wrow = &w[tap_row(ky, kx, ci) * s.c_out_stored..][..co_n];
                            for co in 0..co_n {
                                acc[co] += xv * wrow[co] as f64;
                            }
                        }
                    }
                }
                let out = &mut yi[(oh * ow_n + ow) * co_n..][..co_n];
                for co in 0..co_n {
                    out[co] = acc[co] as f32;
                }
            }
        }
    });
}

/// Weight gradient accumulated (`+=`) into the first c_out_active channels of every stored row; the
/// per-image f64 partials are added in image order (deterministic).
pub fn stem_conv_bwd_weight(s: &StemShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (co_n, (oh_n, ow_n)) = (s.c_out_active, (s.out_h(), s.out_w()));
    let img_in = s.h * s.w * STEM_IN_CHANNELS;
    let img_out = oh_n * ow_n * co_n;
    let rows = STEM_KERNEL * STEM_KERNEL * STEM_IN_CHANNELS;
    if img_in == 0 || img_out == 0 {
        return;
    }
    let partials: Vec<Vec<f64>> = x
        .par_chunks(img_in)
        .zip(dy.par_chunks(img_out))
        .map(|(xi, dyi)| {
            let mut acc = vec![0f64; rows * co_n];
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let grow = &dyi[(oh * ow_n + ow) * co_n..][..co_n];
                    for ky in 0..STEM_KERNEL {
                        let Some(ih) = input_coord(oh, ky, s.h) else { continue };
                        for kx in 0..STEM_KERNEL {
                            let Some(iw) = input_coord(ow, kx, s.w) else { continue };
                            for ci in 0..STEM_IN_CHANNELS {
                                let xv = xi[(ih * s.w + iw) * STEM_IN_CHANNELS + ci] as f64;
                                let a = &mut acc[tap_row(ky, kx, ci) * co_n..][..co_n];
                                for co in 0..co_n {
                                    a[co] += xv * grow[co] as f64;
                                }
                            }
                        }
                    }
                }
            }
            acc
        })
        .collect();
    for r in 0..rows {
        for co in 0..co_n {
            let total: f64 = partials.iter().map(|p| p[r * co_n + co]).sum();
            let d = &mut dw[r * s.c_out_stored + co];
            *d = (*d as f64 + total) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    /// The conv is linear in w, so a central difference is exact up to rounding; step 0.5 keeps the
    /// f32 rounding of y (~1e-7 relative over a few hundred terms) near 1e-5: tolerance 1e-4 abs + rel.
    #[test]
    fn weight_gradient_matches_finite_differences() {
        let s = StemShape { n: 2, h: 7, w: 6, c_out_active: 3, c_out_stored: 5 };
        let x = random_vec(11, s.input_len(), -1.0, 1.0);
        let w = random_vec(12, s.weight_len(), -1.0, 1.0);
        let g = random_vec(13, s.output_len(), -1.0, 1.0);
        let loss = |w: &[f32]| -> f64 {
            let mut y = vec![0f32; s.output_len()];
            stem_conv_fwd(&s, &x, w, &mut y);
            y.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let mut dw = vec![0f32; s.weight_len()];
        stem_conv_bwd_weight(&s, &x, &g, &mut dw);
        let h = 0.5f32;
        for idx in 0..w.len() {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[idx] += h;
            wm[idx] -= h;
            let fd = (loss(&wp) - loss(&wm)) / (2.0 * h as f64);
            assert!((fd - dw[idx] as f64).abs() <= 1e-4 + 1e-4 * fd.abs(), "dw[{idx}]: fd {fd} analytic {}", dw[idx]);
        }
    }

    /// Hand-computed: 4x4 image of ones, one output channel whose weight is 1 on (ky=1, kx=1, ci=0)
    /// only: y = x at (2oh, 2ow), i.e. all ones; with all 27 weights 1, output (0,0) sees the 2x2
    /// in-image window of 3 channels (12) and output (1,1) sees 3x3x3 (27).
    #[test]
    fn forward_by_hand() {
        let s = StemShape { n: 1, h: 4, w: 4, c_out_active: 1, c_out_stored: 2 };
        let x = vec![1f32; s.input_len()];
        let mut w = vec![0f32; s.weight_len()];
        w[tap_row(1, 1, 0) * 2] = 1.0;
        let mut y = vec![0f32; 4];
        stem_conv_fwd(&s, &x, &w, &mut y);
        assert_eq!(y, vec![1.0; 4]);
        let w: Vec<f32> = (0..s.weight_len()).map(|i| if i % 2 == 0 { 1.0 } else { 99.0 }).collect();
        stem_conv_fwd(&s, &x, &w, &mut y);
        assert_eq!(y, vec![12.0, 18.0, 18.0, 27.0]);
    }
}
