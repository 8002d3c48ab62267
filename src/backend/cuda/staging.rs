//! Uploads without a host wait (issue #13 items 3 and 4): page-locked staging buffers for host-to-device
//! copies.
//!
//! A copy from pageable host memory must finish (or be staged by the driver) before the host may reuse
//! the buffer, so `upload` used to synchronise the stream after each copy: every training step's batch
//! (the u8 pixels and the labels) cost two host waits, each draining the queue, and the copy ran at
//! pageable speed. Here the host copies the bytes into one of [`SLOTS`] page-locked buffers (allocated on
//! first use, grown when a larger upload comes, then reused: no allocation in a steady step) and enqueues
//! the DMA from it on the stream, like a kernel; an event recorded after the copy says when the slot may
//! be written again. The host waits for that event only when it comes back to the slot, [`SLOTS`] uploads
//! later, by which time a step's reads have long drained the queue: in a training step the wait is never
//! taken. Stream order is unchanged (the copy is queued where the synchronous one ran), so results are
//! bit-identical.
//!
//! Uploads larger than [`STAGED_MAX_BYTES`] (whole checkpoints at start-up) and every upload after a
//! failed pinned allocation (a container with a small locked-memory limit) take the pageable path and
//! synchronise as before; the fallback is reported once on stderr.

use super::error::CudaError;
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaEvent, CudaStream, PinnedHostSlice};
use std::sync::{Arc, Mutex};

/// Staging buffers in the ring. A training step uploads two tensors (pixels and labels); four slots
/// mean a slot is reused two steps later.
pub const SLOTS: usize = 4;

/// Uploads above this size take the synchronous path, so that the ring holds at most
/// `SLOTS * STAGED_MAX_BYTES` of page-locked memory (a 224 px batch of 256 images is 38.5 MB of u8).
pub const STAGED_MAX_BYTES: usize = 64 << 20;

struct Slot {
    buf: PinnedHostSlice<u8>,
    /// Recorded on the stream after the copy out of `buf`: complete once `buf` may be written again.
    done: CudaEvent,
}

#[derive(Default)]
struct Ring {
    slots: Vec<Option<Slot>>,
    next: usize,
    /// A pinned allocation failed: every upload takes the synchronous path from then on.
    disabled: bool,
    /// Host waits for a slot's previous copy (0 in a steady training loop; tests read it).
    slot_waits: u64,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // page-locked memory must not be freed under a pending DMA
        for slot in self.slots.iter().flatten() {
            let _ = slot.done.synchronize();
        }
    }
}

/// The ring of staging buffers of one stream.
#[derive(Default)]
pub struct Staging {
    ring: Mutex<Ring>,
}

/// What [`Staging::upload`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Staged {
    /// Queued from a page-locked buffer; the host did not wait for the stream.
    Queued,
    /// Not staged (too large, or pinned memory unavailable): the caller copies and synchronises.
    Pageable,
}

impl Staging {
    /// Copies `src` into a staging buffer and queues its copy to device address `dst` on `stream`.
    ///
    /// # Safety
    /// `dst` must be a live device allocation of at least `src.len()` bytes in `ctx`. Freeing it after
    /// the call is fine: cudarc frees device memory in stream order (`cuMemFreeAsync` on this stream)
    /// or synchronously (`cuMemFree` waits for the device), either way after the queued copy.
    pub unsafe fn upload(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
        dst: u64,
        src: &[u8],
    ) -> Result<Staged, CudaError> {
        if src.is_empty() || src.len() > STAGED_MAX_BYTES {
            return Ok(Staged::Pageable);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.disabled {
            return Ok(Staged::Pageable);
        }
        if ring.slots.is_empty() {
            ring.slots.resize_with(SLOTS, || None);
        }
        let i = ring.next;
        ring.next = (i + 1) % SLOTS;
        // the slot's previous copy must have left its buffer before the host writes it
        if let Some(slot) = &ring.slots[i] {
            if !slot.done.try_is_complete().map_err(|e| CudaError::driver("cuEventQuery (staging)", e))? {
                slot.done.synchronize().map_err(|e| CudaError::driver("cuEventSynchronize (staging)", e))?;
                ring.slot_waits += 1;
            }
        }
        if ring.slots[i].as_ref().is_none_or(|s| s.buf.len() < src.len()) {
            ring.slots[i] = None; // free the smaller buffer first
            match new_slot(ctx, src.len()) {
                Ok(slot) => ring.slots[i] = Some(slot),
                Err(e) => {
                    ring.disabled = true;
                    ring.slots.clear();
                    eprintln!(
                        "attnas: page-locked staging unavailable ({e}); uploads synchronise the stream from now on"
                    );
                    return Ok(Staged::Pageable);
                }
            }
        }
        let Some(slot) = ring.slots[i].as_mut() else {
            return Ok(Staged::Pageable);
        };
        let host = slot.buf.as_mut_slice().map_err(|e| CudaError::driver("pinned buffer", e))?;
        host[..src.len()].copy_from_slice(src);
        // SAFETY: `host` is page-locked memory owned by the slot, which is not written again before
        // `done` completes (checked above on reuse) nor freed before it (Drop of PinnedHostSlice
        // synchronises its own event, and the slot is replaced only after `done` was checked); `dst`
        // is live for src.len() bytes (the caller's contract).
        unsafe { drv::memcpy_htod_async(dst, &host[..src.len()], stream.cu_stream()) }
            .map_err(|e| CudaError::driver("upload (staged)", e))?;
        slot.done.record(stream).map_err(|e| CudaError::driver("cuEventRecord (staging)", e))?;
        Ok(Staged::Queued)
    }

    /// Host waits for a slot's previous copy so far.
    pub fn slot_waits(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).slot_waits
    }
}

fn new_slot(ctx: &Arc<CudaContext>, bytes: usize) -> Result<Slot, CudaError> {
    // round up to 1 MiB so that a slightly larger batch (another resolution) reuses the buffer
    let len = bytes.div_ceil(1 << 20) * (1 << 20);
    // SAFETY: the buffer's contents are unset; only the bytes an upload writes first are ever read
    // (by that upload's copy).
    let buf = unsafe { ctx.alloc_pinned::<u8>(len) }.map_err(|e| CudaError::driver("cuMemHostAlloc", e))?;
    let done = ctx
        .new_event(Some(drv_sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
        .map_err(|e| CudaError::driver("cuEventCreate (staging)", e))?;
    Ok(Slot { buf, done })
}

/// The second stream that overlapped uploads run on (`Backend::upload_bytes_overlapped`): the next
/// training batch is copied while the current step's kernels run on the compute stream. Created on first
/// use. Each upload makes the copy stream wait for an event recorded on the compute stream at the call
/// (so the copy follows every earlier reader of its destination) and records `copied` after the copy;
/// [`CopyStream::join`] makes the compute stream wait for `copied`. Both are stream-side waits: the host
/// never blocks. Recording an event again is safe once the waits on its earlier recording are queued
/// (`cuStreamWaitEvent` uses the event's state at the call).
pub struct CopyStream {
    stream: Arc<CudaStream>,
    fence: CudaEvent,
    copied: CudaEvent,
    /// An upload since the last join.
    pending: bool,
}

impl CopyStream {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Self, CudaError> {
        let stream = ctx.new_stream().map_err(|e| CudaError::driver("cuStreamCreate (copy stream)", e))?;
        let event = || {
            ctx.new_event(Some(drv_sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(|e| CudaError::driver("cuEventCreate (copy stream)", e))
        };
        Ok(CopyStream { stream, fence: event()?, copied: event()?, pending: false })
    }

    /// Queues `src` to `dst` on the copy stream after the work enqueued so far on `compute`; returns
    /// `Staged::Pageable` (nothing queued) where staging is unavailable.
    ///
    /// # Safety
    /// As [`Staging::upload`]; and nothing enqueued on `compute` before [`Self::join`] may touch `dst`.
    pub unsafe fn upload(
        &mut self,
        staging: &Staging,
        ctx: &Arc<CudaContext>,
        compute: &CudaStream,
        dst: u64,
        src: &[u8],
    ) -> Result<Staged, CudaError> {
        self.fence.record(compute).map_err(|e| CudaError::driver("cuEventRecord (copy fence)", e))?;
        self.stream.wait(&self.fence).map_err(|e| CudaError::driver("cuStreamWaitEvent (copy stream)", e))?;
        // SAFETY: the caller's contract, passed on.
        let staged = unsafe { staging.upload(ctx, &self.stream, dst, src) }?;
        if staged == Staged::Queued {
            self.copied.record(&self.stream).map_err(|e| CudaError::driver("cuEventRecord (copied)", e))?;
            self.pending = true;
        }
        Ok(staged)
    }

    /// Makes `compute`'s later work wait for the uploads queued so far.
    pub fn join(&mut self, compute: &CudaStream) -> Result<(), CudaError> {
        if self.pending {
            compute.wait(&self.copied).map_err(|e| CudaError::driver("cuStreamWaitEvent (join copies)", e))?;
            self.pending = false;
        }
        Ok(())
    }
}
