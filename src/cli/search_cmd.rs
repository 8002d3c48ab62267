//! `attnas search`: the evolutionary accuracy-vs-FLOPs search of spec 6.2 over a trained supernet. Every
//! setting is a flag with the published default (512 initial, 128 mutations + 128 crossovers per
//! iteration, p = 0.2, 20 iterations, 10-MFLOP buckets, BN calibration on 32 x 256 training images).
//! `--objective latency` searches top-1 against latency instead (a latency table, or measured here).

use std::path::PathBuf;

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::SupernetOps;
use crate::dist::launch::{plan, run_ranked, RankArgs};
use crate::error::{Error, Result};
use crate::search::data::DataSettings;
use crate::search::job::{run, LatencySearch, LatencySource, SearchJob, SearchSummary};
use crate::search::EvolutionSettings;

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Trained supernet: a run folder, its checkpoints/ folder, a ckpt-N.safetensors or any supernet safetensors.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Packed data: a folder with train.pack (BN calibration) and val.pack (held-out scoring), or a train .pack.
    #[arg(long)]
    pub data: PathBuf,
    /// FLOPs range MIN:MAX in MFLOPs (multiply-accumulates / 1e6), e.g. 200:1200 (required with
    /// --objective flops; with latency, optional: the whole space by default).
    #[arg(long, value_parser = parse_range)]
    pub flops: Option<(f64, f64)>,
    /// The cost axis of the front: flops (MFLOPs) or latency (ms; needs --latency-table or --measure).
    #[arg(long, value_enum, default_value_t = Objective::Flops)]
    pub objective: Objective,
    /// Latencies from this table (attnas latency-table) measured on the deployment device.
    #[arg(long, conflicts_with = "measure")]
    pub latency_table: Option<PathBuf>,
    /// Latencies measured on --device: the median of 5 timed forwards of each subnet's folded model.
    #[arg(long)]
    pub measure: bool,
    /// Latency range MIN:MAX in ms every subnet must lie in (default: any).
    #[arg(long, value_parser = parse_range)]
    pub latency: Option<(f64, f64)>,
    /// Images per forward of the latency measured with --measure.
    #[arg(long, default_value_t = 1)]
    pub latency_batch: usize,
    /// Use a latency table from another device, precision, thread count or space (recorded in latency.json).
    #[arg(long)]
    pub allow_table_mismatch: bool,
    /// CPU threads (rayon and GEMM threads; a latency table records the count it was measured with); 0 =
    /// one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Space file (its train: section gives the loader's transforms) or built-in name; default: stored with the checkpoint.
    #[arg(long)]
    pub config: Option<String>,
    /// Held-out images from this packed file instead of val.pack beside the training file.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Output folder: pareto.{csv,json,svg}, buckets.csv, evaluated.csv, search-state.json.
    #[arg(long, default_value = "runs/search")]
    pub out: PathBuf,
    /// Continue the search in --out (same checkpoint, space, data and settings; --iterations may grow).
    #[arg(long)]
    pub resume: bool,
    /// auto (the GPU when found, else the CPU), cpu, cuda, cuda:N, or emu (SIMT emulator builds).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Storage of the activations while subnets are recalibrated and scored: auto (bf16 on a GPU of
    /// compute capability >= 8.0, else fp32), fp32 or bf16.
    #[arg(long, default_value = "auto", value_parser = crate::backend::Precision::parse)]
    pub precision: crate::backend::Precision,
    /// Initial population (the min subnet first when in range, the rest uniform within the range).
    #[arg(long, default_value_t = 512)]
    pub population: usize,
    /// Mutated children per iteration.
    #[arg(long, default_value_t = 128)]
    pub mutations: usize,
    /// Crossover children per iteration.
    #[arg(long, default_value_t = 128)]
    pub crossovers: usize,
    /// Iterations (each evaluates a population and breeds the next).
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Per-gene mutation probability.
    #[arg(long, default_value_t = 0.2)]
    pub mutate_prob: f64,
    /// Never mutate the resolution gene.
    #[arg(long)]
    pub freeze_resolution: bool,
    /// Bucket width of the per-bucket bests, in the objective's unit: MFLOPs (10 for AttentiveNAS, ~0.05
    /// for the tiny space) or ms.
    #[arg(long, default_value_t = 10.0)]
    pub bucket: f64,
    /// BN calibration batches (training images, training augmentation).
    #[arg(long, default_value_t = 32)]
    pub calib_batches: usize,
    #[arg(long, default_value_t = 256)]
    pub calib_batch_size: usize,
    /// Held-out images scored per candidate (a seeded subset of the eval split); 0 = all of it.
    #[arg(long, default_value_t = 10_000)]
    pub eval_images: usize,
    #[arg(long, default_value_t = 256)]
    pub eval_batch_size: usize,
    /// Loader crop side; default: the training config's data.crop.
    #[arg(long)]
    pub crop: Option<u32>,
    /// Seeds the populations, the calibration images and the held-out subset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Accuracy predictor (attnas predictor fit): evaluate only the children it ranks best.
    #[arg(long)]
    pub predictor: Option<PathBuf>,
    /// Subnets to put first in the initial population (e.g. a0,a6 or a previous search's best.json):
    /// comma-separated and/or repeated names, arch files or inline archs {...}; each within --flops.
    #[arg(long)]
    pub seed_arch: Vec<String>,
    /// Fraction of each iteration's children kept by --predictor.
    #[arg(long, default_value_t = 0.5)]
    pub predictor_keep: f64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ranks: RankArgs,
}

/// The search's cost axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    Flops,
    Latency,
}

fn parse_range(s: &str) -> std::result::Result<(f64, f64), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("'{s}': expected MIN:MAX in MFLOPs, e.g. 200:1200"))?;
    let lo: f64 = a.trim().parse().map_err(|_| format!("'{a}' is not a number (MIN of MIN:MAX)"))?;
    let hi: f64 = b.trim().parse().map_err(|_| format!("'{b}' is not a number (MAX of MIN:MAX)"))?;
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(format!("'{s}': need finite MIN <= MAX"));
    }
    Ok((lo, hi))
}

struct Job(SearchJob);

impl BackendJob for Job {
    type Output = SearchSummary;
    fn run<B: SupernetOps>(self, backend: &B) -> Result<SearchSummary> {
        run(backend, &self.0)
    }
}

pub fn run_search(a: &SearchArgs) -> Result<()> {
    if a.predictor.is_none() && a.predictor_keep != 0.5 {
        return Err(Error::usage("--predictor-keep needs --predictor FILE"));
    }
    let latency = match (a.objective, &a.latency_table, a.measure) {
        (Objective::Flops, None, false) if a.latency.is_none() => None,
        (Objective::Flops, ..) => {
            return Err(Error::usage("--latency-table, --measure and --latency need --objective latency"));
        }
        (Objective::Latency, None, false) => {
            return Err(Error::usage("--objective latency needs --latency-table FILE or --measure"));
        }
        (Objective::Latency, table, _) => {
            let source = match table {
                Some(path) => LatencySource::Table { path: path.clone(), allow_mismatch: a.allow_table_mismatch },
                None => LatencySource::Measure { batch: a.latency_batch.max(1) },
            };
            let (lo, hi) = a.latency.unwrap_or((0.0, 1e12));
            Some(LatencySearch { source, lo, hi })
        }
    };
    let flops = match (a.flops, a.objective) {
        (Some(f), _) => f,
        (None, Objective::Latency) => (0.0, 1e12),
        (None, Objective::Flops) => return Err(Error::usage("--flops MIN:MAX is required (e.g. --flops 200:1200)")),
    };
    let settings = EvolutionSettings {
        population: a.population,
        mutations: a.mutations,
        crossovers: a.crossovers,
        iterations: a.iterations,
        mutate_prob: a.mutate_prob,
        freeze_resolution: a.freeze_resolution,
        bucket: a.bucket,
        flops_lo: flops.0,
        flops_hi: flops.1,
        seed: a.seed,
        predictor_keep: a.predictor_keep,
        seeds: Vec::new(),
    };
    let data_settings = DataSettings {
        calib_batches: a.calib_batches,
        calib_batch_size: a.calib_batch_size,
        eval_images: a.eval_images,
        eval_batch_size: a.eval_batch_size,
        seed: a.seed,
    };
    let job = SearchJob {
        ckpt: a.ckpt.clone(),
        config: a.config.clone(),
        data: a.data.clone(),
        eval_data: a.eval_data.clone(),
        out: a.out.clone(),
        resume: a.resume,
        settings,
        data_settings,
        crop: a.crop,
        predictor: a.predictor.clone(),
        seed_archs: a.seed_arch.clone(),
        progress: !a.quiet,
        latency,
        precision: a.precision,
        ranks: crate::dist::single(),
    };
    crate::deploy::latency::configure_cpu_threads(a.threads)?;
    let outcome = run_ranked(plan(&a.ranks, a.device)?, a.device, &|ranks, device| {
        run_on(device, Job(SearchJob { progress: job.progress && ranks.is_leader(), ranks, ..job.clone() }))
    })?;
    let Some(summary) = outcome.leader() else { return Ok(()) };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
        return Ok(());
    }
    println!(
        "searched {} iterations: {} subnets evaluated ({} now, {:.2} candidates/s)",
        summary.iterations_done, summary.evaluated, summary.evaluated_now, summary.candidates_per_sec
    );
    println!("Pareto front ({} subnets):", summary.front.len());
    println!("{:>10} {:>12} {:>10} {:>8} {:>8}  arch", "MFLOPs", "latency ms", "Mparams", "top-1", "top-5");
    for e in &summary.front {
        println!(
            "{:>10.2} {:>12} {:>10.3} {:>7.2}% {:>7.2}%  {}",
            e.mflops,
            e.latency_ms.map_or("-".into(), |l| format!("{l:.3}")),
            e.params as f64 / 1e6,
            e.top1,
            e.top5,
            e.arch.to_json()
        );
    }
    println!("results: {} (pareto.csv, pareto.json, pareto.svg, evaluated.csv)", summary.out.display());
    Ok(())
}
