//! Uploads are done with the host buffer when they return and land in stream order (`Backend::upload`,
//! `upload_bytes`). On a GPU they are queued from page-locked staging buffers without a host wait
//! (`backend::cuda::staging`): this checks, on every backend, that a run of uploads longer than the
//! staging ring, each from a host buffer overwritten right after the call, of growing sizes (a slot's
//! buffer regrown) and interleaved with device work that reads the tensors, leaves every byte right; and
//! on a GPU, that those uploads open no idle gap (no host wait) while an upload above the staging limit
//! still arrives (the synchronous path). The training batch's staging (`StepBuffers::stage_batch`, the
//! next batch copied while a step runs, then `use_staged`) is checked the same way: the step keeps its
//! batch until it takes the next. The GPU parts print one `skipped:` line without a GPU.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::cuda::staging::{SLOTS, STAGED_MAX_BYTES};
use attnas::backend::{Backend, DeviceMemory, SupernetOps};
use attnas::data::augment::normalize_nhwc;
use attnas::train::step::StepBuffers;

/// Deterministic host data for upload `i` of `len` f32 values.
fn pattern(i: usize, len: usize) -> Vec<f32> {
    (0..len).map(|j| ((i * 7919 + j * 31) % 1000) as f32 * 0.5 - 250.0).collect()
}

/// 3 * SLOTS uploads of growing size into distinct tensors, each followed by a device copy of the
/// tensor just written (a reader queued after the upload), the host buffer scribbled on right after
/// each call; then every tensor and every copy read back.
fn uploads_in_a_row_land_intact<B: Backend>(b: &B) {
    let n = 3 * SLOTS;
    let sizes: Vec<usize> = (0..n).map(|i| 1000 + i * 70_000).collect();
    let mut dst = Vec::new();
    let mut copies = Vec::new();
    let mut host = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let (d, c) = (b.alloc(len).unwrap(), b.alloc(len).unwrap());
        host.clear();
        host.extend(pattern(i, len));
        if i % 2 == 0 {
            b.upload(d.tensor(), &host).unwrap();
        } else {
            b.upload_bytes(d.tensor(), bytemuck::cast_slice(&host)).unwrap();
        }
        host.iter_mut().for_each(|v| *v = f32::NAN); // the call is done with it
        b.copy(d.tensor(), c.tensor()).unwrap();
        dst.push(d);
        copies.push(c);
    }
    for (i, &len) in sizes.iter().enumerate() {
        let want = pattern(i, len);
        assert_eq!(b.download(dst[i].tensor()).unwrap(), want, "upload {i} of {len} values");
        assert_eq!(b.download(copies[i].tensor()).unwrap(), want, "device copy after upload {i}");
    }
    // overlapped uploads: a synchronisation waits for them (no join needed), and memory freed with
    // one pending is freed after it (a new allocation, likely at the same address, keeps its own data)
    let len = 300_000;
    for i in 0..2 * SLOTS {
        let m = b.alloc(len).unwrap();
        b.upload_bytes_overlapped(m.tensor(), bytemuck::cast_slice(&pattern(i, len))).unwrap();
        if i % 2 == 0 {
            b.synchronize().unwrap();
            assert_eq!(b.download(m.tensor()).unwrap(), pattern(i, len), "overlapped upload {i} after a sync");
        }
        drop(m);
        let fresh = b.alloc(len).unwrap();
        b.upload(fresh.tensor(), &pattern(1000 + i, len)).unwrap();
        assert_eq!(b.download(fresh.tensor()).unwrap(), pattern(1000 + i, len), "memory freed under upload {i}");
    }
}

#[test]
fn uploads_are_done_with_the_host_buffer_and_land_in_stream_order() {
    uploads_in_a_row_land_intact(&CpuBackend::new());
    #[cfg(feature = "emu")]
    uploads_in_a_row_land_intact(
        &attnas::backend::cuda::CudaBackend::new(attnas::backend::cuda::emu::EmuDevice::new()),
    );
    let Some(b) = attnas::testing::gpu_or_skip("uploads_are_done_with_the_host_buffer_and_land_in_stream_order") else {
        return;
    };
    uploads_in_a_row_land_intact(&b);

    // staged uploads do not wait for the stream: no idle gap opens between them and the next launch
    let len = 1 << 20;
    let (x, y) = (b.alloc(len).unwrap(), b.alloc(len).unwrap());
    b.synchronize().unwrap();
    b.set_idle_probe(true);
    for i in 0..2 * SLOTS {
        b.upload(x.tensor(), &pattern(i, len)).unwrap();
        b.copy(x.tensor(), y.tensor()).unwrap();
    }
    assert_eq!(b.take_gpu_idle().unwrap(), Some((0.0, 0)), "a staged upload made the host wait for the GPU");
    assert_eq!(b.download(y.tensor()).unwrap(), pattern(2 * SLOTS - 1, len));

    // above the staging limit: the synchronous path, one wait, the data intact
    let big = STAGED_MAX_BYTES / 4 + 1;
    let z = b.alloc(big).unwrap();
    let _ = b.take_gpu_idle().unwrap();
    b.upload(z.tensor(), &pattern(99, big)).unwrap();
    b.copy(x.tensor(), y.tensor()).unwrap();
    assert_eq!(b.take_gpu_idle().unwrap().map(|(_, gaps)| gaps), Some(1), "a pageable upload waits once");
    b.set_idle_probe(false);
    assert_eq!(b.download(z.tensor()).unwrap(), pattern(99, big));
}

/// A batch of `n` images of `side` px: pixels and labels from `seed`.
fn batch(seed: usize, n: usize, side: usize) -> (Vec<u8>, Vec<u32>) {
    let pixels = (0..n * side * side * 3).map(|j| ((j * 131 + seed * 977) % 256) as u8).collect();
    let labels = (0..n).map(|i| ((i + seed * 3) % 10) as u32).collect();
    (pixels, labels)
}

/// Batch A taken into the step; batch B staged while work that reads the step's input runs (a device
/// copy of `input` and of `labels`, as a step's kernels read them); the step still sees A; then B taken.
fn staged_batch_waits_for_the_step_to_take_it<B: SupernetOps>(b: &B) {
    let (n, side) = (3, 10);
    let bufs = StepBuffers::new(b, n, side, 10).unwrap();
    let (a_pixels, a_labels) = batch(1, n, side);
    let (b_pixels, b_labels) = batch(2, n, side);
    let as_f32 = |l: &[u32]| l.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    bufs.upload_pixels(b, &a_pixels, &a_labels).unwrap();
    let seen_input = b.alloc(bufs.input.len()).unwrap();
    let seen_labels = b.alloc(n).unwrap();
    let mut host = b_pixels.clone();
    bufs.stage_batch(b, &host, &b_labels).unwrap();
    host.iter_mut().for_each(|v| *v = 0); // staging is done with the host buffer
    b.copy(bufs.input, seen_input.tensor()).unwrap();
    b.copy(bufs.labels, seen_labels.tensor()).unwrap();
    assert_eq!(
        b.download(seen_input.tensor()).unwrap(),
        normalize_nhwc(&a_pixels),
        "the step's input changed under it"
    );
    assert_eq!(b.download(seen_labels.tensor()).unwrap(), as_f32(&a_labels), "the step's labels changed under it");
    bufs.use_staged(b).unwrap();
    assert_eq!(b.download(bufs.input).unwrap(), normalize_nhwc(&b_pixels), "the staged batch's input");
    assert_eq!(b.download(bufs.labels).unwrap(), as_f32(&b_labels), "the staged batch's labels");
    // a batch of the wrong size is an error naming it, before anything is copied
    let e = bufs.stage_batch(b, &b_pixels[1..], &b_labels).unwrap_err().to_string();
    assert!(e.contains("training batch"), "{e}");
}

#[test]
fn a_staged_batch_reaches_the_step_only_when_it_is_taken() {
    staged_batch_waits_for_the_step_to_take_it(&CpuBackend::new());
    #[cfg(feature = "emu")]
    staged_batch_waits_for_the_step_to_take_it(&attnas::backend::cuda::CudaBackend::new(
        attnas::backend::cuda::emu::EmuDevice::new(),
    ));
    let Some(b) = attnas::testing::gpu_or_skip("a_staged_batch_reaches_the_step_only_when_it_is_taken") else {
        return;
    };
    staged_batch_waits_for_the_step_to_take_it(&b);
    // staging and taking batches makes the host wait for nothing
    let (n, side) = (64, 32);
    let bufs = StepBuffers::new(&b, n, side, 10).unwrap();
    b.synchronize().unwrap();
    b.set_idle_probe(true);
    for i in 0..2 * SLOTS {
        let (pixels, labels) = batch(i, n, side);
        bufs.stage_batch(&b, &pixels, &labels).unwrap();
        bufs.use_staged(&b).unwrap();
    }
    assert_eq!(b.take_gpu_idle().unwrap(), Some((0.0, 0)), "staging a batch made the host wait for the GPU");
    b.set_idle_probe(false);
    let (pixels, _) = batch(2 * SLOTS - 1, n, side);
    assert_eq!(b.download(bufs.input).unwrap(), normalize_nhwc(&pixels));
}
