//! The data pipeline: `attnas prepare` writes a packed, memory-mappable dataset ([`format`], [`prepare`]);
//! [`reader`] maps and validates it; [`decode`] turns a record into RGB pixels; [`augment`] and
//! [`autoaugment`] implement the AttentiveNAS training and evaluation transforms (spec 3.5, 5.2);
//! [`loader`] shuffles per epoch and rank, decodes on a thread pool and prefetches uint8 NHWC batches.

pub mod augment;
pub mod autoaugment;
pub mod decode;
pub mod devkit;
pub mod format;
pub mod idx;
pub mod loader;
pub mod matfile;
pub mod prepare;
pub mod reader;
pub mod rng;

pub use reader::{PackedDataset, Record};

use std::path::{Path, PathBuf};

/// The shared real-data folder (`<repo>/../shared/data`; also found from a worktree one or two levels
/// deeper), or `None` when absent. `ATTNAS_SHARED_DATA` overrides the search.
pub fn shared_data_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ATTNAS_SHARED_DATA") {
        return Some(PathBuf::from(p)).filter(|p| p.is_dir());
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .take(3)
        .map(|a| a.join("shared/data"))
        .find(|p| p.is_dir())
}

/// The packed training file a `--data` argument names: the file itself, or `train.pack` in a folder that
/// `attnas prepare` wrote. Errors (usage) say how to make one.
pub fn train_pack_of(data: &Path) -> crate::error::Result<PathBuf> {
    let train = if data.is_dir() { data.join("train.pack") } else { data.to_path_buf() };
    if !train.is_file() {
        return Err(crate::error::Error::usage(format!(
            "--data {}: no packed training file there (give a .pack file or a folder with train.pack; make one with \
             `attnas prepare`)",
            data.display()
        )));
    }
    Ok(train)
}

/// Where Debian's `dataset-fashion-mnist` puts its IDX files, when installed.
pub fn fashion_mnist_dir() -> Option<PathBuf> {
    Some(PathBuf::from("/usr/share/datasets/fashion-mnist")).filter(|p| p.join("train-labels-idx1-ubyte.gz").is_file())
}
