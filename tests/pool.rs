//! Differential tests of the pools and joins: the CPU reference (expected) against every CUDA target
//! (`on_cuda_targets!`: the SIMT emulator with `--features emu`, and a GPU when present).
//!
//! Shapes: channel counts below, across and not a multiple of the 32-channel tile (3, 20, 33, 40),
//! pixel counts that are not multiples of the 8 pixel lanes, element counts not multiples of 256; odd
//! sides (9 x 9, 7 x 7, 5 x 3, 1 x 1: the 2x2 pool's padded case) next to even ones.
//!
//! Tolerances: the global pool forward sums <= 81 values in [-1, 1] in f32 (per-lane then across 8
//! lanes) against an f64 reference: error <= 81 * 2^-24 * 1 ~ 5e-6 before the division, so
//! abs 1e-5 plus rel 1e-5. Everything else evaluates the same f32 operations in the same order on both sides
//! (dy / hw, dx + g, 0.25 * (a + b + c + d) in row order, a + b) and must match exactly (tolerance 0).

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::pool::{PoolOps, PoolShape};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

fn shape(n: usize, h: usize, w: usize, c: usize) -> PoolShape {
    PoolShape { n, h, w, c }
}

/// (global fwd, global bwd overwrite, global bwd accumulate, pool2 fwd, pool2 bwd, add, add_assign,
/// pool2 bwd accumulate, pool2 bwd then add_assign onto the same start).
fn run<B: PoolOps>(b: &B, s: &PoolShape, seed: u64) -> Vec<Vec<f32>> {
    let x = upload_new(b, &random_vec(seed, s.input_len(), -1.0, 1.0)).unwrap();
    let x2 = upload_new(b, &random_vec(seed + 1, s.input_len(), -1.0, 1.0)).unwrap();
    let g = upload_new(b, &random_vec(seed + 2, s.pooled_len(), -1.0, 1.0)).unwrap();
    let gh = upload_new(b, &random_vec(seed + 3, s.pool2_len(), -1.0, 1.0)).unwrap();
    let pooled = b.alloc(s.pooled_len()).unwrap();
    let dx_over = upload_new(b, &random_vec(seed + 4, s.input_len(), -1.0, 1.0)).unwrap();
    let dx_acc = upload_new(b, &random_vec(seed + 4, s.input_len(), -1.0, 1.0)).unwrap();
    let half = b.alloc(s.pool2_len()).unwrap();
    let dx_half = b.alloc(s.input_len()).unwrap();
    let sum = b.alloc(s.input_len()).unwrap();
    let acc = upload_new(b, &random_vec(seed + 5, s.input_len(), -1.0, 1.0)).unwrap();
    b.global_avg_pool_fwd(s, x.tensor(), pooled.tensor()).unwrap();
    b.global_avg_pool_bwd(s, g.tensor(), dx_over.tensor(), false).unwrap();
    b.global_avg_pool_bwd(s, g.tensor(), dx_acc.tensor(), true).unwrap();
    b.avg_pool2_fwd(s, x.tensor(), half.tensor()).unwrap();
    b.avg_pool2_bwd(s, gh.tensor(), dx_half.tensor()).unwrap();
    b.residual_add_fwd(x.tensor(), x2.tensor(), sum.tensor()).unwrap();
    b.add_assign(acc.tensor(), x2.tensor()).unwrap();
    let fused = upload_new(b, &random_vec(seed + 6, s.input_len(), -1.0, 1.0)).unwrap();
    let composed = upload_new(b, &random_vec(seed + 6, s.input_len(), -1.0, 1.0)).unwrap();
    b.avg_pool2_bwd_accumulate(s, gh.tensor(), fused.tensor()).unwrap();
    b.add_assign(composed.tensor(), dx_half.tensor()).unwrap();
    [&pooled, &dx_over, &dx_acc, &half, &dx_half, &sum, &acc, &fused, &composed]
        .map(|m| b.download(m.tensor()).unwrap())
        .to_vec()
}

const NAMES: [&str; 9] = [
    "global_avg_pool_fwd",
    "global_avg_pool_bwd",
    "global_avg_pool_bwd (+=)",
    "avg_pool2_fwd",
    "avg_pool2_bwd",
    "residual_add",
    "add_assign",
    "avg_pool2_bwd (+=)",
    "avg_pool2_bwd then add_assign",
];

#[test]
fn pools_and_joins_match_cpu_reference() {
    let cpu = CpuBackend::new();
    let cases = [
        shape(2, 9, 9, 20),
        shape(2, 7, 7, 40),
        shape(2, 8, 6, 33),
        shape(1, 10, 14, 3),
        shape(3, 2, 2, 65),
        shape(2, 5, 3, 7),
        shape(1, 1, 1, 4),
    ];
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (i, s) in cases.iter().enumerate() {
        let want = run(&cpu, s, 10 * i as u64);
        // the fused fan-in is the composition it replaces, bit for bit (0.25 * dy is exact)
        assert_eq!(bits(&want[7]), bits(&want[8]), "cpu {s:?}: avg_pool2_bwd (+=) vs bwd then add_assign");
        attnas::on_cuda_targets!("pools_and_joins_match_cpu_reference", |b| {
            let got = run(&b, s, 10 * i as u64);
            assert_eq!(bits(&got[7]), bits(&got[8]), "{} {s:?}: avg_pool2_bwd (+=) vs bwd then add_assign", b.name());
            for (k, name) in NAMES.iter().enumerate() {
                let tol = if k == 0 { 1e-5 } else { 0.0 };
                assert_close(&format!("{name} {s:?} on {}", b.name()), &got[k], &want[k], tol, tol);
            }
        });
    }
}

/// Odd sizes pool like the original's `F.avg_pool2d(x, 2, padding=1)` (count_include_pad): a 7 x 7 map
/// gives 4 x 4, output (i, j) averages rows 2i-1..2i and columns 2j-1..2j with the pad as zeros over a
/// divisor of 4, checked on every target against values computed here from that definition.
#[test]
fn avg_pool2_pads_odd_sizes_like_the_original() {
    let s = shape(2, 7, 7, 3);
    let x = random_vec(9, s.input_len(), -1.0, 1.0);
    let at = |b: usize, r: i64, q: i64, ch: usize| {
        if r < 0 || q < 0 {
            0.0
        } else {
            x[((b * 7 + r as usize) * 7 + q as usize) * 3 + ch] as f64
        }
    };
    let mut want = Vec::new();
    for b in 0..2 {
        for i in 0..4i64 {
            for j in 0..4i64 {
                for ch in 0..3 {
                    let sum: f64 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .iter()
                        .map(|(dr, dq)| at(b, 2 * i - 1 + dr, 2 * j - 1 + dq, ch))
                        .sum();
                    want.push((sum / 4.0) as f32);
                }
            }
        }
    }
    assert_eq!(s.pool2_len(), want.len());
    assert_close("avg_pool2_fwd 7x7 on the CPU", &pool_fwd(&CpuBackend::new(), &s, &x), &want, 1e-6, 1e-6);
    attnas::on_cuda_targets!("avg_pool2_pads_odd_sizes_like_the_original", |b| {
        assert_close(&format!("avg_pool2_fwd 7x7 on {}", b.name()), &pool_fwd(&b, &s, &x), &want, 1e-6, 1e-6);
    });
}

fn pool_fwd<B: PoolOps>(b: &B, s: &PoolShape, x: &[f32]) -> Vec<f32> {
    let xm = upload_new(b, x).unwrap();
    let y = b.alloc(s.pool2_len()).unwrap();
    b.avg_pool2_fwd(s, xm.tensor(), y.tensor()).unwrap();
    b.download(y.tensor()).unwrap()
}
