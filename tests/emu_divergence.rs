//! Divergent barriers fail the launch with the kernel's name within seconds, never hang: threads that
//! exit before a `__syncthreads` the others wait at, threads at two different `__syncthreads`, and a
//! warp shuffle whose mask names exited lanes (planted kernels, kernels/emu/planted/emu_planted.cu).
//! After such a failure the emulator keeps working.
#![cfg(feature = "emu")]

use attnas::backend::cuda::emu::EmuDevice;
use attnas::backend::cuda::{KernelArg, KernelDevice, LaunchDims};
use attnas::backend::DeviceMemory;
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
    assert!(took < Duration::from_secs(5), "{kernel}: detected after {took:?}");
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
