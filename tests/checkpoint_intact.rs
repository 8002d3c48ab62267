//! Verified checkpoints at the store level (in-process, milliseconds): the tensor digest in the state
//! file, loads that refuse a flipped bit, the walk to the newest intact checkpoint past truncated and
//! flipped ones, old checkpoints without a digest, and a full disk (a small tmpfs) failing a save with
//! the path and the bytes needed while every earlier checkpoint stays loadable.

mod survival_common;

use std::collections::BTreeMap;
use std::fs;

use attnas::checkpoint::{
    load, load_checked, newest_intact, set_aside, tensor_digest, CheckpointStore, DigestCheck, TensorRecord, DIGEST_KEY,
};
use serde_json::json;
use survival_common::{flip_bit_near_end, Tmpfs};

/// One tensor of `n` floats that differ per `seed` (a checkpoint of 4n bytes plus a small header).
fn records(seed: u32, n: usize) -> Vec<TensorRecord> {
    let data = (0..n).map(|i| (i as f32 + seed as f32 * 0.25).sin()).collect();
    vec![TensorRecord::new("w", vec![n], data), TensorRecord::new("b", vec![2], vec![seed as f32, -1.0])]
}

fn raw_state(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_state_carries_the_digest_and_a_flipped_bit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 3).unwrap();
    let ck = store.save(7, &records(1, 100), &BTreeMap::new(), &json!({"step": 7})).unwrap();
    let raw = raw_state(&ck.state);
    assert_eq!(raw[DIGEST_KEY], json!(tensor_digest(&records(1, 100))), "{raw}");
    // A load checks it and hands back the state as the trainer saved it.
    let l = load_checked(&ck).unwrap();
    assert_eq!(l.digest, DigestCheck::Verified);
    assert_eq!(l.state, json!({"step": 7}));
    // One bit of one float: the file still parses, the digest catches it.
    flip_bit_near_end(&ck.weights, 3);
    let e = load(&ck).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.contains("ckpt-000000007.safetensors") && msg.contains("damaged checkpoint"), "{msg}");
    assert!(msg.contains(raw[DIGEST_KEY].as_str().unwrap()), "names the recorded digest: {msg}");
    // A state that is not an object cannot carry a digest: refused before anything is written.
    assert_eq!(store.save(8, &records(1, 4), &BTreeMap::new(), &json!(8)).unwrap_err().exit_code(), 2);
    assert!(!dir.path().join("ckpt-000000008.safetensors").exists());
}

#[test]
fn the_newest_intact_checkpoint_is_found_past_damaged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 5).unwrap();
    for step in 1..=4u64 {
        store.save(step, &records(step as u32, 64), &BTreeMap::new(), &json!({"step": step})).unwrap();
    }
    let list = store.list().unwrap();
    // Step 4 truncated (a cut-off copy), step 3 with a flipped bit, step 2 intact.
    let w4 = &list[3].weights;
    let len = fs::metadata(w4).unwrap().len();
    fs::OpenOptions::new().write(true).open(w4).unwrap().set_len(len - 40).unwrap();
    flip_bit_near_end(&list[2].weights, 10);
    let search = newest_intact(dir.path()).unwrap();
    let found = search.found.expect("step 2 is intact");
    assert_eq!(found.ckpt.step, 2);
    assert_eq!(found.state, json!({"step": 2}));
    let skipped: Vec<(u64, &str)> = search.damaged.iter().map(|d| (d.ckpt.step, d.reason.as_str())).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, 4);
    assert!(skipped[0].1.contains("truncated"), "{}", skipped[0].1);
    assert_eq!(skipped[1].0, 3);
    assert!(skipped[1].1.contains("damaged checkpoint"), "{}", skipped[1].1);
    // Moved aside: no longer checkpoints, kept for inspection.
    for d in &search.damaged {
        let aside = set_aside(d).unwrap();
        assert!(aside.is_file() && !d.ckpt.weights.exists() && !d.ckpt.state.exists(), "{}", aside.display());
    }
    assert_eq!(store.list().unwrap().iter().map(|c| c.step).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.latest().unwrap().unwrap().step, 2, "`latest` named a set-aside step: falls back");
    assert!(dir.path().join("ckpt-000000003.damaged.safetensors").is_file());
    // A missing directory: nothing found, nothing skipped.
    let empty = tempfile::tempdir().unwrap();
    let s = newest_intact(&empty.path().join("missing")).unwrap();
    assert!(s.found.is_none() && s.damaged.is_empty());
}

#[test]
fn a_checkpoint_without_a_digest_loads_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path(), 2).unwrap();
    let ck = store.save(3, &records(3, 16), &BTreeMap::new(), &json!({"step": 3})).unwrap();
    let mut raw = raw_state(&ck.state);
    raw.as_object_mut().unwrap().remove(DIGEST_KEY);
    fs::write(&ck.state, serde_json::to_vec(&raw).unwrap()).unwrap();
    let l = load_checked(&ck).unwrap();
    assert_eq!(l.digest, DigestCheck::Absent);
    assert_eq!(l.tensors.len(), 2);
}

#[test]
fn a_full_disk_fails_the_save_naming_the_file_and_the_bytes_and_keeps_earlier_checkpoints() {
    let mount = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ckpt-full-disk");
    let Some(fs_) = Tmpfs::mount(&mount, "600k", "checkpoint full disk") else { return };
    let store = CheckpointStore::new(fs_.dir.join("ck"), 10).unwrap();
    // 256 KiB of weights each: two fit in 600 KiB, the third does not.
    let n = 64 * 1024;
    let first = store.save(1, &records(1, n), &BTreeMap::new(), &json!({"step": 1})).unwrap();
    let second = store.save(2, &records(2, n), &BTreeMap::new(), &json!({"step": 2})).unwrap();
    let e = store.save(3, &records(3, n), &BTreeMap::new(), &json!({"step": 3})).unwrap_err().to_string();
    assert!(e.contains("ckpt-000000003.safetensors"), "{e}");
    assert!(e.contains(" bytes needed") && e.contains(" bytes available"), "{e}");
    assert!(e.contains("No space left on device"), "{e}");
    let needed: u64 = e.split(" bytes needed").next().unwrap().rsplit('(').next().unwrap().parse().unwrap();
    assert!(needed > 4 * n as u64, "the weights file's size: {e}");
    assert_eq!(store.list().unwrap(), [first.clone(), second.clone()]);
    assert_eq!(store.latest().unwrap(), Some(second.clone()));
    for (ck, seed) in [(&first, 1), (&second, 2)] {
        let l = load_checked(ck).unwrap();
        assert_eq!(l.digest, DigestCheck::Verified);
        assert_eq!(l.tensors.iter().find(|t| t.name == "b").unwrap().data, [seed as f32, -1.0]);
    }
    let names: Vec<String> =
        fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "no half-written file left: {names:?}");
}
