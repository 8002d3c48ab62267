//! Benchmark of the element-wise kernels (kernels/activation.cu, the joins in kernels/pool.cu; 4 values
//! per thread and access through kernels/elementwise.cuh) against the device-to-device copy
//! (`Backend::copy`, cuMemcpyDtoDAsync on a GPU), measured here on the same tensors: issue #13 asks each
//! memory-bound kernel for at least 70 % of that copy's bandwidth.
//!
//! Shapes: the AttentiveNAS max subnet's largest activations at 224 px and batch 64, where these kernels
//! run on the trunk: the first stage's output (112 x 112 x 24; the fan-ins the backward still does with
//! `add_assign`) and the widest expanded tensor (mb6, 14 x 14 x 1152).
//!
//! Bytes moved per element (S bytes each: 4 in f32, 2 in bf16): copy, swish / relu forward = 2S (read x,
//! write y); swish backward, residual add, add-assign = 3S (read two, write one). GB/s = bytes / time,
//! and the share of the copy's GB/s beside it. The GPU runs f32 and bf16, 3 warm-ups and 20 timed
//! repeats (CUDA events through `Backend::time_ms`); the CPU runs f32 at batch ATTNAS_BENCH_CPU_BATCH
//! (default 2), one repeat, against its own copy.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::{ActivationOps, PoolOps};
use attnas::backend::{alloc_typed, upload_typed, Backend, Dtype};
use attnas::testing::random_vec;

/// (label, elements per image).
const SHAPES: &[(&str, usize)] = &[("mb1 112x112x24", 112 * 112 * 24), ("mb6 expand 14x14x1152", 14 * 14 * 1152)];

/// Milliseconds per call of `f`, mean of `repeats` after `warmup`.
fn time<B: Backend>(b: &B, warmup: usize, repeats: usize, f: &mut dyn FnMut() -> attnas::error::Result<()>) -> f64 {
    for _ in 0..warmup {
        f().expect("warm-up");
    }
    let total = b
        .time_ms(&mut || {
            for _ in 0..repeats {
                f()?;
            }
            Ok(())
        })
        .expect("timed repeats");
    total / repeats as f64
}

fn bench<B: Backend + ActivationOps + PoolOps>(b: &B, batch: usize, dtype: Dtype, warmup: usize, repeats: usize) {
    let size = match dtype {
        Dtype::F32 => 4.0,
        Dtype::Bf16 => 2.0,
    };
    for &(label, per_image) in SHAPES {
        let n = batch * per_image;
        let tensor = |seed| upload_typed(b, &random_vec(seed, n, -4.0, 4.0), dtype).expect("upload");
        let ((_xm, x), (_dm, dy), (_ym, y)) = (tensor(1), tensor(2), alloc_typed(b, n, dtype).expect("alloc"));
        let gbs = |ms: f64, passes: f64| passes * size * n as f64 / (ms * 1e-3) / 1e9;
        let copy_ms = time(b, warmup, repeats, &mut || b.copy(x, y));
        let copy = gbs(copy_ms, 2.0);
        println!("  {dtype} {label} (batch {batch}, {n} elements): copy {copy:.1} GB/s ({copy_ms:.3} ms)");
        type Op<'a> = (&'a str, f64, Box<dyn FnMut() -> attnas::error::Result<()> + 'a>);
        let ops: Vec<Op> = vec![
            ("swish fwd", 2.0, Box::new(|| b.swish_fwd(x, y))),
            ("swish bwd", 3.0, Box::new(|| b.swish_bwd(x, dy, y))),
            ("relu fwd", 2.0, Box::new(|| b.relu_fwd(x, y))),
            ("residual add", 3.0, Box::new(|| b.residual_add_fwd(x, dy, y))),
            ("add-assign", 3.0, Box::new(|| b.add_assign(y, x))),
        ];
        for (name, passes, mut f) in ops {
            let ms = time(b, warmup, repeats, &mut *f);
            let rate = gbs(ms, passes);
            println!("    {name:<13} {ms:8.3} ms  {rate:8.1} GB/s  {:5.1} % of the copy", 100.0 * rate / copy);
        }
    }
}

fn main() {
    let batch = std::env::var("ATTNAS_BENCH_CPU_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    println!("cpu (f32, batch {batch}, one repeat; the bf16 mode is a reference, not a fast path):");
    bench(&CpuBackend::new(), batch, Dtype::F32, 0, 1);
    if let Some(gpu) = attnas::testing::gpu_or_skip("bench elementwise") {
        println!("gpu {} (batch 64; roof: the measured device-to-device copy)", gpu.name());
        for dtype in [Dtype::F32, Dtype::Bf16] {
            bench(&gpu, 64, dtype, 3, 20);
        }
    }
}
