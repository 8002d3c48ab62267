//! Differential tests of the stem convolution (3x3, stride 2, pad 1, 3 -> c_out_active of
//! c_out_stored): CPU reference against every CUDA target, forward and grad-weight, random inputs with
//! fixed seeds; shapes with odd and even sizes, c_out on the float4 path (multiple of 4) and the scalar
//! path, more than one 32-channel chunk, and c_out_active < c_out_stored.
//!
//! Tolerances: forward sums 27 products of values in [-1, 1] in f32 (bound 27 * 2^-24 * 27 ~ 4e-5):
//! abs 5e-5 + rel 1e-5. Grad-weight sums N*OH*OW (<= 72 here) products per element, in f32 within a
//! block and f64 across blocks: abs 1e-4 + rel 1e-4. Channels >= c_out_active
//! of the stored gradient must be bit-identical to their initial values.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::stem_conv::{StemConvOps, StemShape, STEM_TAPS};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

fn cases() -> Vec<StemShape> {
    vec![
        StemShape { n: 2, h: 11, w: 9, c_out_active: 16, c_out_stored: 24 }, // float4, odd sizes
        StemShape { n: 2, h: 12, w: 10, c_out_active: 6, c_out_stored: 8 },  // scalar, even sizes
        StemShape { n: 1, h: 15, w: 17, c_out_active: 36, c_out_stored: 40 }, // float4, 2 chunks
        StemShape { n: 1, h: 1, w: 2, c_out_active: 3, c_out_stored: 3 },    // tiny image, all active
    ]
}

fn run<B: StemConvOps>(b: &B, s: &StemShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = upload_new(b, &random_vec(seed, s.input_len(), -1.0, 1.0)).unwrap();
    let w = upload_new(b, &random_vec(seed + 1, s.weight_len(), -1.0, 1.0)).unwrap();
    let dy = upload_new(b, &random_vec(seed + 2, s.output_len(), -1.0, 1.0)).unwrap();
    let dw0 = random_vec(seed + 3, s.weight_len(), -4.0, 4.0);
    let dw = upload_new(b, &dw0).unwrap();
    let y = upload_new(b, &vec![f32::NAN; s.output_len()]).unwrap();
    let ws = upload_new(b, &vec![f32::NAN; s.wgrad_workspace_len()]).unwrap();
    b.stem_conv_fwd(s, x.tensor(), w.tensor(), y.tensor()).unwrap();
    b.stem_conv_bwd_weight(s, x.tensor(), dy.tensor(), dw.tensor(), ws.tensor()).unwrap();
    (b.download(y.tensor()).unwrap(), b.download(dw.tensor()).unwrap(), dw0)
}

fn assert_inactive_untouched(tag: &str, s: &StemShape, dw: &[f32], dw0: &[f32]) {
    for i in 0..STEM_TAPS * s.c_out_stored {
        if i % s.c_out_stored >= s.c_out_active {
            assert!(dw[i].to_bits() == dw0[i].to_bits(), "{tag}: inactive dw[{i}] changed {} -> {}", dw0[i], dw[i]);
        }
    }
}

#[test]
fn cuda_matches_cpu_reference() {
    attnas::on_cuda_targets!("stem_conv cuda_matches_cpu_reference", |b| {
        let cpu = CpuBackend::new();
        for (ci, s) in cases().iter().enumerate() {
            let seed = 500 + 10 * ci as u64;
            let (y_ref, dw_ref, _) = run(&cpu, s, seed);
            let (y, dw, dw0) = run(&b, s, seed);
            let tag = format!("{} {s:?}", b.name());
            assert_close(&format!("stem fwd {tag}"), &y, &y_ref, 5e-5, 1e-5);
            assert_close(&format!("stem bwd_weight {tag}"), &dw, &dw_ref, 1e-4, 1e-4);
            assert_inactive_untouched(&tag, s, &dw, &dw0);
        }
    });
}

#[test]
fn cpu_weight_gradient_leaves_inactive_channels() {
    let cpu = CpuBackend::new();
    for (ci, s) in cases().iter().enumerate() {
        let (_, dw, dw0) = run(&cpu, s, 900 + ci as u64);
        assert_inactive_untouched("cpu", s, &dw, &dw0);
        assert!(dw.iter().zip(&dw0).any(|(a, b)| a != b), "{s:?}: active gradient not written");
    }
}
