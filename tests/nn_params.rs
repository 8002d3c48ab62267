//! The supernet's parameter table and checkpoints: AttentiveNAS's state-dict names and PyTorch shapes
//! (widths worked out by hand from spec 1.1-1.4), the 23.93 M parameter count, the layout permutations
//! (checked element by element against PyTorch's indexing), initialisation (spec 1.5), the optimizer's
//! weight-decay groups, and `load_named` on good and bad checkpoints.

mod nn_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::Backend;
use attnas::nn::params::Layout;
use attnas::nn::{NamedTensor, ParamTable, Supernet};
use attnas::space::{flops, Space};
use attnas::testing::random_vec;

fn torch_shape(t: &ParamTable, name: &str) -> Vec<usize> {
    t.lookup(name).unwrap_or_else(|| panic!("no tensor '{name}'")).0.torch_shape.clone()
}

#[test]
fn attentivenas_table_has_the_state_dict_names_and_shapes() {
    let space = Space::builtin("attentivenas").unwrap();
    let t = ParamTable::new(&space).unwrap();
    assert_eq!(t.num_params() as u64, flops::supernet_params(&space));
    assert_eq!((t.num_params() as f64 / 1e4).round() / 100.0, 23.93, "{} params", t.num_params());

    // blocks: mb1 0-1, mb2 2-6, mb3 7-12, mb4 13-18, mb5 19-26, mb6 27-34, mb7 35-36
    let blocks: std::collections::BTreeSet<usize> =
        t.params.iter().filter_map(|p| p.name.strip_prefix("blocks.")?.split('.').next()?.parse().ok()).collect();
    assert_eq!(blocks, (0..37).collect());
    let se_blocks: Vec<usize> = (7..13).chain(19..37).collect();
    for g in 0..37 {
        let p = format!("blocks.{g}.mobile_inverted_conv");
        assert!(t.lookup(&format!("blocks.{g}.shortcut.conv.conv.weight")).is_some(), "block {g} shortcut");
        assert_eq!(t.lookup(&format!("{p}.inverted_bottleneck.conv.conv.weight")).is_some(), g >= 2, "block {g}");
        assert_eq!(t.lookup(&format!("{p}.depth_conv.se.fc.reduce.weight")).is_some(), se_blocks.contains(&g));
        for bn in ["depth_conv", "point_linear"] {
            for s in ["weight", "bias"] {
                assert!(t.param(&format!("{p}.{bn}.bn.bn.{s}")).is_ok());
            }
            for s in ["running_mean", "running_var"] {
                assert!(t.buffer(&format!("{p}.{bn}.bn.bn.{s}")).is_ok());
            }
        }
    }
    // max widths: stem 24, mb1 24 (t 1: mid 24), mb2 32 (block 0 mid 24*6 = 144, then 32*6 = 192),
    // mb3 40 (block 0 from 32: mid 192, se make_divisible(48) = 48; later 240 -> se 64), mb7 224 (block 0
    // from mb6's 216: mid 1296), head 6 * 224 = 1344 -> 1984 -> 1000 classes
    let b = |g: usize, rest: &str| format!("blocks.{g}.mobile_inverted_conv.{rest}");
    let cases: Vec<(String, Vec<usize>)> = vec![
        ("first_conv.conv.conv.weight".into(), vec![24, 3, 3, 3]),
        ("first_conv.bn.bn.weight".into(), vec![24]),
        (b(0, "depth_conv.conv.conv.weight"), vec![24, 1, 5, 5]),
        (b(0, "point_linear.conv.conv.weight"), vec![24, 24, 1, 1]),
        (b(2, "inverted_bottleneck.conv.conv.weight"), vec![144, 24, 1, 1]),
        (b(3, "inverted_bottleneck.conv.conv.weight"), vec![192, 32, 1, 1]),
        (b(3, "depth_conv.conv.conv.weight"), vec![192, 1, 5, 5]),
        (b(7, "depth_conv.se.fc.reduce.weight"), vec![48, 192, 1, 1]),
        (b(7, "depth_conv.se.fc.reduce.bias"), vec![48]),
        (b(7, "depth_conv.se.fc.expand.weight"), vec![192, 48, 1, 1]),
        (b(7, "depth_conv.se.fc.expand.bias"), vec![192]),
        (b(8, "depth_conv.se.fc.reduce.weight"), vec![64, 240, 1, 1]),
        (b(35, "point_linear.conv.conv.weight"), vec![224, 1296, 1, 1]),
        (b(36, "point_linear.bn.bn.weight"), vec![224]),
        ("blocks.35.shortcut.conv.conv.weight".into(), vec![224, 216, 1, 1]),
        ("blocks.36.shortcut.conv.conv.weight".into(), vec![224, 224, 1, 1]),
        ("last_conv.final_expand_layer.conv.conv.weight".into(), vec![1344, 224, 1, 1]),
        ("last_conv.final_expand_layer.bn.bn.running_var".into(), vec![1344]),
        ("last_conv.feature_mix_layer.conv.conv.weight".into(), vec![1984, 1344, 1, 1]),
        ("classifier.linear.linear.weight".into(), vec![1000, 1984]),
        ("classifier.linear.linear.bias".into(), vec![1000]),
    ];
    for (name, shape) in cases {
        assert_eq!(torch_shape(&t, &name), shape, "{name}");
    }
    for absent in ["last_conv.feature_mix_layer.bn.bn.weight", "first_conv.bn.bn.num_batches_tracked"] {
        assert!(t.lookup(absent).is_none(), "{absent}");
    }
}

/// A stage whose only kernel is 3 (the tiny space's first): PyTorch allocates its depthwise weight at
/// 3 x 3, and the parameter count agrees with `flops::supernet_params`.
#[test]
fn a_3x3_only_stage_has_pytorch_shape_and_count() {
    let space = Space::builtin("tiny").unwrap();
    let t = ParamTable::new(&space).unwrap();
    assert_eq!(torch_shape(&t, "blocks.0.mobile_inverted_conv.depth_conv.conv.conv.weight"), vec![16, 1, 3, 3]);
    assert_eq!(torch_shape(&t, "blocks.1.mobile_inverted_conv.depth_conv.conv.conv.weight"), vec![48, 1, 5, 5]);
    assert_eq!(t.num_params() as u64, flops::supernet_params(&space));
}

/// Our layouts against PyTorch's indexing, element by element, and the round trip through both; a
/// k x k depthwise kernel sits at the centre of our 5 x 5, whose ring stays 0.
#[test]
fn layout_permutations_follow_pytorch_indexing() {
    for space in ["attentivenas", "tiny"].map(|s| Space::builtin(s).unwrap()) {
        let t = ParamTable::new(&space).unwrap();
        for p in t.params.iter().filter(|p| p.len < 300_000) {
            check_layout(p);
        }
    }
}

fn check_layout(p: &attnas::nn::params::ParamSpec) {
    let torch = random_vec(p.offset as u64, p.torch_shape.iter().product(), -1.0, 1.0);
    let ours = p.from_torch(&torch);
    assert_eq!(ours.len(), p.len, "{}", p.name);
    assert_eq!(p.to_torch(&ours), torch, "{}", p.name);
    let s = &p.torch_shape;
    match p.layout {
        Layout::Plain => assert_eq!(torch, ours),
        Layout::Depthwise { .. } => {
            let (c, k) = (s[0], s[2]);
            let o = (5 - k) / 2;
            for (ch, ky, kx) in [(0, 0, 0), (c - 1, 1, k - 1), (c / 2, k - 1, 2)] {
                assert_eq!(torch[(ch * k + ky) * k + kx], ours[((ky + o) * 5 + kx + o) * c + ch], "{}", p.name);
            }
            let ring = (0..25).filter(|t| !(o..o + k).contains(&(t / 5)) || !(o..o + k).contains(&(t % 5)));
            assert!(ring.flat_map(|t| (0..c).map(move |ch| t * c + ch)).all(|i| ours[i] == 0.0), "{}", p.name);
        }
        Layout::Stem { .. } => {
            let c = s[0];
            for (co, ci, ky, kx) in [(0, 0, 0, 0), (c - 1, 2, 1, 0), (5, 1, 2, 2)] {
                assert_eq!(torch[((co * 3 + ci) * 3 + ky) * 3 + kx], ours[((ky * 3 + kx) * 3 + ci) * c + co]);
            }
        }
    }
}

fn fan_in(named: &[NamedTensor], name: &str) -> usize {
    let w = name.strip_suffix(".bias").map_or(name.to_string(), |p| format!("{p}.weight"));
    named.iter().find(|t| t.name == w).unwrap().shape[1..].iter().product()
}

#[test]
fn initialisation_follows_spec_1_5() {
    let b = CpuBackend::new();
    let space = Space::builtin("tiny").unwrap();
    let net = Supernet::new(&b, space.clone(), 7).unwrap();
    let named = net.to_named(&b, false).unwrap();
    for t in &named {
        let (n, d) = (&t.name, &t.data);
        let all = |v: f32| d.iter().all(|&x| x == v);
        if n.ends_with("point_linear.bn.bn.weight") {
            assert!(all(0.0), "{n}: project BN gamma starts at 0");
        } else if n.ends_with(".bn.bn.weight") || n.ends_with("running_var") {
            assert!(all(1.0), "{n}");
        } else if n.ends_with(".bn.bn.bias") || n.ends_with("running_mean") {
            assert!(all(0.0), "{n}");
        } else {
            // Kaiming-uniform(a = sqrt 5) weights and default biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            let bound = 1.0 / (fan_in(&named, n) as f32).sqrt();
            let (lo, hi) = d.iter().fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            assert!(-bound <= lo && hi <= bound, "{n}: values in [{lo}, {hi}], bound {bound}");
            if d.len() >= 100 {
                let f = 0.8 * bound;
                assert!(lo < -f && hi > f, "{n}: [{lo}, {hi}] does not fill +-{bound} (wrong fan-in?)");
            }
        }
    }
    assert_eq!(
        net.to_named(&b, false).unwrap(),
        Supernet::new(&b, space.clone(), 7).unwrap().to_named(&b, false).unwrap()
    );
    assert_ne!(named, Supernet::new(&b, space, 8).unwrap().to_named(&b, false).unwrap());
}

#[test]
fn param_groups_cover_every_parameter_once_with_its_decay() {
    let b = CpuBackend::new();
    let net = Supernet::new(&b, Space::builtin("tiny").unwrap(), 1).unwrap();
    let keywords = [".bn".to_string(), ".bias".to_string()];
    let groups = net.param_groups(1e-5, &keywords).unwrap();
    assert_eq!(groups.len(), 2);
    let at = |base: u64, t: attnas::backend::Tensor| (t.addr() - base) as usize / 4;
    let ranges: Vec<(usize, usize, f32)> = groups
        .iter()
        .map(|g| {
            let start = at(net.params_arena().addr(), g.params);
            assert_eq!(at(net.grads_arena().addr(), g.grads), start);
            assert_eq!(at(net.momentum_arena().addr(), g.momentum), start);
            assert!(g.grads.len() == g.params.len() && g.momentum.len() == g.params.len());
            (start, start + g.params.len(), g.weight_decay)
        })
        .collect();
    for p in &net.table.params {
        let want = if p.name.contains(".bn") || p.name.contains(".bias") { 0.0 } else { 1e-5 };
        let holders: Vec<_> = ranges.iter().filter(|(s, e, _)| *s <= p.offset && p.offset + p.len <= *e).collect();
        assert_eq!(holders.len(), 1, "{} lies in {} groups", p.name, holders.len());
        assert_eq!(holders[0].2, want, "{}: decay", p.name);
    }
    assert!(ranges[0].1 <= ranges[1].0 || ranges[1].1 <= ranges[0].0, "groups overlap: {ranges:?}");
    let all = net.param_groups(1e-5, &[]).unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].weight_decay == 1e-5 && all[0].params.len() >= net.table.num_params());
}

fn tiny() -> (CpuBackend, Supernet<attnas::backend::cpu::HostMemory>, Vec<NamedTensor>) {
    let b = CpuBackend::new();
    let (net, named) = nn_common::tiny_net(&b, 3);
    (b, net, named)
}

#[test]
fn checkpoints_round_trip_with_prefix_extras_and_momentum() {
    let (b, net, named) = tiny();
    assert_eq!(net.to_named(&b, false).unwrap(), named);
    // into a differently initialised net, as a DDP checkpoint: `module.` prefixes, reversed order,
    // `num_batches_tracked` and unknown buffers
    let other = Supernet::new(&b, net.space.clone(), 99).unwrap();
    let mut ckpt: Vec<NamedTensor> =
        named.iter().rev().map(|t| NamedTensor { name: format!("module.{}", t.name), ..t.clone() }).collect();
    for extra in [
        "module.first_conv.bn.bn.num_batches_tracked",
        "blocks.0.mobile_inverted_conv.depth_conv.bn.bn_tracking.0.weight",
    ] {
        ckpt.push(NamedTensor { name: extra.into(), shape: vec![], data: vec![5.0] });
    }
    assert!(!other.load_named(&b, &ckpt, "ddp.ckpt").unwrap(), "no momentum in this checkpoint");
    assert_eq!(other.to_named(&b, false).unwrap(), named);
    assert_eq!(b.download(other.params_arena()).unwrap(), b.download(net.params_arena()).unwrap());
    // momentum travels as optimizer.momentum.<name>
    let m: Vec<f32> = random_vec(4, net.table.params_len, -1.0, 1.0);
    b.upload(net.momentum_arena(), &m).unwrap();
    let with_m = net.to_named(&b, true).unwrap();
    assert!(with_m.iter().any(|t| t.name == "optimizer.momentum.classifier.linear.linear.bias"));
    assert!(other.load_named(&b, &with_m, "with momentum").unwrap());
    assert_eq!(other.to_named(&b, true).unwrap(), with_m);
}

fn load_err(net: &Supernet<attnas::backend::cpu::HostMemory>, b: &CpuBackend, ckpt: &[NamedTensor]) -> String {
    let before = b.download(net.params_arena()).unwrap();
    let e = net.load_named(b, ckpt, "bad.ckpt").expect_err("a bad checkpoint loaded").to_string();
    assert_eq!(b.download(net.params_arena()).unwrap(), before, "a failed load changed the parameters");
    assert!(e.contains("bad.ckpt"), "error does not name the checkpoint: {e}");
    e
}

#[test]
fn bad_checkpoints_are_refused_with_the_tensor_named() {
    let (b, net, named) = tiny();
    let fresh = Supernet::new(&b, net.space.clone(), 5).unwrap();
    let name = "blocks.3.mobile_inverted_conv.point_linear.conv.conv.weight";
    let i = named.iter().position(|t| t.name == name).unwrap();
    let right = named[i].shape.clone();

    // wrong shape (same element count, as another config's transposed layer would have)
    let mut bad = named.clone();
    bad[i].shape = vec![right[1], right[0], 1, 1];
    let e = load_err(&fresh, &b, &bad);
    for want in [name.to_string(), format!("{:?}", bad[i].shape), format!("{right:?}")] {
        assert!(e.contains(&want), "error lacks '{want}': {e}");
    }
    // right shape, wrong data length
    let mut bad = named.clone();
    bad[i].data.pop();
    assert!(load_err(&fresh, &b, &bad).contains(name));
    // a missing parameter (running statistics may be absent, parameters may not)
    let bad: Vec<NamedTensor> = named.iter().filter(|t| t.name != name).cloned().collect();
    let e = load_err(&fresh, &b, &bad);
    assert!(e.contains(name) && e.contains("missing"), "{e}");
    let no_stats: Vec<NamedTensor> = named.iter().filter(|t| !t.name.contains("running_")).cloned().collect();
    fresh.load_named(&b, &no_stats, "params only").unwrap();
    // another space's checkpoint
    let big = ParamTable::new(&Space::builtin("attentivenas").unwrap()).unwrap();
    let foreign: Vec<NamedTensor> = big
        .params
        .iter()
        .filter(|p| p.len < 100_000)
        .map(|p| NamedTensor { name: p.name.clone(), shape: p.torch_shape.clone(), data: vec![0.0; p.len] })
        .collect();
    assert!(load_err(&fresh, &b, &foreign).contains("first_conv.conv.conv.weight"));
}
