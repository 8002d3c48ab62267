//! `attnas search`: the evolutionary accuracy-vs-FLOPs search of spec 6.2 over a trained supernet. Every
//! setting is a flag with the published default (512 initial, 128 mutations + 128 crossovers per
//! iteration, p = 0.2, 20 iterations, 10-MFLOP buckets, BN calibration on 32 x 256 training images).

use std::path::PathBuf;

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::SupernetOps;
use crate::dist::launch::{plan, run_ranked, RankArgs};
use crate::error::{Error, Result};
use crate::search::data::DataSettings;
use crate::search::job::{run, SearchJob, SearchSummary};
use crate::search::EvolutionSettings;

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Trained supernet: a run folder, its checkpoints/ folder, a ckpt-N.safetensors or any supernet safetensors.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Packed data: a folder with train.pack (BN calibration) and val.pack (held-out scoring), or a train .pack.
    #[arg(long)]
    pub data: PathBuf,
    /// FLOPs range MIN:MAX in MFLOPs (multiply-accumulates / 1e6), e.g. 200:1200.
    #[arg(long, value_parser = parse_range)]
    pub flops: (f64, f64),
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
    /// FLOPs bucket width in MFLOPs for the per-bucket bests (10 for AttentiveNAS; ~0.05 for the tiny space).
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
    let settings = EvolutionSettings {
        population: a.population,
        mutations: a.mutations,
        crossovers: a.crossovers,
        iterations: a.iterations,
        mutate_prob: a.mutate_prob,
        freeze_resolution: a.freeze_resolution,
        bucket: a.bucket,
        flops_lo: a.flops.0,
        flops_hi: a.flops.1,
        seed: a.seed,
        predictor_keep: a.predictor_keep,
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
        progress: !a.quiet,
        ranks: crate::dist::single(),
    };
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
    println!("{:>10} {:>10} {:>8} {:>8}  arch", "MFLOPs", "Mparams", "top-1", "top-5");
    for e in &summary.front {
        println!(
            "{:>10.2} {:>10.3} {:>7.2}% {:>7.2}%  {}",
            e.mflops,
            e.params as f64 / 1e6,
            e.top1,
            e.top5,
            e.arch.to_json()
        );
    }
    println!("results: {} (pareto.csv, pareto.json, pareto.svg, evaluated.csv)", summary.out.display());
    Ok(())
}
