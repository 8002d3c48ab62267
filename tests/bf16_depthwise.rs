//! The elastic depthwise convolution with bf16 activations (issue #13 item 1): the kernels' bf16 entry
//! points (emulated, and on a GPU when present) against the CPU bf16 mode, forward, grad-input and
//! grad-weight, on the 4-channel (64-bit) and scalar paths, k 3 and 5, stride 1 and 2.
//!
//! Tolerances. Both sides read the same bf16 inputs (widened exactly) and f32 weights and accumulate in
//! f32, in different orders: the f32-mode bounds of tests/depthwise.rs hold before the output rounding
//! (forward, grad-input: abs 5e-5 + rel 1e-5; grad-weight, f32 in both modes: abs 2e-4 + rel 1e-4), and
//! a bf16 output gets one bf16 ulp on top (the two f32 values may straddle a rounding boundary).

mod bf16_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::depthwise::{DepthwiseOps, DepthwiseShape};
use attnas::backend::{alloc_typed, upload_new, upload_typed, Backend, DeviceMemory, Dtype};
use attnas::testing::random_vec;
use bf16_common::{assert_within, is_bf16};

fn shapes() -> Vec<DepthwiseShape> {
    let s =
        |n, h, w, c_active, c_stored, kernel, stride| DepthwiseShape { n, h, w, c_active, c_stored, kernel, stride };
    vec![
        s(2, 11, 9, 40, 48, 3, 1), // 4-channel path, two chunks
        s(2, 11, 11, 16, 16, 5, 2),
        s(1, 7, 10, 6, 8, 5, 1), // scalar path (c % 4 != 0)
        s(2, 9, 9, 3, 5, 3, 2),
    ]
}

/// (y, dx, dw) of one shape on one backend with activations stored as `dtype`.
fn run<B: DepthwiseOps>(b: &B, s: &DepthwiseShape, dtype: Dtype, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (_x, x) = upload_typed(b, &random_vec(seed, s.input_len(), -1.0, 1.0), dtype).unwrap();
    let (_dy, dy) = upload_typed(b, &random_vec(seed + 1, s.output_len(), -1.0, 1.0), dtype).unwrap();
    let w = upload_new(b, &random_vec(seed + 2, s.weight_len(), -1.0, 1.0)).unwrap();
    let dw = upload_new(b, &random_vec(seed + 3, s.weight_len(), -1.0, 1.0)).unwrap();
    let workspace = b.alloc(s.wgrad_workspace_len()).unwrap();
    let (_y, y) = alloc_typed(b, s.output_len(), dtype).unwrap();
    let (_dx, dx) = alloc_typed(b, s.input_len(), dtype).unwrap();
    b.depthwise_fwd(s, x, w.tensor(), y).unwrap();
    b.depthwise_bwd_input(s, dy, w.tensor(), dx).unwrap();
    b.depthwise_bwd_weight(s, x, dy, dw.tensor(), workspace.tensor()).unwrap();
    (b.download(y).unwrap(), b.download(dx).unwrap(), b.download(dw.tensor()).unwrap())
}

#[test]
fn bf16_depthwise_kernels_match_the_cpu_bf16_mode() {
    let cpu = CpuBackend::new();
    for (k, s) in shapes().iter().enumerate() {
        let (y, dx, dw) = run(&cpu, s, Dtype::Bf16, 10 + k as u64);
        assert!(is_bf16(&y) && is_bf16(&dx), "the CPU bf16 mode's outputs are bf16 values");
        attnas::on_cuda_targets!("bf16_depthwise_kernels_match_the_cpu_bf16_mode", |b| {
            let (gy, gdx, gdw) = run(&b, s, Dtype::Bf16, 10 + k as u64);
            let tag = |what: &str| format!("{what} (shape {k}: {s:?}) on {}", b.name());
            assert_within(&tag("y"), &gy, &y, 5e-5, 1e-5, 1.0);
            assert_within(&tag("dx"), &gdx, &dx, 5e-5, 1e-5, 1.0);
            assert_within(&tag("dw"), &gdw, &dw, 2e-4, 1e-4, 0.0);
        });
    }
}

#[test]
fn bf16_depthwise_approximates_f32() {
    // inputs rounded (2^-9 relative) and the output rounded once: sums of <= 25 products of values in
    // [-1, 1] stay within abs 0.05 + rel 2^-7 of f32; dw sums up to 242 such products (abs 0.3)
    let cpu = CpuBackend::new();
    let s = &shapes()[0];
    let (y32, dx32, dw32) = run(&cpu, s, Dtype::F32, 3);
    let (y16, dx16, dw16) = run(&cpu, s, Dtype::Bf16, 3);
    assert_within("y bf16 vs f32", &y16, &y32, 0.05, 1.0 / 128.0, 0.0);
    assert_within("dx bf16 vs f32", &dx16, &dx32, 0.05, 1.0 / 128.0, 0.0);
    assert_within("dw bf16 vs f32", &dw16, &dw32, 0.3, 1.0 / 128.0, 0.0);
    assert!(y16 != y32 && dw16 != dw32, "bf16 storage changes the results");
}

#[test]
fn depthwise_refuses_bf16_weights_and_mixed_activations() {
    let cpu = CpuBackend::new();
    let s = &shapes()[2];
    let (_x, x) = alloc_typed(&cpu, s.input_len(), Dtype::Bf16).unwrap();
    let (_w, w16) = alloc_typed(&cpu, s.weight_len(), Dtype::Bf16).unwrap();
    let (_y, y) = alloc_typed(&cpu, s.output_len(), Dtype::Bf16).unwrap();
    let err = cpu.depthwise_fwd(s, x, w16, y).unwrap_err().to_string();
    assert!(err.contains("depthwise_fwd w") && err.contains("f32"), "{err}");
    let w = cpu.alloc(s.weight_len()).unwrap();
    let (_y32, y32) = alloc_typed(&cpu, s.output_len(), Dtype::F32).unwrap();
    let err = cpu.depthwise_fwd(s, x, w.tensor(), y32).unwrap_err().to_string();
    assert!(err.contains("depthwise_fwd y"), "{err}");
}
