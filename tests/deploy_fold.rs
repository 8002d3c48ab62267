//! The BN-folded inference forward (`attnas::deploy`) against the supernet's unfolded eval forward: the
//! same weights and running statistics (random, non-trivial: gammas of both signs, means and variances
//! away from 0 / 1), the same images, on the CPU backend and on every CUDA target (`on_cuda_targets!`: the
//! SIMT emulator, a GPU when present), for tiny-space archs covering every block kind (no expand conv,
//! kernels 3 and 5, stride-2 shortcuts with pool + conv and pool only, identity shortcuts, SE) and the
//! model's own input resize (28 -> 24 and 28 -> 32), and resolutions 26 and 20 whose stride-2 blocks see
//! odd sizes (13 -> 7 -> 4, 10 -> 5 -> 3: the padded 2x2 shortcut pool; the space is `tiny_odd_space`).
//!
//! Tolerance: |folded - unfolded| <= 1e-4 * max|unfolded logit| + 1e-4 * |unfolded|. Folding is exact
//! in real arithmetic but reorders float operations: the BN scale moves inside each conv's f32 sum (each
//! scaled weight rounded once, ~6e-8 relative), the mean is subtracted in the bias instead of from the
//! conv output, and the CPU's eval BN runs in f64 while the folded bias add is f32. Each layer then
//! differs by a few ulps of its outputs' scale, and ~10 layers carry that to the logits: observed worst
//! ~3e-7 of the logit scale. A real folding error (a wrong channel's scale, a missing bias, the wrong
//! epsilon) moves logits by 1e-2 or more.

mod nn_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::{upload_new, Arena, DeviceMemory, SupernetOps};
use attnas::deploy::fold::fold_bn;
use attnas::deploy::infer::{forward, infer_arena_len, InferPlan};
use attnas::deploy::model::FoldedModel;
use attnas::eval::static_subnet::extract;
use attnas::nn::{ForwardOptions, NamedTensor};
use attnas::space::{Arch, Space};
use attnas::testing::assert_close;
use nn_common::{arch, input, run, tiny_net_in, tiny_odd_space};

const N: usize = 2;

/// (arch, input side): every block kind, both resolutions, with and without the model's resize.
fn cases() -> Vec<(Arch, usize)> {
    vec![
        (arch(24, [16, 8, 24, 24, 40, 64], [1, 2, 1, 2], [3, 3, 5, 3], [1, 3, 2, 4]), 24),
        (arch(32, [8, 16, 16, 32, 32, 96], [1, 1, 2, 2], [3, 5, 3, 5], [1, 2, 3, 3]), 28),
        (arch(24, [16, 16, 24, 32, 40, 96], [1, 2, 2, 2], [3, 5, 5, 5], [1, 3, 3, 4]), 28),
        (arch(26, [16, 16, 24, 32, 40, 96], [1, 2, 2, 1], [3, 5, 5, 3], [1, 3, 3, 4]), 26),
        (arch(20, [8, 8, 16, 24, 32, 64], [1, 1, 1, 2], [3, 3, 3, 5], [1, 2, 2, 3]), 28),
    ]
}

fn folded_logits<B: SupernetOps>(
    b: &B,
    space: &Space,
    named: &[NamedTensor],
    a: &Arch,
    x: &[f32],
    side: usize,
) -> Vec<f32> {
    let tensors = fold_bn(space, a, &extract(space, a, named).unwrap()).unwrap();
    let model = FoldedModel::upload(b, space, a, &tensors).unwrap();
    let mut arena = Arena::new(b, "inference", infer_arena_len(space, N, side).unwrap()).unwrap();
    let xm = upload_new(b, x).unwrap();
    let plan = InferPlan::allocate(space, a, N, xm.tensor(), side, &mut arena).unwrap();
    forward(b, &plan, &model).unwrap();
    b.download(plan.head.logits).unwrap()
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    println!("{what}: max |folded - unfolded| = {worst:e} ({:e} of the logit scale {scale})", worst / scale);
    assert_close(what, got, want, 1e-4 * scale, 1e-4);
}

#[test]
fn folded_forward_matches_the_unfolded_eval_forward() {
    let space = tiny_odd_space();
    let cpu = CpuBackend::new();
    let (net, named) = tiny_net_in(&cpu, 77, space.clone());
    for (i, (a, side)) in cases().into_iter().enumerate() {
        let x = input(100 + i as u64, N, side);
        let want = run(&cpu, &net, &a, &x, N, side, ForwardOptions::eval(), None);
        let got = folded_logits(&cpu, &space, &named, &a, &x, side);
        check(&format!("cpu, case {i}"), &got, &want);
        attnas::on_cuda_targets!("folded_forward_matches_the_unfolded_eval_forward", |b| {
            let got = folded_logits(&b, &space, &named, &a, &x, side);
            check(&format!("{}, case {i}", attnas::backend::Backend::name(&b)), &got, &want);
        });
    }
}

/// A plan larger than the arena, or an arch the space does not allow, is an error, not a panic.
#[test]
fn inference_plan_errors_name_the_problem() {
    let space = Space::builtin("tiny").unwrap();
    let cpu = CpuBackend::new();
    let a = space.max_arch();
    let mut small = Arena::new(&cpu, "tiny arena", 1000).unwrap();
    let x = upload_new(&cpu, &input(1, 1, 32)).unwrap();
    let err = InferPlan::allocate(&space, &a, 1, x.tensor(), 32, &mut small).unwrap_err().to_string();
    assert!(err.contains("tiny arena") && err.contains("full"), "{err}");
    let bad = Arch { resolution: 30, ..a };
    let err = InferPlan::allocate(&space, &bad, 1, x.tensor(), 32, &mut small).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("resolution = 30"), "{err}");
}
