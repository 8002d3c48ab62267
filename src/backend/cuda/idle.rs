//! GPU idle time (issue #13 item 3: `bench train` reports how long the GPU sat idle in a step).
//!
//! A gap opens where the host starts waiting for the stream (a read back or an explicit
//! synchronisation: the queue drains, and after the last queued work the GPU has nothing to run) and
//! closes where the host enqueues the next work. Two timing events bracket it on the stream: the first
//! completes when the queued work before the wait completes, the second, recorded into an empty queue,
//! as soon as the host records it. The time between them is the time the GPU had nothing queued, the
//! cost of the host's wait and of its work until the next launch (the attentive draw's candidate reads,
//! the loss read backs, the step's bookkeeping).
//!
//! Off unless a bench turns it on ([`IdleProbe::set`]); then each gap costs two event records and
//! nothing is synchronised until [`IdleProbe::take`]. When off, the check before each enqueue is one
//! relaxed atomic load.

use super::error::CudaError;
use cudarc::driver::{sys as drv_sys, CudaEvent, CudaStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The idle gaps of one stream.
#[derive(Default)]
pub struct IdleProbe {
    on: AtomicBool,
    /// A gap is open: the next enqueue closes it.
    open: AtomicBool,
    state: Mutex<Gaps>,
}

#[derive(Default)]
struct Gaps {
    start: Option<CudaEvent>,
    closed: Vec<(CudaEvent, CudaEvent)>,
}

fn record(stream: &CudaStream) -> Result<CudaEvent, CudaError> {
    stream
        .record_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(|e| CudaError::driver("cuEventRecord (idle probe)", e))
}

impl IdleProbe {
    /// Turns the probe on or off; either way the gaps so far are dropped.
    pub fn set(&self, on: bool) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.start = None;
        g.closed.clear();
        self.open.store(false, Ordering::Relaxed);
        self.on.store(on, Ordering::Relaxed);
    }

    /// Before the host waits for `stream` (after the wait's own copy, if any, is queued).
    pub fn open_gap(&self, stream: &CudaStream) -> Result<(), CudaError> {
        if !self.on.load(Ordering::Relaxed) || self.open.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.start = Some(record(stream)?);
        self.open.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Before the host enqueues work on `stream` (a launch, a GEMM, a copy).
    pub fn close_gap(&self, stream: &CudaStream) -> Result<(), CudaError> {
        if !self.open.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(start) = g.start.take() {
            let end = record(stream)?;
            g.closed.push((start, end));
        }
        self.open.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The closed gaps since the last call (or [`Self::set`]): total milliseconds and how many; a gap
    /// still open is left for the next call. Waits for the gaps' events.
    pub fn take(&self) -> Result<(f64, u64), CudaError> {
        let closed = std::mem::take(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()).closed);
        let mut ms = 0.0;
        for (start, end) in &closed {
            ms += start.elapsed_ms(end).map_err(|e| CudaError::driver("cuEventElapsedTime (idle probe)", e))? as f64;
        }
        Ok((ms, closed.len() as u64))
    }
}
