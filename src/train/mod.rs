//! Supernet training: the recipe (`config`, read from the `train:` section of a space file, with
//! `--set` overrides and validation) and the JSON-lines metrics log (`metrics`). The trainer itself
//! builds on these.

pub mod check;
pub mod config;
pub mod metrics;
pub mod overrides;

pub use config::{load_config, load_with_overrides, TrainConfig};
pub use metrics::{read_log, LogLine, MetricsLog};
