//! `attnas bench train`: throughput of the full training step (sandwich rule + BestUp-k by default) on
//! synthetic data at a fixed batch, with the split of wall time between the max subnet, candidate
//! scoring, the sampled and min subnets and the optimizer, and the achieved multiply-accumulate rate
//! beside the device's FP32 peak (GPU: the card's datasheet FP32 non-tensor peak; CPU: no peak is known,
//! so only the rate is printed).
//!
//! MACs per step count every forward the step runs (AttentiveNAS convention, spec 5.3): the trained
//! subnets' forwards x3 (backward ~2x forward) plus the candidates' no-grad forwards.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::{Arena, SupernetOps};
use crate::error::{Error, Result};
use crate::nn::{activation_arena_len, Supernet};
use crate::space::attentive::{AttentiveSampler, Prior, Selection};
use crate::space::table::{generate, TableMethod};
use crate::space::Space;
use crate::train::step::{
    CandidateScorer, Distillation, MiddleSampling, Role, StepBuffers, StepSettings, StepState, StepTimes,
};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Images/s of the full training step.
    Train(BenchTrainArgs),
}

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// Built-in space (attentivenas, tiny) or a YAML file.
    #[arg(long, default_value = "attentivenas")]
    pub space: String,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Side of the synthetic input batch (the loader's crop; each subnet resizes it).
    #[arg(long, default_value_t = 224)]
    pub side: usize,
    /// Candidates per attentive draw (BestUp-k); 1 = uniform sampling.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchTrainResult {
    pub device: String,
    pub space: String,
    pub batch: usize,
    pub steps: usize,
    pub images_per_sec: f64,
    pub step_s: f64,
    pub split_s: [(String, f64); 5],
    pub gmacs_per_step: f64,
    pub achieved_tmacs: f64,
    pub peak_tflops_fp32: Option<f64>,
}

struct Job<'a>(&'a BenchTrainArgs, Space);

/// FP32 (non-tensor-core) datasheet peaks in TFLOP/s; a MAC is 2 FLOPs.
fn fp32_peak(device: &str) -> Option<f64> {
    if device.contains("H200") || device.contains("H100 SXM") || device.contains("H100 80GB HBM3") {
        Some(67.0)
    } else if device.contains("H100") {
        Some(51.0)
    } else {
        None
    }
}

impl BackendJob for Job<'_> {
    type Output = BenchTrainResult;
    fn run<B: SupernetOps>(self, b: &B) -> Result<BenchTrainResult> {
        let (a, space) = (self.0, self.1);
        let net = Supernet::new(b, space.clone(), 0)?;
        let len = activation_arena_len(&space, a.batch, a.side, true)?;
        let mut arena = Arena::new(b, "activations", len).map_err(|e| {
            Error::Other(format!(
                "bench: activation arena of {:.2} GiB for batch {}: {e}",
                len as f64 * 4.0 / (1u64 << 30) as f64,
                a.batch
            ))
        })?;
        let bufs = StepBuffers::new(b, a.batch, a.side, space.num_classes)?;
        let images = crate::testing::random_vec(1, a.batch * a.side * a.side * 3, -2.0, 2.0);
        let labels: Vec<u32> = (0..a.batch as u32).map(|i| i % space.num_classes as u32).collect();
        bufs.upload(b, &images, &labels)?;
        let groups = net.param_groups(1e-5, &[".bn".to_string(), ".bias".to_string()])?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let table = generate(&space, 2000, TableMethod::Uniform, 25.0, &mut rng);
        let mut sampler = AttentiveSampler::new(&space, &table, 25.0, Prior::Empirical)?;
        let settings = StepSettings {
            label_smoothing: 0.1,
            dropout: 0.2,
            drop_connect: 0.2,
            drop_connect_only_last_two_stages: true,
            kd: Distillation::Kl,
            num_arch_training: 4,
            sampling: if a.k > 1 { MiddleSampling::Attentive(Selection::BestUp) } else { MiddleSampling::Uniform },
            num_trials: a.k.max(1),
            scorer: CandidateScorer::Loss,
            momentum: 0.9,
            clip: 1.0,
            seed: 0,
        };
        let mut total = StepTimes::default();
        let mut macs = 0.0;
        let mut wall = 0.0;
        for step in 0..(a.warmup + a.steps) {
            let mut state = StepState {
                b,
                net: &net,
                arena: &mut arena,
                bufs: &bufs,
                groups: &groups,
                sampler: Some(&mut sampler),
            };
            let t = std::time::Instant::now();
            let out = state.run(step as u64, 0.01, &settings)?;
            let dt = t.elapsed().as_secs_f64();
            eprintln!("step {step}: {dt:.3} s, total loss {:.4}", out.total_loss());
            if step < a.warmup {
                continue;
            }
            wall += dt;
            let tm = out.times;
            total.max += tm.max;
            total.scoring += tm.scoring;
            total.sampled += tm.sampled;
            total.min += tm.min;
            total.optimizer += tm.optimizer;
            for s in &out.subnets {
                macs += 3.0 * s.mflops * 1e6 * a.batch as f64;
                if s.role == Role::Sampled {
                    macs += s.candidates.iter().map(|c| c.mflops * 1e6 * a.batch as f64).sum::<f64>();
                }
            }
        }
        let n = a.steps.max(1) as f64;
        let device = b.name();
        Ok(BenchTrainResult {
            peak_tflops_fp32: fp32_peak(&device),
            device,
            space: space.name.clone(),
            batch: a.batch,
            steps: a.steps,
            images_per_sec: a.batch as f64 * n / wall.max(1e-9),
            step_s: wall / n,
            split_s: [
                ("max subnet".into(), total.max / n),
                ("candidate scoring".into(), total.scoring / n),
                ("sampled subnets".into(), total.sampled / n),
                ("min subnet".into(), total.min / n),
                ("optimizer".into(), total.optimizer / n),
            ],
            gmacs_per_step: macs / n / 1e9,
            achieved_tmacs: macs / wall.max(1e-9) / 1e12,
        })
    }
}

pub fn run_bench(a: &BenchArgs) -> Result<()> {
    match &a.what {
        BenchWhat::Train(t) => {
            if t.batch == 0 || t.steps == 0 {
                return Err(Error::usage("bench train: --batch and --steps must be positive"));
            }
            let space = Space::resolve(&t.space)?;
            let r = run_on(t.device, Job(t, space))?;
            println!(
                "bench train: {} space, batch {}, sandwich (4 subnets) + BestUp-{} on {}",
                r.space, r.batch, t.k, r.device
            );
            println!(
                "  {:.2} images/s ({:.3} s per step, mean of {} steps after {} warm-up)",
                r.images_per_sec, r.step_s, r.steps, t.warmup
            );
            for (what, s) in &r.split_s {
                println!("  {what:<18} {s:>8.3} s  {:>5.1}%", 100.0 * s / r.step_s.max(1e-12));
            }
            let achieved = 2.0 * r.achieved_tmacs;
            match r.peak_tflops_fp32 {
                Some(p) => println!(
                    "  {:.1} GMAC per step, {achieved:.2} TFLOP/s achieved = {:.1}% of the {p} TFLOP/s FP32 peak",
                    r.gmacs_per_step,
                    100.0 * achieved / p
                ),
                None => println!(
                    "  {:.1} GMAC per step, {achieved:.3} TFLOP/s achieved (no peak known for this device)",
                    r.gmacs_per_step
                ),
            }
            if let Some(p) = &t.json {
                let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?;
                std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
            }
            Ok(())
        }
    }
}
