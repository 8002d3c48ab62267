//! Benchmark of the elastic depthwise convolution (forward, grad-input, grad-weight) and the stem
//! convolution (forward, grad-weight) at the real layer shapes of the max subnet (r 288, widest,
//! expand 6, k 5) and the min subnet (A0: r 192, k 3), from spec section 1.1, at both resolutions.
//!
//! Each op is memory-bound, so the figure of merit is achieved bandwidth against the roofline:
//!   depthwise fwd        bytes = 4 (N H W C + N OH OW C + k^2 C)          (read x, w; write y)
//!   depthwise bwd_input  bytes = 4 (N OH OW C + k^2 C + N H W C)          (read dy, w; write dx)
//!   depthwise bwd_weight bytes = 4 (N H W C + N OH OW C + 2 P k^2 C + 2 k^2 C)
//!                        (read x, dy; write then read P block partials; read-modify-write dw)
//!   stem fwd             bytes = 4 (N H W 3 + N OH OW C + 27 C)
//!   stem bwd_weight      bytes = 4 (N H W 3 + N OH OW C + 2 P 27 C + 2 27 C)
//! FLOPs = 2 k^2 N OH OW C (depthwise), 2 * 27 N OH OW C (stem), printed as well.
//! Roof: on a GPU the HBM bandwidth of the card (H100 SXM 3.35 TB/s, H200 4.8 TB/s); on the CPU a
//! memcpy bandwidth measured once here. The CPU runs the f64 reference at a small batch
//! (ATTNAS_BENCH_CPU_BATCH, default 2) with one representative layer per stage, one warm-up (first-touch
//! page faults) and two repeats, so it takes seconds; small layers fit in cache and can exceed the memcpy
//! roof. The GPU runs batch 64, every distinct layer, 3 warm-ups and 20 timed repeats.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::depthwise::{DepthwiseOps, DepthwiseShape};
use attnas::backend::ops::stem_conv::{StemConvOps, StemShape, STEM_TAPS};
use attnas::backend::{Backend, DeviceMemory};
use std::time::Instant;

/// One subnet's stem and distinct depthwise layers.
struct Subnet {
    name: &'static str,
    resolution: usize,
    stem_width: usize,
    kernel: usize,
    /// (stage, mid channels, input spatial size, stride) of each distinct depthwise layer.
    layers: Vec<(&'static str, usize, usize, usize)>,
}

/// Distinct depthwise layers of a subnet: the first block of each stage (its stride, mid = c_in * t)
/// and, when the stage has more blocks, a later block (stride 1, mid = width * t).
fn subnet(
    name: &'static str,
    resolution: usize,
    widths: [usize; 8],
    depths: [usize; 7],
    expand: [usize; 7],
    kernel: usize,
) -> Subnet {
    const STAGE_NAMES: [&str; 7] = ["mb1", "mb2", "mb3", "mb4", "mb5", "mb6", "mb7"];
    const STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
    let mut layers = Vec::new();
    let mut size = resolution / 2; // after the stem
    let mut c_in = widths[0];
    for st in 0..7 {
        layers.push((STAGE_NAMES[st], c_in * expand[st], size, STRIDES[st]));
        size = size.div_ceil(STRIDES[st]);
        if depths[st] > 1 {
            layers.push((STAGE_NAMES[st], widths[st + 1] * expand[st], size, 1));
        }
        c_in = widths[st + 1];
    }
    layers.dedup();
    Subnet { name, resolution, stem_width: widths[0], kernel, layers }
}

/// Max subnet: widest, deepest, expand 6, k 5; min subnet = A0 (spec sections 1.1 and 2).
fn subnets() -> Vec<Subnet> {
    let max =
        |r| subnet("max", r, [24, 24, 32, 40, 72, 128, 216, 224], [2, 5, 6, 6, 8, 8, 2], [1, 6, 6, 6, 6, 6, 6], 5);
    let min =
        |r| subnet("min", r, [16, 16, 24, 32, 64, 112, 192, 216], [1, 3, 3, 3, 3, 3, 1], [1, 4, 4, 4, 4, 6, 6], 3);
    vec![max(288), max(192), min(288), min(192)]
}

struct Timer {
    warmup: usize,
    repeats: usize,
}

impl Timer {
    /// Mean seconds per call of `f` (after `warmup` calls), synchronising the backend around the loop.
    fn time<B: Backend>(&self, b: &B, mut f: impl FnMut()) -> f64 {
        for _ in 0..self.warmup {
            f();
        }
        b.synchronize().unwrap();
        let t = Instant::now();
        for _ in 0..self.repeats {
            f();
        }
        b.synchronize().unwrap();
        t.elapsed().as_secs_f64() / self.repeats as f64
    }
}

fn report(op: &str, layer: &str, secs: f64, bytes: f64, flops: f64, roof: f64) {
    let gbs = bytes / secs / 1e9;
    println!(
        "  {op:<20} {layer:<36} {:>10.3} ms {:>8.1} GB/s {:>6.1}% of roof {:>7.3} TFLOP/s",
        secs * 1e3,
        gbs,
        100.0 * gbs * 1e9 / roof,
        flops / secs / 1e12
    );
}

fn bench_subnet<B: DepthwiseOps + StemConvOps>(
    b: &B,
    net: &Subnet,
    batch: usize,
    timer: &Timer,
    roof: f64,
    every_layer: bool,
) {
    println!("{} subnet, r {}, batch {batch}, k {} ({}):", net.name, net.resolution, net.kernel, b.name());
    let alloc = |n: usize| b.alloc(n).unwrap();
    let stem =
        StemShape { n: batch, h: net.resolution, w: net.resolution, c_out_active: net.stem_width, c_out_stored: 24 };
    {
        let (x, w, y, dw) =
            (alloc(stem.input_len()), alloc(stem.weight_len()), alloc(stem.output_len()), alloc(stem.weight_len()));
        let ws = alloc(stem.wgrad_workspace_len());
        let layer = format!("stem 3->{} {}x{}", stem.c_out_active, stem.h, stem.w);
        let (pix, c) = ((batch * stem.out_h() * stem.out_w()) as f64, stem.c_out_active as f64);
        let xb = (stem.input_len() * 4) as f64;
        let flops = 2.0 * 27.0 * pix * c;
        let t = timer.time(b, || b.stem_conv_fwd(&stem, x.tensor(), w.tensor(), y.tensor()).unwrap());
        report("stem fwd", &layer, t, xb + 4.0 * (pix * c + 27.0 * c), flops, roof);
        let parts = (stem.wgrad_workspace_len() / (STEM_TAPS * stem.c_out_active)) as f64;
        let t =
            timer.time(b, || b.stem_conv_bwd_weight(&stem, x.tensor(), y.tensor(), dw.tensor(), ws.tensor()).unwrap());
        report("stem bwd_weight", &layer, t, xb + 4.0 * (pix * c + 2.0 * parts * 27.0 * c + 54.0 * c), flops, roof);
    }
    let mut seen_stage = None;
    for &(stage, c, size, stride) in &net.layers {
        if !every_layer && seen_stage == Some(stage) {
            continue;
        }
        seen_stage = Some(stage);
        let s =
            DepthwiseShape { n: batch, h: size, w: size, c_active: c, c_stored: c.max(8), kernel: net.kernel, stride };
        let (x, w, y, dw) = (alloc(s.input_len()), alloc(s.weight_len()), alloc(s.output_len()), alloc(s.weight_len()));
        let dx = alloc(s.input_len());
        let ws = alloc(s.wgrad_workspace_len());
        let layer = format!("{stage} c{c} {size}x{size} s{stride}");
        let (xin, yout, kk) = (s.input_len() as f64, s.output_len() as f64, (s.kernel * s.kernel * c) as f64);
        let flops = 2.0 * (s.kernel * s.kernel) as f64 * yout;
        let t = timer.time(b, || b.depthwise_fwd(&s, x.tensor(), w.tensor(), y.tensor()).unwrap());
        report("depthwise fwd", &layer, t, 4.0 * (xin + yout + kk), flops, roof);
        let t = timer.time(b, || b.depthwise_bwd_input(&s, y.tensor(), w.tensor(), dx.tensor()).unwrap());
        report("depthwise bwd_input", &layer, t, 4.0 * (xin + yout + kk), flops, roof);
        let parts = (s.wgrad_workspace_len() as f64) / kk;
        let t = timer.time(b, || b.depthwise_bwd_weight(&s, x.tensor(), y.tensor(), dw.tensor(), ws.tensor()).unwrap());
        report("depthwise bwd_weight", &layer, t, 4.0 * (xin + yout + 2.0 * parts * kk + 2.0 * kk), flops, roof);
    }
}

/// Host memcpy bandwidth (bytes read + written per second), best of 3 copies of 64 MiB.
fn cpu_memcpy_roof() -> f64 {
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
    (2 * 4 * n) as f64 / best
}

fn main() {
    let batch: usize = std::env::var("ATTNAS_BENCH_CPU_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let roof = cpu_memcpy_roof();
    println!("cpu roof: memcpy {:.1} GB/s (read + write)", roof / 1e9);
    let cpu = CpuBackend::new();
    let cpu_timer = Timer { warmup: 1, repeats: 2 };
    for net in subnets().iter().filter(|n| (n.name == "max") == (n.resolution == 288)) {
        bench_subnet(&cpu, net, batch, &cpu_timer, roof, false);
    }
    if let Some(gpu) = attnas::testing::gpu_or_skip("bench depthwise (GPU)") {
        let name = gpu.name();
        let roof = if name.contains("H200") { 4.8e12 } else { 3.35e12 };
        println!("gpu roof: {:.2} TB/s HBM ({name}; H100 SXM figure unless the name says H200)", roof / 1e12);
        let timer = Timer { warmup: 3, repeats: 20 };
        for net in &subnets() {
            bench_subnet(&gpu, net, 64, &timer, roof, true);
        }
    }
}
