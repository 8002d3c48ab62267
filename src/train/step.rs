//! One training step of the sandwich rule with attentive sampling (spec 3.2, 4.2-4.3), written once
//! against the op traits:
//! 1. the max subnet on the labels (label-smoothed CE) with dropout and drop-connect; its logits become
//!    the teacher's soft labels;
//! 2. `num_arch_training - 2` sampled subnets: uniform, or BestUp-k / WorstUp-k over k candidates drawn
//!    for a FLOPs target and scored by `-CE_ls` on the current batch (no-grad, batch-statistics BN) or,
//!    with [`CandidateScorer::Predictor`], by an accuracy predictor's top-1 (no forwards);
//!    each trained with the distillation loss against the teacher (soft CE = KL, or AlphaNet's
//!    alpha-divergence, [`Distillation`]);
//! 3. the min subnet, the same way;
//! 4. gradients summed over the subnets (accumulated by the backwards), element-wise clip, SGD Nesterov
//!    with the weight-decay groups.
//!
//! Host waits: the losses stay on the device (one slot per subnet and per candidate of the current draw,
//! [`StepBuffers::losses`]); the host reads them back once per attentive draw (all k scores together, to
//! choose) and once before the update (the subnets' losses, checked finite so a bad step never reaches the
//! weights), then synchronises once after the optimizer. Nothing else in a step waits for the device.
//!
//! Each subnet sees the batch bicubic-resized to its own resolution (inside the forward). Randomness is a
//! pure function of (seed, step): the architecture draws come from an RNG seeded per step and the masks
//! from per-step seeds, so a resumed run repeats exactly the steps an uninterrupted one takes.
//!
//! Data-parallel ranks: [`StepState::run_ranked`] takes a [`RankSync`] (`crate::dist::sync::StepSync`)
//! that averages the candidates' scores over ranks, averages the gradients in buckets during the last
//! (min) subnet's backward, and compares the step's architectures before the optimizer, so clipping sees
//! the averaged gradient. [`StepState::run`] is the one-device step ([`OneRank`]: every hook a no-op).

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;

use crate::backend::ops::input::staging_words;
use crate::backend::ops::loss::{AlphaDivergence, LossShape};
use crate::backend::ops::optimizer::{ParamGroup, SgdStep};
use crate::backend::{Arena, DeviceMemory, SupernetOps, Tensor};
use crate::data::augment::{IMAGENET_MEAN, IMAGENET_STD};
use crate::error::{Error, Result};
use crate::nn::backward::BackwardProgress;
use crate::nn::tape::layer_seed;
use crate::nn::{ForwardOptions, Supernet};
use crate::predictor::Predictor;
use crate::space::attentive::{select, AttentiveSampler, Selection};
use crate::space::{flops, sampler, Arch};
use crate::timeline;
pub use crate::train::metrics::Role;

/// How the middle subnets are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiddleSampling {
    Uniform,
    Attentive(Selection),
}

/// How attentive candidates are scored (higher is better either way).
#[derive(Clone, Debug, PartialEq)]
pub enum CandidateScorer {
    /// Minus the label-smoothed CE on the current minibatch (spec 4.3).
    Loss,
    /// The predicted top-1 of an accuracy predictor (spec 4.5).
    Predictor(Arc<Predictor>),
}

/// The in-place distillation loss of the sampled and min subnets (`train.kd`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distillation {
    /// Soft CE against the teacher's softmax (AttentiveNAS's `KLLossSoft`; the gradient of KL).
    Kl,
    /// AlphaNet's adaptive alpha-divergence (`AdaptiveLossSoft`).
    AlphaDivergence(AlphaDivergence),
}

/// The recipe knobs one step needs (from the training config).
#[derive(Clone, Debug, PartialEq)]
pub struct StepSettings {
    pub label_smoothing: f32,
    pub dropout: f32,
    pub drop_connect: f32,
    pub drop_connect_only_last_two_stages: bool,
    /// The loss of every subnet but the max against the max subnet's logits.
    pub kd: Distillation,
    /// Subnets per step, max and min included (4 in the recipe).
    pub num_arch_training: usize,
    pub sampling: MiddleSampling,
    /// Candidates per attentive draw (k of BestUp-k).
    pub num_trials: usize,
    pub scorer: CandidateScorer,
    pub momentum: f32,
    /// Element-wise gradient clip; `f32::INFINITY` for none.
    pub clip: f32,
    pub seed: u64,
}

/// One scored candidate of an attentive draw.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredCandidate {
    pub arch: Arch,
    pub mflops: f64,
    /// -CE_ls on the current batch, or the predicted top-1 (higher is better).
    pub score: f64,
    /// False when the sampler fell back to its last draw (no draw landed in the target bin).
    pub landed: bool,
}

/// What happened to one subnet of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct SubnetOutcome {
    pub role: Role,
    pub arch: Arch,
    pub mflops: f64,
    pub loss: f64,
    pub candidates: Vec<ScoredCandidate>,
    pub chosen: Option<usize>,
    pub target_bin: Option<i64>,
    /// Sampler fallbacks during this draw.
    pub fallbacks: u64,
}

/// Wall time of the step's phases (seconds; device work is synchronised at each boundary).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimes {
    pub max: f64,
    pub scoring: f64,
    pub sampled: f64,
    pub min: f64,
    pub optimizer: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepOutcome {
    pub subnets: Vec<SubnetOutcome>,
    pub times: StepTimes,
}

impl StepOutcome {
    pub fn total_loss(&self) -> f64 {
        self.subnets.iter().map(|s| s.loss).sum()
    }
}

/// Step-lifetime device buffers: the batch, labels, teacher logits and the loss plumbing.
pub struct StepBuffers<M: DeviceMemory> {
    _mem: M,
    pub n: usize,
    pub side: usize,
    pub classes: usize,
    /// [n, side, side, 3] normalised images.
    pub input: Tensor,
    /// The batch's u8 pixels ([n, side, side, 3] bytes in `ceil(n * side * side * 3 / 4)` f32 words),
    /// uploaded as bytes and normalised into `input` on the device ([`StepBuffers::upload_pixels`]).
    /// The next batch is staged here while a step runs ([`StepBuffers::stage_batch`]).
    pub pixels: Tensor,
    /// [n] the staged batch's labels as f32, copied into `labels` when it is used.
    pub staged_labels: Tensor,
    /// [n] class indices as f32.
    pub labels: Tensor,
    /// [n, classes] the max subnet's logits.
    pub teacher: Tensor,
    pub dlogits: Tensor,
    pub row_loss: Tensor,
    /// [LOSS_SLOTS] losses left on the device until one read: the step's subnets in slots
    /// `0..num_arch_training`, then the current draw's candidates.
    pub losses: Tensor,
    /// [n] ranks and [2] top-1/top-5 counts (evaluation).
    pub rank: Tensor,
    pub counts: Tensor,
}

/// Each [`StepBuffers`] buffer's f32 elements, in field order.
fn step_buffer_sizes(n: usize, side: usize, classes: usize) -> [usize; 10] {
    let values = n * side * side * 3;
    [values, n, n * classes, n * classes, n, LOSS_SLOTS, n, 2, staging_words(values), n]
}

/// The f32 elements [`StepBuffers::new`] allocates (memory planning: `super::memory_plan`).
pub fn step_buffer_elements(n: usize, side: usize, classes: usize) -> usize {
    step_buffer_sizes(n, side, classes).iter().map(|s| s + 64).sum()
}

impl<M: DeviceMemory> StepBuffers<M> {
    pub fn new<B: SupernetOps<Memory = M>>(b: &B, n: usize, side: usize, classes: usize) -> Result<Self> {
        let sizes = step_buffer_sizes(n, side, classes);
        let mut arena = Arena::new(b, "step buffers", step_buffer_elements(n, side, classes))?;
        let mut t = Vec::new();
        for s in sizes {
            t.push(arena.alloc(s)?);
        }
        Ok(StepBuffers {
            n,
            side,
            classes,
            input: t[0],
            labels: t[1],
            teacher: t[2],
            dlogits: t[3],
            row_loss: t[4],
            losses: t[5],
            rank: t[6],
            counts: t[7],
            pixels: t[8],
            staged_labels: t[9],
            _mem: arena.into_memory(),
        })
    }

    /// Uploads a batch as the loader made it: u8 NHWC pixels (`[n, side, side, 3]`, a quarter of the f32
    /// bytes) normalised into `input` on the device with the ImageNet mean and std (bit-identical to
    /// the host's `data::augment::normalize_nhwc`), and labels: [`Self::stage_batch`] then
    /// [`Self::use_staged`].
    pub fn upload_pixels<B: SupernetOps<Memory = M>>(&self, b: &B, pixels: &[u8], labels: &[u32]) -> Result<()> {
        self.stage_batch(b, pixels, labels)?;
        self.use_staged(b)
    }

    /// Starts copying a batch (u8 pixels and labels) to the device while the work already enqueued
    /// runs (issue #13 item 4; `Backend::upload_bytes_overlapped`: on a GPU, a copy stream). Only
    /// [`Self::use_staged`] reads what it writes, so a step may run between the two: the trainer stages
    /// batch i + 1 right after step i has taken batch i. Labels travel as f32 (exact below 2^24).
    pub fn stage_batch<B: SupernetOps<Memory = M>>(&self, b: &B, pixels: &[u8], labels: &[u32]) -> Result<()> {
        if labels.len() != self.n || pixels.len() != self.input.len() {
            return Err(Error::shape(
                "training batch",
                format!("{} images of {}x{}x3 bytes and {} labels", self.n, self.side, self.side, self.n),
                format!("{} bytes and {} labels", pixels.len(), labels.len()),
            ));
        }
        let l: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
        b.upload_bytes_overlapped(self.pixels, pixels)?;
        b.upload_bytes_overlapped(self.staged_labels, bytemuck::cast_slice(&l))
    }

    /// Takes the staged batch into the step: waits (on the device) for its copies, normalises the
    /// pixels into `input` and copies the labels into `labels`.
    pub fn use_staged<B: SupernetOps<Memory = M>>(&self, b: &B) -> Result<()> {
        b.join_overlapped_uploads()?;
        b.normalize_u8_nhwc(self.pixels, IMAGENET_MEAN, IMAGENET_STD, self.input)?;
        b.copy(self.staged_labels, self.labels)
    }

    /// Uploads a batch: normalised images (`[n, side, side, 3]`) and labels.
    pub fn upload<B: SupernetOps<Memory = M>>(&self, b: &B, images: &[f32], labels: &[u32]) -> Result<()> {
        if labels.len() != self.n || images.len() != self.input.len() {
            return Err(Error::shape(
                "training batch",
                format!("{} images of {}x{}x3 and {} labels", self.n, self.side, self.side, self.n),
                format!("{} values and {} labels", images.len(), labels.len()),
            ));
        }
        b.upload(self.input, images)?;
        let l: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
        b.upload(self.labels, &l)
    }

    fn loss_shape(&self) -> LossShape {
        LossShape { n: self.n, classes: self.classes }
    }

    /// The one-element loss slot `i` (see [`StepBuffers::losses`]).
    fn loss_slot(&self, i: usize) -> Result<Tensor> {
        self.losses.slice(i, 1)
    }
}

/// What a step does across data-parallel ranks (`crate::dist::sync::StepSync`). One device uses
/// [`OneRank`], for which every hook does nothing.
pub trait RankSync<B: SupernetOps> {
    /// The candidates' scores of one attentive draw, before the choice: left as they are, or replaced by
    /// their mean over ranks (then every rank makes the same choice).
    fn candidate_scores(&mut self, _scores: &mut [f64]) -> Result<()> {
        Ok(())
    }
    /// During the last subnet's backward: the gradients of `done` are final (queued, on a GPU).
    fn gradients_final(&mut self, _b: &B, _done: BackwardProgress) -> Result<()> {
        Ok(())
    }
    /// After the last backward, before clipping and the optimizer: the gradients are averaged over ranks
    /// and the step's subnets compared across ranks (their losses may become the mean over ranks).
    fn before_update(&mut self, _b: &B, _step: u64, _subnets: &mut [SubnetOutcome]) -> Result<()> {
        Ok(())
    }
}

/// The one-device step: no other rank to agree with.
pub struct OneRank;

impl<B: SupernetOps> RankSync<B> for OneRank {}

/// Everything a step mutates besides the supernet.
pub struct StepState<'a, B: SupernetOps> {
    pub b: &'a B,
    pub net: &'a Supernet<B::Memory>,
    pub arena: &'a mut Arena<B::Memory>,
    pub bufs: &'a StepBuffers<B::Memory>,
    pub groups: &'a [ParamGroup],
    pub sampler: Option<&'a mut AttentiveSampler>,
}

/// Loss slots of [`StepBuffers`]: the subnets of a step plus the candidates of one draw must fit.
pub const LOSS_SLOTS: usize = 256;

fn check_finite(role: Role, arch: &Arch, loss: f64) -> Result<f64> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(Error::Other(format!("non-finite loss {loss} in the {} subnet ({})", role.name(), arch.to_json())))
    }
}

/// The NVTX range names of one subnet's phases (static strings: no formatting in the step).
struct RangeNames {
    forward: &'static str,
    loss: &'static str,
    backward: &'static str,
}

impl RangeNames {
    fn of(role: Role) -> Self {
        match role {
            Role::Max => RangeNames { forward: "max forward", loss: "max loss", backward: "max backward" },
            Role::Sampled => {
                RangeNames { forward: "sampled forward", loss: "sampled loss", backward: "sampled backward" }
            }
            Role::Min => RangeNames { forward: "min forward", loss: "min loss", backward: "min backward" },
        }
    }
}

fn download_scalar<B: SupernetOps>(b: &B, t: Tensor) -> Result<f64> {
    Ok(b.download(t)?.first().copied().unwrap_or(f32::NAN) as f64)
}

impl<B: SupernetOps> StepState<'_, B> {
    /// Label-smoothed CE of `arch` on the batch with no backward: the attentive score is its negative.
    pub fn score(&mut self, arch: &Arch, s: &StepSettings) -> Result<f64> {
        self.enqueue_score(arch, s, 0)?;
        Ok(-download_scalar(self.b, self.bufs.loss_slot(0)?)?)
    }

    /// Queues the forward and CE of candidate `arch` with its loss left in loss slot `slot` (no read).
    fn enqueue_score(&mut self, arch: &Arch, s: &StepSettings, slot: usize) -> Result<()> {
        let _range = timeline::range("candidate forward");
        let bufs = self.bufs;
        self.arena.reset();
        let tape =
            self.net.forward(self.b, arch, bufs.input, bufs.n, bufs.side, ForwardOptions::train(), self.arena)?;
        let shape = bufs.loss_shape();
        self.b.label_smoothing_ce_fwd(
            &shape,
            s.label_smoothing,
            tape.head.logits,
            bufs.labels,
            bufs.row_loss,
            bufs.loss_slot(slot)?,
        )?;
        Ok(())
    }

    /// Forward + loss + backward of one subnet, its loss left in loss slot `slot` (read once per step,
    /// before the update: [`StepState::read_losses`]). The max subnet trains on the labels and leaves its
    /// logits in `teacher`; the others distil from `teacher`.
    fn train_subnet(
        &mut self,
        role: Role,
        arch: &Arch,
        s: &StepSettings,
        (seed, slot): (u64, usize),
        on_progress: &mut dyn FnMut(BackwardProgress) -> Result<()>,
    ) -> Result<()> {
        let bufs = self.bufs;
        let b = self.b;
        self.arena.reset();
        let mut options = ForwardOptions::train();
        options.seed = seed;
        options.drop_connect_only_last_two_stages = s.drop_connect_only_last_two_stages;
        if role == Role::Max {
            options.dropout = s.dropout;
            options.drop_connect = s.drop_connect;
        }
        let names = RangeNames::of(role);
        let forward = timeline::range(names.forward);
        let tape = self.net.forward(b, arch, bufs.input, bufs.n, bufs.side, options, self.arena)?;
        drop(forward);
        let loss_range = timeline::range(names.loss);
        let logits = tape.head.logits;
        let shape = bufs.loss_shape();
        let loss = bufs.loss_slot(slot)?;
        if role == Role::Max {
            b.label_smoothing_ce_fwd(&shape, s.label_smoothing, logits, bufs.labels, bufs.row_loss, loss)?;
            b.label_smoothing_ce_bwd(&shape, s.label_smoothing, logits, bufs.labels, bufs.dlogits)?;
            b.fill(bufs.teacher, 0.0)?;
            b.add_assign(bufs.teacher, logits)?;
        } else {
            match &s.kd {
                Distillation::Kl => {
                    b.soft_ce_fwd(&shape, logits, bufs.teacher, bufs.row_loss, loss)?;
                    b.soft_ce_bwd(&shape, logits, bufs.teacher, bufs.dlogits)?;
                }
                Distillation::AlphaDivergence(cfg) => {
                    b.alpha_divergence_fwd(&shape, cfg, logits, bufs.teacher, bufs.row_loss, loss)?;
                    b.alpha_divergence_bwd(&shape, cfg, logits, bufs.teacher, bufs.dlogits)?;
                }
            }
        }
        drop(loss_range);
        let _backward = timeline::range(names.backward);
        self.net.backward_observed(b, &tape, bufs.dlogits, self.arena, on_progress)
    }

    /// Reads the step's subnet losses (one device read), checks each is finite and stores it in its
    /// outcome. A non-finite loss stops the step here, before the update touches the weights.
    fn read_losses(&self, subnets: &mut [SubnetOutcome]) -> Result<()> {
        let losses = self.b.download(self.bufs.losses.slice(0, subnets.len())?)?;
        for (sub, &loss) in subnets.iter_mut().zip(&losses) {
            sub.loss = check_finite(sub.role, &sub.arch, loss as f64)?;
        }
        Ok(())
    }

    /// Draws one middle subnet (uniform, or the attentive best/worst of k scored candidates).
    fn draw_middle(
        &mut self,
        (trained, first_slot): (&[SubnetOutcome], usize),
        s: &StepSettings,
        rng: &mut rand::rngs::StdRng,
        times: &mut StepTimes,
        sync: &mut dyn RankSync<B>,
    ) -> Result<SubnetOutcome> {
        let space = &self.net.space;
        let selection = match s.sampling {
            MiddleSampling::Uniform => {
                let arch = sampler::uniform(space, rng);
                let mflops = flops::mflops(space, &arch);
                let blank = SubnetOutcome {
                    role: Role::Sampled,
                    arch,
                    mflops,
                    loss: 0.0,
                    candidates: Vec::new(),
                    chosen: None,
                    target_bin: None,
                    fallbacks: 0,
                };
                return Ok(blank);
            }
            MiddleSampling::Attentive(sel) => sel,
        };
        let sampler =
            self.sampler.as_deref_mut().ok_or_else(|| Error::Other("attentive sampling needs a sampler".into()))?;
        let before = sampler.stats().fallbacks;
        let (bin, drawn) = sampler.sample(s.num_trials, rng);
        let fallbacks = sampler.stats().fallbacks - before;
        let started = Instant::now();
        let scoring = timeline::range("candidate scoring");
        let mut candidates = Vec::with_capacity(drawn.len());
        let by_loss = matches!(s.scorer, CandidateScorer::Loss) && s.num_trials > 1;
        for (j, c) in drawn.into_iter().enumerate() {
            let score = match &s.scorer {
                CandidateScorer::Predictor(p) => p.predict(&c.arch)?,
                CandidateScorer::Loss if by_loss => {
                    self.enqueue_score(&c.arch, s, first_slot + j)?;
                    0.0 // read below, all candidates of the draw at once
                }
                CandidateScorer::Loss => 0.0,
            };
            candidates.push(ScoredCandidate { arch: c.arch, mflops: c.mflops, score, landed: c.landed });
        }
        if by_loss {
            // one read: the subnets trained so far (checked first: a non-finite max loss names the max
            // subnet, not the candidates that distil from nothing) and this draw's candidates
            let losses = self.b.download(self.bufs.losses.slice(0, first_slot + candidates.len())?)?;
            for (i, sub) in trained.iter().enumerate() {
                check_finite(sub.role, &sub.arch, losses[i] as f64)?;
            }
            for (c, &loss) in candidates.iter_mut().zip(&losses[first_slot..]) {
                c.score = -(loss as f64);
            }
        }
        let mut scores: Vec<f64> = candidates.iter().map(|c| c.score).collect();
        if by_loss {
            let _sync = timeline::range("ranks: candidate scores");
            sync.candidate_scores(&mut scores)?;
            for (c, &v) in candidates.iter_mut().zip(&scores) {
                c.score = v;
            }
        }
        drop(scoring);
        times.scoring += started.elapsed().as_secs_f64();
        let chosen = select(selection, &scores)?;
        Ok(SubnetOutcome {
            role: Role::Sampled,
            arch: candidates[chosen].arch.clone(),
            mflops: candidates[chosen].mflops,
            loss: 0.0,
            candidates,
            chosen: Some(chosen),
            target_bin: Some(bin),
            fallbacks,
        })
    }

    /// Runs step `step` (0-based, global) at learning rate `lr` on the uploaded batch.
    pub fn run(&mut self, step: u64, lr: f32, s: &StepSettings) -> Result<StepOutcome> {
        self.run_ranked(step, lr, s, &mut OneRank)
    }

    /// [`StepState::run`] as one of several data-parallel ranks (see [`RankSync`]).
    pub fn run_ranked(
        &mut self,
        step: u64,
        lr: f32,
        s: &StepSettings,
        sync: &mut dyn RankSync<B>,
    ) -> Result<StepOutcome> {
        self.run_ranked_with(step, lr, s, sync, &mut || Ok(()))
    }

    /// [`StepState::run_ranked`], calling `host_work` once the max subnet's forward and backward are
    /// enqueued and before the step's first wait for the device: host work done there (the trainer
    /// stages the next batch, [`StepBuffers::stage_batch`]) runs while the device computes. It must
    /// not touch what the step uses.
    pub fn run_ranked_with(
        &mut self,
        step: u64,
        lr: f32,
        s: &StepSettings,
        sync: &mut dyn RankSync<B>,
        host_work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<StepOutcome> {
        if s.num_arch_training < 2 {
            return Err(Error::usage(format!(
                "num_arch_training must be >= 2 (max and min), got {}",
                s.num_arch_training
            )));
        }
        let _step = timeline::range_n("step", step);
        if s.num_arch_training + s.num_trials > LOSS_SLOTS {
            return Err(Error::usage(format!(
                "num_arch_training + num_trials must be at most {LOSS_SLOTS}, got {} + {}",
                s.num_arch_training, s.num_trials
            )));
        }
        let b = self.b;
        let space = self.net.space.clone();
        let step_seed = layer_seed(s.seed, step);
        let mut rng = rand::rngs::StdRng::seed_from_u64(step_seed);
        let mut times = StepTimes::default();
        let mut subnets = Vec::with_capacity(s.num_arch_training);
        {
            let _zero = timeline::range("zero gradients");
            self.net.zero_grads(b)?;
        }

        let t = Instant::now();
        let max = space.max_arch();
        self.train_subnet(Role::Max, &max, s, (layer_seed(step_seed, 0), 0), &mut |_| Ok(()))?;
        host_work()?;
        subnets.push(SubnetOutcome {
            role: Role::Max,
            mflops: flops::mflops(&space, &max),
            arch: max,
            loss: f64::NAN, // read before the update
            candidates: Vec::new(),
            chosen: None,
            target_bin: None,
            fallbacks: 0,
        });
        times.max = t.elapsed().as_secs_f64();

        for j in 0..s.num_arch_training - 2 {
            let outcome = self.draw_middle((&subnets, s.num_arch_training), s, &mut rng, &mut times, sync)?;
            let t = Instant::now();
            let seed = layer_seed(step_seed, 1 + j as u64);
            self.train_subnet(Role::Sampled, &outcome.arch, s, (seed, 1 + j), &mut |_| Ok(()))?;
            times.sampled += t.elapsed().as_secs_f64();
            subnets.push(outcome);
        }

        let t = Instant::now();
        let min = space.min_arch();
        // the last backward: its progress starts the gradient buckets' all-reduce across ranks
        let seed = layer_seed(step_seed, s.num_arch_training as u64);
        let slot = s.num_arch_training - 1;
        self.train_subnet(Role::Min, &min, s, (seed, slot), &mut |p| sync.gradients_final(b, p))?;
        subnets.push(SubnetOutcome {
            role: Role::Min,
            mflops: flops::mflops(&space, &min),
            arch: min,
            loss: f64::NAN, // read before the update
            candidates: Vec::new(),
            chosen: None,
            target_bin: None,
            fallbacks: 0,
        });
        {
            // the step's one wait for the device outside the draws: on a GPU it also ends the min
            // subnet's queued work, so its time lands in `times.min`
            let _read = timeline::range("read losses");
            self.read_losses(&mut subnets)?;
        }
        times.min = t.elapsed().as_secs_f64();

        let t = Instant::now();
        {
            let _sync = timeline::range("ranks: gradients and checks");
            sync.before_update(b, step, &mut subnets)?;
        }
        let _optimizer = timeline::range("optimizer");
        b.sgd_nesterov_step(&SgdStep { lr, momentum: s.momentum, clip: s.clip }, self.groups)?;
        b.synchronize()?;
        times.optimizer = t.elapsed().as_secs_f64();
        Ok(StepOutcome { subnets, times })
    }
}
