//! Benchmark of elastic BatchNorm (training forward, training backward, eval forward; fused swish
//! where the network has it) at the real layer shapes of the max subnet (widest, expand 6) and the
//! min subnet (A0), at resolutions 288 and 192 (spatial sizes and widths from spec section 1.1).
//!
//! Layers per subnet: the stem BN (+swish, r/2), per stage the BN after a stride-1 block's expand
//! conv (mid = width * t channels at the stage's output size, +swish) and the projection BN (width
//! channels, no activation), and the head's final-expand BN (6 * mb7 width, +swish).
//!
//! BN is memory-bound; bytes moved (E = pixels * channels elements, S bytes each: 4 in f32, 2 in bf16):
//!   train fwd  = S * 3E  (read x for the statistics, read x again and write y)
//!   train fwd + residual = S * 4E (also with the fused drop-connect)
//!   train fwd + SE squeeze = S * 3E (the pool of y fused: apply + pool moved S * 4E)
//!   train bwd  = S * 5E  (read x, dy for the sums; read x, dy again and write dx)
//!   train bwd + SE squeeze grad = S * 5E (the pool's backward added to dy as it is read: pool bwd +
//!              train bwd moved S * 7E)
//!   eval fwd   = S * 2E  (read x, write y)
//! The GPU runs every layer with f32 and with bf16 activations (issue #13: bf16 figures beside the
//! roof); the CPU runs f32 only (its bf16 mode is a reference, not a fast path).
//! The per-chunk partials and per-channel vectors are < 1% of that and not counted.
//! Roof: on a GPU the HBM bandwidth of the card (H100 SXM 3.35 TB/s, H200 4.8 TB/s); on the CPU a
//! memcpy bandwidth measured once here. The CPU runs the f64 reference at batch
//! ATTNAS_BENCH_CPU_BATCH (default 2), one repeat, so it takes seconds; the GPU runs batch 64 with
//! 3 warm-ups and 20 timed repeats (time with `synchronize()`).

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::batchnorm::{
    BatchNormOps, BatchNormSpec, BnActivation, BnGrads, BnParams, BnWork, DropConnect,
};
use attnas::backend::ops::pool::PoolShape;
use attnas::backend::ops::regularize::DropMask;
use attnas::backend::{alloc_typed, Backend, DeviceMemory, Dtype};
use std::time::Instant;

/// (name, resolution, widths [stem, mb1..mb7], expand per stage).
struct Subnet {
    name: &'static str,
    resolution: usize,
    widths: [usize; 8],
    expand: [usize; 7],
}

const STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];

/// (label, spatial side, channels, activation) of each benchmarked BN layer.
fn layers(s: &Subnet) -> Vec<(String, usize, usize, BnActivation)> {
    let mut side = s.resolution / 2;
    let mut out = vec![(format!("stem {side}x{side}x{}", s.widths[0]), side, s.widths[0], BnActivation::Swish)];
    for (st, stride) in STRIDES.iter().enumerate() {
        side = side.div_ceil(*stride);
        let (w, t) = (s.widths[st + 1], s.expand[st]);
        if t > 1 {
            out.push((format!("mb{} expand {side}x{side}x{}", st + 1, w * t), side, w * t, BnActivation::Swish));
        }
        out.push((format!("mb{} project {side}x{side}x{w}", st + 1), side, w, BnActivation::Identity));
    }
    let head = 6 * s.widths[7];
    out.push((format!("head expand {side}x{side}x{head}"), side, head, BnActivation::Swish));
    out
}

fn subnets() -> Vec<Subnet> {
    let max = |r| Subnet {
        name: "max",
        resolution: r,
        widths: [24, 24, 32, 40, 72, 128, 216, 224],
        expand: [1, 6, 6, 6, 6, 6, 6],
    };
    let min = |r| Subnet {
        name: "min",
        resolution: r,
        widths: [16, 16, 24, 32, 64, 112, 192, 216],
        expand: [1, 4, 4, 4, 4, 6, 6],
    };
    vec![max(288), max(192), min(288), min(192)]
}

/// Mean seconds per call of `f` after `warmup` calls, synchronising the backend around the timed loop.
fn time<B: Backend>(b: &B, warmup: usize, repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    b.synchronize().unwrap();
    let t0 = Instant::now();
    for _ in 0..repeats {
        f();
    }
    b.synchronize().unwrap();
    t0.elapsed().as_secs_f64() / repeats as f64
}

fn report(op: &str, layer: &str, secs: f64, bytes: f64, roof: f64) {
    let gbs = bytes / secs / 1e9;
    println!(
        "  {op:<10} {layer:<30} {:>9.3} ms {:>8.1} GB/s {:>6.1}% of roof",
        secs * 1e3,
        gbs,
        100.0 * gbs * 1e9 / roof
    );
}

#[allow(clippy::too_many_arguments)]
fn bench_subnet<B: BatchNormOps>(
    b: &B,
    net: &Subnet,
    batch: usize,
    warmup: usize,
    repeats: usize,
    roof: f64,
    dtype: Dtype,
) {
    println!("{} subnet, r {}, batch {batch}, {dtype} activations on {}", net.name, net.resolution, b.name());
    for (label, side, c, act) in layers(net) {
        let s = BatchNormSpec { pixels: batch * side * side, c_active: c, c_stored: c, activation: act };
        let e = (s.pixels * c) as f64 * dtype.size() as f64 / 4.0; // in f32-equivalent elements
        let alloc = |n: usize| b.alloc(n).unwrap();
        let act = |n: usize| alloc_typed(b, n, dtype).unwrap();
        let n = s.pixels * c;
        let ((_xm, x), (_ym, y), (_dym, dy), (_dxm, dx)) = (act(n), act(n), act(n), act(n));
        let (gamma, beta, dgamma, dbeta) = (alloc(c), alloc(c), alloc(c), alloc(c));
        let (saved, scratch) = (alloc(2 * c), alloc(s.scratch_len()));
        let p = BnParams { gamma: gamma.tensor(), beta: beta.tensor() };
        let g = BnGrads { dgamma: dgamma.tensor(), dbeta: dbeta.tensor() };
        let w = BnWork { saved: saved.tensor(), scratch: scratch.tensor() };
        let t = time(b, warmup, repeats, || b.batchnorm_train_fwd(&s, x, y, p, w, None).unwrap());
        report("train fwd", &label, t, 4.0 * 3.0 * e, roof);
        // the projection BN with the block's shortcut join fused (dy stands in for the shortcut)
        let t = time(b, warmup, repeats, || b.batchnorm_train_fwd(&s, x, y, p, w, Some(dy)).unwrap());
        report("train fwd + residual", &label, t, 4.0 * 4.0 * e, roof);
        // ... with the block's drop-connect in the same pass (the max subnet's identity blocks): same bytes
        let drop = DropConnect { mask: DropMask { seed: 3, rate: 0.2 }, per_sample: side * side * c };
        let t = time(b, warmup, repeats, || b.batchnorm_train_fwd_dropped_join(&s, x, y, p, w, dy, &drop).unwrap());
        report("train fwd + drop-connect + residual", &label, t, 4.0 * 4.0 * e, roof);
        if label.contains("expand") {
            // the depthwise BN of an SE block (same shape as the expand BN of a stride-1 block) with the
            // squeeze fused: train fwd's bytes, where apply + pool moved one more pass
            let pool = PoolShape { n: batch, h: side, w: side, c };
            let pooled = alloc(pool.pooled_len());
            let t = time(b, warmup, repeats, || {
                b.batchnorm_train_fwd_pooled(&s, x, y, p, w, &pool, pooled.tensor()).unwrap()
            });
            report("train fwd + SE squeeze", &label, t, 4.0 * 3.0 * e, roof);
        }
        let t = time(b, warmup, repeats, || b.batchnorm_train_bwd(&s, x, dy, dx, p, g, w).unwrap());
        report("train bwd", &label, t, 4.0 * 5.0 * e, roof);
        if label.contains("expand") {
            // the same SE block's backward: the squeeze's gradient joins dy inside the BN backward
            let pool = PoolShape { n: batch, h: side, w: side, c };
            let d_pooled = alloc(pool.pooled_len());
            let t = time(b, warmup, repeats, || {
                b.batchnorm_train_bwd_pooled(&s, x, dy, dx, p, g, w, &pool, d_pooled.tensor()).unwrap()
            });
            report("train bwd + SE squeeze grad", &label, t, 4.0 * 5.0 * e, roof);
        }
        let t = time(b, warmup, repeats, || {
            b.batchnorm_eval_fwd(&s, x, y, p, gamma.tensor(), beta.tensor(), None).unwrap()
        });
        report("eval fwd", &label, t, 4.0 * 2.0 * e, roof);
    }
}

/// Host memcpy bandwidth (bytes read + written per second), best of 3 copies of 64 MiB.
fn cpu_memcpy_roof() -> f64 {
    let n = 16 << 20;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    2.0 * 4.0 * n as f64 / best
}

fn main() {
    let cpu = CpuBackend::new();
    let roof = cpu_memcpy_roof();
    println!("cpu roof: memcpy {:.1} GB/s (read + write)", roof / 1e9);
    let batch = std::env::var("ATTNAS_BENCH_CPU_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    for net in subnets().iter().filter(|n| n.resolution == 192) {
        bench_subnet(&cpu, net, batch, 0, 1, roof, Dtype::F32);
    }
    if let Some(gpu) = attnas::testing::gpu_or_skip("bench batchnorm") {
        let name = gpu.name();
        let roof = if name.contains("H200") { 4.8e12 } else { 3.35e12 };
        println!("gpu roof: {:.2} TB/s HBM ({name}; H100 SXM figure unless the name says H200)", roof / 1e12);
        for net in subnets() {
            for dtype in [Dtype::F32, Dtype::Bf16] {
                bench_subnet(&gpu, &net, 64, 3, 20, roof, dtype);
            }
        }
    }
}
