//! Helpers shared by the differential tests, benches and the GPU bundle: tolerance checks that report
//! the worst element, seeded random inputs, and device selection that skips with one line.

use crate::backend::cuda::{gpu::GpuDevice, CudaBackend};
use rand::{RngExt, SeedableRng};

/// `|got - want| <= abs + rel * |want|` element-wise. On failure the message gives the count of bad
/// elements, the worst index, both values, and the max abs / rel errors.
pub fn check_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: length {} vs reference {}", got.len(), want.len()));
    }
    let (mut bad, mut worst, mut worst_excess, mut max_abs, mut max_rel) = (0usize, 0usize, f32::MIN, 0f32, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let allowed = abs + rel * w.abs();
        let excess = if err.is_nan() || g.is_nan() != w.is_nan() { f32::INFINITY } else { err - allowed };
        max_abs = max_abs.max(err);
        if w != 0.0 {
            max_rel = max_rel.max(err / w.abs());
        }
        if excess > 0.0 {
            bad += 1;
        }
        if excess > worst_excess {
            worst_excess = excess;
            worst = i;
        }
    }
    if bad > 0 {
        return Err(format!(
            "{what}: {bad} of {} elements outside abs {abs:e} + rel {rel:e}; worst [{worst}] got {} want {}; max abs err {max_abs:e}, max rel err {max_rel:e}",
            got.len(),
            got[worst],
            want[worst]
        ));
    }
    Ok(())
}

/// Panicking form of [`check_close`] for tests.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    if let Err(e) = check_close(what, got, want, abs, rel) {
        panic!("{e}");
    }
}

/// `n` uniform values in [lo, hi) from a fixed seed.
pub fn random_vec(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// The first GPU as a backend, or `None` after printing one `skipped: ...` line naming the test.
pub fn gpu_or_skip(test: &str) -> Option<CudaBackend<GpuDevice>> {
    match GpuDevice::open(0) {
        Ok(d) => Some(CudaBackend::new(d)),
        Err(e) => {
            println!("skipped: {test}: no CUDA device ({e})");
            None
        }
    }
}

/// Runs `$body` once per CUDA target with `$b` bound to a `CudaBackend`: the SIMT emulator (feature
/// `emu`) and the first GPU when one is present. Each target that is unavailable prints one
/// `skipped:` line. One test body, every target (the CPU reference is the caller's expected value).
#[macro_export]
macro_rules! on_cuda_targets {
    ($test:expr, |$b:ident| $body:block) => {{
        #[cfg(feature = "emu")]
        {
            let $b = $crate::backend::cuda::CudaBackend::new($crate::backend::cuda::emu::EmuDevice::new());
            $body
        }
        #[cfg(not(feature = "emu"))]
        println!("skipped: {}: SIMT emulator not built (cargo test --features emu)", $test);
        if let Some($b) = $crate::testing::gpu_or_skip($test) {
            $body
        }
    }};
}
