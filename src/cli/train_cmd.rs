//! `attnas train`: supernet training (sandwich rule, in-place distillation, attentive sampling) on the
//! chosen device, then the min and max subnets' accuracy after BN recalibration. Data-parallel with
//! `--gpus N`, `--ranks N` (CPU), or as one rank under torchrun / srun (`crate::dist::launch`).

use std::path::PathBuf;

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::SupernetOps;
use crate::dist::launch::{plan, run_ranked, RankArgs};
use crate::error::Result;
use crate::train::config::load_with_overrides;
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
    /// Continue from the newest checkpoint in --out (same config required).
    #[arg(long)]
    pub resume: bool,
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
        resume: a.resume,
        overwrite: a.overwrite,
        progress,
        ranks: crate::dist::single(),
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
