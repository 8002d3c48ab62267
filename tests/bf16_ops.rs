//! The remaining bf16 kernels (issue #13 item 1) on every CUDA target against the CPU bf16 mode: the
//! pools and joins (global average pool T -> f32 and back, 2x2 pool, residual add, add-assign), the SE
//! channel scale, dropout and drop-connect, and the stem conv (f32 image -> T, grad-weight from T).
//!
//! Tolerances. Both sides widen the same bf16 inputs exactly and compute in f32; where the f32 result is
//! the same sequence of operations (the joins, the 2x2 pool in the reference's order, the masks, the
//! channel scale) the outputs are bit-identical; sums over pixels (the global pool, ds, the stem) differ
//! in order by ~1e-6 relative, so their f32 outputs get abs 1e-5 + rel 1e-5, and a bf16 output one bf16
//! ulp on top (the two f32 values may straddle a rounding boundary). The stem's grad-weight sums
//! N*OH*OW = 2*12*12 products per element in f32 partials then f64: abs 1e-4 + rel 1e-4.

mod bf16_common;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::pool::PoolShape;
use attnas::backend::ops::regularize::DropMask;
use attnas::backend::ops::stem_conv::StemShape;
use attnas::backend::{alloc_typed, upload_new, upload_typed, Backend, DeviceMemory, Dtype, SupernetOps};
use attnas::testing::random_vec;
use bf16_common::{assert_within, is_bf16};

const BF16: Dtype = Dtype::Bf16;

/// Every op's outputs on one backend, by name, from the same seeded inputs.
fn outputs<B: SupernetOps>(b: &B) -> Vec<(&'static str, Vec<f32>)> {
    let s = PoolShape { n: 2, h: 7, w: 5, c: 12 };
    let n_in = s.input_len();
    let (_x, x) = upload_typed(b, &random_vec(1, n_in, -2.0, 2.0), BF16).unwrap();
    let (_x2, x2) = upload_typed(b, &random_vec(2, n_in, -2.0, 2.0), BF16).unwrap();
    let mut out = Vec::new();
    // global pool: T -> f32, and back (overwrite, then accumulate onto x2's values)
    let pooled = b.alloc(s.pooled_len()).unwrap();
    b.global_avg_pool_fwd(&s, x, pooled.tensor()).unwrap();
    out.push(("global_avg_pool_fwd", b.download(pooled.tensor()).unwrap()));
    let (_d, d) = alloc_typed(b, n_in, BF16).unwrap();
    b.global_avg_pool_bwd(&s, pooled.tensor(), d, false).unwrap();
    out.push(("global_avg_pool_bwd", b.download(d).unwrap()));
    let (_acc, acc) = upload_typed(b, &random_vec(2, n_in, -2.0, 2.0), BF16).unwrap();
    b.global_avg_pool_bwd(&s, pooled.tensor(), acc, true).unwrap();
    out.push(("global_avg_pool_bwd (accumulate)", b.download(acc).unwrap()));
    // 2x2 pool (odd sizes: padded), and its backward
    let (_p2, p2) = alloc_typed(b, s.pool2_len(), BF16).unwrap();
    b.avg_pool2_fwd(&s, x, p2).unwrap();
    out.push(("avg_pool2_fwd", b.download(p2).unwrap()));
    let (_g2, g2) = alloc_typed(b, n_in, BF16).unwrap();
    b.avg_pool2_bwd(&s, p2, g2).unwrap();
    out.push(("avg_pool2_bwd", b.download(g2).unwrap()));
    let (_ga, ga) = upload_typed(b, &random_vec(8, n_in, -2.0, 2.0), BF16).unwrap();
    b.avg_pool2_bwd_accumulate(&s, p2, ga).unwrap();
    out.push(("avg_pool2_bwd (accumulate)", b.download(ga).unwrap()));
    // joins
    let (_y, y) = alloc_typed(b, n_in, BF16).unwrap();
    b.residual_add_fwd(x, x2, y).unwrap();
    out.push(("residual_add_fwd", b.download(y).unwrap()));
    b.add_assign(y, x).unwrap();
    out.push(("add_assign", b.download(y).unwrap()));
    // SE channel scale: s f32, x/y/dy/dx T, ds f32
    let scale = upload_new(b, &random_vec(3, s.pooled_len(), 0.0, 1.0)).unwrap();
    let (_sy, sy) = alloc_typed(b, n_in, BF16).unwrap();
    b.channel_scale_fwd(&s, x, scale.tensor(), sy).unwrap();
    out.push(("channel_scale_fwd", b.download(sy).unwrap()));
    let (_sdx, sdx) = alloc_typed(b, n_in, BF16).unwrap();
    let ds = b.alloc(s.pooled_len()).unwrap();
    b.channel_scale_bwd(&s, x, scale.tensor(), x2, sdx, ds.tensor()).unwrap();
    out.push(("channel_scale_bwd dx", b.download(sdx).unwrap()));
    out.push(("channel_scale_bwd ds", b.download(ds.tensor()).unwrap()));
    // dropout and drop-connect
    let mask = DropMask { seed: 11, rate: 0.3 };
    let (_dr, dr) = alloc_typed(b, n_in, BF16).unwrap();
    b.dropout_fwd(&mask, x, dr).unwrap();
    out.push(("dropout_fwd", b.download(dr).unwrap()));
    b.drop_connect_fwd(&mask, n_in / s.n, x, dr).unwrap();
    out.push(("drop_connect_fwd", b.download(dr).unwrap()));
    // stem conv: f32 image in, bf16 out; grad-weight from a bf16 dy into f32 dw
    let st = StemShape { n: 2, h: 23, w: 24, c_out_active: 12, c_out_stored: 16 };
    let img = upload_new(b, &random_vec(4, st.input_len(), -2.0, 2.0)).unwrap();
    let w = upload_new(b, &random_vec(5, st.weight_len(), -0.5, 0.5)).unwrap();
    let (_sto, sto) = alloc_typed(b, st.output_len(), BF16).unwrap();
    b.stem_conv_fwd(&st, img.tensor(), w.tensor(), sto).unwrap();
    out.push(("stem_conv_fwd", b.download(sto).unwrap()));
    let (_sdy, sdy) = upload_typed(b, &random_vec(6, st.output_len(), -1.0, 1.0), BF16).unwrap();
    let dw = upload_new(b, &random_vec(7, st.weight_len(), -1.0, 1.0)).unwrap();
    let ws = b.alloc(st.wgrad_workspace_len()).unwrap();
    b.stem_conv_bwd_weight(&st, img.tensor(), sdy, dw.tensor(), ws.tensor()).unwrap();
    out.push(("stem_conv_bwd_weight", b.download(dw.tensor()).unwrap()));
    out
}

/// (abs, rel, bf16 ulps, bit-identical) per op; see the file header.
fn tolerance(op: &str) -> (f32, f32, f32, bool) {
    match op {
        "global_avg_pool_fwd" | "channel_scale_bwd ds" => (1e-5, 1e-5, 0.0, false),
        "global_avg_pool_bwd" | "global_avg_pool_bwd (accumulate)" | "stem_conv_fwd" => (1e-5, 1e-5, 1.0, false),
        "stem_conv_bwd_weight" => (1e-4, 1e-4, 0.0, false),
        _ => (0.0, 0.0, 0.0, true),
    }
}

#[test]
fn bf16_pool_se_regularize_and_stem_kernels_match_the_cpu_bf16_mode() {
    let want = outputs(&CpuBackend::new());
    for (op, v) in &want {
        let stays_f32 = matches!(*op, "global_avg_pool_fwd" | "channel_scale_bwd ds" | "stem_conv_bwd_weight");
        assert_eq!(is_bf16(v), !stays_f32 || v.iter().all(|x| *x == 0.0), "{op}: storage type of the output");
    }
    attnas::on_cuda_targets!("bf16_pool_se_regularize_and_stem_kernels_match_the_cpu_bf16_mode", |b| {
        for ((op, g), (_, w)) in outputs(&b).iter().zip(&want) {
            let (abs, rel, ulps, exact) = tolerance(op);
            if exact {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(g), bits(w), "{op} on {}: bit-identical", b.name());
            } else {
                assert_within(&format!("{op} on {}", b.name()), g, w, abs, rel, ulps);
            }
        }
    });
}
