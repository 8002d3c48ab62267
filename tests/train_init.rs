//! `attnas train --init CKPT` (`train::init::init_from_checkpoint`): a run starts from another
//! checkpoint's parameters and BN statistics with zero momentum (a fresh optimizer); a checkpoint with
//! another class count keeps every tensor but the classifier, which keeps this run's fresh init (with a
//! notice naming both counts); a checkpoint of another space is a usage error naming a tensor and both
//! shapes. Run time: well under a second.

use std::path::Path;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::Backend;
use attnas::checkpoint::{write_safetensors, TensorRecord};
use attnas::nn::{NamedTensor, Supernet};
use attnas::space::Space;
use attnas::train::init::{init_from_checkpoint, CLASSIFIER_TENSORS};

/// A tiny supernet of `seed` saved with non-zero momentum (as a training checkpoint holds it).
fn saved(dir: &Path, seed: u64) -> (Vec<NamedTensor>, std::path::PathBuf) {
    let b = CpuBackend::new();
    let net = Supernet::new(&b, Space::builtin("tiny").unwrap(), seed).unwrap();
    b.upload(net.momentum_arena(), &vec![0.5; net.table.params_len]).unwrap();
    let named = net.to_named(&b, true).unwrap();
    let records: Vec<TensorRecord> = named
        .iter()
        .map(|t| TensorRecord { name: format!("module.{}", t.name), shape: t.shape.clone(), data: t.data.clone() })
        .collect();
    let path = dir.join("ckpt-100.safetensors");
    write_safetensors(&path, &records, &Default::default()).unwrap();
    (named.into_iter().filter(|t| !t.name.starts_with("optimizer.")).collect(), path)
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("init-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn init_loads_weights_with_a_fresh_optimizer() {
    let dir = scratch("same");
    let (want, path) = saved(&dir, 1);
    let b = CpuBackend::new();
    let net = Supernet::new(&b, Space::builtin("tiny").unwrap(), 2).unwrap();
    let report = init_from_checkpoint(&b, &net, &path).unwrap();
    assert_eq!(report.classifier_reinitialised, None);
    assert!(report.notice().is_none());
    assert_eq!(net.to_named(&b, false).unwrap(), want, "parameters and BN statistics from the checkpoint");
    assert!(b.download(net.momentum_arena()).unwrap().iter().all(|&m| m == 0.0), "momentum must start at 0");
}

#[test]
fn another_class_count_reinitialises_only_the_classifier() {
    let dir = scratch("classes");
    let (ckpt, path) = saved(&dir, 1);
    let b = CpuBackend::new();
    let mut five = Space::builtin("tiny").unwrap();
    five.num_classes = 5;
    let net = Supernet::new(&b, five, 3).unwrap();
    let fresh = net.to_named(&b, false).unwrap();
    let report = init_from_checkpoint(&b, &net, &path).unwrap();
    assert_eq!(report.classifier_reinitialised, Some((10, 5)));
    let notice = report.notice().unwrap();
    assert!(notice.contains("10 classes") && notice.contains("this space 5"), "{notice}");
    for (got, (f, c)) in net.to_named(&b, false).unwrap().iter().zip(fresh.iter().zip(&ckpt)) {
        if CLASSIFIER_TENSORS.contains(&got.name.as_str()) {
            assert_eq!((got.shape[0], &got.data), (5, &f.data), "{}: this run's init", got.name);
        } else {
            assert_eq!(got, c, "{}: from the checkpoint", got.name);
        }
    }
}

#[test]
fn a_checkpoint_of_another_space_is_refused_naming_both_shapes() {
    let dir = scratch("space");
    let (_, path) = saved(&dir, 1);
    let b = CpuBackend::new();
    let mut wider = Space::builtin("tiny").unwrap();
    wider.head.width = vec![64, 128];
    let net = Supernet::new(&b, wider, 3).unwrap();
    let err = init_from_checkpoint(&b, &net, &path).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), 2, "{msg}");
    assert!(msg.contains("ckpt-100.safetensors") && msg.contains("has shape") && msg.contains("needs"), "{msg}");
    assert!(msg.contains("[96, 240") || msg.contains("96]"), "{msg}");
}
