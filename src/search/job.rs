//! `attnas search` on one device: load the supernet, decode the calibration and held-out images once,
//! run the evolution ([`super::evolution`]) scoring each new subnet by BN recalibration + top-1 on the
//! held-out images, save the state after every iteration, then write the result files and the plot.
//! With `--objective latency` each subnet also gets a latency (a latency table's prediction, or a
//! measurement of its BN-folded forward on this device, `crate::deploy`) and the front is top-1 against
//! latency; `latency.json` records where the latencies came from.
//!
//! Data-parallel ranks (`job.ranks`): each iteration's new candidates are split across the ranks
//! (candidate `i` to rank `i mod world`, every one of them: the original drops the remainder of the
//! population modulo the world size), each rank scores its own on the full calibration and held-out
//! images, and the scores are gathered so every rank continues the same evolution; rank 0 alone writes
//! the state and result files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::data::{resolve_paths, DataSettings, SearchFiles};
use super::evolution::{self, Evaluated, EvolutionSettings, LatencyObjective, Observer, SearchProgress};
use super::pareto::{best_per_bucket, pareto_front, Point};
use super::state::{self, SearchState};
use super::{plot, report};
use crate::backend::{Arena, SupernetOps};
use crate::deploy::latency::{identity_here, Repeats, SubnetTimer};
use crate::deploy::latency_table::LatencyTable;
use crate::error::{Error, Result};
use crate::eval::load_supernet;
use crate::nn::activation_arena_len;
use crate::predictor::Predictor;
use crate::space::arch::resolve_arch_list_of;
use crate::space::Space;
use crate::train::config::{load_config, TrainConfig};
use crate::train::validate::{calibrate_and_evaluate, Accuracy, EvalBuffers};

/// What `attnas search` was asked to do.
#[derive(Clone, Debug)]
pub struct SearchJob {
    pub ckpt: PathBuf,
    /// A space file or built-in name; `None`: the space stored with the checkpoint.
    pub config: Option<String>,
    pub data: PathBuf,
    pub eval_data: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: bool,
    pub settings: EvolutionSettings,
    pub data_settings: DataSettings,
    /// Overrides the loader's crop (else the training config's).
    pub crop: Option<u32>,
    pub predictor: Option<PathBuf>,
    /// `--seed-arch` values: subnets placed first in the initial population (see `space::arch`).
    pub seed_archs: Vec<String>,
    pub progress: bool,
    /// This process's place among the job's ranks ([`crate::dist::single`] for one device).
    pub ranks: crate::dist::Ranks,
    /// `--objective latency`: where latencies come from and the range subnets must lie in.
    pub latency: Option<LatencySearch>,
    /// Storage of the activations while subnets are scored (`--precision`).
    pub precision: crate::backend::Precision,
}

/// The latency objective of a search.
#[derive(Clone, Debug)]
pub struct LatencySearch {
    pub source: LatencySource,
    /// Range [lo, hi] in ms.
    pub lo: f64,
    pub hi: f64,
}

#[derive(Clone, Debug)]
pub enum LatencySource {
    /// A latency table's predictions; `allow_mismatch` accepts a table from another device, precision,
    /// thread count or space (recorded in latency.json).
    Table { path: PathBuf, allow_mismatch: bool },
    /// The median of timed forwards of each subnet (synthetic weights) on the search's device.
    Measure { batch: usize },
}

/// What the search reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchSummary {
    pub iterations_done: usize,
    pub evaluated: usize,
    /// Subnets evaluated by this invocation (not resumed, not cached).
    pub evaluated_now: usize,
    pub seconds: f64,
    pub candidates_per_sec: f64,
    pub front: Vec<Evaluated>,
    pub out: PathBuf,
}

/// The training config whose data section describes the loader: the `--config` file's `train:` section,
/// else the one stored with the checkpoint, else the defaults.
fn train_config(config: Option<&str>, state: Option<&Value>) -> Result<TrainConfig> {
    if let Some(c) = config.filter(|c| Path::new(c).is_file()) {
        return Ok(load_config(Path::new(c))?.1);
    }
    match state.and_then(|s| s.get("config")) {
        Some(v) => TrainConfig::from_value(v.clone()),
        None => Ok(TrainConfig::default()),
    }
}

/// Progress bar + state file after each iteration.
struct Reporter<'a> {
    bar: ProgressBar,
    started: Instant,
    evaluated_now: usize,
    state_path: PathBuf,
    identity: &'a BTreeMap<String, Value>,
    bucket: f64,
    /// Print a line per iteration (on stderr when there is no bar).
    log: bool,
    /// Rank 0 writes the state file.
    leader: bool,
}

impl Observer for Reporter<'_> {
    fn candidate(&mut self, iteration: usize, cached: bool) {
        if !cached {
            self.evaluated_now += 1;
        }
        let rate = self.evaluated_now as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!("iteration {iteration}, {rate:.2} candidates/s"));
        self.bar.inc(1);
    }

    fn iteration(&mut self, progress: &SearchProgress) -> Result<()> {
        if !self.leader {
            return Ok(());
        }
        let st = SearchState {
            format: state::FORMAT.to_string(),
            identity: self.identity.clone(),
            progress: progress.clone(),
        };
        state::save(&self.state_path, &st)?;
        let points: Vec<Point> = progress.evaluated.iter().map(Evaluated::point).collect();
        let front = pareto_front(&points);
        let best = front.last().map_or(f64::NAN, |&i| points[i].top1);
        let line = format!(
            "iteration {}: {} evaluated, {} buckets, front of {}, best top-1 {best:.2}%",
            progress.iterations_done - 1,
            points.len(),
            best_per_bucket(&points, self.bucket).len(),
            front.len()
        );
        if !self.bar.is_hidden() {
            self.bar.println(line);
        } else if self.log {
            eprintln!("{line}");
        }
        Ok(())
    }
}

/// A latency function for the objective (boxed: a table's predictions, or cached measurements) and a
/// note of its source for latency.json and the state's identity.
type BoxedLatency<'a> = Box<dyn FnMut(&crate::space::Arch) -> Result<f64> + 'a>;

fn latency_source<'a, B: SupernetOps>(
    b: &'a B,
    space: &Space,
    latency: Option<&LatencySearch>,
) -> Result<(Option<BoxedLatency<'a>>, Value)> {
    let Some(l) = latency else { return Ok((None, Value::Null)) };
    match &l.source {
        LatencySource::Table { path, allow_mismatch } => {
            let table = LatencyTable::read(path)?;
            let t = &table.identity;
            // The table's runtime, batch and input side are what the user targets; device, precision,
            // threads and space must be this search's (or accepted with --allow-table-mismatch).
            let here = identity_here(b, space, t.batch, t.input_side, &t.runtime);
            let mismatch = table.check_identity(path, &here, *allow_mismatch)?;
            let note = json!({
                "source": {"table": path.display().to_string(), "sha256": state::file_digest(path)?},
                "runtime_and_device": format!("{} on {}", t.runtime, t.device),
                "table_identity": t, "table_mismatch": mismatch,
                "calibration": {"scale": table.calibration.scale, "offset_ms": table.calibration.offset_ms},
            });
            let space = space.clone();
            Ok((Some(Box::new(move |arch| Ok(table.predict(&space, arch)?.ms))), note))
        }
        LatencySource::Measure { batch } => {
            let mut timer = SubnetTimer::new(b, space, *batch, None)?;
            let mut cache: std::collections::HashMap<crate::space::Arch, f64> = Default::default();
            let r = Repeats { warmup: 1, repeats: 5 };
            let here = identity_here(b, space, *batch, None, "attnas");
            let note = json!({
                "source": {"measured": {"warmup": r.warmup, "repeats": r.repeats, "batch": batch}},
                "runtime_and_device": format!("attnas on {}", here.device),
                "identity": here,
            });
            let f = move |arch: &crate::space::Arch| -> Result<f64> {
                if let Some(&ms) = cache.get(arch) {
                    return Ok(ms);
                }
                let ms = timer.measure(arch, r, 0)?.median_ms;
                cache.insert(arch.clone(), ms);
                Ok(ms)
            };
            Ok((Some(Box::new(f)), note))
        }
    }
}

/// Runs the search on backend `b`.
pub fn run<B: SupernetOps>(b: &B, job: &SearchJob) -> Result<SearchSummary> {
    job.settings.check()?;
    let ranks = job.ranks.as_ref();
    let leader = ranks.is_leader();
    if ranks.world_size() > 1 && matches!(job.latency.as_ref().map(|l| &l.source), Some(LatencySource::Measure { .. }))
    {
        return Err(Error::usage(
            "search --objective latency --measure times subnets on each rank's own device, so ranks would disagree; \
             measure a latency table once (attnas latency-table) and pass --latency-table, or search on one device",
        ));
    }
    // A training run folder holds its checkpoints in checkpoints/.
    let run_ckpts = job.ckpt.join("checkpoints");
    let ckpt = if run_ckpts.is_dir() { run_ckpts } else { job.ckpt.clone() };
    let mut loaded = load_supernet(b, &ckpt, job.config.as_deref())?;
    loaded.net.set_precision(b, b.resolve_precision(job.precision))?;
    let net = &loaded.net;
    let space = &net.space;
    let mut settings = job.settings.clone();
    if !job.seed_archs.is_empty() {
        settings.seeds =
            resolve_arch_list_of(space, "--seed-arch", &job.seed_archs)?.into_iter().map(|(_, a)| a).collect();
        settings.check()?;
    }
    let s = &settings;
    let mut cfg = train_config(job.config.as_deref(), loaded.state.as_ref())?.data;
    if let Some(c) = job.crop {
        cfg.crop = c;
    }
    let (train_path, eval_path) = resolve_paths(&job.data, job.eval_data.as_deref())?;
    let files = SearchFiles::open(&train_path, &eval_path, space.num_classes)?;
    let predictor = match &job.predictor {
        Some(p) => {
            let pred = Predictor::load(p)?;
            pred.check_space(space, &p.display().to_string())?;
            Some((pred, state::file_digest(p)?))
        }
        None => None,
    };
    let mut settings_id = serde_json::to_value(s).map_err(|e| Error::Other(e.to_string()))?;
    if let Some(m) = settings_id.as_object_mut() {
        m.remove("iterations");
        if predictor.is_none() {
            m.remove("predictor_keep");
        }
    }
    let (mut latency_of, latency_note) = latency_source(b, space, job.latency.as_ref())?;
    let mut identity: BTreeMap<String, Value> = [
        ("space", json!({"name": space.name, "sha256": state::text_digest(&format!("{space:?}"))})),
        ("checkpoint", json!(state::file_digest(&loaded.weights)?)),
        ("data", files.identity(&cfg, &job.data_settings)),
        ("settings", settings_id),
        ("predictor", predictor.as_ref().map_or(Value::Null, |(_, d)| json!(d))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(l) = &job.latency {
        // only latency searches carry the key, so earlier searches' states still resume
        identity.insert("objective".into(), json!({"latency": latency_note["source"], "range_ms": [l.lo, l.hi]}));
    }

    std::fs::create_dir_all(&job.out).map_err(|e| Error::io(&job.out, e))?;
    let state_path = state::state_path(&job.out);
    crate::dist::sync::agree_at_start(
        ranks,
        b,
        &[
            ("search settings", serde_json::to_string(&identity).unwrap_or_default()),
            ("resume", job.resume.to_string()),
        ],
    )?;
    let mut progress = if job.resume {
        if !state_path.is_file() {
            return Err(Error::usage(format!("--resume: no search state at {}", state_path.display())));
        }
        let stored = state::load(&state_path)?;
        state::check_identity(&state_path, &stored.identity, &identity)?;
        stored.progress
    } else {
        if state_path.exists() && leader {
            return Err(Error::usage(format!(
                "{} already holds a search; pass --resume to continue it, or choose another --out",
                state_path.display()
            )));
        }
        SearchProgress::default()
    };

    let started = Instant::now();
    let mut reporter = Reporter {
        bar: ProgressBar::hidden(),
        started,
        evaluated_now: 0,
        state_path,
        identity: &identity,
        bucket: s.bucket,
        log: job.progress && leader,
        leader,
    };
    if progress.iterations_done < s.iterations {
        let data = files.decode(&cfg, &job.data_settings)?;
        eprintln!(
            "search: {} calibration + {} held-out images decoded ({:.2} GiB on the host)",
            data.calib_images(),
            data.eval_images(),
            data.bytes() as f64 / (1u64 << 30) as f64
        );
        let n = job.data_settings.calib_batch_size.max(job.data_settings.eval_batch_size);
        let len = activation_arena_len(space, n, cfg.crop as usize, false, net.precision())?;
        let mut arena = Arena::new(b, "activations", len)?;
        let mut bufs = EvalBuffers::<B>::new(space.num_classes);
        if job.progress && leader {
            let children = s.mutations + s.crossovers;
            let children =
                if predictor.is_some() { (children as f64 * s.predictor_keep).ceil() as usize } else { children };
            let remaining = s.iterations - progress.iterations_done;
            let todo = match progress.iterations_done {
                0 => s.population + (remaining - 1) * children,
                _ => remaining * children,
            };
            reporter.bar = ProgressBar::new(todo as u64);
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} candidates [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            reporter.bar.set_style(style);
        }
        // candidate i to rank i mod world; the scores are gathered so every rank evolves alike
        let mut evaluate = |archs: &[crate::space::Arch], done: &mut dyn FnMut()| {
            let (rank, world) = (ranks.rank(), ranks.world_size());
            let mut mine = Vec::new();
            for (i, arch) in archs.iter().enumerate().skip(rank).step_by(world) {
                let acc = calibrate_and_evaluate(b, net, &mut arena, &mut bufs, arch, &data.calib, &data.eval)?;
                mine.push((i, acc));
                done();
            }
            share_scores(ranks, archs.len(), mine, done)
        };
        let pred = predictor.as_ref().map(|(p, _)| p);
        match (&job.latency, latency_of.as_mut()) {
            (Some(l), Some(f)) => {
                let mut objective = LatencyObjective { latency: f.as_mut(), lo: l.lo, hi: l.hi };
                let lat = Some(&mut objective);
                evolution::run_batched(space, s, pred, &mut progress, &mut evaluate, &mut reporter, lat)?;
            }
            _ => evolution::run_batched(space, s, pred, &mut progress, &mut evaluate, &mut reporter, None)?,
        }
        reporter.bar.finish_and_clear();
    }

    let points: Vec<Point> = progress.evaluated.iter().map(Evaluated::point).collect();
    let front: Vec<&Evaluated> = pareto_front(&points).into_iter().map(|i| &progress.evaluated[i]).collect();
    if leader {
        let buckets: Vec<&Evaluated> =
            best_per_bucket(&points, s.bucket).into_values().map(|i| &progress.evaluated[i]).collect();
        report::write_evaluated(&job.out.join("evaluated.csv"), &progress.evaluated)?;
        report::write_front(&job.out, &front, &buckets, s.bucket)?;
        let front_points: Vec<Point> = front.iter().map(|e| e.point()).collect();
        let (axis, what) = match &job.latency {
            Some(_) => {
                (format!("latency (ms), {}", latency_note["runtime_and_device"].as_str().unwrap_or("")), "latency")
            }
            None => (plot::MFLOPS_AXIS.to_string(), "MFLOPs"),
        };
        let title = format!("{}: top-1 vs {what}, {} subnets evaluated", space.name, points.len());
        plot::write_svg(&job.out.join("pareto.svg"), &points, &front_points, &title, &axis)?;
        if job.latency.is_some() {
            let path = job.out.join("latency.json");
            let text = serde_json::to_string_pretty(&latency_note).map_err(|e| Error::Other(e.to_string()))? + "\n";
            crate::util::atomic::write_atomic_bytes(&path, text.as_bytes())?;
        }
    }

    let seconds = started.elapsed().as_secs_f64();
    Ok(SearchSummary {
        iterations_done: progress.iterations_done,
        evaluated: progress.evaluated.len(),
        evaluated_now: reporter.evaluated_now,
        seconds,
        candidates_per_sec: reporter.evaluated_now as f64 / seconds.max(1e-9),
        front: front.into_iter().cloned().collect(),
        out: job.out.clone(),
    })
}

/// Every rank's scores of one iteration's list (`mine`: this rank's (index, accuracy) pairs), gathered
/// into one list in index order; `done` is called once per candidate another rank scored.
fn share_scores(
    ranks: &dyn crate::dist::HostCollectives,
    n: usize,
    mine: Vec<(usize, Accuracy)>,
    done: &mut dyn FnMut(),
) -> Result<Vec<Accuracy>> {
    if ranks.world_size() == 1 {
        return Ok(mine.into_iter().map(|(_, a)| a).collect());
    }
    let text = serde_json::to_vec(&mine).map_err(|e| Error::Other(format!("search: scores: {e}")))?;
    let mut out: Vec<Option<Accuracy>> = vec![None; n];
    for (r, bytes) in ranks.all_gather_bytes(&text)?.into_iter().enumerate() {
        let theirs: Vec<(usize, Accuracy)> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("search: rank {r} sent unreadable scores: {e}")))?;
        for (i, acc) in theirs {
            if i < n {
                if r != ranks.rank() {
                    done();
                }
                out[i] = Some(acc);
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, a)| a.ok_or_else(|| Error::Other(format!("search: no rank scored candidate {i}"))))
        .collect()
}
