//! Reference pools and joins over NHWC activations (the spec of `kernels/pool.cu`):
//! - global average pool `[n, hw, c] -> [n, c]` (SE squeeze and the head), f64 sums;
//! - 2x2 stride-2 average pool `[n, h, w, c] -> [n, h/2, w/2, c]` (the stride-2 shortcut; spec 1.2
//!   step 5: H and W are always even at a stride-2 block, so there is no padding case);
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

/// y[b, i, j, ch] = mean of x[b, 2i..2i+2, 2j..2j+2, ch].
pub fn avg_pool2_fwd(x: &[f32], n: usize, h: usize, w: usize, c: usize, y: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    for b in 0..n {
        for i in 0..ho {
            for j in 0..wo {
                for ch in 0..c {
                    let at = |r: usize, s: usize| x[((b * h + r) * w + s) * c + ch];
                    let sum = at(2 * i, 2 * j) + at(2 * i, 2 * j + 1) + at(2 * i + 1, 2 * j) + at(2 * i + 1, 2 * j + 1);
                    y[((b * ho + i) * wo + j) * c + ch] = 0.25 * sum;
                }
            }
        }
    }
}

/// dx[b, r, s, ch] = dy[b, r/2, s/2, ch] / 4 (every input pixel belongs to exactly one window).
pub fn avg_pool2_bwd(dy: &[f32], n: usize, h: usize, w: usize, c: usize, dx: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    for b in 0..n {
        for r in 0..h {
            for s in 0..w {
                for ch in 0..c {
                    dx[((b * h + r) * w + s) * c + ch] = 0.25 * dy[((b * ho + r / 2) * wo + s / 2) * c + ch];
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

        let g = random_vec(3, n * h * w * c / 4, -1.0, 1.0);
        let mut y = vec![0.0; g.len()];
        avg_pool2_fwd(&x, n, h, w, c, &mut y);
        let mut dx = vec![0.0; x.len()];
        avg_pool2_bwd(&g, n, h, w, c, &mut dx);
        let (l, r) = (dot(&y, &g), dot(&x, &dx));
        assert!((l - r).abs() < 1e-4 * l.abs().max(1.0), "avg pool 2x2 {l} vs {r}");
    }

    #[test]
    fn avg_pool2_known_values() {
        // one sample, 2x4 image, 1 channel: windows [1 2; 5 6] and [3 4; 7 8]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut y = [0.0; 2];
        avg_pool2_fwd(&x, 1, 2, 4, 1, &mut y);
        assert_eq!(y, [3.5, 5.5]);
    }

    #[test]
    fn global_pool_accumulates_when_asked() {
        let mut dx = vec![1.0f32; 4];
        global_avg_pool_bwd(&[2.0, 4.0], 1, 2, 2, true, &mut dx);
        assert_eq!(dx, [2.0, 3.0, 2.0, 3.0]);
    }
}
