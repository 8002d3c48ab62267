//! Losses and metrics (`LossOps`): every CUDA target (SIMT emulator, GPU when present) against the f64
//! CPU reference on random logits, plus the batch semantics the reference alone cannot show (mean of the
//! rows, determinism, invalid labels, values derived by hand at non-uniform logits). The gradient checks
//! by finite differences are unit tests of the reference (`backend::cpu::loss`).

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::loss::{AlphaDivergence, LossOps, LossShape};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

/// Everything the five ops produce for one input.
#[derive(Debug, PartialEq)]
struct Outputs {
    ls_rows: Vec<f32>,
    ls_loss: Vec<f32>,
    ls_grad: Vec<f32>,
    soft_rows: Vec<f32>,
    soft_loss: Vec<f32>,
    soft_grad: Vec<f32>,
    ranks: Vec<f32>,
    counts: Vec<f32>,
}

fn run<B: LossOps>(b: &B, s: &LossShape, eps: f32, logits: &[f32], labels: &[f32], teacher: &[f32]) -> Outputs {
    let (z, y, t) = (upload_new(b, logits).unwrap(), upload_new(b, labels).unwrap(), upload_new(b, teacher).unwrap());
    let (z, y, t) = (z.tensor(), y.tensor(), t.tensor());
    let alloc = |len: usize| b.alloc(len).unwrap();
    let (rows, batch, grad, ranks, counts) = (alloc(s.n), alloc(1), alloc(s.logits_len()), alloc(s.n), alloc(2));
    let get = |m: &B::Memory| b.download(m.tensor()).unwrap();
    b.label_smoothing_ce_fwd(s, eps, z, y, rows.tensor(), batch.tensor()).unwrap();
    b.label_smoothing_ce_bwd(s, eps, z, y, grad.tensor()).unwrap();
    let (ls_rows, ls_loss, ls_grad) = (get(&rows), get(&batch), get(&grad));
    b.soft_ce_fwd(s, z, t, rows.tensor(), batch.tensor()).unwrap();
    b.soft_ce_bwd(s, z, t, grad.tensor()).unwrap();
    let (soft_rows, soft_loss, soft_grad) = (get(&rows), get(&batch), get(&grad));
    b.topk_correct(s, z, y, ranks.tensor(), counts.tensor()).unwrap();
    Outputs { ls_rows, ls_loss, ls_grad, soft_rows, soft_loss, soft_grad, ranks: get(&ranks), counts: get(&counts) }
}

/// Random logits in [-6, 6) plus `offset`, teacher logits in [-4, 4), labels spread over the classes
/// (first and last class included).
fn inputs(s: &LossShape, seed: u64, offset: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let logits: Vec<f32> = random_vec(seed, s.logits_len(), -6.0, 6.0).iter().map(|v| v + offset).collect();
    let teacher = random_vec(seed + 1, s.logits_len(), -4.0, 4.0);
    let labels = (0..s.n).map(|i| ((i * 7919 + (i % 2) * (s.classes - 1)) % s.classes) as f32).collect();
    (logits, labels, teacher)
}

/// Kernel vs f64 reference. Losses: abs 1e-5 + rel 1e-5 (f32 expf/logf within 2 ulp and f32 sums of at
/// most 1000 bounded terms give errors near 1e-6 on losses of ~1-7). Gradients: abs 2e-6 / n + rel 1e-5
/// (softmax p within a few ulp relative, so the absolute error of (p - target) / n is below 1e-6 / n even
/// where the difference cancels). Ranks and counts are integers: exact.
fn compare(what: &str, s: &LossShape, got: &Outputs, want: &Outputs) {
    let grad_abs = 2e-6 / s.n as f32;
    assert_close(&format!("{what} label-smoothing rows"), &got.ls_rows, &want.ls_rows, 1e-5, 1e-5);
    assert_close(&format!("{what} label-smoothing mean"), &got.ls_loss, &want.ls_loss, 1e-5, 1e-5);
    assert_close(&format!("{what} label-smoothing dlogits"), &got.ls_grad, &want.ls_grad, grad_abs, 1e-5);
    assert_close(&format!("{what} soft CE rows"), &got.soft_rows, &want.soft_rows, 1e-5, 1e-5);
    assert_close(&format!("{what} soft CE mean"), &got.soft_loss, &want.soft_loss, 1e-5, 1e-5);
    assert_close(&format!("{what} soft CE dlogits"), &got.soft_grad, &want.soft_grad, grad_abs, 1e-5);
    assert_eq!(got.ranks, want.ranks, "{what} ranks");
    assert_eq!(got.counts, want.counts, "{what} counts");
}

/// (n, classes): k = 1000 (ImageNet, 4 per thread), k = 10, k not a multiple of 32 below and above one
/// 256-thread block, k = 1 (a single class: loss 0), batch sizes not multiples of anything. Kept small:
/// the emulator runs every thread of a block as a host thread through each barrier.
const SHAPES: &[(usize, usize)] = &[(3, 1000), (4, 10), (5, 37), (2, 300), (2, 1), (3, 33)];

#[test]
fn kernels_match_reference() {
    attnas::on_cuda_targets!("loss kernels_match_reference", |b| {
        for (i, &(n, classes)) in SHAPES.iter().enumerate() {
            let s = LossShape { n, classes };
            // offset 1000: exp(z) overflows f32 without the max subtraction; eps 0 and 1 are the ends of
            // the smoothing range (plain CE, uniform target)
            let variants: &[(f32, f32)] =
                if classes == 300 { &[(0.0, 0.1), (1000.0, 0.0), (-50.0, 1.0)] } else { &[(0.0, 0.1)] };
            for &(offset, eps) in variants {
                let (logits, labels, teacher) = inputs(&s, 10 + i as u64, offset);
                let want = run(&CpuBackend::new(), &s, eps, &logits, &labels, &teacher);
                let got = run(&b, &s, eps, &logits, &labels, &teacher);
                assert!(got.ls_rows.iter().chain(&got.soft_rows).all(|v| v.is_finite()), "{s:?} offset {offset}");
                compare(&format!("{} {s:?} offset {offset} eps {eps}", b.name()), &s, &got, &want);
            }
        }
    });
}

/// Logits on a coarse grid (multiples of 0.5 in [-2, 2], 9 values over 40 classes) so ties with the
/// true class are frequent: the tie rule (lower class index ranks first) must agree exactly between
/// kernel and reference. Labels: rows 0 mod 4 take the first class holding the row maximum (rank 0),
/// rows 2 mod 4 the last one (rank = the number of tied maxima before it), odd rows a spread of classes.
#[test]
fn topk_ties_match_reference() {
    attnas::on_cuda_targets!("loss topk_ties_match_reference", |b| {
        let s = LossShape { n: 12, classes: 40 };
        let logits: Vec<f32> =
            random_vec(3, s.logits_len(), -2.0, 2.0).iter().map(|v| (v * 2.0).round() / 2.0).collect();
        let labels: Vec<f32> = (0..s.n)
            .map(|i| {
                let row = &logits[i * s.classes..][..s.classes];
                let max = row.iter().copied().fold(f32::MIN, f32::max);
                let first_max = row.iter().position(|&v| v == max).unwrap_or(0);
                let last_max = row.iter().rposition(|&v| v == max).unwrap_or(0);
                (match i % 4 {
                    0 => first_max,
                    2 => last_max,
                    _ => (i * 13) % s.classes,
                }) as f32
            })
            .collect();
        let want = run(&CpuBackend::new(), &s, 0.1, &logits, &labels, &logits);
        let got = run(&b, &s, 0.1, &logits, &labels, &logits);
        assert_eq!(got.ranks, want.ranks, "{}", b.name());
        assert_eq!(got.counts, want.counts, "{}", b.name());
        let (top1, top5) = (want.counts[0], want.counts[1]);
        assert!(top1 > 0.0 && top5 > top1 && top5 < s.n as f32, "the test should hit both counts: {top1} {top5}");
    });
}

/// Row losses, batch loss and gradient of the alpha-divergence KD loss.
fn run_alpha<B: LossOps>(
    b: &B,
    s: &LossShape,
    cfg: &AlphaDivergence,
    logits: &[f32],
    teacher: &[f32],
) -> [Vec<f32>; 3] {
    let (z, t) = (upload_new(b, logits).unwrap(), upload_new(b, teacher).unwrap());
    let (rows, batch, grad) = (b.alloc(s.n).unwrap(), b.alloc(1).unwrap(), b.alloc(s.logits_len()).unwrap());
    b.alpha_divergence_fwd(s, cfg, z.tensor(), t.tensor(), rows.tensor(), batch.tensor()).unwrap();
    b.alpha_divergence_bwd(s, cfg, z.tensor(), t.tensor(), grad.tensor()).unwrap();
    [&rows, &batch, &grad].map(|m| b.download(m.tensor()).unwrap())
}

/// The alpha-divergence kernels against the f64 reference: AlphaNet's defaults (alpha -1 / 1, clip 5), the
/// reverse-KL end (alpha 0), two general alphas, a tight clip (1.5, active on most classes); teachers far
/// from the student (random) and near it (student + 0.1 noise: both alphas compete), every shape of
/// `SHAPES` (k = 1000 with every setting, the others with one each, in turn; k = 1, k not a multiple of
/// 32), an offset that overflows exp without the max shift.
/// Tolerances: rows and mean abs 1e-5 + rel 1e-4; gradients abs 1e-5 / n + rel 1e-4. The kernel works in f32
/// on weights q rho up to clip / |alpha| (5 here) where the reference uses f64, so its error is a few ulp
/// of 5 on sums over at most 1000 classes; the rows choose alpha by comparing the two divergences, whose
/// gap in these inputs is far above that error (a wrong branch moves gradients by ~1e-2 / n).
#[test]
fn alpha_divergence_kernels_match_reference() {
    attnas::on_cuda_targets!("loss alpha_divergence_kernels_match_reference", |b| {
        let configs = [
            AlphaDivergence::default(),
            AlphaDivergence { alpha_min: 0.0, alpha_max: 1.0, iw_clip: 5.0 },
            AlphaDivergence { alpha_min: -0.5, alpha_max: 2.0, iw_clip: 5.0 },
            AlphaDivergence { alpha_min: -1.0, alpha_max: 1.0, iw_clip: 1.5 },
        ];
        for (i, &(n, classes)) in SHAPES.iter().enumerate() {
            let s = LossShape { n, classes };
            for (j, cfg) in configs.iter().enumerate() {
                // every setting at k = 1000 (ImageNet); elsewhere one setting per shape, in turn, so each
                // setting also meets a shape off the 4-per-thread path (each launch is a block of host
                // threads on the emulator: the full cross product was two thirds of this file's time)
                if classes != 1000 && j != i % configs.len() {
                    continue;
                }
                // offset 1000 with the far teacher only: near teachers make the two divergences differ by
                // ~1e-4 of their size, below what f32 log-softmax at |z| ~ 1000 resolves, and the alpha
                // chosen at such a tie may differ (both gradients are then nearly equal)
                let offset = if classes == 300 { 1000.0 } else { 0.0 };
                let (logits, _, far) = inputs(&s, 40 + i as u64, offset);
                let (base, _, _) = inputs(&s, 40 + i as u64, 0.0);
                let near: Vec<f32> = base
                    .iter()
                    .zip(random_vec(j as u64, s.logits_len(), -1.0, 1.0))
                    .map(|(z, e)| z + 0.1 * e)
                    .collect();
                for (which, logits, teacher) in [("far", &logits, far), ("near", &base, near)] {
                    let what = format!("{} {s:?} {cfg:?} {which} teacher", b.name());
                    let want = run_alpha(&CpuBackend::new(), &s, cfg, logits, &teacher);
                    let got = run_alpha(&b, &s, cfg, logits, &teacher);
                    assert!(want[0].iter().all(|v| v.is_finite()), "{what}: {:?}", want[0]);
                    assert_close(&format!("{what}: rows"), &got[0], &want[0], 1e-5, 1e-4);
                    assert_close(&format!("{what}: mean"), &got[1], &want[1], 1e-5, 1e-4);
                    assert_close(&format!("{what}: dlogits"), &got[2], &want[2], 1e-5 / n as f32, 1e-4);
                }
            }
        }
    });
}

/// Bad alpha settings are errors naming the key, on every backend (checked before any launch).
#[test]
fn alpha_divergence_rejects_bad_settings() {
    let b = CpuBackend::new();
    let s = LossShape { n: 1, classes: 3 };
    let (z, out) = (upload_new(&b, &[0.0; 3]).unwrap(), b.alloc(3).unwrap());
    let zero_clip = AlphaDivergence { iw_clip: 0.0, ..AlphaDivergence::default() };
    let e = b.alpha_divergence_bwd(&s, &zero_clip, z.tensor(), z.tensor(), out.tensor()).unwrap_err().to_string();
    assert!(e.contains("iw_clip"), "{e}");
    let bad = AlphaDivergence { alpha_min: f32::NAN, ..AlphaDivergence::default() };
    let e = b.alpha_divergence_bwd(&s, &bad, z.tensor(), z.tensor(), out.tensor()).unwrap_err().to_string();
    assert!(e.contains("alpha_min"), "{e}");
}

/// Same inputs, same bits: the per-row losses and their batch reduction have a fixed order.
#[test]
fn kernels_are_deterministic() {
    attnas::on_cuda_targets!("loss kernels_are_deterministic", |b| {
        let s = LossShape { n: 3, classes: 1000 };
        let (logits, labels, teacher) = inputs(&s, 77, 0.0);
        let first = run(&b, &s, 0.1, &logits, &labels, &teacher);
        let second = run(&b, &s, 0.1, &logits, &labels, &teacher);
        assert_eq!(first, second, "{}", b.name());
    });
}

/// A kernel cannot return an error: an invalid label makes that row (and the counts) NaN, the other rows
/// stay exact.
#[test]
fn kernels_mark_invalid_labels_nan() {
    attnas::on_cuda_targets!("loss kernels_mark_invalid_labels_nan", |b| {
        let s = LossShape { n: 3, classes: 10 };
        let (logits, mut labels, teacher) = inputs(&s, 4, 0.0);
        let want = run(&CpuBackend::new(), &s, 0.1, &logits, &labels, &teacher);
        labels[1] = 10.0;
        let got = run(&b, &s, 0.1, &logits, &labels, &teacher);
        assert!(got.ls_rows[1].is_nan() && got.ls_loss[0].is_nan() && got.ranks[1].is_nan(), "{got:?}");
        assert!(got.ls_grad[10..20].iter().all(|v| v.is_nan()), "{:?}", &got.ls_grad[10..20]);
        assert!(got.counts.iter().all(|v| v.is_nan()), "{:?}", got.counts);
        assert_close("valid rows", &[got.ls_rows[0], got.ls_rows[2]], &[want.ls_rows[0], want.ls_rows[2]], 1e-5, 1e-5);
    });
}

/// The CPU backend rejects an invalid label with an error naming the row and value.
#[test]
fn cpu_rejects_invalid_labels_and_shapes() {
    let b = CpuBackend::new();
    let s = LossShape { n: 2, classes: 5 };
    let z = upload_new(&b, &[0.0; 10]).unwrap();
    let y = upload_new(&b, &[1.0, 2.5]).unwrap();
    let (rows, out, grad) = (b.alloc(2).unwrap(), b.alloc(1).unwrap(), b.alloc(10).unwrap());
    let err = b.label_smoothing_ce_fwd(&s, 0.1, z.tensor(), y.tensor(), rows.tensor(), out.tensor()).unwrap_err();
    assert!(err.to_string().contains("labels[1]") && err.to_string().contains("2.5"), "{err}");
    let short = b.alloc(9).unwrap();
    let err = b.soft_ce_bwd(&s, z.tensor(), short.tensor(), grad.tensor()).unwrap_err();
    assert!(err.to_string().contains("teacher"), "{err}");
    let err = b.label_smoothing_ce_bwd(&s, 1.5, z.tensor(), y.tensor(), grad.tensor()).unwrap_err();
    assert!(err.to_string().contains("eps"), "{err}");
}

/// The batch loss is the mean of the row losses, and uniform logits give log k for both losses (an
/// anchor independent of the reference's own arithmetic).
#[test]
fn batch_loss_is_row_mean_and_uniform_is_log_k() {
    let b = CpuBackend::new();
    let s = LossShape { n: 6, classes: 1000 };
    let (logits, labels, teacher) = inputs(&s, 21, 0.0);
    let out = run(&b, &s, 0.1, &logits, &labels, &teacher);
    let mean = out.ls_rows.iter().map(|&v| v as f64).sum::<f64>() / s.n as f64;
    assert!((out.ls_loss[0] as f64 - mean).abs() < 1e-6, "{} vs {mean}", out.ls_loss[0]);
    let flat = vec![0.3f32; s.logits_len()];
    let out = run(&b, &s, 0.1, &flat, &labels, &teacher);
    let log_k = (1000f32).ln();
    assert!(out.ls_rows.iter().all(|v| (v - log_k).abs() < 1e-5), "{:?}", out.ls_rows);
    assert!(out.soft_rows.iter().all(|v| (v - log_k).abs() < 1e-5), "{:?}", out.soft_rows);
}

/// Both losses pinned by values derived by hand at non-uniform logits, where the spec's eps / k and the
/// common variant eps / (k - 1) differ (uniform logits cannot tell them apart). z = ln [1, 2, 3, 4] + c
/// has softmax p = [0.1, 0.2, 0.3, 0.4] for any shift c (c = 0 in row 0, c = -7 in row 1). eps = 0.2,
/// k = 4: the target is eps / k = 0.05 on every class plus 1 - eps = 0.8 on the label.
/// - row 0, label 3, target [0.05, 0.05, 0.05, 0.85]: loss = 0.05 ln(1 / (0.1 * 0.2 * 0.3)) + 0.85 ln(1 / 0.4)
///   = 0.05 * 5.1159958 + 0.85 * 0.9162907 = 1.0346469 (eps / (k - 1) would give 1.0740990);
/// - row 1, label 0, target [0.85, 0.05, 0.05, 0.05]: loss = 0.85 ln 10 + 0.05 ln(1 / (0.2 * 0.3 * 0.4))
///   = 0.85 * 2.3025851 + 0.05 * 3.7297014 = 2.1436824;
/// - batch loss: the mean, 1.5891647; dlogits = (p - target) / n = [0.025, 0.075, 0.125, -0.225] and
///   [-0.375, 0.075, 0.125, 0.175].
///
/// Soft CE against teacher logits ln [4, 3, 2, 1] (softmax q = [0.4, 0.3, 0.2, 0.1]) in both rows:
/// loss = 0.4 ln 10 + 0.3 ln 5 + 0.2 ln(10 / 3) + 0.1 ln 2.5 = 1.7362890 per row and for the batch;
/// dlogits = (p - q) / n = [-0.15, -0.05, 0.05, 0.15] per row.
///
/// Tolerance 1e-6 absolute: the inputs are the f32 roundings of the logarithms (relative 6e-8).
#[test]
fn losses_match_values_derived_by_hand() {
    let ln = |v: f64| v.ln() as f32;
    let s = LossShape { n: 2, classes: 4 };
    let logits: Vec<f32> =
        [1.0, 2.0, 3.0, 4.0].iter().map(|&v| ln(v)).chain([1.0, 2.0, 3.0, 4.0].iter().map(|&v| ln(v) - 7.0)).collect();
    let labels = [3.0f32, 0.0];
    let teacher: Vec<f32> = [4.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0, 1.0].iter().map(|&v| ln(v)).collect();
    let check = |b: &str, out: &Outputs| {
        assert_close(&format!("{b}: label-smoothed CE rows"), &out.ls_rows, &[1.034_646_9, 2.143_682_4], 1e-6, 0.0);
        assert_close(&format!("{b}: label-smoothed CE batch"), &out.ls_loss, &[1.589_164_7], 1e-6, 0.0);
        let want = [0.025, 0.075, 0.125, -0.225, -0.375, 0.075, 0.125, 0.175];
        assert_close(&format!("{b}: label-smoothed CE dlogits"), &out.ls_grad, &want, 1e-6, 0.0);
        assert_close(&format!("{b}: soft CE rows"), &out.soft_rows, &[1.736_289, 1.736_289], 1e-6, 0.0);
        assert_close(&format!("{b}: soft CE batch"), &out.soft_loss, &[1.736_289], 1e-6, 0.0);
        let want = [-0.15, -0.05, 0.05, 0.15, -0.15, -0.05, 0.05, 0.15];
        assert_close(&format!("{b}: soft CE dlogits"), &out.soft_grad, &want, 1e-6, 0.0);
    };
    check("cpu", &run(&CpuBackend::new(), &s, 0.2, &logits, &labels, &teacher));
    attnas::on_cuda_targets!("loss losses_match_values_derived_by_hand", |b| {
        check(&b.name(), &run(&b, &s, 0.2, &logits, &labels, &teacher));
    });
}
