//! The sanitizer builds catch the planted bugs (kernels/emu/planted/emu_planted.cu): AddressSanitizer an
//! off-by-one write to global memory, to a static `__shared__` array and to the dynamic shared arena
//! (like compute-sanitizer memcheck), and a misaligned float4 load (the alignment check the ASan build
//! adds; a GPU faults on it); ThreadSanitizer a shared-memory race from a missing
//! `__syncthreads` (like racecheck), and not the same kernel with its barrier. Each planted kernel runs
//! in a child process (this test binary, filtered to the ignored `child_runs_planted_kernel`), since
//! ASan aborts it; the parent asserts on the child's stderr. Without the matching sanitized library
//! (`ATTNAS_EMU_LIBRARY`, with the sanitizer's runtime preloaded) the tests print `skipped:`;
//! scripts/emu-sanitize.sh builds both libraries and runs them under each. A library that cannot be used
//! is an error naming it, never a silent fallback to the unsanitized kernels.
#![cfg(feature = "emu")]

use attnas::backend::cuda::emu::{sanitizer, EmuDevice, LIBRARY_ENV};
use attnas::backend::cuda::{KernelArg, KernelDevice, LaunchDims};
use attnas::backend::DeviceMemory;
use std::process::Command;

const CHILD_ENV: &str = "ATTNAS_EMU_PLANTED_CHILD";
/// The child's "kernel" that only reports how the emulator library loaded.
const LIBRARY_CHECK: &str = "(library check)";
const N: usize = 500; // not a multiple of the block: the off-by-one thread exists
const BLOCK: u32 = 256;

/// Launches test kernel `name` over N elements with 256-thread blocks (dynamic shared: one float per
/// thread).
fn run_kernel(name: &str) {
    if name == LIBRARY_CHECK {
        eprintln!("child: sanitizer {:?}", sanitizer());
        eprintln!(
            "child: launch {:?}",
            EmuDevice::new().launch_test_kernel(
                name,
                LaunchDims { grid: (1, 1, 1), block: (1, 1, 1), shared_bytes: 0 },
                &[]
            )
        );
        return;
    }
    let dev = EmuDevice::new();
    let (x, y) = (dev.alloc(N).unwrap(), dev.alloc(N).unwrap());
    dev.upload(x.tensor(), &vec![1.0; N]).unwrap();
    let dims =
        LaunchDims { grid: (N.div_ceil(BLOCK as usize) as u32, 1, 1), block: (BLOCK, 1, 1), shared_bytes: BLOCK * 4 };
    let r = dev.launch_test_kernel(name, dims, &[y.tensor().into(), x.tensor().into(), KernelArg::I32(N as i32)]);
    eprintln!("child: {name} returned {r:?}");
}

#[test]
#[ignore = "child process of the sanitizer tests: runs a planted bug on purpose"]
fn child_runs_planted_kernel() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        run_kernel(&name);
    }
}

/// Runs `kernel` in a child process; returns (exited successfully, stderr).
fn in_child(kernel: &str) -> (bool, String) {
    in_child_with(kernel, &[])
}

fn in_child_with(kernel: &str, env: &[(&str, &str)]) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .envs(env.iter().copied())
        .args(["--ignored", "--exact", "child_runs_planted_kernel", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, kernel)
        .env("UBSAN_OPTIONS", "print_stacktrace=1") // so the alignment report names the kernel
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr)
}

fn needs(build: &str, test: &str) -> bool {
    if sanitizer().expect("the emulator library") != build {
        println!("skipped: {test}: needs the {build}-sanitized emulator library (scripts/emu-sanitize.sh)");
        return false;
    }
    true
}

fn assert_child_reports(kernel: &str, needles: &[&str]) {
    let (ok, err) = in_child(kernel);
    assert!(!ok, "{kernel}: the child should have been stopped by the sanitizer:\n{err}");
    for needle in needles.iter().chain(&[kernel, "kernels/emu/planted/emu_planted.cu:"]) {
        assert!(err.contains(needle), "{kernel}: the sanitizer report lacks '{needle}':\n{err}");
    }
}

fn assert_asan_reports(kernel: &str, kind: &str) {
    assert_child_reports(kernel, &["ERROR: AddressSanitizer: ", kind, "WRITE of size 4"]);
}

#[test]
fn asan_reports_off_by_one_global_write() {
    if needs("address", "asan_reports_off_by_one_global_write") {
        assert_asan_reports("planted_oob_write_f32", "heap-buffer-overflow");
    }
}

#[test]
fn asan_reports_off_by_one_static_shared_write() {
    if needs("address", "asan_reports_off_by_one_static_shared_write") {
        assert_asan_reports("planted_shared_oob_f32", "global-buffer-overflow");
    }
}

#[test]
fn asan_reports_off_by_one_dynamic_shared_write() {
    if needs("address", "asan_reports_off_by_one_dynamic_shared_write") {
        assert_asan_reports("planted_dyn_shared_oob_f32", "heap-buffer-overflow");
    }
}

#[test]
fn asan_build_reports_misaligned_vector_load() {
    if needs("address", "asan_build_reports_misaligned_vector_load") {
        assert_child_reports("planted_misaligned_float4_f32", &["misaligned address", "float4"]);
    }
}

#[test]
fn tsan_reports_missing_barrier_and_not_the_fixed_kernel() {
    if !needs("thread", "tsan_reports_missing_barrier_and_not_the_fixed_kernel") {
        return;
    }
    let (_, err) = in_child("planted_missing_barrier_f32");
    for needle in ["WARNING: ThreadSanitizer: data race", "planted_missing_barrier_f32", "emu_planted.cu"] {
        assert!(err.contains(needle), "ThreadSanitizer report lacks '{needle}':\n{err}");
    }
    let (ok, err) = in_child("emu_block_reverse_f32");
    assert!(ok && !err.contains("ThreadSanitizer"), "the same kernel with its barrier must be clean:\n{err}");
}

#[test]
fn an_unusable_emulator_library_is_an_error_naming_it() {
    // a missing file, and a shared library that is not the emulator: both refused by name, in the
    // sanitizer query and at a launch (no fallback to the built-in, unsanitized kernels)
    let missing = "/nonexistent/libattnas_simt_address.so";
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    for path in std::iter::once(missing).chain(libm) {
        let (_, err) = in_child_with(LIBRARY_CHECK, &[(LIBRARY_ENV, path)]);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("child: ")).collect();
        assert_eq!(lines.len(), 2, "{err}");
        for l in lines {
            assert!(l.contains("Err(") && l.contains(path) && l.contains("scripts/emu-sanitize.sh"), "{l}");
        }
    }
}
