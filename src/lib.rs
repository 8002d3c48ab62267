//! attnas: AttentiveNAS supernet training and search on hand-written CUDA kernels.
//!
//! Layers, top to bottom (nothing reaches upward): the CLI (`src/main.rs`, `cli`), the jobs, `nn`
//! (the supernet, generic over [`backend::Backend`]), `backend` (CPU reference and CUDA), `space`
//! (search space, FLOPs, samplers) and `data`. See DESIGN.md in the shared folder.

pub mod backend;
pub mod build_info;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod deploy;
pub mod dist;
pub mod error;
pub mod eval;
pub mod nn;
pub mod predictor;
pub mod report;
pub mod search;
pub mod space;
pub mod tensorboard;
pub mod testing;
pub mod timeline;
pub mod train;
pub mod util;

pub use error::{Error, Result};
