//! `attnas eval`: for each requested subnet, BN recalibration on the (once-decoded) calibration batches,
//! then top-1 / top-5 on the evaluation split (spec 5.1, 5.2). [`Evaluator`] holds the device memory of
//! one subnet evaluation (activation arena, batch buffers) and is reused by `export`; [`run_eval`] is
//! the whole command for one backend. Optionally dumps one subnet's inputs (after the model's resize,
//! NCHW) and eval-mode logits as `.npy`, for checking an exported ONNX model against the Rust forward.
//!
//! By default the evaluation runs the deployed model: after calibration the static subnet is cut out,
//! its BN folded into the convs and run by the inference forward (`crate::deploy`); `--no-fold-bn`
//! evaluates the supernet's own eval-mode forward with BN layers instead. Both give the same top-1 up to
//! float rounding (the folding reorders operations; `tests/deploy_fold.rs` bounds the logit difference).
//!
//! Data-parallel ranks (`job.ranks`): the calibration batches and the evaluation images are split across
//! the ranks; each rank calibrates on its batches, the running statistics are averaged (weighted by
//! batch counts, so the result is the calibration on all of them) and the hit counts summed.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::data::{calibration_batches_shard, data_config_of, CalibSettings, DataPaths, EvalSource};
use super::load_supernet;
use crate::backend::ops::loss::LossShape;
use crate::backend::ops::resize::ResizeShape;
use crate::backend::{Arena, SupernetOps};
use crate::deploy::fold::fold_bn;
use crate::deploy::infer::{forward as folded_forward, infer_arena_len, InferPlan};
use crate::deploy::model::FoldedModel;
use crate::error::{Error, Result};
use crate::eval::static_subnet;
use crate::nn::{activation_arena_len, ForwardOptions, Supernet};
use crate::space::arch::resolve_arch_list;
use crate::space::{flops, Arch};
use crate::train::step::StepBuffers;
use crate::train::validate::{calibrate_bn, count_correct, Accuracy, EvalBuffers, HostBatch};

/// Device memory for evaluating subnets of one supernet on batches of up to `max_batch` images.
pub struct Evaluator<'a, B: SupernetOps> {
    b: &'a B,
    net: &'a Supernet<B::Memory>,
    arena: Arena<B::Memory>,
    bufs: EvalBuffers<B>,
    /// Evaluate the BN-folded static subnet (the default) rather than the supernet's BN forward.
    fold: bool,
    /// The folded model of the subnet last prepared, from the running statistics at that time.
    folded: Option<FoldedModel<B::Memory>>,
}

impl<'a, B: SupernetOps> Evaluator<'a, B> {
    /// An arena for the largest subnet's eval forward on `max_batch` images of side `side`, plus room
    /// for one resized copy of such a batch ([`Evaluator::resize`]).
    /// `fold`: evaluate the BN-folded static subnet (module docs).
    pub fn new(b: &'a B, net: &'a Supernet<B::Memory>, max_batch: usize, side: usize, fold: bool) -> Result<Self> {
        let space = &net.space;
        let r_max = space.resolutions.iter().copied().max().unwrap_or(side);
        let plan = activation_arena_len(space, max_batch, side, false, net.precision())?
            .max(infer_arena_len(space, max_batch, side)?);
        let len = plan + max_batch * r_max * r_max * 3 + 1024;
        let arena = Arena::new(b, "activations", len).map_err(|e| {
            Error::Other(format!(
                "eval: activation arena of {:.2} GiB for batch {max_batch}: {e}; lower --batch-size / --calib-batch-size",
                len as f64 * 4.0 / (1u64 << 30) as f64
            ))
        })?;
        Ok(Evaluator { b, net, arena, bufs: EvalBuffers::new(space.num_classes), fold, folded: None })
    }

    /// Resets the running statistics and recalibrates them for `arch` on `calib` (cumulative average).
    pub fn calibrate(&mut self, arch: &Arch, calib: &[HostBatch]) -> Result<()> {
        self.folded = None;
        calibrate_bn(self.b, self.net, &mut self.arena, &mut self.bufs, arch, calib)
    }

    /// With folding on, the folded model of `arch` from the current running statistics (built once per
    /// calibration).
    fn prepare_folded(&mut self, arch: &Arch) -> Result<()> {
        if !self.fold || self.folded.as_ref().is_some_and(|m| &m.arch == arch) {
            return Ok(());
        }
        let space = &self.net.space;
        let tensors = static_subnet::extract(space, arch, &self.net.to_named(self.b, false)?)?;
        let folded = fold_bn(space, arch, &tensors)?;
        self.folded = Some(FoldedModel::upload(self.b, space, arch, &folded)?);
        Ok(())
    }

    /// Uploads `batch` and runs `arch`'s eval forward (folded or not); returns the logits tensor and the
    /// batch's buffers.
    fn run_forward(
        &mut self,
        arch: &Arch,
        batch: &HostBatch,
    ) -> Result<(crate::backend::Tensor, &StepBuffers<B::Memory>)> {
        self.prepare_folded(arch)?;
        let sb = self.bufs.get(self.b, batch)?;
        let logits =
            eval_forward(self.b, self.net, self.folded.as_ref().filter(|_| self.fold), &mut self.arena, arch, sb)?;
        Ok((logits, sb))
    }

    /// Top-1 and top-5 hit counts of `arch` on one batch.
    fn count_correct(&mut self, arch: &Arch, batch: &HostBatch) -> Result<(u64, u64)> {
        if !self.fold {
            return count_correct(self.b, self.net, &mut self.arena, &mut self.bufs, arch, batch);
        }
        let b = self.b;
        let (logits, sb) = self.run_forward(arch, batch)?;
        b.topk_correct(&LossShape { n: sb.n, classes: sb.classes }, logits, sb.labels, sb.rank, sb.counts)?;
        let counts = b.download(sb.counts)?;
        // exact small integers in f32 (see `topk_correct`)
        Ok((counts[0] as u64, counts[1] as u64))
    }

    /// Top-1 / top-5 of `arch` on `eval` with the current running statistics; `on_batch` after each batch.
    pub fn accuracy(&mut self, arch: &Arch, eval: &EvalSource, on_batch: impl FnMut()) -> Result<Accuracy> {
        let (c1, c5, n) = self.counts(arch, eval, on_batch)?;
        Accuracy::from_counts(c1, c5, n as usize)
    }

    /// Top-1 and top-5 hit counts and the image count of `arch` on `eval`.
    pub fn counts(&mut self, arch: &Arch, eval: &EvalSource, mut on_batch: impl FnMut()) -> Result<(u64, u64, u64)> {
        let (mut c1, mut c5, mut n) = (0u64, 0u64, 0u64);
        eval.for_each(|batch| {
            let (h1, h5) = self.count_correct(arch, batch)?;
            c1 += h1;
            c5 += h5;
            n += batch.len() as u64;
            on_batch();
            Ok(())
        })?;
        Ok((c1, c5, n))
    }

    /// The supernet this evaluator runs.
    pub fn net(&self) -> &Supernet<B::Memory> {
        self.net
    }

    /// `batch` normalised and resized (bicubic, the model's own resize op) to `r`: what the subnet's stem
    /// sees, [n, r, r, 3].
    pub fn resize(&mut self, batch: &HostBatch, r: usize) -> Result<Vec<f32>> {
        if batch.side == r {
            return Ok(batch.normalized());
        }
        let n = batch.len();
        let bufs = StepBuffers::new(self.b, n, batch.side, self.net.space.num_classes)?;
        bufs.upload_pixels(self.b, &batch.pixels, &batch.labels)?;
        self.arena.reset();
        let out = self.arena.alloc(n * r * r * 3)?;
        let shape = ResizeShape { n, c: 3, h_in: batch.side, w_in: batch.side, h_out: r, w_out: r };
        self.b.bicubic_resize_fwd(&shape, bufs.input, out)?;
        self.b.download(out)
    }

    /// Eval-mode logits `[n, classes]` of `arch` on normalised `images` ([n, side, side, 3], n the
    /// number of `labels`), folded or not as the evaluator was made.
    pub fn logits(&mut self, arch: &Arch, images: &[f32], labels: &[u32], side: usize) -> Result<Vec<f32>> {
        let classes = self.net.space.num_classes;
        self.prepare_folded(arch)?;
        let sb = StepBuffers::new(self.b, labels.len(), side, classes)?;
        sb.upload(self.b, images, labels)?;
        let logits =
            eval_forward(self.b, self.net, self.folded.as_ref().filter(|_| self.fold), &mut self.arena, arch, &sb)?;
        let logits = self.b.download(logits)?;
        Ok(logits[..labels.len() * classes].to_vec())
    }
}

/// `arch`'s eval forward on the batch in `sb`: the folded model when given (prepared for `arch`), else the
/// supernet's BN forward on the running statistics. Returns the logits tensor (in `arena`).
fn eval_forward<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    folded: Option<&FoldedModel<B::Memory>>,
    arena: &mut Arena<B::Memory>,
    arch: &Arch,
    sb: &StepBuffers<B::Memory>,
) -> Result<crate::backend::Tensor> {
    arena.reset();
    Ok(match folded {
        Some(model) => {
            let plan = InferPlan::allocate(&net.space, arch, sb.n, sb.input, sb.side, arena)?;
            folded_forward(b, &plan, model)?;
            plan.head.logits
        }
        None => net.forward(b, arch, sb.input, sb.n, sb.side, ForwardOptions::eval(), arena)?.head.logits,
    })
}

/// Where `--dump-inputs` / `--dump-logits` go.
#[derive(Clone, Debug, Default)]
pub struct DumpPaths {
    pub inputs: Option<PathBuf>,
    pub logits: Option<PathBuf>,
}

/// What `attnas eval` was asked to do.
#[derive(Clone, Debug)]
pub struct EvalJob {
    pub ckpt: PathBuf,
    pub config: Option<String>,
    /// `--arch` values (each a comma list, see `space::arch::split_arch_list`).
    pub archs: Vec<String>,
    pub data: DataPaths,
    /// `None`: `--no-calib` (the checkpoint's running statistics).
    pub calib: Option<CalibSettings>,
    pub batch_size: usize,
    pub max_images: Option<usize>,
    pub progress: bool,
    pub dump: DumpPaths,
    /// Evaluate the BN-folded static subnet (default); false: `--no-fold-bn`.
    pub fold_bn: bool,
    /// Storage of the activations (`--precision`); bf16 evaluates the supernet's BN forward (the folded
    /// model is fp32).
    pub precision: crate::backend::Precision,
    /// This process's place among the job's ranks ([`crate::dist::single`] for one device).
    pub ranks: crate::dist::Ranks,
}

/// One subnet's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalRow {
    pub name: String,
    pub arch: Arch,
    pub mflops: f64,
    pub mparams: f64,
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
    /// Calibration + evaluation wall time of this subnet.
    pub seconds: f64,
}

/// The calibration used for every subnet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CalibReport {
    pub batches: usize,
    pub batch_size: usize,
    pub images: usize,
    pub seed: u64,
    pub train_data: PathBuf,
    pub decode_seconds: f64,
}

/// The whole command's result (`--json` prints it).
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    pub checkpoint: PathBuf,
    pub space: String,
    pub device: String,
    pub eval_data: PathBuf,
    /// `None` with `--no-calib`.
    pub calibration: Option<CalibReport>,
    /// Whether the BN-folded inference forward was evaluated.
    pub bn_folded: bool,
    /// Storage of the activations: `fp32` or `bf16`.
    pub precision: &'static str,
    pub results: Vec<EvalRow>,
}

/// A progress bar over `len` batches (hidden when `show` is false).
pub fn batch_bar(show: bool, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} batches [{elapsed_precise} < {eta_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Runs `attnas eval` on backend `b`.
pub fn run_eval<B: SupernetOps>(b: &B, job: &EvalJob) -> Result<EvalReport> {
    let ranks = job.ranks.as_ref();
    let (rank, world) = (ranks.rank(), ranks.world_size());
    let mut loaded = load_supernet(b, &job.ckpt, job.config.as_deref())?;
    loaded.net.set_precision(b, b.resolve_precision(job.precision))?;
    let space = &loaded.net.space;
    let archs = resolve_arch_list(space, &job.archs)?;
    let wants_dump = job.dump.inputs.is_some() || job.dump.logits.is_some();
    if wants_dump && archs.len() != 1 {
        return Err(Error::usage("--dump-inputs / --dump-logits take exactly one --arch"));
    }
    if wants_dump && world > 1 {
        return Err(Error::usage("--dump-inputs / --dump-logits run on one rank: leave out --gpus / --ranks"));
    }
    crate::dist::sync::agree_at_start(
        ranks,
        b,
        &[
            ("checkpoint", loaded.weights.display().to_string()),
            ("archs", serde_json::to_string(&job.archs).unwrap_or_default()),
        ],
    )?;
    let data_cfg = data_config_of(loaded.state.as_ref(), job.data.crop)?;
    let eval_path = job.data.eval_file()?;
    let calib = match &job.calib {
        Some(settings) => {
            let path = job.data.train_file()?;
            let t = Instant::now();
            let batches = calibration_batches_shard(&path, space, &data_cfg, settings, rank, world)?;
            let report = CalibReport {
                batches: ranks.sum_u64(batches.len() as u64)? as usize,
                batch_size: settings.batch_size,
                images: ranks.sum_u64(batches.iter().map(HostBatch::len).sum::<usize>() as u64)? as usize,
                seed: settings.seed,
                train_data: path,
                decode_seconds: t.elapsed().as_secs_f64(),
            };
            Some((batches, report))
        }
        None => None,
    };
    let eval = EvalSource::open_shard(&eval_path, space, &data_cfg, job.batch_size, job.max_images, rank, world)?;
    let max_batch = job.batch_size.max(job.calib.map_or(0, |c| c.batch_size));
    let dtype = b.resolve_precision(job.precision);
    // the folded static subnet runs in fp32; bf16 evaluates the supernet's BN forward
    let fold = job.fold_bn && dtype == crate::backend::Dtype::F32;
    let mut ev = Evaluator::new(b, &loaded.net, max_batch, data_cfg.crop as usize, fold)?;

    let calib_len = calib.as_ref().map_or(0, |(c, _)| c.len());
    let bar = batch_bar(job.progress && ranks.is_leader(), (archs.len() * (calib_len + eval.num_batches())) as u64);
    let mut results = Vec::new();
    for (name, arch) in &archs {
        let t = Instant::now();
        if let Some((batches, _)) = &calib {
            bar.set_message(format!("{name}: calibrating BN"));
            ev.calibrate(arch, batches)?;
            crate::dist::sync::average_running_stats(ranks, b, ev.net(), batches.len())?;
            bar.inc(batches.len() as u64);
        }
        bar.set_message(format!("{name}: evaluating"));
        let (c1, c5, n) = ev.counts(arch, &eval, || bar.inc(1))?;
        let acc = Accuracy::from_counts(ranks.sum_u64(c1)?, ranks.sum_u64(c5)?, ranks.sum_u64(n)? as usize)?;
        let cost = flops::cost(space, arch);
        results.push(EvalRow {
            name: name.clone(),
            arch: arch.clone(),
            mflops: cost.mflops(),
            mparams: cost.mparams(),
            top1: acc.top1,
            top5: acc.top5,
            images: acc.images,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    bar.finish_and_clear();
    if wants_dump {
        dump(&mut ev, &archs[0].1, &eval, &job.dump)?;
    }
    Ok(EvalReport {
        checkpoint: loaded.weights.clone(),
        space: space.name.clone(),
        device: b.name(),
        eval_data: eval_path,
        calibration: calib.map(|(_, r)| r),
        bn_folded: fold,
        precision: crate::train::memory_plan::precision_name(dtype),
        results,
    })
}

/// Writes the eval images as the subnet's stem sees them (`[N, 3, r, r]`, NCHW) and the eval-mode
/// logits (`[N, classes]`) of `arch` with the current running statistics.
fn dump<B: SupernetOps>(ev: &mut Evaluator<'_, B>, arch: &Arch, eval: &EvalSource, to: &DumpPaths) -> Result<()> {
    let r = arch.resolution;
    let (mut inputs, mut logits, mut n) = (Vec::new(), Vec::new(), 0usize);
    eval.for_each(|batch| {
        let resized = ev.resize(batch, r)?;
        logits.extend(ev.logits(arch, &resized, &batch.labels, r)?);
        // NHWC -> NCHW
        let m = batch.len();
        let mut nchw = vec![0f32; resized.len()];
        for i in 0..m {
            for p in 0..r * r {
                for c in 0..3 {
                    nchw[(i * 3 + c) * r * r + p] = resized[(i * r * r + p) * 3 + c];
                }
            }
        }
        inputs.extend(nchw);
        n += m;
        Ok(())
    })?;
    if let Some(p) = &to.inputs {
        crate::util::npy::write_npy_f32(p, &[n, 3, r, r], &inputs)?;
    }
    if let Some(p) = &to.logits {
        crate::util::npy::write_npy_f32(p, &[n, logits.len() / n.max(1)], &logits)?;
    }
    Ok(())
}
