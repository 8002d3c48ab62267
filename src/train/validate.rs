//! BN recalibration and evaluation of one subnet (spec 3.6 and 5.1): reset the running statistics,
//! forward N training batches (training augmentation) folding each batch's statistics into a cumulative
//! average (PyTorch `momentum=None`), then top-1 / top-5 on held-out batches with the running statistics.
//! Batches are decoded once ([`HostBatch`]) and reused for every subnet evaluated (the original re-read
//! its loader per subnet and leaked host memory doing so). They stay 8-bit RGB on the host, as the loader
//! made them, and are uploaded as bytes and normalised on the device (`ops::InputOps`, bit-identical to
//! the host's [`normalize_nhwc_into`]): the spec's 64 x 256 calibration images at 224 take 2.5 GB instead of 9.9 GB as f32.

use std::collections::BTreeMap;

use crate::backend::ops::loss::LossShape;
use crate::backend::{Arena, SupernetOps};
use crate::data::augment::normalize_nhwc_into;
use crate::data::loader::Loader;
use crate::error::{Error, Result};
use crate::nn::{ForwardOptions, Supernet};
use crate::space::Arch;
use crate::train::step::StepBuffers;

/// A decoded batch kept on the host as the loader's 8-bit pixels (augmented or eval-transformed, not
/// yet normalised).
#[derive(Clone, Debug)]
pub struct HostBatch {
    /// [n, side, side, 3] RGB, 0-255.
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub side: usize,
}

impl HostBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Host bytes the pixels take.
    pub fn bytes(&self) -> usize {
        self.pixels.len()
    }
    /// The batch as the network takes it: normalised f32, [n, side, side, 3].
    pub fn normalized(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.pixels.len()];
        normalize_nhwc_into(&self.pixels, &mut out);
        out
    }
}

/// The first `max_batches` batches of `loader`'s epoch `epoch`, decoded (8-bit, normalised on upload).
pub fn decode_batches(loader: &Loader, epoch: u64, max_batches: usize) -> Result<Vec<HostBatch>> {
    let mut out = Vec::new();
    let iter = loader.epoch(epoch)?;
    for batch in iter.take(max_batches) {
        out.push(HostBatch { pixels: batch.images.clone(), labels: batch.labels.clone(), side: batch.side as usize });
    }
    Ok(out)
}

/// Top-1 / top-5 accuracy (percent) over `images` images.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
}

/// Device buffers for each batch size met, created on first use; batches go up as u8 pixels and are
/// normalised on the device ([`StepBuffers::upload_pixels`]).
pub struct EvalBuffers<B: SupernetOps> {
    classes: usize,
    by_size: BTreeMap<(usize, usize), StepBuffers<B::Memory>>,
}

impl<B: SupernetOps> EvalBuffers<B> {
    pub fn new(classes: usize) -> Self {
        EvalBuffers { classes, by_size: BTreeMap::new() }
    }

    /// The buffers for `batch`'s size, holding `batch` (normalised, uploaded).
    pub fn get(&mut self, b: &B, batch: &HostBatch) -> Result<&StepBuffers<B::Memory>> {
        let key = (batch.len(), batch.side);
        if !self.by_size.contains_key(&key) {
            self.by_size.insert(key, StepBuffers::new(b, key.0, key.1, self.classes)?);
        }
        let bufs = self.by_size.get(&key).ok_or_else(|| Error::Other("eval buffers".into()))?;
        bufs.upload_pixels(b, &batch.pixels, &batch.labels)?;
        Ok(bufs)
    }
}

/// Recalibrates the BN running statistics of `arch` on `calib` (cumulative average over the batches).
pub fn calibrate_bn<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    arena: &mut Arena<B::Memory>,
    bufs: &mut EvalBuffers<B>,
    arch: &Arch,
    calib: &[HostBatch],
) -> Result<()> {
    net.reset_running_stats(b)?;
    for (i, batch) in calib.iter().enumerate() {
        let sb = bufs.get(b, batch)?;
        arena.reset();
        net.forward(b, arch, sb.input, sb.n, sb.side, ForwardOptions::calibrate(i as u32 + 1), arena)?;
    }
    b.synchronize()
}

/// Top-1 and top-5 hit counts of `arch` on one batch with the current running statistics.
pub fn count_correct<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    arena: &mut Arena<B::Memory>,
    bufs: &mut EvalBuffers<B>,
    arch: &Arch,
    batch: &HostBatch,
) -> Result<(u64, u64)> {
    let sb = bufs.get(b, batch)?;
    arena.reset();
    let tape = net.forward(b, arch, sb.input, sb.n, sb.side, ForwardOptions::eval(), arena)?;
    let shape = LossShape { n: sb.n, classes: sb.classes };
    b.topk_correct(&shape, tape.head.logits, sb.labels, sb.rank, sb.counts)?;
    let counts = b.download(sb.counts)?;
    // exact small integers in f32 (see `topk_correct`)
    Ok((counts[0] as u64, counts[1] as u64))
}

impl Accuracy {
    /// Percentages from hit counts over `images` images; an error when there are none.
    pub fn from_counts(top1: u64, top5: u64, images: usize) -> Result<Accuracy> {
        if images == 0 {
            return Err(Error::usage("evaluation needs at least one held-out image"));
        }
        let pct = |c: u64| 100.0 * c as f64 / images as f64;
        Ok(Accuracy { top1: pct(top1), top5: pct(top5), images })
    }
}

/// Top-1 / top-5 of `arch` on `eval` with the current running statistics.
pub fn evaluate<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    arena: &mut Arena<B::Memory>,
    bufs: &mut EvalBuffers<B>,
    arch: &Arch,
    eval: &[HostBatch],
) -> Result<Accuracy> {
    let (mut c1, mut c5, mut n) = (0u64, 0u64, 0usize);
    for batch in eval {
        let (h1, h5) = count_correct(b, net, arena, bufs, arch, batch)?;
        c1 += h1;
        c5 += h5;
        n += batch.len();
    }
    Accuracy::from_counts(c1, c5, n)
}

/// Both: calibrate on `calib`, then evaluate on `eval`.
pub fn calibrate_and_evaluate<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    arena: &mut Arena<B::Memory>,
    bufs: &mut EvalBuffers<B>,
    arch: &Arch,
    calib: &[HostBatch],
    eval: &[HostBatch],
) -> Result<Accuracy> {
    calibrate_bn(b, net, arena, bufs, arch, calib)?;
    evaluate(b, net, arena, bufs, arch, eval)
}
