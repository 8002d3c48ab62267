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
//! Uploads larger than [`STAGED_MAX_BYTES`] (large f32 batches, whole checkpoints) and every upload after a
//! failed pinned allocation (a container with a small locked-memory limit) take the pageable path and
//! synchronise as before; the fallback is reported once on stderr.

use super::error::CudaError;
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaEvent, CudaStream, PinnedHostSlice};
use std::sync::{Arc, Mutex};

/// Staging buffers in the ring. A training step uploads two tensors (pixels and labels); four slots
/// mean a slot is reused two steps later.
pub const SLOTS: usize = 4;

/// Uploads above this size take the synchronous path, so that the ring holds at most
/// `SLOTS * STAGED_MAX_BYTES` of page-locked memory (in practice two batches' worth: a 224 px batch of
/// 512 images is 77 MB of u8; f32 evaluation batches of that size are the ones that go unstaged).
pub const STAGED_MAX_BYTES: usize = 128 << 20;

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
    /// Copies `src` into a staging buffer, calls `before_enqueue` (the caller closes an idle gap or
    /// orders `stream` after other work: the host's copy is done by then, so the device's idle time
    /// includes it) and queues the copy to device address `dst` on `stream`.
    ///
    /// # Safety
    /// `dst` must be a live device allocation of at least `src.len()` bytes in `ctx`, and stay so until
    /// the copy has run: on the compute stream cudarc frees in stream order (`cuMemFreeAsync` on it, or
    /// `cuMemFree`, which waits for the device); on the copy stream [`CopyStream::join`] must be queued
    /// on the compute stream before the memory is freed (`GpuMemory`'s drop does).
    pub unsafe fn upload(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
        dst: u64,
        src: &[u8],
        before_enqueue: &mut dyn FnMut() -> Result<(), CudaError>,
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
        // a free slot large enough, from the round-robin position on; else the round-robin slot (so that
        // a stream of alternating large and small uploads keeps its buffers instead of regrowing them)
        let fits = |s: &Option<Slot>| s.as_ref().is_some_and(|s| s.buf.len() >= src.len() && s.done.is_complete());
        let i = (0..SLOTS).map(|k| (ring.next + k) % SLOTS).find(|&k| fits(&ring.slots[k])).unwrap_or(ring.next);
        ring.next = (i + 1) % SLOTS;
        // the slot's previous copy must have left its buffer before the host writes or frees it
        if let Some(slot) = &ring.slots[i] {
            if !slot.done.try_is_complete().map_err(|e| CudaError::driver("cuEventQuery (staging)", e))? {
                slot.done.synchronize().map_err(|e| CudaError::driver("cuEventSynchronize (staging)", e))?;
                ring.slot_waits += 1;
            }
        }
        if ring.slots[i].as_ref().is_none_or(|s| s.buf.len() < src.len()) {
            ring.slots[i] = None; // free the smaller buffer first (its copy is done: checked above)
            match new_slot(ctx, src.len()) {
                Ok(slot) => ring.slots[i] = Some(slot),
                Err(e) => {
                    // the other slots' copies may still be running: wait for them before freeing
                    for slot in ring.slots.iter().flatten() {
                        slot.done.synchronize().map_err(|e| CudaError::driver("cuEventSynchronize (staging)", e))?;
                    }
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
        before_enqueue()?;
        // SAFETY: `host` is page-locked memory owned by the slot. It is neither written nor freed
        // before the slot's `done` event, recorded right after this copy, has completed: reuse and
        // replacement wait for it above, disabling waits for every slot, and `Ring`'s drop waits for
        // all of them (the PinnedHostSlice's own event is never recorded, so its drop does not).
        // `dst` is live for src.len() bytes until the copy has run (the caller's contract).
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
/// training batch is copied while the current step's kernels run on the compute stream. Each upload
/// makes the copy stream wait for an event recorded on the compute stream at the call (so the copy
/// follows every earlier reader of its destination) and records `copied` after the copy;
/// [`CopyLane::join`] makes the compute stream wait for `copied`. Both are stream-side waits: the host
/// never blocks. Recording an event again is safe once the waits on its earlier recording are queued
/// (`cuStreamWaitEvent` uses the event's latest recording at the call).
struct CopyStream {
    stream: Arc<CudaStream>,
    fence: CudaEvent,
    copied: CudaEvent,
    /// An upload since the last join.
    pending: bool,
}

/// A device's copy stream (created on first use) with its compute stream, shared by the device and its
/// memory: freeing device memory joins the copy stream first (`GpuMemory`'s drop), since cudarc frees
/// in the compute stream's order, which knows nothing of the copy stream's work.
pub struct CopyLane {
    ctx: Arc<CudaContext>,
    compute: Arc<CudaStream>,
    copy: Mutex<Option<CopyStream>>,
}

impl CopyLane {
    pub fn new(ctx: Arc<CudaContext>, compute: Arc<CudaStream>) -> Self {
        CopyLane { ctx, compute, copy: Mutex::new(None) }
    }

    /// Queues `src` to `dst` on the copy stream after the work enqueued so far on the compute stream;
    /// returns `Staged::Pageable` (nothing queued) where staging is unavailable.
    ///
    /// # Safety
    /// As [`Staging::upload`]; and nothing enqueued on the compute stream before [`Self::join`] may
    /// touch `dst`.
    pub unsafe fn upload(&self, staging: &Staging, dst: u64, src: &[u8]) -> Result<Staged, CudaError> {
        let mut guard = self.copy.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let stream = self.ctx.new_stream().map_err(|e| CudaError::driver("cuStreamCreate (copy stream)", e))?;
            let event = || {
                self.ctx
                    .new_event(Some(drv_sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                    .map_err(|e| CudaError::driver("cuEventCreate (copy stream)", e))
            };
            *guard = Some(CopyStream { stream, fence: event()?, copied: event()?, pending: false });
        }
        let Some(cs) = guard.as_mut() else {
            return Ok(Staged::Pageable);
        };
        let CopyStream { stream, fence, copied, pending } = cs;
        let compute = &self.compute;
        // after the host's copy into the staging buffer: order the copy stream after the compute
        // stream's work so far, and count the upload as pending before anything can fail
        let mut order = || -> Result<(), CudaError> {
            fence.record(compute).map_err(|e| CudaError::driver("cuEventRecord (copy fence)", e))?;
            stream.wait(fence).map_err(|e| CudaError::driver("cuStreamWaitEvent (copy stream)", e))?;
            *pending = true;
            Ok(())
        };
        // SAFETY: the caller's contract, passed on.
        let staged = unsafe { staging.upload(&self.ctx, stream, dst, src, &mut order) }?;
        if staged == Staged::Queued {
            copied.record(stream).map_err(|e| CudaError::driver("cuEventRecord (copied)", e))?;
        }
        Ok(staged)
    }

    /// Makes the compute stream's later work wait for the uploads queued so far (a stream wait; the
    /// host does not block).
    pub fn join(&self) -> Result<(), CudaError> {
        let mut guard = self.copy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cs) = guard.as_mut().filter(|cs| cs.pending) {
            self.compute.wait(&cs.copied).map_err(|e| CudaError::driver("cuStreamWaitEvent (join copies)", e))?;
            cs.pending = false;
        }
        Ok(())
    }
}
