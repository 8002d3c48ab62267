//! A training run as the report sees it: the metrics log read line by line into compact series (a long
//! run's log holds every subnet's arch; the report keeps only numbers), plus what the newest checkpoint's
//! state says (steps per epoch, the space definition).
//!
//! The log may be growing (a run in progress): an unterminated last line is skipped and reported. Each
//! step appears once: `MetricsLog::resume` already cut a resumed run's log back to its checkpoint, and
//! should a log still hold a step line at or below one seen before (written by other tools, or a copy
//! concatenated by hand), the later line wins and what it supersedes is dropped and counted, the rule
//! TensorBoard applies to a restarted run.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::train::metrics::{visit_log, EpochRecord, LogLine, Role, StartRecord, StepRecord, StopRecord};
use crate::train::TrainConfig;

/// The numbers of one logged step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPoint {
    pub step: u64,
    pub epoch: u64,
    pub lr: f64,
    pub images_per_sec: f64,
    pub data_wait_s: Option<f64>,
    /// Loss of the max subnet, mean over the sampled subnets, of the min subnet.
    pub loss_max: Option<f64>,
    pub loss_sampled: Option<f64>,
    pub loss_min: Option<f64>,
    /// Seconds since the start (or resume) that logged it.
    pub wall_s: f64,
}

/// One sampled subnet of the sandwich.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    pub step: u64,
    pub epoch: u64,
    pub mflops: f64,
    /// Attentive draws: the target FLOPs bin index.
    pub target_bin: Option<i64>,
    /// Candidates scored (0 for a uniform draw).
    pub candidates: usize,
    pub differs_from_first: Option<bool>,
    pub score_margin: Option<f64>,
}

/// The newest complete checkpoint's step and state file content.
#[derive(Clone, Debug)]
pub struct CheckpointInfo {
    pub step: u64,
    pub state_path: PathBuf,
    pub state: serde_json::Value,
}

/// Everything the report shows about a training run.
#[derive(Clone, Debug)]
pub struct RunHistory {
    pub dir: PathBuf,
    /// Every start and resume, in log order.
    pub starts: Vec<StartRecord>,
    /// Early stops (a signal, an error), in log order.
    pub stops: Vec<StopRecord>,
    /// Ascending, one per step.
    pub steps: Vec<StepPoint>,
    pub draws: Vec<Draw>,
    /// Ascending by step, one per epoch.
    pub epochs: Vec<EpochRecord>,
    /// Bytes of an unterminated last line (the run is writing it, or crashed while writing it).
    pub partial_tail_bytes: usize,
    /// Lines superseded by a later line for the same step (0 for a log attnas wrote).
    pub superseded_lines: usize,
    /// When the log was last written.
    pub modified: Option<SystemTime>,
    pub checkpoint: Option<CheckpointInfo>,
}

fn step_point(s: &StepRecord) -> StepPoint {
    let loss = |role: Role| s.mean_of(role, |x| x.loss);
    StepPoint {
        step: s.step,
        epoch: s.epoch,
        lr: s.lr,
        images_per_sec: s.images_per_sec,
        data_wait_s: s.data_wait_s,
        loss_max: loss(Role::Max),
        loss_sampled: loss(Role::Sampled),
        loss_min: loss(Role::Min),
        wall_s: s.wall_s,
    }
}

impl RunHistory {
    /// Reads `RUN/metrics.jsonl` and the newest checkpoint in `RUN/checkpoints/` (if any). Errors name
    /// the file and line; a folder without a log is a usage error saying what to pass.
    pub fn load(run: &Path) -> Result<RunHistory> {
        let log = run.join("metrics.jsonl");
        if !log.is_file() {
            return Err(Error::usage(format!(
                "{}: no metrics.jsonl here; pass the --out folder of an `attnas train` run",
                run.display()
            )));
        }
        let mut h = RunHistory {
            dir: run.to_path_buf(),
            starts: Vec::new(),
            stops: Vec::new(),
            steps: Vec::new(),
            draws: Vec::new(),
            epochs: Vec::new(),
            partial_tail_bytes: 0,
            superseded_lines: 0,
            modified: std::fs::metadata(&log).and_then(|m| m.modified()).ok(),
            checkpoint: latest_checkpoint(run)?,
        };
        h.partial_tail_bytes = visit_log(&log, |line| {
            h.add(line);
            Ok(())
        })?;
        Ok(h)
    }

    /// Adds one log line, dropping what a repeated step supersedes.
    fn add(&mut self, line: LogLine) {
        match line {
            LogLine::Start(s) => self.starts.push(s),
            LogLine::Step(s) => {
                self.drop_from(s.step);
                for x in s.subnets.iter().filter(|x| x.role == Role::Sampled) {
                    self.draws.push(Draw {
                        step: s.step,
                        epoch: s.epoch,
                        mflops: x.mflops,
                        target_bin: x.target_bin,
                        candidates: x.candidates.len(),
                        differs_from_first: x.choice_differs_from_first(),
                        score_margin: x.score_margin(),
                    });
                }
                self.steps.push(step_point(&s));
            }
            LogLine::Epoch(e) => {
                let before = self.epochs.len();
                self.epochs.retain(|x| x.epoch != e.epoch && x.step < e.step);
                self.superseded_lines += before - self.epochs.len();
                self.epochs.push(e);
            }
            LogLine::Stop(s) => self.stops.push(s),
        }
    }

    /// Removes steps (and their draws and epochs) at or after `step`.
    fn drop_from(&mut self, step: u64) {
        if self.steps.last().is_none_or(|p| p.step < step) {
            return;
        }
        let (steps, epochs) = (self.steps.len(), self.epochs.len());
        self.steps.retain(|p| p.step < step);
        self.draws.retain(|d| d.step < step);
        self.epochs.retain(|e| e.step < step);
        self.superseded_lines += steps - self.steps.len() + epochs - self.epochs.len();
    }

    /// The effective config of the newest start line.
    pub fn config(&self) -> Option<TrainConfig> {
        self.starts.last().and_then(|s| TrainConfig::from_value(s.config.clone()).ok())
    }

    /// Steps per epoch: from the checkpoint's state, else from a completed epoch in the log.
    pub fn steps_per_epoch(&self) -> Option<u64> {
        let from_state = self.checkpoint.as_ref().and_then(|c| c.state.get("steps_per_epoch")).and_then(|v| v.as_u64());
        from_state.or_else(|| self.epochs.first().map(|e| e.step / (e.epoch + 1))).filter(|&n| n > 0)
    }

    /// The steps the run will take when it finishes (`None` when steps per epoch are not known yet).
    pub fn planned_steps(&self) -> Option<u64> {
        Some(self.config()?.total_steps(self.steps_per_epoch()?))
    }

    pub fn last_step(&self) -> u64 {
        self.steps.last().map_or(0, |p| p.step).max(self.starts.last().map_or(0, |s| s.step))
    }

    /// The space definition stored with the checkpoint (the run's own YAML text).
    pub fn space_yaml(&self) -> Option<&str> {
        self.checkpoint.as_ref()?.state.get("space_yaml")?.as_str()
    }
}

/// The newest complete checkpoint of a run folder, reading only its small state file.
fn latest_checkpoint(run: &Path) -> Result<Option<CheckpointInfo>> {
    let dir = run.join("checkpoints");
    if !dir.is_dir() {
        return Ok(None);
    }
    let Ok(ck) = crate::checkpoint::resolve_ckpt_arg(&dir) else { return Ok(None) };
    let bytes = std::fs::read(&ck.state).map_err(|e| Error::io(&ck.state, e))?;
    let state = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&ck.state, e.line(), format!("checkpoint state is not valid JSON: {e}")))?;
    Ok(Some(CheckpointInfo { step: ck.step, state_path: ck.state, state }))
}
