//! The hand-written supernet backward (`src/nn/backward.rs`) on the CPU backend against central finite
//! differences of the forward, for the scalar loss L = sum(logits * R) with a fixed random R (so
//! dlogits = R), in training-mode BN (batch statistics, as in supernet training).
//!
//! Parameters are perturbed in PyTorch layout through `load_named`, and the analytic gradients are read
//! in PyTorch layout, so every sample is addressed by its state-dict name and torch index. Sampled: a
//! few random active elements of every tensor kind (stem conv and BN, expand conv and BN, depthwise conv
//! incl. centre and corner taps at kernels 3 and 5, depthwise BN, the four SE tensors, project conv and
//! BN, the shortcut conv, the head's final-expand conv and BN, feature mix, classifier weight and bias),
//! and unused elements (the corners of a 5 x 5 weight run at kernel 3, an identity block's shortcut
//! conv, a block beyond the depth), whose gradient must be exactly 0; on two archs that cover: a stride-2 block with a channel change (2x2
//! pool + 1x1 shortcut), a stride-2 block without (pool only), identity-shortcut blocks with
//! drop-connect active (masks fixed by the seed, some samples dropped), dropout, SE, the no-expand
//! first stage, both resolutions, and an input side (28) off the resolution (bicubic resize); and a third
//! arch at resolution 26 (`tiny_odd_space`), whose stride-2 blocks see odd sizes (13 and 7): the padded
//! 2x2 shortcut pool, with and without a shortcut conv.
//!
//! Finite differences in f32: eps = 1e-2 (L is summed in f64 from f32 logits). The f32 forward rounds
//! the logits (~0.1-1) to ~1e-7, which puts ~1e-5 of noise on the difference quotient; a smaller eps
//! would trade truncation for that noise. The truncation error O(eps^2 L''') dominates and is largest
//! where BN with few pixels per channel (18 at the last stages) makes the loss curved; a perturbation
//! across a ReLU or hard-sigmoid kink inside SE would also break the quotient (the fixed seeds cross none).
//! Tolerance: |fd - analytic| <= 1e-3 + 1e-2 |analytic| (sampled analytic gradients are ~1e-3 to ~1);
//! the observed worst error is 0.35 of that bound, while a wrong backward (e.g. the drop-connect mask
//! skipped in the backward) exceeds it 100-fold. A sample may legitimately be 0 (a dropped feature, a
//! dead SE ReLU), but every kind needs a non-zero sample. The project-BN betas of blocks without
//! drop-connect have an exactly-0 true gradient (every path from a block's output to the loss passes a
//! batch-statistics BN, which cancels a per-channel shift): only the drop-connect blocks (4, 6 at r 32)
//! check them non-trivially. Unused elements are checked exactly: their analytic gradient is 0.0, and
//! so is the difference quotient (the loss does not depend on them at all).

mod nn_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::Backend;
use attnas::nn::{ForwardOptions, NamedTensor};
use attnas::space::Space;
use attnas::testing::random_vec;
use nn_common::reference::reference_forward;
use nn_common::{
    active_box, arch, box_indices, in_box, input, named_grads, run, tiny_net, tiny_net_in, tiny_odd_space,
};
use rand::{RngExt, SeedableRng};

const EPS: f32 = 1e-2;
const ABS: f64 = 1e-3;
const REL: f64 = 1e-2;

struct Case {
    arch: attnas::space::Arch,
    n: usize,
    side: usize,
    opt: ForwardOptions,
}

fn loss(logits: &[f32], r: &[f32]) -> f64 {
    logits.iter().zip(r).map(|(&l, &r)| l as f64 * r as f64).sum()
}

/// (name, torch index) samples: `per` random active elements of every tensor of `kinds`, plus the
/// given explicit elements.
fn samples(
    space: &Space,
    c: &Case,
    named: &[NamedTensor],
    kinds: &[&str],
    extra: &[(String, usize)],
) -> Vec<(String, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut out = extra.to_vec();
    for kind in kinds {
        let t = named.iter().find(|t| t.name == *kind).unwrap_or_else(|| panic!("no tensor {kind}"));
        let idx = box_indices(&t.shape, &active_box(space, &c.arch, &t.name, &t.shape));
        assert!(!idx.is_empty(), "{kind} is inactive in {:?}", c.arch);
        for _ in 0..3 {
            out.push((t.name.clone(), idx[rng.random_range(0..idx.len())]));
        }
    }
    out
}

fn check_fd(c: &Case, kinds: &[&str], extra: &[(String, usize)], zero: &[(String, usize)]) {
    // the tiny space with extra (odd-size) resolutions: the same tensors, so the same weights for seed 21
    let space = tiny_odd_space();
    let b = CpuBackend::new();
    let (net, named) = tiny_net_in(&b, 21, space.clone());
    let x = input(4, c.n, c.side);
    let r = random_vec(8, c.n * space.num_classes, -1.0, 1.0);
    if c.opt.drop_connect > 0.0 {
        let rf = reference_forward(&space, &c.arch, &named, &x, c.n, c.side, &c.opt);
        assert!(rf.drop_connect.iter().any(|&(_, _, d)| d > 0 && d < c.n), "masks drop nothing: {:?}", rf.drop_connect);
    }
    net.zero_grads(&b).unwrap();
    run(&b, &net, &c.arch, &x, c.n, c.side, c.opt, Some(&r));
    let grads = named_grads(&b, &net);
    let grad = |name: &str, i: usize| grads.iter().find(|g| g.name == name).unwrap().data[i] as f64;
    let mut fails = Vec::new();
    let mut worst = 0f64;
    let mut nonzero = std::collections::BTreeMap::new();
    let eval = |name: &str, i: usize| -> f64 {
        let mut l = [0.0; 2];
        for (k, sign) in [1.0f32, -1.0].into_iter().enumerate() {
            let mut w = named.clone();
            w.iter_mut().find(|t| t.name == name).unwrap().data[i] += sign * EPS;
            net.load_named(&b, &w, "perturbed").unwrap();
            l[k] = loss(&run(&b, &net, &c.arch, &x, c.n, c.side, c.opt, None), &r);
        }
        (l[0] - l[1]) / (2.0 * EPS as f64)
    };
    for (name, i) in samples(&space, c, &named, kinds, extra) {
        let (fd, an) = (eval(&name, i), grad(&name, i));
        let excess = (fd - an).abs() / (ABS + REL * an.abs());
        worst = worst.max(excess);
        if excess > 1.0 {
            fails.push(format!("{name}[{i}]: analytic {an:e}, finite difference {fd:e}"));
        }
        *nonzero.entry(name).or_insert(0) += (an != 0.0) as usize;
    }
    // a sample can be legitimately 0 (a dropped feature, a dead SE ReLU), but not every sample of a kind
    for (name, count) in nonzero {
        if count == 0 {
            fails.push(format!("{name}: every sampled gradient is 0 (the check is vacuous)"));
        }
    }
    for (name, i) in zero {
        let (fd, an) = (eval(name, *i), grad(name, *i));
        if an != 0.0 || fd != 0.0 {
            fails.push(format!("{name}[{i}] is unused: analytic {an:e}, finite difference {fd:e} (want 0)"));
        }
    }
    net.load_named(&b, &named, "restore").unwrap();
    println!("worst |fd - analytic| / tolerance: {worst:.3}");
    assert!(fails.is_empty(), "{} gradient mismatches:\n{}", fails.len(), fails.join("\n"));
}

fn dw(block: usize) -> String {
    format!("blocks.{block}.mobile_inverted_conv.depth_conv.conv.conv.weight")
}

/// torch index of depthwise tap (ky, kx) of channel c in `[C, 1, 5, 5]` (stages with kernels 3 and 5).
fn tap(c: usize, ky: usize, kx: usize) -> usize {
    c * 25 + ky * 5 + kx
}

/// The same in the `[C, 1, 3, 3]` weight of the first stage (kernel 3 only: PyTorch allocates 3 x 3).
fn tap3(c: usize, ky: usize, kx: usize) -> usize {
    c * 9 + ky * 3 + kx
}

fn block_kinds(g: usize, expand: bool, se: bool) -> Vec<String> {
    let p = format!("blocks.{g}.mobile_inverted_conv");
    let mut v = vec![];
    if expand {
        v.extend(["conv.conv.weight", "bn.bn.weight", "bn.bn.bias"].map(|s| format!("{p}.inverted_bottleneck.{s}")));
    }
    v.extend(["conv.conv.weight", "bn.bn.weight", "bn.bn.bias"].map(|s| format!("{p}.depth_conv.{s}")));
    if se {
        v.extend(
            ["reduce.weight", "reduce.bias", "expand.weight", "expand.bias"]
                .map(|s| format!("{p}.depth_conv.se.fc.{s}")),
        );
    }
    v.extend(["conv.conv.weight", "bn.bn.weight", "bn.bn.bias"].map(|s| format!("{p}.point_linear.{s}")));
    v
}

const HEAD: [&str; 7] = [
    "first_conv.conv.conv.weight",
    "first_conv.bn.bn.weight",
    "first_conv.bn.bn.bias",
    "last_conv.final_expand_layer.conv.conv.weight",
    "last_conv.feature_mix_layer.conv.conv.weight",
    "classifier.linear.linear.weight",
    "classifier.linear.linear.bias",
];

/// r = 32 at the resolution. Blocks: 0 s1 (no expand, stem 8 -> 16: 1x1 shortcut at stride 1, k 3),
/// 1 s2.0 (stride 2, 16 -> 24: pool + conv, k 3), 3 s3.0 (stride 2, 24 -> 32, SE, k 5), 4 s3.1 (identity,
/// SE, drop-connect), 5 s4.0 (identity 32 -> 32, drop-connect), 6 s4.1 (identity, drop-connect).
#[test]
fn gradients_match_finite_differences_at_32() {
    let c = Case {
        arch: arch(32, [8, 16, 24, 32, 32, 96], [1, 1, 2, 2], [3, 3, 5, 3], [1, 3, 2, 4]),
        n: 3,
        side: 32,
        opt: ForwardOptions { dropout: 0.3, drop_connect: 0.6, seed: 5, ..ForwardOptions::train() },
    };
    let mut kinds: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    kinds.push("last_conv.final_expand_layer.bn.bn.weight".into());
    kinds.extend(block_kinds(0, false, false));
    kinds.extend(block_kinds(1, true, false));
    kinds.extend(block_kinds(4, true, true));
    kinds.extend(block_kinds(6, true, true));
    kinds.extend(["blocks.0.shortcut.conv.conv.weight", "blocks.1.shortcut.conv.conv.weight"].map(String::from));
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let extra = vec![
        (dw(1), tap(3, 2, 2)),
        (dw(1), tap(5, 1, 3)),
        (dw(3), tap(7, 0, 0)),
        (dw(3), tap(2, 4, 1)),
        (dw(0), tap3(1, 0, 0)),
    ];
    // kernel 3 of the stored 5 x 5 in blocks 1, 5: corner taps unused; block 5 is an identity block: no
    // shortcut conv
    let zero =
        vec![(dw(1), tap(3, 0, 4)), (dw(5), tap(9, 4, 4)), ("blocks.5.shortcut.conv.conv.weight".to_string(), 0)];
    check_fd(&c, &kinds, &extra, &zero);
}

/// r = 24 from 28-pixel inputs (bicubic resize). Blocks: 0 s1 (identity: stem 16 = s1 16, k 3),
/// 1 s2.0 (stride 2, 16 -> 16: pool-only shortcut, k 5), 2 s2.1 (identity), 3 s3.0 (16 -> 24, SE),
/// 5 s4.0 (24 -> 40 at stride 1: conv-only shortcut, SE).
#[test]
fn gradients_match_finite_differences_at_24_resized() {
    let c = Case {
        arch: arch(24, [16, 16, 16, 24, 40, 64], [1, 2, 1, 1], [3, 5, 3, 5], [1, 2, 3, 3]),
        n: 2,
        side: 28,
        opt: ForwardOptions::train(),
    };
    let mut kinds: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    kinds.extend(block_kinds(0, false, false));
    kinds.extend(block_kinds(1, true, false));
    kinds.extend(block_kinds(3, true, true));
    kinds.extend(block_kinds(5, true, true));
    kinds.extend(["blocks.3.shortcut.conv.conv.weight", "blocks.5.shortcut.conv.conv.weight"].map(String::from));
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let extra = vec![(dw(1), tap(4, 0, 0)), (dw(0), tap3(2, 1, 1)), (dw(3), tap(6, 1, 1))];
    let zero = vec![
        (dw(3), tap(2, 4, 0)),
        ("blocks.1.shortcut.conv.conv.weight".to_string(), 0),
        ("blocks.4.mobile_inverted_conv.point_linear.conv.conv.weight".to_string(), 0),
    ];
    check_fd(&c, &kinds, &extra, &zero);
}

/// r = 26: blocks 0 s1 (8 -> 16, 1x1 shortcut), 1 s2.0 (stride 2 on 13: padded pool only, 16 -> 16, k 5),
/// 2 s2.1 (identity), 3 s3.0 (stride 2 on 7: padded pool + conv 16 -> 32, SE, k 3), 5 s4.0 and 6 s4.1
/// (identity). The stem and block 0 receive gradient through both padded pools' backward.
#[test]
fn gradients_match_finite_differences_at_odd_sizes() {
    let c = Case {
        arch: arch(26, [8, 16, 16, 32, 32, 64], [1, 2, 1, 2], [3, 5, 3, 5], [1, 3, 2, 4]),
        n: 2,
        side: 26,
        opt: ForwardOptions::train(),
    };
    let mut kinds: Vec<String> = HEAD.iter().map(|s| s.to_string()).collect();
    kinds.extend(block_kinds(0, false, false));
    kinds.extend(block_kinds(1, true, false));
    kinds.extend(block_kinds(3, true, true));
    kinds.extend(["blocks.0.shortcut.conv.conv.weight", "blocks.3.shortcut.conv.conv.weight"].map(String::from));
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let extra = vec![(dw(1), tap(2, 0, 0)), (dw(1), tap(5, 4, 4)), (dw(0), tap3(1, 2, 2))];
    let zero = vec![(dw(3), tap(2, 0, 0)), ("blocks.1.shortcut.conv.conv.weight".to_string(), 0)];
    check_fd(&c, &kinds, &extra, &zero);
}

/// After the backward of a non-max subnet, every gradient element outside the subnet's active region
/// (channels beyond the active widths, taps outside the centre crop, blocks beyond the active depth,
/// unused shortcut convs, classifier columns beyond the head width) is exactly 0, every active tensor
/// has a non-zero gradient; and a second backward accumulates: grads after two == 2 x grads after one
/// (bit-exact but for rounding in the last bits of < 1 % of the elements).
#[test]
fn inactive_slices_stay_zero_and_backwards_accumulate() {
    let space = Space::builtin("tiny").unwrap();
    let b = CpuBackend::new();
    let (net, _) = tiny_net(&b, 31);
    for (a, side) in [
        (arch(24, [8, 8, 16, 24, 32, 64], [1, 1, 1, 1], [3, 3, 3, 3], [1, 2, 2, 3]), 28),
        (arch(32, [16, 8, 24, 24, 40, 64], [1, 2, 1, 2], [3, 5, 3, 5], [1, 3, 3, 4]), 32),
    ] {
        let n = 2;
        let x = input(6, n, side);
        let r = random_vec(7, n * space.num_classes, -1.0, 1.0);
        let opt = ForwardOptions { dropout: 0.2, drop_connect: 0.5, seed: 3, ..ForwardOptions::train() };
        net.zero_grads(&b).unwrap();
        run(&b, &net, &a, &x, n, side, opt, Some(&r));
        let once = named_grads(&b, &net);
        for g in &once {
            let bx = active_box(&space, &a, &g.name, &g.shape);
            let mut active_nonzero = false;
            for (i, &v) in g.data.iter().enumerate() {
                if in_box(&g.shape, &bx, i) {
                    active_nonzero |= v != 0.0;
                } else {
                    assert!(
                        v == 0.0,
                        "{}[{i}] is outside the active region {bx:?} of {a:?} but has gradient {v}",
                        g.name
                    );
                }
            }
            let active = bx.iter().all(|r| !r.is_empty());
            assert_eq!(active, active_nonzero, "{}: active {active} but non-zero gradient {active_nonzero}", g.name);
        }
        run(&b, &net, &a, &x, n, side, opt, Some(&r));
        let twice = b.download(net.grads_arena()).unwrap();
        net.zero_grads(&b).unwrap();
        run(&b, &net, &a, &x, n, side, opt, Some(&r));
        let single = b.download(net.grads_arena()).unwrap();
        // not bit-exact everywhere: the CPU GEMM splits long sums (k > its cache block) and adds each part
        // to C, and the stem and depthwise grad-weights add their f64 sums to the f32 gradient before
        // rounding, so g + g and 2g can differ in the last bits; other elements must be exact
        let mut inexact = 0;
        for (i, (t, s)) in twice.iter().zip(&single).enumerate() {
            inexact += (*t != 2.0 * s) as usize;
            assert!((t - 2.0 * s).abs() <= 1e-9 + 1e-6 * t.abs(), "grads [{i}]: two backwards {t}, one {s}");
        }
        println!("{inexact} of {} gradient elements not bit-exactly doubled", twice.len());
        assert!(inexact * 100 < twice.len(), "{inexact} of {} elements inexact", twice.len());
    }
}
