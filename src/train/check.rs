//! Validation of a training config against its space, after the `--set` overrides: every rule names the
//! key as written in the file (`train.sampler.num_trials must be >= 1, got 0`) so the fix is obvious.
//! All problems are reported at once, one per line, as a usage error (exit code 2).

use crate::error::{Error, Result};
use crate::space::attentive::flops_bin;
use crate::space::config::Space;
use crate::space::flops;
use crate::train::config::{SamplerMethod, Scorer, TrainConfig};

/// Collects the problems found, each naming its key.
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, msg: String) {
        self.0.push(msg);
    }

    /// `key` must be >= `min`.
    fn at_least(&mut self, key: &str, got: u64, min: u64) {
        if got < min {
            self.push(format!("train.{key} must be >= {min}, got {got}"));
        }
    }

    /// An optional count must be >= 1 when given.
    fn positive_opt(&mut self, key: &str, got: Option<u64>) {
        if got == Some(0) {
            self.push(format!("train.{key} must be >= 1 or null, got 0"));
        }
    }

    /// A rate: finite and in [0, 1).
    fn rate(&mut self, key: &str, got: f64) {
        if !(got.is_finite() && (0.0..1.0).contains(&got)) {
            self.push(format!("train.{key} must be in [0, 1), got {got}"));
        }
    }

    /// Finite and > 0.
    fn positive(&mut self, key: &str, got: f64) {
        if !(got.is_finite() && got > 0.0) {
            self.push(format!("train.{key} must be a finite number > 0, got {got}"));
        }
    }

    /// Finite and >= 0.
    fn non_negative(&mut self, key: &str, got: f64) {
        if !(got.is_finite() && got >= 0.0) {
            self.push(format!("train.{key} must be a finite number >= 0, got {got}"));
        }
    }

    /// An ordered open interval [lo, hi] with lo < hi inside (`min`, `max`].
    fn range(&mut self, key: &str, got: [f64; 2], min: f64, max: f64) {
        let [lo, hi] = got;
        let ok = lo.is_finite() && hi.is_finite() && lo > min && lo < hi && hi <= max;
        if !ok {
            let bound = if max.is_finite() { format!("{min} < lo < hi <= {max}") } else { format!("{min} < lo < hi") };
            self.push(format!("train.{key} must be [lo, hi] with {bound}, got [{lo}, {hi}]"));
        }
    }
}

impl TrainConfig {
    /// Check every value (sizes positive, rates in [0, 1), ranges ordered, warmup inside the epochs, the
    /// sandwich has its max and min, ...) and the space-dependent rules: the loader delivers RGB, so the
    /// space needs 3 input channels; attentive sampling needs the FLOPs bins to split the space's range.
    /// Paths (`sampler.table`, `data.eval_split`) are checked by whoever opens them.
    pub fn check(&self, space: &Space) -> Result<()> {
        let mut p = Problems(Vec::new());
        p.at_least("epochs", self.epochs as u64, 1);
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            p.push(format!(
                "train.warmup_epochs must be in [0, epochs = {}] (the warmup lies inside the epochs), got {}",
                self.epochs, self.warmup_epochs
            ));
        }
        p.at_least("batch_size", self.batch_size as u64, 1);
        if let Some(lr) = self.base_lr {
            p.positive("base_lr", lr);
        }
        p.rate("momentum", self.momentum);
        p.non_negative("weight_decay", self.weight_decay);
        if self.no_decay_keywords.iter().any(|k| k.is_empty()) {
            p.push("train.no_decay_keywords must not hold an empty string (it would match every parameter)".into());
        }
        if let Some(v) = self.grad_clip_value {
            p.positive("grad_clip_value", v);
        }
        p.rate("label_smoothing", self.label_smoothing);
        p.positive_opt("max_steps", self.max_steps);
        p.positive_opt("schedule_steps", self.schedule_steps);

        let s = &self.sandwich;
        p.at_least("sandwich.num_arch_training", s.num_arch_training as u64, 2);
        p.rate("sandwich.dropout", s.dropout);
        p.rate("sandwich.drop_connect", s.drop_connect);
        let kd = &self.kd;
        for (key, alpha) in [("kd.alpha_min", kd.alpha_min), ("kd.alpha_max", kd.alpha_max)] {
            if !(alpha.is_finite() && alpha.abs() <= 1000.0) {
                p.push(format!(
                    "train.{key} must be a finite alpha in [-1000, 1000] (AlphaNet: -1 and 1), got {alpha}"
                ));
            }
        }
        p.positive("kd.iw_clip", kd.iw_clip);

        let sm = &self.sampler;
        p.at_least("sampler.num_trials", sm.num_trials as u64, 1);
        p.positive("sampler.discretize_step", sm.discretize_step);
        p.at_least("sampler.table_samples", sm.table_samples as u64, 2);
        if sm.scorer == Scorer::Predictor && sm.method != SamplerMethod::Uniform && sm.predictor.is_none() {
            p.push(
                "train.sampler.scorer = predictor needs train.sampler.predictor: PATH (a predictor from `attnas \
                 predictor fit`), or use scorer: loss"
                    .into(),
            );
        }
        if sm.method != SamplerMethod::Uniform && sm.discretize_step.is_finite() && sm.discretize_step > 0.0 {
            let lo = flops::mflops(space, &space.min_arch());
            let hi = flops::mflops(space, &space.max_arch());
            if flops_bin(lo, sm.discretize_step) == flops_bin(hi, sm.discretize_step) {
                p.push(format!(
                    "train.sampler.discretize_step = {} MFLOPs puts all of space '{}' ({lo:.2} to {hi:.2} MFLOPs) in \
                     one bin, so attentive sampling has no FLOPs target to choose; use a step of about {:.3}",
                    sm.discretize_step,
                    space.name,
                    (hi - lo) / 20.0
                ));
            }
        }

        let d = &self.data;
        p.at_least("data.crop", d.crop as u64, 1);
        p.range("data.random_crop_scale", d.random_crop_scale, 0.0, 1.0);
        p.range("data.random_crop_ratio", d.random_crop_ratio, 0.0, f64::INFINITY);
        if !(d.eval_crop_fraction > 0.0 && d.eval_crop_fraction <= 1.0) {
            p.push(format!(
                "train.data.eval_crop_fraction must be in (0, 1] (0.875: resize to crop / 0.875 and centre-crop; 1: \
                 the whole image), got {}",
                d.eval_crop_fraction
            ));
        }
        p.at_least("data.prefetch", d.prefetch as u64, 1);
        if d.eval_split.is_none() && d.holdout == 0 {
            p.push(
                "train.data.holdout must be >= 1 when train.data.eval_split is null (validation images are \
                    held out of the training split), got 0"
                    .into(),
            );
        }

        p.positive("dist.bucket_mb", self.dist.bucket_mb);
        p.at_least("bn_calib.batches", self.bn_calib.batches as u64, 1);
        p.at_least("bn_calib.batch_size", self.bn_calib.batch_size as u64, 1);
        p.at_least("bn_calib.eval_batch_size", self.bn_calib.eval_batch_size as u64, 1);
        p.positive_opt("checkpoint.every_steps", self.checkpoint.every_steps);
        p.at_least("checkpoint.keep", self.checkpoint.keep as u64, 1);
        p.at_least("log.every_steps", self.log.every_steps, 1);

        if space.in_channels != 3 {
            p.push(format!(
                "space '{}' has in_channels: {}, but the loader delivers RGB (grey images are replicated to 3 \
                 channels); set in_channels: 3",
                space.name, space.in_channels
            ));
        }

        if p.0.is_empty() {
            Ok(())
        } else {
            Err(Error::usage(p.0.join("\n")))
        }
    }
}
