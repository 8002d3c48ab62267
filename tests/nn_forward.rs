//! The supernet forward (`src/nn`) on the CPU backend against an independent assembly of the subnet
//! from the single-op CPU references (`nn_common::reference_forward`, written from spec 1.2-1.4 and 3.4,
//! reading the weights by PyTorch name and layout from `to_named`/`load_named`).
//!
//! Weights: the init's (random) conv/linear weights and biases, with every BN gamma (the project BN's
//! included, which init zeroes) drawn in +-[0.5, 1.5], betas in [-0.2, 0.2], running statistics random,
//! all loaded with `load_named`, so every residual branch, every stored-layout permutation and every
//! leading-slice rule contributes to the logits.
//!
//! Archs of the tiny space: min, max, explicit mixes (kernel 3 vs 5 per stage, so the centre crop of
//! the stored 5x5 matters; stride-2 blocks with and without channel change; identity blocks), random
//! uniform ones; both resolutions (24, 32); input sides equal to and different from the resolution
//! (28 -> bicubic resize down to 24 and up to 32); and resolutions 20, 26, 28 of a variant of the space
//! (`tiny_odd_space`), which put odd feature sizes before stride-2 blocks (the padded 2x2 shortcut pool).
//!
//! Tolerance on the logits: |got - want| <= 1e-5 + 1e-4 |want|. Both sides are f32 tensors between
//! layers; the backend's 1x1 convs are f32 GEMMs (blocked summation order) where the reference sums in
//! f64, and each of the ~25 layers rounds to f32. Per layer that is a relative error of a few 1e-7
//! (sums of <= 240 terms), which batch-statistics BN renormalises rather than amplifies; the observed
//! worst error is 1.2e-7 on logits of size 0.1-1, so the bound leaves two orders of magnitude of margin,
//! while a wrong slice, permutation, mask or missing layer changes the logits by >= 1e-2 (checked by
//! mutating the reference: a transposed depthwise tap or an off-by-one drop-connect rate fails).
//!
//! BN calibration (spec 5.1) is checked at the stem: after `calibrate(1)`, `calibrate(2)` on two batches
//! the running statistics are the mean of the two batch means and of the two unbiased batch variances
//! of the reference stem conv's output, and the inactive channels keep 0 / 1.

mod nn_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::Arena;
use attnas::nn::tape::Tape;
use attnas::nn::{activation_arena_len, ForwardOptions};
use attnas::space::{sampler, Arch, Space};
use attnas::testing::assert_close;
use nn_common::reference::{reference_forward, resized, stem_conv};
use nn_common::{arch, input, run, tiny_net, tiny_net_in, tiny_odd_space};
use rand::SeedableRng;

const ABS: f32 = 1e-5;
const REL: f32 = 1e-4;

/// Named archs of the tiny space exercising the features listed in the file header.
fn archs(space: &Space) -> Vec<(&'static str, Arch)> {
    vec![
        ("min", space.min_arch()),
        ("max", space.max_arch()),
        // stem 8 -> s1 16 (1x1 shortcut, stride 1), s2 16 at stride 2 (pool-only shortcut), k 5/3/5
        ("mixed-a", arch(32, [8, 16, 16, 32, 32, 64], [1, 2, 1, 2], [3, 5, 3, 5], [1, 3, 2, 4])),
        // stem 16 = s1 16 (identity), s3 24 -> s4 32 (channel change at stride 1), k 3/5/3
        ("mixed-b", arch(24, [16, 16, 24, 24, 32, 96], [1, 1, 2, 2], [3, 3, 5, 3], [1, 2, 3, 3])),
    ]
}

fn check(space: &Space, a: &Arch, n: usize, side: usize, opt: ForwardOptions, what: &str) {
    let b = CpuBackend::new();
    let (net, named) = tiny_net_in(&b, 11, space.clone());
    let x = input(5, n, side);
    let got = run(&b, &net, a, &x, n, side, opt, None);
    let want = reference_forward(space, a, &named, &x, n, side, &opt);
    assert!(want.logits.iter().all(|v| v.is_finite()) && want.logits.iter().any(|&v| v.abs() > 1e-2));
    assert_close(&format!("{what}: logits of {a:?} (side {side})"), &got, &want.logits, ABS, REL);
}

#[test]
fn train_mode_matches_reference_on_named_archs() {
    let space = Space::builtin("tiny").unwrap();
    for (name, a) in archs(&space) {
        check(&space, &a, 3, a.resolution, ForwardOptions::train(), name);
        check(&space, &a, 2, 28, ForwardOptions::train(), &format!("{name}, resized"));
    }
}

/// Odd sizes before stride-2 blocks: r 26 (13 -> 7 at s2, pool only; 7 -> 4 at s3, pool + conv), r 20
/// (5 -> 3 at s3, pool only), r 28 (7 -> 4 at s3, pool + conv), from their own side and resized from 28.
#[test]
fn odd_sizes_at_stride_2_blocks_match_reference() {
    let space = tiny_odd_space();
    let cases = [
        ("odd-a", arch(26, [8, 16, 16, 32, 32, 64], [1, 2, 1, 2], [3, 5, 3, 5], [1, 3, 2, 4])),
        ("odd-b", arch(20, [16, 16, 24, 24, 40, 96], [1, 1, 2, 1], [3, 3, 5, 3], [1, 2, 3, 3])),
        ("odd-c", arch(28, [16, 16, 24, 32, 40, 96], [1, 2, 2, 2], [3, 5, 5, 3], [1, 3, 3, 4])),
    ];
    for (name, a) in cases {
        let blocks = space.active_blocks(&a).filter(|b| b.stride == 2 && b.size_in % 2 == 1).count();
        assert!(blocks > 0, "{name} has no odd stride-2 block");
        check(&space, &a, 2, a.resolution, ForwardOptions::train(), name);
        check(&space, &a, 2, 28, ForwardOptions::eval(), &format!("{name}, eval, side 28"));
    }
}

#[test]
fn train_mode_matches_reference_on_random_archs() {
    let space = Space::builtin("tiny").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for i in 0..6 {
        let a = sampler::uniform(&space, &mut rng);
        let side = if i % 2 == 0 { a.resolution } else { 28 };
        check(&space, &a, 2, side, ForwardOptions::train(), &format!("uniform #{i}"));
    }
}

#[test]
fn eval_mode_uses_the_loaded_running_statistics() {
    let space = Space::builtin("tiny").unwrap();
    for (name, a) in archs(&space) {
        check(&space, &a, 2, 28, ForwardOptions::eval(), &format!("{name}, eval"));
    }
    // the running statistics matter: the same net in train mode gives other logits
    let b = CpuBackend::new();
    let (net, _) = tiny_net(&b, 11);
    let a = space.max_arch();
    let x = input(5, 2, 32);
    let eval = run(&b, &net, &a, &x, 2, 32, ForwardOptions::eval(), None);
    let train = run(&b, &net, &a, &x, 2, 32, ForwardOptions::train(), None);
    assert!(eval.iter().zip(&train).any(|(e, t)| (e - t).abs() > 1e-2), "eval and train logits agree");
}

#[test]
fn calibration_accumulates_the_cumulative_batch_statistics() {
    let b = CpuBackend::new();
    let (net, named) = tiny_net(&b, 11);
    let a = arch(24, [8, 16, 24, 24, 40, 64], [1, 2, 1, 2], [3, 5, 3, 5], [1, 3, 2, 4]);
    let (n, c0) = (3, 8);
    let mut want = [vec![0f64; c0], vec![0f64; c0]];
    net.reset_running_stats(&b).unwrap();
    for k in 1..=2u32 {
        let x = input(30 + k as u64, n, 28);
        let got = run(&b, &net, &a, &x, n, 28, ForwardOptions::calibrate(k), None);
        assert_eq!(got, run(&b, &net, &a, &x, n, 28, ForwardOptions::train(), None), "calibrate uses batch stats");
        let pre = stem_conv(&named, &resized(&x, n, 28, 24), n, 24, c0);
        let pixels = pre.len() / c0;
        for ch in 0..c0 {
            let v: Vec<f64> = (0..pixels).map(|p| pre[p * c0 + ch] as f64).collect();
            let mean = v.iter().sum::<f64>() / pixels as f64;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (pixels - 1) as f64;
            want[0][ch] += mean / 2.0;
            want[1][ch] += var / 2.0;
        }
    }
    let stats = net.to_named(&b, false).unwrap();
    for (i, what) in ["running_mean", "running_var"].into_iter().enumerate() {
        let t = stats.iter().find(|t| t.name == format!("first_conv.bn.bn.{what}")).unwrap();
        let w: Vec<f32> = want[i].iter().map(|&v| v as f32).collect();
        assert_close(&format!("stem {what} after two batches"), &t.data[..c0], &w, 1e-5, 1e-4);
        assert!(t.data[c0..].iter().all(|&v| v == i as f32), "{what}: inactive channels changed");
    }
}

/// The drop-connect plan of a tape: (global block, rate) of every block that gets a mask.
fn planned_drop_connect(space: &Space, a: &Arch, n: usize, opt: ForwardOptions) -> Vec<(usize, f32)> {
    let mut arena = Arena::measuring("plan");
    let x = arena.alloc(n * 32 * 32 * 3).unwrap();
    let tape = Tape::allocate(space, a, n, x, 32, opt, attnas::backend::Dtype::F32, &mut arena).unwrap();
    tape.blocks.iter().filter_map(|t| t.drop.map(|m| (t.blk.global, m.rate))).collect()
}

#[test]
fn dropout_and_drop_connect_follow_spec_3_4() {
    let space = Space::builtin("tiny").unwrap();
    let total = space.stages.iter().map(|s| s.depth.iter().max().unwrap()).sum::<usize>() as f32;
    assert_eq!(total, 7.0);
    let reg = |seed, last_two| ForwardOptions {
        dropout: 0.5,
        drop_connect: 0.9,
        drop_connect_only_last_two_stages: last_two,
        seed,
        ..ForwardOptions::train()
    };
    // identity blocks of these archs (c_in == c_out, stride 1): max: 4 (s3.1), 6 (s4.1);
    // all-identity: 0 (s1, stem 16 = s1 16), 2 (s2.1), 4, 5 (s4.0: s3 32 = s4 32), 6
    let all_identity = arch(32, [16, 16, 24, 32, 32, 96], [1, 2, 2, 2], [3, 5, 5, 5], [1, 3, 3, 4]);
    let cases = [
        (space.max_arch(), true, vec![4, 6]),
        (all_identity.clone(), true, vec![4, 5, 6]),
        // global block 0 has rate 0 and so no mask
        (all_identity, false, vec![2, 4, 5, 6]),
    ];
    let n = 4;
    for (a, last_two, blocks) in cases {
        let want: Vec<(usize, f32)> = blocks.iter().map(|&g| (g, 0.9 * g as f32 / total)).collect();
        let plan = planned_drop_connect(&space, &a, n, reg(0, last_two));
        assert_eq!(plan.len(), want.len(), "drop-connect blocks {plan:?}, spec {want:?}");
        for ((g, r), (wg, wr)) in plan.iter().zip(&want) {
            assert_eq!(g, wg);
            assert!((r - wr).abs() < 1e-6, "block {g}: rate {r}, spec {wr}");
        }
        let mut dropped_any = false;
        for seed in [1u64, 2, 3] {
            let b = CpuBackend::new();
            let (net, named) = tiny_net(&b, 11);
            let opt = reg(seed, last_two);
            let x = input(seed, n, 32);
            let got = run(&b, &net, &a, &x, n, 32, opt, None);
            let r = reference_forward(&space, &a, &named, &x, n, 32, &opt);
            let ref_blocks: Vec<(usize, f32)> = r.drop_connect.iter().map(|&(g, rate, _)| (g, rate)).collect();
            assert_eq!(ref_blocks, want, "the reference disagrees with the spec list");
            assert!(r.dropout_zeros > 0, "dropout 0.5 dropped nothing");
            dropped_any |= r.drop_connect.iter().any(|&(_, _, d)| d > 0 && d < n);
            assert_close(&format!("seed {seed}, {a:?}: logits with dropout"), &got, &r.logits, ABS, REL);
            // and the regularised logits differ from the plain ones
            let plain = run(&b, &net, &a, &x, n, 32, ForwardOptions::train(), None);
            assert!(plain.iter().zip(&got).any(|(p, g)| (p - g).abs() > 1e-3));
        }
        assert!(dropped_any, "no seed dropped part of a batch: the masks were not exercised");
    }
}

/// Every subnet's plan fits the arena `activation_arena_len` sizes for the max subnet (the training
/// loop allocates it once): min, max and random archs, input sides at and off the resolutions.
#[test]
fn every_subnet_fits_the_planned_arena() {
    for name in ["tiny", "attentivenas"] {
        let space = Space::builtin(name).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut archs: Vec<Arch> = (0..200).map(|_| sampler::uniform(&space, &mut rng)).collect();
        archs.push(space.min_arch());
        archs.push(space.max_arch());
        let sides = if name == "tiny" { vec![24, 28, 32] } else { vec![224] };
        for n in [1, 2, 32] {
            for &side in &sides {
                let len = activation_arena_len(&space, n, side, true, attnas::backend::Dtype::F32).unwrap();
                for a in &archs {
                    let opt = ForwardOptions { dropout: 0.2, drop_connect: 0.2, ..ForwardOptions::train() };
                    let mut arena = Arena::measuring("plan");
                    let x = arena.alloc(n * side * side * 3).unwrap();
                    let before = arena.used();
                    let tape =
                        Tape::allocate(&space, a, n, x, side, opt, attnas::backend::Dtype::F32, &mut arena).unwrap();
                    attnas::nn::tape::GradBuffers::allocate(&tape, &mut arena).unwrap();
                    let used = arena.used() - before;
                    assert!(used <= len, "{name} n {n} side {side}: {a:?} needs {used} > planned {len}");
                }
            }
        }
    }
}
