//! Helpers shared by the differential tests, benches and the GPU bundle: tolerance checks that report
//! the worst element, seeded random inputs, device selection, and the rule for when a missing
//! prerequisite is a one-line skip and when it is a failure.
//!
//! **When may a GPU test skip?** Only where no GPU is expected. A GPU is expected when
//! - `REQUIRE_GPU=1` (the GPU bundle's `run.sh` sets it), or
//! - the kernel driver shows one: a `/dev/nvidia<N>` device node or an entry under
//!   `/proc/driver/nvidia/gpus/` (neither needs a CUDA library, so a machine whose libcuda, cuBLAS or
//!   NVRTC is missing from the loader's path still counts), or
//! - the CUDA driver library loads and reports at least one device (containers that expose the GPU
//!   without device nodes under their usual names).
//!
//! `CUDA_VISIBLE_DEVICES` set to an empty string or `-1` hides the GPUs on purpose: the last two facts
//! are then ignored (REQUIRE_GPU still wins). Where a GPU is expected, any failure to open it (no driver
//! library, an old driver, a kernel module that does not load, cuBLAS missing) fails the test with the
//! reason; elsewhere the test prints one `skipped:` line. [`gpu_verdict`] is that decision as a pure
//! function of the facts ([`GpuFacts`]), unit-tested below.
//!
//! **The emulator guard.** Built without the `emu` feature, `on_cuda_targets!` has only the GPU target:
//! on a machine where no GPU is expected that would turn every kernel test into a print line, so it fails
//! instead (and so does the lib test `emulator_is_built_or_a_gpu_is_expected`, the first test binary
//! `cargo test` runs). Use `cargo test --features emu` (scripts/test.sh does).
//!
//! **Data and tools.** [`skip_or_require`]: a missing data set or tool prints one `skipped:` line unless
//! its `REQUIRE_*` variable is `1` (CI sets `REQUIRE_SHARED_DATA`, `REQUIRE_PYTHON_TOOLS`,
//! `REQUIRE_NVRTC`), where it fails naming the fix.

use std::path::Path;

use crate::backend::cuda::{gpu::GpuDevice, probe, CudaBackend};
use rand::{RngExt, SeedableRng};

/// `|got - want| <= abs + rel * |want|` element-wise. On failure the message gives the count of bad
/// elements, the worst index, both values, and the max abs / rel errors.
pub fn check_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: length {} vs reference {}", got.len(), want.len()));
    }
    let (mut bad, mut worst, mut worst_excess, mut max_abs, mut max_rel) = (0usize, 0usize, f32::MIN, 0f32, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let allowed = abs + rel * w.abs();
        let excess = if err.is_nan() || g.is_nan() != w.is_nan() { f32::INFINITY } else { err - allowed };
        max_abs = max_abs.max(err);
        if w != 0.0 {
            max_rel = max_rel.max(err / w.abs());
        }
        if excess > 0.0 {
            bad += 1;
        }
        if excess > worst_excess {
            worst_excess = excess;
            worst = i;
        }
    }
    if bad > 0 {
        return Err(format!(
            "{what}: {bad} of {} elements outside abs {abs:e} + rel {rel:e}; worst [{worst}] got {} want {}; max abs err {max_abs:e}, max rel err {max_rel:e}",
            got.len(),
            got[worst],
            want[worst]
        ));
    }
    Ok(())
}

/// Panicking form of [`check_close`] for tests.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    if let Err(e) = check_close(what, got, want, abs, rel) {
        panic!("{e}");
    }
}

/// The largest `|got - want| / (abs + rel * |want|)` over the elements: how much of a tolerance the
/// comparison used (1 = at the bound). Tests print it so that a run on new hardware (the GPU bundle's logs)
/// records its margins, not only a pass.
pub fn tolerance_used(got: &[f32], want: &[f32], abs: f32, rel: f32) -> f32 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g - w).abs() / (abs + rel * w.abs()).max(f32::MIN_POSITIVE))
        .fold(0.0, f32::max)
}

/// `n` uniform values in [lo, hi) from a fixed seed.
pub fn random_vec(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Whether environment variable `var` is set to `1`.
pub fn env_flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// A test whose prerequisite `missing` (what is absent and how to get it) cannot run: prints one
/// `skipped: {test}: {missing}` line, or panics when `require_var` is `1` (CI: the prerequisite must be
/// there, and a skip would hide that the test did not run).
pub fn skip_or_require(test: &str, missing: &str, require_var: &str) {
    if let Some(failure) = required_failure(test, missing, require_var, env_flag(require_var)) {
        panic!("{failure}");
    }
    println!("skipped: {test}: {missing}");
}

/// The failure message when the prerequisite is `required`, else `None` (a skip).
fn required_failure(test: &str, missing: &str, require_var: &str, required: bool) -> Option<String> {
    required.then(|| format!("{test}: {require_var}=1 but {missing}"))
}

/// What the machine says about GPUs, gathered without opening one (see the module header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuFacts {
    /// `REQUIRE_GPU=1`.
    pub required: bool,
    /// `CUDA_VISIBLE_DEVICES` is set to "" or "-1": GPUs hidden on purpose.
    pub hidden: bool,
    /// What the kernel driver shows (`/dev/nvidia0`, `/proc/driver/nvidia/gpus/0000:...`); empty if nothing.
    pub kernel_devices: Vec<String>,
    /// Devices the CUDA driver library reports, when it loads and answers.
    pub driver_devices: Option<usize>,
}

impl GpuFacts {
    /// The facts of this machine and process. The driver library is asked only when `ask_driver` (it is
    /// the one fact that needs a library; callers ask it after a failed open, when it matters).
    pub fn detect(ask_driver: bool) -> GpuFacts {
        let hidden = std::env::var("CUDA_VISIBLE_DEVICES").is_ok_and(|v| v.trim().is_empty() || v.trim() == "-1");
        GpuFacts {
            required: env_flag("REQUIRE_GPU"),
            hidden,
            kernel_devices: kernel_gpu_entries(Path::new("/dev"), Path::new("/proc/driver/nvidia/gpus")),
            driver_devices: if ask_driver { probe::device_count().ok() } else { None },
        }
    }

    /// Whether GPU targets are expected to run here (`REQUIRE_GPU=1`, or a GPU not hidden).
    pub fn gpu_expected(&self) -> bool {
        self.required || (!self.hidden && (!self.kernel_devices.is_empty() || self.driver_devices.unwrap_or(0) > 0))
    }
}

/// The GPU entries the kernel driver makes: `nvidia<N>` device nodes in `dev` (not `nvidiactl`,
/// `nvidia-uvm`, which exist without a GPU in some containers) and the per-GPU folders in `proc_gpus`.
pub fn kernel_gpu_entries(dev: &Path, proc_gpus: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|it| it.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let nodes = names(dev).into_iter().filter(|n| {
        n.strip_prefix("nvidia").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    });
    let nodes = nodes.map(|n| dev.join(n).display().to_string());
    nodes.chain(names(proc_gpus).into_iter().map(|n| proc_gpus.join(n).display().to_string())).collect()
}

/// What a GPU test does with the first GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuVerdict {
    /// It opened: run the GPU target.
    Run,
    /// No GPU is expected here: one `skipped:` line with this reason.
    Skip(String),
    /// A GPU is expected but could not be opened: fail with this reason.
    Fail(String),
}

/// The decision of the module header: `open` is the result of opening the GPU (the error's text).
pub fn gpu_verdict(facts: &GpuFacts, open: Result<(), String>) -> GpuVerdict {
    let Err(e) = open else { return GpuVerdict::Run };
    if facts.required {
        return GpuVerdict::Fail(format!("REQUIRE_GPU=1 but the GPU could not be opened: {e}"));
    }
    if facts.hidden {
        return GpuVerdict::Skip(format!("GPUs hidden by CUDA_VISIBLE_DEVICES ({e})"));
    }
    if let Some(first) = facts.kernel_devices.first() {
        return GpuVerdict::Fail(format!(
            "a GPU is present ({first}) but could not be opened: {e}. Fix the CUDA libraries (scripts/gpu-bundle.sh's \
             run.sh finds them), or set CUDA_VISIBLE_DEVICES=-1 to test without the GPU"
        ));
    }
    match facts.driver_devices {
        Some(n) if n > 0 => GpuVerdict::Fail(format!(
            "the CUDA driver reports {n} device(s) but the GPU could not be opened: {e}. Set CUDA_VISIBLE_DEVICES=-1 \
             to test without the GPU"
        )),
        _ => GpuVerdict::Skip(format!("no CUDA device ({e})")),
    }
}

/// The first GPU as a backend; `None` after one `skipped: ...` line naming the test where no GPU is
/// expected. Panics with the reason where one is expected but does not open (see the module header).
pub fn gpu_or_skip(test: &str) -> Option<CudaBackend<GpuDevice>> {
    let (device, open) = match GpuDevice::open(0) {
        Ok(d) => (Some(d), Ok(())),
        Err(e) => (None, Err(e.to_string())),
    };
    let facts = if open.is_ok() { GpuFacts::default() } else { GpuFacts::detect(true) };
    match gpu_verdict(&facts, open) {
        GpuVerdict::Run => device.map(CudaBackend::new),
        GpuVerdict::Skip(why) => {
            println!("skipped: {test}: {why}");
            None
        }
        GpuVerdict::Fail(why) => panic!("{test}: {why}"),
    }
}

/// Whether a GPU target is expected on this machine (asks the driver library only when the kernel shows
/// nothing and it is not required).
pub fn gpu_expected() -> bool {
    let quick = GpuFacts::detect(false);
    quick.gpu_expected() || (!quick.hidden && GpuFacts::detect(true).gpu_expected())
}

/// The emulator branch of `on_cuda_targets!` in a build without `emu`: a skip line where a GPU target
/// runs instead, a failure where none is expected (every kernel test would otherwise pass as a print).
pub fn emulator_not_built(test: &str) {
    let msg = "the SIMT emulator is not built in; run `cargo test --features emu` (scripts/test.sh does)";
    if gpu_expected() {
        println!("skipped: {test}: {msg}");
    } else {
        panic!("{test}: {msg}: without it and without a GPU, every CUDA kernel test would only print a skip line");
    }
}

/// Runs `$body` once per CUDA target with `$b` bound to a `CudaBackend`: the SIMT emulator (feature
/// `emu`) and the first GPU when one is present. A missing target prints one `skipped:` line where that
/// is allowed and fails where it is not (see the module header). One test body, every target (the CPU
/// reference is the caller's expected value).
#[macro_export]
macro_rules! on_cuda_targets {
    ($test:expr, |$b:ident| $body:block) => {{
        #[cfg(feature = "emu")]
        {
            let $b = $crate::backend::cuda::CudaBackend::new($crate::backend::cuda::emu::EmuDevice::new());
            $body
        }
        #[cfg(not(feature = "emu"))]
        $crate::testing::emulator_not_built($test);
        if let Some($b) = $crate::testing::gpu_or_skip($test) {
            $body
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(required: bool, hidden: bool, kernel: &[&str], driver: Option<usize>) -> GpuFacts {
        GpuFacts {
            required,
            hidden,
            kernel_devices: kernel.iter().map(|s| s.to_string()).collect(),
            driver_devices: driver,
        }
    }

    #[test]
    fn a_gpu_that_opens_always_runs() {
        for f in [facts(false, false, &[], None), facts(true, false, &["/dev/nvidia0"], Some(1))] {
            assert_eq!(gpu_verdict(&f, Ok(())), GpuVerdict::Run);
        }
    }

    #[test]
    fn no_gpu_anywhere_skips_with_the_reason() {
        let e = || Err("no CUDA driver library (libcuda.so) found".to_string());
        let v = gpu_verdict(&facts(false, false, &[], None), e());
        assert!(matches!(&v, GpuVerdict::Skip(w) if w.contains("libcuda.so")), "{v:?}");
        // a driver library that loads but reports no device (or no answer) is no GPU either
        assert!(matches!(gpu_verdict(&facts(false, false, &[], Some(0)), e()), GpuVerdict::Skip(_)));
        assert!(!facts(false, false, &[], Some(0)).gpu_expected());
    }

    #[test]
    fn an_expected_gpu_that_does_not_open_fails_naming_why() {
        let e = || Err("libcublas not found; hint: install CUDA 13 cuBLAS".to_string());
        // REQUIRE_GPU=1 (the bundle), even with nothing visible
        let v = gpu_verdict(&facts(true, false, &[], None), e());
        assert!(matches!(&v, GpuVerdict::Fail(w) if w.contains("REQUIRE_GPU") && w.contains("libcublas")), "{v:?}");
        // a device node without any CUDA library (the case the issue names)
        let v = gpu_verdict(&facts(false, false, &["/dev/nvidia0"], None), e());
        assert!(matches!(&v, GpuVerdict::Fail(w) if w.contains("/dev/nvidia0") && w.contains("libcublas")), "{v:?}");
        // the driver reports a device (a module that fails to load, cuBLAS missing)
        let v = gpu_verdict(&facts(false, false, &[], Some(2)), Err("kernel module 'loss' could not be loaded".into()));
        assert!(matches!(&v, GpuVerdict::Fail(w) if w.contains("2 device") && w.contains("'loss'")), "{v:?}");
    }

    #[test]
    fn hidden_gpus_skip_unless_required() {
        let e = || Err("no CUDA device found".to_string());
        let hidden = facts(false, true, &["/dev/nvidia0"], Some(0));
        assert!(matches!(gpu_verdict(&hidden, e()), GpuVerdict::Skip(w) if w.contains("CUDA_VISIBLE_DEVICES")));
        assert!(!hidden.gpu_expected());
        let required = GpuFacts { required: true, ..hidden };
        assert!(required.gpu_expected());
        assert!(matches!(gpu_verdict(&required, e()), GpuVerdict::Fail(_)));
    }

    #[test]
    fn kernel_entries_are_gpu_nodes_and_proc_folders_only() {
        let root = std::env::temp_dir().join(format!("attnas-gpu-facts-{}", std::process::id()));
        let (dev, proc_gpus) = (root.join("dev"), root.join("gpus"));
        std::fs::create_dir_all(&dev).unwrap();
        for n in ["nvidiactl", "nvidia-uvm", "nvidia-modeset", "null", "nvidia"] {
            std::fs::write(dev.join(n), b"").unwrap();
        }
        // a container without GPUs: control nodes only, no /proc folder
        assert!(kernel_gpu_entries(&dev, &proc_gpus).is_empty());
        std::fs::write(dev.join("nvidia1"), b"").unwrap();
        std::fs::write(dev.join("nvidia0"), b"").unwrap();
        std::fs::create_dir_all(proc_gpus.join("0000:19:00.0")).unwrap();
        let got = kernel_gpu_entries(&dev, &proc_gpus);
        let _ = std::fs::remove_dir_all(&root);
        let want: Vec<String> = [dev.join("nvidia0"), dev.join("nvidia1"), proc_gpus.join("0000:19:00.0")]
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(got, want);
    }

    /// The guard the issue asks for: a plain `cargo test` (no `emu`) on a machine without a GPU fails
    /// here, in the first test binary cargo runs, instead of passing every kernel test as a skip line.
    #[test]
    fn emulator_is_built_or_a_gpu_is_expected() {
        let emu = cfg!(feature = "emu");
        assert!(
            emu || gpu_expected(),
            "built without the SIMT emulator and no GPU is expected here: every CUDA kernel test would only print \
             a skip line. Run `cargo test --features emu` (scripts/test.sh), or REQUIRE_GPU=1 on a GPU machine"
        );
    }

    #[test]
    fn skip_or_require_fails_only_when_required() {
        // a variable nobody sets: one skip line, no panic
        skip_or_require("t", "nothing here", "ATTNAS_TEST_UNSET_REQUIRE_VARIABLE");
        assert_eq!(required_failure("t", "x", "REQUIRE_SHARED_DATA", false), None);
        let msg = required_failure("t", "the sample is missing", "REQUIRE_SHARED_DATA", true).unwrap_or_default();
        assert!(msg.contains("REQUIRE_SHARED_DATA=1") && msg.contains("the sample is missing"), "{msg}");
    }
}
