//! The sanitizer builds catch the planted bugs (kernels/emu/planted/emu_planted.cu): AddressSanitizer an
//! off-by-one write to global memory, to a static `__shared__` array and to the dynamic shared arena
//! (like compute-sanitizer memcheck); ThreadSanitizer a shared-memory race from a missing
//! `__syncthreads` (like racecheck), and not the same kernel with its barrier. Each planted kernel runs
//! in a child process (this test binary, filtered to the ignored `child_runs_planted_kernel`), since
//! ASan aborts it; the parent asserts on the child's stderr. Without the matching `EMU_SANITIZE` build
//! the tests print `skipped:`; scripts/emu-sanitize.sh runs them in both builds.
#![cfg(feature = "emu")]

use attnas::backend::cuda::emu::{sanitizer, EmuDevice};
use attnas::backend::cuda::{KernelArg, KernelDevice, LaunchDims};
use attnas::backend::DeviceMemory;
use std::process::Command;

const CHILD_ENV: &str = "ATTNAS_EMU_PLANTED_CHILD";
const N: usize = 512;
const BLOCK: u32 = 256;

/// Launches test kernel `name` over N elements with 256-thread blocks (dynamic shared: one float per
/// thread).
fn run_kernel(name: &str) {
    let dev = EmuDevice::new();
    let (x, y) = (dev.alloc(N).unwrap(), dev.alloc(N).unwrap());
    dev.upload(x.tensor(), &vec![1.0; N]).unwrap();
    let dims = LaunchDims { grid: (N as u32 / BLOCK, 1, 1), block: (BLOCK, 1, 1), shared_bytes: BLOCK * 4 };
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
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--ignored", "--exact", "child_runs_planted_kernel", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, kernel)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr)
}

fn needs(build: &str, test: &str) -> bool {
    if sanitizer() != build {
        println!("skipped: {test}: needs the EMU_SANITIZE={build} build (scripts/emu-sanitize.sh)");
        return false;
    }
    true
}

fn assert_asan_reports(kernel: &str, kind: &str) {
    let (ok, err) = in_child(kernel);
    assert!(!ok, "{kernel}: the child should have been stopped by AddressSanitizer:\n{err}");
    for needle in ["ERROR: AddressSanitizer: ", kind, "WRITE of size 4", kernel, "kernels/emu/planted/emu_planted.cu"] {
        assert!(err.contains(needle), "{kernel}: AddressSanitizer report lacks '{needle}':\n{err}");
    }
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
