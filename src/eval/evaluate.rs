//! `attnas eval`: for each requested subnet, BN recalibration on the (once-decoded) calibration batches,
//! then top-1 / top-5 on the evaluation split (spec 5.1, 5.2). [`Evaluator`] holds the device memory of
//! one subnet evaluation (activation arena, batch buffers) and is reused by `export`; [`run_eval`] is
//! the whole command for one backend. Optionally dumps one subnet's inputs (after the model's resize,
//! NCHW) and eval-mode logits as `.npy`, for checking an exported ONNX model against the Rust forward.
//!
//! Data-parallel ranks (`job.ranks`): the calibration batches and the evaluation images are split across
//! the ranks; each rank calibrates on its batches, the running statistics are averaged (weighted by
//! batch counts, so the result is the calibration on all of them) and the hit counts summed.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::data::{calibration_batches_shard, data_config_of, CalibSettings, DataPaths, EvalSource};
use super::load_supernet;
use crate::backend::ops::resize::ResizeShape;
use crate::backend::{Arena, SupernetOps};
use crate::error::{Error, Result};
use crate::nn::{activation_arena_len, ForwardOptions, Supernet};
use crate::space::arch::resolve_arch;
use crate::space::{flops, Arch, Space};
use crate::train::step::StepBuffers;
use crate::train::validate::{calibrate_bn, count_correct, Accuracy, EvalBuffers, HostBatch};

/// Device memory for evaluating subnets of one supernet on batches of up to `max_batch` images.
pub struct Evaluator<'a, B: SupernetOps> {
    b: &'a B,
    net: &'a Supernet<B::Memory>,
    arena: Arena<B::Memory>,
    bufs: EvalBuffers<B>,
}

impl<'a, B: SupernetOps> Evaluator<'a, B> {
    /// An arena for the largest subnet's eval forward on `max_batch` images of side `side`, plus room
    /// for one resized copy of such a batch ([`Evaluator::resize`]).
    pub fn new(b: &'a B, net: &'a Supernet<B::Memory>, max_batch: usize, side: usize) -> Result<Self> {
        let space = &net.space;
        let r_max = space.resolutions.iter().copied().max().unwrap_or(side);
        let len = activation_arena_len(space, max_batch, side, false)? + max_batch * r_max * r_max * 3 + 1024;
        let arena = Arena::new(b, "activations", len).map_err(|e| {
            Error::Other(format!(
                "eval: activation arena of {:.2} GiB for batch {max_batch}: {e}; lower --batch-size / --calib-batch-size",
                len as f64 * 4.0 / (1u64 << 30) as f64
            ))
        })?;
        Ok(Evaluator { b, net, arena, bufs: EvalBuffers::new(space.num_classes) })
    }

    /// Resets the running statistics and recalibrates them for `arch` on `calib` (cumulative average).
    pub fn calibrate(&mut self, arch: &Arch, calib: &[HostBatch]) -> Result<()> {
        calibrate_bn(self.b, self.net, &mut self.arena, &mut self.bufs, arch, calib)
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
            let (h1, h5) = count_correct(self.b, self.net, &mut self.arena, &mut self.bufs, arch, batch)?;
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

    /// `batch` resized (bicubic, the model's own resize op) to `r`: what the subnet's stem sees.
    pub fn resize(&mut self, batch: &HostBatch, r: usize) -> Result<HostBatch> {
        if batch.side == r {
            return Ok(batch.clone());
        }
        let n = batch.len();
        let bufs = StepBuffers::new(self.b, n, batch.side, self.net.space.num_classes)?;
        bufs.upload(self.b, &batch.images, &batch.labels)?;
        self.arena.reset();
        let out = self.arena.alloc(n * r * r * 3)?;
        let shape = ResizeShape { n, c: 3, h_in: batch.side, w_in: batch.side, h_out: r, w_out: r };
        self.b.bicubic_resize_fwd(&shape, bufs.input, out)?;
        Ok(HostBatch { images: self.b.download(out)?, labels: batch.labels.clone(), side: r })
    }

    /// Eval-mode logits `[n, classes]` of `arch` on `batch`.
    pub fn logits(&mut self, arch: &Arch, batch: &HostBatch) -> Result<Vec<f32>> {
        let classes = self.net.space.num_classes;
        let bufs = StepBuffers::new(self.b, batch.len(), batch.side, classes)?;
        bufs.upload(self.b, &batch.images, &batch.labels)?;
        self.arena.reset();
        let tape =
            self.net.forward(self.b, arch, bufs.input, bufs.n, bufs.side, ForwardOptions::eval(), &mut self.arena)?;
        let logits = self.b.download(tape.head.logits)?;
        Ok(logits[..batch.len() * classes].to_vec())
    }
}

/// Splits a `--arch` list at the commas outside brackets (inline JSON archs contain commas).
pub fn split_arch_list(list: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for ch in list.chars() {
        match ch {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    out.push(cur.trim().to_string());
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Resolves every entry of a `--arch` list against `space` (names, files, inline JSON), with its label.
pub fn resolve_arch_list(space: &Space, list: &str) -> Result<Vec<(String, Arch)>> {
    let specs = split_arch_list(list);
    if specs.is_empty() {
        return Err(Error::usage("--arch: give at least one arch (a name such as a0, min, max, or a file)"));
    }
    specs
        .into_iter()
        .map(|s| {
            let arch = resolve_arch(space, &s)?;
            let label = if s.starts_with('{') { "inline".to_string() } else { s };
            Ok((label, arch))
        })
        .collect()
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
    /// Comma-separated archs.
    pub archs: String,
    pub data: DataPaths,
    /// `None`: `--no-calib` (the checkpoint's running statistics).
    pub calib: Option<CalibSettings>,
    pub batch_size: usize,
    pub max_images: Option<usize>,
    pub progress: bool,
    pub dump: DumpPaths,
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
    let loaded = load_supernet(b, &job.ckpt, job.config.as_deref())?;
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
        &[("checkpoint", loaded.weights.display().to_string()), ("archs", job.archs.clone())],
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
    let mut ev = Evaluator::new(b, &loaded.net, max_batch, data_cfg.crop as usize)?;

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
        logits.extend(ev.logits(arch, &resized)?);
        // NHWC -> NCHW
        let m = resized.len();
        let mut nchw = vec![0f32; resized.images.len()];
        for i in 0..m {
            for p in 0..r * r {
                for c in 0..3 {
                    nchw[(i * 3 + c) * r * r + p] = resized.images[(i * r * r + p) * 3 + c];
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

#[cfg(test)]
mod tests {
    use super::split_arch_list;

    #[test]
    fn arch_lists_split_outside_brackets() {
        assert_eq!(split_arch_list("a0, min,max"), vec!["a0", "min", "max"]);
        let inline = r#"{"resolution":24,"width":[8,8]},a1"#;
        assert_eq!(split_arch_list(inline), vec![r#"{"resolution":24,"width":[8,8]}"#, "a1"]);
        assert!(split_arch_list(" , ").is_empty());
    }
}
