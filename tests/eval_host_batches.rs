//! BN-calibration and evaluation batches are kept on the host as the loader's 8-bit pixels and
//! normalised as each is uploaded. This must give bit for bit what normalising them at decode time (the
//! former f32 host batches) gave: the same running statistics after calibration, the same eval-mode
//! logits and hit counts, and the same inputs for `eval --dump-inputs` (normalised f32). The "before"
//! side is written out here exactly as the old code ran it: `normalize_nhwc` on each loader batch, the
//! f32 uploaded through `StepBuffers`, `ForwardOptions::calibrate(k)` per batch. Small on purpose: the
//! tiny space, a 30-image tree at a 32-pixel crop, CPU backend (about a second).

mod data_common;

use std::path::Path;
use std::sync::Arc;

use attnas::backend::cpu::{CpuBackend, HostMemory};
use attnas::backend::Arena;
use attnas::data::augment::normalize_nhwc;
use attnas::data::loader::Loader;
use attnas::data::prepare::{prepare, PayloadMode, PrepareOptions};
use attnas::data::PackedDataset;
use attnas::eval::data::{calibration_batches, CalibSettings, EvalSource};
use attnas::eval::evaluate::Evaluator;
use attnas::nn::{activation_arena_len, ForwardOptions, NamedTensor, Supernet};
use attnas::space::{Arch, Space};
use attnas::train::config::DataConfig;
use attnas::train::step::StepBuffers;
use attnas::train::validate::{calibrate_bn, count_correct, EvalBuffers};

/// 10 classes x 3 small PNGs with class- and image-dependent patterns, packed as raw pixels.
fn tiny_pack(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    for c in 0..10u32 {
        let class = src.join("train").join(format!("class{c}"));
        std::fs::create_dir_all(&class).unwrap();
        for i in 0..3u32 {
            let img = image::RgbImage::from_fn(40 + 3 * i, 36, |x, y| {
                image::Rgb([(x * 6 + c * 20) as u8, (y * 7 + i * 40) as u8, ((x ^ y) * 5 + c * 9) as u8])
            });
            img.save(class.join(format!("{i}.png"))).unwrap();
        }
    }
    let out = dir.join("out");
    let opts = PrepareOptions { payload: PayloadMode::Raw, progress: false, ..Default::default() };
    prepare(&src, &out, &opts).unwrap();
    out.join("train.pack")
}

fn bits(named: &[NamedTensor]) -> Vec<(String, Vec<u32>)> {
    named
        .iter()
        .filter(|t| t.name.contains("running"))
        .map(|t| (t.name.clone(), t.data.iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// The former path: loader batches normalised to f32 at decode time, uploaded as they were.
fn calibrate_from_f32(b: &CpuBackend, net: &Supernet<HostMemory>, arch: &Arch, loader: &Loader, batches: usize) {
    let space = &net.space;
    let mut arena =
        Arena::new(b, "act", activation_arena_len(space, 8, 32, false, attnas::backend::Dtype::F32).unwrap()).unwrap();
    net.reset_running_stats(b).unwrap();
    for (i, batch) in loader.epoch(0).unwrap().take(batches).enumerate() {
        let x = normalize_nhwc(&batch.images);
        let sb = StepBuffers::new(b, batch.labels.len(), batch.side as usize, space.num_classes).unwrap();
        sb.upload(b, &x, &batch.labels).unwrap();
        arena.reset();
        net.forward(b, arch, sb.input, sb.n, sb.side, ForwardOptions::calibrate(i as u32 + 1), &mut arena).unwrap();
    }
}

#[test]
fn eight_bit_host_batches_give_the_f32_results_bit_for_bit() {
    let dir = data_common::scratch("host-batches");
    let pack = tiny_pack(&dir);
    let space = Space::builtin("tiny").unwrap();
    let cfg = DataConfig { crop: 32, threads: 1, ..DataConfig::default() };
    let settings = CalibSettings { batches: 3, batch_size: 8, seed: 5 };
    let calib = calibration_batches(&pack, &space, &cfg, &settings).unwrap();
    assert_eq!(calib.len(), 3);
    for batch in &calib {
        assert_eq!(batch.bytes(), 8 * 32 * 32 * 3, "one byte per channel value on the host");
    }
    let ds = Arc::new(PackedDataset::open(&pack).unwrap());
    let loader = Loader::new(ds, cfg.loader_config(settings.batch_size, settings.seed)).unwrap();
    let eval = EvalSource::open(&pack, &space, &cfg, 8, Some(24)).unwrap();

    let b = CpuBackend::new();
    let net = Supernet::new(&b, space.clone(), 11).unwrap();
    // min runs at resolution 24 (the model resizes the 32-pixel crop), max at 32.
    for arch in [space.min_arch(), space.max_arch()] {
        calibrate_from_f32(&b, &net, &arch, &loader, settings.batches);
        let want_stats = bits(&net.to_named(&b, false).unwrap());
        let mut want_logits = Vec::new();
        let mut ev = Evaluator::new(&b, &net, 8, 32, false).unwrap();
        eval.for_each(|batch| {
            let x = normalize_nhwc(&batch.pixels);
            assert_eq!(x, batch.normalized());
            let resized = ev.resize(batch, arch.resolution)?;
            want_logits.push(ev.logits(&arch, &resized, &batch.labels, arch.resolution)?);
            Ok(())
        })
        .unwrap();

        // The 8-bit path: calibrate on the host batches, normalised as uploaded.
        let mut arena =
            Arena::new(&b, "act", activation_arena_len(&space, 8, 32, false, attnas::backend::Dtype::F32).unwrap())
                .unwrap();
        let mut bufs = EvalBuffers::<CpuBackend>::new(space.num_classes);
        calibrate_bn(&b, &net, &mut arena, &mut bufs, &arch, &calib).unwrap();
        assert!(want_stats == bits(&net.to_named(&b, false).unwrap()), "running statistics differ");
        let mut i = 0;
        eval.for_each(|batch| {
            let resized = ev.resize(batch, arch.resolution)?;
            let got = ev.logits(&arch, &resized, &batch.labels, arch.resolution)?;
            let same = got.iter().zip(&want_logits[i]).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same && got.len() == want_logits[i].len(), "eval batch {i}: logits differ");
            // Hit counts through the buffers' own upload agree with the logits' argmax.
            let (top1, _) = count_correct(&b, &net, &mut arena, &mut bufs, &arch, batch)?;
            let argmax_hits = got
                .chunks(space.num_classes)
                .zip(&batch.labels)
                .filter(|(row, &l)| {
                    let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, _)| k);
                    best == Some(l as usize)
                })
                .count() as u64;
            assert_eq!(top1, argmax_hits, "eval batch {i}");
            i += 1;
            Ok(())
        })
        .unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
