//! Training checkpoints (issue: "Checkpoints"): weights as safetensors plus a small JSON state file
//! (optimizer, step, epoch, RNG states, config, data order — defined by the trainer, opaque here),
//! each written atomically (temporary file, fsync, rename), the last N kept, the state carrying a
//! digest of the tensors that every load checks.
//!
//! - [`safetensors_io`]: f32 tensors and string metadata to and from safetensors files; reads also
//!   convert F16/BF16/F64 and list other dtypes apart.
//! - [`store`]: the checkpoint directory (`save`, `latest`, `list`, pruning) and the argument
//!   resolvers: [`resolve_ckpt_arg`] (a complete checkpoint, for `--resume`) and
//!   [`resolve_weights_arg`] (a weights file alone, e.g. an imported PyTorch checkpoint).
//! - [`digest`]: the SHA-256 of a checkpoint's tensors, stored in its state file.
//! - [`intact`]: [`load`] / [`load_checked`] (digest verified) and [`newest_intact`] (the newest
//!   checkpoint that verifies, and the damaged ones skipped on the way).

pub mod digest;
pub mod intact;
pub mod safetensors_io;
pub mod store;

pub use digest::{tensor_digest, DigestCheck, DIGEST_KEY};
pub use intact::{load, load_checked, newest_intact, set_aside, DamagedCheckpoint, IntactSearch, LoadedCheckpoint};
pub use safetensors_io::{
    read_safetensors, read_safetensors_all, serialize_safetensors, write_safetensors, write_safetensors_as,
    SafetensorsContents, SkippedTensor, TensorRecord,
};
pub use store::{resolve_ckpt_arg, resolve_weights_arg, CheckpointStore, SavedCheckpoint};
