//! The GPU idle probe behind `bench train`'s "GPU idle" line (`backend::cuda::idle`): on a GPU, a host
//! pause between a synchronisation and the next enqueue is one gap at least as long as the pause, work
//! queued without a wait opens none, and nothing is measured while the probe is off. The CPU backend and
//! the emulator (launches run synchronously: no queue to drain) report `None`. The GPU part prints one
//! `skipped:` line without a GPU.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::{Backend, DeviceMemory};
use std::time::Duration;

/// Two D2D copies' worth of buffers, a synchronisation, a pause, the next copy: (ms, gaps) read back.
fn pause_between_wait_and_copy<B: Backend>(b: &B, pause: Duration) -> Option<(f64, u64)> {
    let (x, y) = (b.alloc(1 << 20).unwrap(), b.alloc(1 << 20).unwrap());
    b.copy(x.tensor(), y.tensor()).unwrap();
    b.synchronize().unwrap();
    std::thread::sleep(pause);
    b.copy(y.tensor(), x.tensor()).unwrap();
    b.take_gpu_idle().unwrap()
}

#[test]
fn idle_probe_measures_the_host_pause_between_a_wait_and_the_next_launch() {
    let cpu = CpuBackend::new();
    cpu.set_idle_probe(true);
    assert_eq!(pause_between_wait_and_copy(&cpu, Duration::ZERO), None, "the CPU backend has no GPU to idle");
    #[cfg(feature = "emu")]
    {
        let emu = attnas::backend::cuda::CudaBackend::new(attnas::backend::cuda::emu::EmuDevice::new());
        emu.set_idle_probe(true);
        assert_eq!(pause_between_wait_and_copy(&emu, Duration::ZERO), None, "the emulator has no queue");
    }
    let Some(b) = attnas::testing::gpu_or_skip("idle_probe_measures_the_host_pause_between_a_wait_and_the_next_launch")
    else {
        return;
    };
    b.set_idle_probe(true);
    let (ms, gaps) = pause_between_wait_and_copy(&b, Duration::from_millis(50)).expect("a GPU measures idle time");
    assert_eq!(gaps, 1, "one wait, one gap");
    assert!((45.0..2000.0).contains(&ms), "a 50 ms host pause measured as {ms:.3} ms of GPU idle time");
    // work queued back to back, no wait in between: no gap
    let (x, y) = (b.alloc(1 << 20).unwrap(), b.alloc(1 << 20).unwrap());
    for _ in 0..4 {
        b.copy(x.tensor(), y.tensor()).unwrap();
    }
    assert_eq!(b.take_gpu_idle().unwrap(), Some((0.0, 0)), "no wait, no gap");
    // off: a wait and a pause are not measured
    b.set_idle_probe(false);
    assert_eq!(pause_between_wait_and_copy(&b, Duration::from_millis(5)), Some((0.0, 0)), "probe off");
}
