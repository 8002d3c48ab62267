//! The CUDA launchers of the existing op families (swish, GEMM) on every CUDA target: the SIMT emulator
//! (feature `emu`) and a GPU when present, against plain-loop references. These exercise the launch
//! seam end to end: grid geometry, argument order, the kernels themselves and the GEMM mapping.

use attnas::backend::cpu::activation as reference;
use attnas::backend::ops::{ActivationOps, GemmOps};
use attnas::backend::{Backend, DeviceMemory, GemmSpec, Transpose};
use attnas::on_cuda_targets;
use attnas::testing::{assert_close, random_vec};

/// Sizes around the 256-thread block: 1, one short, exact, one over, several blocks, a large odd n.
const SIZES: &[usize] = &[1, 255, 256, 257, 1000, 70_001];

// Tolerance: the kernel uses __expf (GPU: 2 + 1.2|x| ulp; emulator: libm expf), the reference evaluates
// the sigmoid in f64. For |x| <= 8 that bounds the relative error near 1e-6; 1e-5 rel + 1e-6 abs leaves
// margin without hiding an indexing error (which gives O(1) differences).
const ABS: f32 = 1e-6;
const REL: f32 = 1e-5;

#[test]
fn swish_forward_matches_reference_on_cuda_targets() {
    on_cuda_targets!("swish_forward_matches_reference_on_cuda_targets", |b| {
        for &n in SIZES {
            let mut xs = random_vec(1 + n as u64, n, -8.0, 8.0);
            xs[0] = -100.0; // saturated tail
            let x = b.alloc(n).unwrap();
            let y = b.alloc(n).unwrap();
            b.upload(x.tensor(), &xs).unwrap();
            b.swish_fwd(x.tensor(), y.tensor()).unwrap();
            let mut want = vec![0.0; n];
            reference::swish_fwd(&xs, &mut want);
            assert_close(&format!("{} swish_fwd n={n}", b.name()), &b.download(y.tensor()).unwrap(), &want, ABS, REL);
        }
    });
}

#[test]
fn swish_backward_matches_reference_on_cuda_targets() {
    on_cuda_targets!("swish_backward_matches_reference_on_cuda_targets", |b| {
        for &n in SIZES {
            let xs = random_vec(7 + n as u64, n, -8.0, 8.0);
            let dys = random_vec(11 + n as u64, n, -1.0, 1.0);
            let (x, dy, dx) = (b.alloc(n).unwrap(), b.alloc(n).unwrap(), b.alloc(n).unwrap());
            b.upload(x.tensor(), &xs).unwrap();
            b.upload(dy.tensor(), &dys).unwrap();
            b.swish_bwd(x.tensor(), dy.tensor(), dx.tensor()).unwrap();
            let mut want = vec![0.0; n];
            reference::swish_bwd(&xs, &dys, &mut want);
            assert_close(&format!("{} swish_bwd n={n}", b.name()), &b.download(dx.tensor()).unwrap(), &want, ABS, REL);
        }
    });
}

/// Row-major `C = alpha op(A) op(B) + beta C` by the definition, f64 accumulation.
fn naive_gemm(s: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..s.m {
        for j in 0..s.n {
            let mut acc = 0.0f64;
            for p in 0..s.k {
                let av = match s.trans_a {
                    Transpose::No => a[i * s.lda + p],
                    Transpose::Yes => a[p * s.lda + i],
                };
                let bv = match s.trans_b {
                    Transpose::No => b[p * s.ldb + j],
                    Transpose::Yes => b[j * s.ldb + p],
                };
                acc += av as f64 * bv as f64;
            }
            let old = if s.beta == 0.0 { 0.0 } else { s.beta as f64 * c[i * s.ldc + j] as f64 };
            c[i * s.ldc + j] = (s.alpha as f64 * acc + old) as f32;
        }
    }
}

#[test]
fn gemm_matches_definition_on_cuda_targets() {
    // The supernet's three forms (N,T forward; N,N grad-input; T,N grad-weight with beta = 1) with
    // sliced leading dimensions (ld > active columns) and odd sizes.
    let cases = [
        (Transpose::No, Transpose::Yes, 37, 19, 23, 0.0f32),
        (Transpose::No, Transpose::No, 37, 23, 19, 0.0),
        (Transpose::Yes, Transpose::No, 19, 23, 37, 1.0),
        (Transpose::Yes, Transpose::Yes, 5, 7, 3, 0.5),
    ];
    on_cuda_targets!("gemm_matches_definition_on_cuda_targets", |be| {
        for (ci, &(ta, tb, m, n, k, beta)) in cases.iter().enumerate() {
            let mut s = GemmSpec::new(m, n, k);
            s.trans_a = ta;
            s.trans_b = tb;
            s.lda = s.stored_a().1 + 3;
            s.ldb = s.stored_b().1 + 2;
            s.ldc = n + 1;
            s.alpha = 1.5;
            s.beta = beta;
            let (na, nb, nc) = s.required_lens();
            let av = random_vec(100 + ci as u64, na, -1.0, 1.0);
            let bv = random_vec(200 + ci as u64, nb, -1.0, 1.0);
            let cv = random_vec(300 + ci as u64, nc, -1.0, 1.0);
            let (a, b, c) = (be.alloc(na).unwrap(), be.alloc(nb).unwrap(), be.alloc(nc).unwrap());
            be.upload(a.tensor(), &av).unwrap();
            be.upload(b.tensor(), &bv).unwrap();
            be.upload(c.tensor(), &cv).unwrap();
            be.gemm(&s, a.tensor(), b.tensor(), c.tensor()).unwrap();
            let mut want = cv.clone();
            naive_gemm(&s, &av, &bv, &mut want);
            // f32 accumulation over k <= 37 terms of magnitude <= 1: error well under 1e-5 relative
            assert_close(
                &format!("{} gemm case {ci}", be.name()),
                &be.download(c.tensor()).unwrap(),
                &want,
                1e-5,
                1e-5,
            );
        }
    });
}
