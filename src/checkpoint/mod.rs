//! Training checkpoints (issue: "Checkpoints"): weights as safetensors plus a small JSON state file
//! (optimizer, step, epoch, RNG states, config, data order — defined by the trainer, opaque here),
//! each written atomically (temporary file, fsync, rename), the last N kept.
//!
//! - [`safetensors_io`]: f32 tensors and string metadata to and from safetensors files; reads also
//!   convert F16/BF16/F64 and list other dtypes apart.
//! - [`store`]: the checkpoint directory (`save`, `latest`, `list`, pruning), [`load`], and the
//!   argument resolvers: [`resolve_ckpt_arg`] (a complete checkpoint, for `--resume`) and
//!   [`resolve_weights_arg`] (a weights file alone, e.g. an imported PyTorch checkpoint).

pub mod safetensors_io;
pub mod store;

pub use safetensors_io::{
    read_safetensors, read_safetensors_all, write_safetensors, SafetensorsContents, SkippedTensor, TensorRecord,
};
pub use store::{load, resolve_ckpt_arg, resolve_weights_arg, CheckpointStore, SavedCheckpoint};
