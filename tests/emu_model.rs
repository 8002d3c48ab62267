//! The SIMT emulator's execution model, kernel by kernel (kernels/emu/selftest/emu_selftest.cu), each
//! against an expectation computed here by plain loops: 3-D builtins, the block barrier with a static
//! per-block shared tile, dynamic shared memory sized by the launch, every warp intrinsic (full and
//! partial warps), atomics, and the launch checks a GPU makes. Run with `cargo test --features emu`.
#![cfg(feature = "emu")]

use attnas::backend::cuda::emu::EmuDevice;
use attnas::backend::cuda::{KernelArg, KernelDevice, LaunchDims};
use attnas::backend::DeviceMemory;
use attnas::testing::{assert_close, random_vec};

fn dims(grid: (u32, u32, u32), block: (u32, u32, u32), shared_bytes: u32) -> LaunchDims {
    LaunchDims { grid, block, shared_bytes }
}

fn ints(v: &[f32]) -> Vec<i32> {
    v.iter().map(|f| f.to_bits() as i32).collect()
}

fn as_f32(v: &[i32]) -> Vec<f32> {
    v.iter().map(|&i| f32::from_bits(i as u32)).collect()
}

#[test]
fn builtins_cover_every_dimension() {
    let dev = EmuDevice::new();
    let (grid, block) = ((3u32, 2u32, 2u32), (4u32, 3u32, 2u32));
    let threads = (grid.0 * grid.1 * grid.2 * block.0 * block.1 * block.2) as usize;
    let out = dev.alloc(threads * 8).unwrap();
    dev.launch_test_kernel("emu_index_3d_i32", dims(grid, block, 0), &[out.tensor().into()]).unwrap();
    let got = ints(&dev.download(out.tensor()).unwrap());
    let mut g = 0usize;
    for bz in 0..grid.2 {
        for by in 0..grid.1 {
            for bx in 0..grid.0 {
                for tz in 0..block.2 {
                    for ty in 0..block.1 {
                        for tx in 0..block.0 {
                            let want = [
                                g as i32,
                                tx as i32,
                                ty as i32,
                                tz as i32,
                                bx as i32,
                                by as i32,
                                bz as i32,
                                (grid.0 * 10000 + grid.1 * 100 + grid.2) as i32,
                            ];
                            assert_eq!(&got[g * 8..g * 8 + 8], &want, "thread {g}");
                            g += 1;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn barrier_and_static_shared_tile_reverse_each_block() {
    let dev = EmuDevice::new();
    for (n, threads) in [(1000usize, 128u32), (1, 32), (300, 1024), (777, 96)] {
        let xs = random_vec(n as u64, n, -1.0, 1.0);
        let (x, y) = (dev.alloc(n).unwrap(), dev.alloc(n).unwrap());
        dev.upload(x.tensor(), &xs).unwrap();
        let blocks = n.div_ceil(threads as usize) as u32;
        dev.launch_test_kernel(
            "emu_block_reverse_f32",
            dims((blocks, 1, 1), (threads, 1, 1), 0),
            &[y.tensor().into(), x.tensor().into(), KernelArg::I32(n as i32)],
        )
        .unwrap();
        let t = threads as usize;
        let mut padded = xs.clone();
        padded.resize(blocks as usize * t, 0.0);
        let want: Vec<f32> = (0..n).map(|i| padded[(i / t) * t + (t - 1 - i % t)]).collect();
        assert_eq!(dev.download(y.tensor()).unwrap(), want, "n={n} threads={threads}");
    }
}

#[test]
fn dynamic_shared_is_sized_by_the_launch() {
    let dev = EmuDevice::new();
    for (n, threads) in [(1000usize, 256u32), (33, 64), (5000, 1024)] {
        let xs = random_vec(3 + n as u64, n, -1.0, 1.0);
        let blocks = n.div_ceil(threads as usize);
        let (x, sums, counts) = (dev.alloc(n).unwrap(), dev.alloc(blocks).unwrap(), dev.alloc(blocks).unwrap());
        dev.upload(x.tensor(), &xs).unwrap();
        dev.launch_test_kernel(
            "emu_block_sum_dyn_f32",
            dims((blocks as u32, 1, 1), (threads, 1, 1), threads * 4),
            &[sums.tensor().into(), counts.tensor().into(), x.tensor().into(), KernelArg::I32(n as i32)],
        )
        .unwrap();
        let chunks: Vec<&[f32]> = xs.chunks(threads as usize).collect();
        let want_sums: Vec<f32> = chunks.iter().map(|c| c.iter().map(|&v| v as f64).sum::<f64>() as f32).collect();
        let want_counts: Vec<i32> = chunks.iter().map(|c| c.iter().filter(|&&v| v > 0.0).count() as i32).collect();
        // tree order vs sequential f64: at most log2(1024) = 10 roundings of partial sums <= 1024
        assert_close(&format!("block sums n={n}"), &dev.download(sums.tensor()).unwrap(), &want_sums, 1e-4, 1e-5);
        assert_eq!(ints(&dev.download(counts.tensor()).unwrap()), want_counts, "__syncthreads_count n={n}");
    }
}

/// What `emu_warp_ops_i32` must write for one block of `b` threads with inputs `v`.
fn warp_ops_expected(v: &[i32]) -> Vec<i32> {
    let b = v.len();
    let mut out = Vec::with_capacity(b * 10);
    for t in 0..b {
        let (warp, l) = (t / 32, t % 32);
        let present = (b - warp * 32).min(32);
        let lane = |j: usize| if j < present { v[warp * 32 + j] } else { -1 }; // poison: all bits set
        let live = (0..present).map(lane);
        let ballot = (0..present).filter(|&j| lane(j) > 0).fold(0u32, |m, j| m | 1 << j);
        out.extend_from_slice(&[
            lane(3),
            if l >= 1 { lane(l - 1) } else { lane(l) },
            if l + 1 < 32 { lane(l + 1) } else { lane(l) },
            lane(l ^ 1),
            if l % 8 + 2 < 8 { lane(l + 2) } else { lane(l) },
            ballot as i32,
            (ballot != 0) as i32,
            live.clone().all(|x| x > 0) as i32,
            live.sum::<i32>(),
            l as i32,
        ]);
    }
    out
}

#[test]
fn warp_intrinsics_full_and_partial_warps() {
    let dev = EmuDevice::new();
    for (blocks, threads) in [(2u32, 64u32), (3, 48), (1, 20), (1, 1024)] {
        let n = (blocks * threads) as usize;
        let vals: Vec<i32> = random_vec(threads as u64, n, -100.0, 100.0).iter().map(|&f| f as i32).collect();
        let (input, out) = (dev.alloc(n).unwrap(), dev.alloc(n * 10).unwrap());
        dev.upload(input.tensor(), &as_f32(&vals)).unwrap();
        dev.launch_test_kernel(
            "emu_warp_ops_i32",
            dims((blocks, 1, 1), (threads, 1, 1), 0),
            &[out.tensor().into(), input.tensor().into()],
        )
        .unwrap();
        let got = ints(&dev.download(out.tensor()).unwrap());
        let want: Vec<i32> = vals.chunks(threads as usize).flat_map(warp_ops_expected).collect();
        for (t, (g, w)) in got.chunks(10).zip(want.chunks(10)).enumerate() {
            assert_eq!(g, w, "blocks={blocks} threads={threads} thread {t}: [shfl3, up1, down1, xor1, down2w8, ballot, any, all, sum, lane]");
        }
    }
}

#[test]
fn warp_shuffle_sum_reduction() {
    let dev = EmuDevice::new();
    let n = 8 * 128;
    let xs = random_vec(5, n, -1.0, 1.0);
    let (x, out) = (dev.alloc(n).unwrap(), dev.alloc(n / 32).unwrap());
    dev.upload(x.tensor(), &xs).unwrap();
    dev.launch_test_kernel(
        "emu_warp_sum_f32",
        dims((8, 1, 1), (128, 1, 1), 0),
        &[out.tensor().into(), x.tensor().into()],
    )
    .unwrap();
    let want: Vec<f32> = xs.chunks(32).map(|c| c.iter().map(|&v| v as f64).sum::<f64>() as f32).collect();
    // butterfly order vs f64: 5 roundings of sums <= 32
    assert_close("warp sums", &dev.download(out.tensor()).unwrap(), &want, 1e-5, 1e-5);
}

#[test]
fn atomics_from_every_thread_of_a_grid_stride_loop() {
    let dev = EmuDevice::new();
    for (n, blocks, threads) in [(10_007usize, 7u32, 96u32), (1, 1, 32), (4096, 64, 64)] {
        let xs = random_vec(9 + n as u64, n, -1.0, 1.0);
        let (x, counters, fsum) = (dev.alloc(n).unwrap(), dev.alloc(4).unwrap(), dev.alloc(1).unwrap());
        dev.upload(x.tensor(), &xs).unwrap();
        dev.upload(counters.tensor(), &as_f32(&[0, i32::MIN, i32::MAX, 0])).unwrap();
        dev.launch_test_kernel(
            "emu_atomics",
            dims((blocks, 1, 1), (threads, 1, 1), 0),
            &[counters.tensor().into(), fsum.tensor().into(), x.tensor().into(), KernelArg::I64(n as i64)],
        )
        .unwrap();
        let q: Vec<i32> = xs.iter().map(|&v| (v * 1000.0) as i32).collect();
        let want = [n as i32, *q.iter().max().unwrap(), *q.iter().min().unwrap(), n as i32];
        assert_eq!(ints(&dev.download(counters.tensor()).unwrap()), want, "n={n}");
        let sum: f64 = xs.iter().map(|&v| v as f64).sum();
        // n f32 additions in any order: |error| <= n * eps * sum|x| ~ 1e4 * 6e-8 * 1e4 / 2
        assert_close(
            &format!("atomicAdd float n={n}"),
            &dev.download(fsum.tensor()).unwrap(),
            &[sum as f32],
            5e-2,
            0.0,
        );
    }
}

#[test]
fn launch_checks_match_a_gpu() {
    let dev = EmuDevice::new();
    let (x, y) = (dev.alloc(64).unwrap(), dev.alloc(64).unwrap());
    let args = [y.tensor().into(), x.tensor().into(), KernelArg::I32(64)];
    let bad = [
        (dims((1, 1, 1), (1025, 1, 1), 0), "1024"),
        (dims((1, 1, 1), (32, 32, 2), 0), "2048 threads"),
        (dims((1, 1, 1), (1, 1, 65), 0), "per-dimension maximum"),
        (dims((0, 1, 1), (32, 1, 1), 0), "zero"),
        (dims((1, 65536, 1), (32, 1, 1), 0), "grid"),
        (dims((1, 1, 1), (32, 1, 1), 48 * 1024 + 4), "opt-in"),
        (dims((1, 1, 1), (32, 1, 1), 228 * 1024), "maximum of any block"),
    ];
    for (d, needle) in bad {
        let e = dev.launch_test_kernel("emu_block_reverse_f32", d, &args).unwrap_err().to_string();
        assert!(e.contains("emu_block_reverse_f32") && e.contains(needle), "{d:?}: {e}");
    }
    let e = dev
        .launch_test_kernel("emu_block_reverse_f32", dims((1, 1, 1), (32, 1, 1), 0), &[y.tensor().into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not match"), "{e}");
    // the opt-in raises the limit
    let opt = EmuDevice::with_shared_limit(100 * 1024).unwrap();
    let (s, c) = (opt.alloc(1).unwrap(), opt.alloc(1).unwrap());
    opt.launch_test_kernel(
        "emu_block_sum_dyn_f32",
        dims((1, 1, 1), (64, 1, 1), 64 * 1024),
        &[s.tensor().into(), c.tensor().into(), x.tensor().into(), KernelArg::I32(64)],
    )
    .unwrap();
    assert!(EmuDevice::with_shared_limit(300 * 1024).is_err());
}

#[test]
fn kernels_are_classified_by_what_they_call() {
    use attnas::backend::cuda::emu::runs_cooperatively;
    // independent: element-wise through the GRID_STRIDE_LOOP macro, atomics only, plain indexing
    for k in ["swish_fwd_f32", "swish_bwd_f32", "emu_atomics", "emu_index_3d_i32", "planted_oob_write_f32"] {
        assert_eq!(runs_cooperatively(k), Some(false), "{k}");
    }
    // cooperative: static or dynamic shared memory, barriers, warp intrinsics
    for k in [
        "emu_block_reverse_f32",
        "emu_block_sum_dyn_f32",
        "emu_warp_ops_i32",
        "emu_warp_sum_f32",
        "planted_barrier_two_sites_f32",
    ] {
        assert_eq!(runs_cooperatively(k), Some(true), "{k}");
    }
    assert_eq!(runs_cooperatively("no_such_kernel"), None);
}

#[test]
fn failed_device_assert_fails_the_launch() {
    let dev = EmuDevice::new();
    let out = dev.alloc(64).unwrap();
    let d = dims((2, 1, 1), (32, 1, 1), 0);
    dev.launch_test_kernel("emu_assert_i32", d, &[out.tensor().into(), KernelArg::I32(-1)]).unwrap();
    let e = dev.launch_test_kernel("emu_assert_i32", d, &[out.tensor().into(), KernelArg::I32(40)]).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("emu_assert_i32") && e.contains("assert(t != bad) failed") && e.contains("emu_selftest.cu:"),
        "{e}"
    );
}
