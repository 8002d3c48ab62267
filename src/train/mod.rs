//! Supernet training: the recipe (`config`, read from the `train:` section of a space file, with
//! `--set` overrides and validation, `check`, `overrides`), one step of the sandwich rule with attentive
//! sampling (`step`), BN recalibration and evaluation (`validate`), the JSON-lines metrics log
//! (`metrics`), its TensorBoard mirror (`tensorboard`), the job that ties them together (`trainer`), its
//! `--init` weights (`init`), the device memory a step needs and the largest batch that fits
//! (`memory_plan`), one subnet's gradient on a given batch for parity checks (`grad`, `attnas
//! grad`), and what lets a run survive a cluster: clean stops on SIGTERM / SIGINT (`stop`), one writer per
//! run folder (`run_lock`) and resuming from the newest intact checkpoint (`run_folder`).

pub mod check;
pub mod config;
pub mod grad;
pub mod init;
pub mod memory_plan;
pub mod metrics;
pub mod overrides;
pub mod run_folder;
pub mod run_lock;
pub mod step;
pub mod stop;
pub mod tensorboard;
pub mod trainer;
pub mod validate;

pub use config::{load_config, load_with_overrides, TrainConfig};
pub use metrics::{read_log, LogLine, MetricsLog};
