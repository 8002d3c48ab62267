//! Reference losses and metrics on logits (n, k), row-major (the spec of `kernels/loss.cu`; spec 3.2).
//!
//! - Label-smoothing CE: target = (1 - eps) onehot(y) + eps / k; row loss = -sum_c target_c log_softmax(z)_c.
//! - Soft CE (in-place distillation): row loss = -sum_c softmax(T)_c log_softmax(z)_c; gradient to z only.
//! - Alpha-divergence KD (AlphaNet's `AdaptiveLossSoft`, `loss_ops.py`): see [`AlphaDivergence`].
//! - Batch loss = mean of the row losses; every gradient is of that mean: dz = (softmax(z) - target) / n.
//! - Top-k: rank of the true class = #{c : z_c > z_y} + #{c < y : z_c == z_y} (ties go to the lower
//!   class index, so the rank is well defined); the row is top-k correct when rank < k.
//!
//! Every row is evaluated in f64 from the f32 inputs (max-subtracted log-sum-exp), so the reference is
//! the more accurate side of every differential test. Labels are class indices stored as f32 (exact up to
//! 2^24); a label that is not an integer in [0, k) makes that row NaN here as in the kernels (the CPU
//! backend rejects it with an error before calling these; a kernel cannot return one).

/// The class index a label value names, if it is an integer in [0, k).
pub fn label_index(label: f32, k: usize) -> Option<usize> {
    (label >= 0.0 && label.fract() == 0.0 && (label as f64) < k as f64).then_some(label as usize)
}

/// log-sum-exp of a row, max-subtracted: returns (max, log sum exp(z - max)).
fn log_sum_exp(z: &[f64]) -> (f64, f64) {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m, z.iter().map(|&v| (v - m).exp()).sum::<f64>().ln())
}

/// log_softmax of a row.
pub fn log_softmax(z: &[f64]) -> Vec<f64> {
    let (m, lse) = log_sum_exp(z);
    z.iter().map(|&v| v - m - lse).collect()
}

/// The label-smoothing target distribution of one row.
fn smoothed_target(k: usize, y: usize, eps: f64) -> Vec<f64> {
    let mut t = vec![eps / k as f64; k];
    t[y] += 1.0 - eps;
    t
}

/// -sum_c target_c log q_c.
fn cross_entropy(target: &[f64], log_q: &[f64]) -> f64 {
    -target.iter().zip(log_q).map(|(t, l)| t * l).sum::<f64>()
}

/// Label-smoothing CE of one row (f64 in, f64 out; also the function the gradient check differentiates).
pub fn label_smoothing_ce_row(z: &[f64], y: usize, eps: f64) -> f64 {
    cross_entropy(&smoothed_target(z.len(), y, eps), &log_softmax(z))
}

/// Soft CE of one row against teacher logits `t`.
pub fn soft_ce_row(z: &[f64], t: &[f64]) -> f64 {
    let p_teacher: Vec<f64> = log_softmax(t).iter().map(|l| l.exp()).collect();
    cross_entropy(&p_teacher, &log_softmax(z))
}

/// AlphaNet's adaptive alpha-divergence distillation loss (`AdaptiveLossSoft` in `loss_ops.py`; defaults
/// alpha in [-1, 1], importance-weight clip 5). Per row, with student q = softmax(z), teacher
/// p = softmax(T), importance weight w = p / q, and for each alpha of {alpha_min, alpha_max}:
///
/// - |alpha| < 1e-3: f = -log w~ with w~ = min(w, clip) (KL(q || p)); rho = log w~ - 1;
/// - |alpha - 1| < 1e-3: f = w log w, unclipped (KL(p || q)); rho = w, so q_c rho_c = p_c;
/// - otherwise: f - f_base = (w~a - 1) / (a (a - 1)) with w~a = min(w^a, clip); rho = w~a / a + 1 / (a (a - 1)).
///
/// The alpha whose divergence is larger is used (alpha_min only when its D is strictly larger, as the
/// original's `torch.gt`); the row loss is the original's surrogate -sum_c q_c rho_c log q_c with q and
/// rho held constant, so the gradient is dz_j = q_j (sum_c q_c rho_c - rho_j) (divided by n for the batch
/// mean). Without clipping this is exactly the gradient of the chosen divergence; with it, the clipped
/// weights bound the gradient (the reason for the clip). The teacher gets no gradient. Everything is
/// computed from the log-softmaxes (log w = log p - log q), which equals the original's
/// `p_prob / q_prob` wherever that is finite and stays finite where a probability underflows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlphaDivergence {
    pub alpha_min: f32,
    pub alpha_max: f32,
    pub iw_clip: f32,
}

impl Default for AlphaDivergence {
    /// AlphaNet's `configs/train_alphanet_models.yml`: alpha_min -1, alpha_max 1, iw_clip 5.
    fn default() -> Self {
        AlphaDivergence { alpha_min: -1.0, alpha_max: 1.0, iw_clip: 5.0 }
    }
}

/// The three cases of the table above (the original's thresholds: |alpha| < 1e-3, |alpha - 1| < 1e-3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AlphaCase {
    ReverseKl,
    ForwardKl,
    General(f64),
}

impl AlphaCase {
    pub fn of(alpha: f64) -> AlphaCase {
        if alpha.abs() < 1e-3 {
            AlphaCase::ReverseKl
        } else if (alpha - 1.0).abs() < 1e-3 {
            AlphaCase::ForwardKl
        } else {
            AlphaCase::General(alpha)
        }
    }
}

/// One alpha's divergence D = sum_c q_c (f_c - f_base) and weights a_c = q_c rho_c of a row, from the
/// student's and teacher's log-softmax.
pub fn alpha_terms(alpha: f64, clip: f64, log_q: &[f64], log_p: &[f64]) -> (f64, Vec<f64>) {
    let (mut div, mut weights) = (0.0, Vec::with_capacity(log_q.len()));
    for (&lq, &lp) in log_q.iter().zip(log_p) {
        let (q, log_w) = (lq.exp(), lp - lq);
        let (d, a) = match AlphaCase::of(alpha) {
            AlphaCase::ReverseKl => {
                let lw = log_w.min(clip.ln());
                (-q * lw, q * (lw - 1.0))
            }
            AlphaCase::ForwardKl => {
                let p = lp.exp();
                (p * log_w, p)
            }
            AlphaCase::General(a) => {
                let iw = (a * log_w).exp().min(clip);
                let base = 1.0 / (a * (a - 1.0));
                (q * (iw - 1.0) * base, q * (iw / a + base))
            }
        };
        div += d;
        weights.push(a);
    }
    (div, weights)
}

/// The chosen alpha's weights a_c = q_c rho_c of one row (see [`AlphaDivergence`]) and its divergence.
pub fn alpha_divergence_weights(z: &[f64], t: &[f64], cfg: &AlphaDivergence) -> (Vec<f64>, f64) {
    let (log_q, log_p) = (log_softmax(z), log_softmax(t));
    let clip = cfg.iw_clip as f64;
    let (d_min, a_min) = alpha_terms(cfg.alpha_min as f64, clip, &log_q, &log_p);
    let (d_max, a_max) = alpha_terms(cfg.alpha_max as f64, clip, &log_q, &log_p);
    if d_min > d_max {
        (a_min, d_min)
    } else {
        (a_max, d_max)
    }
}

/// The surrogate row loss -sum_c a_c log q_c for fixed weights `a` (the function whose gradient is used).
pub fn weighted_ce_row(z: &[f64], a: &[f64]) -> f64 {
    cross_entropy(a, &log_softmax(z))
}

/// row_loss[i] = the alpha-divergence surrogate of row i of `logits` against row i of `teacher`.
pub fn alpha_divergence_fwd(k: usize, cfg: &AlphaDivergence, logits: &[f32], teacher: &[f32], row_loss: &mut [f32]) {
    for ((z, t), out) in logits.chunks_exact(k).zip(teacher.chunks_exact(k)).zip(row_loss.iter_mut()) {
        let (z, t) = (widen(z), widen(t));
        let (a, _) = alpha_divergence_weights(&z, &t, cfg);
        *out = weighted_ce_row(&z, &a) as f32;
    }
}

/// dz_j = (q_j sum_c a_c - a_j) / n: the gradient of the batch-mean surrogate (none to the teacher).
pub fn alpha_divergence_bwd(k: usize, cfg: &AlphaDivergence, logits: &[f32], teacher: &[f32], dlogits: &mut [f32]) {
    let n = (logits.len() / k.max(1)) as f64;
    for ((z, t), dz) in logits.chunks_exact(k).zip(teacher.chunks_exact(k)).zip(dlogits.chunks_exact_mut(k)) {
        let z = widen(z);
        let (a, _) = alpha_divergence_weights(&z, &widen(t), cfg);
        let sum: f64 = a.iter().sum();
        for ((g, lq), a) in dz.iter_mut().zip(log_softmax(&z)).zip(&a) {
            *g = ((lq.exp() * sum - a) / n) as f32;
        }
    }
}

fn widen(row: &[f32]) -> Vec<f64> {
    row.iter().map(|&v| v as f64).collect()
}

/// row_loss[i] = label-smoothing CE of row i (NaN for an invalid label).
pub fn label_smoothing_ce_fwd(k: usize, eps: f32, logits: &[f32], labels: &[f32], row_loss: &mut [f32]) {
    for ((z, &label), out) in logits.chunks_exact(k).zip(labels).zip(row_loss.iter_mut()) {
        *out = match label_index(label, k) {
            Some(y) => label_smoothing_ce_row(&widen(z), y, eps as f64) as f32,
            None => f32::NAN,
        };
    }
}

/// dlogits = (softmax(z) - target) / n, the gradient of the batch-mean label-smoothing CE.
pub fn label_smoothing_ce_bwd(k: usize, eps: f32, logits: &[f32], labels: &[f32], dlogits: &mut [f32]) {
    let n = labels.len() as f64;
    for ((z, &label), dz) in logits.chunks_exact(k).zip(labels).zip(dlogits.chunks_exact_mut(k)) {
        let Some(y) = label_index(label, k) else {
            dz.fill(f32::NAN);
            continue;
        };
        let target = smoothed_target(k, y, eps as f64);
        for ((g, l), t) in dz.iter_mut().zip(log_softmax(&widen(z))).zip(target) {
            *g = ((l.exp() - t) / n) as f32;
        }
    }
}

/// row_loss[i] = soft CE of row i of `logits` against row i of `teacher`.
pub fn soft_ce_fwd(k: usize, logits: &[f32], teacher: &[f32], row_loss: &mut [f32]) {
    for ((z, t), out) in logits.chunks_exact(k).zip(teacher.chunks_exact(k)).zip(row_loss.iter_mut()) {
        *out = soft_ce_row(&widen(z), &widen(t)) as f32;
    }
}

/// dlogits = (softmax(z) - softmax(T)) / n, the gradient of the batch-mean soft CE (none to T).
pub fn soft_ce_bwd(k: usize, logits: &[f32], teacher: &[f32], dlogits: &mut [f32]) {
    let n = (logits.len() / k.max(1)) as f64;
    for ((z, t), dz) in logits.chunks_exact(k).zip(teacher.chunks_exact(k)).zip(dlogits.chunks_exact_mut(k)) {
        for ((g, lz), lt) in dz.iter_mut().zip(log_softmax(&widen(z))).zip(log_softmax(&widen(t))) {
            *g = ((lz.exp() - lt.exp()) / n) as f32;
        }
    }
}

/// row_rank[i] = rank of the true class in row i (0 = top-1); NaN for an invalid label.
pub fn topk_rank(k: usize, logits: &[f32], labels: &[f32], row_rank: &mut [f32]) {
    for ((z, &label), out) in logits.chunks_exact(k).zip(labels).zip(row_rank.iter_mut()) {
        *out = match label_index(label, k) {
            Some(y) => z.iter().enumerate().filter(|&(c, &v)| v > z[y] || (v == z[y] && c < y)).count() as f32,
            None => f32::NAN,
        };
    }
}

/// [rows with rank < 1, rows with rank < 5]; NaN counts if any rank is NaN (an invalid label upstream).
pub fn topk_count(row_rank: &[f32]) -> [f32; 2] {
    if row_rank.iter().any(|r| r.is_nan()) {
        return [f32::NAN; 2];
    }
    let count = |limit: f32| row_rank.iter().filter(|&&r| r < limit).count() as f32;
    [count(1.0), count(5.0)]
}

/// Mean of `values`, accumulated in f64 (NaN for an empty slice, like a 0/0 mean).
pub fn batch_mean(values: &[f32]) -> f32 {
    (values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rows(n: usize, k: usize, seed: u64) -> Vec<f64> {
        crate::testing::random_vec(seed, n * k, -4.0, 4.0).into_iter().map(f64::from).collect()
    }

    /// Central finite differences of the f64 row losses against the analytic gradients (times n, since
    /// the backward is of the batch mean). Step 1e-5 in f64: truncation O(h^2) ~ 1e-10 and round-off
    /// ~ 1e-16 / 1e-5, so a 1e-7 absolute tolerance leaves room while the f32 output rounding
    /// (~1e-8 on values below 1) stays inside it.
    #[test]
    fn gradients_match_finite_differences() {
        let (n, k, eps, h) = (3usize, 13usize, 0.1f32, 1e-5f64);
        let z = sample_rows(n, k, 7);
        let t = sample_rows(n, k, 8);
        let labels = [0.0f32, 12.0, 5.0];
        let (z32, t32): (Vec<f32>, Vec<f32>) =
            (z.iter().map(|&v| v as f32).collect(), t.iter().map(|&v| v as f32).collect());
        let z = widen(&z32); // differentiate at the exact f32 point the analytic side sees
        let t = widen(&t32);
        let mut d_ls = vec![0.0f32; n * k];
        label_smoothing_ce_bwd(k, eps, &z32, &labels, &mut d_ls);
        let mut d_soft = vec![0.0f32; n * k];
        soft_ce_bwd(k, &z32, &t32, &mut d_soft);
        for i in 0..n {
            let y = labels[i] as usize;
            let row = &z[i * k..][..k];
            let teach = &t[i * k..][..k];
            for c in 0..k {
                let (mut plus, mut minus) = (row.to_vec(), row.to_vec());
                plus[c] += h;
                minus[c] -= h;
                let fd_ls = (label_smoothing_ce_row(&plus, y, eps as f64)
                    - label_smoothing_ce_row(&minus, y, eps as f64))
                    / (2.0 * h);
                let fd_soft = (soft_ce_row(&plus, teach) - soft_ce_row(&minus, teach)) / (2.0 * h);
                let an_ls = d_ls[i * k + c] as f64 * n as f64;
                let an_soft = d_soft[i * k + c] as f64 * n as f64;
                assert!((fd_ls - an_ls).abs() < 1e-7, "ls row {i} class {c}: fd {fd_ls} analytic {an_ls}");
                assert!((fd_soft - an_soft).abs() < 1e-7, "soft row {i} class {c}: fd {fd_soft} analytic {an_soft}");
            }
        }
    }

    /// Closed forms: uniform logits give log k for either loss; a teacher equal to the student gives
    /// the student's entropy; eps = 0 is plain CE = lse(z) - z_y.
    #[test]
    fn known_values() {
        let k = 10;
        let mut out = [0.0f32; 1];
        label_smoothing_ce_fwd(k, 0.1, &[0.5; 10], &[3.0], &mut out);
        assert!((out[0] as f64 - (k as f64).ln()).abs() < 1e-6);
        let z = [1.0f64, 2.0, 3.0];
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((label_smoothing_ce_row(&z, 1, 0.0) - (lse - 2.0)).abs() < 1e-12);
        let entropy: f64 = log_softmax(&z).iter().map(|l| -l.exp() * l).sum();
        assert!((soft_ce_row(&z, &z) - entropy).abs() < 1e-12);
    }

    /// Max subtraction: logits near 1e4 (exp would overflow f64 at 710) give the same loss as the
    /// same logits shifted to near 0 (softmax is shift invariant).
    #[test]
    fn stable_for_large_logits() {
        let z: Vec<f32> = vec![0.25, -1.5, 3.0, 0.0];
        let shifted: Vec<f32> = z.iter().map(|v| v + 10_000.0).collect();
        let (mut a, mut b) = ([0.0f32; 1], [0.0f32; 1]);
        label_smoothing_ce_fwd(4, 0.1, &z, &[2.0], &mut a);
        label_smoothing_ce_fwd(4, 0.1, &shifted, &[2.0], &mut b);
        assert!(a[0].is_finite() && (a[0] - b[0]).abs() < 1e-6, "{a:?} vs {b:?}");
    }

    /// A 2-class row by hand: q = (1/2, 1/2), p = (3/4, 1/4), so w = (3/2, 1/2). alpha = -1: w^-1 = (2/3, 2),
    /// D = sum q (w^-1 - 1) / 2 = 1/6 > KL(p || q) = 0.1308 (alpha = 1), so alpha = -1 is chosen; rho = 1/2 - w^-1,
    /// a = q rho = (-1/12, -3/4), surrogate = -sum a log q = -(5/6) ln 2, dz = q sum(a) - a = (-1/3, 1/3). With
    /// clip 1.5 the left divergence drops to 1/24 and alpha = 1 is chosen: dz = q - p = (-1/4, 1/4).
    #[test]
    fn alpha_divergence_known_values() {
        let (z, t) = ([0.0f32, 0.0], [3f32.ln(), 0.0]);
        let (mut loss, mut grad) = ([0.0f32; 1], [0.0f32; 2]);
        let cfg = AlphaDivergence::default();
        alpha_divergence_fwd(2, &cfg, &z, &t, &mut loss);
        alpha_divergence_bwd(2, &cfg, &z, &t, &mut grad);
        assert!((loss[0] as f64 + 5.0 / 6.0 * 2f64.ln()).abs() < 1e-6, "{loss:?}");
        assert!((grad[0] + 1.0 / 3.0).abs() < 1e-6 && (grad[1] - 1.0 / 3.0).abs() < 1e-6, "{grad:?}");
        let (_, d) = alpha_divergence_weights(&widen(&z), &widen(&t), &cfg);
        assert!((d - 1.0 / 6.0).abs() < 1e-6, "{d}"); // t holds ln 3 rounded to f32
        let clipped = AlphaDivergence { iw_clip: 1.5, ..cfg };
        alpha_divergence_bwd(2, &clipped, &z, &t, &mut grad);
        assert!((grad[0] + 0.25).abs() < 1e-6 && (grad[1] - 0.25).abs() < 1e-6, "{grad:?}");
    }

    /// alpha_min = alpha_max = 1 is plain in-place KD: the surrogate is the soft CE and the gradient q - p.
    #[test]
    fn alpha_divergence_at_alpha_one_is_soft_ce() {
        let (n, k) = (3, 11);
        let z: Vec<f32> = sample_rows(n, k, 3).iter().map(|&v| v as f32).collect();
        let t: Vec<f32> = sample_rows(n, k, 4).iter().map(|&v| v as f32).collect();
        let cfg = AlphaDivergence { alpha_min: 1.0, alpha_max: 1.0, iw_clip: 5.0 };
        let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
        alpha_divergence_fwd(k, &cfg, &z, &t, &mut a);
        soft_ce_fwd(k, &z, &t, &mut b);
        crate::testing::assert_close("surrogate vs soft CE", &a, &b, 1e-6, 1e-6);
        let (mut ga, mut gb) = (vec![0.0f32; n * k], vec![0.0f32; n * k]);
        alpha_divergence_bwd(k, &cfg, &z, &t, &mut ga);
        soft_ce_bwd(k, &z, &t, &mut gb);
        crate::testing::assert_close("gradient vs soft CE", &ga, &gb, 1e-7, 1e-6);
    }

    /// Finite differences (step 1e-5 in f64, tolerance 1e-7 as above), per alpha pair:
    /// - always: the analytic gradient against the difference quotient of the surrogate -sum a log q(z)
    ///   with the weights a fixed at z (the function the original differentiates), teachers near and far
    ///   (far ones make the clip active);
    /// - with a teacher near the student (importance weights within the clip): against the difference
    ///   quotient of the chosen divergence itself, which is then the true gradient. Each pair must choose
    ///   alpha_min on some rows and alpha_max on others, so both branches are checked.
    #[test]
    fn alpha_divergence_gradients_match_finite_differences() {
        let (n, k, h) = (8usize, 7usize, 1e-5f64);
        for (alpha_min, alpha_max) in [(-1.0f32, 1.0f32), (0.0, 1.0), (-0.5, 0.5), (-1.0, 2.0)] {
            let cfg = AlphaDivergence { alpha_min, alpha_max, iw_clip: 5.0 };
            let z32: Vec<f32> = sample_rows(n, k, 11).iter().map(|&v| v as f32).collect();
            let noise = sample_rows(n, k, 12);
            for (spread, near) in [(0.05f64, true), (2.0, false)] {
                let t32: Vec<f32> = z32.iter().zip(&noise).map(|(&z, &e)| (z as f64 + spread * e) as f32).collect();
                let mut g = vec![0.0f32; n * k];
                alpha_divergence_bwd(k, &cfg, &z32, &t32, &mut g);
                let mut chose_min = 0;
                for i in 0..n {
                    let z = widen(&z32[i * k..][..k]);
                    let t = widen(&t32[i * k..][..k]);
                    let (a, d) = alpha_divergence_weights(&z, &t, &cfg);
                    let (log_q, log_p) = (log_softmax(&z), log_softmax(&t));
                    chose_min += (alpha_terms(alpha_min as f64, 5.0, &log_q, &log_p).0 == d) as usize;
                    for c in 0..k {
                        let (mut plus, mut minus) = (z.clone(), z.clone());
                        plus[c] += h;
                        minus[c] -= h;
                        let an = g[i * k + c] as f64 * n as f64;
                        let fd = (weighted_ce_row(&plus, &a) - weighted_ce_row(&minus, &a)) / (2.0 * h);
                        assert!((fd - an).abs() < 1e-7, "{cfg:?} surrogate row {i} class {c}: fd {fd} analytic {an}");
                        if near {
                            let div = |x: &[f64]| alpha_divergence_weights(x, &t, &cfg).1;
                            let fd = (div(&plus) - div(&minus)) / (2.0 * h);
                            assert!(
                                (fd - an).abs() < 1e-7,
                                "{cfg:?} divergence row {i} class {c}: fd {fd} analytic {an}"
                            );
                        }
                    }
                }
                if near {
                    assert!(chose_min > 0 && chose_min < n, "{cfg:?}: alpha_min chosen on {chose_min} of {n} rows");
                }
            }
        }
    }

    #[test]
    fn ranks_ties_and_counts() {
        // row 0: true class 2 is the max -> rank 0; row 1: class 0 ties with class 3 and wins the tie
        // (lower index), but classes 1 and 2 are higher -> rank 2; row 2: label 1 ties with class 0 -> rank 1
        let logits = [0.0f32, 1.0, 5.0, 2.0, 1.0, 3.0, 4.0, 1.0, 7.0, 7.0, 0.0, 0.0];
        let mut rank = [0.0f32; 3];
        topk_rank(4, &logits, &[2.0, 0.0, 1.0], &mut rank);
        assert_eq!(rank, [0.0, 2.0, 1.0]);
        assert_eq!(topk_count(&rank), [1.0, 3.0]);
        topk_rank(4, &logits, &[2.0, 4.0, 1.5], &mut rank);
        assert!(rank[1].is_nan() && rank[2].is_nan());
        assert!(topk_count(&rank)[0].is_nan());
    }

    #[test]
    fn label_index_accepts_only_classes() {
        assert_eq!(label_index(0.0, 3), Some(0));
        assert_eq!(label_index(2.0, 3), Some(2));
        for bad in [3.0, -1.0, 0.5, f32::NAN, f32::INFINITY] {
            assert_eq!(label_index(bad, 3), None, "{bad}");
        }
    }
}
