//! Reference BatchNorm over NHWC activations (the spec of `kernels/batchnorm.cu`), with the elastic
//! slicing of `DynamicBatchNorm2d`: the activation has `c` channels (contiguous, `x[p * c + ch]` for
//! pixel `p` of `pixels = N*H*W`), and gamma, beta, the running stats and the parameter gradients are
//! stored at the supernet's max width with the first `c` entries active. Every reduction is in f64.
//!
//! Modes (spec 1.4, 5.1):
//! - training: normalise with the batch mean and the **biased** batch variance; running stats untouched.
//! - eval: normalise with the running stats.
//! - calibration (PyTorch `momentum=None`): after a training-mode forward of batch number `k` (1-based),
//!   `running += (batch - running) / k`, with the **unbiased** batch variance for `running_var`.
//!
//! Every mode can fuse a swish after the affine (`act`), since every conv but the projection is
//! followed by BN + swish. `saved` holds `[mean(c), biased var(c)]` from the training forward; the
//! backward recomputes `xhat` from it.

use rayon::prelude::*;

/// BatchNorm epsilon: `bn_eps: 1e-5` in `configs/train_attentive_nas_models.yml` (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Applies the optional swish to the affine output `z`.
fn activate(z: f64, swish: bool) -> f64 {
    if swish {
        z * sigmoid(z)
    } else {
        z
    }
}

/// d act / dz at `z`.
fn activate_grad(z: f64, swish: bool) -> f64 {
    if swish {
        let s = sigmoid(z);
        s * (1.0 + z * (1.0 - s))
    } else {
        1.0
    }
}

/// Rows per chunk of the chunked reductions: the chunking is fixed (independent of the thread count),
/// and chunk results are combined in order, so every reduction gives the same bits on any machine.
const ROWS_PER_CHUNK: usize = 256;

/// Per-channel sums over rows of `f(p, ch)` (f64), row-major for cache locality, in fixed chunks
/// reduced in order.
fn channel_sums<const K: usize>(pixels: usize, c: usize, f: impl Fn(usize, usize) -> [f64; K] + Sync) -> Vec<[f64; K]> {
    let chunks: Vec<Vec<[f64; K]>> = (0..pixels.div_ceil(ROWS_PER_CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![[0.0f64; K]; c];
            for p in chunk * ROWS_PER_CHUNK..((chunk + 1) * ROWS_PER_CHUNK).min(pixels) {
                for (ch, a) in acc.iter_mut().enumerate() {
                    let v = f(p, ch);
                    for k in 0..K {
                        a[k] += v[k];
                    }
                }
            }
            acc
        })
        .collect();
    let mut total = vec![[0.0f64; K]; c];
    for part in chunks {
        for (t, v) in total.iter_mut().zip(part) {
            for k in 0..K {
                t[k] += v[k];
            }
        }
    }
    total
}

/// Per-channel batch mean and biased variance (f64 two-pass) into `saved = [mean(c), var(c)]`.
pub fn batch_stats(x: &[f32], c: usize, saved: &mut [f32]) {
    let pixels = x.len() / c;
    let np = pixels as f64;
    let mean: Vec<f64> = channel_sums(pixels, c, |p, ch| [x[p * c + ch] as f64]).iter().map(|s| s[0] / np).collect();
    let var = channel_sums(pixels, c, |p, ch| [(x[p * c + ch] as f64 - mean[ch]).powi(2)]);
    for ch in 0..c {
        saved[ch] = mean[ch] as f32;
        saved[c + ch] = (var[ch][0] / np) as f32;
    }
}

/// 1 / sqrt(var + eps) per channel, in f64.
fn inv_std(var: &[f32]) -> Vec<f64> {
    var.iter().map(|&v| 1.0 / (v as f64 + BN_EPS as f64).sqrt()).collect()
}

/// y = act(gamma * (x - mean) / sqrt(var + eps) + beta) with the per-channel `mean`, `var` given.
#[allow(clippy::too_many_arguments)]
fn normalize(x: &[f32], c: usize, mean: &[f32], var: &[f32], gamma: &[f32], beta: &[f32], swish: bool, y: &mut [f32]) {
    let invstd = inv_std(&var[..c]);
    y.par_chunks_mut(c * ROWS_PER_CHUNK).zip(x.par_chunks(c * ROWS_PER_CHUNK)).for_each(|(rows, xs)| {
        for (row, xr) in rows.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
            for (ch, out) in row.iter_mut().enumerate() {
                let z = gamma[ch] as f64 * (xr[ch] as f64 - mean[ch] as f64) * invstd[ch] + beta[ch] as f64;
                *out = activate(z, swish) as f32;
            }
        }
    });
}

/// Training-mode forward: batch statistics into `saved`, then the normalisation into `y`.
pub fn train_fwd(x: &[f32], c: usize, gamma: &[f32], beta: &[f32], swish: bool, y: &mut [f32], saved: &mut [f32]) {
    batch_stats(x, c, saved);
    let (mean, var) = saved.split_at(c);
    normalize(x, c, mean, &var[..c], gamma, beta, swish, y);
}

/// Eval-mode forward with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn eval_fwd(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    swish: bool,
    y: &mut [f32],
) {
    normalize(x, c, running_mean, running_var, gamma, beta, swish, y);
}

/// Training-mode backward. With `xhat = (x - mean) * invstd`, `dz = dy * act'(z)`:
/// `dbeta += sum dz`, `dgamma += sum dz * xhat`,
/// `dx = gamma * invstd / P * (P * dz - sum dz - xhat * sum(dz * xhat))`.
#[allow(clippy::too_many_arguments)]
pub fn train_bwd(
    x: &[f32],
    dy: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    saved: &[f32],
    swish: bool,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let pixels = x.len() / c;
    let np = pixels as f64;
    let invstd = inv_std(&saved[c..2 * c]);
    let xhat = |p: usize, ch: usize| (x[p * c + ch] as f64 - saved[ch] as f64) * invstd[ch];
    let dz = |p: usize, ch: usize| {
        let xh = xhat(p, ch);
        (dy[p * c + ch] as f64 * activate_grad(gamma[ch] as f64 * xh + beta[ch] as f64, swish), xh)
    };
    let sums = channel_sums(pixels, c, |p, ch| {
        let (d, xh) = dz(p, ch);
        [d, d * xh]
    });
    for ch in 0..c {
        dbeta[ch] += sums[ch][0] as f32;
        dgamma[ch] += sums[ch][1] as f32;
    }
    dx.par_chunks_mut(c * ROWS_PER_CHUNK).enumerate().for_each(|(chunk, rows)| {
        for (i, row) in rows.chunks_exact_mut(c).enumerate() {
            let p = chunk * ROWS_PER_CHUNK + i;
            for (ch, out) in row.iter_mut().enumerate() {
                let (d, xh) = dz(p, ch);
                let [sum_dz, sum_dz_xhat] = sums[ch];
                *out = (gamma[ch] as f64 * invstd[ch] / np * (np * d - sum_dz - xh * sum_dz_xhat)) as f32;
            }
        }
    });
}

/// Calibration update after batch number `batches` (1-based) of `pixels` pixels: cumulative mean of
/// the batch means and of the unbiased batch variances (`var * P / (P - 1)`).
pub fn calibrate(
    saved: &[f32],
    c: usize,
    pixels: usize,
    batches: u32,
    running_mean: &mut [f32],
    running_var: &mut [f32],
) {
    let k = batches as f64;
    let bessel = pixels as f64 / (pixels as f64 - 1.0);
    for ch in 0..c {
        let (m, v) = (saved[ch] as f64, saved[c + ch] as f64 * bessel);
        running_mean[ch] = (running_mean[ch] as f64 + (m - running_mean[ch] as f64) / k) as f32;
        running_var[ch] = (running_var[ch] as f64 + (v - running_var[ch] as f64) / k) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    /// Loss L = sum(w * y) for fixed random weights w, so dL/dy = w.
    fn loss(x: &[f32], c: usize, gamma: &[f32], beta: &[f32], swish: bool, w: &[f32]) -> f64 {
        let mut y = vec![0.0; x.len()];
        let mut saved = vec![0.0; 2 * c];
        train_fwd(x, c, gamma, beta, swish, &mut y, &mut saved);
        y.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    /// Central finite differences of the f32 forward (evaluated in f64 inside) against the analytic
    /// backward, for dx, dgamma and dbeta, with and without the fused swish. Step 1e-2 on inputs of
    /// O(1): truncation O(h^2) ~ 1e-4 relative, f32 rounding of y (~6e-8 * |y| * P / h) ~ 1e-4; the
    /// tolerance 2e-3 abs + 1e-2 rel sits above both.
    #[test]
    fn train_backward_matches_finite_difference() {
        let (pixels, c) = (13, 5);
        for swish in [false, true] {
            let x = random_vec(1, pixels * c, -2.0, 2.0);
            let gamma = random_vec(2, c, 0.5, 1.5);
            let beta = random_vec(3, c, -0.5, 0.5);
            let w = random_vec(4, pixels * c, -1.0, 1.0);
            let mut saved = vec![0.0; 2 * c];
            let mut y = vec![0.0; x.len()];
            train_fwd(&x, c, &gamma, &beta, swish, &mut y, &mut saved);
            let mut dx = vec![0.0; x.len()];
            let (mut dgamma, mut dbeta) = (vec![0.5; c], vec![0.25; c]); // accumulate onto these
            train_bwd(&x, &w, c, &gamma, &beta, &saved, swish, &mut dx, &mut dgamma, &mut dbeta);
            let h = 1e-2f32;
            let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
            let close = |a: f64, b: f64| (a - b).abs() <= 2e-3 + 1e-2 * b.abs();
            for i in 0..x.len() {
                let d = fd(&|e| {
                    let mut xp = x.clone();
                    xp[i] += e;
                    loss(&xp, c, &gamma, &beta, swish, &w)
                });
                assert!(close(dx[i] as f64, d), "swish={swish} dx[{i}] analytic {} fd {d}", dx[i]);
            }
            for ch in 0..c {
                let dg = fd(&|e| {
                    let mut g = gamma.clone();
                    g[ch] += e;
                    loss(&x, c, &g, &beta, swish, &w)
                });
                let db = fd(&|e| {
                    let mut b = beta.clone();
                    b[ch] += e;
                    loss(&x, c, &gamma, &b, swish, &w)
                });
                assert!(close(dgamma[ch] as f64 - 0.5, dg), "dgamma[{ch}] {} fd {dg}", dgamma[ch] - 0.5);
                assert!(close(dbeta[ch] as f64 - 0.25, db), "dbeta[{ch}] {} fd {db}", dbeta[ch] - 0.25);
            }
        }
    }

    /// Training-mode output has per-channel mean beta and (biased) variance gamma^2 * var/(var+eps).
    #[test]
    fn train_forward_normalises() {
        let (pixels, c) = (50, 3);
        let x = random_vec(5, pixels * c, 3.0, 7.0);
        let (gamma, beta) = (vec![2.0, 1.0, 0.5], vec![1.0, -1.0, 0.0]);
        let mut y = vec![0.0; x.len()];
        let mut saved = vec![0.0; 2 * c];
        train_fwd(&x, c, &gamma, &beta, false, &mut y, &mut saved);
        for ch in 0..c {
            let col: Vec<f64> = (0..pixels).map(|p| y[p * c + ch] as f64).collect();
            let m = col.iter().sum::<f64>() / pixels as f64;
            let v = col.iter().map(|a| (a - m).powi(2)).sum::<f64>() / pixels as f64;
            let expect_v = (gamma[ch] as f64).powi(2) * saved[c + ch] as f64 / (saved[c + ch] as f64 + 1e-5);
            assert!((m - beta[ch] as f64).abs() < 1e-5, "mean {m}");
            assert!((v - expect_v).abs() < 1e-4, "var {v} vs {expect_v}");
        }
    }

    /// Calibrating over k batches gives the plain average of the k batch means and of the k unbiased
    /// variances (PyTorch momentum=None), whatever the running stats held before batch 1.
    #[test]
    fn calibration_is_cumulative_average() {
        let (pixels, c) = (7, 2);
        let batches: Vec<Vec<f32>> = (0..4).map(|i| random_vec(10 + i, pixels * c, -1.0, 3.0)).collect();
        let (mut rm, mut rv) = (vec![9.0f32; c], vec![9.0f32; c]);
        for (k, b) in batches.iter().enumerate() {
            let mut saved = vec![0.0; 2 * c];
            batch_stats(b, c, &mut saved);
            calibrate(&saved, c, pixels, k as u32 + 1, &mut rm, &mut rv);
        }
        for ch in 0..c {
            let (mut want_m, mut want_v) = (0.0f64, 0.0f64);
            for b in &batches {
                let col: Vec<f64> = (0..pixels).map(|p| b[p * c + ch] as f64).collect();
                let m = col.iter().sum::<f64>() / pixels as f64;
                want_m += m / 4.0;
                want_v += col.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (pixels as f64 - 1.0) / 4.0;
            }
            assert!((rm[ch] as f64 - want_m).abs() < 1e-6, "mean {} vs {want_m}", rm[ch]);
            assert!((rv[ch] as f64 - want_v).abs() < 1e-6, "var {} vs {want_v}", rv[ch]);
        }
    }

    /// Eval mode with running stats equal to the batch stats reproduces the training-mode output.
    #[test]
    fn eval_with_batch_stats_equals_train() {
        let (pixels, c) = (11, 4);
        let x = random_vec(20, pixels * c, -1.0, 1.0);
        let gamma = random_vec(21, c, 0.5, 1.5);
        let beta = random_vec(22, c, -0.5, 0.5);
        let (mut y_train, mut y_eval) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let mut saved = vec![0.0; 2 * c];
        train_fwd(&x, c, &gamma, &beta, true, &mut y_train, &mut saved);
        eval_fwd(&x, c, &gamma, &beta, &saved[..c], &saved[c..], true, &mut y_eval);
        assert_eq!(y_train, y_eval);
    }
}
