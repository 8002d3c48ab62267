//! The GEMM with bf16 operands (issue #13 item 1): bf16 A and B with an f32 or bf16 C, f32 accumulation
//! (cuBLAS GemmEx with CUBLAS_COMPUTE_32F on a GPU; the host SGEMM on widened values on the CPU and the
//! emulator), at the supernet's three 1x1-conv forms with sliced leading dimensions.
//!
//! Tolerances. The CPU bf16 mode is defined as the f32 GEMM of the exactly widened bf16 inputs, C
//! rounded once: checked bit for bit against the f32 path on pre-rounded inputs. The emulator runs the
//! same host code (bit for bit). cuBLAS on a GPU sums in another order: f32 sums of k <= 96 products of
//! magnitude <= 1 differ by ~k * 2^-24 * sum|a b| <= 1e-5, so abs 1e-4 + rel 1e-4, plus one bf16 ulp for a
//! bf16 C (the two f32 values may straddle a rounding boundary).

mod bf16_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::dtype::round_bf16;
use attnas::backend::ops::GemmOps;
use attnas::backend::{alloc_typed, upload_typed, Backend, Dtype, GemmSpec};
use attnas::testing::random_vec;
use bf16_common::bf16_ulp;

/// The 1x1-conv forms at an AttentiveNAS-like slice: 40 of 48 input channels, 96 of 120 outputs.
fn specs() -> Vec<(&'static str, GemmSpec)> {
    let (pixels, ci, co, ci_stored) = (2 * 7 * 7, 40, 96, 48);
    vec![
        ("forward", GemmSpec::pointwise_fwd(pixels, ci, co, ci_stored)),
        ("grad-input", GemmSpec::pointwise_bwd_input(pixels, ci, co, ci_stored)),
        ("grad-weight (beta = 1)", GemmSpec::pointwise_bwd_weight(pixels, ci, co, ci_stored)),
    ]
}

fn run<B: GemmOps>(b: &B, s: &GemmSpec, ab: Dtype, c_dtype: Dtype, seed: u64) -> Vec<f32> {
    let (na, nb, nc) = s.required_lens();
    let (_a, a) = upload_typed(b, &random_vec(seed, na, -1.0, 1.0), ab).unwrap();
    let (_b, bm) = upload_typed(b, &random_vec(seed + 1, nb, -1.0, 1.0), ab).unwrap();
    let (_c, c) = upload_typed(b, &random_vec(seed + 2, nc, -1.0, 1.0), c_dtype).unwrap();
    b.gemm(s, a, bm, c).unwrap();
    b.download(c).unwrap()
}

#[test]
fn cpu_bf16_gemm_is_the_f32_gemm_of_the_rounded_inputs_rounded_once() {
    let cpu = CpuBackend::new();
    for (name, s) in specs() {
        let (na, nb, nc) = s.required_lens();
        let r = |v: Vec<f32>| v.into_iter().map(round_bf16).collect::<Vec<_>>();
        let (a, bm, c0) =
            (r(random_vec(3, na, -1.0, 1.0)), r(random_vec(4, nb, -1.0, 1.0)), random_vec(5, nc, -1.0, 1.0));
        let full = {
            let (_a, at) = upload_typed(&cpu, &a, Dtype::F32).unwrap();
            let (_b, bt) = upload_typed(&cpu, &bm, Dtype::F32).unwrap();
            let (_c, ct) = upload_typed(&cpu, &c0, Dtype::F32).unwrap();
            cpu.gemm(&s, at, bt, ct).unwrap();
            cpu.download(ct).unwrap()
        };
        for c_dtype in [Dtype::F32, Dtype::Bf16] {
            let (_a, at) = upload_typed(&cpu, &a, Dtype::Bf16).unwrap();
            let (_b, bt) = upload_typed(&cpu, &bm, Dtype::Bf16).unwrap();
            // a bf16 C starts from the bf16 image of c0; with beta = 0 that does not matter
            let c_start: Vec<f32> = if c_dtype == Dtype::Bf16 { r(c0.clone()) } else { c0.clone() };
            let want: Vec<f32> = if c_dtype == Dtype::Bf16 && s.beta != 0.0 {
                // recompute the f32 GEMM from the rounded C, then round
                let (_a, a32) = upload_typed(&cpu, &a, Dtype::F32).unwrap();
                let (_b, b32) = upload_typed(&cpu, &bm, Dtype::F32).unwrap();
                let (_c, c32) = upload_typed(&cpu, &c_start, Dtype::F32).unwrap();
                cpu.gemm(&s, a32, b32, c32).unwrap();
                r(cpu.download(c32).unwrap())
            } else if c_dtype == Dtype::Bf16 {
                r(full.clone())
            } else {
                full.clone()
            };
            let (_c, ct) = upload_typed(&cpu, &c_start, c_dtype).unwrap();
            cpu.gemm(&s, at, bt, ct).unwrap();
            let got = cpu.download(ct).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{name}, C {c_dtype}");
        }
    }
}

#[test]
fn bf16_gemm_on_cuda_targets_matches_the_cpu_bf16_mode() {
    let cpu = CpuBackend::new();
    for (k, (name, s)) in specs().into_iter().enumerate() {
        for c_dtype in [Dtype::F32, Dtype::Bf16] {
            let want = run(&cpu, &s, Dtype::Bf16, c_dtype, 40 + k as u64);
            attnas::on_cuda_targets!("bf16_gemm_on_cuda_targets_matches_the_cpu_bf16_mode", |b| {
                let got = run(&b, &s, Dtype::Bf16, c_dtype, 40 + k as u64);
                let ulps = if c_dtype == Dtype::Bf16 { 1.0 } else { 0.0 };
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-4 + 1e-4 * w.abs() + ulps * bf16_ulp(g, w);
                    assert!((g - w).abs() <= tol, "{name}, C {c_dtype}, [{i}] on {}: {g} vs {w}", b.name());
                }
            });
        }
    }
}

#[test]
fn gemm_refuses_mixed_or_unsupported_storage() {
    let cpu = CpuBackend::new();
    let s = GemmSpec::new(4, 4, 4);
    let (_a, a16) = alloc_typed(&cpu, 16, Dtype::Bf16).unwrap();
    let (_b, b32) = alloc_typed(&cpu, 16, Dtype::F32).unwrap();
    let (_c, c32) = alloc_typed(&cpu, 16, Dtype::F32).unwrap();
    let err = cpu.gemm(&s, a16, b32, c32).unwrap_err().to_string();
    assert!(err.contains("gemm B") && err.contains("bf16"), "{err}");
    let (_a2, a32) = alloc_typed(&cpu, 16, Dtype::F32).unwrap();
    let (_c2, c16) = alloc_typed(&cpu, 16, Dtype::Bf16).unwrap();
    let err = cpu.gemm(&s, a32, b32, c16).unwrap_err().to_string();
    assert!(err.contains("cuBLAS type combination"), "{err}");
    attnas::on_cuda_targets!("gemm_refuses_mixed_or_unsupported_storage", |b| {
        let (_a, a16) = alloc_typed(&b, 16, Dtype::Bf16).unwrap();
        let (_b, b32) = alloc_typed(&b, 16, Dtype::F32).unwrap();
        let (_c, c32) = alloc_typed(&b, 16, Dtype::F32).unwrap();
        assert!(b.gemm(&s, a16, b32, c32).is_err());
    });
}

/// The residual's backward fan-in (issue #13 item 2, src/nn/backward.rs): the 1x1 conv's grad-input GEMM
/// with `beta = 1` onto the other branch's gradient, against the unfused composition (GEMM into a fresh
/// tensor, then `add_assign`), in both storage types, on every backend.
/// - f32 on the CPU and the emulator: bit-identical (both are the single rounding of `acc + other`).
///   A GPU's cuBLAS may add C in another order (split-K): abs 1e-5 + rel 1e-5 there.
/// - bf16: the fused form rounds once, the composition twice (the GEMM's output, then the sum), so they
///   differ by half an ulp of the GEMM's output plus one of the result; the fused CPU result is exactly the f32 fused result rounded once.
#[test]
fn fused_fan_in_matches_gemm_then_add_assign() {
    use attnas::backend::ops::PoolOps;
    let (pixels, ci, co, ci_stored) = (2 * 7 * 7, 40, 96, 48);
    let unfused = GemmSpec::pointwise_bwd_input(pixels, ci, co, ci_stored);
    let fused = GemmSpec { beta: 1.0, ..unfused };
    let (na, nb, nc) = unfused.required_lens();
    let (dy, w, other) = (random_vec(60, na, -1.0, 1.0), random_vec(61, nb, -1.0, 1.0), random_vec(62, nc, -1.0, 1.0));
    fn both<B: GemmOps + PoolOps>(
        b: &B,
        (unfused, fused): (&GemmSpec, &GemmSpec),
        (dy, w, other): (&[f32], &[f32], &[f32]),
        dtype: Dtype,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (_a, a) = upload_typed(b, dy, dtype).unwrap();
        let (_w, wt) = upload_typed(b, w, dtype).unwrap();
        let (_f, f) = upload_typed(b, other, dtype).unwrap();
        b.gemm(fused, a, wt, f).unwrap();
        let (_g, g) = alloc_typed(b, other.len(), dtype).unwrap();
        b.gemm(unfused, a, wt, g).unwrap();
        let (_u, u) = upload_typed(b, other, dtype).unwrap();
        b.add_assign(u, g).unwrap();
        (b.download(f).unwrap(), b.download(u).unwrap(), b.download(g).unwrap())
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let ops = (&unfused, &fused);
    let data = (dy.as_slice(), w.as_slice(), other.as_slice());
    let cpu = CpuBackend::new();
    let (cpu_f32_fused, cpu_f32_unfused, _) = both(&cpu, ops, data, Dtype::F32);
    assert_eq!(bits(&cpu_f32_fused), bits(&cpu_f32_unfused), "f32 fused == GEMM + add_assign on the CPU");
    let (cpu_bf16_fused, cpu_bf16_unfused, cpu_bf16_gemm) = both(&cpu, ops, data, Dtype::Bf16);
    // the fused bf16 result is the f32 fused result on the rounded inputs, rounded once
    let r = |v: &[f32]| v.iter().copied().map(round_bf16).collect::<Vec<_>>();
    let (rf32, _, _) = both(&cpu, ops, (&r(&dy), &r(&w), &r(&other)), Dtype::F32);
    assert_eq!(bits(&cpu_bf16_fused), bits(&r(&rf32)), "bf16 fused rounds acc + other once");
    // the composition's extra rounding is half an ulp of the GEMM's output (which may be far larger than
    // the sum, when the branches cancel), and the sums' roundings half an ulp each of the result
    for (i, ((&f, &u), &g)) in cpu_bf16_fused.iter().zip(&cpu_bf16_unfused).zip(&cpu_bf16_gemm).enumerate() {
        let tol = 0.5 * bf16_ulp(g, g) + bf16_ulp(f, u);
        assert!((f - u).abs() <= tol, "bf16 fused vs composition (CPU) [{i}]: {f} vs {u}, GEMM output {g}");
    }
    let differs = cpu_bf16_fused.iter().zip(&cpu_bf16_unfused).filter(|(a, b)| a != b).count();
    assert!(differs > 0, "the composition rounds twice, so some of {nc} sums should differ by an ulp");
    attnas::on_cuda_targets!("fused_fan_in_matches_gemm_then_add_assign", |b| {
        let (f32_fused, f32_unfused, _) = both(&b, ops, data, Dtype::F32);
        if b.name().starts_with("emu") {
            assert_eq!(bits(&f32_fused), bits(&f32_unfused), "f32 fused == GEMM + add_assign on {}", b.name());
        }
        bf16_common::assert_within(&format!("f32 fused on {}", b.name()), &f32_fused, &cpu_f32_fused, 1e-5, 1e-5, 0.0);
        let (bf16_fused, _, _) = both(&b, ops, data, Dtype::Bf16);
        bf16_common::assert_within(
            &format!("bf16 fused on {}", b.name()),
            &bf16_fused,
            &cpu_bf16_fused,
            1e-4,
            1e-4,
            1.0,
        );
    });
}
