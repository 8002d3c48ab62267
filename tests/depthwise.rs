//! Differential tests of the elastic depthwise convolution: the CPU reference (expected) against every
//! CUDA target (`on_cuda_targets!`: the SIMT emulator with `--features emu`, and a GPU when present),
//! forward, grad-input and grad-weight, on random inputs with fixed seeds.
//!
//! Shapes cover k 3 and 5, stride 1 and 2, odd sizes that are not multiples of the tile (16 or 8 rows,
//! strips of 8 or 4 columns), channel counts that take the float4 path (c % 4 == 0), the scalar path
//! (c % 4 != 0, or base pointers off 16-byte alignment), one and several channel chunks (> 32), and
//! c_active < c_stored.
//!
//! Tolerances (|got - want| <= abs + rel |want|, want from the f64 reference rounded to f32):
//! - forward, grad-input: each output is a sum of at most 25 products of values in [-1, 1] accumulated
//!   in f32 by FMA; the rounding bound 25 * 2^-24 * sum|terms| <= 4e-5, so abs 5e-5 + rel 1e-5.
//! - grad-weight: each element sums N*OH*OW (here <= 2 * 11 * 11 = 242) products, in f32 per block
//!   then in f64 across blocks; the typical error grows like sqrt(terms) * 2^-24 * |term|, far below the
//!   abs 2e-4 + rel 1e-4 allowed (the worst-case linear bound would be ~3e-3 but is not reached by
//!   random signs). Elements outside the active slice must be bit-identical to their initial values.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::depthwise::{DepthwiseOps, DepthwiseShape};
use attnas::backend::{upload_new, Backend, DeviceMemory, Tensor};
use attnas::testing::{assert_close, random_vec};

fn shape(
    n: usize,
    h: usize,
    w: usize,
    c_active: usize,
    c_stored: usize,
    kernel: usize,
    stride: usize,
) -> DepthwiseShape {
    DepthwiseShape { n, h, w, c_active, c_stored, kernel, stride }
}

/// The shapes every target runs (see the file header for what each one exercises).
fn cases() -> Vec<DepthwiseShape> {
    vec![
        shape(2, 9, 7, 20, 24, 3, 1),   // float4, 5 lanes, one chunk
        shape(2, 9, 9, 18, 24, 5, 1),   // scalar (18 % 4 != 0)
        shape(2, 7, 7, 40, 48, 5, 2),   // float4, 2 chunks, odd size, stride 2
        shape(1, 10, 11, 36, 40, 3, 2), // float4, 2 chunks, even rows / odd cols, stride 2
        shape(2, 9, 9, 33, 35, 3, 1),   // scalar, 2 chunks of 17 + 16
        shape(1, 19, 18, 8, 8, 5, 1),   // more rows than one tile (16) and more cols than 2 strips
        shape(1, 11, 9, 12, 16, 5, 2),  // 11 rows: grad-input tile rounded to the stride
        shape(2, 1, 1, 4, 4, 3, 1),     // 1x1 image: every tap but the centre is padding
    ]
}

/// Inputs of one case, as host vectors: x, w, dy, and the initial dw (non-zero sentinel values).
struct Inputs {
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
    dw0: Vec<f32>,
}

fn inputs(s: &DepthwiseShape, seed: u64) -> Inputs {
    Inputs {
        x: random_vec(seed, s.input_len(), -1.0, 1.0),
        w: random_vec(seed + 1, s.weight_len(), -1.0, 1.0),
        dy: random_vec(seed + 2, s.output_len(), -1.0, 1.0),
        dw0: random_vec(seed + 3, s.weight_len(), -4.0, 4.0),
    }
}

/// Outputs of the three ops on backend `b`: (y, dx, dw after one accumulation). `misalign` shifts
/// every tensor one element into its allocation so no base pointer is 16-byte aligned.
fn run<B: DepthwiseOps>(b: &B, s: &DepthwiseShape, inp: &Inputs, misalign: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let off = usize::from(misalign);
    let place = |host: &[f32]| -> (B::Memory, Tensor) {
        let mut padded = vec![0f32; off];
        padded.extend_from_slice(host);
        let mem = upload_new(b, &padded).unwrap();
        let t = mem.tensor().slice(off, host.len()).unwrap();
        (mem, t)
    };
    let (_xm, x) = place(&inp.x);
    let (_wm, w) = place(&inp.w);
    let (_gm, dy) = place(&inp.dy);
    let (_dwm, dw) = place(&inp.dw0);
    let (_ym, y) = place(&vec![f32::NAN; s.output_len()]);
    let (_dxm, dx) = place(&vec![f32::NAN; s.input_len()]);
    let (_wsm, ws) = place(&vec![f32::NAN; s.wgrad_workspace_len()]);
    b.depthwise_fwd(s, x, w, y).unwrap();
    b.depthwise_bwd_input(s, dy, w, dx).unwrap();
    b.depthwise_bwd_weight(s, x, dy, dw, ws).unwrap();
    (b.download(y).unwrap(), b.download(dx).unwrap(), b.download(dw).unwrap())
}

/// Indices of the stored weight inside the active centre slice.
fn active(s: &DepthwiseShape, idx: usize) -> bool {
    let (tap, ch) = (idx / s.c_stored, idx % s.c_stored);
    let (ky, kx, off) = (tap / 5, tap % 5, s.tap_offset());
    ch < s.c_active && (off..off + s.kernel).contains(&ky) && (off..off + s.kernel).contains(&kx)
}

fn assert_untouched_outside_active(what: &str, s: &DepthwiseShape, dw: &[f32], dw0: &[f32]) {
    for (i, (&got, &was)) in dw.iter().zip(dw0).enumerate() {
        if !active(s, i) {
            assert!(got.to_bits() == was.to_bits(), "{what} {s:?}: inactive dw[{i}] changed from {was} to {got}");
        }
    }
}

fn compare<B: DepthwiseOps>(b: &B, misalign: bool) {
    let cpu = CpuBackend::new();
    for (ci, s) in cases().iter().enumerate() {
        let inp = inputs(s, 100 + 10 * ci as u64);
        let (y_ref, dx_ref, dw_ref) = run(&cpu, s, &inp, false);
        let (y, dx, dw) = run(b, s, &inp, misalign);
        let tag = format!("{} {s:?} misalign={misalign}", b.name());
        assert_close(&format!("fwd y {tag}"), &y, &y_ref, 5e-5, 1e-5);
        assert_close(&format!("bwd_input dx {tag}"), &dx, &dx_ref, 5e-5, 1e-5);
        assert_close(&format!("bwd_weight dw {tag}"), &dw, &dw_ref, 2e-4, 1e-4);
        assert_untouched_outside_active(&tag, s, &dw, &inp.dw0);
    }
}

#[test]
fn cuda_matches_cpu_reference() {
    attnas::on_cuda_targets!("depthwise cuda_matches_cpu_reference", |b| {
        compare(&b, false);
    });
}

#[test]
fn cuda_scalar_fallback_on_misaligned_pointers_matches_cpu_reference() {
    attnas::on_cuda_targets!("depthwise misaligned", |b| {
        compare(&b, true);
    });
}

/// The reference itself keeps the inactive part of the stored gradient and accumulates: two calls add
/// twice the gradient of one (the sandwich rule sums subnets). Gradient values themselves are checked
/// against finite differences in the reference's unit tests.
#[test]
fn cpu_weight_gradient_accumulates_into_active_slice_only() {
    let cpu = CpuBackend::new();
    let s = shape(2, 7, 6, 6, 10, 3, 2);
    let inp = inputs(&s, 7);
    let (_, _, once) = run(&cpu, &s, &inp, false);
    assert_untouched_outside_active("cpu", &s, &once, &inp.dw0);
    let twice_inp = Inputs { dw0: once.clone(), x: inp.x.clone(), w: inp.w.clone(), dy: inp.dy.clone() };
    let (_, _, twice) = run(&cpu, &s, &twice_inp, false);
    let want: Vec<f32> = inp.dw0.iter().zip(&once).map(|(&a, &b)| a + 2.0 * (b - a)).collect();
    assert_close("dw after two accumulations", &twice, &want, 1e-5, 1e-5);
    assert!(once.iter().zip(&inp.dw0).enumerate().any(|(i, (a, b))| active(&s, i) && a != b));
}

#[test]
fn short_workspace_and_bad_lengths_are_shape_errors() {
    let cpu = CpuBackend::new();
    let s = shape(1, 5, 5, 4, 8, 5, 1);
    let mem = |n: usize| cpu.alloc(n).unwrap();
    let (x, w, dy, dw) = (mem(s.input_len()), mem(s.weight_len()), mem(s.output_len()), mem(s.weight_len()));
    let ws = mem(s.wgrad_workspace_len() - 1);
    let err = cpu.depthwise_bwd_weight(&s, x.tensor(), dy.tensor(), dw.tensor(), ws.tensor()).unwrap_err();
    assert!(err.to_string().contains("workspace"), "{err}");
    let y = mem(s.output_len() + 1);
    let err = cpu.depthwise_fwd(&s, x.tensor(), w.tensor(), y.tensor()).unwrap_err();
    assert!(err.to_string().contains("depthwise_fwd y"), "{err}");
}

/// The grad-input accumulating into dx (the residual's backward fan-in of an identity block without an
/// expand conv, src/nn/backward.rs) against the grad-input followed by `add_assign`, on every backend and
/// every case (float4 and scalar paths, both strides), in f32 and bf16: bit for bit in f32 (the same f32
/// sum); in bf16 the composition rounds twice, so within half an ulp of the grad-input plus one of the sum.
#[test]
fn grad_input_accumulate_equals_grad_input_then_add_assign() {
    use attnas::backend::ops::PoolOps;
    use attnas::backend::{alloc_typed, upload_typed, Dtype};
    fn both<B: DepthwiseOps + PoolOps>(b: &B, s: &DepthwiseShape, inp: &Inputs, dtype: Dtype) -> [Vec<f32>; 3] {
        let (_dy, dy) = upload_typed(b, &inp.dy, dtype).unwrap();
        let w = upload_new(b, &inp.w).unwrap();
        let other = random_vec(77, s.input_len(), -1.0, 1.0);
        let (_f, fused) = upload_typed(b, &other, dtype).unwrap();
        b.depthwise_bwd_input_accumulate(s, dy, w.tensor(), fused).unwrap();
        let (_g, grad) = alloc_typed(b, s.input_len(), dtype).unwrap();
        b.depthwise_bwd_input(s, dy, w.tensor(), grad).unwrap();
        let (_u, unfused) = upload_typed(b, &other, dtype).unwrap();
        b.add_assign(unfused, grad).unwrap();
        [b.download(fused).unwrap(), b.download(unfused).unwrap(), b.download(grad).unwrap()]
    }
    let check = |tag: &str, [fused, unfused, grad]: &[Vec<f32>; 3], dtype: Dtype| {
        for (i, ((&f, &u), &g)) in fused.iter().zip(unfused).zip(grad).enumerate() {
            let tol = match dtype {
                Dtype::F32 => 0.0,
                Dtype::Bf16 => (g.abs() / 256.0) + (f.abs().max(u.abs()) / 128.0),
            };
            assert!((f - u).abs() <= tol, "{tag}[{i}]: accumulated {f} vs grad-input + add_assign {u}");
        }
    };
    for (k, s) in cases().iter().enumerate() {
        let inp = inputs(s, 300 + k as u64);
        for dtype in [Dtype::F32, Dtype::Bf16] {
            check(&format!("cpu {s:?} {dtype}"), &both(&CpuBackend::new(), s, &inp, dtype), dtype);
            attnas::on_cuda_targets!("grad_input_accumulate_equals_grad_input_then_add_assign", |b| {
                check(&format!("{} {s:?} {dtype}", b.name()), &both(&b, s, &inp, dtype), dtype);
            });
        }
    }
}
