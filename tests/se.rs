//! Squeeze-and-excite: the `se_fwd`/`se_bwd` composite (global pool, GEMMs on the sliced 1x1 weights,
//! bias + ReLU / hard-sigmoid epilogues, channel scale) on the CPU backend and every CUDA target
//! against the f64 whole-block reference `cpu::se`; and the bias epilogue primitives against
//! `cpu::bias` directly (they are shared with the linear head).
//!
//! Shapes: mid and squeeze widths below the stored maxima (the inactive parts of all four parameter
//! gradients must keep their sentinel values bit for bit), channel counts not multiples of the
//! 32-channel tile, pixel counts not multiples of the 8 pixel lanes.
//!
//! Tolerances (|got - want| <= abs + rel |want|):
//! - SE forward y: f32 pool sums (<= 81 terms) and f32 GEMMs (<= 40 terms) against f64; the scale is
//!   a hard-sigmoid (slope <= 1/6) of values with error ~1e-6: abs 1e-5 + rel 1e-5.
//! - SE dx and parameter gradients: the same error carried through two more GEMMs and the per-sample
//!   sums over <= 81 pixels: abs 5e-5 + rel 1e-4. (A pre-activation within rounding of a ReLU /
//!   hard-sigmoid kink could flip a derivative between the two sides; these fixed seeds hit none.)
//! - Bias epilogues: same f32 operations as the reference except the column sums (f32 serial on the
//!   device vs f64) and swish's sigmoid (f32 fast exp on the device vs f64, a few ulps): abs 1e-5 +
//!   rel 1e-5.

use attnas::backend::cpu::bias::BiasAct;
use attnas::backend::cpu::se::{se_block_bwd, se_block_fwd, SeDims, SeGradsMut, SeParams as HostSeParams};
use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::bias::{BiasActSpec, BiasOps};
use attnas::backend::ops::se::{SeParams, SeShape, SqueezeExciteOps};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

/// Host inputs of one SE case: x, dy, the four parameters and the four gradient sentinels.
struct Data {
    x: Vec<f32>,
    dy: Vec<f32>,
    params: [Vec<f32>; 4],
    grads0: [Vec<f32>; 4],
}

fn param_lens(s: &SeShape) -> [usize; 4] {
    [s.se_stored * s.c_stored, s.se_stored, s.c_stored * s.se_stored, s.c_stored]
}

fn data(s: &SeShape, seed: u64) -> Data {
    let len = s.n * s.h * s.w * s.c;
    let lens = param_lens(s);
    // weight scales chosen so both hard-sigmoid regions (saturated and linear) occur
    let scales = [1.0, 0.5, 2.0, 2.0];
    Data {
        x: random_vec(seed, len, -2.0, 2.0),
        dy: random_vec(seed + 1, len, -1.0, 1.0),
        params: [0, 1, 2, 3].map(|k| random_vec(seed + 2 + k as u64, lens[k], -scales[k], scales[k])),
        grads0: [0, 1, 2, 3].map(|k| random_vec(seed + 10 + k as u64, lens[k], -1.0, 1.0)),
    }
}

/// (y, dx, dw_reduce, db_reduce, dw_expand, db_expand) from the f64 whole-block reference.
fn reference(s: &SeShape, d: &Data) -> Vec<Vec<f32>> {
    let dims = SeDims { n: s.n, hw: s.h * s.w, c: s.c, c_stored: s.c_stored, se: s.se, se_stored: s.se_stored };
    let p =
        HostSeParams { w_reduce: &d.params[0], b_reduce: &d.params[1], w_expand: &d.params[2], b_expand: &d.params[3] };
    let mut y = vec![0.0; d.x.len()];
    se_block_fwd(&dims, &d.x, &p, &mut y);
    let mut dx = vec![0.0; d.x.len()];
    let mut g = d.grads0.clone();
    let [g0, g1, g2, g3] = &mut g;
    se_block_bwd(
        &dims,
        &d.x,
        &p,
        &d.dy,
        &mut dx,
        SeGradsMut { w_reduce: g0, b_reduce: g1, w_expand: g2, b_expand: g3 },
    );
    let mut out = vec![y, dx];
    out.extend(g);
    out
}

fn run<B: SqueezeExciteOps>(b: &B, s: &SeShape, d: &Data) -> Vec<Vec<f32>> {
    let x = upload_new(b, &d.x).unwrap();
    let dy = upload_new(b, &d.dy).unwrap();
    let pm: Vec<_> = d.params.iter().map(|v| upload_new(b, v).unwrap()).collect();
    let gm: Vec<_> = d.grads0.iter().map(|v| upload_new(b, v).unwrap()).collect();
    let y = b.alloc(d.x.len()).unwrap();
    let dx = b.alloc(d.x.len()).unwrap();
    let saved = b.alloc(s.saved_len()).unwrap();
    let scratch = b.alloc(s.scratch_len()).unwrap();
    let as_params = |m: &[B::Memory]| SeParams {
        w_reduce: m[0].tensor(),
        b_reduce: m[1].tensor(),
        w_expand: m[2].tensor(),
        b_expand: m[3].tensor(),
    };
    let (p, g) = (as_params(&pm), as_params(&gm));
    b.se_fwd(s, x.tensor(), &p, y.tensor(), saved.tensor()).unwrap();
    b.se_bwd(s, x.tensor(), &p, saved.tensor(), dy.tensor(), dx.tensor(), &g, scratch.tensor()).unwrap();
    let mut out = vec![b.download(y.tensor()).unwrap(), b.download(dx.tensor()).unwrap()];
    out.extend(gm.iter().map(|m| b.download(m.tensor()).unwrap()));
    out
}

fn compare(name: &str, s: &SeShape, d: &Data, got: &[Vec<f32>], want: &[Vec<f32>]) {
    let what = ["y", "dx", "dw_reduce", "db_reduce", "dw_expand", "db_expand"];
    for k in 0..6 {
        let (abs, rel) = if k == 0 { (1e-5, 1e-5) } else { (5e-5, 1e-4) };
        assert_close(&format!("se {} {s:?} on {name}", what[k]), &got[k], &want[k], abs, rel);
    }
    // inactive parts of the gradients: bit-identical to the sentinels
    let active = |k: usize, i: usize| match k {
        0 => i / s.c_stored < s.se && i % s.c_stored < s.c,
        1 => i < s.se,
        2 => i / s.se_stored < s.c && i % s.se_stored < s.se,
        _ => i < s.c,
    };
    for k in 0..4 {
        for (i, (&g, &g0)) in got[k + 2].iter().zip(&d.grads0[k]).enumerate() {
            assert!(
                active(k, i) || g.to_bits() == g0.to_bits(),
                "se {} [{i}] inactive but changed on {name}",
                what[k + 2]
            );
        }
    }
}

#[test]
fn se_composite_matches_whole_block_reference() {
    let cpu = CpuBackend::new();
    let cases = [
        SeShape { n: 2, h: 7, w: 7, c: 40, c_stored: 48, se: 16, se_stored: 24 },
        SeShape { n: 2, h: 9, w: 9, c: 20, c_stored: 24, se: 8, se_stored: 8 },
        SeShape { n: 1, h: 5, w: 3, c: 33, c_stored: 33, se: 10, se_stored: 12 },
    ];
    for (i, s) in cases.iter().enumerate() {
        let d = data(s, 1000 + 20 * i as u64);
        let want = reference(s, &d);
        compare(&cpu.name(), s, &d, &run(&cpu, s, &d), &want);
        attnas::on_cuda_targets!("se_composite_matches_whole_block_reference", |b| {
            compare(&b.name(), s, &d, &run(&b, s, &d), &want);
        });
    }
}

/// (out, dpre, dbias after bwd, dbias after grad_accumulate, y after add_inplace) for one activation.
fn bias_ops<B: BiasOps>(b: &B, spec: &BiasActSpec, seed: u64) -> Vec<Vec<f32>> {
    let (rows, cols) = (spec.rows, spec.cols);
    let pre = upload_new(b, &random_vec(seed, rows * cols, -5.0, 5.0)).unwrap();
    let dout = upload_new(b, &random_vec(seed + 1, rows * cols, -1.0, 1.0)).unwrap();
    let bias = upload_new(b, &random_vec(seed + 2, cols + 3, -1.0, 1.0)).unwrap();
    let dbias = upload_new(b, &random_vec(seed + 3, cols + 3, -1.0, 1.0)).unwrap();
    let dbias2 = upload_new(b, &random_vec(seed + 3, cols + 3, -1.0, 1.0)).unwrap();
    let y = upload_new(b, &random_vec(seed + 4, rows * cols, -1.0, 1.0)).unwrap();
    let out = b.alloc(rows * cols).unwrap();
    let dpre = b.alloc(rows * cols).unwrap();
    b.bias_act_fwd(spec, pre.tensor(), bias.tensor(), out.tensor()).unwrap();
    b.bias_act_bwd(spec, pre.tensor(), bias.tensor(), dout.tensor(), dpre.tensor(), dbias.tensor()).unwrap();
    b.bias_grad_accumulate(rows, cols, dout.tensor(), dbias2.tensor()).unwrap();
    b.bias_add_inplace(rows, cols, y.tensor(), bias.tensor()).unwrap();
    [&out, &dpre, &dbias, &dbias2, &y].map(|m| b.download(m.tensor()).unwrap()).to_vec()
}

#[test]
fn bias_epilogues_match_cpu_reference() {
    let cpu = CpuBackend::new();
    for (i, act) in [BiasAct::Identity, BiasAct::Relu, BiasAct::HardSigmoid, BiasAct::Swish].into_iter().enumerate() {
        for (rows, cols) in [(5, 37), (64, 8), (1, 300)] {
            let spec = BiasActSpec { rows, cols, act };
            let seed = 10 * i as u64 + cols as u64;
            let want = bias_ops(&cpu, &spec, seed);
            attnas::on_cuda_targets!("bias_epilogues_match_cpu_reference", |b| {
                let got = bias_ops(&b, &spec, seed);
                for (k, what) in
                    ["out", "dpre", "dbias", "dbias (grad_accumulate)", "bias_add_inplace"].iter().enumerate()
                {
                    assert_close(&format!("{what} {spec:?} on {}", b.name()), &got[k], &want[k], 1e-5, 1e-5);
                }
                assert_eq!(got[2][cols..], want[2][cols..], "dbias tail touched");
            });
        }
    }
}
