//! `attnas latency` (time subnets' folded inference forwards on this device, predict them from a latency
//! table, check a table against measurements) and `attnas latency-table` (build a table). See
//! `crate::deploy` and `docs/deployment.md`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::SupernetOps;
use crate::deploy::latency::{configure_cpu_threads, EngineTimer, Precision, Repeats, Rounds};
use crate::deploy::latency_table::{LatencyTable, Prediction, Timing};
use crate::deploy::onnxrt::OnnxTimer;
use crate::deploy::table_build::{build_table, check_table, estimate_seconds, BuildSettings, CheckReport, LayerTimer};
use crate::error::{Error, Result};
use crate::space::arch::resolve_arch_list;
use crate::space::{flops, Arch, Space};

/// Which engine runs the forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// This engine's folded forward on --device.
    Attnas,
    /// The exported ONNX graph in onnxruntime (CPU), through the Python tools venv.
    Onnxruntime,
}

/// What is measured, and how (shared by both commands).
#[derive(Args, Debug, Clone)]
pub struct MeasureArgs {
    /// Space YAML or built-in name (attentivenas, tiny).
    #[arg(long, default_value = "attentivenas")]
    pub config: String,
    /// auto (the GPU when found, else the CPU), cpu, cuda, cuda:N, or emu (SIMT emulator builds).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// attnas (this engine on --device) or onnxruntime (the exported ONNX graph, CPU).
    #[arg(long, value_enum, default_value_t = Runtime::Attnas)]
    pub runtime: Runtime,
    /// Images per forward.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// CPU threads (rayon and GEMM threads; onnxruntime's intra-op threads); 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Numeric precision (fp32; recorded in every result and table).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Side of the images the model receives (the model resizes them to each subnet's resolution,
    /// timed as a layer); default: images arrive at the subnet's resolution.
    #[arg(long)]
    pub input_side: Option<usize>,
    /// Untimed runs before the timed ones.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Timed runs (median, p10, p90 are over these).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Split the timed runs into N rounds that visit every subnet (every layer) in turn, so a slow
    /// period of a shared host spreads over all of them (1: each measured in one go). Not used by
    /// --runtime onnxruntime.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seed of the synthetic weights, inputs and sampled subnets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Subnets, comma-separated and/or repeated: names of the space (a0..a6, min, max), arch files (JSON,
    /// YAML or an AttentiveNAS dict), or inline archs {...}. A value naming a file is that one file.
    #[arg(long)]
    pub arch: Vec<String>,
    #[command(flatten)]
    pub m: MeasureArgs,
    /// Predict from this latency table (attnas latency-table) instead of measuring.
    #[arg(long)]
    pub predict: Option<PathBuf>,
    /// With --predict: measure N random subnets and report the prediction error.
    #[arg(long)]
    pub check: Option<usize>,
    /// Use a table measured on another device, runtime, precision, thread count, batch or space (the
    /// output records each difference).
    #[arg(long)]
    pub allow_table_mismatch: bool,
}

#[derive(Args, Debug)]
pub struct LatencyTableArgs {
    /// Output file (JSON).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub m: MeasureArgs,
    /// Whole forwards (min, max, random subnets) that calibrate the sum of layer timings.
    #[arg(long, default_value_t = 10)]
    pub calib_subnets: usize,
    /// Replace an existing --out file.
    #[arg(long)]
    pub overwrite: bool,
}

impl MeasureArgs {
    fn space(&self) -> Result<Space> {
        Space::resolve(&self.config)
    }

    fn repeats(&self, warmup: usize, repeats: usize) -> Repeats {
        Repeats { warmup: self.warmup.unwrap_or(warmup), repeats: self.repeats.unwrap_or(repeats).max(1) }
    }

    fn check(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::usage("--batch must be >= 1"));
        }
        if self.rounds == 0 {
            return Err(Error::usage("--rounds must be >= 1 (1: no round-robin)"));
        }
        if let Some(side) = self.input_side {
            if side == 0 {
                return Err(Error::usage("--input-side must be >= 1"));
            }
            if self.runtime == Runtime::Onnxruntime {
                return Err(Error::usage(
                    "--input-side: the exported ONNX graph takes images at the subnet's resolution (its resize is \
                     preprocessing); drop --input-side with --runtime onnxruntime",
                ));
            }
        }
        if self.runtime == Runtime::Onnxruntime && !matches!(self.device, DeviceChoice::Auto | DeviceChoice::Cpu) {
            return Err(Error::usage("--runtime onnxruntime runs on the CPU; drop --device or pass --device cpu"));
        }
        Ok(())
    }
}

/// One measured (or predicted) subnet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LatencyRow {
    pub name: String,
    pub arch: Arch,
    pub mflops: f64,
    pub measured: Option<Timing>,
    pub predicted_ms: Option<f64>,
}

/// `attnas latency --json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LatencyReport {
    pub identity: crate::deploy::latency_table::MeasureIdentity,
    pub repeats: Repeats,
    /// The rounds the repeats were split into (see `--rounds`).
    pub rounds: usize,
    pub table: Option<PathBuf>,
    /// Differences from the table accepted with --allow-table-mismatch.
    pub table_mismatch: Vec<String>,
    pub results: Vec<LatencyRow>,
    pub check: Option<CheckReport>,
}

fn timer_for<'a, B: SupernetOps>(
    b: &'a B,
    m: &MeasureArgs,
    space: &Space,
    (layers, subnets): (Repeats, Repeats),
) -> Result<Box<dyn LayerTimer + 'a>> {
    Ok(match m.runtime {
        Runtime::Attnas => Box::new(EngineTimer::new(
            b,
            space,
            m.batch,
            m.input_side,
            (layers, subnets),
            Rounds { rounds: m.rounds },
            m.seed,
        )?),
        // one script call per list of models: layers with the layer repeats, subnets with the subnet ones
        Runtime::Onnxruntime => Box::new(OnnxTimer::new(space, m.batch, m.threads, (layers, subnets), m.seed)?),
    })
}

struct LatencyJob<'a>(&'a LatencyArgs);

impl BackendJob for LatencyJob<'_> {
    type Output = LatencyReport;
    fn run<B: SupernetOps>(self, b: &B) -> Result<LatencyReport> {
        let a = self.0;
        let space = a.m.space()?;
        let r = a.m.repeats(5, 30);
        let mut timer = timer_for(b, &a.m, &space, (r, r))?;
        let identity = timer.identity().clone();
        let table = match &a.predict {
            Some(p) => {
                let t = LatencyTable::read(p)?;
                let mismatch = t.check_identity(p, &identity, a.allow_table_mismatch)?;
                Some((t, mismatch))
            }
            None => None,
        };
        let archs = if a.arch.is_empty() { Vec::new() } else { resolve_arch_list(&space, &a.arch)? };
        let mut results = Vec::new();
        let predicted: Vec<Option<Prediction>> = archs
            .iter()
            .map(|(_, arch)| table.as_ref().map(|(t, _)| t.predict(&space, arch)).transpose())
            .collect::<Result<_>>()?;
        let measured = if table.is_none() {
            let only: Vec<Arch> = archs.iter().map(|(_, a)| a.clone()).collect();
            timer.subnets(&only, &mut |_, _| {})?.into_iter().map(Some).collect()
        } else {
            vec![None; archs.len()]
        };
        for (((name, arch), p), m) in archs.into_iter().zip(predicted).zip(measured) {
            let mflops = flops::mflops(&space, &arch);
            results.push(LatencyRow { name, arch, mflops, measured: m, predicted_ms: p.map(|p| p.ms) });
        }
        let check = match (a.check, &table) {
            (Some(n), Some((t, _))) => Some(check_table(&space, t, timer.as_mut(), n, a.m.seed, !a.m.quiet)?),
            _ => None,
        };
        Ok(LatencyReport {
            identity,
            repeats: r,
            rounds: timer.passes(true),
            table: a.predict.clone(),
            table_mismatch: table.map(|(_, m)| m).unwrap_or_default(),
            results,
            check,
        })
    }
}

fn device_for(m: &MeasureArgs) -> DeviceChoice {
    match m.runtime {
        // onnxruntime measures on the CPU; the backend only builds the graphs' synthetic weights
        Runtime::Onnxruntime => DeviceChoice::Cpu,
        Runtime::Attnas => m.device,
    }
}

fn fmt_ms(t: Option<&Timing>) -> String {
    t.map_or("-".into(), |t| format!("{:.3} [{:.3}, {:.3}]", t.median_ms, t.p10_ms, t.p90_ms))
}

pub fn run_latency(a: &LatencyArgs) -> Result<()> {
    if a.arch.is_empty() && a.check.is_none() {
        return Err(Error::usage("give --arch A[,B...] (or --predict FILE --check N)"));
    }
    if a.check.is_some() && a.predict.is_none() {
        return Err(Error::usage("--check N compares a table's predictions with measurements: add --predict FILE"));
    }
    if a.check == Some(0) {
        return Err(Error::usage("--check N needs N >= 1"));
    }
    a.m.space()?;
    a.m.check()?;
    if a.m.runtime == Runtime::Attnas {
        configure_cpu_threads(a.m.threads)?;
    }
    let report = run_on(device_for(&a.m), LatencyJob(a))?;
    if a.m.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::Other(e.to_string()))?);
        return Ok(());
    }
    let id = &report.identity;
    println!(
        "device: {} | runtime: {} | {} | threads {} | batch {} | input: {}",
        id.device,
        id.runtime,
        id.precision,
        id.threads,
        id.batch,
        id.input_side.map_or("at the subnet's resolution".into(), |s| format!("{s}x{s}, resized by the model"))
    );
    if let Some(t) = &report.table {
        println!("latency table: {}", t.display());
        for m in &report.table_mismatch {
            println!("  accepted mismatch (--allow-table-mismatch): {m}");
        }
    } else {
        println!(
            "{} warm-up + {} timed forwards per subnet in {} round(s) (median [p10, p90] in ms)",
            report.repeats.warmup, report.repeats.repeats, report.rounds
        );
    }
    if !report.results.is_empty() {
        println!("{:<16} {:>10} {:>30} {:>14}", "arch", "MFLOPs", "latency ms: median [p10, p90]", "predicted ms");
        for r in &report.results {
            let p = r.predicted_ms.map_or("-".into(), |p| format!("{p:.3}"));
            println!("{:<16} {:>10.2} {:>30} {:>14}", r.name, r.mflops, fmt_ms(r.measured.as_ref()), p);
        }
    }
    if let Some(c) = &report.check {
        println!(
            "check on {} random subnets: median |error| {:.2} % (p90 {:.2} %, max {:.2} %; uncalibrated sum: {:.2} %)",
            c.subnets,
            c.median_abs_error_pct,
            c.p90_abs_error_pct,
            c.max_abs_error_pct,
            c.median_abs_error_uncalibrated_pct
        );
    }
    Ok(())
}

struct TableJob<'a>(&'a LatencyTableArgs);

impl BackendJob for TableJob<'_> {
    type Output = LatencyTable;
    fn run<B: SupernetOps>(self, b: &B) -> Result<LatencyTable> {
        let a = self.0;
        let space = a.m.space()?;
        let r = a.m.repeats(2, 5);
        // calibration forwards are timed as `attnas latency` times a subnet
        let calib = Repeats { warmup: 5, repeats: 30 };
        let mut timer = timer_for(b, &a.m, &space, (r, calib))?;
        let keys = crate::deploy::latency_table::enumerate_keys(&space, a.m.input_side);
        let settings = BuildSettings {
            warmup: r.warmup,
            repeats: r.repeats,
            rounds: timer.passes(false),
            calib_warmup: calib.warmup,
            calib_repeats: calib.repeats,
            calib_subnets: a.calib_subnets,
            seed: a.m.seed,
            progress: !a.m.quiet,
        };
        let pilot = timer.subnets(&[space.max_arch()], &mut |_, _| {})?[0].median_ms;
        eprintln!(
            "latency-table: {} layer configurations of space '{}' on {} ({}), {} + {} runs each in {} round(s), then \
             {} calibration forwards ({} + {} runs each); estimated {:.0} s (the max subnet's forward takes {pilot:.2} \
             ms here)",
            keys.len(),
            space.name,
            timer.identity().device,
            timer.identity().runtime,
            r.warmup,
            r.repeats,
            timer.passes(false),
            a.calib_subnets,
            calib.warmup,
            calib.repeats,
            estimate_seconds(&space, &keys, &settings, pilot)
        );
        build_table(&space, timer.as_mut(), &settings)
    }
}

pub fn run_latency_table(a: &LatencyTableArgs) -> Result<()> {
    a.m.space()?;
    a.m.check()?;
    if a.out.exists() && !a.overwrite {
        return Err(Error::usage(format!("{} exists; pass --overwrite to replace it", a.out.display())));
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    if a.m.runtime == Runtime::Attnas {
        configure_cpu_threads(a.m.threads)?;
    }
    let table = run_on(device_for(&a.m), TableJob(a))?;
    table.write(&a.out)?;
    summary(&a.out, &table, a.m.json)
}

fn summary(out: &Path, t: &LatencyTable, json: bool) -> Result<()> {
    let c = &t.calibration;
    if json {
        let v = serde_json::json!({
            "out": out, "entries": t.entries.len(), "seconds": t.build.seconds, "identity": t.identity,
            "calibration": {"scale": c.scale, "offset_ms": c.offset_ms, "method": c.method},
        });
        println!("{}", serde_json::to_string_pretty(&v).map_err(|e| Error::Other(e.to_string()))?);
        return Ok(());
    }
    println!(
        "wrote {}: {} entries measured in {:.1} s on {} ({}, {} threads, batch {})",
        out.display(),
        t.entries.len(),
        t.build.seconds,
        t.identity.device,
        t.identity.runtime,
        t.identity.threads,
        t.identity.batch
    );
    println!("calibration: latency = {:.4} x sum of entries + {:.3} ms ({})", c.scale, c.offset_ms, c.method);
    Ok(())
}
