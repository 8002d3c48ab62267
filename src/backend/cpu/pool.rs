//! Reference pools and joins over NHWC activations (the spec of `kernels/pool.cu`):
//! - global average pool `[n, hw, c] -> [n, c]` (SE squeeze and the head), f64 sums;
//! - 2x2 stride-2 average pool `[n, h, w, c] -> [n, ceil(h/2), ceil(w/2), c]` (the stride-2 shortcut;
//!   spec 1.2 step 5): AttentiveNAS's `F.avg_pool2d(x, 2, padding=1 if odd else 0)` with PyTorch's
//!   defaults (`count_include_pad=True`, `ceil_mode=False`). An odd size is padded by one on each side,
//!   of which only the top/left pad is ever inside a window: output i covers rows 2i - 1 and 2i, the
//!   padded zero counts, and the divisor is always 4;
//! - residual add `y = a + b`, and `dst += src` to sum gradients where a value fans out.

/// y[b, ch] = mean over `hw` pixels of x[b, p, ch].
pub fn global_avg_pool_fwd(x: &[f32], n: usize, hw: usize, c: usize, y: &mut [f32]) {
    for b in 0..n {
        for ch in 0..c {
            let sum: f64 = (0..hw).map(|p| x[(b * hw + p) * c + ch] as f64).sum();
            y[b * c + ch] = (sum / hw as f64) as f32;
        }
    }
}

/// dx[b, p, ch] (= or +=) dy[b, ch] / hw.
pub fn global_avg_pool_bwd(dy: &[f32], n: usize, hw: usize, c: usize, accumulate: bool, dx: &mut [f32]) {
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                let g = dy[b * c + ch] / hw as f32;
                let out = &mut dx[(b * hw + p) * c + ch];
                *out = if accumulate { *out + g } else { g };
            }
        }
    }
}

/// The padding of the 2x2 pool along a side of `size` pixels: 1 when odd (the original's rule).
pub fn pool2_pad(size: usize) -> usize {
    size % 2
}

/// Output side of the 2x2 stride-2 pool over `size` pixels: (size + 2 pad - 2) / 2 + 1 = ceil(size / 2),
/// the same as a stride-2 conv with padding k/2 (so the shortcut and the main branch agree).
pub fn pool2_out(size: usize) -> usize {
    size.div_ceil(2)
}

/// y[b, i, j, ch] = (sum of x[b, r, s, ch] over r in {2i - ph, 2i - ph + 1}, s in {2j - pw, 2j - pw + 1},
/// x = 0 outside the image) / 4, with ph = h % 2, pw = w % 2. Summed in row order from 0, as the kernel does.
pub fn avg_pool2_fwd(x: &[f32], n: usize, h: usize, w: usize, c: usize, y: &mut [f32]) {
    let (ph, pw) = (pool2_pad(h), pool2_pad(w));
    let (ho, wo) = (pool2_out(h), pool2_out(w));
    for b in 0..n {
        for i in 0..ho {
            for j in 0..wo {
                for ch in 0..c {
                    let mut sum = 0.0f32;
                    for (dr, ds) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        // r, s >= 0 unless the tap is the top/left pad; never past the far edge
                        if let (Some(r), Some(s)) = ((2 * i + dr).checked_sub(ph), (2 * j + ds).checked_sub(pw)) {
                            sum += x[((b * h + r) * w + s) * c + ch];
                        }
                    }
                    y[((b * ho + i) * wo + j) * c + ch] = 0.25 * sum;
                }
            }
        }
    }
}

/// dx[b, r, s, ch] = dy[b, (r + ph) / 2, (s + pw) / 2, ch] / 4 (every input pixel is in exactly one window).
pub fn avg_pool2_bwd(dy: &[f32], n: usize, h: usize, w: usize, c: usize, dx: &mut [f32]) {
    avg_pool2_bwd_into(dy, n, h, w, c, false, dx)
}

/// [`avg_pool2_bwd`], added to `dx` when `accumulate` (the pooled shortcut's fan-in).
pub fn avg_pool2_bwd_into(dy: &[f32], n: usize, h: usize, w: usize, c: usize, accumulate: bool, dx: &mut [f32]) {
    let (ph, pw) = (pool2_pad(h), pool2_pad(w));
    let (ho, wo) = (pool2_out(h), pool2_out(w));
    for b in 0..n {
        for r in 0..h {
            for s in 0..w {
                for ch in 0..c {
                    let g = 0.25 * dy[((b * ho + (r + ph) / 2) * wo + (s + pw) / 2) * c + ch];
                    let out = &mut dx[((b * h + r) * w + s) * c + ch];
                    *out = if accumulate { *out + g } else { g };
                }
            }
        }
    }
}

/// y = a + b.
pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
        *o = u + v;
    }
}

/// dst += src.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    /// Both pools are linear, so their backward is the adjoint of the forward: for random x and g,
    /// <pool(x), g> == <x, pool_bwd(g)> (f64 sums of f32 values; tolerance 1e-4 relative).
    #[test]
    fn pool_backward_is_adjoint_of_forward() {
        let (n, h, w, c) = (2, 6, 4, 3);
        let x = random_vec(1, n * h * w * c, -1.0, 1.0);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64).sum::<f64>();

        let g = random_vec(2, n * c, -1.0, 1.0);
        let mut y = vec![0.0; n * c];
        global_avg_pool_fwd(&x, n, h * w, c, &mut y);
        let mut dx = vec![0.0; x.len()];
        global_avg_pool_bwd(&g, n, h * w, c, false, &mut dx);
        let (l, r) = (dot(&y, &g), dot(&x, &dx));
        assert!((l - r).abs() < 1e-4 * l.abs().max(1.0), "global pool {l} vs {r}");

        // even, odd and mixed sizes: the padded pool is linear too
        for (h, w) in [(6, 4), (5, 7), (3, 4), (1, 1)] {
            let x = random_vec(1, n * h * w * c, -1.0, 1.0);
            let g = random_vec(3, n * pool2_out(h) * pool2_out(w) * c, -1.0, 1.0);
            let mut y = vec![0.0; g.len()];
            avg_pool2_fwd(&x, n, h, w, c, &mut y);
            let mut dx = vec![0.0; x.len()];
            avg_pool2_bwd(&g, n, h, w, c, &mut dx);
            let (l, r) = (dot(&y, &g), dot(&x, &dx));
            assert!((l - r).abs() < 1e-4 * l.abs().max(1.0), "avg pool 2x2 at {h}x{w}: {l} vs {r}");
        }
    }

    #[test]
    fn avg_pool2_known_values() {
        // one sample, 2x4 image, 1 channel: windows [1 2; 5 6] and [3 4; 7 8]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut y = [0.0; 2];
        avg_pool2_fwd(&x, 1, 2, 4, 1, &mut y);
        assert_eq!(y, [3.5, 5.5]);
    }

    /// PyTorch: `F.avg_pool2d(x, 2, padding=1)` on a 3x3 image 1..9 (count_include_pad) gives
    /// [[1/4, (2+3)/4], [(4+7)/4, (5+6+8+9)/4]]: windows start one row and column before the image.
    #[test]
    fn avg_pool2_odd_size_pads_top_left_and_counts_the_pad() {
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut y = [0.0; 4];
        avg_pool2_fwd(&x, 1, 3, 3, 1, &mut y);
        assert_eq!(y, [0.25, 1.25, 2.75, 7.0]);
        let mut dx = [0.0; 9];
        avg_pool2_bwd(&[4.0, 8.0, 12.0, 16.0], 1, 3, 3, 1, &mut dx);
        assert_eq!(dx, [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 3.0, 4.0, 4.0]);
        assert_eq!((pool2_out(7), pool2_out(8), pool2_pad(7), pool2_pad(8)), (4, 4, 1, 0));
    }

    #[test]
    fn global_pool_accumulates_when_asked() {
        let mut dx = vec![1.0f32; 4];
        global_avg_pool_bwd(&[2.0, 4.0], 1, 2, 2, true, &mut dx);
        assert_eq!(dx, [2.0, 3.0, 2.0, 3.0]);
    }
}
