//! The optimizer step's bf16 weight copy (issue #13 item 1): master weights, momentum and gradients stay
//! f32, and the same pass writes the updated parameters rounded to bf16 into the group's copy (what
//! the bf16 GEMMs read). On the CPU and every CUDA target: the copy is exactly round_bf16(params) after
//! the step, and the f32 state is bit-identical to a step without a copy (the copy changes no math).

use attnas::backend::cpu::CpuBackend;
use attnas::backend::dtype::round_bf16;
use attnas::backend::ops::optimizer::{OptimizerOps, ParamGroup, SgdStep};
use attnas::backend::{alloc_typed, upload_new, Backend, DeviceMemory, Dtype, Tensor};
use attnas::testing::random_vec;

const STEP: SgdStep = SgdStep { lr: 0.1, momentum: 0.9, clip: 1.0 };
const N: usize = 1000;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Two steps on one group; returns (params, momentum, copy if any).
fn run<B: OptimizerOps>(b: &B, with_copy: bool) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let p = upload_new(b, &random_vec(1, N, -1.0, 1.0)).unwrap();
    let v = upload_new(b, &random_vec(2, N, -0.5, 0.5)).unwrap();
    let g = upload_new(b, &random_vec(3, N, -3.0, 3.0)).unwrap();
    let copy = with_copy.then(|| alloc_typed(b, N, Dtype::Bf16).unwrap());
    let group = ParamGroup {
        params: p.tensor(),
        grads: g.tensor(),
        momentum: v.tensor(),
        weight_decay: 1e-5,
        copy: copy.as_ref().map(|(_, t)| *t),
    };
    for _ in 0..2 {
        b.sgd_nesterov_step(&STEP, &[group]).unwrap();
    }
    let copy = copy.map(|(_, t)| b.download(t).unwrap());
    (b.download(p.tensor()).unwrap(), b.download(v.tensor()).unwrap(), copy)
}

fn check<B: OptimizerOps>(b: &B) {
    let (p0, v0, _) = run(b, false);
    let (p, v, copy) = run(b, true);
    assert_eq!(bits(&p), bits(&p0), "params with and without the copy on {}", b.name());
    assert_eq!(bits(&v), bits(&v0), "momentum with and without the copy on {}", b.name());
    let copy = copy.unwrap();
    let want: Vec<f32> = p.iter().map(|&x| round_bf16(x)).collect();
    assert_eq!(bits(&copy), bits(&want), "copy = round_bf16(params) on {}", b.name());
    assert!(copy.iter().zip(&p).any(|(c, p)| c != p), "the copy is rounded");
}

#[test]
fn the_step_refreshes_the_bf16_copy_in_the_same_pass() {
    check(&CpuBackend::new());
    attnas::on_cuda_targets!("the_step_refreshes_the_bf16_copy_in_the_same_pass", |b| { check(&b) });
}

#[test]
fn a_copy_must_match_and_not_overlap_the_group() {
    let cpu = CpuBackend::new();
    let p = cpu.alloc(N).unwrap();
    let v = cpu.alloc(N).unwrap();
    let g = cpu.alloc(N).unwrap();
    let group = |copy: Tensor| ParamGroup {
        params: p.tensor(),
        grads: g.tensor(),
        momentum: v.tensor(),
        weight_decay: 0.0,
        copy: Some(copy),
    };
    let (_short, short) = alloc_typed(&cpu, N - 1, Dtype::Bf16).unwrap();
    let err = cpu.sgd_nesterov_step(&STEP, &[group(short)]).unwrap_err().to_string();
    assert!(err.contains("copy"), "{err}");
    let overlapping = p.tensor().view_as(Dtype::Bf16).slice(0, N).unwrap();
    let err = cpu.sgd_nesterov_step(&STEP, &[group(overlapping)]).unwrap_err().to_string();
    assert!(err.contains("copy vs params"), "{err}");
}
