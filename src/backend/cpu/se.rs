//! Reference squeeze-and-excite (spec 1.2 step 3, 1.4): the channel-scale primitive (the spec of
//! `kernels/se.cu`) and the whole block in plain f64 loops, which the `se_fwd`/`se_bwd` composite in
//! `backend::ops::se` is tested against.
//!
//! Layouts: `x`, `y` are NHWC `[n, hw, c]` with exactly `c` (= active mid) channels; the per-sample
//! scale `s` is `[n, c]`. Weights follow PyTorch's `[out, in, 1, 1]` conv weights, i.e. row-major
//! `[out, in]` at the supernet's max widths: reduce `w_reduce[se_stored, c_stored]`, `b_reduce[se_stored]`;
//! expand `w_expand[c_stored, se_stored]`, `b_expand[c_stored]`. The active block uses the leading
//! slices `w_reduce[:se, :c]`, `b_reduce[:se]`, `w_expand[:c, :se]`, `b_expand[:c]`.

use super::activation::{hard_sigmoid, hard_sigmoid_grad, relu, relu_grad};

/// y[b, p, ch] = x[b, p, ch] * s[b, ch].
pub fn channel_scale_fwd(x: &[f32], s: &[f32], n: usize, hw: usize, c: usize, y: &mut [f32]) {
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                let i = (b * hw + p) * c + ch;
                y[i] = x[i] * s[b * c + ch];
            }
        }
    }
}

/// dx = dy * s[b, ch]; ds[b, ch] = sum_p dy * x (f64 sum), overwritten.
#[allow(clippy::too_many_arguments)]
pub fn channel_scale_bwd(
    x: &[f32],
    s: &[f32],
    dy: &[f32],
    n: usize,
    hw: usize,
    c: usize,
    dx: &mut [f32],
    ds: &mut [f32],
) {
    for b in 0..n {
        for ch in 0..c {
            let mut acc = 0.0f64;
            for p in 0..hw {
                let i = (b * hw + p) * c + ch;
                dx[i] = dy[i] * s[b * c + ch];
                acc += dy[i] as f64 * x[i] as f64;
            }
            ds[b * c + ch] = acc as f32;
        }
    }
}

/// Widths of one SE block as run by one subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeDims {
    pub n: usize,
    pub hw: usize,
    /// Active mid channels (the block's input width) and the stored max.
    pub c: usize,
    pub c_stored: usize,
    /// Active squeeze width (`make_divisible(mid // 4, 8)`) and the stored max.
    pub se: usize,
    pub se_stored: usize,
}

/// The SE parameters (or their gradients), stored at max widths.
pub struct SeParams<'a> {
    pub w_reduce: &'a [f32],
    pub b_reduce: &'a [f32],
    pub w_expand: &'a [f32],
    pub b_expand: &'a [f32],
}

/// Per-sample intermediates of the whole block, in f64: (pooled [n,c], reduce pre-activation
/// [n,se], expand pre-activation [n,c]).
fn block_intermediates(d: &SeDims, x: &[f32], p: &SeParams) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut pooled = vec![0.0f64; d.n * d.c];
    let mut r_pre = vec![0.0f64; d.n * d.se];
    let mut e_pre = vec![0.0f64; d.n * d.c];
    for b in 0..d.n {
        for ch in 0..d.c {
            pooled[b * d.c + ch] = (0..d.hw).map(|q| x[(b * d.hw + q) * d.c + ch] as f64).sum::<f64>() / d.hw as f64;
        }
        for o in 0..d.se {
            r_pre[b * d.se + o] = p.b_reduce[o] as f64
                + (0..d.c).map(|i| p.w_reduce[o * d.c_stored + i] as f64 * pooled[b * d.c + i]).sum::<f64>();
        }
        for o in 0..d.c {
            e_pre[b * d.c + o] = p.b_expand[o] as f64
                + (0..d.se)
                    .map(|i| p.w_expand[o * d.se_stored + i] as f64 * relu(r_pre[b * d.se + i] as f32) as f64)
                    .sum::<f64>();
        }
    }
    (pooled, r_pre, e_pre)
}

/// The whole SE block forward: y = x * hsig(W_e relu(W_r mean_hw(x) + b_r) + b_e).
pub fn se_block_fwd(d: &SeDims, x: &[f32], p: &SeParams, y: &mut [f32]) {
    let (_, _, e_pre) = block_intermediates(d, x, p);
    for b in 0..d.n {
        for q in 0..d.hw {
            for ch in 0..d.c {
                let i = (b * d.hw + q) * d.c + ch;
                y[i] = (x[i] as f64 * hard_sigmoid(e_pre[b * d.c + ch] as f32) as f64) as f32;
            }
        }
    }
}

/// Gradients of the whole SE block, written into `dx` (overwritten) and added into the active
/// slices of the four parameter gradients (`grads`, mutable, same layout as the parameters).
pub struct SeGradsMut<'a> {
    pub w_reduce: &'a mut [f32],
    pub b_reduce: &'a mut [f32],
    pub w_expand: &'a mut [f32],
    pub b_expand: &'a mut [f32],
}

// Plain index loops on purpose: the reference reads like the formulas.
#[allow(clippy::needless_range_loop)]
pub fn se_block_bwd(d: &SeDims, x: &[f32], p: &SeParams, dy: &[f32], dx: &mut [f32], g: SeGradsMut) {
    let (pooled, r_pre, e_pre) = block_intermediates(d, x, p);
    for b in 0..d.n {
        // d(scale) and through the hard-sigmoid
        let mut de = vec![0.0f64; d.c];
        for (ch, de_ch) in de.iter_mut().enumerate() {
            let e = e_pre[b * d.c + ch] as f32;
            let s = hard_sigmoid(e) as f64;
            let mut ds = 0.0f64;
            for q in 0..d.hw {
                let i = (b * d.hw + q) * d.c + ch;
                ds += dy[i] as f64 * x[i] as f64;
                dx[i] = (dy[i] as f64 * s) as f32;
            }
            *de_ch = ds * hard_sigmoid_grad(e) as f64;
        }
        // expand conv
        let r_act: Vec<f64> = (0..d.se).map(|i| relu(r_pre[b * d.se + i] as f32) as f64).collect();
        let mut dr = vec![0.0f64; d.se];
        for o in 0..d.c {
            g.b_expand[o] += de[o] as f32;
            for i in 0..d.se {
                g.w_expand[o * d.se_stored + i] += (de[o] * r_act[i]) as f32;
                dr[i] += de[o] * p.w_expand[o * d.se_stored + i] as f64;
            }
        }
        // ReLU and reduce conv
        let mut dpooled = vec![0.0f64; d.c];
        for o in 0..d.se {
            let dr_pre = dr[o] * relu_grad(r_pre[b * d.se + o] as f32) as f64;
            g.b_reduce[o] += dr_pre as f32;
            for i in 0..d.c {
                g.w_reduce[o * d.c_stored + i] += (dr_pre * pooled[b * d.c + i]) as f32;
                dpooled[i] += dr_pre * p.w_reduce[o * d.c_stored + i] as f64;
            }
        }
        // global average pool
        for q in 0..d.hw {
            for ch in 0..d.c {
                let i = (b * d.hw + q) * d.c + ch;
                dx[i] = (dx[i] as f64 + dpooled[ch] / d.hw as f64) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    fn dims() -> SeDims {
        SeDims { n: 2, hw: 3, c: 5, c_stored: 7, se: 2, se_stored: 3 }
    }

    /// The whole-block backward against central differences of the whole-block forward, for dx and
    /// every active parameter gradient, and the inactive parameter-gradient entries stay untouched.
    /// Step 1e-3 (inputs O(1)); the block is piecewise smooth (ReLU, hard-sigmoid kinks), the seeds
    /// put no pre-activation within 1e-2 of a kink (asserted), so the error is truncation + f32
    /// rounding of y over 2h: tolerance 2e-3 abs + 1e-2 rel.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn se_block_backward_matches_finite_difference() {
        let d = dims();
        let x = random_vec(1, d.n * d.hw * d.c, -2.0, 2.0);
        let wr = random_vec(2, d.se_stored * d.c_stored, -1.0, 1.0);
        let br = random_vec(3, d.se_stored, -0.5, 0.5);
        let we = random_vec(4, d.c_stored * d.se_stored, -2.0, 2.0);
        let be = random_vec(5, d.c_stored, -1.0, 1.0);
        let w = random_vec(6, x.len(), -1.0, 1.0);
        let params = |wr: &[f32], br: &[f32], we: &[f32], be: &[f32]| {
            let p = SeParams { w_reduce: wr, b_reduce: br, w_expand: we, b_expand: be };
            let mut y = vec![0.0; x.len()];
            se_block_fwd(&d, &x, &p, &mut y);
            y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
        };
        let p = SeParams { w_reduce: &wr, b_reduce: &br, w_expand: &we, b_expand: &be };
        let (_, r_pre, e_pre) = block_intermediates(&d, &x, &p);
        assert!(r_pre.iter().all(|v| v.abs() > 1e-2), "seed puts a ReLU input on the kink");
        assert!(e_pre.iter().all(|v| (v.abs() - 3.0).abs() > 1e-2), "seed puts a hard-sigmoid input on a kink");
        assert!(e_pre.iter().any(|v| v.abs() < 3.0), "all hard-sigmoids saturated: the test would be vacuous");
        let mut dx = vec![0.0; x.len()];
        let (mut gwr, mut gbr, mut gwe, mut gbe) =
            (vec![0.0; wr.len()], vec![0.0; br.len()], vec![0.0; we.len()], vec![0.0; be.len()]);
        let grads = SeGradsMut { w_reduce: &mut gwr, b_reduce: &mut gbr, w_expand: &mut gwe, b_expand: &mut gbe };
        se_block_bwd(&d, &x, &p, &w, &mut dx, grads);

        let h = 1e-3f32;
        let close = |a: f32, b: f64| (a as f64 - b).abs() <= 2e-3 + 1e-2 * b.abs();
        for i in 0..x.len() {
            let f = |e: f32| {
                let mut xp = x.clone();
                xp[i] += e;
                let p = SeParams { w_reduce: &wr, b_reduce: &br, w_expand: &we, b_expand: &be };
                let mut y = vec![0.0; x.len()];
                se_block_fwd(&d, &xp, &p, &mut y);
                y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
            };
            let fd = (f(h) - f(-h)) / (2.0 * h as f64);
            assert!(close(dx[i], fd), "dx[{i}] {} fd {fd}", dx[i]);
        }
        let fd_param = |which: usize, k: usize| {
            let mut v = [wr.clone(), br.clone(), we.clone(), be.clone()];
            v[which][k] += h;
            let plus = params(&v[0], &v[1], &v[2], &v[3]);
            v[which][k] -= 2.0 * h;
            let minus = params(&v[0], &v[1], &v[2], &v[3]);
            (plus - minus) / (2.0 * h as f64)
        };
        for o in 0..d.se_stored {
            for i in 0..d.c_stored {
                let k = o * d.c_stored + i;
                let active = o < d.se && i < d.c;
                let want = if active { fd_param(0, k) } else { 0.0 };
                assert!(close(gwr[k], want) && (active || gwr[k] == 0.0), "dw_reduce[{o},{i}] {} fd {want}", gwr[k]);
            }
            let want = if o < d.se { fd_param(1, o) } else { 0.0 };
            assert!(close(gbr[o], want), "db_reduce[{o}] {} fd {want}", gbr[o]);
        }
        for o in 0..d.c_stored {
            for i in 0..d.se_stored {
                let k = o * d.se_stored + i;
                let active = o < d.c && i < d.se;
                let want = if active { fd_param(2, k) } else { 0.0 };
                assert!(close(gwe[k], want) && (active || gwe[k] == 0.0), "dw_expand[{o},{i}] {} fd {want}", gwe[k]);
            }
            let want = if o < d.c { fd_param(3, o) } else { 0.0 };
            assert!(close(gbe[o], want), "db_expand[{o}] {} fd {want}", gbe[o]);
        }
    }

    /// The channel-scale backward: dx by linearity, ds by finite differences of <y, w> in s.
    #[test]
    fn channel_scale_backward() {
        let (n, hw, c) = (2, 3, 4);
        let x = random_vec(7, n * hw * c, -1.0, 1.0);
        let s = random_vec(8, n * c, 0.0, 1.0);
        let dy = random_vec(9, x.len(), -1.0, 1.0);
        let (mut dx, mut ds) = (vec![0.0; x.len()], vec![0.0; s.len()]);
        channel_scale_bwd(&x, &s, &dy, n, hw, c, &mut dx, &mut ds);
        for b in 0..n {
            for ch in 0..c {
                let want: f64 =
                    (0..hw).map(|q| dy[(b * hw + q) * c + ch] as f64 * x[(b * hw + q) * c + ch] as f64).sum();
                assert!((ds[b * c + ch] as f64 - want).abs() < 1e-6);
                for q in 0..hw {
                    let i = (b * hw + q) * c + ch;
                    assert_eq!(dx[i], dy[i] * s[b * c + ch]);
                }
            }
        }
    }
}
