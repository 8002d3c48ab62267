//! Checkpoint files: safetensors roundtrip (bit-exact), metadata, hand-written PyTorch-style files
//! (F16/BF16/F64 converted, I64 listed apart), corrupt files, the store's save/latest/prune, atomicity
//! on failure, and the argument resolvers.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use attnas::checkpoint::{
    load, read_safetensors, read_safetensors_all, resolve_ckpt_arg, resolve_weights_arg, write_safetensors,
    CheckpointStore, TensorRecord,
};
use attnas::util::atomic::write_atomic;
use serde_json::json;

fn records(seed: u32) -> Vec<TensorRecord> {
    let vals = |n: usize, k: u32| {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761) ^ (seed * 8 + k)) as f32 * 1e-9).collect()
    };
    vec![
        TensorRecord::new("stem.conv.weight", vec![4, 3, 3, 3], vals(108, 1)),
        TensorRecord::new("blocks.0.bn.running_var", vec![4], vals(4, 2)),
        TensorRecord::new("classifier.bias", vec![10], vals(10, 3)),
    ]
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

fn assert_same_bits(got: &[TensorRecord], want: &[TensorRecord]) {
    let mut want = want.to_vec();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.name, &g.shape), (&w.name, &w.shape));
        let gb: Vec<u32> = g.data.iter().map(|v| v.to_bits()).collect();
        let wb: Vec<u32> = w.data.iter().map(|v| v.to_bits()).collect();
        assert_eq!(gb, wb, "bits of {}", g.name);
    }
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn roundtrip_is_bit_exact_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let special = [
        f32::from_bits(0x7fc0_1234), // quiet NaN with payload
        f32::from_bits(0xffa0_0001), // negative signalling NaN
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(1), // smallest subnormal
        f32::MAX,
    ];
    let mut tensors = records(7);
    tensors.push(TensorRecord::new("z.special", vec![2, 4], special.to_vec()));
    tensors.push(TensorRecord::new("a.scalar", vec![], vec![3.5]));
    tensors.push(TensorRecord::new("m.empty", vec![0, 3], vec![]));
    let md = meta(&[("format", "attnas"), ("arch", "{\"w\": [16, 24]} ünïcode"), ("", "empty key")]);
    write_safetensors(&path, &tensors, &md).unwrap();
    let (got, got_md) = read_safetensors(&path).unwrap();
    assert_same_bits(&got, &tensors);
    assert_eq!(got_md, md);

    // No metadata at all reads back as an empty map.
    write_safetensors(&path, &tensors[..1], &BTreeMap::new()).unwrap();
    let (got, got_md) = read_safetensors(&path).unwrap();
    assert_same_bits(&got, &tensors[..1]);
    assert!(got_md.is_empty());
    assert_eq!(names_in(dir.path()), ["w.safetensors"], "no temporary file left");
}

#[test]
fn write_rejects_bad_tensors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let bad = [TensorRecord::new("fc.weight", vec![2, 3], vec![0.0; 5])];
    let e = write_safetensors(&path, &bad, &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("fc.weight") && e.contains("w.safetensors"), "{e}");
    let dup = [TensorRecord::new("a", vec![1], vec![1.0]), TensorRecord::new("a", vec![1], vec![2.0])];
    let e = write_safetensors(&path, &dup, &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("`a`") && e.contains("twice"), "{e}");
    assert!(names_in(dir.path()).is_empty(), "nothing written: {:?}", names_in(dir.path()));
}

/// A file laid out by hand as PyTorch's safetensors writes it: 8-byte LE header length, JSON header
/// (unpadded here, so tensor data is not 4-byte aligned), then the data section.
#[test]
fn reads_hand_written_pytorch_layout_with_half_types() {
    let header = concat!(
        r#"{"__metadata__":{"format":"pt"},"#,
        r#""conv.weight":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"#,
        r#""bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"#,
        r#""fc.bias":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},"#,
        r#""fc.scale":{"dtype":"F64","shape":[1],"data_offsets":[20,28]}}"#
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for h in [0x3E00u16, 0xC000, 0x7BFF, 0x0001] {
        bytes.extend_from_slice(&h.to_le_bytes()); // 1.5, -2, 65504, 2^-24 (subnormal)
    }
    bytes.extend_from_slice(&12345i64.to_le_bytes());
    for h in [0x3F80u16, 0xC040] {
        bytes.extend_from_slice(&h.to_le_bytes()); // bf16: 1.0, -3.0
    }
    bytes.extend_from_slice(&0.25f64.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imported.safetensors");
    fs::write(&path, &bytes).unwrap();

    let c = read_safetensors_all(&path).unwrap();
    let names: Vec<&str> = c.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["conv.weight", "fc.bias", "fc.scale"]);
    assert_eq!(c.tensors[0].shape, [2, 2]);
    assert_eq!(c.tensors[0].data, [1.5, -2.0, 65504.0, 2f32.powi(-24)]);
    assert_eq!(c.tensors[1].data, [1.0, -3.0]);
    assert_eq!(c.tensors[2].data, [0.25]);
    assert_eq!(c.skipped.len(), 1);
    assert_eq!((c.skipped[0].name.as_str(), c.skipped[0].dtype.as_str()), ("bn.num_batches_tracked", "I64"));
    assert_eq!(c.metadata, meta(&[("format", "pt")]));
    assert_eq!(resolve_weights_arg(&path).unwrap(), path, "weights alone need no state file");
}

#[test]
fn corrupt_or_truncated_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    write_safetensors(&path, &records(1), &meta(&[("k", "v")])).unwrap();
    let full = fs::read(&path).unwrap();
    let e = read_safetensors(&path.with_file_name("absent.safetensors")).unwrap_err().to_string();
    assert!(e.contains("absent.safetensors"), "{e}");

    fs::write(&path, &full[..full.len() - 10]).unwrap();
    let e = read_safetensors(&path).unwrap_err().to_string();
    // Tensors are stored by name, so the last one (cut off) is `stem.conv.weight`.
    assert!(e.contains("cut.safetensors") && e.contains("truncated") && e.contains("stem.conv.weight"), "{e}");

    for cut in [0, 5, 8, 40] {
        fs::write(&path, &full[..cut]).unwrap();
        let e = read_safetensors(&path).unwrap_err().to_string();
        assert!(e.contains("cut.safetensors"), "cut at {cut}: {e}");
    }
    let mut garbage = full.clone();
    garbage[8] = b'#'; // breaks the JSON header
    fs::write(&path, &garbage).unwrap();
    let e = read_safetensors(&path).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors") && e.contains("not a valid safetensors"), "{e}");

    // A corrupt state file of an otherwise complete checkpoint.
    let store = CheckpointStore::new(dir.path().join("ck"), 2).unwrap();
    let ck = store.save(3, &records(1), &BTreeMap::new(), &json!({"step": 3})).unwrap();
    fs::write(&ck.state, "{\"step\": 3,\n oops").unwrap();
    let e = load(&ck).unwrap_err().to_string();
    assert!(e.contains("ckpt-000000003.state.json:2"), "{e}");
}

#[test]
fn save_load_latest_and_prune_keep_last_n() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path().join("run/ckpt"), 3).unwrap();
    assert!(store.latest().unwrap().is_none());
    for step in 1..=7u64 {
        let md = meta(&[("step", &step.to_string())]);
        let ck =
            store.save(step * 100, &records(step as u32), &md, &json!({"step": step * 100, "epoch": step})).unwrap();
        assert_eq!(ck.step, step * 100);
        assert_eq!(store.latest().unwrap(), Some(ck.clone()));
        let (w, got_md, state) = load(&ck).unwrap();
        assert_same_bits(&w, &records(step as u32));
        assert_eq!(got_md, md);
        assert_eq!(state, json!({"step": step * 100, "epoch": step}));
        let kept: Vec<u64> = store.list().unwrap().iter().map(|c| c.step).collect();
        let want: Vec<u64> = (step.saturating_sub(2).max(1)..=step).map(|s| s * 100).collect();
        assert_eq!(kept, want, "after saving step {}", step * 100);
    }
    let d = store.dir();
    let expect = [
        "ckpt-000000500.safetensors",
        "ckpt-000000500.state.json",
        "ckpt-000000600.safetensors",
        "ckpt-000000600.state.json",
        "ckpt-000000700.safetensors",
        "ckpt-000000700.state.json",
        "latest",
    ];
    assert_eq!(names_in(d), expect, "no temporary or pruned files left");
    assert_eq!(fs::read_to_string(d.join("latest")).unwrap().trim(), "ckpt-000000700");

    // `latest` missing or stale: fall back to the highest complete step.
    fs::write(d.join("latest"), "ckpt-000000600\n").unwrap();
    assert_eq!(store.latest().unwrap().unwrap().step, 600, "`latest` wins when it names a complete pair");
    fs::write(d.join("latest"), "ckpt-000000900\n").unwrap();
    assert_eq!(store.latest().unwrap().unwrap().step, 700);
    fs::remove_file(d.join("latest")).unwrap();
    assert_eq!(store.latest().unwrap().unwrap().step, 700);
    fs::remove_file(d.join("ckpt-000000700.state.json")).unwrap(); // weights without state: no checkpoint
    assert_eq!(store.latest().unwrap().unwrap().step, 600);

    // Resuming from an earlier step and saving: the new one is never pruned, and becomes `latest`.
    let ck = store.save(550, &records(55), &BTreeMap::new(), &json!({})).unwrap();
    assert_eq!(store.latest().unwrap(), Some(ck));
    let kept: Vec<u64> = store.list().unwrap().iter().map(|c| c.step).collect();
    assert_eq!(kept, [500, 550, 600], "keep 3: the new 550 and the two highest others");
    // Saving a step again replaces its pair.
    let again = store.save(600, &records(66), &BTreeMap::new(), &json!({"again": true})).unwrap();
    let (w, _, state) = load(&again).unwrap();
    assert_same_bits(&w, &records(66));
    assert_eq!(state, json!({"again": true}));
    assert!(CheckpointStore::new(dir.path().join("x"), 0).is_err(), "keep 0 is refused");
}

#[test]
fn failed_save_leaves_previous_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 2).unwrap();
    let first = store.save(1, &records(1), &BTreeMap::new(), &json!({"step": 1})).unwrap();
    let before = names_in(dir.path());

    // The state file's place is taken by a directory: weights get written, the state cannot be.
    fs::create_dir(dir.path().join("ckpt-000000002.state.json")).unwrap();
    assert!(store.save(2, &records(2), &BTreeMap::new(), &json!({"step": 2})).is_err());
    // The weights' place is taken by a directory: nothing can be written.
    fs::create_dir(dir.path().join("ckpt-000000003.safetensors")).unwrap();
    let e = store.save(3, &records(3), &BTreeMap::new(), &json!({"step": 3})).unwrap_err().to_string();
    assert!(e.contains("ckpt-000000003.safetensors"), "{e}");

    assert_eq!(store.latest().unwrap(), Some(first.clone()));
    assert_eq!(store.list().unwrap(), std::slice::from_ref(&first));
    let (w, _, state) = load(&first).unwrap();
    assert_same_bits(&w, &records(1));
    assert_eq!(state, json!({"step": 1}));
    let after = names_in(dir.path());
    assert!(after.iter().all(|n| !n.contains(".tmp-")), "temporary files left: {after:?}");
    assert!(before.iter().all(|n| after.contains(n)));

    // write_atomic: a failing writer keeps the old content and removes its temporary file.
    let p = dir.path().join("latest");
    let old = fs::read(&p).unwrap();
    let r = write_atomic(&p, |w| {
        w.write_all(b"half").unwrap();
        Err(attnas::Error::Other("writer failed".into()))
    });
    assert!(r.is_err());
    assert_eq!(fs::read(&p).unwrap(), old);
    assert!(names_in(dir.path()).iter().all(|n| !n.contains(".tmp-")));
}

#[test]
fn resolve_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 5).unwrap();
    store.save(10, &records(1), &BTreeMap::new(), &json!({"n": 1})).unwrap();
    let last = store.save(20, &records(2), &BTreeMap::new(), &json!({"n": 2})).unwrap();
    assert_eq!(resolve_ckpt_arg(dir.path()).unwrap(), last);
    assert_eq!(resolve_ckpt_arg(&last.weights).unwrap(), last);
    assert_eq!(resolve_ckpt_arg(&last.state).unwrap(), last);
    assert_eq!(resolve_weights_arg(dir.path()).unwrap(), last.weights);
    assert_eq!(resolve_weights_arg(&last.state).unwrap(), last.weights);

    let lone = dir.path().join("ckpt-000000030.safetensors");
    fs::copy(&last.weights, &lone).unwrap();
    let e = resolve_ckpt_arg(&lone).unwrap_err().to_string();
    assert!(e.contains("ckpt-000000030.state.json") && e.contains("missing"), "{e}");
    assert_eq!(resolve_weights_arg(&lone).unwrap(), lone);
    let e = resolve_ckpt_arg(&dir.path().join("model.pt")).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let e = resolve_ckpt_arg(&empty).unwrap_err().to_string();
    assert!(e.contains("no complete checkpoint"), "{e}");
}
