//! Shared by the supernet tests (`nn_forward`, `nn_backward`, `nn_devices`, `nn_params`): the reference
//! forward ([`reference`]); the active region of every named tensor for a subnet (for "inactive
//! gradients stay 0" checks); supernet setup with random non-trivial weights (non-zero project-BN gammas,
//! running statistics) and forward / backward runners for any backend.
#![allow(dead_code)]

pub mod reference;

use std::ops::Range;

use attnas::backend::{upload_new, Arena, Backend, DeviceMemory, SupernetOps};
use attnas::nn::{activation_arena_len, ForwardOptions, NamedTensor, Supernet};
use attnas::space::{Arch, Space};
use attnas::testing::random_vec;
use rand::{RngExt, SeedableRng};
use reference::ref_blocks;

/// The active region of tensor `name` (torch shape `shape`) for `arch`, one range per dimension; an
/// empty first range when the tensor is unused (blocks beyond the depth, identity-shortcut convs).
#[allow(clippy::single_range_in_vec_init)] // one-dimensional boxes (BN, biases)
pub fn active_box(space: &Space, arch: &Arch, name: &str, shape: &[usize]) -> Vec<Range<usize>> {
    let mut lead: Vec<Range<usize>> = vec![];
    let s = space.stages.len();
    let (c0, c_last, wh) = (arch.width[0], arch.width[s], arch.width[s + 1]);
    let fe = c_last * space.head.expand_ratio;
    if name.starts_with("first_conv.") {
        lead = vec![0..c0];
    } else if let Some(rest) = name.strip_prefix("blocks.") {
        let (g, part) = rest.split_once('.').unwrap();
        let g: usize = g.parse().unwrap();
        let Some(b) = ref_blocks(space, arch).into_iter().find(|b| b.global == g) else {
            return shape.iter().enumerate().map(|(d, &len)| if d == 0 { 0..0 } else { 0..len }).collect();
        };
        let part = part.strip_prefix("mobile_inverted_conv.").unwrap_or(part);
        let se = b.se_mid.unwrap_or(0);
        lead = match part {
            p if p.starts_with("inverted_bottleneck.conv") => vec![0..b.mid, 0..b.c_in],
            p if p.starts_with("inverted_bottleneck.bn") => vec![0..b.mid],
            "depth_conv.conv.conv.weight" => {
                let off = (shape[2] - b.kernel) / 2;
                vec![0..b.mid, 0..1, off..off + b.kernel, off..off + b.kernel]
            }
            p if p.starts_with("depth_conv.bn") => vec![0..b.mid],
            "depth_conv.se.fc.reduce.weight" => vec![0..se, 0..b.mid],
            "depth_conv.se.fc.reduce.bias" => vec![0..se],
            "depth_conv.se.fc.expand.weight" => vec![0..b.mid, 0..se],
            "depth_conv.se.fc.expand.bias" => vec![0..b.mid],
            p if p.starts_with("point_linear.conv") => vec![0..b.c_out, 0..b.mid],
            p if p.starts_with("point_linear.bn") => vec![0..b.c_out],
            "shortcut.conv.conv.weight" if b.c_in != b.c_out => vec![0..b.c_out, 0..b.c_in],
            "shortcut.conv.conv.weight" => vec![0..0],
            other => panic!("unexpected block tensor {other}"),
        };
    } else if name.starts_with("last_conv.final_expand_layer.conv") {
        lead = vec![0..fe, 0..c_last];
    } else if name.starts_with("last_conv.final_expand_layer.bn") {
        lead = vec![0..fe];
    } else if name.starts_with("last_conv.feature_mix_layer") {
        lead = vec![0..wh, 0..fe];
    } else if name == "classifier.linear.linear.weight" {
        lead = vec![0..shape[0], 0..wh];
    }
    (0..shape.len()).map(|d| lead.get(d).cloned().unwrap_or(0..shape[d])).collect()
}

/// Flat (row-major) index -> whether it lies in `bx`.
pub fn in_box(shape: &[usize], bx: &[Range<usize>], mut flat: usize) -> bool {
    let mut inside = true;
    for d in (0..shape.len()).rev() {
        inside &= bx[d].contains(&(flat % shape[d]));
        flat /= shape[d];
    }
    inside
}

/// Flat indices of the elements of `bx`.
pub fn box_indices(shape: &[usize], bx: &[Range<usize>]) -> Vec<usize> {
    (0..shape.iter().product()).filter(|&i| in_box(shape, bx, i)).collect()
}

/// A copy of `named` with every BN gamma in +-[0.5, 1.5] (none zero), betas in [-0.2, 0.2], running means
/// in [-0.3, 0.3] and running variances in [0.5, 2], SE reduce biases in [0.1, 0.5] (so that most SE ReLUs
/// are live and their gradients are not trivially 0); other weights and biases keep their (random) init.
pub fn randomized(named: &[NamedTensor], seed: u64) -> Vec<NamedTensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = named.to_vec();
    for t in &mut out {
        for v in &mut t.data {
            if t.name.ends_with(".bn.bn.weight") {
                *v = rng.random_range(0.5f32..1.5) * if rng.random_range(0..4) == 0 { -1.0 } else { 1.0 };
            } else if t.name.ends_with(".bn.bn.bias") {
                *v = rng.random_range(-0.2f32..0.2);
            } else if t.name.ends_with("running_mean") {
                *v = rng.random_range(-0.3f32..0.3);
            } else if t.name.ends_with("running_var") {
                *v = rng.random_range(0.5f32..2.0);
            } else if t.name.ends_with("se.fc.reduce.bias") {
                *v = rng.random_range(0.1f32..0.5);
            }
        }
    }
    out
}

/// The tiny space's supernet on `b` with the randomized weights of `seed`; returns it and those weights.
pub fn tiny_net<B: Backend>(b: &B, seed: u64) -> (Supernet<B::Memory>, Vec<NamedTensor>) {
    tiny_net_in(b, seed, Space::builtin("tiny").unwrap())
}

/// The tiny space with more resolutions (same supernet tensors): 20, 26 and 28 put odd feature sizes
/// before stride-2 blocks (r 26: stem 13 -> s2 at stride 2 -> 7 -> s3 at stride 2 -> 4; r 28: 14 -> 7 -> 4;
/// r 20: 10 -> 5 -> 3), where the 2x2 shortcut pool pads by one as the original does.
pub fn tiny_odd_space() -> Space {
    let mut space = Space::builtin("tiny").unwrap();
    space.resolutions = vec![20, 24, 26, 28, 32];
    space
}

/// [`tiny_net`] over `space` (the tiny space or a variant with the same tensors, e.g. [`tiny_odd_space`]).
pub fn tiny_net_in<B: Backend>(b: &B, seed: u64, space: Space) -> (Supernet<B::Memory>, Vec<NamedTensor>) {
    let net = Supernet::new(b, space, seed).unwrap();
    let named = randomized(&net.to_named(b, false).unwrap(), seed + 1);
    net.load_named(b, &named, "test weights").unwrap();
    (net, named)
}

/// A normalised-image-like input `[n, side, side, 3]`.
pub fn input(seed: u64, n: usize, side: usize) -> Vec<f32> {
    random_vec(seed, n * side * side * 3, -2.0, 2.0)
}

/// Runs a forward (and, with `dlogits`, a backward accumulating into the gradient arena) on `b`.
/// Returns the logits.
#[allow(clippy::too_many_arguments)]
pub fn run<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    arch: &Arch,
    x: &[f32],
    n: usize,
    side: usize,
    opt: ForwardOptions,
    dlogits: Option<&[f32]>,
) -> Vec<f32> {
    let len = activation_arena_len(&net.space, n, side, dlogits.is_some(), net.precision()).unwrap();
    let mut arena = Arena::new(b, "act", len).unwrap();
    let xm = upload_new(b, x).unwrap();
    let tape = net.forward(b, arch, xm.tensor(), n, side, opt, &mut arena).unwrap();
    if let Some(d) = dlogits {
        let dm = upload_new(b, d).unwrap();
        net.backward(b, &tape, dm.tensor(), &mut arena).unwrap();
    }
    b.download(tape.head.logits).unwrap()
}

/// Gradients in PyTorch layout, by parameter name.
pub fn named_grads<B: Backend>(b: &B, net: &Supernet<B::Memory>) -> Vec<NamedTensor> {
    net.named_grads(b).unwrap()
}

/// An arch of the tiny space from its genes: resolution, widths [stem, s1..s4, head], depths, kernels, expands.
pub fn arch(resolution: usize, width: [usize; 6], depth: [usize; 4], kernel: [usize; 4], expand: [usize; 4]) -> Arch {
    Arch { resolution, width: width.to_vec(), depth: depth.to_vec(), kernel: kernel.to_vec(), expand: expand.to_vec() }
}
