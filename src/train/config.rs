//! The training recipe: the `train:` section of a space file (`configs/attentivenas.yaml`), its defaults
//! and how it maps onto the loader.
//!
//! One YAML file holds both the search space and the recipe, so a run is described by one file (plus
//! `--set key=value` overrides, `train::overrides`). Every key has the AttentiveNAS default of spec
//! sections 3 and 4 (`configs/train_attentive_nas_models.yml`), so a file without `train:` trains with the
//! published recipe; unknown keys are errors, so a typo cannot silently fall back to a default.
//! Validation against the space is in `train::check`; the effective config is serialisable so the trainer
//! can store it in checkpoints and the metrics log.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::ops::optimizer::scaled_base_lr;
use crate::backend::Precision;
use crate::data::augment::{RandomCropParams, TransformConfig};
use crate::data::loader::LoaderConfig;
use crate::error::{Error, Result};
use crate::space::attentive::{Prior, Selection};
use crate::space::config::Space;
use crate::space::table::TableMethod;

/// The whole recipe. Top-level keys are the optimizer and schedule (spec 3.1); the sections group the
/// rest. Field comments give the spec section of each default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Seeds the architecture draws, the data order and the weight init (spec 3.1: 0 on every rank).
    pub seed: u64,
    /// Total epochs, warmup included (spec 3.1: 360).
    pub epochs: usize,
    /// Linear warmup length in epochs, inside `epochs` (spec 3.1: 5). Fractions are allowed.
    pub warmup_epochs: f64,
    /// Images per step on this device (spec 3.1: 32 per GPU). BN statistics come from this batch (3.3).
    pub batch_size: usize,
    /// `None`: the linear scaling rule 0.1 * max(1, floor(global_batch / 256)) (spec 3.1); a number overrides.
    pub base_lr: Option<f64>,
    /// SGD momentum (spec 3.1: 0.9).
    pub momentum: f64,
    /// Nesterov momentum, PyTorch form (spec 3.1: true).
    pub nesterov: bool,
    /// Coupled L2 weight decay on conv and linear weights (spec 3.1: 1e-5).
    pub weight_decay: f64,
    /// Parameters whose name contains one of these get no weight decay (spec 3.1: `.bn`, `.bias`).
    pub no_decay_keywords: Vec<String>,
    /// Element-wise gradient clip to [-v, v] on the gradient summed over the sandwich (spec 3.1: 1.0);
    /// `None` turns clipping off.
    pub grad_clip_value: Option<f64>,
    /// Label smoothing of the max subnet's CE and of the candidate scores (spec 3.2: 0.1).
    pub label_smoothing: f64,
    /// Stop after this many optimizer steps (short runs); the LR schedule still spans `epochs` unless
    /// `schedule_steps` is set.
    pub max_steps: Option<u64>,
    /// Length of the LR schedule in steps, replacing `epochs` x steps per epoch; warmup keeps its
    /// fraction of the schedule (see [`TrainConfig::schedule_iters`]).
    pub schedule_steps: Option<u64>,
    pub sandwich: SandwichConfig,
    /// The distillation loss of the sampled and min subnets (spec 3.2; AlphaNet's alpha-divergence).
    pub kd: KdConfig,
    pub sampler: SamplerConfig,
    pub data: DataConfig,
    pub bn_calib: BnCalibConfig,
    pub checkpoint: CheckpointConfig,
    pub log: LogConfig,
    pub dist: DistConfig,
    /// Storage of the activations and of the 1x1 convs' weight copies (issue #13): `auto` (bf16 on a GPU
    /// of compute capability 8.0 or newer, else fp32), `fp32` (today's numerics bit for bit) or `bf16`
    /// (on the CPU: the bf16 reference mode). Master weights, gradients, BN statistics, losses and the
    /// optimizer stay f32. A run may resume in another precision.
    pub precision: Precision,
}

/// The sandwich rule and in-place distillation (spec 3.2, 3.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandwichConfig {
    /// Subnets per step: the max, `n - 2` sampled, the min (spec 3.2: 4).
    pub num_arch_training: usize,
    /// Dropout before the classifier, max subnet only (spec 3.4: 0.2).
    pub dropout: f64,
    /// Drop-connect base rate, scaled by block index / total blocks, max subnet only (spec 3.4: 0.2).
    pub drop_connect: f64,
    /// Drop-connect only in the last two stages (spec 3.4: true).
    pub drop_connect_only_last_two_stages: bool,
    /// Which subnet teaches (spec 3.2: the max subnet).
    pub teacher: Teacher,
}

/// In-place distillation: the loss of every subnet but the max against the teacher's logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdConfig {
    /// `kl` (AttentiveNAS, spec 3.2) or `alpha_divergence` (AlphaNet).
    pub loss: KdLoss,
    /// `alpha_divergence`: the two alphas whose larger divergence is trained on (AlphaNet: -1 and 1).
    pub alpha_min: f64,
    pub alpha_max: f64,
    /// `alpha_divergence`: clip of the importance weights (p / q)^alpha (AlphaNet: 5).
    pub iw_clip: f64,
}

/// The in-place distillation loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KdLoss {
    /// -sum softmax(T) * log_softmax(z), temperature 1, no ground-truth term (AttentiveNAS `KLLossSoft`:
    /// the soft CE, whose gradient is KL's). `soft_ce` is accepted as its old name.
    #[serde(alias = "soft_ce")]
    Kl,
    /// AlphaNet's adaptive alpha-divergence (`AdaptiveLossSoft`): per image, the larger of the alpha_min-
    /// and alpha_max-divergences between teacher and student, importance weights clipped at `iw_clip`.
    AlphaDivergence,
}

impl KdConfig {
    /// The loss as the training step runs it.
    pub fn distillation(&self) -> crate::train::step::Distillation {
        use crate::train::step::Distillation;
        match self.loss {
            KdLoss::Kl => Distillation::Kl,
            KdLoss::AlphaDivergence => Distillation::AlphaDivergence(crate::backend::ops::loss::AlphaDivergence {
                alpha_min: self.alpha_min as f32,
                alpha_max: self.alpha_max as f32,
                iw_clip: self.iw_clip as f32,
            }),
        }
    }
}

impl Default for KdConfig {
    /// AttentiveNAS's KL; the alpha keys take AlphaNet's `train_alphanet_models.yml` values.
    fn default() -> Self {
        KdConfig { loss: KdLoss::Kl, alpha_min: -1.0, alpha_max: 1.0, iw_clip: 5.0 }
    }
}

/// The teacher of in-place distillation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Teacher {
    /// The max subnet's logits, from its dropout-active forward.
    Max,
}

/// How the middle subnets of the sandwich are drawn (spec 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// `bestup` / `worstup` (attentive, spec 4.3) or `uniform` (every gene uniform, spec 3.2).
    pub method: SamplerMethod,
    /// Candidates per draw, k of BestUp-k (spec 4.3: 3).
    pub num_trials: usize,
    /// FLOPs bin width in MFLOPs (spec 4.2: 25).
    pub discretize_step: f64,
    /// How candidates are scored: the current minibatch loss (spec 4.3) or an accuracy predictor.
    pub scorer: Scorer,
    /// The accuracy predictor file (`attnas predictor fit`) used when `scorer` is `predictor`.
    pub predictor: Option<PathBuf>,
    /// Prior over target bins: `empirical` (bin frequency, spec 4.2) or `uniform` over the bins present.
    pub prior: Prior,
    /// A FLOPs table (`.map`); `None`: generate one at start-up with `table_samples` / `table_method`.
    pub table: Option<PathBuf>,
    /// Entries of a generated table.
    pub table_samples: usize,
    /// How a generated table draws archs: `uniform` or `balanced` (see `space::table`).
    pub table_method: TableMethod,
    /// Data-parallel ranks: choose among the candidates on their loss averaged over all ranks (the global
    /// batch), so every rank trains the same subnet. `false` reproduces the original, where each GPU
    /// chooses on its own 32 images and the ranks may train different subnets (spec 4.4). No effect on
    /// one device.
    pub global_scores: bool,
    /// What the target bins measure: `flops` (MFLOPs, spec 4.2) or `latency` (ms predicted by
    /// `latency_table`; `discretize_step` is then in ms).
    pub cost: SamplerCost,
    /// The latency table (`attnas latency-table`) for `cost: latency`.
    pub latency_table: Option<PathBuf>,
}

/// The cost the attentive sampler bins its targets by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerCost {
    Flops,
    Latency,
}

/// The middle-subnet sampling method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerMethod {
    /// Train the best-scoring candidate (AttentiveNAS's released models: BestUp-3).
    BestUp,
    /// Train the worst-scoring candidate.
    WorstUp,
    /// No attentive sampling: every gene uniform and independent.
    Uniform,
}

impl SamplerMethod {
    /// The attentive selection rule, `None` for uniform sampling.
    pub fn selection(self) -> Option<Selection> {
        match self {
            SamplerMethod::BestUp => Some(Selection::BestUp),
            SamplerMethod::WorstUp => Some(Selection::WorstUp),
            SamplerMethod::Uniform => None,
        }
    }
}

/// How attentive candidates are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scorer {
    /// Minus the label-smoothed CE on the current minibatch, no grad, train-mode BN (spec 4.3).
    Loss,
    /// The predicted top-1 of an accuracy predictor (spec 4.5; `sampler.predictor`): no forwards, but the
    /// maintainers found the minibatch loss better (spec 4.3).
    Predictor,
}

/// What the loader delivers (spec 3.5) and where validation images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Side of the square images the loader delivers; the model resizes them to each subnet's
    /// resolution (spec 3.5: 224).
    pub crop: u32,
    /// RandomResizedCrop area fraction [lo, hi] (spec 3.5: [0.08, 1]).
    pub random_crop_scale: [f64; 2],
    /// RandomResizedCrop aspect ratio [lo, hi] (spec 3.5: [3/4, 4/3]).
    pub random_crop_ratio: [f64; 2],
    /// Horizontal flip with p = 0.5 (spec 3.5).
    pub flip: bool,
    /// AutoAugment v0 (spec 3.5).
    pub autoaugment: bool,
    /// Evaluation transform: resize the short side to crop / this, then centre-crop `crop` (spec 5.2:
    /// 0.875, 256 -> 224; timm's `crop_pct`). 1.0 evaluates the whole image, for images already at `crop`.
    pub eval_crop_fraction: f64,
    /// Decode threads; 0 = one per core.
    pub threads: usize,
    /// Batches decoded ahead of the trainer.
    pub prefetch: usize,
    /// A packed evaluation split; `None`: the trainer holds `holdout` images out of the training split.
    pub eval_split: Option<PathBuf>,
    /// Images held out of the training split for validation when there is no `eval_split`.
    pub holdout: usize,
}

/// BN recalibration and per-epoch validation (spec 3.6, 5.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BnCalibConfig {
    /// Training batches forwarded to recalibrate BN before each validation (spec 3.6: 64).
    pub batches: usize,
    /// Images per calibration batch (spec 3.6: 32 per GPU).
    pub batch_size: usize,
    /// Images per validation batch (spec 3.6: 16 per GPU).
    pub eval_batch_size: usize,
    /// Cap on the held-out images of each validation (`null` = all of them).
    pub eval_images: Option<usize>,
}

/// When checkpoints are written and how many are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Every this many epochs (spec 3.6: every epoch); 0 = not at epoch ends.
    pub every_epochs: usize,
    /// Also every this many steps; `None` = only at epoch ends.
    pub every_steps: Option<u64>,
    /// Checkpoints kept on disk; older ones are deleted.
    pub keep: usize,
}

/// Data-parallel training (ranks: `--gpus`, `--ranks`, torchrun, srun; see docs/distributed.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistConfig {
    /// Gradient bucket size in MiB: each bucket's all-reduce starts as soon as the last backward has
    /// produced it (PyTorch DDP's `bucket_cap_mb`: 25). Does not change the result.
    pub bucket_mb: f64,
}

/// The metrics log, its TensorBoard copy and the terminal progress display.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A step line in the metrics log every this many steps.
    pub every_steps: u64,
    /// Show a progress bar.
    pub progress: bool,
    /// Also write the log as TensorBoard event files in `OUT/tb/` (rank 0; see `train::tensorboard`).
    pub tensorboard: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            epochs: 360,
            warmup_epochs: 5.0,
            batch_size: 32,
            base_lr: None,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1.0e-5,
            no_decay_keywords: vec![".bn".to_string(), ".bias".to_string()],
            grad_clip_value: Some(1.0),
            label_smoothing: 0.1,
            max_steps: None,
            schedule_steps: None,
            sandwich: SandwichConfig::default(),
            kd: KdConfig::default(),
            sampler: SamplerConfig::default(),
            data: DataConfig::default(),
            bn_calib: BnCalibConfig::default(),
            checkpoint: CheckpointConfig::default(),
            log: LogConfig::default(),
            dist: DistConfig::default(),
            precision: Precision::Auto,
        }
    }
}

impl Default for SandwichConfig {
    fn default() -> Self {
        SandwichConfig {
            num_arch_training: 4,
            dropout: 0.2,
            drop_connect: 0.2,
            drop_connect_only_last_two_stages: true,
            teacher: Teacher::Max,
        }
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            method: SamplerMethod::BestUp,
            num_trials: 3,
            discretize_step: 25.0,
            scorer: Scorer::Loss,
            predictor: None,
            prior: Prior::Empirical,
            table: None,
            table_samples: 20_000,
            table_method: TableMethod::Uniform,
            cost: SamplerCost::Flops,
            latency_table: None,
            global_scores: true,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        let crop = RandomCropParams::default();
        DataConfig {
            crop: 224,
            random_crop_scale: [crop.scale.0, crop.scale.1],
            random_crop_ratio: [crop.ratio.0, crop.ratio.1],
            flip: true,
            autoaugment: true,
            eval_crop_fraction: crate::data::augment::EVAL_CROP_FRACTION,
            threads: 0,
            prefetch: 3,
            eval_split: None,
            holdout: 10_000,
        }
    }
}

impl Default for BnCalibConfig {
    fn default() -> Self {
        BnCalibConfig { batches: 64, batch_size: 32, eval_batch_size: 16, eval_images: None }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { every_epochs: 1, every_steps: None, keep: 3 }
    }
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig { bucket_mb: crate::dist::buckets::DEFAULT_BUCKET_MB }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { every_steps: 1, progress: true, tensorboard: true }
    }
}

impl DataConfig {
    /// The training transform: RandomResizedCrop with this config's scale and ratio, flip, AutoAugment.
    pub fn train_transform(&self) -> TransformConfig {
        TransformConfig {
            random_crop: RandomCropParams {
                scale: (self.random_crop_scale[0], self.random_crop_scale[1]),
                ratio: (self.random_crop_ratio[0], self.random_crop_ratio[1]),
            },
            flip: self.flip,
            autoaugment: self.autoaugment,
            ..TransformConfig::train(self.crop)
        }
    }

    /// The evaluation transform: resize the short side to crop / `eval_crop_fraction`, centre crop (spec 5.2).
    pub fn eval_transform(&self) -> TransformConfig {
        TransformConfig { eval_crop_fraction: self.eval_crop_fraction, ..TransformConfig::eval(self.crop) }
    }

    /// A shuffled, drop-last loader of training batches with the training transform.
    pub fn loader_config(&self, batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            transform: self.train_transform(),
            prefetch: self.prefetch,
            threads: self.threads,
            ..LoaderConfig::train(batch_size, self.crop, seed)
        }
    }

    /// An in-order loader of every image with the evaluation transform.
    pub fn eval_loader_config(&self, batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            prefetch: self.prefetch,
            threads: self.threads,
            transform: self.eval_transform(),
            ..LoaderConfig::eval(batch_size, self.crop)
        }
    }
}

impl TrainConfig {
    /// The training loader: `batch_size` images per step, seeded with `seed`.
    pub fn train_loader_config(&self) -> LoaderConfig {
        self.data.loader_config(self.batch_size, self.seed)
    }

    /// The BN calibration loader: training batches with training augmentation (spec 5.1).
    pub fn calib_loader_config(&self) -> LoaderConfig {
        self.data.loader_config(self.bn_calib.batch_size, self.seed)
    }

    /// The validation loader: evaluation transform, `bn_calib.eval_batch_size` images per batch.
    pub fn eval_loader_config(&self) -> LoaderConfig {
        self.data.eval_loader_config(self.bn_calib.eval_batch_size)
    }

    /// The base LR for `world` devices: `base_lr` if given, else the linear scaling rule on the global
    /// batch `batch_size * world` (0.8 for 64 x 32, spec 3.1).
    pub fn effective_base_lr(&self, world: usize) -> f64 {
        self.base_lr.unwrap_or_else(|| scaled_base_lr(self.batch_size * world.max(1)))
    }

    /// The weight decay of a named parameter: 0 when the name contains a `no_decay_keywords` entry.
    pub fn weight_decay_for(&self, param_name: &str) -> f64 {
        if self.no_decay_keywords.iter().any(|k| param_name.contains(k.as_str())) {
            0.0
        } else {
            self.weight_decay
        }
    }

    /// (warmup iterations, total iterations) of the LR schedule. Without `schedule_steps` the total is
    /// `epochs * steps_per_epoch` and the warmup `warmup_epochs * steps_per_epoch` (rounded); with it,
    /// the total is `schedule_steps` and the warmup keeps its fraction `warmup_epochs / epochs`.
    pub fn schedule_iters(&self, steps_per_epoch: u64) -> (u64, u64) {
        let fraction = if self.epochs == 0 { 0.0 } else { self.warmup_epochs / self.epochs as f64 };
        match self.schedule_steps {
            Some(total) => (((total as f64) * fraction).round() as u64, total),
            None => {
                let warmup = (self.warmup_epochs * steps_per_epoch as f64).round() as u64;
                (warmup, self.epochs as u64 * steps_per_epoch)
            }
        }
    }

    /// The number of optimizer steps the run takes: `epochs * steps_per_epoch`, capped by `max_steps`.
    pub fn total_steps(&self, steps_per_epoch: u64) -> u64 {
        let full = self.epochs as u64 * steps_per_epoch;
        self.max_steps.map_or(full, |cap| cap.min(full))
    }

    /// The effective config as JSON (for checkpoints and the metrics log).
    pub fn to_value(&self) -> serde_json::Value {
        // A struct of plain fields always serialises; NaN would become null (and `check` rejects it).
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The effective config as a YAML `train:` section body (for `--print-config` style output).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// Parse a config from JSON (as stored by [`TrainConfig::to_value`] in a checkpoint). Configs stored
    /// before the `kd` section held the loss as `sandwich.kd: soft_ce`; it is moved to `kd.loss`.
    pub fn from_value(mut value: serde_json::Value) -> Result<TrainConfig> {
        let old = value.get_mut("sandwich").and_then(|s| s.as_object_mut()).and_then(|s| s.remove("kd"));
        if let (Some(loss), Some(root)) = (old, value.as_object_mut()) {
            root.entry("kd").or_insert_with(|| serde_json::json!({ "loss": loss }));
        }
        serde_json::from_value(value).map_err(|e| Error::usage(format!("stored training config: {e}")))
    }
}

/// Only the `train:` key of a space file; the space's keys are read by `Space::from_yaml`.
#[derive(Deserialize)]
struct TrainSection {
    #[serde(default)]
    train: Option<TrainConfig>,
}

/// Parse a space file's two halves: the space (validated) and the `train:` section (all defaults when
/// absent or empty). The training config is not validated here: apply `--set` overrides first, then
/// call [`TrainConfig::check`]. `origin` names the source in errors.
pub fn from_yaml(text: &str, origin: &str) -> Result<(Space, TrainConfig)> {
    let space = Space::from_yaml(text, origin)?;
    let section: TrainSection = serde_yaml_ng::from_str(text).map_err(|e| Error::input(origin, 0, e.to_string()))?;
    Ok((space, section.train.unwrap_or_default()))
}

/// Read a space file with its `train:` section (see [`from_yaml`]).
pub fn load_config(path: &Path) -> Result<(Space, TrainConfig)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    from_yaml(&text, &path.display().to_string())
}

/// What `attnas train` does with its arguments: read the file, apply the `--set key=value` overrides in
/// order, validate against the space.
pub fn load_with_overrides(path: &Path, sets: &[String]) -> Result<(Space, TrainConfig)> {
    let (space, mut cfg) = load_config(path)?;
    cfg.apply_sets(sets)?;
    cfg.check(&space)?;
    Ok((space, cfg))
}
