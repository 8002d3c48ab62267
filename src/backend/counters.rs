//! Counters on the device seam: how many kernel launches, GEMMs, device allocations, uploads, host reads
//! and synchronisations a piece of work caused. `bench train` prints them per step, and the tests use them
//! to pin what a step does to the device (issue #13: a lean step allocates nothing and reads the host back
//! only where it must). The CUDA backend counts (a GPU and the emulator alike, so the emulator's counts are
//! the GPU's); the CPU backend has no device and reports none.

use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters; the difference of two snapshots is the work in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpCounts {
    /// Kernel launches (each `.cu` entry point launched once counts 1).
    pub launches: u64,
    /// GEMM calls (cuBLAS on a GPU).
    pub gemms: u64,
    /// Device allocations, and their bytes (nothing is freed during a run's steps, so the total since the
    /// backend was created is the run's device memory).
    pub allocations: u64,
    pub allocated_bytes: u64,
    /// Host-to-device copies.
    pub uploads: u64,
    /// Device-to-host reads: each one waits for the stream to drain.
    pub downloads: u64,
    /// Explicit stream synchronisations.
    pub synchronizations: u64,
}

impl OpCounts {
    /// Times the host waited for the device: reads plus explicit synchronisations.
    pub fn host_waits(&self) -> u64 {
        self.downloads + self.synchronizations
    }
}

impl Sub for OpCounts {
    type Output = OpCounts;
    fn sub(self, earlier: OpCounts) -> OpCounts {
        OpCounts {
            launches: self.launches.saturating_sub(earlier.launches),
            gemms: self.gemms.saturating_sub(earlier.gemms),
            allocations: self.allocations.saturating_sub(earlier.allocations),
            allocated_bytes: self.allocated_bytes.saturating_sub(earlier.allocated_bytes),
            uploads: self.uploads.saturating_sub(earlier.uploads),
            downloads: self.downloads.saturating_sub(earlier.downloads),
            synchronizations: self.synchronizations.saturating_sub(earlier.synchronizations),
        }
    }
}

impl Add for OpCounts {
    type Output = OpCounts;
    fn add(self, o: OpCounts) -> OpCounts {
        OpCounts {
            launches: self.launches + o.launches,
            gemms: self.gemms + o.gemms,
            allocations: self.allocations + o.allocations,
            allocated_bytes: self.allocated_bytes + o.allocated_bytes,
            uploads: self.uploads + o.uploads,
            downloads: self.downloads + o.downloads,
            synchronizations: self.synchronizations + o.synchronizations,
        }
    }
}

/// The live counters of one backend (relaxed atomics: each is an independent tally).
#[derive(Debug, Default)]
pub struct OpCounters {
    launches: AtomicU64,
    gemms: AtomicU64,
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
    synchronizations: AtomicU64,
}

/// Which counter an event bumps.
#[derive(Clone, Copy, Debug)]
pub enum OpEvent {
    Launch,
    Gemm,
    Allocation,
    Upload,
    Download,
    Synchronization,
}

impl OpCounters {
    pub fn note(&self, event: OpEvent) {
        let c = match event {
            OpEvent::Launch => &self.launches,
            OpEvent::Gemm => &self.gemms,
            OpEvent::Allocation => &self.allocations,
            OpEvent::Upload => &self.uploads,
            OpEvent::Download => &self.downloads,
            OpEvent::Synchronization => &self.synchronizations,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// One device allocation of `bytes`.
    pub fn note_allocation(&self, bytes: u64) {
        self.note(OpEvent::Allocation);
        self.allocated_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OpCounts {
        OpCounts {
            launches: self.launches.load(Ordering::Relaxed),
            gemms: self.gemms.load(Ordering::Relaxed),
            allocations: self.allocations.load(Ordering::Relaxed),
            allocated_bytes: self.allocated_bytes.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            synchronizations: self.synchronizations.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_subtract_to_the_work_in_between() {
        let c = OpCounters::default();
        c.note_allocation(4096);
        let before = c.snapshot();
        assert_eq!((before.allocations, before.allocated_bytes), (1, 4096));
        for _ in 0..3 {
            c.note(OpEvent::Launch);
        }
        c.note(OpEvent::Download);
        c.note(OpEvent::Synchronization);
        let d = c.snapshot() - before;
        assert_eq!(d, OpCounts { launches: 3, downloads: 1, synchronizations: 1, ..OpCounts::default() });
        assert_eq!(d.host_waits(), 2);
        assert_eq!(before - c.snapshot(), OpCounts::default(), "saturates instead of wrapping");
        assert_eq!(before + d, c.snapshot());
    }
}
