//! The SIMT emulator as a [`KernelDevice`] (feature `emu`): the kernels in `kernels/*.cu`, compiled as
//! host C++ against `kernels/emu/simt.h` by `build/emu.rs`, run on host threads with host memory, and
//! cuBLAS is replaced by the host GEMM with the same column-major contract. The CUDA launchers in
//! `backend::ops` run unchanged against it, so CI checks their grid sizes and argument order too.
//!
//! Launches are synchronous. Every launch is checked like a GPU would check it (block and grid limits,
//! shared memory against the 48 KiB default, argument kinds against the `.cu` signature) and any
//! failure inside the emulator (a divergent `__syncthreads`, a warp collective that cannot complete,
//! `__trap`) comes back as [`CudaError::Launch`] naming the kernel. `docs/testing.md` says what the
//! emulator proves and what it cannot.

use super::device::{KernelArg, KernelArgKind, KernelDevice, LaunchDims};
use super::{kernels, CudaError, KernelFn};
use crate::backend::cpu::{host_bytes, host_bytes_mut, host_slice, host_slice_mut, HostMemory};
use crate::backend::gemm::ColMajorGemm;
use crate::backend::Tensor;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

/// Shared memory a block may use without the opt-in attribute (static + dynamic), as on every GPU
/// since sm_70.
pub const DEFAULT_SHARED_LIMIT: usize = 48 * 1024;
/// The most a block may use with `cudaFuncAttributeMaxDynamicSharedMemorySize` on sm_90.
pub const OPT_IN_SHARED_LIMIT: usize = 227 * 1024;
pub const MAX_THREADS_PER_BLOCK: u64 = 1024;
const MAX_BLOCK: (u32, u32, u32) = (1024, 1024, 64);
const MAX_GRID: (u32, u32, u32) = (i32::MAX as u32, 65535, 65535);

/// `simt::KernelEntry` in kernels/emu/simt.h.
#[repr(C)]
struct KernelEntry {
    name: *const c_char,
    kinds: *const c_char,
    run: *const c_void,
    flags: c_uint,
}

type TableFn = unsafe extern "C" fn(*mut usize) -> *const *const KernelEntry;
type SanitizerFn = unsafe extern "C" fn() -> *const c_char;
type PublishFn = unsafe extern "C" fn();
type LaunchFn = unsafe extern "C" fn(
    kernel: *const KernelEntry,
    grid: *const c_uint,
    block: *const c_uint,
    shared_bytes: usize,
    args: *mut *mut c_void,
    err: *mut c_char,
    err_cap: usize,
) -> c_int;

extern "C" {
    fn simt_kernel_table(n: *mut usize) -> *const *const KernelEntry;
    fn simt_test_table(n: *mut usize) -> *const *const KernelEntry;
    fn simt_sanitizer() -> *const c_char;
    fn simt_publish();
    fn simt_launch(
        kernel: *const KernelEntry,
        grid: *const c_uint,
        block: *const c_uint,
        shared_bytes: usize,
        args: *mut *mut c_void,
        err: *mut c_char,
        err_cap: usize,
    ) -> c_int;
}

/// Names the shared library of sanitized kernels to run instead of the built-in ones (scripts/emu-sanitize.sh
/// builds it with `$OUT_DIR/emu/build-sanitized.sh` and preloads the sanitizer's runtime).
pub const LIBRARY_ENV: &str = "ATTNAS_EMU_LIBRARY";

/// The emulator's C API (kernels/emu/simt_runtime.cpp and the generated tables): the copy linked into
/// this binary, or the sanitized copy `ATTNAS_EMU_LIBRARY` names, built from the same sources.
struct EmuLibrary {
    kernel_table: TableFn,
    test_table: TableFn,
    sanitizer: SanitizerFn,
    publish: PublishFn,
    launch: LaunchFn,
    /// Keeps a loaded library mapped for the life of the process (the tables point into it).
    _loaded: Option<libloading::Library>,
}

fn library() -> Result<&'static EmuLibrary, CudaError> {
    static L: OnceLock<Result<EmuLibrary, String>> = OnceLock::new();
    let lib = L.get_or_init(|| match std::env::var_os(LIBRARY_ENV) {
        None => Ok(EmuLibrary {
            kernel_table: simt_kernel_table,
            test_table: simt_test_table,
            sanitizer: simt_sanitizer,
            publish: simt_publish,
            launch: simt_launch,
            _loaded: None,
        }),
        Some(path) => load_library(std::path::Path::new(&path)),
    });
    lib.as_ref().map_err(|detail| CudaError::Driver { what: LIBRARY_ENV.to_string(), detail: detail.clone() })
}

fn load_library(path: &std::path::Path) -> Result<EmuLibrary, String> {
    let fix = "build it from this build's sources with scripts/emu-sanitize.sh, or unset ATTNAS_EMU_LIBRARY";
    // SAFETY: the library is the emulator compiled from this crate's generated sources (its table is
    // checked against the built-in one below before any kernel runs); its initialisers only register
    // sanitizer metadata.
    let loaded = unsafe { libloading::Library::new(path) }.map_err(|e| format!("{}: {e} ({fix})", path.display()))?;
    // SAFETY: the symbols have these C signatures in kernels/emu/simt_runtime.cpp and the generated
    // tables.cpp; the fn pointers stay valid because the library is kept loaded (`_loaded`).
    let lib = unsafe {
        let sym = |name: &[u8]| -> Result<*const c_void, String> {
            loaded.get::<*const c_void>(name).map(|s| *s).map_err(|e| format!("{}: {e} ({fix})", path.display()))
        };
        EmuLibrary {
            kernel_table: std::mem::transmute::<*const c_void, TableFn>(sym(b"simt_kernel_table")?),
            test_table: std::mem::transmute::<*const c_void, TableFn>(sym(b"simt_test_table")?),
            sanitizer: std::mem::transmute::<*const c_void, SanitizerFn>(sym(b"simt_sanitizer")?),
            publish: std::mem::transmute::<*const c_void, PublishFn>(sym(b"simt_publish")?),
            launch: std::mem::transmute::<*const c_void, LaunchFn>(sym(b"simt_launch")?),
            _loaded: Some(loaded),
        }
    };
    // The launch glue reads arguments by the table's order and kinds: a library from other sources
    // would run the wrong kernel.
    let (theirs, ours) = (read_table(lib.kernel_table), read_table(simt_kernel_table));
    let same = |a: &[Entry], b: &[Entry]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name && x.kinds == y.kinds)
    };
    if !same(&theirs, &ours) || !same(&read_table(lib.test_table), &read_table(simt_test_table)) {
        let first = theirs.iter().zip(&ours).position(|(x, y)| x.name != y.name || x.kinds != y.kinds);
        let at = match first {
            Some(i) => format!(
                "kernel {i} is {} ({}), this build's is {} ({})",
                theirs[i].name, theirs[i].kinds, ours[i].name, ours[i].kinds
            ),
            None => format!("{} kernels against this build's {}", theirs.len(), ours.len()),
        };
        return Err(format!("{}: built from other kernel sources: {at} ({fix})", path.display()));
    }
    // SAFETY: takes no arguments; stores to an atomic in the library.
    unsafe { (lib.publish)() };
    Ok(lib)
}

/// One kernel the emulator can run: its C name, parameter kinds and table entry.
#[derive(Clone, Copy)]
struct Entry {
    name: &'static str,
    kinds: &'static str,
    ptr: *const KernelEntry,
}

// SAFETY: the entries point at immutable static tables in the linked emulator library.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

fn read_table(table: TableFn) -> Vec<Entry> {
    let mut n = 0usize;
    // SAFETY: the generated function returns a static array of `n` valid entry pointers whose strings
    // are static, NUL-terminated literals.
    unsafe {
        let t = table(&mut n);
        (0..n)
            .map(|i| {
                let e = *t.add(i);
                Entry {
                    name: CStr::from_ptr((*e).name).to_str().unwrap_or("?"),
                    kinds: CStr::from_ptr((*e).kinds).to_str().unwrap_or("?"),
                    ptr: e,
                }
            })
            .collect()
    }
}

fn production() -> Result<&'static [Entry], CudaError> {
    static T: OnceLock<Vec<Entry>> = OnceLock::new();
    let lib = library()?;
    Ok(T.get_or_init(|| read_table(lib.kernel_table)))
}

fn test_kernels() -> Result<&'static [Entry], CudaError> {
    static T: OnceLock<Vec<Entry>> = OnceLock::new();
    let lib = library()?;
    Ok(T.get_or_init(|| read_table(lib.test_table)))
}

/// The sanitizer the emulated kernels were built with: "address", "thread" or "none" (the built-in
/// copy; a sanitized one comes from `ATTNAS_EMU_LIBRARY`). An error when that library cannot be used.
pub fn sanitizer() -> Result<&'static str, CudaError> {
    let lib = library()?;
    // SAFETY: returns a static NUL-terminated literal.
    Ok(unsafe { CStr::from_ptr((lib.sanitizer)()) }.to_str().unwrap_or("none"))
}

/// Whether the emulator runs `kernel` (a production or test kernel name) with one host thread per CUDA
/// thread (`Some(true)`: it uses shared memory, barriers or warp intrinsics) or its threads one after
/// another (`Some(false)`); `None` for an unknown name.
pub fn runs_cooperatively(kernel: &str) -> Option<bool> {
    let (prod, test) = (production().ok()?, test_kernels().ok()?);
    prod.iter().chain(test).find(|e| e.name == kernel).map(|e| {
        // SAFETY: e.ptr points into the static generated table.
        unsafe { (*e.ptr).flags & INDEPENDENT_THREADS == 0 }
    })
}

/// `simt::KERNEL_INDEPENDENT_THREADS`.
const INDEPENDENT_THREADS: c_uint = 1;

fn kind_letter(k: KernelArgKind) -> char {
    match k {
        KernelArgKind::Ptr => 'p',
        KernelArgKind::I32 => 'i',
        KernelArgKind::U32 => 'u',
        KernelArgKind::F32 => 'f',
        KernelArgKind::I64 => 'l',
        KernelArgKind::U64 => 'q',
    }
}

/// Static shared memory per kernel from nvcc's ptxas report (the largest over the built archs), when
/// nvcc ran at build time; the emulator cannot measure `__shared__` arrays itself.
///
/// The keys borrow the static report rather than owning heap copies: the table is built once by whichever
/// test thread launches first and read by all, and ThreadSanitizer (which instruments the emulated kernels'
/// C side, not Rust's `OnceLock`) would flag a `memcmp` over another thread's fresh heap string as a race.
fn static_shared_bytes(kernel: &str) -> Option<usize> {
    static T: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    T.get_or_init(|| parse_ptxas_smem(kernels::PTXAS_REPORT)).get(kernel).copied()
}

/// `Compiling entry function 'k'` ... `Used 32 registers, 4096 bytes smem, ...` -> {k: 4096}.
pub fn parse_ptxas_smem(report: &str) -> HashMap<&str, usize> {
    let mut out: HashMap<&str, usize> = HashMap::new();
    let mut func: Option<&str> = None;
    for line in report.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            func = rest.split('\'').next();
            if let Some(f) = func {
                out.entry(f).or_insert(0);
            }
        } else if line.contains("Used ") {
            if let Some(f) = func {
                for part in line.split(',') {
                    let words: Vec<&str> = part.split_whitespace().collect();
                    if let [n, "bytes", "smem"] = words.as_slice() {
                        if let Ok(n) = n.parse::<usize>() {
                            let e = out.entry(f).or_insert(0);
                            *e = (*e).max(n);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The SIMT emulator device. Memory is host memory (tensor addresses are host pointers).
pub struct EmuDevice {
    shared_limit: usize,
}

impl Default for EmuDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl EmuDevice {
    /// An emulated device with the default 48 KiB shared-memory limit per block.
    pub fn new() -> Self {
        EmuDevice { shared_limit: DEFAULT_SHARED_LIMIT }
    }

    /// Raises the per-block shared-memory limit, as setting the opt-in attribute does on a GPU
    /// (at most [`OPT_IN_SHARED_LIMIT`]).
    pub fn with_shared_limit(bytes: usize) -> Result<Self, CudaError> {
        if bytes > OPT_IN_SHARED_LIMIT {
            return Err(CudaError::Launch {
                kernel: "(any)".into(),
                detail: format!(
                    "shared memory limit {bytes} bytes exceeds the {OPT_IN_SHARED_LIMIT}-byte opt-in maximum"
                ),
            });
        }
        Ok(EmuDevice { shared_limit: bytes })
    }

    /// Names of the test-only kernels: the emulator's self-tests (kernels/emu/selftest/*.cu) and the
    /// planted bugs (kernels/emu/planted/*.cu). They exist only in the emulator, never on a GPU.
    pub fn test_kernels() -> Result<Vec<&'static str>, CudaError> {
        Ok(test_kernels()?.iter().map(|e| e.name).collect())
    }

    /// Launches a test-only kernel by name, its arguments checked against its `.cu` signature.
    pub fn launch_test_kernel(&self, name: &str, dims: LaunchDims, args: &[KernelArg]) -> Result<(), CudaError> {
        let entry = test_kernels()?.iter().find(|e| e.name == name).ok_or_else(|| CudaError::Launch {
            kernel: name.to_string(),
            detail: "no such test kernel in kernels/emu/selftest/ or kernels/emu/planted/".into(),
        })?;
        self.run(*entry, 0, dims, args)
    }

    fn check_dims(&self, name: &str, static_smem: usize, dims: LaunchDims) -> Result<(), CudaError> {
        let err = |detail: String| CudaError::Launch { kernel: name.to_string(), detail };
        let (b, g) = (dims.block, dims.grid);
        if b.0 == 0 || b.1 == 0 || b.2 == 0 || g.0 == 0 || g.1 == 0 || g.2 == 0 {
            return Err(err(format!("invalid launch dimensions: a zero in grid {g:?} or block {b:?}")));
        }
        if b.0 > MAX_BLOCK.0 || b.1 > MAX_BLOCK.1 || b.2 > MAX_BLOCK.2 {
            return Err(err(format!("block {b:?} exceeds the per-dimension maximum {MAX_BLOCK:?}")));
        }
        let threads = b.0 as u64 * b.1 as u64 * b.2 as u64;
        if threads > MAX_THREADS_PER_BLOCK {
            return Err(err(format!("block {b:?} has {threads} threads, more than {MAX_THREADS_PER_BLOCK}")));
        }
        if g.0 > MAX_GRID.0 || g.1 > MAX_GRID.1 || g.2 > MAX_GRID.2 {
            return Err(err(format!("grid {g:?} exceeds the per-dimension maximum {MAX_GRID:?}")));
        }
        let total = dims.shared_bytes as usize + static_smem;
        if total > self.shared_limit {
            let why = if total > OPT_IN_SHARED_LIMIT {
                format!("more than the {OPT_IN_SHARED_LIMIT}-byte maximum of any block")
            } else {
                format!(
                    "more than the {}-byte limit (above {DEFAULT_SHARED_LIMIT} bytes needs the opt-in attribute)",
                    self.shared_limit
                )
            };
            return Err(err(format!(
                "{} bytes of dynamic + {static_smem} bytes of static shared memory per block: {why}",
                dims.shared_bytes
            )));
        }
        Ok(())
    }

    fn run(&self, entry: Entry, static_smem: usize, dims: LaunchDims, args: &[KernelArg]) -> Result<(), CudaError> {
        self.check_dims(entry.name, static_smem, dims)?;
        // the glue reads each parameter as its declared type: the kinds must match exactly
        let got: String = args.iter().map(|a| kind_letter(a.kind())).collect();
        if got != entry.kinds {
            return Err(CudaError::Launch {
                kernel: entry.name.to_string(),
                detail: format!("argument kinds '{got}' do not match the .cu signature '{}'", entry.kinds),
            });
        }
        let mut values: Vec<KernelArg> = args.to_vec();
        let mut params: Vec<*mut c_void> = values.iter_mut().map(KernelArg::as_param_ptr).collect();
        let grid = [dims.grid.0, dims.grid.1, dims.grid.2];
        let block = [dims.block.0, dims.block.1, dims.block.2];
        let mut err = vec![0 as c_char; 4096];
        // SAFETY: `entry` comes from the generated table; the argument kinds were checked against the
        // kernel's signature, so the glue reads each `params[i]` as the type it points at; `values`
        // outlives the call; pointer arguments are host tensors the caller keeps alive; the launch is
        // synchronous.
        let launch = library()?.launch;
        let rc = unsafe {
            launch(
                entry.ptr,
                grid.as_ptr(),
                block.as_ptr(),
                dims.shared_bytes as usize,
                params.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: simt_launch wrote a NUL-terminated message into `err` (snprintf).
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            return Err(CudaError::Launch { kernel: entry.name.to_string(), detail: format!("{msg} (with {dims:?})") });
        }
        Ok(())
    }
}

fn check_host_len(what: &str, t: Tensor, len: usize) -> Result<(), CudaError> {
    if t.len() != len {
        return Err(CudaError::Driver {
            what: what.into(),
            detail: format!("tensor of {} elements, data of {len}", t.len()),
        });
    }
    Ok(())
}

impl KernelDevice for EmuDevice {
    type Memory = HostMemory;

    fn describe(&self) -> String {
        "emu (SIMT emulator: kernels as host C++ on host threads)".to_string()
    }

    fn alloc(&self, len: usize) -> Result<HostMemory, CudaError> {
        Ok(HostMemory::zeroed(len))
    }

    fn upload(&self, dst: Tensor, src: &[f32]) -> Result<(), CudaError> {
        check_host_len("upload", dst, src.len())?;
        // SAFETY: dst is a live host tensor (Tensor contract); src is a distinct Rust slice.
        unsafe { host_slice_mut(dst) }.copy_from_slice(src);
        Ok(())
    }

    fn upload_bytes(&self, dst: Tensor, src: &[u8]) -> Result<(), CudaError> {
        if dst.bytes() < src.len() {
            return Err(CudaError::Driver {
                what: "upload_bytes".into(),
                detail: format!("tensor of {} bytes, data of {}", dst.bytes(), src.len()),
            });
        }
        // SAFETY: dst is a live host tensor of dst.bytes() >= src.len() bytes (checked above); src is a
        // distinct Rust slice.
        let bytes = unsafe { host_bytes_mut(dst) };
        bytes[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn copy(&self, src: Tensor, dst: Tensor) -> Result<(), CudaError> {
        // SAFETY: live host tensors of the same byte length, disjoint (checked by the caller).
        unsafe { host_bytes_mut(dst).copy_from_slice(host_bytes(src)) };
        Ok(())
    }

    fn download(&self, src: Tensor) -> Result<Vec<f32>, CudaError> {
        // SAFETY: src is a live host tensor.
        Ok(unsafe { host_slice(src) }.to_vec())
    }

    fn download_bytes(&self, src: Tensor) -> Result<Vec<u8>, CudaError> {
        // SAFETY: src is a live host tensor.
        Ok(unsafe { host_bytes(src) }.to_vec())
    }

    fn synchronize(&self) -> Result<(), CudaError> {
        Ok(())
    }

    fn launch(&self, kernel: KernelFn, dims: LaunchDims, args: &[KernelArg]) -> Result<(), CudaError> {
        let index = KernelFn::ALL.iter().position(|k| *k == kernel).unwrap_or(usize::MAX);
        let entry =
            production()?.get(index).copied().filter(|e| e.name == kernel.name()).ok_or_else(|| CudaError::Launch {
                kernel: kernel.name().to_string(),
                detail: "not in the emulator's kernel table (build/emu.rs out of sync with KernelFn)".into(),
            })?;
        let static_smem = static_shared_bytes(kernel.name()).unwrap_or(0);
        self.run(entry, static_smem, dims, args)
    }

    fn gemm_col_major(&self, g: &ColMajorGemm, a: u64, b: u64, c: u64) -> Result<(), CudaError> {
        let (na, nb, nc) = g.required_lens();
        // SAFETY: the launcher validated each operand against these lengths (GemmSpec::validate) and the
        // addresses are live host tensors of the stated storage types; C does not overlap A or B
        // (checked there).
        unsafe {
            let (ta, tb) = (Tensor::from_raw_typed(a, na, g.ab_dtype), Tensor::from_raw_typed(b, nb, g.ab_dtype));
            g.run_host_tensors(ta, tb, Tensor::from_raw_typed(c, nc, g.c_dtype))
        }
        .map_err(|e| CudaError::Driver { what: "emulated gemm".into(), detail: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_smem_is_parsed_per_kernel() {
        let report = "ptxas info    : Compiling entry function 'tile_fwd_f32' for 'sm_90a'\n\
                      ptxas info    : Used 32 registers, 4224 bytes smem, 380 bytes cmem[0]\n\
                      ptxas info    : Compiling entry function 'swish_fwd_f32' for 'sm_90a'\n\
                      ptxas info    : Used 10 registers, 380 bytes cmem[0]\n";
        let m = parse_ptxas_smem(report);
        assert_eq!(m.get("tile_fwd_f32"), Some(&4224));
        assert_eq!(m.get("swish_fwd_f32"), Some(&0));
    }

    #[test]
    fn every_kernel_fn_is_in_the_emulator_table_in_order() {
        let table = production().unwrap();
        assert_eq!(table.len(), KernelFn::ALL.len());
        for (k, e) in KernelFn::ALL.iter().zip(table) {
            assert_eq!(k.name(), e.name);
            let kinds: String = k.params().iter().map(|p| kind_letter(*p)).collect();
            assert_eq!(kinds, e.kinds, "{}", e.name);
        }
    }
}
