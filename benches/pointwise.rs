//! Benchmark of the 1x1 (pointwise) convolutions through the GEMM wrapper (cuBLAS on a GPU, the host
//! SGEMM on the CPU) at the real layer shapes of the max and min subnets (from the search space's own
//! block list, so the shapes are the model's), in the three forms training runs:
//!   forward      Y[P, co]            = X[P, ci] W[:co, :ci]^T        (N, T)
//!   grad-input   dX[P, ci]           = dY[P, co] W[:co, :ci]         (N, N)
//!   grad-weight  dW[:co, :ci]       += dY^T X                        (T, N, beta 1)
//! with P = N * H * W output pixels. FLOPs = 2 P ci co per form. Bytes (compulsory traffic, S bytes per
//! activation or weight element: 4 in f32, 2 in bf16) = S (P ci + P co + ci co) for the forward and
//! grad-input, and S (P ci + P co) + 8 ci co for grad-weight (dW stays f32: read and written). The GPU
//! runs f32 (SGEMM) and bf16 (GemmEx, f32 accumulation; roof 989 TFLOP/s dense bf16 on H100 SXM/H200). These layers have few
//! channels (16-1344), so many are memory-bound: the attainable figure is the roofline
//! min(peak FLOP/s, intensity * bandwidth), and the report gives the fraction of it.
//! Roofs: GPU H100 SXM / H200 67 TFLOP/s FP32 (no tensor cores: TF32 is opt-in), HBM 3.35 / 4.8 TB/s.
//! CPU: measured here, peak = a 1024^3 SGEMM of the same library, bandwidth = memcpy. The CPU runs a
//! small batch (ATTNAS_BENCH_CPU_BATCH, default 2) and one layer per stage; the GPU batch 64, every
//! distinct layer, both resolutions. On the CPU, layers whose operands fit in cache (the head at batch 2)
//! exceed the memcpy roof: the roofline then says "compute-bound here", not a measurement error.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::GemmOps;
use attnas::backend::{alloc_typed, Backend, DeviceMemory, Dtype, GemmSpec};
use attnas::space::{Arch, Space};
use std::time::Instant;

/// (label, pixels per image, c_in, c_out) of every distinct 1x1 conv of a subnet, in network order.
fn pointwise_layers(space: &Space, arch: &Arch) -> Vec<(String, usize, usize, usize)> {
    let mut out: Vec<(String, usize, usize, usize)> = Vec::new();
    let mut push = |label: String, px: usize, ci: usize, co: usize| {
        if !out.iter().any(|l| (l.1, l.2, l.3) == (px, ci, co)) {
            out.push((label, px, ci, co));
        }
    };
    for b in space.active_blocks(arch) {
        let name = format!("mb{}.{}", b.stage + 1, b.index);
        if b.has_expand_conv {
            push(format!("{name} expand"), b.size_in * b.size_in, b.c_in, b.mid);
        }
        push(format!("{name} project"), b.size_out * b.size_out, b.mid, b.c_out);
        if b.shortcut_conv {
            push(format!("{name} shortcut"), b.size_out * b.size_out, b.c_in, b.c_out);
        }
    }
    let head = space.head_shape(arch);
    push("head final_expand".into(), head.size * head.size, head.c_in, head.expand);
    push("head feature_mix".into(), 1, head.expand, head.width);
    push("classifier".into(), 1, head.width, head.num_classes);
    out
}

struct Roof {
    flops: f64,
    bytes: f64,
}

fn time<B: Backend>(b: &B, warmup: usize, repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    b.synchronize().unwrap();
    let t = Instant::now();
    for _ in 0..repeats {
        f();
    }
    b.synchronize().unwrap();
    t.elapsed().as_secs_f64() / repeats as f64
}

#[allow(clippy::too_many_arguments)]
fn bench<B: GemmOps>(
    b: &B,
    label: &str,
    batch: usize,
    layers: &[(String, usize, usize, usize)],
    roof: &Roof,
    reps: (usize, usize),
    every: bool,
    dtype: Dtype,
) {
    println!("{label}, batch {batch}, {dtype} operands ({}):", b.name());
    let mut last_stage = String::new();
    for (name, px, ci, co) in layers {
        let stage = name.split('.').next().unwrap_or("").to_string();
        if !every && stage == last_stage {
            continue;
        }
        last_stage = stage;
        let (p, ci, co) = (batch * px, *ci, *co);
        let operand = |n: usize| alloc_typed(b, n, dtype).unwrap();
        let ((_xm, x), (_wm, w), (_ym, y)) = (operand(p * ci), operand(co * ci), operand(p * co));
        let dw = b.alloc(co * ci).unwrap();
        let fwd = GemmSpec::pointwise_fwd(p, ci, co, ci);
        let bwd_in = GemmSpec::pointwise_bwd_input(p, ci, co, ci);
        let bwd_w = GemmSpec::pointwise_bwd_weight(p, ci, co, ci);
        let flops = 2.0 * (p * ci * co) as f64;
        let size = dtype.size() as f64;
        let base_bytes = size * (p * ci + p * co + ci * co) as f64;
        let wgrad_bytes = size * (p * ci + p * co) as f64 + 8.0 * (ci * co) as f64;
        for (form, spec, a, bb, c, bytes) in [
            ("fwd", &fwd, x, w, y, base_bytes),
            ("bwd_input", &bwd_in, y, w, x, base_bytes),
            ("bwd_weight", &bwd_w, y, x, dw.tensor(), wgrad_bytes),
        ] {
            let secs = time(b, reps.0, reps.1, || b.gemm(spec, a, bb, c).unwrap());
            let attainable = roof.flops.min(flops / bytes * roof.bytes);
            let achieved = flops / secs;
            println!(
                "  {form:<10} {:<28} P {p:>8} {ci:>5}->{co:<5} {:>9.3} ms {:>8.3} TFLOP/s {:>7.1} GB/s {:>5.1}% of roofline",
                format!("{name}"),
                secs * 1e3,
                achieved / 1e12,
                bytes / secs / 1e9,
                100.0 * achieved / attainable
            );
        }
    }
}

fn cpu_roof(cpu: &CpuBackend) -> Roof {
    let n = 16 << 20;
    let src = vec![1f32; n];
    let mut dst = vec![0f32; n];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&mut dst);
    }
    let bytes = (8 * n) as f64 / best;
    let m = 1024;
    let (a, b, c) = (cpu.alloc(m * m).unwrap(), cpu.alloc(m * m).unwrap(), cpu.alloc(m * m).unwrap());
    let spec = GemmSpec::new(m, m, m);
    let secs = time(cpu, 1, 3, || cpu.gemm(&spec, a.tensor(), b.tensor(), c.tensor()).unwrap());
    Roof { flops: 2.0 * (m * m * m) as f64 / secs, bytes }
}

fn main() {
    let space = match Space::builtin("attentivenas") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench pointwise: {e}");
            std::process::exit(1);
        }
    };
    let archs = |r_max: usize, r_min: usize| {
        let mut max = space.max_arch();
        max.resolution = r_max;
        let mut min = space.min_arch();
        min.resolution = r_min;
        [("max subnet", max), ("min subnet", min)]
    };
    let batch: usize = std::env::var("ATTNAS_BENCH_CPU_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let cpu = CpuBackend::new();
    let roof = cpu_roof(&cpu);
    println!("cpu roof (measured): SGEMM 1024^3 {:.3} TFLOP/s, memcpy {:.1} GB/s", roof.flops / 1e12, roof.bytes / 1e9);
    for (label, arch) in archs(288, 192) {
        let layers = pointwise_layers(&space, &arch);
        bench(&cpu, &format!("{label} r {}", arch.resolution), batch, &layers, &roof, (1, 2), false, Dtype::F32);
    }
    if let Some(gpu) = attnas::testing::gpu_or_skip("bench pointwise (GPU)") {
        let name = gpu.name();
        let bytes = if name.contains("H200") { 4.8e12 } else { 3.35e12 };
        println!("gpu roof: 67 TFLOP/s FP32, 989 TFLOP/s dense bf16, {:.2} TB/s HBM ({name})", bytes / 1e12);
        for (dtype, flops) in [(Dtype::F32, 67e12), (Dtype::Bf16, 989e12)] {
            let roof = Roof { flops, bytes };
            for r in [192, 288] {
                for (label, arch) in archs(r, r) {
                    let layers = pointwise_layers(&space, &arch);
                    bench(&gpu, &format!("{label} r {r}"), 64, &layers, &roof, (3, 20), true, dtype);
                }
            }
        }
    }
}
