//! The training run in TensorBoard: `OUT/tb/` holds one event file that mirrors `metrics.jsonl`
//! (`train.log.tensorboard`, on by default; rank 0 only, like the log). Open it with
//! `tensorboard --logdir OUT/tb`.
//!
//! Tags, per logged step (x = the step count, as in the log):
//! - `loss/max`, `loss/sampled` (mean over the sampled subnets), `loss/min`, `loss/total`;
//! - `lr`, `throughput/images_per_sec`, `throughput/data_wait_ms` (time waiting for the loader's batch);
//! - `sampler/sampled_mflops` (mean MFLOPs of the sampled subnets), `sampler/target_mflops` (mean target
//!   bin of attentive draws), `sampler/score_margin` (mean gap between the chosen candidate's score and the
//!   runner-up's), `train/grad_clip_fraction` when logged;
//!
//! per epoch (x = the step the epoch ended at):
//! - `eval/max_top1`, `eval/max_top5`, `eval/min_top1`, `eval/min_top5` (after BN recalibration);
//! - histograms of the epoch's draws `sampler_epoch/sampled_mflops` and `sampler_epoch/score_margin`, and
//!   `sampler_epoch/choice_not_first` (fraction of attentive draws that trained another candidate than
//!   the first drawn);
//!
//! and `run/config` (text) at each start or resume.
//!
//! One value per step, also after a resume: [`TensorBoardLog::rebuild`] writes a new event file from the
//! metrics log as it stands (which `MetricsLog::resume` has cut back to the checkpoint's step), then
//! removes the older event files; later records are appended as they are logged. The events are a pure
//! function of the log lines (wall times come from the start line's Unix time plus each line's
//! `wall_s`), so the rebuilt file equals the one written live. Each start line also writes a
//! `SessionLog.START` at the first step it will log, so a TensorBoard that was already reading the run
//! drops the orphaned steps it had loaded (its Rust data server does so on seeing a step again anyway).

use std::path::{Path, PathBuf};

use super::metrics::{visit_log, EpochRecord, LogLine, Role, StartRecord, StepRecord, StopRecord};
use crate::error::{Error, Result};
use crate::tensorboard::proto::SummaryValue;
use crate::tensorboard::writer::{encode_events, file_version_event};
use crate::tensorboard::{
    event_file_name, histogram, is_event_file, scalar, session_start_event, summary_event, text, Event, EventFile,
};
use crate::util::clock::unix_now;

/// Buckets of the per-epoch histograms.
const HISTOGRAM_BINS: usize = 30;

/// The attentive draws of the epoch in progress.
#[derive(Clone, Debug, Default)]
struct EpochDraws {
    sampled_mflops: Vec<f64>,
    margins: Vec<f64>,
    draws: u64,
    not_first: u64,
}

/// Turns log lines into events. Stateful: wall times count from the last start line, the target bins
/// need its `sampler.discretize_step`, and the per-epoch histograms gather the steps since the last
/// epoch line.
#[derive(Clone, Debug, Default)]
pub struct MetricsEvents {
    base_unix: Option<f64>,
    last_wall: f64,
    bin_mflops: Option<f64>,
    epoch: EpochDraws,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| sum / n as f64)
}

impl MetricsEvents {
    /// The events of one log line.
    pub fn events(&mut self, line: &LogLine) -> Vec<Event> {
        match line {
            LogLine::Start(s) => self.start(s),
            LogLine::Step(s) => vec![self.step(s)],
            LogLine::Epoch(e) => vec![self.epoch(e)],
            LogLine::Stop(s) => vec![self.stop(s)],
        }
    }

    /// An early stop as a text event at its step (`run/stop`), beside the start's `run/config`.
    fn stop(&mut self, s: &StopRecord) -> Event {
        let mut markdown = format!("stopped after step {} ({})", s.step, s.reason);
        if let Some(m) = &s.message {
            markdown.push_str(&format!(": {m}"));
        }
        if let Some(c) = &s.checkpoint {
            markdown.push_str(&format!("; resume from `{c}`"));
        }
        summary_event(self.last_wall, s.step, vec![text("run/stop", &markdown)])
    }

    fn wall(&mut self, wall_s: f64) -> f64 {
        let base = *self.base_unix.get_or_insert_with(unix_now);
        base + wall_s
    }

    fn start(&mut self, s: &StartRecord) -> Vec<Event> {
        let base = s.unix_time.unwrap_or_else(unix_now);
        self.base_unix = Some(base);
        self.last_wall = base;
        self.bin_mflops = s.config.pointer("/sampler/discretize_step").and_then(|v| v.as_f64());
        let what = if s.step == 0 { "run started".to_string() } else { format!("run resumed after step {}", s.step) };
        let config = serde_json::to_string_pretty(&s.config).unwrap_or_default();
        let indented: String = config.lines().map(|l| format!("    {l}\n")).collect();
        let markdown = format!("{what}: space `{}`, config fingerprint `{}`\n\n{indented}", s.space, s.fingerprint);
        vec![
            session_start_event(base, s.step + 1, &what),
            summary_event(base, s.step, vec![text("run/config", &markdown)]),
        ]
    }

    fn step(&mut self, s: &StepRecord) -> Event {
        let wall = self.wall(s.wall_s);
        self.last_wall = wall;
        let mut v: Vec<SummaryValue> = Vec::new();
        let of_role = |role: Role| s.subnets.iter().filter(move |x| x.role == role);
        for role in [Role::Max, Role::Sampled, Role::Min] {
            if let Some(loss) = s.mean_of(role, |x| x.loss) {
                v.push(scalar(&format!("loss/{}", role.name()), loss));
            }
        }
        v.push(scalar("loss/total", s.total_loss));
        v.push(scalar("lr", s.lr));
        v.push(scalar("throughput/images_per_sec", s.images_per_sec));
        if let Some(w) = s.data_wait_s {
            v.push(scalar("throughput/data_wait_ms", w * 1e3));
        }
        if let Some(m) = s.mean_of(Role::Sampled, |x| x.mflops) {
            v.push(scalar("sampler/sampled_mflops", m));
        }
        if let Some(bin) = self.bin_mflops {
            if let Some(t) = mean(of_role(Role::Sampled).filter_map(|x| x.target_bin).map(|b| b as f64 * bin)) {
                v.push(scalar("sampler/target_mflops", t));
            }
        }
        if let Some(m) = mean(of_role(Role::Sampled).filter_map(|x| x.score_margin())) {
            v.push(scalar("sampler/score_margin", m));
        }
        if let Some(f) = s.grad_clip_fraction {
            v.push(scalar("train/grad_clip_fraction", f));
        }
        for x in of_role(Role::Sampled) {
            self.epoch.sampled_mflops.push(x.mflops);
            self.epoch.margins.extend(x.score_margin());
            if let Some(differs) = x.choice_differs_from_first() {
                self.epoch.draws += 1;
                self.epoch.not_first += differs as u64;
            }
        }
        summary_event(wall, s.step, v)
    }

    fn epoch(&mut self, e: &EpochRecord) -> Event {
        let wall = self.last_wall + e.wall_s;
        self.last_wall = wall;
        let mut v = Vec::new();
        for r in &e.subnets {
            v.push(scalar(&format!("eval/{}_top1", r.role.name()), r.top1));
            v.push(scalar(&format!("eval/{}_top5", r.role.name()), r.top5));
        }
        let draws = std::mem::take(&mut self.epoch);
        v.extend(histogram("sampler_epoch/sampled_mflops", &draws.sampled_mflops, HISTOGRAM_BINS));
        v.extend(histogram("sampler_epoch/score_margin", &draws.margins, HISTOGRAM_BINS));
        if draws.draws > 0 {
            v.push(scalar("sampler_epoch/choice_not_first", draws.not_first as f64 / draws.draws as f64));
        }
        summary_event(wall, e.step, v)
    }
}

/// The run's event file, open for appending.
#[derive(Debug)]
pub struct TensorBoardLog {
    file: EventFile,
    events: MetricsEvents,
}

impl TensorBoardLog {
    /// Writes a new event file in `dir` (created if needed) holding the events of every record of the
    /// metrics log at `log` (a missing log counts as empty), then removes the other event files in
    /// `dir`. The new file is complete before the old ones go, so a crash leaves a readable directory.
    pub fn rebuild(dir: &Path, log: &Path) -> Result<TensorBoardLog> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut events = MetricsEvents::default();
        let now = unix_now();
        let mut bytes = encode_events(&[file_version_event(now)]);
        if log.is_file() {
            visit_log(log, |line| {
                bytes.extend(encode_events(&events.events(&line)));
                Ok(())
            })?;
        }
        let name = event_file_name(now as u64);
        let file = EventFile::create_with(&dir.join(&name), &bytes)?;
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let other = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| is_event_file(n) && n != name);
            if other && path.is_file() {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(TensorBoardLog { file, events })
    }

    /// Appends the events of one log line.
    pub fn append(&mut self, line: &LogLine) -> Result<()> {
        let events = self.events.events(line);
        self.file.append(&events)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// The event files in `dir`, by name (the order TensorBoard reads them in).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(is_event_file) && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}
