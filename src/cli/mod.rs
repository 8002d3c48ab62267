//! The subcommands' argument structs and bodies; `src/main.rs` parses and dispatches.

pub mod bench_allreduce;
pub mod bench_cmd;
pub mod data_cmds;
pub mod device;
pub mod eval_cmd;
pub mod export_cmd;
pub mod grad_cmd;
pub mod info;
pub mod latency_cmd;
pub mod params_cmd;
pub mod predictor_cmd;
pub mod report_cmd;
pub mod search_cmd;
pub mod space_cmds;
pub mod train_cmd;
