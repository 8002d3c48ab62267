//! `attnas train`: the training job over one device. Plans memory up front (parameters, gradients,
//! momentum, one activation arena for the largest subnet), runs the sandwich step over the loader's
//! batches with the per-iteration warmup-cosine LR, logs every step (JSON lines), validates the min and
//! max subnets after BN recalibration each epoch, and checkpoints atomically. A resumed run continues
//! exactly: every random draw is a function of (seed, step) or (seed, epoch), and the checkpoint holds
//! parameters, momentum and the step counters.
//!
//! Data-parallel ranks (`job.ranks`, see `src/dist/`): `batch_size` is per rank and the LR rule uses the
//! global batch; each rank reads its own share of every epoch; the step averages the attentive scores
//! and the gradients over ranks ([`crate::dist::sync::StepSync`]); parameters are compared by checksum
//! every `log.every_steps`; BN recalibration averages the running statistics and validation sums the
//! hit counts over ranks; rank 0 alone writes checkpoints, the metrics log and its TensorBoard copy. A
//! stop signal on any rank stops every rank after the same step. With one rank every collective is
//! skipped, so a single-device run computes exactly what it did before ranks existed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::config::{SamplerCost, SamplerMethod, Scorer, TrainConfig};
use super::metrics::{
    CandidateRecord, EpochRecord, EvalRecord, LogLine, MetricsLog, StartRecord, StepRecord, SubnetRecord,
};
use super::step::{CandidateScorer, MiddleSampling, OneRank, Role, StepBuffers, StepOutcome, StepSettings, StepState};
use super::stop::{stop_line, stopped_by_error, StopPoll};
use super::validate::{
    calibrate_and_evaluate, calibrate_bn, count_correct, decode_batches, Accuracy, EvalBuffers, HostBatch,
};
use crate::backend::ops::optimizer::WarmupCosineLr;
use crate::backend::{Arena, Dtype, SupernetOps};
use crate::checkpoint::{SavedCheckpoint, TensorRecord};
use crate::data::loader::{Batch, Loader, LoaderConfig, TryNext};
use crate::data::reader::PackedDataset;
use crate::dist::sync::{agree_at_start, average_running_stats, check_parameters, StepSync};
use crate::dist::HostCollectives;
use crate::error::{Error, Result};
use crate::nn::{activation_arena_len, NamedTensor, Supernet};
use crate::predictor::Predictor;
use crate::space::attentive::{AttentiveSampler, CostFn};
use crate::space::table::TableEntry;
use crate::space::{flops, table, Arch, Space};
use crate::timeline;

/// Where the job's files go and how it was asked to run.
#[derive(Clone)]
pub struct TrainJob {
    pub space: Space,
    /// The space file's text, stored in every checkpoint's state so `eval`, `search` and `export` rebuild
    /// the same supernet without being told the config.
    pub space_yaml: String,
    pub config: TrainConfig,
    /// A packed train file, or a folder holding `train.pack` (and optionally `val.pack`).
    pub data: PathBuf,
    /// Run folder: `checkpoints/`, `metrics.jsonl`.
    pub out: PathBuf,
    /// Continue from the newest intact checkpoint in `out` (see [`super::run_folder`]).
    pub resume: bool,
    /// With `resume`: a folder without any checkpoint starts a new run instead of failing (`--resume auto`).
    pub start_if_empty: bool,
    /// Start from this checkpoint's weights with a fresh optimizer and schedule (`--init`, see `train::init`).
    pub init: Option<PathBuf>,
    /// Start afresh even if `out` holds an earlier run (its checkpoints and log are removed first).
    pub overwrite: bool,
    pub progress: bool,
    /// This process's place among the job's ranks ([`crate::dist::single`] for one device). The trainer
    /// sees ranks only through this handle; see `src/dist/`.
    pub ranks: crate::dist::Ranks,
    /// Set by SIGTERM / SIGINT when the command line installed the handlers ([`super::stop`]).
    pub stop: super::stop::StopRequest,
}

/// What the job reports at the end.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub epochs_completed: u64,
    pub images_per_sec: f64,
    /// The last validation: (role, arch MFLOPs, accuracy).
    pub last_eval: Vec<(String, f64, Accuracy)>,
    pub checkpoint: Option<PathBuf>,
    pub metrics: PathBuf,
    /// Why the run stopped before its last step (a stop signal), if it did.
    pub stopped: Option<String>,
}

/// The format tag of the training state file.
pub const STATE_FORMAT: &str = "attnas-train-state/1";

/// The packed train file and the eval file (explicit, `val.pack` beside it, or none).
fn resolve_data(data: &Path, eval_split: &Option<PathBuf>) -> Result<(PathBuf, Option<PathBuf>)> {
    let train = crate::data::train_pack_of(data)?;
    let eval = match eval_split {
        Some(p) => Some(p.clone()),
        None => train.parent().map(|d| d.join("val.pack")).filter(|p| p.is_file()),
    };
    Ok((train, eval))
}

/// Train / held-out record indices when there is no eval split: a seeded shuffle, the last `holdout` held out.
fn holdout_split(n: usize, holdout: usize, seed: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    if holdout == 0 || holdout >= n {
        return Err(Error::usage(format!(
            "train.data.holdout = {holdout} must be in 1..{n} (the dataset has {n} records and no val.pack)"
        )));
    }
    let mut idx: Vec<u32> = (0..n as u32).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x0048_4f4c_444f_5554));
    let held = idx.split_off(n - holdout);
    Ok((idx, held))
}

fn settings(cfg: &TrainConfig, space: &Space) -> Result<StepSettings> {
    let sampling = match cfg.sampler.method.selection() {
        Some(sel) => MiddleSampling::Attentive(sel),
        None => MiddleSampling::Uniform,
    };
    let attentive = !matches!(cfg.sampler.method, SamplerMethod::Uniform);
    let scorer = match (cfg.sampler.scorer, &cfg.sampler.predictor) {
        (Scorer::Predictor, Some(path)) if attentive => {
            let p = Predictor::load(path)?;
            p.check_space(space, &path.display().to_string())?;
            CandidateScorer::Predictor(Arc::new(p))
        }
        (Scorer::Predictor, None) if attentive => {
            return Err(Error::usage("train.sampler.scorer = predictor needs train.sampler.predictor: PATH"))
        }
        _ => CandidateScorer::Loss,
    };
    Ok(StepSettings {
        label_smoothing: cfg.label_smoothing as f32,
        dropout: cfg.sandwich.dropout as f32,
        drop_connect: cfg.sandwich.drop_connect as f32,
        drop_connect_only_last_two_stages: cfg.sandwich.drop_connect_only_last_two_stages,
        kd: cfg.kd.distillation(),
        num_arch_training: cfg.sandwich.num_arch_training,
        sampling,
        num_trials: cfg.sampler.num_trials,
        scorer,
        momentum: cfg.momentum as f32,
        clip: cfg.grad_clip_value.map_or(f32::INFINITY, |c| c as f32),
        seed: cfg.seed,
    })
}

pub(crate) fn build_sampler(space: &Space, cfg: &TrainConfig) -> Result<Option<AttentiveSampler>> {
    if cfg.sampler.method.selection().is_none() {
        return Ok(None);
    }
    let step = cfg.sampler.discretize_step;
    let entries = match &cfg.sampler.table {
        Some(path) => table::read_table(space, path)?,
        None => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed ^ 0x0054_4142_4c45);
            table::generate(space, cfg.sampler.table_samples, cfg.sampler.table_method, step, &mut rng)
        }
    };
    if cfg.sampler.cost == SamplerCost::Latency {
        let cost = latency_cost(space, cfg.sampler.latency_table.as_deref())?;
        let entries =
            entries.into_iter().map(|e| TableEntry { mflops: (cost.cost)(&e.arch), arch: e.arch }).collect::<Vec<_>>();
        return Ok(Some(AttentiveSampler::new(space, &entries, step, cfg.sampler.prior)?.with_cost(cost)));
    }
    Ok(Some(AttentiveSampler::new(space, &entries, step, cfg.sampler.prior)?))
}

/// `sampler.cost: latency`: a latency table's predicted ms (the table must be of this space; the device
/// is the deployment target's, not the training GPU's, so it is not compared).
fn latency_cost(space: &Space, table: Option<&Path>) -> Result<CostFn> {
    let path = table.ok_or_else(|| {
        Error::usage("train.sampler.cost = latency needs train.sampler.latency_table: FILE (attnas latency-table)")
    })?;
    let table = crate::deploy::latency_table::LatencyTable::read(path)?;
    let here = crate::deploy::latency_table::space_fingerprint(space);
    if table.identity.space_fingerprint != here {
        return Err(Error::usage(format!(
            "{}: a latency table of space '{}', not of the space trained here ('{}'); build one with attnas \
             latency-table --config <this space>",
            path.display(),
            table.identity.space,
            space.name
        )));
    }
    // Every arch of the space has a prediction in a complete table of it; check one before training.
    table.predict(space, &space.max_arch())?;
    let space = space.clone();
    let cost = move |a: &Arch| table.predict(&space, a).map_or(f64::NAN, |p| p.ms);
    Ok(CostFn { cost: Arc::new(cost), unit: "ms" })
}

fn to_records(named: Vec<NamedTensor>) -> Vec<TensorRecord> {
    named.into_iter().map(|t| TensorRecord { name: t.name, shape: t.shape, data: t.data }).collect()
}

fn subnet_record(s: &super::step::SubnetOutcome) -> SubnetRecord {
    SubnetRecord {
        role: s.role,
        arch: s.arch.clone(),
        mflops: s.mflops,
        loss: s.loss,
        candidates: s
            .candidates
            .iter()
            .map(|c| CandidateRecord { arch: c.arch.clone(), mflops: c.mflops, score: c.score })
            .collect(),
        chosen: s.chosen,
        target_bin: s.target_bin,
        fallbacks: s.fallbacks,
    }
}

/// An out-of-memory error that names the batch size and what was asked for, and the largest batch
/// that fits when the device says how much memory it has (`largest`, from `memory_plan`).
fn oom_hint(e: Error, what: &str, elements: usize, batch: usize, largest: Option<usize>) -> Error {
    let fix = match largest {
        Some(n) => format!("the largest batch that fits this device is {n}: --set batch_size={n}"),
        None => "lower train.batch_size (--set batch_size=...)".to_string(),
    };
    Error::Other(format!(
        "cannot allocate the {what} ({:.2} GiB for batch size {batch}): {e}. {fix}",
        elements as f64 * 4.0 / (1u64 << 30) as f64
    ))
}

/// The largest training batch whose memory plan fits what the device has free plus the supernet it
/// already holds; `None` where the device does not report its memory (the CPU, the emulator).
fn largest_batch_here<B: SupernetOps>(b: &B, space: &Space, side: usize, dtype: Dtype, below: usize) -> Option<usize> {
    let (free, _) = b.memory_info()?;
    let model = super::memory_plan::plan(space, 1, side, dtype).ok()?.model_bytes;
    super::memory_plan::largest_batch(space, side, dtype, free.saturating_add(model), below.saturating_sub(1))
        .ok()
        .flatten()
}

/// Runs the job on backend `b`.
pub fn run<B: SupernetOps>(b: &B, job: &TrainJob) -> Result<TrainSummary> {
    // One writer per run folder: the leader holds OUT/.lock from here to the end, before anything in OUT
    // is read, replaced or removed.
    let _run_lock = super::run_lock::RunLock::acquire_for(&job.out, &*job.ranks)?;
    let ranks: &dyn HostCollectives = job.ranks.as_ref();
    let (world, leader) = (ranks.world_size(), ranks.is_leader());
    let cfg = &job.config;
    let space = &job.space;
    let (train_path, eval_path) = resolve_data(&job.data, &cfg.data.eval_split)?;
    let model = format!("the space '{}'", space.name);
    let train_ds = Arc::new(PackedDataset::open_expecting_classes(&train_path, space.num_classes, &model)?);
    // Training, BN-calibration (training images, training augmentation) and held-out loaders; each rank
    // reads its own share. Validation uses the first `eval_images` held-out records (rounded up to whole
    // batches), split across the ranks.
    let ranked = |c: LoaderConfig| LoaderConfig { rank: ranks.rank(), world, ..c };
    let eval_cap = cfg
        .bn_calib
        .eval_images
        .map(|n| n.div_ceil(cfg.bn_calib.eval_batch_size).max(1) * cfg.bn_calib.eval_batch_size);
    let (train_loader, calib_loader, eval_loader) = match &eval_path {
        Some(p) => {
            let eval_ds = Arc::new(PackedDataset::open_expecting_classes(p, space.num_classes, &model)?);
            let n = eval_cap.map_or(eval_ds.len(), |c| c.min(eval_ds.len()));
            (
                Loader::new(train_ds.clone(), ranked(cfg.train_loader_config()))?,
                Loader::new(train_ds.clone(), ranked(cfg.calib_loader_config()))?,
                Loader::with_subset(eval_ds, ranked(cfg.eval_loader_config()), (0..n as u32).collect())?,
            )
        }
        None => {
            let (tr, mut held) = holdout_split(train_ds.len(), cfg.data.holdout, cfg.seed)?;
            held.truncate(eval_cap.unwrap_or(usize::MAX));
            (
                Loader::with_subset(train_ds.clone(), ranked(cfg.train_loader_config()), tr.clone())?,
                Loader::with_subset(train_ds.clone(), ranked(cfg.calib_loader_config()), tr)?,
                Loader::with_subset(train_ds.clone(), ranked(cfg.eval_loader_config()), held)?,
            )
        }
    };
    let steps_per_epoch = train_loader.batches_per_epoch() as u64;
    if steps_per_epoch == 0 {
        return Err(Error::usage(format!(
            "{}: {} training records make no full batch of {} on each of {world} rank(s); lower train.batch_size",
            train_path.display(),
            train_loader.len(),
            cfg.batch_size
        )));
    }
    let total_steps = cfg.total_steps(steps_per_epoch);
    let (warmup, schedule_total) = cfg.schedule_iters(steps_per_epoch);
    let lr_schedule = WarmupCosineLr::new(cfg.effective_base_lr(world), warmup, schedule_total.max(1))?;

    let mut net = Supernet::new(b, space.clone(), cfg.seed)?;
    let dtype = b.resolve_precision(cfg.precision);
    net.set_precision(b, dtype)?;
    let side = cfg.data.crop as usize;
    let eval_n = cfg.bn_calib.batch_size.max(cfg.bn_calib.eval_batch_size);
    let act_len = activation_arena_len(space, cfg.batch_size, side, true, dtype)?
        .max(activation_arena_len(space, eval_n, side, false, dtype)?);
    let mut arena = Arena::new(b, "activations", act_len).map_err(|e| {
        let largest = largest_batch_here(b, space, side, dtype, cfg.batch_size);
        oom_hint(e, "activation arena", act_len, cfg.batch_size, largest)
    })?;
    let bufs = StepBuffers::new(b, cfg.batch_size, side, space.num_classes)?;
    let groups = net.param_groups(cfg.weight_decay as f32, &cfg.no_decay_keywords)?;
    let mut sampler = build_sampler(space, cfg)?;
    let settings = settings(cfg, space)?;
    let (store, resume_from) = super::run_folder::open(job, cfg.checkpoint.keep)?;
    let fingerprint = cfg.fingerprint(space);
    let init = match (&job.init, job.resume) {
        (Some(p), false) => Some(super::init::init_from_checkpoint(b, &net, p)?),
        _ => None,
    };
    if let Some(notice) = init.as_ref().and_then(|i| i.notice()) {
        eprintln!("{notice}");
    }

    // resume
    let mut step = 0u64;
    let mut last_ckpt: Option<SavedCheckpoint> = None;
    if let Some(found) = resume_from {
        let (ck, tensors, state) = (found.ckpt, found.tensors, found.state);
        let stored = state.get("fingerprint").and_then(|v| v.as_str()).unwrap_or("");
        if stored != fingerprint {
            return Err(Error::usage(format!(
                "--resume: {} was written with another config (fingerprint {stored}, now {fingerprint}); resume \
                 with the same config and --set values, or start a new --out folder",
                ck.state.display()
            )));
        }
        let named: Vec<NamedTensor> =
            tensors.into_iter().map(|t| NamedTensor { name: t.name, shape: t.shape, data: t.data }).collect();
        net.load_named(b, &named, &ck.weights.display().to_string())?;
        step = state.get("step").and_then(|v| v.as_u64()).unwrap_or(0);
        let written_by = state.get("world_size").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
        if written_by != world && leader {
            eprintln!(
                "note: {} was written by {written_by} rank(s) (global batch {}), resumed with {world} (global \
                 batch {}): training continues from step {step}, with the data order and LR schedule of the \
                 new world size (not bit-identical to an uninterrupted run)",
                ck.weights.display(),
                written_by * cfg.batch_size,
                world * cfg.batch_size
            );
        }
        ranks.note_checkpoint(&ck.weights.display().to_string());
        last_ckpt = Some(ck);
    }
    // Every rank runs the same config on the same data from the same step (a collective; GPU ranks
    // attach their device collectives here).
    let data_id = format!(
        "{} records, {} bytes",
        train_ds.len(),
        std::fs::metadata(&train_path).map_err(|e| Error::io(&train_path, e))?.len()
    );
    agree_at_start(
        ranks,
        b,
        &[("config fingerprint", fingerprint.clone()), ("training data", data_id), ("resume step", step.to_string())],
    )?;
    let log_path = job.out.join("metrics.jsonl");
    // Rank 0 alone writes the log (and its TensorBoard copy).
    let mut log = match (leader, last_ckpt.is_some()) {
        (false, _) => None,
        (true, true) => Some(MetricsLog::resume(&log_path, step)?.0),
        (true, false) => Some(MetricsLog::create(&log_path)?),
    };
    if let (Some(log), true) = (log.as_mut(), cfg.log.tensorboard) {
        log.attach_tensorboard(&job.out.join("tb"))?;
    }
    append(
        &mut log,
        &LogLine::Start(StartRecord {
            step,
            space: space.name.clone(),
            fingerprint: fingerprint.clone(),
            config: cfg.to_value(),
            unix_time: Some(crate::util::clock::unix_now()),
        }),
    )?;

    let eval_batches = decode_batches(&eval_loader, 0, usize::MAX)?;
    let mut eval_bufs = EvalBuffers::<B>::new(space.num_classes);
    let bar = progress_bar(job.progress && leader, total_steps, step);
    let mut sync = (world > 1).then(|| {
        let bucket_bytes = (cfg.dist.bucket_mb * (1u64 << 20) as f64) as usize;
        StepSync::new(ranks, &net, bucket_bytes, cfg.sampler.global_scores)
    });
    let started = Instant::now();
    let mut images_done = 0u64;
    let mut last_eval = Vec::new();
    let mut epochs_completed = step / steps_per_epoch;
    let save = |step: u64, epoch: u64, last: &mut Option<SavedCheckpoint>| -> Result<()> {
        let state = serde_json::json!({
            "format": STATE_FORMAT,
            "step": step,
            "epoch": epoch,
            "steps_per_epoch": steps_per_epoch,
            "seed": cfg.seed,
            "world_size": world,
            "global_batch": cfg.batch_size * world,
            "fingerprint": fingerprint,
            "space": space.name,
            "space_yaml": job.space_yaml,
            "init": init,
            "config": cfg.to_value(),
            "rng": "every draw is derived from (seed, step) or (seed, epoch): no generator state to store",
            "data": {"train": train_path.display().to_string(), "records": train_loader.len(),
                      "order": "shuffled per epoch from (seed, epoch); resume skips the batches already trained"},
            "optimizer": {"kind": "sgd-nesterov", "momentum": cfg.momentum, "buffers": "optimizer.momentum.* tensors"},
        });
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("format".to_string(), "attnas-supernet/1".to_string());
        meta.insert("space".to_string(), space.name.clone());
        meta.insert("layout".to_string(), "pytorch (AttentiveNAS state-dict names and shapes)".to_string());
        let saved = store.save(step, &to_records(net.to_named(b, true)?), &meta, &state)?;
        *last = Some(saved);
        Ok(())
    };
    // Rank 0 writes; every rank then knows the checkpoint (a collective, so no rank runs ahead of it).
    let checkpoint = |step: u64, epoch: u64, last: &mut Option<SavedCheckpoint>| -> Result<()> {
        if leader {
            save(step, epoch, last)?;
        }
        if world > 1 {
            let mine = last.as_ref().map(|c| format!("{}\n{}", c.weights.display(), c.state.display()));
            let text = ranks.broadcast_bytes(0, mine.unwrap_or_default().as_bytes())?;
            let text = String::from_utf8_lossy(&text).to_string();
            let (weights, state) = text.split_once('\n').unwrap_or((&text, ""));
            ranks.note_checkpoint(weights);
            if !leader {
                *last = Some(SavedCheckpoint { step, weights: weights.into(), state: state.into() });
            }
        }
        Ok(())
    };

    let mut stop = StopPoll::new(&job.stop);
    while step < total_steps {
        let epoch = step / steps_per_epoch;
        let skip = (step % steps_per_epoch) as usize;
        let mut iter = train_loader.epoch_from(epoch, skip)?;
        let mut waiting_since = Instant::now();
        // the batch staged during the previous step (its copy to the device overlapped that step), with
        // the time it took to get it from the loader
        let mut staged: Option<(Batch, f64)> = None;
        loop {
            let (batch, data_wait_s) = match staged.take() {
                Some(ready) => ready,
                None => {
                    let next = {
                        let _wait = timeline::range("data wait");
                        iter.next()
                    };
                    let Some(batch) = next else { break };
                    let waited = waiting_since.elapsed().as_secs_f64();
                    let _upload = timeline::range("upload");
                    bufs.stage_batch(b, &batch.images, &batch.labels)?;
                    (batch, waited)
                }
            };
            if step >= total_steps || step / steps_per_epoch != epoch {
                break;
            }
            // A stop signal: the step that was running has finished. Every rank asks here, once per step.
            if stop.stop_now(&*job.ranks)? {
                break;
            }
            let t0 = Instant::now();
            {
                let _upload = timeline::range("upload");
                bufs.use_staged(b)?;
            }
            // Once the max subnet is enqueued, stage the next batch if the loader has it ready (it
            // usually has: it decodes `data.prefetch` batches ahead): the host's copy into the staging
            // buffer and the DMA on the copy stream run while this step computes. Otherwise the next
            // iteration waits for it as before.
            let stage_next = step + 1 < total_steps && (step + 1) / steps_per_epoch == epoch;
            let mut host_work = || -> Result<()> {
                if !stage_next {
                    return Ok(());
                }
                let t = Instant::now();
                if let TryNext::Ready(Some(next)) = iter.try_next() {
                    let waited = t.elapsed().as_secs_f64();
                    let _stage = timeline::range("stage next batch");
                    bufs.stage_batch(b, &next.images, &next.labels)?;
                    staged = Some((next, waited));
                }
                Ok(())
            };
            let lr = lr_schedule.lr(step);
            let mut state =
                StepState { b, net: &net, arena: &mut arena, bufs: &bufs, groups: &groups, sampler: sampler.as_mut() };
            let logged = cfg.log.every_steps > 0 && step % cfg.log.every_steps == 0;
            let outcome: StepOutcome = match sync.as_mut() {
                None => state.run_ranked_with(step, lr, &settings, &mut OneRank, &mut host_work),
                Some(sync) => state.run_ranked_with(step, lr, &settings, sync, &mut host_work).and_then(|o| {
                    if logged {
                        check_parameters(ranks, b, net.params_arena(), step + 1)?;
                    }
                    Ok(o)
                }),
            }
            .map_err(|e| {
                let ck = last_ckpt.as_ref().map_or("none yet".to_string(), |c| c.weights.display().to_string());
                match e.to_string() {
                    // a rank failure already names it (and says it stops)
                    m if m.contains("Last good checkpoint") => Error::Other(format!("step {step}: {m}")),
                    m => Error::Other(format!("step {step}: {m}; stopping. Last good checkpoint: {ck}")),
                }
            })?;
            let dt = t0.elapsed().as_secs_f64();
            let global_images = (batch.labels.len() * world) as u64;
            images_done += global_images;
            step += 1;
            if logged {
                append(
                    &mut log,
                    &LogLine::Step(StepRecord {
                        step,
                        epoch,
                        lr: lr as f64,
                        images_per_sec: global_images as f64 / dt.max(1e-9),
                        wall_s: started.elapsed().as_secs_f64(),
                        subnets: outcome.subnets.iter().map(subnet_record).collect(),
                        total_loss: outcome.total_loss(),
                        grad_clip_fraction: None,
                        data_wait_s: Some(data_wait_s),
                    }),
                )?;
            }
            let rate = images_done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "epoch {epoch} loss max {:.3} min {:.3} lr {:.4} {:.1} img/s",
                outcome.subnets[0].loss,
                outcome.subnets.last().map_or(0.0, |s| s.loss),
                lr,
                rate
            ));
            bar.set_position(step);
            if cfg.checkpoint.every_steps.is_some_and(|k| k > 0 && step % k == 0) {
                let _save = timeline::range("checkpoint");
                checkpoint(step, epoch, &mut last_ckpt)
                    .map_err(|e| stopped_by_error(log.as_mut(), step, e, last_ckpt.as_ref()))?;
            }
            waiting_since = Instant::now();
        }
        if stop.reason().is_some() {
            break;
        }
        let epoch_done = step % steps_per_epoch == 0 || step >= total_steps;
        if epoch_done {
            let epoch = (step - 1) / steps_per_epoch;
            let t = Instant::now();
            let validation = timeline::range_n("validation after epoch", epoch);
            let calib = decode_batches(&calib_loader, 1_000_000 + epoch, cfg.bn_calib.batches)?;
            last_eval = validate_min_max(b, &net, &mut arena, &mut eval_bufs, &calib, &eval_batches, ranks)?;
            let calib_images = ranks.sum_u64(calib.iter().map(HostBatch::len).sum::<usize>() as u64)?;
            let calib_batches = ranks.sum_u64(calib.len() as u64)?;
            append(
                &mut log,
                &LogLine::Epoch(EpochRecord {
                    epoch,
                    step,
                    subnets: last_eval
                        .iter()
                        .map(|(role, arch, mf, acc)| EvalRecord {
                            role: *role,
                            arch: arch.clone(),
                            mflops: *mf,
                            top1: acc.top1,
                            top5: acc.top5,
                            images: acc.images as u64,
                        })
                        .collect(),
                    calib_batches,
                    calib_images,
                    wall_s: t.elapsed().as_secs_f64(),
                }),
            )?;
            let line = last_eval
                .iter()
                .map(|(r, _, mf, a)| format!("{} ({mf:.1} MFLOPs) top-1 {:.2}% top-5 {:.2}%", r.name(), a.top1, a.top5))
                .collect::<Vec<_>>()
                .join(", ");
            bar.println(format!("epoch {epoch}: {line}"));
            drop(validation);
            epochs_completed = epoch + 1;
            let every = cfg.checkpoint.every_epochs as u64;
            if (every > 0 && epochs_completed % every == 0) || step >= total_steps {
                let _save = timeline::range("checkpoint");
                checkpoint(step, epoch, &mut last_ckpt)
                    .map_err(|e| stopped_by_error(log.as_mut(), step, e, last_ckpt.as_ref()))?;
            }
        }
    }
    bar.finish_and_clear();
    // Every rank saw the same stop (a collective per step), so every rank takes part in the checkpoint.
    if let Some(reason) = stop.reason() {
        if step > 0 && last_ckpt.as_ref().is_none_or(|c| c.step != step) {
            let epoch = step.saturating_sub(1) / steps_per_epoch;
            checkpoint(step, epoch, &mut last_ckpt)
                .map_err(|e| stopped_by_error(log.as_mut(), step, e, last_ckpt.as_ref()))?;
        }
        append(&mut log, &stop_line(step, reason, None, last_ckpt.as_ref()))?;
    }
    Ok(TrainSummary {
        steps: step,
        epochs_completed,
        images_per_sec: images_done as f64 / started.elapsed().as_secs_f64().max(1e-9),
        last_eval: last_eval.into_iter().map(|(r, _, mf, a)| (r.name().to_string(), mf, a)).collect(),
        checkpoint: last_ckpt.map(|c| c.weights),
        metrics: log_path,
        stopped: stop.reason().map(str::to_string),
    })
}

/// Appends `line` to the log where this rank keeps one (rank 0).
fn append(log: &mut Option<MetricsLog>, line: &LogLine) -> Result<()> {
    log.as_mut().map_or(Ok(()), |l| l.append(line))
}

type EvalRow = (Role, crate::space::Arch, f64, Accuracy);

/// BN-recalibrated accuracy of the max and min subnets (spec 3.6). With ranks, each calibrates on its own
/// batches, the running statistics are averaged over ranks (every rank then holds the same model) and
/// the hit counts of each rank's share of `eval` are summed.
fn validate_min_max<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    arena: &mut Arena<B::Memory>,
    bufs: &mut EvalBuffers<B>,
    calib: &[HostBatch],
    eval: &[HostBatch],
    ranks: &dyn HostCollectives,
) -> Result<Vec<EvalRow>> {
    let mut out = Vec::new();
    for (role, arch) in [(Role::Max, net.space.max_arch()), (Role::Min, net.space.min_arch())] {
        let acc = if ranks.world_size() == 1 {
            calibrate_and_evaluate(b, net, arena, bufs, &arch, calib, eval)?
        } else {
            calibrate_bn(b, net, arena, bufs, &arch, calib)?;
            average_running_stats(ranks, b, net, calib.len())?;
            let (mut c1, mut c5, mut n) = (0u64, 0u64, 0u64);
            for batch in eval {
                let (h1, h5) = count_correct(b, net, arena, bufs, &arch, batch)?;
                (c1, c5, n) = (c1 + h1, c5 + h5, n + batch.len() as u64);
            }
            let (c1, c5, n) = (ranks.sum_u64(c1)?, ranks.sum_u64(c5)?, ranks.sum_u64(n)?);
            Accuracy::from_counts(c1, c5, n as usize)?
        };
        let mf = flops::mflops(&net.space, &arch);
        out.push((role, arch, mf, acc));
    }
    Ok(out)
}

fn progress_bar(show: bool, total: u64, at: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(at);
    bar
}

/// The space a checkpoint was trained on: `config` (a YAML file or built-in name) when given, else the
/// space text stored in the checkpoint's state file. Errors say which to pass.
pub fn space_of_checkpoint(config: Option<&str>, state: Option<&serde_json::Value>, origin: &Path) -> Result<Space> {
    if let Some(c) = config {
        return Space::resolve(c);
    }
    match state.and_then(|s| s.get("space_yaml")).and_then(|v| v.as_str()) {
        Some(text) => Space::from_yaml(text, &format!("{} (stored space)", origin.display())),
        None => Err(Error::usage(format!(
            "{}: no space stored with this checkpoint; pass --config SPACE.yaml (or a built-in: attentivenas, tiny)",
            origin.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;

    #[test]
    fn out_of_memory_names_the_batch_size_and_the_memory() {
        // AddressSanitizer's allocator aborts on a request this size instead of failing it
        // (scripts/emu-sanitize.sh runs the lib tests with its runtime preloaded).
        if std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("libasan")) {
            println!("skipped: out_of_memory_names_the_batch_size_and_the_memory: not under a sanitizer");
            return;
        }
        // A host allocation the system refuses is an error (not an abort) naming the size...
        let e = match CpuBackend::new().alloc(1 << 45) {
            Err(e) => e,
            Ok(_) => return, // a machine that grants 128 TiB lazily: nothing to check here
        };
        assert!(e.to_string().contains("GiB"), "{e}");
        // ...and the trainer's message adds the batch size and the fix.
        let again = Error::Other(e.to_string());
        let msg = oom_hint(again, "activation arena", 1 << 28, 64, None).to_string();
        assert!(msg.contains("batch size 64") && msg.contains("1.00 GiB") && msg.contains("batch_size"), "{msg}");
        // where the device reports its memory, the message gives the batch that fits
        let msg = oom_hint(e, "activation arena", 1 << 28, 64, Some(37)).to_string();
        assert!(msg.contains("largest batch that fits this device is 37") && msg.contains("batch_size=37"), "{msg}");
    }

    #[test]
    fn holdout_split_is_a_seeded_partition() {
        let (train, held) = holdout_split(100, 10, 3).unwrap();
        assert_eq!((train.len(), held.len()), (90, 10));
        let mut all: Vec<u32> = train.iter().chain(&held).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<u32>>());
        assert_eq!(holdout_split(100, 10, 3).unwrap().1, held, "same seed, same split");
        assert_ne!(holdout_split(100, 10, 4).unwrap().1, held, "another seed, another split");
        assert_eq!(holdout_split(100, 100, 3).unwrap_err().exit_code(), 2);
    }
}
