//! BatchNorm with bf16 activations (issue #13 item 1): the kernels' bf16 entry points (emulated, and on
//! a GPU when present) against the CPU bf16 mode, for the training forward (with and without swish
//! and the fused residual), the backward and the eval forward; and the bf16 mode against f32.
//!
//! Tolerances. Both sides read the same bf16 inputs (widened exactly) and compute in f32 with f64
//! folds, so before the output rounding they differ by what tests/batchnorm.rs allows in f32 mode
//! (y: abs 2e-5 + rel 2e-5; dx: abs 1e-4 + rel 1e-4; dgamma/dbeta, which stay f32: abs 1e-3 + rel
//! 1e-4). Rounding each side once to bf16 can then put them one bf16 ulp apart (2^-7 of the value's
//! power of two) when the f32 values straddle a rounding boundary, so bf16 outputs get one ulp on top.
//! Against the f32 mode, a bf16 output carries the input rounding (2^-9 relative of x, amplified by
//! 1/std ~ 1 here) and its own (2^-9): abs 0.02 + rel 2^-6 is a loose bound that a wrong rounding
//! point, a wrong dtype read or a missing residual would still break.

mod bf16_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::batchnorm::{BatchNormOps, BatchNormSpec, BnActivation, BnGrads, BnParams, BnWork};
use attnas::backend::{alloc_typed, upload_new, upload_typed, Backend, DeviceMemory, Dtype};
use attnas::testing::random_vec;
use bf16_common::{assert_within, is_bf16};

struct Outputs {
    y: Vec<f32>,
    y_res: Vec<f32>,
    y_eval: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    saved: Vec<f32>,
}

fn run<B: BatchNormOps>(b: &B, s: &BatchNormSpec, dtype: Dtype, seed: u64) -> Outputs {
    let n = s.pixels * s.c_active;
    let (_x, x) = upload_typed(b, &random_vec(seed, n, -2.0, 2.0), dtype).unwrap();
    let (_dy, dy) = upload_typed(b, &random_vec(seed + 1, n, -1.0, 1.0), dtype).unwrap();
    let (_r, r) = upload_typed(b, &random_vec(seed + 2, n, -3.0, 3.0), dtype).unwrap();
    let gamma = upload_new(b, &random_vec(seed + 3, s.c_stored, 0.5, 1.5)).unwrap();
    let beta = upload_new(b, &random_vec(seed + 4, s.c_stored, -0.5, 0.5)).unwrap();
    let dgamma = upload_new(b, &random_vec(seed + 5, s.c_stored, -1.0, 1.0)).unwrap();
    let dbeta = upload_new(b, &random_vec(seed + 6, s.c_stored, -1.0, 1.0)).unwrap();
    let rm = upload_new(b, &random_vec(seed + 7, s.c_stored, -0.1, 0.1)).unwrap();
    let rv = upload_new(b, &random_vec(seed + 8, s.c_stored, 0.8, 1.5)).unwrap();
    let (_y, y) = alloc_typed(b, n, dtype).unwrap();
    let (_yr, y_res) = alloc_typed(b, n, dtype).unwrap();
    let (_ye, y_eval) = alloc_typed(b, n, dtype).unwrap();
    let (_dx, dx) = alloc_typed(b, n, dtype).unwrap();
    let saved = b.alloc(2 * s.c_active).unwrap();
    let scratch = b.alloc(s.scratch_len()).unwrap();
    let p = BnParams { gamma: gamma.tensor(), beta: beta.tensor() };
    let work = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
    b.batchnorm_train_fwd(s, x, y, p, work, None).unwrap();
    b.batchnorm_train_fwd(s, x, y_res, p, work, Some(r)).unwrap();
    let g = BnGrads { dgamma: dgamma.tensor(), dbeta: dbeta.tensor() };
    b.batchnorm_train_bwd(s, x, dy, dx, p, g, work).unwrap();
    b.batchnorm_eval_fwd(s, x, y_eval, p, rm.tensor(), rv.tensor(), Some(r)).unwrap();
    let c = s.c_active;
    Outputs {
        y: b.download(y).unwrap(),
        y_res: b.download(y_res).unwrap(),
        y_eval: b.download(y_eval).unwrap(),
        dx: b.download(dx).unwrap(),
        dgamma: b.download(dgamma.tensor()).unwrap()[..c].to_vec(),
        dbeta: b.download(dbeta.tensor()).unwrap()[..c].to_vec(),
        saved: b.download(saved.tensor()).unwrap(),
    }
}

fn specs() -> Vec<BatchNormSpec> {
    let spec = |pixels, c_active, c_stored, swish| BatchNormSpec {
        pixels,
        c_active,
        c_stored,
        activation: if swish { BnActivation::Swish } else { BnActivation::Identity },
    };
    vec![spec(2 * 9 * 9, 20, 24, true), spec(2 * 7 * 7, 40, 48, false), spec(3 * 40 * 40, 5, 8, true)]
}

#[test]
fn bf16_batchnorm_kernels_match_the_cpu_bf16_mode() {
    let cpu = CpuBackend::new();
    for (k, s) in specs().iter().enumerate() {
        let want = run(&cpu, s, Dtype::Bf16, 100 + k as u64);
        for v in [&want.y, &want.y_res, &want.y_eval, &want.dx] {
            assert!(is_bf16(v), "the CPU bf16 mode's outputs are bf16 values");
        }
        attnas::on_cuda_targets!("bf16_batchnorm_kernels_match_the_cpu_bf16_mode", |b| {
            let got = run(&b, s, Dtype::Bf16, 100 + k as u64);
            let tag = |what: &str| format!("{what} (spec {k}) on {}", b.name());
            assert_within(&tag("saved"), &got.saved, &want.saved, 2e-5, 2e-5, 0.0);
            assert_within(&tag("y"), &got.y, &want.y, 2e-5, 2e-5, 1.0);
            assert_within(&tag("y + residual"), &got.y_res, &want.y_res, 2e-5, 2e-5, 1.0);
            assert_within(&tag("y_eval + residual"), &got.y_eval, &want.y_eval, 2e-5, 2e-5, 1.0);
            assert_within(&tag("dx"), &got.dx, &want.dx, 1e-4, 1e-4, 1.0);
            assert_within(&tag("dgamma"), &got.dgamma, &want.dgamma, 1e-3, 1e-4, 0.0);
            assert_within(&tag("dbeta"), &got.dbeta, &want.dbeta, 1e-3, 1e-4, 0.0);
        });
    }
}

#[test]
fn bf16_batchnorm_approximates_f32_and_rounds_its_outputs() {
    let cpu = CpuBackend::new();
    for (k, s) in specs().iter().enumerate() {
        let full = run(&cpu, s, Dtype::F32, 7 + k as u64);
        let half = run(&cpu, s, Dtype::Bf16, 7 + k as u64);
        for (what, h, f) in [
            ("y", &half.y, &full.y),
            ("y + residual", &half.y_res, &full.y_res),
            ("y_eval + residual", &half.y_eval, &full.y_eval),
            ("dx", &half.dx, &full.dx),
        ] {
            assert_within(&format!("{what} bf16 vs f32 (spec {k})"), h, f, 0.02, 1.0 / 64.0, 0.0);
            assert!(is_bf16(h) && !is_bf16(f), "{what}: only the bf16 mode rounds");
        }
    }
}

#[test]
fn bf16_batchnorm_refuses_mixed_activations_and_bf16_parameters() {
    let cpu = CpuBackend::new();
    let s = specs()[0];
    let n = s.pixels * s.c_active;
    let (_x, x) = alloc_typed(&cpu, n, Dtype::Bf16).unwrap();
    let (_y, y) = alloc_typed(&cpu, n, Dtype::F32).unwrap();
    let (_g, gamma_bf16) = alloc_typed(&cpu, s.c_stored, Dtype::Bf16).unwrap();
    let beta = cpu.alloc(s.c_stored).unwrap();
    let saved = cpu.alloc(2 * s.c_active).unwrap();
    let scratch = cpu.alloc(s.scratch_len()).unwrap();
    let work = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
    let p = BnParams { gamma: gamma_bf16, beta: beta.tensor() };
    let err = cpu.batchnorm_train_fwd(&s, x, y, p, work, None).unwrap_err().to_string();
    assert!(err.contains("batchnorm y"), "{err}");
    let (_y2, y2) = alloc_typed(&cpu, n, Dtype::Bf16).unwrap();
    let err = cpu.batchnorm_train_fwd(&s, x, y2, p, work, None).unwrap_err().to_string();
    assert!(err.contains("gamma") && err.contains("f32"), "{err}");
}
