//! Dropout and drop-connect: the CUDA kernels (emulated, and on a GPU when present) must draw exactly
//! the CPU reference's masks (same counter-based hash of (seed, index)) and scale by the same f32
//! `1 / keep`, so forward and backward match bit for bit (tolerance 0). The backward is checked to
//! be the forward's map (same mask) on every backend.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::regularize::{DropMask, RegularizeOps};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

/// (dropout fwd, dropout bwd, drop-connect fwd, drop-connect bwd) for `samples` samples.
fn run<B: RegularizeOps>(b: &B, samples: usize, per: usize, m: &DropMask, seed: u64) -> [Vec<f32>; 4] {
    let n = samples * per;
    let x = upload_new(b, &random_vec(seed, n, -1.0, 1.0)).unwrap();
    let dy = upload_new(b, &random_vec(seed + 1, n, -1.0, 1.0)).unwrap();
    let outs: Vec<_> = (0..4).map(|_| b.alloc(n).unwrap()).collect();
    b.dropout_fwd(m, x.tensor(), outs[0].tensor()).unwrap();
    b.dropout_bwd(m, dy.tensor(), outs[1].tensor()).unwrap();
    b.drop_connect_fwd(m, per, x.tensor(), outs[2].tensor()).unwrap();
    b.drop_connect_bwd(m, per, dy.tensor(), outs[3].tensor()).unwrap();
    [0, 1, 2, 3].map(|k| b.download(outs[k].tensor()).unwrap())
}

#[test]
fn masks_match_cpu_reference_exactly() {
    let cpu = CpuBackend::new();
    let cases = [(2usize, 517usize, 0.2f32, 1u64), (64, 9, 0.146, 2), (3, 1, 0.5, 3), (1, 1000, 0.0, 4)];
    for (samples, per, rate, seed) in cases {
        let m = DropMask { seed: seed * 7919, rate };
        let want = run(&cpu, samples, per, &m, seed);
        // the backward applies the forward's mask: zeros of fwd(x) and bwd(dy) coincide (x, dy != 0)
        for (f, g) in [(0, 1), (2, 3)] {
            assert!(want[f].iter().zip(&want[g]).all(|(a, b)| (*a == 0.0) == (*b == 0.0)), "mask differs fwd/bwd");
        }
        attnas::on_cuda_targets!("masks_match_cpu_reference_exactly", |b| {
            let got = run(&b, samples, per, &m, seed);
            for (k, what) in ["dropout_fwd", "dropout_bwd", "drop_connect_fwd", "drop_connect_bwd"].iter().enumerate() {
                assert_close(
                    &format!("{what} {samples}x{per} rate {rate} on {}", b.name()),
                    &got[k],
                    &want[k],
                    0.0,
                    0.0,
                );
            }
        });
    }
}

#[test]
fn rejects_bad_rate_and_sample_size() {
    let cpu = CpuBackend::new();
    let x = cpu.alloc(10).unwrap();
    let y = cpu.alloc(10).unwrap();
    let err = cpu.dropout_fwd(&DropMask { seed: 0, rate: 1.0 }, x.tensor(), y.tensor()).unwrap_err().to_string();
    assert!(err.contains("drop rate"), "{err}");
    let err =
        cpu.drop_connect_fwd(&DropMask { seed: 0, rate: 0.1 }, 3, x.tensor(), y.tensor()).unwrap_err().to_string();
    assert!(err.contains("per_sample"), "{err}");
}
