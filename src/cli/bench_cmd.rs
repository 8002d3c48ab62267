//! `attnas bench train`: throughput of the full training step (sandwich rule + BestUp-k by default) on
//! synthetic data at a fixed batch, with the split of wall time between the max subnet, candidate
//! scoring, the sampled and min subnets and the optimizer, and the achieved multiply-accumulate rate
//! beside the device's FP32 peak (GPU: the card's datasheet FP32 non-tensor peak; CPU: no peak is known,
//! so only the rate is printed).
//!
//! MACs per step count every forward the step runs (AttentiveNAS convention, spec 5.3): the trained
//! subnets' forwards x3 (backward ~2x forward) plus the candidates' no-grad forwards.
//!
//! With `--data FILE` the batches come from a packed file through the real input pipeline instead: the
//! loader (decode + training augmentation on `--loader-threads` host threads, `--prefetch` batches
//! ahead), the u8 upload and the on-device normalisation; the report then adds the time per step spent
//! waiting for the loader and uploading, and images/s end to end (data included) beside the step alone.
//!
//! With ranks (`--gpus N`, `--ranks N`), every rank first runs the steps alone (the 1-rank baseline on
//! its own device), then as one of N data-parallel ranks; the report gives images/s per rank at N against
//! 1 (scaling efficiency). `attnas bench allreduce` is in [`super::bench_allreduce`].

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::{Arena, Dtype, OpCounts, Precision, SupernetOps};
use crate::data::loader::{Batch, EpochIter, Loader, LoaderConfig, TryNext};
use crate::data::reader::PackedDataset;
use crate::dist::launch::{plan, run_ranked, RankArgs};
use crate::dist::sync::{agree_at_start, StepSync};
use crate::dist::Ranks;
use crate::error::{Error, Result};
use crate::nn::{activation_arena_len, Supernet};
use crate::space::attentive::{AttentiveSampler, Prior, Selection};
use crate::space::table::{generate, TableMethod};
use crate::space::Space;
use crate::timeline;
use crate::train::memory_plan::{budget_bytes, largest_batch, plan as memory_plan, precision_name, TrainMemoryPlan};
use crate::train::step::{
    CandidateScorer, Distillation, MiddleSampling, OneRank, Role, StepBuffers, StepSettings, StepState, StepTimes,
};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Images/s of the full training step (per rank at N ranks against 1 with --gpus / --ranks).
    Train(BenchTrainArgs),
    /// All-reduce bandwidth between ranks: algorithm and bus bandwidth as nccl-tests define them.
    Allreduce(super::bench_allreduce::BenchAllreduceArgs),
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
    /// Measure the real input pipeline: batches from this packed file (or a folder with train.pack),
    /// decoded and augmented at --side, uploaded as u8 and normalised on the device. Default: one
    /// synthetic batch uploaded once.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// With --data: batches the loader decodes ahead of the step.
    #[arg(long, default_value_t = 3)]
    pub prefetch: usize,
    /// With --data: decode threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub loader_threads: usize,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Report the largest batch that fits this much device memory (GiB, e.g. 80 for an H100 SXM)
    /// instead of the device's own free memory (the only budget on the CPU and the emulator).
    #[arg(long)]
    pub memory_gib: Option<f64>,
    /// Only the memory plan and the largest batch that fits (no step runs, nothing is allocated): in
    /// seconds, for a batch or a card you do not have here (with --memory-gib).
    #[arg(long)]
    pub plan_only: bool,
    /// Storage of the activations and the 1x1 convs' weight copies: auto (bf16 on a GPU of compute
    /// capability >= 8.0, else fp32), fp32 or bf16 (on the CPU: the bf16 reference mode).
    #[arg(long, default_value = "auto", value_parser = Precision::parse)]
    pub precision: Precision,
    #[command(flatten)]
    pub ranks: RankArgs,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchTrainResult {
    pub device: String,
    /// Storage of the activations in the measured steps: `fp32` or `bf16`.
    pub precision: &'static str,
    pub space: String,
    pub batch: usize,
    pub steps: usize,
    pub images_per_sec: f64,
    pub step_s: f64,
    pub split_s: [(String, f64); 5],
    pub gmacs_per_step: f64,
    pub achieved_tmacs: f64,
    pub peak_tflops_fp32: Option<f64>,
    /// Data-parallel ranks of the run (1: no baseline).
    pub ranks: usize,
    /// Images/s of one rank running alone (the same steps, no collectives).
    pub baseline_images_per_sec: Option<f64>,
    /// images/s per rank at N ranks / images/s alone.
    pub scaling_efficiency: Option<f64>,
    /// What the measured steps did to the device, summed over them (divide by `steps`); `None` on the
    /// CPU backend (see `backend::counters`).
    pub device_work: Option<OpCounts>,
    /// Device memory allocated by the whole run (bytes; `None` on the CPU backend).
    pub device_memory_bytes: Option<u64>,
    /// The time the GPU had nothing queued during the measured steps (`backend::cuda::idle`); `None`
    /// where it is not measured (the CPU backend, the emulator).
    pub gpu_idle: Option<GpuIdle>,
    /// The step's planned memory and the largest batch that fits.
    pub memory: MemoryReport,
    /// With `--data`: the input pipeline's share of each measured step.
    pub input: Option<InputPipelineTimes>,
}

/// GPU idle time per measured step: the gaps between a host wait on the stream (a candidate read, a
/// loss read back, the upload's synchronisation) and the host's next launch.
#[derive(Debug, serde::Serialize)]
pub struct GpuIdle {
    pub ms_per_step: f64,
    pub gaps_per_step: f64,
    /// Of the step's wall time.
    pub fraction: f64,
}

/// Device memory of the step (`crate::train::memory_plan`): the plan at the run's batch (equal to what
/// the run allocated, where the device counts it), and the largest batch at the run's side that fits
/// the budget.
#[derive(Debug, serde::Serialize)]
pub struct MemoryReport {
    pub plan: TrainMemoryPlan,
    /// Bytes the budget allows: `--memory-gib`, else the device's free memory plus the run's own
    /// allocations; `None` where neither is known (CPU, emulator without `--memory-gib`).
    pub budget_bytes: Option<u64>,
    /// Where the budget came from.
    pub budget_source: Option<String>,
    /// The largest batch per device whose plan fits the budget at `plan.side` (the run's precision).
    pub largest_batch: Option<usize>,
    /// The plan at the run's batch and the largest batch that fits, for each precision (fp32, bf16).
    pub by_precision: Vec<PrecisionFit>,
}

/// One precision's memory at the run's batch and its largest batch under the same budget.
#[derive(Debug, serde::Serialize)]
pub struct PrecisionFit {
    pub precision: &'static str,
    pub total_bytes: u64,
    pub activation_bytes: u64,
    pub largest_batch: Option<usize>,
}

/// Seconds per measured step outside the training step itself (`bench train --data`).
#[derive(Debug, Default, serde::Serialize)]
pub struct InputPipelineTimes {
    pub data: String,
    /// Waiting for the loader's next batch (0 when decoding keeps ahead of the step).
    pub data_wait_s: f64,
    /// The host's part of the input: taking the staged batch (`StepBuffers::use_staged`: normalisation
    /// and labels enqueued) and staging the next one (copy into a page-locked buffer, the DMA queued on
    /// the copy stream, overlapping the step on a GPU), as the trainer does.
    pub upload_s: f64,
    /// Host time inside the step staging the next batch (`StepBuffers::stage_batch` once the max subnet
    /// is enqueued: the copy into a page-locked buffer and the DMA queued on the copy stream), while
    /// the device computes; part of the step's time.
    pub stage_next_s: f64,
    /// Measured steps whose batch had been staged during the previous step (the loader kept ahead); the
    /// others waited for the loader and copied their batch before the step.
    pub steps_fed_ahead: u64,
    /// Batch size x steps / (data wait + upload + step): throughput with the pipeline included.
    pub images_per_sec_end_to_end: f64,
}

/// The real pipeline of `bench train --data`: the training loader over `path` (this rank's share),
/// cycling through epochs.
struct InputPipeline {
    loader: Loader,
    epoch: u64,
    iter: EpochIter,
    /// The batch whose copy to the device is under way (staged during the previous step).
    staged: bool,
    /// The batch [`Self::take`] last took had been staged ahead.
    fed_ahead: bool,
    times: InputPipelineTimes,
}

impl InputPipeline {
    fn open(a: &BenchTrainArgs, path: &std::path::Path, space: &Space, ranks: &Ranks) -> Result<Self> {
        let train = crate::data::train_pack_of(path)?;
        let ds =
            PackedDataset::open_expecting_classes(&train, space.num_classes, &format!("the space '{}'", space.name))?;
        let cfg = LoaderConfig {
            rank: ranks.rank(),
            world: ranks.world_size(),
            prefetch: a.prefetch,
            threads: a.loader_threads,
            ..LoaderConfig::train(a.batch, a.side as u32, 0)
        };
        let loader = Loader::new(std::sync::Arc::new(ds), cfg)?;
        if loader.batches_per_epoch() == 0 {
            return Err(Error::usage(format!(
                "bench train --data {}: {} records make no full batch of {} per rank; lower --batch",
                train.display(),
                loader.len(),
                a.batch
            )));
        }
        let iter = loader.epoch(0)?;
        let times = InputPipelineTimes { data: train.display().to_string(), ..Default::default() };
        Ok(InputPipeline { loader, epoch: 0, iter, staged: false, fed_ahead: false, times })
    }

    /// The next batch from the loader, waiting for it; a new epoch when one ends.
    fn next_batch(&mut self) -> Result<Batch> {
        loop {
            let next = {
                let _wait = timeline::range("data wait");
                self.iter.next()
            };
            match next {
                Some(batch) => return Ok(batch),
                None => {
                    self.epoch += 1;
                    self.iter = self.loader.epoch(self.epoch)?;
                }
            }
        }
    }

    /// Puts the next batch into the step as the trainer does: the one staged during the previous step,
    /// else the loader's next (waiting for it). Returns (wait, upload) seconds.
    fn take<B: SupernetOps>(&mut self, b: &B, bufs: &StepBuffers<B::Memory>) -> Result<(f64, f64)> {
        let t = std::time::Instant::now();
        let waited = if self.staged { None } else { Some(self.next_batch()?) };
        self.fed_ahead = waited.is_none();
        let wait = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let _upload = timeline::range("upload");
        if let Some(batch) = waited {
            bufs.stage_batch(b, &batch.images, &batch.labels)?;
        }
        bufs.use_staged(b)?;
        self.staged = false;
        Ok((wait, t.elapsed().as_secs_f64()))
    }

    /// Inside the step, once the max subnet is enqueued (`StepState::run_ranked_with`), as the trainer
    /// does: stages the next batch if the loader has it ready, so that its copy overlaps the step.
    /// Returns the host's seconds (part of the step's time).
    fn stage_next<B: SupernetOps>(&mut self, b: &B, bufs: &StepBuffers<B::Memory>) -> Result<f64> {
        let t = std::time::Instant::now();
        if let TryNext::Ready(Some(batch)) = self.iter.try_next() {
            let _stage = timeline::range("stage next batch");
            bufs.stage_batch(b, &batch.images, &batch.labels)?;
            self.staged = true;
        }
        Ok(t.elapsed().as_secs_f64())
    }
}

struct Job<'a>(&'a BenchTrainArgs, Space, Ranks);

/// `bench train --plan-only`: the memory report alone, on the device whose free memory is the budget.
struct PlanJob<'a>(&'a BenchTrainArgs, &'a Space);

impl BackendJob for PlanJob<'_> {
    type Output = (String, MemoryReport);
    fn run<B: SupernetOps>(self, b: &B) -> Result<(String, MemoryReport)> {
        Ok((b.name(), memory_report(b, self.0, self.1)?))
    }
}

fn print_memory(m: &MemoryReport, allocated: Option<u64>) {
    let mib = |v: u64| v as f64 / (1u64 << 20) as f64;
    println!(
        "  memory ({}): {:.1} MiB planned = {:.1} model (weights, gradients, momentum, BN stats) + {:.1} \
         activations + {:.1} step buffers{}",
        m.plan.precision,
        mib(m.plan.total_bytes),
        mib(m.plan.model_bytes),
        mib(m.plan.activation_bytes),
        mib(m.plan.step_buffer_bytes),
        allocated.map_or(String::new(), |b| format!("; {:.1} MiB allocated on the device", mib(b)))
    );
    match (m.budget_bytes, &m.budget_source) {
        (Some(budget), Some(source)) => println!(
            "  largest batch at {}x{} that fits {:.2} GiB ({source}): {}",
            m.plan.side,
            m.plan.side,
            gib(budget),
            m.largest_batch.map_or("none (not even 1 image)".into(), |n| n.to_string())
        ),
        _ => println!("  largest batch: pass --memory-gib G to plan for a device of G GiB (no device memory here)"),
    }
    for f in &m.by_precision {
        println!(
            "    {}: {:.1} MiB at batch {} ({:.1} MiB activations){}",
            f.precision,
            mib(f.total_bytes),
            m.plan.batch,
            mib(f.activation_bytes),
            f.largest_batch.map_or(String::new(), |n| format!("; largest batch {n}"))
        );
    }
}

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

/// The plan at the run's batch and the largest batch that fits the budget.
fn memory_report<B: SupernetOps>(b: &B, a: &BenchTrainArgs, space: &Space) -> Result<MemoryReport> {
    let dtype = b.resolve_precision(a.precision);
    let plan = memory_plan(space, a.batch, a.side, dtype)?;
    let (budget, source) = match (a.memory_gib, b.memory_info()) {
        (Some(gib), _) => ((gib * (1u64 << 30) as f64) as u64, format!("--memory-gib {gib}")),
        (None, Some((free, total))) => {
            let mine = b.op_counts().map_or(plan.total_bytes, |c| c.allocated_bytes);
            (
                budget_bytes(free, mine).min(total),
                format!("device: {:.2} GiB free + {:.2} GiB this run holds", gib(free), gib(mine)),
            )
        }
        (None, None) => {
            let by_precision = fits_by_precision(space, a, None)?;
            return Ok(MemoryReport {
                plan,
                budget_bytes: None,
                budget_source: None,
                largest_batch: None,
                by_precision,
            });
        }
    };
    let largest = largest_batch(space, a.side, dtype, budget, 1 << 16)?;
    let by_precision = fits_by_precision(space, a, Some(budget))?;
    Ok(MemoryReport {
        plan,
        budget_bytes: Some(budget),
        budget_source: Some(source),
        largest_batch: largest,
        by_precision,
    })
}

/// fp32 and bf16 side by side at the run's batch, and their largest batches under `budget`.
fn fits_by_precision(space: &Space, a: &BenchTrainArgs, budget: Option<u64>) -> Result<Vec<PrecisionFit>> {
    [Dtype::F32, Dtype::Bf16]
        .into_iter()
        .map(|dtype| {
            let p = memory_plan(space, a.batch, a.side, dtype)?;
            let largest = match budget {
                Some(budget) => largest_batch(space, a.side, dtype, budget, 1 << 16)?,
                None => None,
            };
            Ok(PrecisionFit {
                precision: precision_name(dtype),
                total_bytes: p.total_bytes,
                activation_bytes: p.activation_bytes,
                largest_batch: largest,
            })
        })
        .collect()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

impl BackendJob for Job<'_> {
    type Output = BenchTrainResult;
    fn run<B: SupernetOps>(self, b: &B) -> Result<BenchTrainResult> {
        let (a, space, ranks) = (self.0, self.1, self.2);
        let world = ranks.world_size();
        agree_at_start(ranks.as_ref(), b, &[("bench", format!("{} batch {} side {}", space.name, a.batch, a.side))])?;
        let mut net = Supernet::new(b, space.clone(), 0)?;
        let dtype = b.resolve_precision(a.precision);
        net.set_precision(b, dtype)?;
        let len = activation_arena_len(&space, a.batch, a.side, true, dtype)?;
        let mut arena = Arena::new(b, "activations", len).map_err(|e| {
            Error::Other(format!(
                "bench: activation arena of {:.2} GiB for batch {}: {e}",
                len as f64 * 4.0 / (1u64 << 30) as f64,
                a.batch
            ))
        })?;
        let bufs = StepBuffers::new(b, a.batch, a.side, space.num_classes)?;
        let mut pipeline = match &a.data {
            Some(path) => Some(InputPipeline::open(a, path, &space, &ranks)?),
            None => {
                let images =
                    crate::testing::random_vec(1 + ranks.rank() as u64, a.batch * a.side * a.side * 3, -2.0, 2.0);
                let labels: Vec<u32> = (0..a.batch as u32).map(|i| i % space.num_classes as u32).collect();
                bufs.upload(b, &images, &labels)?;
                None
            }
        };
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
        // one rank alone first: the baseline of the scaling efficiency
        let baseline = if world > 1 {
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
                state.run(step as u64, 0.01, &settings)?;
                if step >= a.warmup {
                    wall += t.elapsed().as_secs_f64();
                }
            }
            ranks.barrier()?;
            Some(a.batch as f64 * a.steps.max(1) as f64 / f64::max(wall, 1e-9))
        } else {
            None
        };
        let mut sync = (world > 1).then(|| StepSync::new(ranks.as_ref(), &net, 25 << 20, true));
        let mut total = StepTimes::default();
        let mut macs = 0.0;
        let mut wall = 0.0;
        let mut device_work = b.op_counts().map(|_| OpCounts::default());
        let mut input_s = 0.0;
        for step in 0..(a.warmup + a.steps) {
            let input = match pipeline.as_mut() {
                Some(p) => Some(p.take(b, &bufs)?),
                None => None,
            };
            if let (Some((wait, upload)), Some(p)) = (input, pipeline.as_mut()) {
                if step >= a.warmup {
                    p.times.data_wait_s += wait;
                    p.times.upload_s += upload;
                    p.times.steps_fed_ahead += p.fed_ahead as u64;
                    input_s += wait + upload;
                }
            }
            let mut state = StepState {
                b,
                net: &net,
                arena: &mut arena,
                bufs: &bufs,
                groups: &groups,
                sampler: Some(&mut sampler),
            };
            if step == a.warmup {
                // the measured steps only; read once after them (reading waits for the GPU)
                b.set_idle_probe(true);
            }
            let t = std::time::Instant::now();
            let counts_before = b.op_counts();
            let mut staging_s = 0.0;
            let mut host_work = || -> Result<()> {
                if let Some(p) = pipeline.as_mut() {
                    staging_s += p.stage_next(b, &bufs)?;
                }
                Ok(())
            };
            let out = match sync.as_mut() {
                Some(sync) => state.run_ranked_with(step as u64, 0.01, &settings, sync, &mut host_work)?,
                None => state.run_ranked_with(step as u64, 0.01, &settings, &mut OneRank, &mut host_work)?,
            };
            if let (Some(p), true) = (pipeline.as_mut(), step >= a.warmup) {
                p.times.stage_next_s += staging_s;
            }
            let dt = t.elapsed().as_secs_f64();
            if ranks.is_leader() {
                eprintln!("step {step}: {dt:.3} s, total loss {:.4}", out.total_loss());
            }
            if step < a.warmup {
                continue;
            }
            if let (Some(sum), Some(before), Some(after)) = (device_work.as_mut(), counts_before, b.op_counts()) {
                *sum = *sum + (after - before);
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
        let gpu_idle = b.take_gpu_idle()?.map(|(ms, gaps)| GpuIdle {
            ms_per_step: ms / n,
            gaps_per_step: gaps as f64 / n,
            fraction: ms / 1e3 / wall.max(1e-9),
        });
        b.set_idle_probe(false);
        let device = b.name();
        let memory = memory_report(b, a, &space)?;
        let images_per_sec = a.batch as f64 * n / wall.max(1e-9);
        let input = pipeline.map(|p| InputPipelineTimes {
            data_wait_s: p.times.data_wait_s / n,
            upload_s: p.times.upload_s / n,
            stage_next_s: p.times.stage_next_s / n,
            steps_fed_ahead: p.times.steps_fed_ahead,
            images_per_sec_end_to_end: a.batch as f64 * n / (wall + input_s).max(1e-9),
            data: p.times.data,
        });
        Ok(BenchTrainResult {
            ranks: world,
            baseline_images_per_sec: baseline,
            scaling_efficiency: baseline.map(|b1| images_per_sec / b1.max(1e-12)),
            peak_tflops_fp32: fp32_peak(&device),
            precision: precision_name(dtype),
            device,
            space: space.name.clone(),
            batch: a.batch,
            steps: a.steps,
            images_per_sec,
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
            device_work,
            device_memory_bytes: b.op_counts().map(|c| c.allocated_bytes),
            gpu_idle,
            memory,
            input,
        })
    }
}

pub fn run_bench(a: &BenchArgs) -> Result<()> {
    match &a.what {
        BenchWhat::Allreduce(x) => super::bench_allreduce::run(x),
        BenchWhat::Train(t) => {
            if t.batch == 0 || t.steps == 0 {
                return Err(Error::usage("bench train: --batch and --steps must be positive"));
            }
            if let Some(g) = t.memory_gib.filter(|g| !(g.is_finite() && *g > 0.0)) {
                return Err(Error::usage(format!(
                    "bench train: --memory-gib {g}: give a positive size in GiB, e.g. 80"
                )));
            }
            let space = Space::resolve(&t.space)?;
            if t.plan_only {
                let (device, m) = run_on(t.device, PlanJob(t, &space))?;
                println!(
                    "bench train --plan-only: {} space, batch {} at {} px on {device}",
                    space.name, t.batch, t.side
                );
                print_memory(&m, None);
                if let Some(p) = &t.json {
                    let v = serde_json::json!({"device": device, "space": space.name, "memory": m});
                    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Other(e.to_string()))?;
                    std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
                }
                return Ok(());
            }
            let outcome = run_ranked(plan(&t.ranks, t.device)?, t.device, &|ranks, device| {
                run_on(device, Job(t, space.clone(), ranks))
            })?;
            let Some(r) = outcome.leader() else { return Ok(()) };
            println!(
                "bench train: {} space, batch {}, sandwich (4 subnets) + BestUp-{} on {}",
                r.space, r.batch, t.k, r.device
            );
            println!(
                "  {:.2} images/s ({:.3} s per step, mean of {} steps after {} warm-up)",
                r.images_per_sec, r.step_s, r.steps, t.warmup
            );
            if let (Some(b1), Some(eff)) = (r.baseline_images_per_sec, r.scaling_efficiency) {
                println!(
                    "  {} ranks: {:.2} images/s per rank ({:.2} in all) against {b1:.2} alone: {:.1}% scaling efficiency",
                    r.ranks,
                    r.images_per_sec,
                    r.images_per_sec * r.ranks as f64,
                    100.0 * eff
                );
            }
            for (what, s) in &r.split_s {
                println!("  {what:<18} {s:>8.3} s  {:>5.1}%", 100.0 * s / r.step_s.max(1e-12));
            }
            if let Some(p) = &r.input {
                println!(
                    "  input pipeline ({}): {:.2} ms/step waiting for the loader, {:.2} ms/step taking the staged \
                     batch (u8 copy joined, normalised on the device), {:.2} ms/step staging the next one inside \
                     the step (its copy overlaps the step; {} of {} steps fed ahead); {:.2} images/s end to end",
                    p.data,
                    1e3 * p.data_wait_s,
                    1e3 * p.upload_s,
                    1e3 * p.stage_next_s,
                    p.steps_fed_ahead,
                    r.steps,
                    p.images_per_sec_end_to_end
                );
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
            if let Some(w) = &r.device_work {
                let n = r.steps.max(1) as f64;
                println!(
                    "  per step: {:.0} kernel launches, {:.0} GEMMs, {:.1} device allocations, {:.1} host waits \
                     ({:.1} reads, {:.1} synchronisations)",
                    w.launches as f64 / n,
                    w.gemms as f64 / n,
                    w.allocations as f64 / n,
                    w.host_waits() as f64 / n,
                    w.downloads as f64 / n,
                    w.synchronizations as f64 / n
                );
            }
            match &r.gpu_idle {
                Some(i) => println!(
                    "  GPU idle: {:.2} ms per step ({:.1}% of the step) in {:.1} gaps (host waits until the next launch)",
                    i.ms_per_step,
                    100.0 * i.fraction,
                    i.gaps_per_step
                ),
                None if r.device_work.is_some() => {
                    println!("  GPU idle: not measured on this device (launches run synchronously: no queue)")
                }
                None => {}
            }
            print_memory(&r.memory, r.device_memory_bytes);
            if let Some(p) = &t.json {
                let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?;
                std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
            }
            Ok(())
        }
    }
}
