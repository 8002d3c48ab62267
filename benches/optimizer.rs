//! Bench of the fused optimizer step at the supernet's real size: 23.93 M parameters (spec 1.5, the
//! max-shape supernet), in the two recipe groups (decayed conv/linear weights, then BN and biases).
//!
//! Bytes moved per step: 20 per parameter (read p, v, g; write p, v), the floor for an unfused-free
//! step. Roofline: on the CPU a measured memcpy bandwidth (read + write of a 64 MiB buffer), on a GPU the
//! HBM peak of the card (H100 SXM 3.35 TB/s, H200 4.8 TB/s; other cards print no fraction).
//!
//! Run: `cargo bench --bench optimizer` (CPU reference, a few seconds; the GPU when one is present).

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::optimizer::{OptimizerOps, ParamGroup, SgdStep};
use attnas::backend::{Backend, DeviceMemory, Tensor};
use std::time::Instant;

const PARAMS: usize = 23_930_000;
/// BN gamma/beta and biases: a small share of the parameters (the exact split only moves a launch
/// boundary; the bytes are the same).
const NO_DECAY: usize = 130_000;
const BYTES_PER_PARAM: f64 = 20.0;

fn groups(p: Tensor, v: Tensor, g: Tensor) -> Vec<ParamGroup> {
    let split = PARAMS - NO_DECAY;
    let cut = |t: Tensor, off, len| t.slice(off, len).expect("bench layout fits the arena");
    [(0, split, 1e-5f32), (split, NO_DECAY, 0.0)]
        .into_iter()
        .map(|(off, len, weight_decay)| ParamGroup {
            params: cut(p, off, len),
            grads: cut(g, off, len),
            momentum: cut(v, off, len),
            weight_decay,
            copy: None,
        })
        .collect()
}

/// Seconds per step: `warmup` untimed steps, then the mean of `repeats`.
fn time_steps<B: OptimizerOps>(b: &B, warmup: usize, repeats: usize) -> f64 {
    let (p, v, g) = (b.alloc(PARAMS).unwrap(), b.alloc(PARAMS).unwrap(), b.alloc(PARAMS).unwrap());
    b.upload(g.tensor(), &vec![0.5f32; PARAMS]).unwrap();
    let groups = groups(p.tensor(), v.tensor(), g.tensor());
    let step = SgdStep { lr: 0.1, momentum: 0.9, clip: 1.0 };
    for _ in 0..warmup {
        b.sgd_nesterov_step(&step, &groups).unwrap();
    }
    b.synchronize().unwrap();
    let t = Instant::now();
    for _ in 0..repeats {
        b.sgd_nesterov_step(&step, &groups).unwrap();
    }
    b.synchronize().unwrap();
    t.elapsed().as_secs_f64() / repeats as f64
}

/// Host memcpy bandwidth in bytes/s, counting read + write.
fn host_copy_bandwidth() -> f64 {
    let n = 16 << 20; // 64 MiB of f32
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    dst.copy_from_slice(&src);
    let reps = 5;
    let t = Instant::now();
    for i in 0..reps {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst[i]);
    }
    (2 * 4 * n * reps) as f64 / t.elapsed().as_secs_f64()
}

fn report(target: &str, secs: f64, roof: Option<(f64, &str)>) {
    let bytes = BYTES_PER_PARAM * PARAMS as f64;
    let gbs = bytes / secs / 1e9;
    let frac = roof
        .map(|(r, what)| format!(", {:.0}% of {what} {:.1} GB/s", 100.0 * gbs * 1e9 / r, r / 1e9))
        .unwrap_or_default();
    println!("optimizer step  {target}: {PARAMS} params, {:.3} ms, {gbs:.1} GB/s{frac}", secs * 1e3);
}

fn main() {
    let cpu = CpuBackend::new();
    let roof = host_copy_bandwidth();
    report(&cpu.name(), time_steps(&cpu, 1, 3), Some((roof, "host memcpy")));
    if let Some(gpu) = attnas::testing::gpu_or_skip("bench optimizer") {
        let name = gpu.name();
        let peak = if name.contains("H200") {
            Some((4.8e12, "H200 HBM3e peak"))
        } else if name.contains("H100") {
            Some((3.35e12, "H100 SXM HBM3 peak"))
        } else {
            None
        };
        report(&name, time_steps(&gpu, 5, 50), peak);
    }
}
