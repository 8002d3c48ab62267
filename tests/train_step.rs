//! The training step on every backend: the sandwich step (max on labels, attentive BestUp-2 middle
//! subnet, min distilled) over several steps gives the same losses, the same choices and the same
//! parameters on the emulated CUDA backend (and a GPU when present) as on the CPU reference, with either
//! distillation loss (`kd.loss`: KL, AlphaNet's alpha-divergence).
//!
//! Tolerances, set for a real GPU's arithmetic (see `nn_devices.rs`: cuBLAS summation order, FMA
//! contraction, `__expf`, ~1e-5 of the scale at the logits after ~12 layers; the emulator agrees to
//! ~1e-7):
//! - losses and candidate scores: rel 1e-4. A loss is an average of log-softmax terms, so a logit error
//!   of 1e-5 of the logits' scale moves it by about as much; 1e-4 is 10x that, while a wrong op or a
//!   wrong gradient changes the losses in the second or third digit;
//! - parameters after the steps: abs 1e-4 + rel 1e-3. Two SGD updates move a parameter by lr (1 + mu)
//!   |clip(g)| <= 0.1 each; a gradient error of 1e-4 of its scale moves it by ~1e-5 at most;
//! - **choices**: BestUp compares candidate scores, and two backends may rank candidates whose scores
//!   are within the loss tolerance either way. The choice must agree unless the CPU's scores of the two
//!   choices are within rel 1e-4 of each other; when such a near tie flips, everything after it
//!   legitimately differs, so the comparison stops there (one `note:` line) instead of failing.
//!
use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::loss::AlphaDivergence;
use attnas::backend::{Arena, Backend, SupernetOps};
use attnas::nn::{activation_arena_len, Supernet};
use attnas::space::attentive::{AttentiveSampler, Prior, Selection};
use attnas::space::table::{generate, TableMethod};
use attnas::space::Space;
use attnas::testing::{assert_close, random_vec, tolerance_used};
use attnas::train::step::{
    CandidateScorer, Distillation, MiddleSampling, StepBuffers, StepOutcome, StepSettings, StepState,
};
use rand::SeedableRng;

const N: usize = 4;
const SIDE: usize = 28;
const STEPS: u64 = 2;

fn settings() -> StepSettings {
    StepSettings {
        label_smoothing: 0.1,
        dropout: 0.2,
        drop_connect: 0.2,
        drop_connect_only_last_two_stages: false,
        kd: Distillation::Kl,
        num_arch_training: 3,
        sampling: MiddleSampling::Attentive(Selection::BestUp),
        num_trials: 2,
        scorer: CandidateScorer::Loss,
        momentum: 0.9,
        clip: 1.0,
        seed: 7,
    }
}

/// Runs STEPS steps on `b`; returns the outcomes and the final parameters.
fn run<B: SupernetOps>(b: &B) -> (Vec<StepOutcome>, Vec<f32>) {
    run_with(b, settings())
}

fn run_with<B: SupernetOps>(b: &B, s: StepSettings) -> (Vec<StepOutcome>, Vec<f32>) {
    let space = Space::builtin("tiny").unwrap();
    let net = Supernet::new(b, space.clone(), 3).unwrap();
    let mut arena =
        Arena::new(b, "act", activation_arena_len(&space, N, SIDE, true, attnas::backend::Dtype::F32).unwrap())
            .unwrap();
    let bufs = StepBuffers::new(b, N, SIDE, space.num_classes).unwrap();
    let groups = net.param_groups(1e-5, &[".bn".into(), ".bias".into()]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let table = generate(&space, 500, TableMethod::Uniform, 0.05, &mut rng);
    let mut sampler = AttentiveSampler::new(&space, &table, 0.05, Prior::Empirical).unwrap();
    let mut outs = Vec::new();
    for step in 0..STEPS {
        let images = random_vec(100 + step, N * SIDE * SIDE * 3, -2.0, 2.0);
        let labels: Vec<u32> = (0..N as u32).map(|i| (i * 3 + step as u32) % 10).collect();
        bufs.upload(b, &images, &labels).unwrap();
        let mut st =
            StepState { b, net: &net, arena: &mut arena, bufs: &bufs, groups: &groups, sampler: Some(&mut sampler) };
        outs.push(st.run(step, 0.05, &s).unwrap());
    }
    (outs, b.download(net.params_arena()).unwrap())
}

/// Relative tolerance of losses and scores (see the header).
const LOSS_REL: f64 = 1e-4;

fn within(got: f64, want: f64) -> bool {
    (got - want).abs() <= LOSS_REL * want.abs().max(1e-12)
}

/// Compares a CUDA target's steps with the CPU's (see the header for the near-tie rule).
fn compare(name: &str, got: &[StepOutcome], want: &[StepOutcome], got_params: &[f32], want_params: &[f32]) {
    let mut diverged = false;
    'steps: for (step, (g, w)) in got.iter().zip(want).enumerate() {
        for (gs, ws) in g.subnets.iter().zip(&w.subnets) {
            // the draws depend only on (seed, step): the same candidates, scored alike
            assert_eq!(gs.candidates.len(), ws.candidates.len());
            for (gc, wc) in gs.candidates.iter().zip(&ws.candidates) {
                assert_eq!(gc.arch, wc.arch, "step {step}: same candidates drawn");
                assert!(within(gc.score, wc.score), "step {step}: score {} vs cpu {}", gc.score, wc.score);
            }
            if gs.chosen != ws.chosen {
                let (a, c) = (ws.chosen.unwrap_or(0), gs.chosen.unwrap_or(0));
                let (sa, sc) = (ws.candidates[a].score, ws.candidates[c].score);
                assert!(within(sc, sa), "step {step}: chose candidate {c} (cpu score {sc}) over {a} ({sa})");
                println!(
                    "note: {name}: step {step}: a near tie ({sa} vs {sc}) ranked the other way; not compared further"
                );
                diverged = true;
                break 'steps;
            }
            assert_eq!(gs.arch, ws.arch, "same subnet trained");
            assert!(within(gs.loss, ws.loss), "{:?} loss {} vs cpu {}", gs.role, gs.loss, ws.loss);
        }
    }
    if !diverged {
        assert_close("parameters after the steps", got_params, want_params, 1e-4, 1e-3);
        let used = tolerance_used(got_params, want_params, 1e-4, 1e-3);
        println!("{name}: tolerance used: parameters {:.1}%", 100.0 * used);
    }
}

/// `kd.loss = alpha_divergence` (AlphaNet's defaults): the distilled subnets train on the alpha-divergence
/// surrogate, the same on every target; the max subnet's first loss (labels) is the KL run's, the distilled
/// losses are not (so the setting reaches the step).
#[test]
fn alpha_divergence_kd_matches_the_cpu_and_changes_the_distilled_losses() {
    let s = StepSettings { kd: Distillation::AlphaDivergence(AlphaDivergence::default()), ..settings() };
    let (want, want_params) = run_with(&CpuBackend::new(), s.clone());
    let (kl, _) = run(&CpuBackend::new());
    assert_eq!(want[0].subnets[0].loss.to_bits(), kl[0].subnets[0].loss.to_bits());
    for (a, k) in want[0].subnets.iter().zip(&kl[0].subnets).skip(1) {
        assert!((a.loss - k.loss).abs() > 1e-3, "{:?}: alpha-divergence {} vs KL {}", a.role, a.loss, k.loss);
    }
    attnas::on_cuda_targets!("train_step alpha_divergence", |b| {
        let (got, got_params) = run_with(&b, s.clone());
        compare(&format!("train_step alpha {}", b.name()), &got, &want, &got_params, &want_params);
    });
}

#[test]
fn cuda_targets_match_the_cpu_over_several_steps() {
    let (want, want_params) = run(&CpuBackend::new());
    assert_eq!(want.len() as u64, STEPS);
    attnas::on_cuda_targets!("train_step", |b| {
        let (got, got_params) = run(&b);
        compare(&format!("train_step {}", b.name()), &got, &want, &got_params, &want_params);
    });
}

#[test]
fn steps_change_the_parameters_and_repeat_exactly_on_the_cpu() {
    let (a, pa) = run(&CpuBackend::new());
    let (b, pb) = run(&CpuBackend::new());
    assert_eq!(pa, pb, "same seed, same parameters, bit for bit");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x.subnets.iter().map(|s| s.loss.to_bits()).collect::<Vec<_>>(),
            y.subnets.iter().map(|s| s.loss.to_bits()).collect::<Vec<_>>()
        );
    }
    let fresh = {
        let b = CpuBackend::new();
        let net = Supernet::new(&b, Space::builtin("tiny").unwrap(), 3).unwrap();
        b.download(net.params_arena()).unwrap()
    };
    let changed = pa.iter().zip(&fresh).filter(|(x, y)| x != y).count();
    assert!(changed > pa.len() / 4, "an SGD step moves most parameters ({changed} of {})", pa.len());
    // The middle subnet was the better-scored of its two candidates (BestUp).
    for o in &a {
        let mid = &o.subnets[1];
        let best = if mid.candidates[0].score >= mid.candidates[1].score { 0 } else { 1 };
        assert_eq!(mid.chosen, Some(best));
    }
}
