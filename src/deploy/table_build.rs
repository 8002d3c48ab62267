//! Building a latency table (`attnas latency-table`) and checking one (`attnas latency --predict FILE
//! --check N`), on any [`LayerTimer`]: this engine on a backend ([`EngineTimer`]) or onnxruntime
//! (`super::onnxrt`).
//!
//! Build: every key of [`enumerate_keys`] is timed alone (synthetic weights, random input; warm-up
//! runs then the median of the timed runs), with a progress bar and an ETA; the count and an estimate
//! of the time (from a pilot forward of the max subnet, scaled by each layer's share of its MACs) are
//! printed first. Then the calibration: whole forwards of `calib_subnets` subnets (min, max, and
//! uniform draws) against the sums of their entries, fitted as `measured = scale * sum + offset`.
//! Why a sum of isolated layer timings differs from a whole forward, and what the fit absorbs: in a
//! whole forward each layer's weights are colder (the other layers' weights passed through the caches
//! since its last run) while its input is hot (just written); the thread pools are awake between
//! back-to-back ops but may sleep between isolated runs; each forward pays a fixed cost (launch queue,
//! the classifier's small ops) once. The scale absorbs the proportional effects, the offset the fixed
//! ones. `docs/deployment.md` reports the resulting error.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;

use super::latency_table::{
    enumerate_keys, gene_choices, BuildInfo, Calibration, LatencyTable, LayerKey, MeasureIdentity, Timing, TABLE_FORMAT,
};
use crate::error::Result;
use crate::space::{sampler, Arch, Space};

/// Times layers and whole subnets under one identity.
pub trait LayerTimer {
    fn identity(&self) -> &MeasureIdentity;
    /// How many times `done` is called per item ([`super::latency::Rounds`]): of whole subnets
    /// (`true`) or of layers.
    fn passes(&self, _whole_subnets: bool) -> usize {
        1
    }
    /// Times each key alone; `done(i, timing)` after each item's pass (of [`Self::passes`]).
    fn layers(&mut self, keys: &[LayerKey], done: &mut dyn FnMut(usize, &Timing)) -> Result<Vec<Timing>>;
    /// Times whole subnets; `done(i, timing)` after each item's pass.
    fn subnets(&mut self, archs: &[Arch], done: &mut dyn FnMut(usize, &Timing)) -> Result<Vec<Timing>>;
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    pub warmup: usize,
    pub repeats: usize,
    /// Rounds the timed runs are split into (round-robin over the keys, then over the calibration subnets).
    pub rounds: usize,
    /// Warm-up and timed runs of each calibration forward.
    pub calib_warmup: usize,
    pub calib_repeats: usize,
    /// Whole forwards fitted for the calibration (0: none).
    pub calib_subnets: usize,
    pub seed: u64,
    pub progress: bool,
}

fn bar(show: bool, len: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    let template =
        format!("{{bar:30}} {{pos}}/{{len}} {what} [{{elapsed_precise}} < {{eta_precise}}, {{per_sec}}] {{msg}}");
    b.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    b.enable_steady_tick(std::time::Duration::from_millis(250));
    b
}

/// Subnets for calibration or checking: min and max first (when `with_ends`), then uniform draws.
pub fn sample_subnets(space: &Space, n: usize, seed: u64, with_ends: bool) -> Vec<Arch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    if with_ends {
        out.extend([space.min_arch(), space.max_arch()].into_iter().take(n));
    }
    while out.len() < n {
        out.push(sampler::uniform(space, &mut rng));
    }
    out
}

/// Seconds the build is expected to take: (warm-up + timed runs) x the keys' share of the max
/// subnet's MACs x one forward of the max subnet (`pilot_ms`), plus the calibration forwards.
pub fn estimate_seconds(space: &Space, keys: &[LayerKey], s: &BuildSettings, pilot_ms: f64) -> f64 {
    let max = space.max_arch();
    let max_macs = crate::space::flops::cost(space, &max).macs.max(1) as f64;
    let key_macs: f64 = keys.iter().map(|k| k.macs(space) as f64).sum();
    // later rounds warm up once more each
    let extra = s.rounds.clamp(1, s.repeats.max(1)) - 1;
    let runs = (s.warmup + s.repeats + extra.min(s.warmup)) as f64;
    let calib_runs = (s.calib_warmup + s.calib_repeats + (s.rounds.clamp(1, s.calib_repeats.max(1)) - 1)) as f64;
    // the layers' own fixed costs: about one thousandth of the max forward each
    let fixed = keys.len() as f64 * pilot_ms * 1e-3;
    (runs * (key_macs / max_macs * pilot_ms + fixed) + calib_runs * s.calib_subnets as f64 * pilot_ms * 0.5) / 1e3
}

/// Measures every key of `space` and the calibration, returning the table.
pub fn build_table(space: &Space, timer: &mut dyn LayerTimer, s: &BuildSettings) -> Result<LatencyTable> {
    let started = Instant::now();
    let identity = timer.identity().clone();
    let keys = enumerate_keys(space, identity.input_side);
    let b = bar(s.progress, keys.len() * timer.passes(false), "layer timings");
    let timings = timer.layers(&keys, &mut |i, t| {
        b.set_message(format!("{} {:.3} ms", keys[i], t.median_ms));
        b.inc(1);
    })?;
    b.finish_and_clear();
    let entries = keys.iter().map(|k| k.to_string()).zip(timings).collect();
    let mut table = LatencyTable {
        format: TABLE_FORMAT.to_string(),
        identity,
        choices: gene_choices(space),
        build: BuildInfo {
            warmup: s.warmup,
            repeats: s.repeats,
            rounds: s.rounds,
            calib_warmup: s.calib_warmup,
            calib_repeats: s.calib_repeats,
            seconds: 0.0,
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            attnas_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        calibration: Calibration::none(),
        entries,
    };
    if s.calib_subnets > 0 {
        let archs = sample_subnets(space, s.calib_subnets, s.seed ^ 0xCA1B, true);
        let b = bar(s.progress, archs.len() * timer.passes(true), "calibration timings");
        let measured = timer.subnets(&archs, &mut |_, _| b.inc(1))?;
        b.finish_and_clear();
        let mut points = Vec::new();
        for (arch, t) in archs.iter().zip(&measured) {
            points.push((table.predict(space, arch)?.sum_ms, t.median_ms));
        }
        table.calibration = Calibration::fit(points);
    }
    table.build.seconds = started.elapsed().as_secs_f64();
    Ok(table)
}

/// One subnet of a check: predicted against measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckRow {
    pub arch: Arch,
    pub mflops: f64,
    pub predicted_ms: f64,
    pub measured: Timing,
    /// (predicted - measured) / measured, percent.
    pub error_pct: f64,
}

/// The check's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckReport {
    pub subnets: usize,
    pub median_abs_error_pct: f64,
    pub p90_abs_error_pct: f64,
    pub max_abs_error_pct: f64,
    /// The same without the calibration (the plain sum of the entries).
    pub median_abs_error_uncalibrated_pct: f64,
    pub rows: Vec<CheckRow>,
}

/// Measures `n` uniform subnets (seeded apart from the calibration's) and compares with the table.
pub fn check_table(
    space: &Space,
    table: &LatencyTable,
    timer: &mut dyn LayerTimer,
    n: usize,
    seed: u64,
    progress: bool,
) -> Result<CheckReport> {
    let archs = sample_subnets(space, n, seed ^ 0xC4EC, false);
    let predictions = archs.iter().map(|a| table.predict(space, a)).collect::<Result<Vec<_>>>()?;
    let b = bar(progress, archs.len() * timer.passes(true), "subnet timings");
    let measured = timer.subnets(&archs, &mut |_, _| b.inc(1))?;
    b.finish_and_clear();
    let mut rows = Vec::new();
    let (mut abs, mut raw) = (Vec::new(), Vec::new());
    for ((arch, p), m) in archs.into_iter().zip(predictions).zip(measured) {
        let err = 100.0 * (p.ms - m.median_ms) / m.median_ms;
        abs.push(err.abs());
        raw.push((100.0 * (p.sum_ms - m.median_ms) / m.median_ms).abs());
        let mflops = crate::space::flops::mflops(space, &arch);
        rows.push(CheckRow { arch, mflops, predicted_ms: p.ms, measured: m, error_pct: err });
    }
    let q = |v: &[f64]| Timing::of(v).unwrap_or(Timing { median_ms: f64::NAN, p10_ms: f64::NAN, p90_ms: f64::NAN });
    Ok(CheckReport {
        subnets: rows.len(),
        median_abs_error_pct: q(&abs).median_ms,
        p90_abs_error_pct: q(&abs).p90_ms,
        max_abs_error_pct: abs.iter().copied().fold(0.0, f64::max),
        median_abs_error_uncalibrated_pct: q(&raw).median_ms,
        rows,
    })
}
