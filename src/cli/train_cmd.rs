//! `attnas train`: supernet training (sandwich rule, in-place distillation, attentive sampling) on the
//! chosen device, then the min and max subnets' accuracy after BN recalibration. Data-parallel with
//! `--gpus N`, `--ranks N` (CPU), or as one rank under torchrun / srun (`crate::dist::launch`). Installs
//! the SIGTERM / SIGINT handlers: the first signal stops the run cleanly after the current step with a
//! checkpoint and exit code 0, a second exits at once with 128 + its number (`crate::train::stop`).

use std::path::PathBuf;

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::SupernetOps;
use crate::dist::launch::{plan, run_ranked, RankArgs};
use crate::error::Result;
use crate::train::config::load_with_overrides;
use crate::train::stop::StopRequest;
use crate::train::trainer::{run, TrainJob, TrainSummary};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Space + recipe YAML (the `train:` section holds the recipe; see configs/attentivenas.yaml).
    #[arg(long)]
    pub config: PathBuf,
    /// Packed training data: a .pack file, or a folder with train.pack (and val.pack, used for validation).
    #[arg(long)]
    pub data: PathBuf,
    /// auto (the GPU when found, else the CPU), cpu, cuda, cuda:N, or emu (SIMT emulator builds).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Override a recipe key, e.g. --set batch_size=64 --set sampler.method=worstup (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run folder: checkpoints/ and metrics.jsonl.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue from the newest intact checkpoint in --out (same config required; damaged newer ones are
    /// named and moved aside). `--resume auto`: continue when --out holds a checkpoint, else start a new
    /// run, so one job script serves the first submission and every requeue.
    #[arg(long, value_enum, value_name = "auto", num_args = 0..=1, default_missing_value = "newest")]
    pub resume: Option<ResumeMode>,
    /// Start from the weights of this supernet checkpoint (a run folder, a ckpt-N.safetensors, a converted
    /// official checkpoint) with a fresh optimizer and LR schedule; a different class count re-initialises
    /// the classifier (with a notice).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Start afresh in an --out folder that holds an earlier run (removes its checkpoints and log).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub ranks: RankArgs,
}

/// What `--resume` was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResumeMode {
    /// Bare `--resume`: the folder must hold a checkpoint.
    Newest,
    /// Resume when the folder holds a checkpoint, else start.
    Auto,
}

struct Job(TrainJob);

impl BackendJob for Job {
    type Output = TrainSummary;
    fn run<B: SupernetOps>(self, backend: &B) -> Result<TrainSummary> {
        run(backend, &self.0)
    }
}

pub fn run_train(a: &TrainArgs) -> Result<()> {
    let (space, config) = load_with_overrides(&a.config, &a.sets)?;
    let space_yaml = std::fs::read_to_string(&a.config).map_err(|e| crate::error::Error::io(&a.config, e))?;
    let progress = !a.quiet && config.log.progress;
    let job = TrainJob {
        space,
        space_yaml,
        config,
        data: a.data.clone(),
        out: a.out.clone(),
        resume: a.resume.is_some(),
        start_if_empty: a.resume == Some(ResumeMode::Auto),
        init: a.init.clone(),
        overwrite: a.overwrite,
        progress,
        ranks: crate::dist::single(),
        stop: StopRequest::install()?,
    };
    let outcome = run_ranked(plan(&a.ranks, a.device)?, a.device, &|ranks, device| {
        let job = TrainJob { progress: job.progress && ranks.is_leader(), ranks, ..job.clone() };
        run_on(device, Job(job))
    })?;
    let Some(summary) = outcome.leader() else { return Ok(()) };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
        return Ok(());
    }
    if let Some(reason) = &summary.stopped {
        let ck =
            summary.checkpoint.as_ref().map_or("none (no step was trained)".to_string(), |c| c.display().to_string());
        println!("stopped by {reason} after step {}; checkpoint: {ck}", summary.steps);
        println!("continue with the same command and --resume (or --resume auto)");
        println!("metrics: {}", summary.metrics.display());
        return Ok(());
    }
    println!(
        "trained {} steps ({} epochs), {:.1} images/s",
        summary.steps, summary.epochs_completed, summary.images_per_sec
    );
    println!("{:<8} {:>10} {:>8} {:>8} {:>8}", "subnet", "MFLOPs", "top-1", "top-5", "images");
    for (role, mf, acc) in &summary.last_eval {
        println!("{role:<8} {mf:>10.2} {:>7.2}% {:>7.2}% {:>8}", acc.top1, acc.top5, acc.images);
    }
    if let Some(c) = &summary.checkpoint {
        println!("checkpoint: {}", c.display());
    }
    println!("metrics: {}", summary.metrics.display());
    Ok(())
}
