//! Input normalisation on the device (`InputOps::normalize_u8_nhwc` over bytes sent with
//! `Backend::upload_bytes`; issue #13 item 4): the CUDA kernel (emulated, and on a GPU when present) and
//! the CPU backend against the loader's host formula (`data::augment::normalize_nhwc_into`).
//! Tolerance: none. The kernel evaluates `(v / 255 - mean) / std` in f32 in the same order with IEEE
//! division and nothing an FMA could contract, so every value must be bit-identical to the host's;
//! that is what keeps training numbers unchanged now that the trainer normalises on the device.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::input::{staging_words, InputOps};
use attnas::backend::{Backend, DeviceMemory};
use attnas::data::augment::{normalize_nhwc_into, IMAGENET_MEAN, IMAGENET_STD};

/// Value counts: empty, under one word, odd tails (n % 4 = 1, 2, 3), one image of 7x7 (147), more than
/// one block of 256 threads x 4 values, and a 32x32 batch of 3.
const SIZES: &[usize] = &[0, 3, 9, 6, 15, 147, 3 * 1031, 3 * 32 * 32 * 3];

/// Every byte value in every channel position, then a seeded scramble.
fn pixels(n: usize, seed: u64) -> Vec<u8> {
    (0..n).map(|i| ((i as u64 * 2_654_435_761 + seed * 97) % 256) as u8).map(|v| v ^ (seed as u8)).collect()
}

/// Uploads `px` as bytes into a staging tensor (with `slack` spare words, so reading past the bytes would
/// pick up the 0xAB filler) and normalises into a fresh tensor, offset by `out_offset` floats inside
/// a bigger allocation (offset 1 makes the output only 4-byte aligned: the kernel's scalar path).
fn normalize_on<B: InputOps>(b: &B, px: &[u8], out_offset: usize) -> Vec<f32> {
    let slack = 3;
    let staging = b.alloc(staging_words(px.len()) + slack).unwrap();
    b.upload_bytes(staging.tensor(), &vec![0xABu8; 4 * staging.tensor().len()]).unwrap();
    b.upload_bytes(staging.tensor(), px).unwrap();
    let out_mem = b.alloc(px.len() + out_offset).unwrap();
    let out = out_mem.tensor().slice(out_offset, px.len()).unwrap();
    b.normalize_u8_nhwc(staging.tensor(), IMAGENET_MEAN, IMAGENET_STD, out).unwrap();
    b.download(out).unwrap()
}

fn host(px: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; px.len()];
    normalize_nhwc_into(px, &mut out);
    out
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: value {i} (channel {}) is {} ({:#x}), the host formula gives {} ({:#x})",
            i % 3,
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

#[test]
fn cpu_backend_matches_the_loaders_host_formula_bit_for_bit() {
    let cpu = CpuBackend::new();
    for (k, &n) in SIZES.iter().enumerate() {
        let px = pixels(n, k as u64);
        assert_bits(&format!("cpu n={n}"), &normalize_on(&cpu, &px, 0), &host(&px));
    }
}

#[test]
fn kernel_matches_the_host_formula_bit_for_bit() {
    attnas::on_cuda_targets!("kernel_matches_the_host_formula_bit_for_bit", |b| {
        for (k, &n) in SIZES.iter().enumerate() {
            let px = pixels(n, k as u64);
            let want = host(&px);
            for offset in [0, 1] {
                let got = normalize_on(&b, &px, offset);
                assert_bits(&format!("{} n={n} output offset {offset} floats", b.name()), &got, &want);
            }
        }
    });
}

#[test]
fn every_byte_value_maps_to_its_channels_constants() {
    // Independent of the host formula: value v in channel c is (v / 255 - mean[c]) / std[c] within f32
    // rounding of the f64 value; a kernel that mixes up channels or byte order fails by far more.
    let px: Vec<u8> = (0..3 * 256).map(|i| (i / 3) as u8).collect();
    let check = |what: &str, got: &[f32]| {
        for (i, &g) in got.iter().enumerate() {
            let (v, c) = ((i / 3) as f64, i % 3);
            let want = (v / 255.0 - IMAGENET_MEAN[c] as f64) / IMAGENET_STD[c] as f64;
            assert!(
                (g as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{what}: byte {v} channel {c}: {g} vs {want}"
            );
        }
    };
    check("cpu", &normalize_on(&CpuBackend::new(), &px, 0));
    attnas::on_cuda_targets!("every_byte_value_maps_to_its_channels_constants", |b| {
        check(&b.name(), &normalize_on(&b, &px, 0));
    });
}

#[test]
fn bad_shapes_are_errors_naming_the_tensor() {
    fn bad<B: InputOps>(b: &B) {
        let staging = b.alloc(3).unwrap(); // 12 bytes
        let out = b.alloc(15).unwrap();
        let err = b.normalize_u8_nhwc(staging.tensor(), IMAGENET_MEAN, IMAGENET_STD, out.tensor()).unwrap_err();
        assert!(err.to_string().contains("pixel staging tensor") && err.to_string().contains("15 bytes"), "{err}");
        let out = b.alloc(10).unwrap();
        let err = b.normalize_u8_nhwc(staging.tensor(), IMAGENET_MEAN, IMAGENET_STD, out.tensor()).unwrap_err();
        assert!(err.to_string().contains("3 channels"), "{err}");
        let err = b.upload_bytes(staging.tensor(), &[0u8; 13]).unwrap_err();
        assert!(err.to_string().contains("13 bytes"), "{err}");
    }
    bad(&CpuBackend::new());
    attnas::on_cuda_targets!("bad_shapes_are_errors_naming_the_tensor", |b| { bad(&b) });
}

#[test]
fn step_buffers_upload_pixels_gives_the_host_normalised_batch() {
    // The trainer's and evaluator's upload (`StepBuffers::upload_pixels`): the network input on every
    // backend is bit for bit the batch the host used to normalise and upload as f32.
    use attnas::backend::SupernetOps;
    use attnas::train::step::StepBuffers;
    fn check<B: SupernetOps>(b: &B) {
        let (n, side, classes) = (3, 7, 10);
        let px = pixels(n * side * side * 3, 9);
        let labels = [4u32, 0, 9];
        let bufs = StepBuffers::new(b, n, side, classes).unwrap();
        bufs.upload_pixels(b, &px, &labels).unwrap();
        assert_bits(&format!("{} input", b.name()), &b.download(bufs.input).unwrap(), &host(&px));
        assert_eq!(b.download(bufs.labels).unwrap(), vec![4.0, 0.0, 9.0]);
        let err = bufs.upload_pixels(b, &px[1..], &labels).unwrap_err().to_string();
        assert!(err.contains("training batch") && err.contains("3 images of 7x7x3 bytes"), "{err}");
    }
    check(&CpuBackend::new());
    attnas::on_cuda_targets!("step_buffers_upload_pixels_gives_the_host_normalised_batch", |b| { check(&b) });
}
