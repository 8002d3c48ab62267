//! The crate's error type. Every variant names what is at fault (file, field, shape, device) and, where
//! there is one, the fix. The CLI maps `Usage` and `Input` to exit code 2 and everything else to 1.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line or configuration input: exit code 2.
    #[error("{0}")]
    Usage(String),

    /// Bad input data in a named file (line is 1-based, 0 when unknown): exit code 2.
    #[error("{}{}: {msg}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Input { path: PathBuf, line: usize, msg: String },

    /// Two shapes that must agree do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape { what: String, expected: String, got: String },

    /// CUDA is unavailable or failed; the hint says what to do about it.
    #[error("{0}")]
    Cuda(#[from] crate::backend::cuda::CudaError),

    /// A kernel run on the SIMT emulator failed (bounds, barrier, ...).
    #[error("emulated kernel {kernel}: {msg}")]
    Emulator { kernel: String, msg: String },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{0}")]
    Other(String),

    /// A process this one waited for (a data-parallel worker) failed: exit with its code.
    #[error("{msg}")]
    Exit { code: i32, msg: String },
}

impl Error {
    /// The process exit code the CLI uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Input { .. } => 2,
            Error::Exit { code, .. } => *code,
            _ => 1,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn input(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Input { path: path.into(), line, msg: msg.into() }
    }

    pub fn shape(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::Shape { what: what.into(), expected: expected.to_string(), got: got.to_string() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
