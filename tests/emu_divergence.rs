//! Divergent barriers fail the launch with the kernel's name within seconds, never hang: threads that
//! exit before a `__syncthreads` the others wait at, threads at two different `__syncthreads`, and a
//! warp shuffle whose mask names exited lanes (planted kernels, kernels/emu/planted/emu_planted.cu).
//! After such a failure the emulator keeps working. A kernel that never returns (here: a wait for a
//! later block) stops the process with the kernel's name after SIMT_LAUNCH_TIMEOUT_S instead of
//! hanging CI (checked in a child process).
#![cfg(feature = "emu")]

use attnas::backend::cuda::emu::EmuDevice;
use attnas::backend::cuda::{KernelArg, KernelDevice, LaunchDims};
use attnas::backend::DeviceMemory;
use std::process::Command;
use std::time::{Duration, Instant};

fn expect_divergence(kernel: &str, block: u32, needles: &[&str]) {
    let dev = EmuDevice::new();
    let n = 4 * block as usize;
    let (x, y) = (dev.alloc(n).unwrap(), dev.alloc(n).unwrap());
    let dims = LaunchDims { grid: (4, 1, 1), block: (block, 1, 1), shared_bytes: 0 };
    let start = Instant::now();
    let err = dev
        .launch_test_kernel(kernel, dims, &[y.tensor().into(), x.tensor().into(), KernelArg::I32(n as i32)])
        .expect_err("a divergent barrier must fail the launch")
        .to_string();
    let took = start.elapsed();
    println!("{kernel}: {err} (after {took:?})");
    // Detection is deterministic (every live thread waiting), not a timeout; the bound only tells it apart
    // from the 300 s watchdog, with room for a loaded 2-core CI machine.
    assert!(took < Duration::from_secs(60), "{kernel}: detected after {took:?}");
    assert!(err.contains(kernel), "error must name the kernel: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{kernel}: error lacks '{needle}': {err}");
    }

    // the emulator still works afterwards
    let xs: Vec<f32> = (0..n).map(|i| i as f32).collect();
    dev.upload(x.tensor(), &xs).unwrap();
    let ok = LaunchDims { grid: (4, 1, 1), block: (block, 1, 1), shared_bytes: 0 };
    dev.launch_test_kernel(
        "emu_block_reverse_f32",
        ok,
        &[y.tensor().into(), x.tensor().into(), KernelArg::I32(n as i32)],
    )
    .unwrap();
    assert_eq!(dev.download(y.tensor()).unwrap()[0], (block - 1) as f32);
}

#[test]
fn exit_before_barrier_is_reported_with_the_kernel_name() {
    expect_divergence(
        "planted_barrier_after_exit_f32",
        256,
        &[
            "divergent barrier",
            "__syncthreads()",
            "emu_planted.cu:",
            "128 of 256 thread(s) have exited",
            "block (0,0,0)",
        ],
    );
}

#[test]
fn barrier_at_two_call_sites_is_reported_with_both_lines() {
    expect_divergence("planted_barrier_two_sites_f32", 64, &["different __syncthreads()", "emu_planted.cu:"]);
}

#[test]
fn shuffle_waiting_for_exited_lanes_is_reported() {
    expect_divergence("planted_shuffle_after_exit_f32", 64, &["__shfl_xor_sync", "have exited", "emu_planted.cu:"]);
}

const CHILD_ENV: &str = "ATTNAS_EMU_HANG_CHILD";

#[test]
#[ignore = "child process of launch_that_never_returns_stops_the_process_with_the_kernel_name"]
fn child_launches_a_kernel_that_never_returns() {
    if std::env::var(CHILD_ENV).is_ok() {
        let dev = EmuDevice::new();
        let flag = dev.alloc(1).unwrap();
        let dims = LaunchDims { grid: (2, 1, 1), block: (1, 1, 1), shared_bytes: 0 };
        let r = dev.launch_test_kernel("planted_wait_for_later_block_i32", dims, &[flag.tensor().into()]);
        eprintln!("child: the launch returned {r:?}");
    }
}

#[test]
fn launch_that_never_returns_stops_the_process_with_the_kernel_name() {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_launches_a_kernel_that_never_returns", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("SIMT_LAUNCH_TIMEOUT_S", "1")
        .env("SIMT_FORCE_THREADS", "1") // blocks in sequence: block 0 waits for block 1 forever
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child should have been stopped:\n{err}");
    assert!(err.contains("planted_wait_for_later_block_i32") && err.contains("still running"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}
