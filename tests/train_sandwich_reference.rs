//! The trainer's sandwich step (`StepState::run`) against an independent computation of the same step,
//! written from the spec (3.1-3.4, 4.3) on the reference forward of `nn_common::reference` (built from the
//! single-op CPU references, weights read by PyTorch name) and the losses of `step_common` (f64, from
//! their definitions). One step of the recipe's shape (max, two BestUp-3 subnets, min) on the tiny
//! supernet with random non-zero BN gammas and random momentum, checked for:
//! - **roles and regularisers**: the max subnet's loss is the label-smoothed CE of its forward *with*
//!   dropout and drop-connect (the reference reports that both dropped something); every other subnet's
//!   loss is the soft CE of its forward *without* them against the max subnet's logits from that
//!   dropout-active forward, taken as constants (detached);
//! - **attentive choice**: each candidate's score is minus its label-smoothed CE on the batch, and the
//!   trained subnet is the best-scored one (scores checked to be apart);
//! - **the summed gradient** before clipping (what the gradient arena holds after the step): the sum over
//!   the four subnets of each one's vector-Jacobian product with the reference loss gradient. The
//!   per-subnet product comes from a second supernet's forward + backward (the backward is checked
//!   against finite differences by `nn_backward`); independently of any backward code, directional
//!   derivatives of the reference's own summed loss (detached teacher) by central differences match
//!   the trainer's gradient along random directions;
//! - **the update**: element-wise clip of the summed gradient, coupled weight decay on every tensor
//!   whose name has no `.bn` / `.bias`, SGD with Nesterov momentum (PyTorch's form), compared as the
//!   change of every parameter and the new momentum; BN running statistics untouched (momentum 0).
//!
//! The mask seeds (`layer_seed(layer_seed(seed, step), 0)` for the max subnet's forward) are the one
//! implementation choice taken from the trainer: the spec leaves the RNG open.
//!
//! Tolerances: every forward here runs the same f32 ops on the CPU in the same order as the trainer's,
//! except 1x1 convs (f64 sums here, blocked f32 GEMM there) and the losses (f64 here), so logits agree
//! to ~1e-7 relative. Losses and scores: rel 1e-5. Gradients: per tensor abs 1e-5 x the tensor's max +
//! 1e-7 x the largest gradient + rel 1e-4 (observed ~1e-7; the global term covers tensors whose exact
//! gradient is 0 and whose computed one is rounding noise, such as project-BN betas of blocks without
//! drop-connect, whose shift the next batch-statistics BN cancels). Momentum: the gradient's abs tolerance
//! (it enters v unscaled where it is not clipped) + 1e-6 x the tensor's largest value, rel 1e-4.
//! Parameter changes: the stored new parameter is an f32 rounding, so abs 2^-23 x the tensor's largest
//! |p| (~4e-8 at |p| ~ 0.3) + lr (1 + mu) x the gradient's abs tolerance + 1e-5 x the largest change,
//! rel 1e-4. A weight-decay group mistake alone moves a change by lr wd |p| ~ 1e-4, 100x these or more. Directional
//! derivatives: see `directional_derivatives_match`. A planted rule change moves these by 1e-2 or more.
//! Runs in about a second.

mod nn_common;
mod step_common;

use attnas::nn::tape::layer_seed;
use attnas::nn::{BnMode, ForwardOptions, NamedTensor};
use attnas::space::attentive::Selection;
use attnas::space::Arch;
use attnas::testing::{assert_close, random_vec};
use attnas::train::step::{Role, StepOutcome, StepSettings};
use nn_common::reference::reference_forward;
use step_common::{label_smoothed_ce, settings, soft_ce, tensor, Fixture, N, NO_DECAY, SIDE, WEIGHT_DECAY};

const STEP: u64 = 3;
const LR: f32 = 0.05;
/// Small enough that a good part of the summed gradient is clipped (checked below).
const CLIP: f32 = 0.01;

/// One subnet of the reference step.
struct RefSubnet {
    role: Role,
    arch: Arch,
    options: ForwardOptions,
    logits: Vec<f32>,
    loss: f64,
    dlogits: Vec<f64>,
}

/// The forward of `arch` without regularisation, batch-statistics BN (sampled and min subnets, scoring).
fn plain() -> ForwardOptions {
    ForwardOptions {
        bn: BnMode::Train,
        dropout: 0.0,
        drop_connect: 0.0,
        drop_connect_only_last_two_stages: true,
        seed: 0,
    }
}

/// The reference step's subnets, losses and loss gradients from weights `w0`, taking the archs the
/// trainer's sampler drew (its candidates) and checking its choices and scores on the way.
fn reference_subnets(fx: &Fixture, w0: &[NamedTensor], s: &StepSettings, out: &StepOutcome) -> Vec<RefSubnet> {
    let (space, k) = (&fx.space, fx.space.num_classes);
    let eps = s.label_smoothing as f64;
    let fwd = |arch: &Arch, opt: &ForwardOptions| reference_forward(space, arch, w0, &fx.images, N, SIDE, opt);
    // (1) max subnet: label-smoothed CE on its dropout + drop-connect forward (spec 3.2, 3.4)
    let max_opt = ForwardOptions {
        dropout: s.dropout,
        drop_connect: s.drop_connect,
        drop_connect_only_last_two_stages: s.drop_connect_only_last_two_stages,
        seed: layer_seed(layer_seed(s.seed, STEP), 0),
        ..plain()
    };
    let max = space.max_arch();
    let r = fwd(&max, &max_opt);
    assert!(r.dropout_zeros > 0, "dropout should zero some features of the max subnet");
    assert!(r.drop_connect.iter().any(|&(_, _, dropped)| dropped > 0), "drop-connect should drop a sample");
    let teacher = r.logits.clone(); // constants from here on: the teacher is detached
    let (loss, dlogits) = label_smoothed_ce(&teacher, &fx.labels, k, eps);
    let mut subnets =
        vec![RefSubnet { role: Role::Max, arch: max, options: max_opt, logits: teacher.clone(), loss, dlogits }];

    // (2) sampled subnets: BestUp over scored candidates, then soft CE against the teacher
    assert_eq!(out.subnets.len(), s.num_arch_training);
    for (j, sub) in out.subnets[1..s.num_arch_training - 1].iter().enumerate() {
        assert_eq!(sub.role, Role::Sampled, "subnet {}", j + 1);
        assert_eq!(sub.candidates.len(), s.num_trials);
        let logits: Vec<Vec<f32>> = sub.candidates.iter().map(|c| fwd(&c.arch, &plain()).logits).collect();
        let scores: Vec<f64> = logits.iter().map(|z| -label_smoothed_ce(z, &fx.labels, k, eps).0).collect();
        for (c, want) in sub.candidates.iter().zip(&scores) {
            assert!(
                (c.score - want).abs() <= 1e-5 * want.abs(),
                "subnet {}: score {} vs -CE_ls {want}",
                j + 1,
                c.score
            );
        }
        let best = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
        let gap = scores
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != best)
            .map(|(_, v)| scores[best] - v)
            .fold(f64::MAX, f64::min);
        assert!(gap > 1e-4, "subnet {}: candidates nearly tie ({scores:?}); the choice would prove nothing", j + 1);
        assert_eq!(sub.chosen, Some(best), "subnet {}: BestUp must train the best-scored candidate {scores:?}", j + 1);
        assert_eq!(sub.arch, sub.candidates[best].arch);
        let (loss, dlogits) = soft_ce(&logits[best], &teacher, k);
        let arch = sub.arch.clone();
        subnets.push(RefSubnet {
            role: Role::Sampled,
            arch,
            options: plain(),
            logits: logits[best].clone(),
            loss,
            dlogits,
        });
    }

    // (3) min subnet: soft CE against the teacher, no regularisation
    let min = space.min_arch();
    let z = fwd(&min, &plain()).logits;
    let (loss, dlogits) = soft_ce(&z, &teacher, k);
    subnets.push(RefSubnet { role: Role::Min, arch: min, options: plain(), logits: z, loss, dlogits });
    subnets
}

/// The summed gradient of the reference losses, by parameter name (f64), through a second supernet:
/// zero, forward (checked against the reference logits), backward with the reference dlogits, add.
fn summed_gradient(w0: &[NamedTensor], subnets: &[RefSubnet], images: &[f32]) -> Vec<(String, Vec<f64>)> {
    let b = attnas::backend::cpu::CpuBackend::new();
    let oracle = attnas::nn::Supernet::new(&b, attnas::space::Space::builtin("tiny").unwrap(), 0).unwrap();
    oracle.load_named(&b, w0, "step weights").unwrap();
    let mut sum: Vec<(String, Vec<f64>)> = Vec::new();
    for r in subnets {
        oracle.zero_grads(&b).unwrap();
        let d: Vec<f32> = r.dlogits.iter().map(|&v| v as f32).collect();
        let z = nn_common::run(&b, &oracle, &r.arch, images, N, SIDE, r.options, Some(&d));
        assert_close(&format!("{:?} logits: supernet vs reference forward", r.role), &z, &r.logits, 1e-5, 1e-4);
        for (i, g) in nn_common::named_grads(&b, &oracle).into_iter().enumerate() {
            if sum.len() <= i {
                sum.push((g.name.clone(), vec![0.0; g.data.len()]));
            }
            sum[i].1.iter_mut().zip(&g.data).for_each(|(acc, &v)| *acc += v as f64);
        }
    }
    sum
}

/// The summed reference loss at weights `w` (parameters only differ from the step's): the max subnet's
/// label-smoothed CE plus every other subnet's soft CE against the fixed teacher logits.
fn summed_loss(fx: &Fixture, w: &[NamedTensor], subnets: &[RefSubnet], eps: f64) -> f64 {
    let k = fx.space.num_classes;
    let teacher = &subnets[0].logits;
    subnets
        .iter()
        .map(|r| {
            let z = reference_forward(&fx.space, &r.arch, w, &fx.images, N, SIDE, &r.options).logits;
            if r.role == Role::Max {
                label_smoothed_ce(&z, &fx.labels, k, eps).0
            } else {
                soft_ce(&z, teacher, k).0
            }
        })
        .sum()
}

fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn the_trainer_step_matches_an_independent_sandwich_step() {
    let s = settings(Selection::BestUp, 4, 3, CLIP);
    let mut fx = Fixture::new(11);
    let w0 = fx.named();
    let out = fx.step(STEP, LR, &s);
    let (g_trainer, w1) = (fx.grads(), fx.named());
    let params: Vec<String> = fx.net.table.params.iter().map(|p| p.name.clone()).collect();

    // losses per role
    let subnets = reference_subnets(&fx, &w0, &s, &out);
    for (got, want) in out.subnets.iter().zip(&subnets) {
        assert_eq!((got.role, &got.arch), (want.role, &want.arch));
        assert!(
            (got.loss - want.loss).abs() <= 1e-5 * want.loss.abs(),
            "{:?} loss {} vs reference {}",
            got.role,
            got.loss,
            want.loss
        );
    }

    // the summed gradient before clipping
    let g_ref = summed_gradient(&w0, &subnets, &fx.images);
    assert_eq!(g_ref.len(), params.len());
    let global = max_abs(g_ref.iter().flat_map(|(_, g)| g.iter().copied()));
    for ((name, want), got) in g_ref.iter().zip(&g_trainer) {
        assert_eq!(name, &got.name);
        let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let abs = (1e-5 * max_abs(want.iter().copied()) + 1e-7 * global) as f32;
        assert_close(&format!("summed gradient {name}"), &got.data, &want32, abs, 1e-4);
    }

    // the update: clip, coupled weight decay by name, SGD-Nesterov (spec 3.1)
    let (mu, lr, c) = (s.momentum as f64, LR as f64, CLIP as f64);
    let (mut clipped, mut nonzero) = (0usize, 0usize);
    for (name, g) in &g_ref {
        // the gradient's own tolerance (above) carries into the momentum and, times lr (1 + mu), the change
        let g_tol = 1e-5 * max_abs(g.iter().copied()) + 1e-7 * global;
        let decays = !NO_DECAY.iter().any(|k| name.contains(k));
        let wd = if decays { WEIGHT_DECAY as f64 } else { 0.0 };
        let p0 = &tensor(&w0, name).data;
        let v0 = &tensor(&w0, &format!("optimizer.momentum.{name}")).data;
        let (mut dp, mut v1) = (Vec::new(), Vec::new());
        for ((&g, &p), &v) in g.iter().zip(p0).zip(v0) {
            nonzero += (g != 0.0) as usize;
            clipped += (g.abs() > c) as usize;
            let g = g.clamp(-c, c) + wd * p as f64;
            let v = mu * v as f64 + g;
            v1.push(v as f32);
            dp.push((-lr * (g + mu * v)) as f32);
        }
        let got_dp: Vec<f32> = tensor(&w1, name).data.iter().zip(p0).map(|(a, b)| a - b).collect();
        // the stored p1 is rounded to f32: one rounding of the tensor's largest |p| (2^-23), plus 1e-5 of the change
        let round = f32::EPSILON as f64 * max_abs(p0.iter().map(|&v| v as f64));
        let abs = (round + lr * (1.0 + mu) * g_tol + 1e-5 * max_abs(dp.iter().map(|&v| v as f64))) as f32;
        assert_close(&format!("parameter change {name}"), &got_dp, &dp, abs, 1e-4);
        let v_abs = (g_tol + 1e-6 * max_abs(v1.iter().map(|&v| v as f64))) as f32;
        let got_v = &tensor(&w1, &format!("optimizer.momentum.{name}")).data;
        assert_close(&format!("momentum {name}"), got_v, &v1, v_abs, 1e-4);
    }
    println!("clip {CLIP}: {clipped} of {nonzero} non-zero gradient elements clipped");
    assert!(
        clipped * 20 > nonzero && clipped * 20 < nonzero * 19,
        "clip {CLIP} should bind on some, not all: {clipped} of {nonzero}"
    );
    for t in w0.iter().filter(|t| t.name.contains("running_")) {
        assert_eq!(tensor(&w1, &t.name).data, t.data, "{}: BN running statistics must not change in training", t.name);
    }

    directional_derivatives_match(&fx, &w0, &subnets, &g_trainer, &params, s.label_smoothing as f64);
}

/// d/dh L(W + h v) at h = 0 by central differences of the reference's summed loss, against the trainer's
/// gradient . v, for random directions v over every parameter (|v_i| <= 1, ~1.2e5 of them, so the step
/// h v is large in norm). Measured on this fixture (direction 1, g.v = -3.128), |D - g.v| is 7e-2 at
/// h = 1e-3 and 2.5e-3 at 3e-4 (truncation, ~h^2), 1.6e-3 at 1e-4, 2.3e-3 at 3e-5 and 2.2e-2 at 1e-5 (the
/// f32 rounding of the losses, ~1/h). So h = 1e-4 and |D - g.v| <= 1e-3 + 2e-3 |g.v|, about 4x the
/// observed error (0.2 % of g.v): an independent check of the summed gradient that involves no
/// backward code. The element-wise comparison above is the sharp one.
fn directional_derivatives_match(
    fx: &Fixture,
    w0: &[NamedTensor],
    subnets: &[RefSubnet],
    g: &[NamedTensor],
    params: &[String],
    eps: f64,
) {
    let h = 1e-4;
    for seed in [1u64, 2] {
        let dirs: Vec<Vec<f32>> = params
            .iter()
            .enumerate()
            .map(|(i, p)| random_vec(seed * 977 + i as u64, tensor(w0, p).data.len(), -1.0, 1.0))
            .collect();
        let shifted = |sign: f64| -> Vec<NamedTensor> {
            let mut w = w0.to_vec();
            for (p, d) in params.iter().zip(&dirs) {
                let t = w.iter_mut().find(|t| &t.name == p).unwrap();
                t.data.iter_mut().zip(d).for_each(|(x, &v)| *x = (*x as f64 + sign * h * v as f64) as f32);
            }
            w
        };
        let fd =
            (summed_loss(fx, &shifted(1.0), subnets, eps) - summed_loss(fx, &shifted(-1.0), subnets, eps)) / (2.0 * h);
        let gv: f64 = params
            .iter()
            .zip(&dirs)
            .map(|(p, d)| tensor(g, p).data.iter().zip(d).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>())
            .sum();
        println!("direction {seed}: central difference {fd:.6}, trainer gradient . v {gv:.6}");
        assert!(gv.abs() > 0.1, "direction {seed}: g.v = {gv} too small to compare");
        assert!(
            (fd - gv).abs() <= 1e-3 + 2e-3 * gv.abs(),
            "direction {seed}: finite difference {fd} vs gradient . v {gv}"
        );
    }
}
