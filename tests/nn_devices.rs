//! The supernet on every CUDA target (`on_cuda_targets!`: the SIMT emulator with `--features emu`, and a
//! GPU when present) against the CPU backend: the same weights (loaded with `load_named`), inputs and
//! options give the same logits and parameter gradients, for four small archs of the tiny space (n = 2,
//! r = 24; one from a 28-pixel input, one with dropout and drop-connect; and one at r = 26 of
//! `tiny_odd_space`, whose stride-2 blocks see odd sizes 13 and 7: the padded 2x2 pool); and BN calibration
//! (`ForwardOptions::calibrate(k)` over two batches) gives the same running statistics and then the same
//! eval-mode logits.
//!
//! Tolerances (|got - want| <= abs + rel |want|), set for a real GPU's arithmetic, not the emulator's
//! (which runs the kernels as host C++ with libm and the CPU's own GEMM, and agrees with the CPU to ~1e-7):
//! - per op, a GPU differs from the CPU reference by (a) cuBLAS sgemm's summation order (a dot product
//!   of K <= 240 terms here, blocked / split differently: ~sqrt(K) u ~ 1e-6 of sum |a b|, u = 6e-8);
//!   (b) nvcc's FMA contraction (default `-fmad=true`; the build uses no fast-math): a b + c rounded
//!   once instead of twice, <= u per operation, only in another place; (c) `__expf` in the sigmoid of
//!   swish (CUDA guide: <= 2 + 1.17 |x| ulp, < 1e-6 relative for the |x| < 10 seen here) and `rsqrtf` in BN
//!   (<= 2 ulp); (d) the order of warp / block reductions. TF32 is off (cuBLAS default math; the GEMM
//!   config's `allow_tf32` is false). About 1e-6 relative per layer;
//! - ~12 layers (stem, 4-7 blocks of expand / depthwise / SE / project, head) compound that additively
//!   (batch-statistics BN rescales but does not amplify unless a channel's variance is tiny): ~1e-5 of
//!   the activations' scale at the logits, ~1e-5 of each gradient tensor's scale after the backward.
//!
//! So:
//! - logits: abs 1e-4 x max |logit| + rel 1e-4 (10x the GPU estimate; an error is relative to the scale
//!   of the logits, not to each one, as logits cross zero). A wrong op moves logits by 1e-3 or more of
//!   their scale (an off-by-one border in one depthwise layer: ~1e-3; a wrong slice: ~1e-1).
//! - gradients, per tensor: abs 1e-4 x max|want in the tensor| + 1e-6 x max|want in any tensor| + rel
//!   1e-3. The backward sums over every pixel of the batch (up to 2 * 12 * 12 per BN channel and
//!   grad-weight element) in a different order on each side, and BN's backward subtracts two such sums,
//!   so small elements carry the absolute error of the tensor's large ones. The global term is for
//!   tensors whose exact gradient is 0 and whose computed one is rounding noise: the project-BN betas of
//!   blocks without drop-connect (every path from a block's output to the loss passes a
//!   batch-statistics BN, which cancels a per-channel shift); it is 1e-6 rather than the emulator's
//!   observed 1e-8 because that noise grows with the GPU's per-op error.
//! - running statistics after calibration: abs 1e-5 + rel 1e-4 (batch means and variances, f64 on the
//!   CPU, f32 partial sums on the device: ~1e-6).
//!
//! Each comparison prints how much of its tolerance it used on each target (`tolerance_used`), so the
//! first GPU run's log states the real margins; tighten or justify these from it (docs/gpu-runs.md).
//!
//! Elements of the gradient outside the active slices are exactly 0 on both sides (`nn_backward`
//! checks the CPU; here the comparison with abs > 0 would hide a stray write, so they are compared for
//! exact equality).

mod nn_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::SupernetOps;
use attnas::nn::{ForwardOptions, NamedTensor, Supernet};
use attnas::space::Arch;
use attnas::testing::{assert_close, random_vec, tolerance_used};
use nn_common::{active_box, arch, in_box, input, named_grads, run, tiny_net_in, tiny_odd_space};

const N: usize = 2;

fn archs() -> Vec<(Arch, usize, ForwardOptions)> {
    let reg = ForwardOptions { dropout: 0.3, drop_connect: 0.8, seed: 9, ..ForwardOptions::train() };
    vec![
        (arch(24, [8, 8, 16, 24, 32, 64], [1, 1, 1, 1], [3, 3, 3, 3], [1, 2, 2, 3]), 24, ForwardOptions::train()),
        (arch(24, [16, 8, 24, 32, 40, 96], [1, 2, 1, 2], [3, 5, 3, 5], [1, 3, 2, 4]), 28, ForwardOptions::train()),
        (arch(24, [16, 16, 24, 32, 32, 96], [1, 2, 2, 2], [3, 3, 5, 5], [1, 2, 3, 4]), 24, reg),
        (arch(26, [8, 16, 16, 32, 32, 64], [1, 2, 1, 1], [3, 5, 3, 5], [1, 3, 2, 4]), 26, ForwardOptions::train()),
    ]
}

fn maxabs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn stats(named: &[NamedTensor]) -> Vec<f32> {
    named.iter().filter(|t| t.name.contains("running_")).flat_map(|t| t.data.iter().copied()).collect()
}

fn compare_on<B: SupernetOps>(dev: &B, target: &str) {
    let space = tiny_odd_space();
    let cpu = CpuBackend::new();
    let (net_c, named) = tiny_net_in(&cpu, 41, space.clone());
    let net_d = Supernet::new(dev, space.clone(), 1).unwrap();
    net_d.load_named(dev, &named, "cpu weights").unwrap();
    for (a, side, opt) in archs() {
        let what = format!("{target}, {a:?} side {side}");
        let x = input(12, N, side);
        let r = random_vec(13, N * space.num_classes, -1.0, 1.0);
        net_c.zero_grads(&cpu).unwrap();
        net_d.zero_grads(dev).unwrap();
        let want = run(&cpu, &net_c, &a, &x, N, side, opt, Some(&r));
        let got = run(dev, &net_d, &a, &x, N, side, opt, Some(&r));
        let logit_abs = 1e-4 * maxabs(&want);
        assert_close(&format!("{what}: logits"), &got, &want, logit_abs, 1e-4);
        let (gc, gd) = (named_grads(&cpu, &net_c), named_grads(dev, &net_d));
        let global = gc.iter().map(|t| maxabs(&t.data)).fold(0f32, f32::max);
        let mut used = 0f32;
        for (c, d) in gc.iter().zip(&gd) {
            let abs = 1e-4 * maxabs(&c.data) + 1e-6 * global;
            assert_close(&format!("{what}: grad {}", c.name), &d.data, &c.data, abs, 1e-3);
            used = used.max(tolerance_used(&d.data, &c.data, abs, 1e-3));
            let bx = active_box(&space, &a, &c.name, &c.shape);
            for (i, (&u, &v)) in c.data.iter().zip(&d.data).enumerate() {
                assert!(in_box(&c.shape, &bx, i) || (u == 0.0 && v == 0.0), "{what}: {}[{i}] inactive", c.name);
            }
        }
        let logits_used = tolerance_used(&got, &want, logit_abs, 1e-4);
        println!("{what}: tolerance used: logits {:.1}%, gradients {:.1}%", 100.0 * logits_used, 100.0 * used);
    }

    // BN calibration over two batches at r = 24 from 28-pixel inputs, then evaluation
    let a = archs()[1].0.clone();
    net_c.reset_running_stats(&cpu).unwrap();
    net_d.reset_running_stats(dev).unwrap();
    for (k, seed) in [(1u32, 20u64), (2, 21)] {
        let x = input(seed, N, 28);
        let want = run(&cpu, &net_c, &a, &x, N, 28, ForwardOptions::calibrate(k), None);
        let got = run(dev, &net_d, &a, &x, N, 28, ForwardOptions::calibrate(k), None);
        assert_close(&format!("{target}: logits in calibration batch {k}"), &got, &want, 1e-4 * maxabs(&want), 1e-4);
    }
    let (sc, sd) = (stats(&net_c.to_named(&cpu, false).unwrap()), stats(&net_d.to_named(dev, false).unwrap()));
    assert!(sc.iter().filter(|&&v| v != 0.0 && v != 1.0).count() > sc.len() / 4, "calibration changed little");
    assert_close(&format!("{target}: running statistics after calibration"), &sd, &sc, 1e-5, 1e-4);
    println!("{target}: tolerance used: running statistics {:.1}%", 100.0 * tolerance_used(&sd, &sc, 1e-5, 1e-4));
    let x = input(22, N, 28);
    let want = run(&cpu, &net_c, &a, &x, N, 28, ForwardOptions::eval(), None);
    let got = run(dev, &net_d, &a, &x, N, 28, ForwardOptions::eval(), None);
    assert_close(&format!("{target}: eval logits after calibration"), &got, &want, 1e-4 * maxabs(&want), 1e-4);
}

#[test]
fn cuda_targets_match_the_cpu_backend() {
    attnas::on_cuda_targets!("nn_devices", |b| {
        let name = attnas::backend::Backend::name(&b);
        compare_on(&b, &name);
    });
}
