//! Attentive scoring (spec 4.3) with candidates that do not tie (the tiny supernet with random non-zero
//! BN gammas, `step_common::Fixture`):
//! - a candidate's score (`StepState::score`) is minus its label-smoothed CE on the current batch, from
//!   a batch-statistics forward without dropout or drop-connect, checked against the reference forward
//!   of `nn_common::reference` and the loss written out in `step_common`;
//! - in a training step, BestUp trains the candidate with the lowest loss and WorstUp the one with the
//!   highest, recomputed independently for every candidate of the draw (which the two rules share, as the
//!   draws depend only on the seed and the step), and the two pick different candidates;
//! - the selection rule itself on hand-made scores (ties to the first, NaN refused).
//!
//! Tolerance: scores rel 1e-5 (the reference forward and the trainer's run the same f32 ops on the CPU;
//! logits agree to ~1e-7, the losses are f64 on both sides). Runs in about a second.

mod nn_common;
mod step_common;

use attnas::nn::{BnMode, ForwardOptions, NamedTensor};
use attnas::space::attentive::{select, Selection};
use attnas::space::{sampler, Arch};
use nn_common::reference::reference_forward;
use rand::SeedableRng;
use step_common::{label_smoothed_ce, settings, Fixture, N, SIDE};

/// The reference loss of `arch` on the fixture's batch at weights `w`: label-smoothed CE of the
/// batch-statistics forward without regularisation.
fn reference_loss(fx: &Fixture, w: &[NamedTensor], arch: &Arch, eps: f64) -> f64 {
    let opt = ForwardOptions {
        bn: BnMode::Train,
        dropout: 0.0,
        drop_connect: 0.0,
        drop_connect_only_last_two_stages: true,
        seed: 0,
    };
    let z = reference_forward(&fx.space, arch, w, &fx.images, N, SIDE, &opt).logits;
    label_smoothed_ce(&z, &fx.labels, fx.space.num_classes, eps).0
}

#[test]
fn each_score_is_minus_the_label_smoothed_ce_of_its_candidate() {
    let mut fx = Fixture::new(21);
    let s = settings(Selection::BestUp, 3, 3, 1.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut archs = vec![fx.space.min_arch(), fx.space.max_arch()];
    archs.extend((0..4).map(|_| sampler::uniform(&fx.space, &mut rng)));
    let (w, mut scores) = (fx.named(), Vec::new());
    for a in &archs {
        let want = -reference_loss(&fx, &w, a, s.label_smoothing as f64);
        let got = fx.state().score(a, &s).unwrap();
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{a:?}: score {got} vs -CE_ls {want}");
        scores.push(got);
    }
    // the comparison is not vacuous: the candidates' losses differ
    let spread = scores.iter().cloned().fold(f64::MIN, f64::max) - scores.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 1e-2, "scores barely differ: {scores:?}");
}

#[test]
fn bestup_and_worstup_train_the_lowest_and_highest_loss_candidate() {
    let mut picked = Vec::new();
    for sel in [Selection::BestUp, Selection::WorstUp] {
        let s = settings(sel, 3, 4, 1.0);
        let mut fx = Fixture::new(31);
        let eps = s.label_smoothing as f64;
        let w_before = fx.named();
        let out = fx.step(2, 0.05, &s);
        let mid = &out.subnets[1];
        assert_eq!(mid.candidates.len(), 4);
        let losses: Vec<f64> = mid.candidates.iter().map(|c| reference_loss(&fx, &w_before, &c.arch, eps)).collect();
        for (c, l) in mid.candidates.iter().zip(&losses) {
            assert!((c.score + l).abs() <= 1e-5 * l, "{sel:?}: candidate score {} vs -CE_ls {}", c.score, -l);
        }
        let mut order: Vec<usize> = (0..losses.len()).collect();
        order.sort_by(|&a, &b| losses[a].total_cmp(&losses[b]));
        let want = if sel == Selection::BestUp { order[0] } else { order[order.len() - 1] };
        let runner_up = if sel == Selection::BestUp { order[1] } else { order[order.len() - 2] };
        assert!((losses[want] - losses[runner_up]).abs() > 1e-4, "{sel:?}: losses nearly tie {losses:?}");
        assert_eq!(mid.chosen, Some(want), "{sel:?}: losses {losses:?}");
        assert_eq!(mid.arch, mid.candidates[want].arch, "{sel:?}: the trained arch is the chosen candidate");
        picked.push((mid.candidates.iter().map(|c| c.arch.clone()).collect::<Vec<_>>(), want));
    }
    assert_eq!(picked[0].0, picked[1].0, "both rules see the same draw");
    assert_ne!(picked[0].1, picked[1].1, "BestUp and WorstUp pick different candidates");
}

#[test]
fn selection_rule_on_hand_made_scores() {
    let scores = [-2.5, -0.75, -1.0, -3.0];
    assert_eq!(select(Selection::BestUp, &scores).unwrap(), 1);
    assert_eq!(select(Selection::WorstUp, &scores).unwrap(), 3);
    assert_eq!(select(Selection::BestUp, &[-1.0, -1.0, -2.0]).unwrap(), 0, "ties go to the first");
    assert_eq!(select(Selection::WorstUp, &[-2.0, -1.0, -2.0]).unwrap(), 0, "ties go to the first");
    assert!(select(Selection::BestUp, &[-1.0, f64::NAN]).is_err());
    assert!(select(Selection::BestUp, &[]).is_err());
}
