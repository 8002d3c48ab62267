//! The training metrics log: JSON lines, one record per line, each written with its newline in one call
//! and flushed, so a crash loses at most the line being written. Records carry a `kind`:
//!
//! - `start`: the run (or a resume) begins: space, config fingerprint and the effective config;
//! - `step`: one optimizer step: LR, throughput, and per subnet of the sandwich its arch, MFLOPs, loss
//!   and, for attentively sampled subnets, the candidates with their scores and which one was trained;
//! - `epoch`: the end-of-epoch validation of the max and min subnets after BN recalibration;
//! - `stop`: the run stopped early (a stop signal, or a checkpoint it could not write), with the step
//!   and the checkpoint to resume from.
//!
//! Step numbering: `step` is the number of optimizer steps completed (the first step logs 1; a start
//! or epoch line logs the count so far), `epoch` is the 0-based epoch index. [`MetricsLog::resume`]
//! keeps the lines up to a checkpoint's step count and drops the rest (lines written after the
//! checkpoint, which the resumed run writes again) and any partial last line.
//!
//! With `train.log.tensorboard` the open log also mirrors every record into TensorBoard event files
//! ([`MetricsLog::attach_tensorboard`], `train::tensorboard`).
//!
//! Non-finite floats (a diverged loss) are written as the strings "NaN", "inf", "-inf", since JSON has
//! no such numbers, and read back as floats.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::arch::Arch;
use crate::train::tensorboard::TensorBoardLog;

/// A subnet's place in the sandwich.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Max,
    Sampled,
    Min,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Max => "max",
            Role::Sampled => "sampled",
            Role::Min => "min",
        }
    }
}

/// One attentive candidate: its arch, MFLOPs and score (minus the minibatch loss).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub arch: Arch,
    pub mflops: f64,
    #[serde(with = "json_float")]
    pub score: f64,
}

/// One subnet trained in a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubnetRecord {
    pub role: Role,
    pub arch: Arch,
    pub mflops: f64,
    /// The loss it was trained with (label-smoothed CE for the max subnet, KD for the others).
    #[serde(with = "json_float")]
    pub loss: f64,
    /// The scored candidates (attentive sampling only; empty for max, min and uniform draws).
    #[serde(default)]
    pub candidates: Vec<CandidateRecord>,
    /// Index into `candidates` of the one trained.
    #[serde(default)]
    pub chosen: Option<usize>,
    /// The target FLOPs bin index (bin MFLOPs = index * discretize_step).
    #[serde(default)]
    pub target_bin: Option<i64>,
    /// Candidates of this draw that missed the target bin after every retry and were kept anyway.
    #[serde(default)]
    pub fallbacks: u64,
}

impl SubnetRecord {
    /// The gap between the chosen candidate's score and the nearest other candidate's (BestUp: best minus
    /// runner-up; WorstUp: runner-up minus worst): how clearly the scores decided. `None` without a
    /// choice among two or more finite scores.
    pub fn score_margin(&self) -> Option<f64> {
        let chosen = self.candidates.get(self.chosen?)?.score;
        let others = self.candidates.iter().enumerate().filter(|&(i, _)| Some(i) != self.chosen);
        let gap = others.map(|(_, c)| (c.score - chosen).abs()).fold(f64::INFINITY, f64::min);
        (gap.is_finite() && chosen.is_finite()).then_some(gap)
    }

    /// Whether the trained candidate was another than the first drawn (`None` without candidates). The
    /// candidates are drawn independently, so the first is a plain random draw from the target bin.
    pub fn choice_differs_from_first(&self) -> Option<bool> {
        (self.candidates.len() > 1).then_some(self.chosen? != 0)
    }
}

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: u64,
    #[serde(with = "json_float")]
    pub lr: f64,
    pub images_per_sec: f64,
    /// Seconds since the run (or resume) started.
    pub wall_s: f64,
    pub subnets: Vec<SubnetRecord>,
    /// Sum of the subnets' losses.
    #[serde(with = "json_float")]
    pub total_loss: f64,
    /// Fraction of gradient elements the value clip changed (`None` when clipping is off).
    #[serde(default)]
    pub grad_clip_fraction: Option<f64>,
    /// Seconds the trainer waited for this step's batch from the loader (`None` in older logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_wait_s: Option<f64>,
}

impl StepRecord {
    /// The mean of `value` over the subnets of `role` (`None` when the step trained none).
    pub fn mean_of(&self, role: Role, value: impl Fn(&SubnetRecord) -> f64) -> Option<f64> {
        let (n, sum) =
            self.subnets.iter().filter(|s| s.role == role).fold((0usize, 0.0), |(n, s), x| (n + 1, s + value(x)));
        (n > 0).then(|| sum / n as f64)
    }
}

/// One validated subnet at the end of an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub role: Role,
    pub arch: Arch,
    pub mflops: f64,
    /// Top-1 and top-5 accuracy in percent.
    #[serde(with = "json_float")]
    pub top1: f64,
    #[serde(with = "json_float")]
    pub top5: f64,
    pub images: u64,
}

/// The end of an epoch: validation after BN recalibration (spec 3.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub step: u64,
    pub subnets: Vec<EvalRecord>,
    pub calib_batches: u64,
    pub calib_images: u64,
    pub wall_s: f64,
}

/// A run or a resume begins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    /// Steps completed before this start (0 for a new run, the checkpoint's count on resume).
    pub step: u64,
    pub space: String,
    /// `TrainConfig::fingerprint`.
    pub fingerprint: String,
    /// `TrainConfig::to_value`: the effective config after overrides.
    pub config: serde_json::Value,
    /// When it began, in seconds since the Unix epoch (`None` in older logs); step and epoch lines
    /// count their `wall_s` from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_time: Option<f64>,
}

/// The run stops before its last step: a stop signal, or a checkpoint that could not be written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopRecord {
    /// Steps completed.
    pub step: u64,
    /// "SIGTERM", "SIGINT", "a stop signal on another rank", or "error".
    pub reason: String,
    /// Details (the error's message), when there are any.
    #[serde(default)]
    pub message: Option<String>,
    /// The checkpoint to resume from (written at `step` for a signal), if there is one.
    #[serde(default)]
    pub checkpoint: Option<String>,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LogLine {
    Start(StartRecord),
    Step(StepRecord),
    Epoch(EpochRecord),
    Stop(StopRecord),
}

impl From<StartRecord> for LogLine {
    fn from(r: StartRecord) -> Self {
        LogLine::Start(r)
    }
}

impl From<StepRecord> for LogLine {
    fn from(r: StepRecord) -> Self {
        LogLine::Step(r)
    }
}

impl From<EpochRecord> for LogLine {
    fn from(r: EpochRecord) -> Self {
        LogLine::Epoch(r)
    }
}

impl LogLine {
    /// The step count the line records.
    pub fn step(&self) -> u64 {
        match self {
            LogLine::Start(r) => r.step,
            LogLine::Step(r) => r.step,
            LogLine::Epoch(r) => r.step,
            LogLine::Stop(r) => r.step,
        }
    }
}

/// An open log; every [`MetricsLog::append`] writes and flushes one line (and its TensorBoard events
/// when attached).
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    tensorboard: Option<TensorBoardLog>,
}

/// What [`MetricsLog::resume`] found in the existing file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// Complete lines kept (step <= the resume step).
    pub kept_lines: usize,
    /// Complete lines dropped because they came after the resume step.
    pub dropped_lines: usize,
    /// Bytes of an unterminated last line (a crash mid-write) that were dropped.
    pub partial_tail_bytes: usize,
}

/// The content of a log file as [`read_log_report`] sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogContents {
    pub lines: Vec<LogLine>,
    /// Bytes of an unterminated last line, ignored (0 when the file ends with a newline).
    pub partial_tail_bytes: usize,
}

impl MetricsLog {
    /// Start a new log at `path`, replacing any file there.
    pub fn create(path: &Path) -> Result<MetricsLog> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog { path: path.to_path_buf(), file, tensorboard: None })
    }

    /// Continue the log of a run resumed from a checkpoint taken after `through_step` steps: keep the
    /// lines whose step is <= `through_step`, drop the later ones and a partial last line, then append.
    /// `u64::MAX` keeps every complete line. A missing file is created. A complete line that is not a
    /// record is an error naming the file and line (the file is left as it was).
    pub fn resume(path: &Path, through_step: u64) -> Result<(MetricsLog, ResumeReport)> {
        let mut report = ResumeReport::default();
        let keep_bytes = match std::fs::read(path) {
            Ok(bytes) => {
                let (lines, tail) = split_lines(path, &bytes)?;
                let cut = lines
                    .iter()
                    .position(|l| l.record.as_ref().is_some_and(|r| r.step() > through_step))
                    .unwrap_or(lines.len());
                let records = |part: &[RawLine]| part.iter().filter(|l| l.record.is_some()).count();
                report.kept_lines = records(&lines[..cut]);
                report.dropped_lines = records(&lines[cut..]);
                report.partial_tail_bytes = tail;
                Some(if cut == 0 { 0 } else { lines[cut - 1].end as u64 })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(path, e)),
        };
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        if let Some(len) = keep_bytes {
            file.set_len(len).map_err(|e| Error::io(path, e))?;
        }
        Ok((MetricsLog { path: path.to_path_buf(), file, tensorboard: None }, report))
    }

    /// Write one record as a line and flush it.
    pub fn append(&mut self, line: &LogLine) -> Result<()> {
        let mut text = serde_json::to_string(line)
            .map_err(|e| Error::Other(format!("{}: cannot encode a metrics record: {e}", self.path.display())))?;
        text.push('\n');
        self.file.write_all(text.as_bytes()).and_then(|_| self.file.flush()).map_err(|e| Error::io(&self.path, e))?;
        match &mut self.tensorboard {
            Some(tb) => tb.append(line),
            None => Ok(()),
        }
    }

    /// Mirror the log into TensorBoard event files in `dir` from now on. The event file is first rebuilt
    /// from the lines the log holds (after [`MetricsLog::resume`]: those up to the checkpoint), replacing
    /// older event files, so a resumed run shows each step once.
    pub fn attach_tensorboard(&mut self, dir: &Path) -> Result<()> {
        self.tensorboard = Some(TensorBoardLog::rebuild(dir, &self.path)?);
        Ok(())
    }

    /// The attached TensorBoard event file, if any.
    pub fn tensorboard_file(&self) -> Option<&Path> {
        self.tensorboard.as_ref().map(TensorBoardLog::path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One complete line of a log file: its record (`None` for a blank line) and the byte offset just
/// past its newline.
struct RawLine {
    record: Option<LogLine>,
    end: usize,
}

/// The record of one complete line (without its newline; `None` when blank). `number` is 1-based.
fn parse_line(path: &Path, number: usize, bytes: &[u8]) -> Result<Option<LogLine>> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::input(path, number, "metrics line is not UTF-8"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| Error::input(path, number, format!("not a metrics record ({e}); fix or remove the line")))
}

/// The complete lines of a log and the length of an unterminated tail.
fn split_lines(path: &Path, bytes: &[u8]) -> Result<(Vec<RawLine>, usize)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    while let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') {
        let end = start + nl + 1;
        let record = parse_line(path, out.len() + 1, &bytes[start..end - 1])?;
        out.push(RawLine { record, end });
        start = end;
    }
    Ok((out, bytes.len() - start))
}

/// Calls `visit` with every record of a log in order, reading one line at a time (a long run's log is
/// never held in memory whole). Returns the bytes of an ignored unterminated last line (a crash, or a
/// line being written right now).
pub fn visit_log(path: &Path, mut visit: impl FnMut(LogLine) -> Result<()>) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(0);
        }
        if buf.last() != Some(&b'\n') {
            return Ok(buf.len());
        }
        number += 1;
        if let Some(record) = parse_line(path, number, &buf[..buf.len() - 1])? {
            visit(record)?;
        }
    }
}

/// Every record of a log, with the size of an ignored unterminated last line (a crash mid-write).
pub fn read_log_report(path: &Path) -> Result<LogContents> {
    let mut lines = Vec::new();
    let partial_tail_bytes = visit_log(path, |l| {
        lines.push(l);
        Ok(())
    })?;
    Ok(LogContents { lines, partial_tail_bytes })
}

/// Every record of a log; an unterminated last line is ignored (see [`read_log_report`]).
pub fn read_log(path: &Path) -> Result<Vec<LogLine>> {
    Ok(read_log_report(path)?.lines)
}

/// Serde for an f64 that may be non-finite: a JSON number, or "NaN" / "inf" / "-inf".
mod json_float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(serde::de::Error::custom(format!(
                    "expected a number, \"NaN\", \"inf\" or \"-inf\", got \"{t}\""
                ))),
            },
        }
    }
}
