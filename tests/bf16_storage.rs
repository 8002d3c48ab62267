//! bf16 storage (issue #13 item 1): the storage seam (typed tensors, arenas, upload/download), the
//! conversion kernels, the templated activation kernels' bf16 entry points on the emulator (and a GPU
//! when present) against the CPU bf16 mode, and the dtype checks at every launch.
//!
//! Tolerances. Both sides compute in f32 from the same (exactly widened) bf16 inputs and round the
//! output once to nearest even. Where the f32 arithmetic is the same operations in the same order
//! (casts, ReLU, hard-sigmoid) the results are bit-identical. Swish differs only in the exponential
//! (`__expf` against the reference's f64 sigmoid, ~1e-6 relative), which changes the bf16 result only
//! when the f32 value sits within that distance of a rounding boundary, and then by one bf16 ulp: so at
//! most one ulp (2^-7 relative to the value's power of two) and almost never.

mod bf16_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::cuda::{KernelArg, KernelFn, LaunchDims};
use attnas::backend::dtype::round_bf16;
use attnas::backend::ops::{ActivationOps, CastOps};
use attnas::backend::{alloc_typed, upload_typed, Arena, Backend, DeviceMemory, Dtype};
use attnas::testing::random_vec;
use bf16_common::bf16_ulp;

/// Values that exercise the rounding: exact ties both ways, just off ties, subnormals, the largest
/// finite f32 (rounds to infinity), infinities, signed zero, and values near bf16's largest finite.
fn special_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        1.0 + 1.0 / 256.0,                 // tie, rounds down to even
        1.0 + 3.0 / 256.0,                 // tie, rounds up to even
        1.0 + 1.0 / 256.0 + 1.0 / 65536.0, // just above a tie
        -(1.0 + 3.0 / 256.0),
        f32::MIN_POSITIVE,
        1e-40,
        -3e-39,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.389e38,
        65504.0,
    ];
    // every low-half pattern around a tie: 0x7fff, 0x8000, 0x8001 on odd and even mantissas
    for hi in [0x3f80u32, 0x3f81, 0xc2c7, 0x0001] {
        for lo in [0x7fffu32, 0x8000, 0x8001, 0x0000, 0xffff] {
            v.push(f32::from_bits((hi << 16) | lo));
        }
    }
    v.extend(random_vec(5, 1000, -1e4, 1e4));
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn typed_tensors_span_their_bytes_and_slice_by_element() {
    let cpu = CpuBackend::new();
    let (_mem, t) = alloc_typed(&cpu, 7, Dtype::Bf16).unwrap();
    assert_eq!((t.len(), t.bytes(), t.dtype()), (7, 14, Dtype::Bf16));
    let s = t.slice(3, 4).unwrap();
    assert_eq!(s.addr(), t.addr() + 6, "a bf16 element is 2 bytes");
    assert!(t.slice(4, 4).is_err());
    // an f32 run of n viewed as bf16 is 2n elements over the same bytes
    let f = cpu.alloc(5).unwrap();
    assert_eq!(f.tensor().view_as(Dtype::Bf16).len(), 10);

    let mut arena = Arena::new(&cpu, "test", 1024).unwrap();
    let a = arena.alloc_typed(100, Dtype::Bf16).unwrap();
    assert_eq!(arena.used(), 50, "100 bf16 take 50 f32 slots");
    let b = arena.alloc_typed(3, Dtype::F32).unwrap();
    assert_eq!((b.addr() - a.addr()) % 256, 0, "arena tensors stay 256-byte aligned");
    assert_eq!(b.dtype(), Dtype::F32);
}

#[test]
fn upload_rounds_to_nearest_even_and_download_widens_exactly() {
    let v = special_values();
    let want: Vec<f32> = v.iter().map(|&x| round_bf16(x)).collect();
    let cpu = CpuBackend::new();
    let (_m, t) = upload_typed(&cpu, &v, Dtype::Bf16).unwrap();
    assert_eq!(bits(&cpu.download(t).unwrap()), bits(&want));
    attnas::on_cuda_targets!("upload_rounds_to_nearest_even_and_download_widens_exactly", |b| {
        let (_m, t) = upload_typed(&b, &v, Dtype::Bf16).unwrap();
        assert_eq!(bits(&b.download(t).unwrap()), bits(&want), "on {}", b.name());
    });
}

/// f32 -> bf16 -> f32 through the cast kernels, compared bit for bit with the `half` crate's rounding.
fn cast_round_trip<B: CastOps>(b: &B, v: &[f32]) -> Vec<f32> {
    let (_x, x) = upload_typed(b, v, Dtype::F32).unwrap();
    let (_h, h) = alloc_typed(b, v.len(), Dtype::Bf16).unwrap();
    let (_y, y) = alloc_typed(b, v.len(), Dtype::F32).unwrap();
    b.cast(x, h).unwrap();
    b.cast(h, y).unwrap();
    b.download(y).unwrap()
}

#[test]
fn cast_kernels_round_like_the_reference_bit_for_bit() {
    let v: Vec<f32> = special_values();
    let want: Vec<f32> = v.iter().map(|&x| round_bf16(x)).collect();
    assert_eq!(bits(&cast_round_trip(&CpuBackend::new(), &v)), bits(&want));
    attnas::on_cuda_targets!("cast_kernels_round_like_the_reference_bit_for_bit", |b| {
        assert_eq!(bits(&cast_round_trip(&b, &v)), bits(&want), "on {}", b.name());
        // NaN stays NaN (its payload may differ: cvt.rn.bf16.f32 returns the canonical NaN)
        let nan = cast_round_trip(&b, &[f32::NAN, -f32::NAN]);
        assert!(nan.iter().all(|x| x.is_nan()), "{nan:?}");
    });
}

#[allow(clippy::type_complexity)]
fn activations_on<B: ActivationOps>(b: &B, x: &[f32], dy: &[f32], dtype: Dtype) -> Vec<(&'static str, Vec<f32>)> {
    let (_xm, xt) = upload_typed(b, x, dtype).unwrap();
    let (_dym, dyt) = upload_typed(b, dy, dtype).unwrap();
    let (_om, out) = alloc_typed(b, x.len(), dtype).unwrap();
    let ops: [(&'static str, &dyn Fn() -> attnas::Result<()>); 6] = [
        ("swish_fwd", &|| b.swish_fwd(xt, out)),
        ("swish_bwd", &|| b.swish_bwd(xt, dyt, out)),
        ("relu_fwd", &|| b.relu_fwd(xt, out)),
        ("relu_bwd", &|| b.relu_bwd(xt, dyt, out)),
        ("hard_sigmoid_fwd", &|| b.hard_sigmoid_fwd(xt, out)),
        ("hard_sigmoid_bwd", &|| b.hard_sigmoid_bwd(xt, dyt, out)),
    ];
    ops.iter()
        .map(|(name, run)| {
            run().unwrap();
            assert_eq!(out.dtype(), dtype);
            (*name, b.download(out).unwrap())
        })
        .collect()
}

#[test]
fn cpu_bf16_mode_is_the_f32_op_on_widened_inputs_rounded_once() {
    let cpu = CpuBackend::new();
    let x: Vec<f32> = random_vec(1, 2000, -8.0, 8.0);
    let dy: Vec<f32> = random_vec(2, 2000, -2.0, 2.0);
    // the f32 op applied to the bf16 values of the inputs, then rounded: the definition of the mode
    let xr: Vec<f32> = x.iter().map(|&v| round_bf16(v)).collect();
    let dyr: Vec<f32> = dy.iter().map(|&v| round_bf16(v)).collect();
    let f32_results = activations_on(&cpu, &xr, &dyr, Dtype::F32);
    let bf16_results = activations_on(&cpu, &x, &dy, Dtype::Bf16);
    for ((name, full), (_, half)) in f32_results.iter().zip(&bf16_results) {
        let want: Vec<f32> = full.iter().map(|&v| round_bf16(v)).collect();
        assert_eq!(bits(half), bits(&want), "{name}");
        // and rounding did happen where the result is not a bf16 value already (ReLU's are)
        if !name.starts_with("relu") {
            assert!(full.iter().zip(half).any(|(a, b)| a != b), "{name}: bf16 output equals f32 output");
        }
    }
}

#[test]
fn bf16_activation_kernels_match_the_cpu_bf16_mode() {
    let cpu = CpuBackend::new();
    for n in [0usize, 1, 255, 257, 4099] {
        let x: Vec<f32> = random_vec(10 + n as u64, n, -12.0, 12.0);
        let dy: Vec<f32> = random_vec(20 + n as u64, n, -2.0, 2.0);
        let want = activations_on(&cpu, &x, &dy, Dtype::Bf16);
        attnas::on_cuda_targets!("bf16_activation_kernels_match_the_cpu_bf16_mode", |b| {
            let got = activations_on(&b, &x, &dy, Dtype::Bf16);
            for ((name, g), (_, w)) in got.iter().zip(&want) {
                let exact = *name != "swish_fwd" && *name != "swish_bwd";
                for (i, (&a, &r)) in g.iter().zip(w).enumerate() {
                    if exact {
                        assert_eq!(a.to_bits(), r.to_bits(), "{name} n={n} [{i}] on {}: {a} vs {r}", b.name());
                    } else {
                        assert!((a - r).abs() <= bf16_ulp(a, r), "{name} n={n} [{i}] on {}: {a} vs {r}", b.name());
                    }
                }
            }
        });
    }
}

#[test]
fn mixed_storage_types_are_refused_with_the_operand_named() {
    let cpu = CpuBackend::new();
    let (_x, x) = alloc_typed(&cpu, 8, Dtype::Bf16).unwrap();
    let (_y, y) = alloc_typed(&cpu, 8, Dtype::F32).unwrap();
    let err = cpu.swish_fwd(x, y).unwrap_err().to_string();
    assert!(err.contains("swish_fwd y") && err.contains("bf16"), "{err}");
    let (_z, z) = alloc_typed(&cpu, 8, Dtype::Bf16).unwrap();
    assert!(cpu.cast(x, z).unwrap_err().to_string().contains("one side must be f32"));
    attnas::on_cuda_targets!("mixed_storage_types_are_refused_with_the_operand_named", |b| {
        let (_x, x) = alloc_typed(&b, 8, Dtype::Bf16).unwrap();
        let (_y, y) = alloc_typed(&b, 8, Dtype::F32).unwrap();
        assert!(b.relu_fwd(x, y).is_err());
        // a bf16 tensor handed to an f32 entry point is caught at the launch, naming both types
        let (_y2, y2) = alloc_typed(&b, 8, Dtype::Bf16).unwrap();
        let err = b
            .launch(KernelFn::SwishFwdF32, LaunchDims::linear(8, 256, 1), &[y2.into(), x.into(), KernelArg::I64(8)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bf16 tensor") && err.contains("f32"), "{err}");
    });
}

/// `Backend::copy` (device to device; the roof of benches/elementwise.rs) moves the bytes of either
/// storage type unchanged, touches nothing outside the destination slice, and refuses a copy across
/// types, of another length, or onto itself, naming the operand.
#[test]
fn device_copy_moves_bits_and_refuses_mismatches() {
    fn check<B: Backend>(b: &B) {
        let v = special_values();
        for dtype in [Dtype::F32, Dtype::Bf16] {
            let (_s, src) = upload_typed(b, &v, dtype).unwrap();
            let (_d, dst) = upload_typed(b, &vec![7.0; v.len() + 2], dtype).unwrap();
            b.copy(src, dst.slice(1, v.len()).unwrap()).unwrap();
            let got = b.download(dst).unwrap();
            assert_eq!(bits(&got[1..=v.len()]), bits(&b.download(src).unwrap()), "{dtype} on {}", b.name());
            assert_eq!((got[0], got[v.len() + 1]), (7.0, 7.0), "{dtype} on {}: outside the slice", b.name());
        }
        let (_a, f32s) = alloc_typed(b, 8, Dtype::F32).unwrap();
        let (_c, bf16s) = alloc_typed(b, 8, Dtype::Bf16).unwrap();
        let err = b.copy(f32s, bf16s).unwrap_err().to_string();
        assert!(err.contains("copy") && err.contains("bf16"), "{err}");
        let (_e, short) = alloc_typed(b, 7, Dtype::F32).unwrap();
        let err = b.copy(f32s, short).unwrap_err().to_string();
        assert!(err.contains("copy destination"), "{err}");
        assert!(b.copy(f32s.slice(0, 4).unwrap(), f32s.slice(2, 4).unwrap()).is_err(), "overlap on {}", b.name());
    }
    check(&CpuBackend::new());
    attnas::on_cuda_targets!("device_copy_moves_bits_and_refuses_mismatches", |b| { check(&b) });
}
