//! The linear head composite (GEMM with the sliced weight's leading dimension + bias epilogue) on the
//! CPU backend and every CUDA target against the f64 whole-layer reference `cpu::linear`.
//!
//! Shapes: in_active < in_stored (the weight slice is read through ldb = in_stored, and the inactive
//! columns of dw must keep their sentinel values bit for bit), sizes that are not multiples of 32.
//! Tolerance: each output is an f32 dot product of <= 64 terms in [-1, 1] (host SGEMM or cuBLAS, FMA
//! order unspecified) against f64: abs 2e-5 + rel 1e-5 for y and dx; dw sums `rows` <= 5 products
//! onto sentinels of size <= 4: abs 2e-5 + rel 1e-5 as well.

use attnas::backend::cpu::linear::{linear_bwd, linear_fwd, LinearDims};
use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::linear::{LinearOps, LinearParams, LinearShape};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    dy: Vec<f32>,
    dw0: Vec<f32>,
    db0: Vec<f32>,
}

fn data(s: &LinearShape, seed: u64) -> Data {
    Data {
        x: random_vec(seed, s.rows * s.in_active, -1.0, 1.0),
        w: random_vec(seed + 1, s.out * s.in_stored, -1.0, 1.0),
        bias: random_vec(seed + 2, s.out, -1.0, 1.0),
        dy: random_vec(seed + 3, s.rows * s.out, -1.0, 1.0),
        dw0: random_vec(seed + 4, s.out * s.in_stored, -4.0, 4.0),
        db0: random_vec(seed + 5, s.out, -4.0, 4.0),
    }
}

/// (y, dx, dw, db) through the ops layer.
fn run<B: LinearOps>(b: &B, s: &LinearShape, d: &Data) -> [Vec<f32>; 4] {
    let x = upload_new(b, &d.x).unwrap();
    let w = upload_new(b, &d.w).unwrap();
    let bias = upload_new(b, &d.bias).unwrap();
    let dy = upload_new(b, &d.dy).unwrap();
    let dw = upload_new(b, &d.dw0).unwrap();
    let db = upload_new(b, &d.db0).unwrap();
    let y = b.alloc(s.rows * s.out).unwrap();
    let dx = b.alloc(d.x.len()).unwrap();
    let p = LinearParams { w: w.tensor(), bias: bias.tensor() };
    let g = LinearParams { w: dw.tensor(), bias: db.tensor() };
    b.linear_fwd(s, x.tensor(), p, y.tensor()).unwrap();
    b.linear_bwd(s, x.tensor(), p, dy.tensor(), dx.tensor(), g).unwrap();
    [&y, &dx, &dw, &db].map(|m| b.download(m.tensor()).unwrap())
}

fn reference(s: &LinearShape, d: &Data) -> [Vec<f32>; 4] {
    let dims = LinearDims { rows: s.rows, in_active: s.in_active, in_stored: s.in_stored, out: s.out };
    let mut y = vec![0.0; s.rows * s.out];
    linear_fwd(&dims, &d.x, &d.w, &d.bias, &mut y);
    let (mut dx, mut dw, mut db) = (vec![0.0; d.x.len()], d.dw0.clone(), d.db0.clone());
    linear_bwd(&dims, &d.x, &d.w, &d.dy, &mut dx, &mut dw, &mut db);
    [y, dx, dw, db]
}

#[test]
fn linear_composite_matches_reference() {
    let cpu = CpuBackend::new();
    let cases = [
        LinearShape { rows: 3, in_active: 37, in_stored: 40, out: 29 },
        LinearShape { rows: 5, in_active: 64, in_stored: 64, out: 10 },
        LinearShape { rows: 1, in_active: 8, in_stored: 24, out: 33 },
    ];
    for (i, s) in cases.iter().enumerate() {
        let d = data(s, 50 * i as u64);
        let want = reference(s, &d);
        let check = |name: String, got: &[Vec<f32>; 4]| {
            for (k, what) in ["y", "dx", "dw", "db"].iter().enumerate() {
                assert_close(&format!("{what} {s:?} on {name}"), &got[k], &want[k], 2e-5, 1e-5);
            }
            // inactive columns of dw: bit-identical to the sentinels
            for o in 0..s.out {
                let row = o * s.in_stored;
                assert_eq!(got[2][row + s.in_active..row + s.in_stored], d.dw0[row + s.in_active..row + s.in_stored]);
            }
        };
        check(cpu.name(), &run(&cpu, s, &d));
        attnas::on_cuda_targets!("linear_composite_matches_reference", |b| {
            check(b.name(), &run(&b, s, &d));
        });
    }
}
