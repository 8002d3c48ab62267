//! NVRTC at run time (the fallback when a binary carries no cubin or PTX for the device) and in tests
//! (`tests/kernels_compile.rs` compiles every kernel for sm_90a on machines without a GPU).
//!
//! cudarc's safe NVRTC API returns PTX only, so this calls `nvrtc::sys` directly to get a cubin and the
//! ptxas report. Library lookup: if `NVRTC_LIB` names a libnvrtc, it is loaded by absolute path first,
//! with `libnvrtc-builtins.so.13.0` from the same folder (the 13.0.88 wheel's libnvrtc lacks an
//! `$ORIGIN` RUNPATH); cudarc's later dlopen by SONAME then resolves to it.

use super::error::{guard, CudaError};
use std::ffi::{c_char, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

/// What to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// PTX for a virtual arch, e.g. `compute_90`.
    Ptx(&'a str),
    /// A cubin (SASS) for a real arch, e.g. `sm_90a`, with `-v` ptxas output in the log.
    Cubin(&'a str),
}

pub struct Compiled {
    pub image: Vec<u8>,
    pub log: String,
}

static PRELOAD: OnceLock<Result<(), String>> = OnceLock::new();

fn preload() -> Result<(), String> {
    PRELOAD
        .get_or_init(|| {
            let Ok(lib) = std::env::var("NVRTC_LIB") else { return Ok(()) };
            let lib = PathBuf::from(lib);
            let dir = lib.parent().map(PathBuf::from).unwrap_or_default();
            for path in [lib.clone(), dir.join("libnvrtc-builtins.so.13.0")] {
                if !path.exists() {
                    continue;
                }
                // SAFETY: loading a vendor library by path; its initialisers are plain C. The handle is
                // leaked on purpose so the library stays loaded for cudarc's later dlopen by SONAME.
                match unsafe { libloading::Library::new(&path) } {
                    Ok(l) => std::mem::forget(l),
                    Err(e) => return Err(format!("NVRTC_LIB: cannot load {}: {e}", path.display())),
                }
            }
            Ok(())
        })
        .clone()
}

/// Whether libnvrtc can be loaded (after the NVRTC_LIB preload).
pub fn is_available() -> bool {
    preload().is_ok() && guard("libnvrtc", || Ok(unsafe { cudarc::nvrtc::sys::is_culib_present() })).unwrap_or(false)
}

/// The NVRTC version, e.g. (13, 0).
pub fn version() -> Result<(i32, i32), CudaError> {
    if !is_available() {
        return Err(missing());
    }
    guard("libnvrtc", || {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: out-pointers to live locals.
        let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(CudaError::driver("nvrtcVersion", r));
        }
        Ok((major, minor))
    })
}

fn missing() -> CudaError {
    CudaError::MissingLibrary {
        lib: "libnvrtc.so".into(),
        hint: "set NVRTC_LIB (scripts/setup-cuda-wheels.sh prints it) or add the CUDA 13 lib folder to LD_LIBRARY_PATH"
            .into(),
    }
}

/// Include folders for `cuda_fp16.h` and friends: NVRTC_INCLUDE, $CUDA_HOME/include, /usr/local/cuda/include.
pub fn include_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(d) = std::env::var("NVRTC_INCLUDE") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(d) = std::env::var("CUDA_HOME") {
        dirs.push(PathBuf::from(d).join("include"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Compiles one flattened kernel source.
pub fn compile(module: &str, source: &str, target: Target<'_>) -> Result<Compiled, CudaError> {
    if !is_available() {
        return Err(missing());
    }
    guard("libnvrtc", || compile_inner(module, source, target))
}

fn compile_inner(module: &str, source: &str, target: Target<'_>) -> Result<Compiled, CudaError> {
    use cudarc::nvrtc::sys as nv;
    let err =
        |what: &str, r: nv::nvrtcResult| CudaError::Nvrtc { module: module.to_string(), log: format!("{what}: {r:?}") };
    let src = CString::new(source)
        .map_err(|_| CudaError::Nvrtc { module: module.into(), log: "source contains NUL".into() })?;
    let name = CString::new(format!("{module}.cu")).unwrap_or_default();
    let mut opts: Vec<String> = vec!["--std=c++17".into(), "-lineinfo".into()];
    match target {
        Target::Ptx(arch) => opts.push(format!("--gpu-architecture={arch}")),
        Target::Cubin(arch) => {
            opts.push(format!("--gpu-architecture={arch}"));
            opts.push("--ptxas-options=-v".into());
        }
    }
    for d in include_dirs() {
        opts.push(format!("--include-path={}", d.display()));
    }
    let c_opts: Vec<CString> = opts.iter().filter_map(|o| CString::new(o.as_str()).ok()).collect();
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();

    let mut prog: nv::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated strings that outlive the call; no in-memory headers.
    let r = unsafe {
        nv::nvrtcCreateProgram(&mut prog, src.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null())
    };
    if r != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(err("nvrtcCreateProgram", r));
    }
    // SAFETY: prog was created above; the option pointers outlive the call.
    let compiled = unsafe { nv::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    let log = program_log(prog);
    let result = if compiled != nv::nvrtcResult::NVRTC_SUCCESS {
        Err(CudaError::Nvrtc { module: module.to_string(), log: log.clone() })
    } else {
        let mut size = 0usize;
        let (size_r, image) = match target {
            Target::Ptx(_) => {
                // SAFETY: prog compiled successfully; size then buffer of that size.
                let r = unsafe { nv::nvrtcGetPTXSize(prog, &mut size) };
                let mut buf = vec![0u8; size];
                let r2 = if r == nv::nvrtcResult::NVRTC_SUCCESS {
                    unsafe { nv::nvrtcGetPTX(prog, buf.as_mut_ptr() as *mut c_char) }
                } else {
                    r
                };
                if let Some(0) = buf.last() {
                    buf.pop();
                }
                (r2, buf)
            }
            Target::Cubin(_) => {
                // SAFETY: as above, for the cubin.
                let r = unsafe { nv::nvrtcGetCUBINSize(prog, &mut size) };
                let mut buf = vec![0u8; size];
                let r2 = if r == nv::nvrtcResult::NVRTC_SUCCESS {
                    unsafe { nv::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) }
                } else {
                    r
                };
                (r2, buf)
            }
        };
        if size_r != nv::nvrtcResult::NVRTC_SUCCESS {
            Err(err("nvrtcGet{PTX,CUBIN}", size_r))
        } else {
            Ok(Compiled { image, log })
        }
    };
    // SAFETY: prog is a valid program handle, destroyed once.
    unsafe { nv::nvrtcDestroyProgram(&mut prog) };
    result
}

fn program_log(prog: cudarc::nvrtc::sys::nvrtcProgram) -> String {
    use cudarc::nvrtc::sys as nv;
    let mut size = 0usize;
    // SAFETY: prog is valid; buffer sized from nvrtcGetProgramLogSize.
    unsafe {
        if nv::nvrtcGetProgramLogSize(prog, &mut size) != nv::nvrtcResult::NVRTC_SUCCESS {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        nv::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char);
        String::from_utf8_lossy(&buf).trim_end_matches('\0').trim().to_string()
    }
}

/// `extern "C" __global__` entry names declared in a source (for the compile test's cross-check).
pub fn declared_entries(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(p) = rest.find("extern \"C\"") {
        rest = &rest[p + 10..];
        let head = rest.trim_start();
        if let Some(h) = head.strip_prefix("__global__") {
            let upto = h.find('(').unwrap_or(0);
            let mut decl = &h[..upto];
            if decl.trim_end().ends_with("__launch_bounds__") {
                let after = &h[upto..];
                let close = after.find(')').unwrap_or(0);
                let tail = &after[close + 1..];
                decl = &tail[..tail.find('(').unwrap_or(0)];
            }
            if let Some(n) = decl.split_whitespace().last() {
                out.push(n.to_string());
            }
        }
    }
    out
}
