//! `attnas bench train --data` (issue #13 item 4): the real input pipeline (loader, u8 upload, on-device
//! normalisation) measured beside the step, on the CPU over Fashion-MNIST. Plumbing only: timings are
//! benchmarks, never asserted beyond their sign and the arithmetic that ties them together.

mod train_common;

use std::process::Command;

use train_common::{attnas_bin, fashion_mnist_packed, fresh_dir};

#[test]
fn bench_train_with_data_reports_the_input_pipeline() {
    let Some(data) = fashion_mnist_packed("bench_train_with_data_reports_the_input_pipeline") else { return };
    let dir = fresh_dir("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let out = Command::new(attnas_bin())
        .args(["bench", "train", "--space", "tiny", "--batch", "8", "--side", "28", "--k", "2", "--warmup", "1"])
        .args(["--steps", "2", "--device", "cpu", "--prefetch", "2", "--loader-threads", "1", "--data"])
        .arg(&data)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("input pipeline (") && stdout.contains("ms/step waiting for the loader"), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let input = &r["input"];
    assert!(input["data"].as_str().unwrap().ends_with("train.pack"), "{input}");
    let (wait, upload) = (input["data_wait_s"].as_f64().unwrap(), input["upload_s"].as_f64().unwrap());
    assert!(wait >= 0.0 && upload > 0.0, "{input}");
    // the loader (2 batches decoded ahead, 8 images of 28 px) keeps well ahead of a CPU step, so the
    // second measured step at least was staged during the first (the trainer's overlap)
    let fed_ahead = input["steps_fed_ahead"].as_u64().unwrap();
    assert!((1..=2).contains(&fed_ahead), "steps fed ahead: {input}");
    assert!(input["stage_next_s"].as_f64().unwrap() >= 0.0, "{input}");
    // end to end = batch x steps / (step wall + wait + upload): below the step-only rate, and equal to it
    // recomputed from the reported per-step times
    let (ips, e2e) = (r["images_per_sec"].as_f64().unwrap(), input["images_per_sec_end_to_end"].as_f64().unwrap());
    assert!(e2e < ips, "end to end {e2e} vs step alone {ips}");
    let step_s = r["step_s"].as_f64().unwrap();
    let want = 8.0 / (step_s + wait + upload);
    assert!((e2e - want).abs() <= 1e-6 * want, "end to end {e2e} vs {want} from the per-step times");

    // without --data: the synthetic batch, no input section
    let out = Command::new(attnas_bin())
        .args(["bench", "train", "--space", "tiny", "--batch", "4", "--side", "24", "--k", "1", "--warmup", "0"])
        .args(["--steps", "1", "--device", "cpu", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r["input"].is_null(), "{r}");
}

#[test]
fn bench_train_with_a_missing_data_file_is_a_usage_error() {
    let dir = fresh_dir("bench-missing-data");
    let missing = dir.join("nothing-here");
    let out = Command::new(attnas_bin())
        .args(["bench", "train", "--space", "tiny", "--batch", "4", "--side", "24", "--steps", "1", "--device", "cpu"])
        .arg("--data")
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing-here") && stderr.contains("attnas prepare"), "{stderr}");
}

/// The memory report: the plan at the run's batch, and with `--memory-gib` the largest batch whose plan
/// fits (checked against the plan itself at that batch and the next); a bad size is a usage error.
#[test]
fn bench_train_reports_the_memory_plan_and_the_largest_batch_that_fits() {
    let dir = fresh_dir("bench-memory");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let out = Command::new(attnas_bin())
        .args(["bench", "train", "--space", "tiny", "--batch", "4", "--side", "28", "--k", "2", "--warmup", "0"])
        .args(["--steps", "1", "--device", "cpu", "--memory-gib", "0.05", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("MiB planned") && stdout.contains("largest batch at 28x28"), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let m = &r["memory"];
    let space = attnas::space::Space::builtin("tiny").unwrap();
    let plan =
        |n: usize| attnas::train::memory_plan::plan(&space, n, 28, attnas::backend::Dtype::F32).unwrap().total_bytes;
    assert_eq!(m["plan"]["total_bytes"].as_u64(), Some(plan(4)), "{m}");
    let budget = m["budget_bytes"].as_u64().unwrap();
    assert_eq!(budget, (0.05 * (1u64 << 30) as f64) as u64);
    let largest = m["largest_batch"].as_u64().unwrap() as usize;
    assert!(plan(largest) <= budget && plan(largest + 1) > budget, "{m}");

    // --plan-only: the same report without running a step
    let only = dir.join("plan.json");
    let out = Command::new(attnas_bin())
        .args(["bench", "train", "--space", "tiny", "--batch", "4", "--side", "28", "--plan-only", "--device", "cpu"])
        .args(["--memory-gib", "0.05", "--json"])
        .arg(&only)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !stdout.contains("images/s"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let p: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&only).unwrap()).unwrap();
    assert_eq!(&p["memory"], m, "--plan-only reports what the run reported");

    let out = Command::new(attnas_bin())
        .args(["bench", "train", "--space", "tiny", "--batch", "4", "--steps", "1", "--device", "cpu"])
        .args(["--memory-gib", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--memory-gib"), "{stderr}");
}
