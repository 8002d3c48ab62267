//! The fused optimizer step (`OptimizerOps`) on every CUDA target against the f64 CPU reference, the
//! PyTorch update checked by hand, and the warmup-cosine learning-rate schedule against values computed
//! independently (Python `math`, see `schedule_matches_spec_values`).

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::optimizer::{scaled_base_lr, OptimizerOps, ParamGroup, SgdStep, WarmupCosineLr};
use attnas::backend::{upload_new, Backend, DeviceMemory, Tensor};
use attnas::testing::{assert_close, random_vec};

/// The recipe's step scalars (spec 3.1) with a mid-training learning rate.
const STEP: SgdStep = SgdStep { lr: 0.4, momentum: 0.9, clip: 1.0 };

/// Parameters, momentum and gradients in three arenas; each group is a slice `(offset, len, wd)` of all
/// three, and elements outside every group must stay untouched.
struct Arenas<B: Backend> {
    params: B::Memory,
    momentum: B::Memory,
    grads: B::Memory,
}

impl<B: Backend> Arenas<B> {
    fn new(b: &B, params: &[f32], momentum: &[f32], grads: &[f32]) -> Self {
        Arenas {
            params: upload_new(b, params).unwrap(),
            momentum: upload_new(b, momentum).unwrap(),
            grads: upload_new(b, grads).unwrap(),
        }
    }

    fn groups(&self, layout: &[(usize, usize, f32)]) -> Vec<ParamGroup> {
        let cut = |m: &B::Memory, off: usize, len: usize| -> Tensor { m.tensor().slice(off, len).unwrap() };
        layout
            .iter()
            .map(|&(off, len, weight_decay)| ParamGroup {
                params: cut(&self.params, off, len),
                grads: cut(&self.grads, off, len),
                momentum: cut(&self.momentum, off, len),
                weight_decay,
                copy: None,
            })
            .collect()
    }
}

/// Runs `steps` steps with fresh gradients each time (seeded), returns (params, momentum).
fn run<B: OptimizerOps>(b: &B, total: usize, layout: &[(usize, usize, f32)], steps: usize) -> (Vec<f32>, Vec<f32>) {
    let params = random_vec(1, total, -1.0, 1.0);
    let momentum = random_vec(2, total, -0.5, 0.5);
    let arenas = Arenas::new(b, &params, &momentum, &vec![0.0; total]);
    let groups = arenas.groups(layout);
    for step in 0..steps {
        // gradients in [-3, 3): about two thirds are clipped to +-1
        b.upload(arenas.grads.tensor(), &random_vec(10 + step as u64, total, -3.0, 3.0)).unwrap();
        b.sgd_nesterov_step(&STEP, &groups).unwrap();
    }
    (b.download(arenas.params.tensor()).unwrap(), b.download(arenas.momentum.tensor()).unwrap())
}

/// Two groups (decay 1e-5 and 0) with gaps before, between and after them, sizes not multiples of 256,
/// and a third group that is empty.
const TOTAL: usize = 1400;
const LAYOUT: &[(usize, usize, f32)] = &[(3, 1000, 1e-5), (1010, 385, 0.0), (1395, 0, 1e-5)];

/// Kernel vs reference over 3 steps. Tolerance abs 1e-6 + rel 1e-6: the kernel uses f32 fmaf, the
/// reference f64 rounded once per stored value; per step that is an ulp or two on values of ~1, and
/// the momentum feeds back over 3 steps (x ~1.9 per step at mu = 0.9 at most).
#[test]
fn kernel_matches_reference() {
    attnas::on_cuda_targets!("optimizer kernel_matches_reference", |b| {
        let (want_p, want_v) = run(&CpuBackend::new(), TOTAL, LAYOUT, 3);
        let (got_p, got_v) = run(&b, TOTAL, LAYOUT, 3);
        assert_close(&format!("{} params", b.name()), &got_p, &want_p, 1e-6, 1e-6);
        assert_close(&format!("{} momentum", b.name()), &got_v, &want_v, 1e-6, 1e-6);
        check_gaps_untouched(&got_p, &got_v);
    });
}

fn check_gaps_untouched(params: &[f32], momentum: &[f32]) {
    let (p0, v0) = (random_vec(1, TOTAL, -1.0, 1.0), random_vec(2, TOTAL, -0.5, 0.5));
    for i in (0..3).chain(1003..1010).chain(1395..TOTAL) {
        assert_eq!((params[i], momentum[i]), (p0[i], v0[i]), "element {i} lies in no group");
    }
}

/// The reference on the CPU backend leaves the gaps alone too, and weight decay acts: the same
/// gradients with decay 0 give different parameters.
#[test]
fn reference_groups_and_decay() {
    let b = CpuBackend::new();
    let (p, v) = run(&b, TOTAL, LAYOUT, 2);
    check_gaps_untouched(&p, &v);
    let no_decay: Vec<_> = LAYOUT.iter().map(|&(o, l, _)| (o, l, 0.0)).collect();
    let (p_nd, _) = run(&b, TOTAL, &no_decay, 2);
    assert!(p[3..1003] != p_nd[3..1003] && p[1010..1395] == p_nd[1010..1395]);
}

/// PyTorch's clip_grad_value_(1) then SGD(lr 0.1, momentum 0.9, nesterov, weight_decay 0.01), two steps
/// by hand from p = 1, v = 0 with gradients 3 then -0.5:
///   step 1: g = 1 + 0.01 = 1.01, v = 1.01, p = 1 - 0.1 (1.01 + 0.909) = 0.8081
///   step 2: g = -0.5 + 0.008081 = -0.491919, v = 0.909 - 0.491919 = 0.417081,
///           p = 0.8081 - 0.1 (-0.491919 + 0.3753729) = 0.81975461
/// A NaN gradient stays NaN through the clip (a diverged step must show), and clip = inf disables it.
#[test]
fn hand_steps_nan_and_no_clip() {
    fn check<B: OptimizerOps>(b: &B) {
        let a = Arenas::new(b, &[1.0, 0.5, 0.25], &[0.0; 3], &[3.0, f32::NAN, 7.0]);
        let g = a.groups(&[(0, 1, 0.01)]);
        let step = SgdStep { lr: 0.1, momentum: 0.9, clip: 1.0 };
        b.sgd_nesterov_step(&step, &g).unwrap();
        b.upload(a.grads.tensor(), &[-0.5, f32::NAN, 7.0]).unwrap();
        b.sgd_nesterov_step(&step, &g).unwrap();
        let (p, v) = (b.download(a.params.tensor()).unwrap(), b.download(a.momentum.tensor()).unwrap());
        assert_close(&format!("{} hand p", b.name()), &p[..1], &[0.819_754_6], 1e-6, 0.0);
        assert_close(&format!("{} hand v", b.name()), &v[..1], &[0.417_081], 1e-6, 0.0);
        // element 1: NaN gradient; element 2: gradient 7 with no clip and no momentum history
        b.sgd_nesterov_step(&SgdStep { clip: f32::INFINITY, ..step }, &a.groups(&[(1, 2, 0.0)])).unwrap();
        let (p, v) = (b.download(a.params.tensor()).unwrap(), b.download(a.momentum.tensor()).unwrap());
        assert!(p[1].is_nan() && v[1].is_nan(), "{} NaN gradient: p {} v {}", b.name(), p[1], v[1]);
        // p = 0.25 - 0.1 (7 + 0.9 * 7) = -1.08
        assert_close(&format!("{} no clip", b.name()), &[p[2], v[2]], &[-1.08, 7.0], 1e-6, 1e-6);
    }
    check(&CpuBackend::new());
    attnas::on_cuda_targets!("optimizer hand_steps_nan_and_no_clip", |b| {
        check(&b);
    });
}

#[test]
fn rejects_bad_groups_and_scalars() {
    let b = CpuBackend::new();
    let a = Arenas::new(&b, &[0.0; 8], &[0.0; 8], &[0.0; 8]);
    let err = |layout: &[(usize, usize, f32)], step: SgdStep| {
        b.sgd_nesterov_step(&step, &a.groups(layout)).unwrap_err().to_string()
    };
    let e = err(&[(0, 4, 0.0), (3, 4, 0.0)], STEP);
    assert!(e.contains("groups 0 and 1"), "{e}");
    let e = err(&[(0, 4, -1.0)], STEP);
    assert!(e.contains("weight_decay"), "{e}");
    let e = err(&[(0, 4, 0.0)], SgdStep { momentum: 1.0, ..STEP });
    assert!(e.contains("momentum"), "{e}");
    let e = err(&[(0, 4, 0.0)], SgdStep { lr: f32::NAN, ..STEP });
    assert!(e.contains("lr"), "{e}");
    let mut g = a.groups(&[(0, 4, 0.0)]);
    g[0].grads = a.grads.tensor().slice(0, 3).unwrap();
    let e = b.sgd_nesterov_step(&STEP, &g).unwrap_err().to_string();
    assert!(e.contains("group 0 grads"), "{e}");
    g[0].grads = g[0].params;
    let e = b.sgd_nesterov_step(&STEP, &g).unwrap_err().to_string();
    assert!(e.contains("params vs grads"), "{e}");
}

/// The recipe (spec 3.1): base 0.8 at global batch 2048, 3,125 warmup of 225,000 iterations. Expected
/// values from Python's `math` (independent of this code):
///   f = lambda i: 0.8 * ((0.001 + 0.999 * i / 3125) if i < 3125 else 1) * 0.5 * (1 + math.cos(math.pi * i / 225000))
///   [f(i) for i in (0, 1, 1562, 3124, 3125, 112500, 224999, 225000)]
#[test]
fn schedule_matches_spec_values() {
    assert_eq!(scaled_base_lr(2048), 0.8);
    assert_eq!(scaled_base_lr(64), 0.1);
    let s = WarmupCosineLr::new(scaled_base_lr(2048), 3125, 225_000).unwrap();
    let expected = [
        (0, 0.0008),
        (1, 0.0010557439999485444),
        (1562, 0.4002245315116061),
        (3124, 0.799363909838349),
        (3125, 0.7996192886327432),
        (112_500, 0.4),
        (224_999, 3.89910326248355e-11),
        (225_000, 0.0),
        (300_000, 0.0),
    ];
    for (i, want) in expected {
        let got = s.lr(i) as f64;
        assert!((got - want).abs() <= 1e-7 * want.max(1e-4), "lr({i}) = {got}, want {want}");
    }
    // rises through the warmup, falls after it
    let lrs: Vec<f32> = (0..=225_000).step_by(500).map(|i| s.lr(i)).collect();
    let peak = lrs.iter().enumerate().fold(0, |best, (i, &v)| if v > lrs[best] { i } else { best });
    assert_eq!(peak, 3000 / 500 + 1, "peak at iteration 3500 (the first sample past the warmup)");
    assert!(lrs[..=peak].windows(2).all(|w| w[0] < w[1]), "warmup must rise");
    assert!(lrs[peak..].windows(2).all(|w| w[0] >= w[1]), "cosine must fall");
}

#[test]
fn schedule_edge_cases() {
    // no warmup: plain cosine from base
    let s = WarmupCosineLr::new(0.1, 0, 100).unwrap();
    assert_eq!(s.lr(0), 0.1);
    assert!((s.lr(50) - 0.05).abs() < 1e-8);
    // warmup over the whole run
    let s = WarmupCosineLr::new(1.0, 10, 10).unwrap();
    assert!((s.lr(0) - 0.001).abs() < 1e-9 && s.lr(10) == 0.0);
    assert!(WarmupCosineLr::new(0.1, 11, 10).is_err());
    assert!(WarmupCosineLr::new(0.1, 0, 0).is_err());
    assert!(WarmupCosineLr::new(f64::NAN, 0, 10).is_err());
}
