//! Swish forward/backward: the CUDA kernels (emulated, and on a GPU when present) against the CPU
//! reference. Tolerance: the kernel uses `__expf` (<= 2 ulp plus range reduction error, ~1e-6 relative
//! on a GPU) and f32 arithmetic while the reference evaluates the sigmoid in f64, so abs 1e-5 + rel 1e-5.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::ActivationOps;
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

/// Sizes: empty, one, not multiples of the 256-thread block, and more than one block.
const SIZES: &[usize] = &[0, 1, 31, 255, 257, 1000, 4099];

fn swish_reference(x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let cpu = CpuBackend::new();
    let xm = upload_new(&cpu, x).unwrap();
    let dym = upload_new(&cpu, dy).unwrap();
    let y = cpu.alloc(x.len()).unwrap();
    let dx = cpu.alloc(x.len()).unwrap();
    cpu.swish_fwd(xm.tensor(), y.tensor()).unwrap();
    cpu.swish_bwd(xm.tensor(), dym.tensor(), dx.tensor()).unwrap();
    (cpu.download(y.tensor()).unwrap(), cpu.download(dx.tensor()).unwrap())
}

fn swish_on<B: ActivationOps>(b: &B, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let xm = upload_new(b, x).unwrap();
    let dym = upload_new(b, dy).unwrap();
    let y = b.alloc(x.len()).unwrap();
    let dx = b.alloc(x.len()).unwrap();
    b.swish_fwd(xm.tensor(), y.tensor()).unwrap();
    b.swish_bwd(xm.tensor(), dym.tensor(), dx.tensor()).unwrap();
    (b.download(y.tensor()).unwrap(), b.download(dx.tensor()).unwrap())
}

#[test]
fn swish_kernels_match_reference() {
    attnas::on_cuda_targets!("swish_kernels_match_reference", |b| {
        for (i, &n) in SIZES.iter().enumerate() {
            // wide range so both saturated tails and the curved middle are covered
            let x = random_vec(10 + i as u64, n, -12.0, 12.0);
            let dy = random_vec(100 + i as u64, n, -2.0, 2.0);
            let (y_ref, dx_ref) = swish_reference(&x, &dy);
            let (y, dx) = swish_on(&b, &x, &dy);
            assert_close(&format!("swish_fwd n={n} on {}", b.name()), &y, &y_ref, 1e-5, 1e-5);
            assert_close(&format!("swish_bwd n={n} on {}", b.name()), &dx, &dx_ref, 1e-5, 1e-5);
        }
    });
}

#[test]
fn swish_rejects_mismatched_lengths() {
    let cpu = CpuBackend::new();
    let x = cpu.alloc(10).unwrap();
    let y = cpu.alloc(9).unwrap();
    let err = cpu.swish_fwd(x.tensor(), y.tensor()).unwrap_err().to_string();
    assert!(err.contains("swish_fwd y") && err.contains("10"), "{err}");
    attnas::on_cuda_targets!("swish_rejects_mismatched_lengths", |b| {
        let x = b.alloc(10).unwrap();
        let y = b.alloc(9).unwrap();
        assert!(b.swish_fwd(x.tensor(), y.tensor()).is_err());
    });
}

#[test]
fn swish_rejects_aliased_output() {
    let cpu = CpuBackend::new();
    let x = cpu.alloc(16).unwrap();
    let err = cpu.swish_fwd(x.tensor(), x.tensor()).unwrap_err().to_string();
    assert!(err.contains("overlaps"), "{err}");
}

/// ReLU and hard-sigmoid: the kernels evaluate the same f32 operations in the same order as the
/// reference (max/compare, `min(max(x + 3, 0), 6) / 6` with IEEE division), so they must agree to
/// the bit (tolerance 0), including exactly at the kinks 0 and +-3, which the inputs contain.
#[test]
fn relu_and_hard_sigmoid_kernels_match_reference_exactly() {
    let cpu = CpuBackend::new();
    for (i, &n) in SIZES.iter().enumerate() {
        let mut x = random_vec(200 + i as u64, n, -5.0, 5.0);
        for (k, v) in [0.0f32, 3.0, -3.0, -0.0].into_iter().enumerate() {
            if k < n {
                x[k] = v;
            }
        }
        let dy = random_vec(300 + i as u64, n, -2.0, 2.0);
        let want = all_four(&cpu, &x, &dy);
        attnas::on_cuda_targets!("relu_and_hard_sigmoid_kernels_match_reference_exactly", |b| {
            let got = all_four(&b, &x, &dy);
            for (k, what) in ["relu_fwd", "relu_bwd", "hard_sigmoid_fwd", "hard_sigmoid_bwd"].iter().enumerate() {
                assert_close(&format!("{what} n={n} on {}", b.name()), &got[k], &want[k], 0.0, 0.0);
            }
        });
    }
}

/// (relu y, relu dx, hard-sigmoid y, hard-sigmoid dx) on one backend.
fn all_four<B: ActivationOps>(b: &B, x: &[f32], dy: &[f32]) -> [Vec<f32>; 4] {
    let xm = upload_new(b, x).unwrap();
    let dym = upload_new(b, dy).unwrap();
    let outs: Vec<_> = (0..4).map(|_| b.alloc(x.len()).unwrap()).collect();
    b.relu_fwd(xm.tensor(), outs[0].tensor()).unwrap();
    b.relu_bwd(xm.tensor(), dym.tensor(), outs[1].tensor()).unwrap();
    b.hard_sigmoid_fwd(xm.tensor(), outs[2].tensor()).unwrap();
    b.hard_sigmoid_bwd(xm.tensor(), dym.tensor(), outs[3].tensor()).unwrap();
    [0, 1, 2, 3].map(|k| b.download(outs[k].tensor()).unwrap())
}

/// The element-wise kernels move 4 values per access when every pointer is 4-element aligned
/// (kernels/elementwise.cuh) and fall back to a scalar loop otherwise and for the tail. Both paths must
/// give the same bits: each op runs on the same values at offsets 0 (vector path and a tail of 3) and
/// 1, 2, 3 (scalar path; in bf16, offset 2 is 4-byte but not 8-byte aligned) of a larger tensor, in f32
/// and bf16, and the outputs must be bit-identical; offset 0 is also held to the CPU reference (the
/// CPU bf16 mode for bf16; tolerance as above plus one bf16 ulp, the two f32 values may straddle a
/// rounding boundary).
#[test]
fn vector_and_scalar_paths_give_the_same_bits() {
    use attnas::backend::ops::PoolOps;
    use attnas::backend::{alloc_typed, upload_typed, Dtype, Tensor};
    const N: usize = 1027;
    type Op<B> = fn(&B, Tensor, Tensor, Tensor) -> attnas::error::Result<()>;
    fn run_all<B: ActivationOps + PoolOps>(b: &B, dtype: Dtype, offset: usize) -> Vec<(&'static str, Vec<f32>)> {
        let x = random_vec(7, N, -8.0, 8.0);
        let dy = random_vec(8, N, -2.0, 2.0);
        let padded = |v: &[f32]| {
            let mut p = vec![0.5f32; offset];
            p.extend_from_slice(v);
            p.extend(std::iter::repeat_n(0.25, 4));
            p
        };
        let (_xm, xt) = upload_typed(b, &padded(&x), dtype).unwrap();
        let (_dm, dt) = upload_typed(b, &padded(&dy), dtype).unwrap();
        let (xs, ds) = (xt.slice(offset, N).unwrap(), dt.slice(offset, N).unwrap());
        let ops: [(&'static str, Op<B>); 8] = [
            ("swish_fwd", |b, x, _, y| b.swish_fwd(x, y)),
            ("swish_bwd", |b, x, dy, dx| b.swish_bwd(x, dy, dx)),
            ("relu_fwd", |b, x, _, y| b.relu_fwd(x, y)),
            ("relu_bwd", |b, x, dy, dx| b.relu_bwd(x, dy, dx)),
            ("hard_sigmoid_fwd", |b, x, _, y| b.hard_sigmoid_fwd(x, y)),
            ("hard_sigmoid_bwd", |b, x, dy, dx| b.hard_sigmoid_bwd(x, dy, dx)),
            ("residual_add_fwd", |b, x, dy, y| b.residual_add_fwd(x, dy, y)),
            ("add_assign", |b, x, _, y| b.add_assign(y, x)),
        ];
        ops.iter()
            .map(|(name, op)| {
                let (_om, ot) = alloc_typed(b, N + offset + 4, dtype).unwrap();
                let out = ot.slice(offset, N).unwrap();
                // add_assign accumulates onto dy's values
                let (_im, it) = upload_typed(b, &padded(&dy), dtype).unwrap();
                let out = if *name == "add_assign" { it.slice(offset, N).unwrap() } else { out };
                op(b, xs, ds, out).unwrap();
                (*name, b.download(out).unwrap())
            })
            .collect()
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let reference = run_all(&CpuBackend::new(), dtype, 0);
        attnas::on_cuda_targets!("vector_and_scalar_paths_give_the_same_bits", |b| {
            let aligned = run_all(&b, dtype, 0);
            for ((name, got), (_, want)) in aligned.iter().zip(&reference) {
                for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                    let ulp = if dtype == Dtype::Bf16 { (w.abs().max(g.abs()) / 128.0).max(1e-30) } else { 0.0 };
                    let tol = 1e-5 + 1e-5 * w.abs() + ulp;
                    assert!((g - w).abs() <= tol, "{name} {dtype} [{i}] on {}: {g} vs CPU {w}", b.name());
                }
            }
            for offset in 1..4 {
                for ((name, got), (_, want)) in run_all(&b, dtype, offset).iter().zip(&aligned) {
                    assert_eq!(bits(got), bits(want), "{name} {dtype} at offset {offset} on {}", b.name());
                }
            }
        });
    }
}
