//! CUDA failures as typed errors, each with a one-line hint. Nothing in the probe or the launch path
//! panics: cudarc panics when a library or symbol is missing, so every first touch is guarded.

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver library (libcuda.so) found; hint: install the NVIDIA driver, or use --device cpu")]
    NoDriverLibrary,
    #[error("no CUDA device found; hint: check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu")]
    NoDevice,
    #[error("CUDA device {ordinal} does not exist ({count} found); hint: pick cuda:0..cuda:{}", count.saturating_sub(1))]
    BadOrdinal { ordinal: usize, count: usize },
    #[error(
        "CUDA driver too old: it supports CUDA {found}, this build needs {needed}; hint: update the NVIDIA driver"
    )]
    DriverTooOld { found: String, needed: String },
    #[error("CUDA library {lib} does not match this build ({detail}); hint: install CUDA 13.0 libraries or put them first on LD_LIBRARY_PATH")]
    LibraryMismatch { lib: String, detail: String },
    #[error("{lib} not found; hint: {hint}")]
    MissingLibrary { lib: String, hint: String },
    #[error("CUDA driver call failed in {what}: {detail}")]
    Driver { what: String, detail: String },
    #[error("cuBLAS call failed in {what}: {detail}")]
    Cublas { what: String, detail: String },
    #[error("kernel module '{module}' could not be loaded: {detail}")]
    ModuleLoad { module: String, detail: String },
    #[error("NVRTC failed to compile '{module}':\n{log}")]
    Nvrtc { module: String, log: String },
    #[error(
        "out of GPU memory: asked for {bytes} bytes ({what}); {free} of {total} bytes free; hint: lower the batch size"
    )]
    OutOfMemory { what: String, bytes: usize, free: usize, total: usize },
    #[error("launch of {kernel}: {detail}")]
    Launch { kernel: String, detail: String },
}

impl CudaError {
    pub fn driver(what: &str, e: impl std::fmt::Debug) -> Self {
        CudaError::Driver { what: what.to_string(), detail: format!("{e:?}") }
    }
}

/// Runs `f`, turning a cudarc panic (missing library or symbol) into an error.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            let first = msg.lines().next().unwrap_or("").to_string();
            if first.contains("Missing symbol") {
                Err(CudaError::LibraryMismatch { lib: what.to_string(), detail: first })
            } else {
                Err(CudaError::MissingLibrary { lib: what.to_string(), hint: first })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_cudarc_panics_into_typed_errors() {
        let missing_symbol =
            guard::<()>("libnvrtc", || panic!("Missing symbol nvrtcGetBundledHeadersInfo: dlsym failed"));
        assert!(matches!(missing_symbol, Err(CudaError::LibraryMismatch { .. })), "{missing_symbol:?}");
        let no_lib = guard::<()>("libcuda", || panic!("Unable to dynamically load the \"cuda\" shared library"));
        match no_lib {
            Err(CudaError::MissingLibrary { lib, hint }) => {
                assert_eq!(lib, "libcuda");
                assert!(hint.contains("Unable to dynamically load"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(guard("x", || Ok(7)).ok(), Some(7));
    }

    #[test]
    fn errors_carry_a_hint() {
        for e in [
            CudaError::NoDriverLibrary,
            CudaError::NoDevice,
            CudaError::DriverTooOld { found: "12.4".into(), needed: "13.0".into() },
            CudaError::OutOfMemory { what: "activations".into(), bytes: 1 << 30, free: 1 << 20, total: 1 << 34 },
        ] {
            let text = e.to_string();
            assert!(text.contains("hint:"), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
    }
}
