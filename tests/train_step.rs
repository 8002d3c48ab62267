//! The training step on every backend: the sandwich step (max on labels, attentive BestUp-2 middle
//! subnet, min distilled) over several steps gives the same losses, the same choices and the same
//! parameters on the emulated CUDA backend (and a GPU when present) as on the CPU reference, with either
//! distillation loss (`kd.loss`: KL, AlphaNet's alpha-divergence).
//!
//! Tolerance: 1e-4 relative on the losses and 1e-4 abs + 1e-3 rel on the parameters after the steps.
//! Both backends compute in f32 with different summation orders (cuBLAS/emulated GEMM tiling, two-stage
//! reductions vs f64 reference loops); per-op differences are ~1e-6 relative and compound over a few
//! layers, steps and SGD updates, staying far below these bounds, while a wrong op or a wrong gradient
//! changes the losses in the second or third digit.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::loss::AlphaDivergence;
use attnas::backend::{Arena, Backend, SupernetOps};
use attnas::nn::{activation_arena_len, Supernet};
use attnas::space::attentive::{AttentiveSampler, Prior, Selection};
use attnas::space::table::{generate, TableMethod};
use attnas::space::Space;
use attnas::testing::{assert_close, random_vec};
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
    let mut arena = Arena::new(b, "act", activation_arena_len(&space, N, SIDE, true).unwrap()).unwrap();
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

fn compare(got: &[StepOutcome], want: &[StepOutcome], got_params: &[f32], want_params: &[f32]) {
    for (g, w) in got.iter().zip(want) {
        for (gs, ws) in g.subnets.iter().zip(&w.subnets) {
            assert_eq!(gs.arch, ws.arch, "same subnet chosen");
            assert_eq!(gs.chosen, ws.chosen);
            let rel = (gs.loss - ws.loss).abs() / ws.loss.abs().max(1e-12);
            assert!(rel < 1e-4, "{:?} loss {} vs cpu {}", gs.role, gs.loss, ws.loss);
        }
    }
    assert_close("parameters after the steps", got_params, want_params, 1e-4, 1e-3);
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
        compare(&got, &want, &got_params, &want_params);
    });
}

#[test]
fn cuda_targets_match_the_cpu_over_several_steps() {
    let (want, want_params) = run(&CpuBackend::new());
    assert_eq!(want.len() as u64, STEPS);
    attnas::on_cuda_targets!("train_step", |b| {
        let (got, got_params) = run(&b);
        compare(&got, &want, &got_params, &want_params);
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
