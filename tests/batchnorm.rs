//! Differential tests of elastic BatchNorm: the CPU reference (expected) against every CUDA target
//! (`on_cuda_targets!`: the SIMT emulator with `--features emu`, and a GPU when present), for the
//! training forward (y and the saved batch stats), the training backward (dx, accumulated dgamma and
//! dbeta), calibration over two batches and the eval forward with the calibrated stats, each with and
//! without the fused swish; and both forwards with the fused residual add, which must equal the
//! unfused forward plus the residual bit for bit on every backend (the same f32 addition).
//!
//! Shapes: channel counts below, at and across the 32-channel tile (3, 17, 20, 33, 40), c_active <
//! c_stored (the inactive tails of dgamma, dbeta and the running stats must stay bit-identical),
//! one chunk and several chunks (1024 pixels -> 16 chunks; 4800 pixels -> 75 chunks, more than the
//! finalize kernel's 32 chunk lanes), pixel counts that are not
//! multiples of the 8 row lanes, and one case with |mean| >> std (x in [100, 101]) for the shifted sums.
//!
//! Tolerances (|got - want| <= abs + rel |want|; want from the f64 reference rounded to f32):
//! - saved mean/var and y: f32 per-thread sums of <= 128 terms then f64 across lanes/chunks, and an
//!   f32 affine + fast-exp swish (a few ulp): abs 2e-5 + rel 2e-5 covers it with margin; for the
//!   |mean| ~ 100 case the var is ~0.08 and mean's own f32 ulp is 7.6e-6, still inside.
//! - dx: dz - mean(dz) - xhat mean(dz xhat) cancels to values well below |dz|, so the error is
//!   relative to |dz| ~ 1, not to dx: abs 1e-4 + rel 1e-4.
//! - dgamma, dbeta: sums of P <= 1024 terms of size ~1 in f32 per thread then f64: abs 1e-3 + rel 1e-4
//!   (the sums reach ~30; f32 per-thread accumulation of 128 terms errs ~1e-5 each).
//! - running stats: f32 update arithmetic on the device vs f64 on the CPU: abs 2e-5 + rel 2e-5.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::batchnorm::{BatchNormOps, BatchNormSpec, BnActivation, BnGrads, BnParams, BnWork};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

struct Case {
    spec: BatchNormSpec,
    x_lo: f32,
    x_hi: f32,
}

fn case(pixels: usize, c_active: usize, c_stored: usize, swish: bool, x_lo: f32, x_hi: f32) -> Case {
    let activation = if swish { BnActivation::Swish } else { BnActivation::Identity };
    Case { spec: BatchNormSpec { pixels, c_active, c_stored, activation }, x_lo, x_hi }
}

fn cases() -> Vec<Case> {
    vec![
        case(2 * 9 * 9, 20, 24, true, -2.0, 2.0),
        case(2 * 7 * 7, 40, 48, false, -2.0, 2.0),
        case(5 * 3, 3, 8, true, -1.0, 3.0),
        case(4 * 16 * 16, 33, 40, true, -2.0, 2.0),
        case(2 * 13 * 11, 17, 17, false, 100.0, 101.0),
        case(2 * 13 * 11, 17, 17, true, 100.0, 101.0),
        // 75 chunks of 64 rows: more chunks than the finalize kernel's 32 chunk lanes
        case(3 * 40 * 40, 5, 8, true, -2.0, 2.0),
    ]
}

/// Everything one backend computes for one case.
struct Outputs {
    y: Vec<f32>,
    saved: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    y_eval: Vec<f32>,
    residual: Vec<f32>,
    /// The training and eval forwards with the residual fused.
    y_res: Vec<f32>,
    y_eval_res: Vec<f32>,
}

fn run<B: BatchNormOps>(b: &B, case: &Case, seed: u64) -> Outputs {
    let s = case.spec;
    let n = s.pixels * s.c_active;
    let x1 = upload_new(b, &random_vec(seed, n, case.x_lo, case.x_hi)).unwrap();
    let x2 = upload_new(b, &random_vec(seed + 1, n, case.x_lo, case.x_hi)).unwrap();
    let dy = upload_new(b, &random_vec(seed + 2, n, -1.0, 1.0)).unwrap();
    let gamma = upload_new(b, &random_vec(seed + 3, s.c_stored, 0.5, 1.5)).unwrap();
    let beta = upload_new(b, &random_vec(seed + 4, s.c_stored, -0.5, 0.5)).unwrap();
    // gradients and running stats start at sentinel values: the active part accumulates onto them,
    // the inactive tail must keep them bit for bit
    let dgamma = upload_new(b, &random_vec(seed + 5, s.c_stored, -1.0, 1.0)).unwrap();
    let dbeta = upload_new(b, &random_vec(seed + 6, s.c_stored, -1.0, 1.0)).unwrap();
    let rm = upload_new(b, &random_vec(seed + 7, s.c_stored, -1.0, 1.0)).unwrap();
    let rv = upload_new(b, &random_vec(seed + 8, s.c_stored, 0.5, 1.5)).unwrap();
    let y = b.alloc(n).unwrap();
    let dx = b.alloc(n).unwrap();
    let y_eval = b.alloc(n).unwrap();
    let saved = b.alloc(2 * s.c_active).unwrap();
    let saved2 = b.alloc(2 * s.c_active).unwrap();
    let scratch = b.alloc(s.scratch_len()).unwrap();

    let p = BnParams { gamma: gamma.tensor(), beta: beta.tensor() };
    let g = BnGrads { dgamma: dgamma.tensor(), dbeta: dbeta.tensor() };
    let work = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
    b.batchnorm_train_fwd(&s, x1.tensor(), y.tensor(), p, work, None).unwrap();
    let residual = random_vec(seed + 9, n, -3.0, 3.0);
    let r = upload_new(b, &residual).unwrap();
    let (y_res, y_eval_res, saved3) = (b.alloc(n).unwrap(), b.alloc(n).unwrap(), b.alloc(2 * s.c_active).unwrap());
    let work3 = BnWork { saved: saved3.tensor(), scratch: scratch.tensor() };
    b.batchnorm_train_fwd(&s, x1.tensor(), y_res.tensor(), p, work3, Some(r.tensor())).unwrap();
    b.batchnorm_train_bwd(&s, x1.tensor(), dy.tensor(), dx.tensor(), p, g, work).unwrap();
    // calibration over two batches, then eval on the first batch with the calibrated stats
    b.batchnorm_calibrate(&s, saved.tensor(), rm.tensor(), rv.tensor(), 1).unwrap();
    let work2 = BnWork { saved: saved2.tensor(), scratch: scratch.tensor() };
    b.batchnorm_train_fwd(&s, x2.tensor(), y_eval.tensor(), p, work2, None).unwrap();
    b.batchnorm_calibrate(&s, saved2.tensor(), rm.tensor(), rv.tensor(), 2).unwrap();
    b.batchnorm_eval_fwd(&s, x1.tensor(), y_eval.tensor(), p, rm.tensor(), rv.tensor(), None).unwrap();
    b.batchnorm_eval_fwd(&s, x1.tensor(), y_eval_res.tensor(), p, rm.tensor(), rv.tensor(), Some(r.tensor())).unwrap();
    let get = |m: &B::Memory| b.download(m.tensor()).unwrap();
    Outputs {
        y: get(&y),
        saved: get(&saved),
        dx: get(&dx),
        dgamma: get(&dgamma),
        dbeta: get(&dbeta),
        running_mean: get(&rm),
        running_var: get(&rv),
        y_eval: get(&y_eval),
        residual,
        y_res: get(&y_res),
        y_eval_res: get(&y_eval_res),
    }
}

fn compare(name: &str, case: &Case, got: &Outputs, want: &Outputs) {
    let s = case.spec;
    let c = s.c_active;
    let tag = |what: &str| format!("{name} {s:?} {what}");
    assert_close(&tag("saved"), &got.saved, &want.saved, 2e-5, 2e-5);
    assert_close(&tag("y"), &got.y, &want.y, 2e-5, 2e-5);
    assert_close(&tag("dx"), &got.dx, &want.dx, 1e-4, 1e-4);
    assert_close(&tag("dgamma"), &got.dgamma[..c], &want.dgamma[..c], 1e-3, 1e-4);
    assert_close(&tag("dbeta"), &got.dbeta[..c], &want.dbeta[..c], 1e-3, 1e-4);
    assert_close(&tag("running_mean"), &got.running_mean[..c], &want.running_mean[..c], 2e-5, 2e-5);
    assert_close(&tag("running_var"), &got.running_var[..c], &want.running_var[..c], 2e-5, 2e-5);
    assert_close(&tag("y_eval"), &got.y_eval, &want.y_eval, 2e-5, 2e-5);
    // fused residual against the composition of the CPU references: y's error (2e-5 (1 + |y|), |y| < 4
    // here) carries over to the sum, which can cancel to near 0 (residual in [-3, 3]), so the bound is
    // absolute: 1e-4; bit-exactness against the backend's own unfused pair is checked below
    let plus = |y: &[f32]| y.iter().zip(&want.residual).map(|(a, r)| a + r).collect::<Vec<f32>>();
    assert_close(&tag("y + residual (fused)"), &got.y_res, &plus(&want.y), 1e-4, 2e-5);
    assert_close(&tag("y_eval + residual (fused)"), &got.y_eval_res, &plus(&want.y_eval), 1e-4, 2e-5);
    fused_equals_unfused(&tag("fused"), got);
    for (what, g, w) in [
        ("dgamma tail", &got.dgamma, &want.dgamma),
        ("dbeta tail", &got.dbeta, &want.dbeta),
        ("running_mean tail", &got.running_mean, &want.running_mean),
        ("running_var tail", &got.running_var, &want.running_var),
    ] {
        assert_eq!(g[c..], w[c..], "{}", tag(what));
    }
}

/// On one backend, the fused forward is its own unfused forward plus the residual, bit for bit.
fn fused_equals_unfused(tag: &str, o: &Outputs) {
    for (what, fused, y) in [("train", &o.y_res, &o.y), ("eval", &o.y_eval_res, &o.y_eval)] {
        let want: Vec<f32> = y.iter().zip(&o.residual).map(|(a, r)| a + r).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        assert_eq!(bits(fused), bits(&want), "{tag} {what}: fused BN + residual differs from BN then add");
    }
}

#[test]
fn batchnorm_matches_cpu_reference() {
    let cpu = CpuBackend::new();
    for (i, case) in cases().iter().enumerate() {
        let seed = 100 * i as u64;
        let want = run(&cpu, case, seed);
        fused_equals_unfused(&format!("cpu {:?}", case.spec), &want);
        // the CPU itself: inactive tails untouched relative to the initial sentinels
        let c = case.spec.c_active;
        assert_eq!(want.dgamma[c..], random_vec(seed + 5, case.spec.c_stored, -1.0, 1.0)[c..]);
        assert_eq!(want.running_var[c..], random_vec(seed + 8, case.spec.c_stored, 0.5, 1.5)[c..]);
        attnas::on_cuda_targets!("batchnorm_matches_cpu_reference", |b| {
            let got = run(&b, case, seed);
            compare(&b.name(), case, &got, &want);
        });
    }
}

/// Shape errors name the tensor at fault instead of reading out of bounds.
#[test]
fn batchnorm_rejects_bad_shapes() {
    let cpu = CpuBackend::new();
    let s = BatchNormSpec { pixels: 10, c_active: 4, c_stored: 8, activation: BnActivation::Identity };
    let x = cpu.alloc(40).unwrap();
    let y = cpu.alloc(40).unwrap();
    let gamma = cpu.alloc(8).unwrap();
    let beta_short = cpu.alloc(4).unwrap();
    let saved = cpu.alloc(8).unwrap();
    let scratch = cpu.alloc(s.scratch_len()).unwrap();
    let p = BnParams { gamma: gamma.tensor(), beta: beta_short.tensor() };
    let work = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
    let err = cpu.batchnorm_train_fwd(&s, x.tensor(), y.tensor(), p, work, None).unwrap_err().to_string();
    assert!(err.contains("beta"), "{err}");
    let p = BnParams { gamma: gamma.tensor(), beta: gamma.tensor() };
    let short = BnWork { saved: saved.tensor(), scratch: scratch.tensor().slice(0, 1).unwrap() };
    let err = cpu.batchnorm_train_fwd(&s, x.tensor(), y.tensor(), p, short, None).unwrap_err().to_string();
    assert!(err.contains("scratch"), "{err}");
    let err = cpu.batchnorm_train_fwd(&s, x.tensor(), x.tensor(), p, work, None).unwrap_err().to_string();
    assert!(err.contains("overlaps"), "{err}");
    // the residual: y's length, and never y itself (it may be x: only read)
    let short_r = Some(x.tensor().slice(0, 39).unwrap());
    let err = cpu.batchnorm_train_fwd(&s, x.tensor(), y.tensor(), p, work, short_r).unwrap_err().to_string();
    assert!(err.contains("residual"), "{err}");
    let err = cpu.batchnorm_train_fwd(&s, x.tensor(), y.tensor(), p, work, Some(y.tensor())).unwrap_err().to_string();
    assert!(err.contains("residual") && err.contains("overlaps"), "{err}");
    cpu.batchnorm_train_fwd(&s, x.tensor(), y.tensor(), p, work, Some(x.tensor())).unwrap();
}

/// The projection BN with drop-connect and the shortcut join in one pass (issue #13 item 2) against the
/// composition it replaces: `batchnorm_train_fwd`, `drop_connect_fwd`, `residual_add_fwd`, on every
/// backend. f32: the same f32 operations (the kernel's product is `__fmul_rn`, never contracted into the
/// join's add), so bit for bit. bf16: the composition rounds three times (the BN output, the product, the
/// sum) and the fused op once, so they may differ by about an ulp of the BN output times the drop scale
/// (2) plus one of the sum. The drop rate 0.5 over 12 samples must drop some samples and keep others:
/// a dropped sample's output is exactly its residual.
#[test]
fn dropped_join_equals_bn_then_drop_connect_then_join() {
    use attnas::backend::ops::batchnorm::DropConnect;
    use attnas::backend::ops::regularize::{DropMask, RegularizeOps};
    use attnas::backend::ops::PoolOps;
    use attnas::backend::{alloc_typed, upload_typed, Dtype};
    let (n, hw, c, c_stored) = (12, 5 * 5, 40, 48);
    let s = BatchNormSpec { pixels: n * hw, c_active: c, c_stored, activation: BnActivation::Swish };
    let drop = DropConnect { mask: DropMask { seed: 21, rate: 0.5 }, per_sample: hw * c };
    let x = random_vec(31, s.elements(), -3.0, 5.0);
    let residual = random_vec(32, s.elements(), -2.0, 2.0);
    /// (fused, unfused, BN output) on one backend.
    fn both<B: BatchNormOps + RegularizeOps + PoolOps>(
        b: &B,
        s: &BatchNormSpec,
        drop: &DropConnect,
        (x, residual): (&[f32], &[f32]),
        dtype: Dtype,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (_x, xt) = upload_typed(b, x, dtype).unwrap();
        let (_r, rt) = upload_typed(b, residual, dtype).unwrap();
        let gamma = upload_new(b, &random_vec(33, s.c_stored, 0.5, 1.5)).unwrap();
        let beta = upload_new(b, &random_vec(34, s.c_stored, -0.5, 0.5)).unwrap();
        let p = BnParams { gamma: gamma.tensor(), beta: beta.tensor() };
        let saved = b.alloc(2 * s.c_active).unwrap();
        let scratch = b.alloc(s.scratch_len().max(1)).unwrap();
        let w = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
        let (_f, fused) = alloc_typed(b, s.elements(), dtype).unwrap();
        b.batchnorm_train_fwd_dropped_join(s, xt, fused, p, w, rt, drop).unwrap();
        let (_y, bn_out) = alloc_typed(b, s.elements(), dtype).unwrap();
        b.batchnorm_train_fwd(s, xt, bn_out, p, w, None).unwrap();
        let (_d, dropped) = alloc_typed(b, s.elements(), dtype).unwrap();
        b.drop_connect_fwd(&drop.mask, drop.per_sample, bn_out, dropped).unwrap();
        let (_u, unfused) = alloc_typed(b, s.elements(), dtype).unwrap();
        b.residual_add_fwd(dropped, rt, unfused).unwrap();
        (b.download(fused).unwrap(), b.download(unfused).unwrap(), b.download(bn_out).unwrap())
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let check = |tag: &str, (fused, unfused, bn): &(Vec<f32>, Vec<f32>, Vec<f32>), dtype: Dtype| {
        if dtype == Dtype::F32 {
            assert_eq!(bits(fused), bits(unfused), "{tag}: fused differs from BN, drop-connect, join");
        } else {
            let ulp = |v: f32| (v.abs() / 128.0).max(1e-30);
            for (i, ((&f, &u), &z)) in fused.iter().zip(unfused).zip(bn).enumerate() {
                let tol = 2.0 * ulp(z) + ulp(f.abs().max(u.abs()));
                assert!((f - u).abs() <= tol, "{tag}[{i}]: fused {f} vs composition {u} (BN output {z})");
            }
        }
    };
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let cpu = both(&CpuBackend::new(), &s, &drop, (&x, &residual), dtype);
        check(&format!("cpu {dtype}"), &cpu, dtype);
        // some samples dropped (output = residual, as stored), some kept
        let stored_residual: Vec<f32> = {
            let (_r, rt) = upload_typed(&CpuBackend::new(), &residual, dtype).unwrap();
            CpuBackend::new().download(rt).unwrap()
        };
        let per = drop.per_sample;
        let dropped =
            (0..n).filter(|k| bits(&cpu.0[k * per..][..per]) == bits(&stored_residual[k * per..][..per])).count();
        assert!(dropped > 0 && dropped < n, "{dtype}: {dropped} of {n} samples dropped at rate 0.5");
        attnas::on_cuda_targets!("dropped_join_equals_bn_then_drop_connect_then_join", |b| {
            let got = both(&b, &s, &drop, (&x, &residual), dtype);
            check(&format!("{} {dtype}", b.name()), &got, dtype);
            // and the fused op against the CPU's fused op: the BN tolerance of this file, plus an ulp in bf16
            for (i, (&g, &w)) in got.0.iter().zip(&cpu.0).enumerate() {
                let tol = 1e-4 + 2e-5 * w.abs() + if dtype == Dtype::Bf16 { w.abs() / 64.0 } else { 0.0 };
                assert!((g - w).abs() <= tol, "{} {dtype} [{i}]: {g} vs cpu {w}", b.name());
            }
        });
    }
}

/// The depthwise BN fused with the SE squeeze (issue #13 item 2): `batchnorm_{train,eval}_fwd_pooled`
/// against the BN forward followed by `global_avg_pool_fwd` of its output, on every backend, in f32 and
/// bf16. The fused kernel has the pool kernel's geometry and summation order and pools the value as
/// stored, so on each backend y and the pooled means are bit-identical to the composition; across
/// backends the pooled means agree to the pool's tolerance (abs 1e-5 + rel 1e-5, the order of an f32 sum
/// of <= 49 values, plus an ulp of y's storage type for values pooled from a rounded y).
#[test]
fn pooled_forwards_equal_bn_then_global_pool() {
    use attnas::backend::ops::pool::PoolShape;
    use attnas::backend::ops::PoolOps;
    use attnas::backend::{alloc_typed, upload_typed, Dtype};
    // 3 samples of 7x7 (odd: the 8 pixel lanes end unevenly), 40 of 48 channels (a partial channel tile)
    let pool = PoolShape { n: 3, h: 7, w: 7, c: 40 };
    let s = BatchNormSpec { pixels: 3 * 49, c_active: 40, c_stored: 48, activation: BnActivation::Swish };
    let x = random_vec(41, s.elements(), -2.0, 6.0);
    /// (fused y, fused pooled, unfused y, unfused pooled) for training and for eval mode.
    type Four = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
    fn both<B: BatchNormOps + PoolOps>(
        b: &B,
        s: &BatchNormSpec,
        pool: &PoolShape,
        x: &[f32],
        dtype: Dtype,
    ) -> [Four; 2] {
        let (_x, xt) = upload_typed(b, x, dtype).unwrap();
        let gamma = upload_new(b, &random_vec(42, s.c_stored, 0.5, 1.5)).unwrap();
        let beta = upload_new(b, &random_vec(43, s.c_stored, -0.5, 0.5)).unwrap();
        let rm = upload_new(b, &random_vec(44, s.c_stored, 0.0, 2.0)).unwrap();
        let rv = upload_new(b, &random_vec(45, s.c_stored, 0.5, 3.0)).unwrap();
        let p = BnParams { gamma: gamma.tensor(), beta: beta.tensor() };
        let saved = b.alloc(2 * s.c_active).unwrap();
        let scratch = b.alloc(s.scratch_len().max(1)).unwrap();
        let w = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
        let running = (rm.tensor(), rv.tensor());
        let mut out = Vec::new();
        for train in [true, false] {
            let (_y1, y1) = alloc_typed(b, s.elements(), dtype).unwrap();
            let pooled1 = b.alloc(pool.pooled_len()).unwrap();
            let (_y0, y0) = alloc_typed(b, s.elements(), dtype).unwrap();
            let pooled0 = b.alloc(pool.pooled_len()).unwrap();
            if train {
                b.batchnorm_train_fwd_pooled(s, xt, y1, p, w, pool, pooled1.tensor()).unwrap();
                b.batchnorm_train_fwd(s, xt, y0, p, w, None).unwrap();
            } else {
                b.batchnorm_eval_fwd_pooled(s, xt, y1, p, running, pool, pooled1.tensor()).unwrap();
                b.batchnorm_eval_fwd(s, xt, y0, p, running.0, running.1, None).unwrap();
            }
            b.global_avg_pool_fwd(pool, y0, pooled0.tensor()).unwrap();
            let d = |t| b.download(t).unwrap();
            out.push((d(y1), d(pooled1.tensor()), d(y0), d(pooled0.tensor())));
        }
        [out.remove(0), out.remove(0)]
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let same = |tag: &str, r: &[Four; 2]| {
        for (mode, (y1, p1, y0, p0)) in ["train", "eval"].iter().zip(r) {
            assert_eq!(bits(y1), bits(y0), "{tag} {mode}: fused y differs from the BN forward's");
            assert_eq!(bits(p1), bits(p0), "{tag} {mode}: fused squeeze differs from the global pool of y");
        }
    };
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let cpu = both(&CpuBackend::new(), &s, &pool, &x, dtype);
        same(&format!("cpu {dtype}"), &cpu);
        attnas::on_cuda_targets!("pooled_forwards_equal_bn_then_global_pool", |b| {
            let got = both(&b, &s, &pool, &x, dtype);
            same(&format!("{} {dtype}", b.name()), &got);
            for (mode, (g, w)) in ["train", "eval"].iter().zip(got.iter().zip(&cpu)) {
                let ulp = if dtype == Dtype::Bf16 { 1.0 / 128.0 } else { 0.0 };
                for (i, (&a, &c)) in g.1.iter().zip(&w.1).enumerate() {
                    let tol = 1e-4 + (2e-5 + ulp) * c.abs();
                    assert!((a - c).abs() <= tol, "{} {dtype} {mode} pooled[{i}]: {a} vs cpu {c}", b.name());
                }
            }
        });
    }
}

/// The backward of a BN whose output an SE block squeezed (`batchnorm_train_bwd_pooled`) against the
/// composition it replaces: the pool's backward adding the squeeze's gradient to dy in a pass of its own
/// (`global_avg_pool_bwd`, accumulate), then the plain backward. The fused kernels add
/// d_pooled[b, ch] / hw to dy as they read it, with the pool backward's f32 division and addition, so in
/// f32 dx, dgamma and dbeta are bit-identical to the composition on each backend. In bf16 the
/// composition rounds dy + d_pooled / hw to storage and the fused op does not, so there each backend is
/// held to the CPU's fused reference (the same rounding points): the BN backward's cross-backend
/// tolerances (dx abs 1e-4 + rel 1e-4, dgamma/dbeta abs 1e-3 + rel 1e-4) plus one bf16 step of dx
/// (rel 2^-8, a value on a rounding boundary may round either way after f32 sums in another order).
/// Shapes: 3 samples of 7x7 (sample boundaries inside the 8 row lanes' strides and inside chunks),
/// 4 samples of 12x12 (several chunks of 64 rows, boundaries mid-chunk); partial channel tiles.
#[test]
fn squeezed_backward_equals_pool_backward_then_bn_backward() {
    use attnas::backend::ops::pool::PoolShape;
    use attnas::backend::ops::PoolOps;
    use attnas::backend::{alloc_typed, upload_typed, Dtype};
    /// (fused dx, dgamma, dbeta, unfused dx, dgamma, dbeta)
    type Six = [Vec<f32>; 6];
    fn both<B: BatchNormOps + PoolOps>(b: &B, s: &BatchNormSpec, pool: &PoolShape, dtype: Dtype) -> Six {
        let x = random_vec(61, s.elements(), -2.0, 3.0);
        let dy = random_vec(62, s.elements(), -1.0, 1.0);
        let (_x, xt) = upload_typed(b, &x, dtype).unwrap();
        let (_dy1, dy1) = upload_typed(b, &dy, dtype).unwrap();
        let (_dy0, dy0) = upload_typed(b, &dy, dtype).unwrap();
        // the squeeze's gradient is of the size SE produces: [-0.5, 0.5] per sample and channel
        let d_pooled = upload_new(b, &random_vec(63, pool.pooled_len(), -0.5, 0.5)).unwrap();
        let gamma = upload_new(b, &random_vec(64, s.c_stored, 0.5, 1.5)).unwrap();
        let beta = upload_new(b, &random_vec(65, s.c_stored, -0.5, 0.5)).unwrap();
        let p = BnParams { gamma: gamma.tensor(), beta: beta.tensor() };
        let saved = b.alloc(2 * s.c_active).unwrap();
        let scratch = b.alloc(s.scratch_len().max(1)).unwrap();
        let w = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
        let (_y, y) = alloc_typed(b, s.elements(), dtype).unwrap();
        b.batchnorm_train_fwd(s, xt, y, p, w, None).unwrap();
        let grads = |seed| {
            let dg = upload_new(b, &random_vec(seed, s.c_stored, -1.0, 1.0)).unwrap();
            let db = upload_new(b, &random_vec(seed + 1, s.c_stored, -1.0, 1.0)).unwrap();
            (BnGrads { dgamma: dg.tensor(), dbeta: db.tensor() }, dg, db)
        };
        let ((g1, _dg1, _db1), (g0, _dg0, _db0)) = (grads(66), grads(66));
        let (_dx1, dx1) = alloc_typed(b, s.elements(), dtype).unwrap();
        let (_dx0, dx0) = alloc_typed(b, s.elements(), dtype).unwrap();
        b.batchnorm_train_bwd_pooled(s, xt, dy1, dx1, p, g1, w, pool, d_pooled.tensor()).unwrap();
        b.global_avg_pool_bwd(pool, d_pooled.tensor(), dy0, true).unwrap();
        b.batchnorm_train_bwd(s, xt, dy0, dx0, p, g0, w).unwrap();
        let d = |t| b.download(t).unwrap();
        let c = s.c_active;
        [
            d(dx1),
            d(g1.dgamma)[..c].to_vec(),
            d(g1.dbeta)[..c].to_vec(),
            d(dx0),
            d(g0.dgamma)[..c].to_vec(),
            d(g0.dbeta)[..c].to_vec(),
        ]
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let same = |tag: &str, r: &Six| {
        for (k, what) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
            assert_eq!(bits(&r[k]), bits(&r[k + 3]), "{tag}: fused {what} differs from pool backward + BN backward");
        }
    };
    let shapes = [
        (PoolShape { n: 3, h: 7, w: 7, c: 40 }, 48, BnActivation::Swish),
        (PoolShape { n: 4, h: 12, w: 12, c: 33 }, 40, BnActivation::Identity),
    ];
    for (pool, c_stored, activation) in shapes {
        let s = BatchNormSpec { pixels: pool.n * pool.h * pool.w, c_active: pool.c, c_stored, activation };
        for dtype in [Dtype::F32, Dtype::Bf16] {
            let cpu = both(&CpuBackend::new(), &s, &pool, dtype);
            if dtype == Dtype::F32 {
                same(&format!("cpu {dtype} {pool:?}"), &cpu);
            }
            attnas::on_cuda_targets!("squeezed_backward_equals_pool_backward_then_bn_backward", |b| {
                let got = both(&b, &s, &pool, dtype);
                let tag = format!("{} {dtype} {pool:?}", b.name());
                if dtype == Dtype::F32 {
                    same(&tag, &got);
                }
                let step = if dtype == Dtype::Bf16 { 1.0 / 256.0 } else { 0.0 };
                assert_close(&format!("{tag} dx"), &got[0], &cpu[0], 1e-4, 1e-4 + step);
                assert_close(&format!("{tag} dgamma"), &got[1], &cpu[1], 1e-3, 1e-4);
                assert_close(&format!("{tag} dbeta"), &got[2], &cpu[2], 1e-3, 1e-4);
            });
        }
    }
}

/// The per-pixel kernels give each channel lane 4 consecutive channels (kernels/channel_vec.cuh) and
/// move them with one 16-byte (f32) or 8-byte (bf16) access when c % 4 == 0 and every activation is
/// aligned to 4 elements, else one value at a time. Which path runs must change no bit: every BN entry
/// point with its activations at an odd element offset (the scalar path) against the same values aligned
/// (the wide path), in f32 and bf16, on every CUDA target (the CPU has a single path; the forward fused
/// with the SE squeeze keeps one channel per lane and is run for its statistics kernels). Shapes: 40 of
/// 48 channels (16 channel lanes, 2 rows per warp) and 136 of 144 (a full 128-channel tile and 8
/// channels of a second), sample boundaries inside the row lanes' strides, drop-connect dropping some
/// samples.
#[test]
fn wide_channel_access_equals_scalar_access() {
    use attnas::backend::ops::batchnorm::DropConnect;
    use attnas::backend::ops::pool::PoolShape;
    use attnas::backend::ops::regularize::DropMask;
    use attnas::backend::{alloc_typed, Dtype, Tensor};
    /// Every output of every entry point, activations placed `offset` elements into their buffers.
    fn all_outputs<B: BatchNormOps>(
        b: &B,
        s: &BatchNormSpec,
        pool: &PoolShape,
        dtype: Dtype,
        offset: usize,
    ) -> Vec<Vec<f32>> {
        let n = s.elements();
        let mut keep = Vec::new();
        let mut placed = |host: Option<&[f32]>| -> Tensor {
            let (mem, t) = alloc_typed(b, n + offset, dtype).unwrap();
            let t = t.slice(offset, n).unwrap();
            if let Some(h) = host {
                b.upload(t, h).unwrap();
            }
            keep.push(mem);
            t
        };
        let x = placed(Some(&random_vec(71, n, -2.0, 3.0)));
        let dy = placed(Some(&random_vec(72, n, -1.0, 1.0)));
        let residual = placed(Some(&random_vec(73, n, -2.0, 2.0)));
        let outs: Vec<Tensor> = (0..7).map(|_| placed(None)).collect();
        let gamma = upload_new(b, &random_vec(74, s.c_stored, 0.5, 1.5)).unwrap();
        let beta = upload_new(b, &random_vec(75, s.c_stored, -0.5, 0.5)).unwrap();
        let rm = upload_new(b, &random_vec(76, s.c_stored, -0.5, 0.5)).unwrap();
        let rv = upload_new(b, &random_vec(77, s.c_stored, 0.5, 1.5)).unwrap();
        let d_pooled = upload_new(b, &random_vec(78, pool.pooled_len(), -0.5, 0.5)).unwrap();
        let grads: Vec<B::Memory> =
            (0..4).map(|k| upload_new(b, &random_vec(79 + k, s.c_stored, -1.0, 1.0)).unwrap()).collect();
        let pooled: Vec<B::Memory> = (0..2).map(|_| b.alloc(pool.pooled_len()).unwrap()).collect();
        let saved = b.alloc(2 * s.c_active).unwrap();
        let scratch = b.alloc(s.scratch_len()).unwrap();
        let p = BnParams { gamma: gamma.tensor(), beta: beta.tensor() };
        let w = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
        let drop = DropConnect { mask: DropMask { seed: 5, rate: 0.5 }, per_sample: pool.h * pool.w * s.c_active };
        let g0 = BnGrads { dgamma: grads[0].tensor(), dbeta: grads[1].tensor() };
        let g1 = BnGrads { dgamma: grads[2].tensor(), dbeta: grads[3].tensor() };
        b.batchnorm_train_fwd_dropped_join(s, x, outs[0], p, w, residual, &drop).unwrap();
        b.batchnorm_train_fwd_pooled(s, x, outs[1], p, w, pool, pooled[0].tensor()).unwrap();
        b.batchnorm_eval_fwd_pooled(s, x, outs[2], p, (rm.tensor(), rv.tensor()), pool, pooled[1].tensor()).unwrap();
        b.batchnorm_eval_fwd(s, x, outs[3], p, rm.tensor(), rv.tensor(), Some(residual)).unwrap();
        b.batchnorm_train_fwd(s, x, outs[4], p, w, Some(residual)).unwrap();
        b.batchnorm_train_bwd(s, x, dy, outs[5], p, g0, w).unwrap();
        b.batchnorm_train_bwd_pooled(s, x, dy, outs[6], p, g1, w, pool, d_pooled.tensor()).unwrap();
        let mut got: Vec<Vec<f32>> = outs.iter().map(|&t| b.download(t).unwrap()).collect();
        got.extend(pooled.iter().chain(&grads).chain([&saved]).map(|m| b.download(m.tensor()).unwrap()));
        got
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let shapes = [(PoolShape { n: 3, h: 7, w: 7, c: 40 }, 48), (PoolShape { n: 2, h: 9, w: 9, c: 136 }, 144)];
    for (pool, c_stored) in shapes {
        let s = BatchNormSpec {
            pixels: pool.n * pool.h * pool.w,
            c_active: pool.c,
            c_stored,
            activation: BnActivation::Swish,
        };
        for dtype in [Dtype::F32, Dtype::Bf16] {
            attnas::on_cuda_targets!("wide_channel_access_equals_scalar_access", |b| {
                let wide = all_outputs(&b, &s, &pool, dtype, 0);
                let scalar = all_outputs(&b, &s, &pool, dtype, 1);
                for (k, (w, v)) in wide.iter().zip(&scalar).enumerate() {
                    assert_eq!(
                        bits(w),
                        bits(v),
                        "{} {dtype} {pool:?}: output {k}, wide access differs from scalar",
                        b.name()
                    );
                }
            });
        }
    }
}
