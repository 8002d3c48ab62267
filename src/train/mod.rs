//! Supernet training: the recipe (`config`, read from the `train:` section of a space file, with
//! `--set` overrides and validation, `check`, `overrides`), one step of the sandwich rule with attentive
//! sampling (`step`), BN recalibration and evaluation (`validate`), the JSON-lines metrics log
//! (`metrics`), its TensorBoard mirror (`tensorboard`) and the job that ties them together (`trainer`).

pub mod check;
pub mod config;
pub mod metrics;
pub mod overrides;
pub mod step;
pub mod tensorboard;
pub mod trainer;
pub mod validate;

pub use config::{load_config, load_with_overrides, TrainConfig};
pub use metrics::{read_log, LogLine, MetricsLog};
