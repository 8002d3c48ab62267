//! `attnas eval` on a tiny supernet trained for a few steps on Fashion-MNIST (tests/eval_common): BN
//! recalibration beats the stored (never updated, 0 / 1) running statistics, the numbers are identical
//! for the same seed, `--json` parses, and bad input (arch outside the space, a checkpoint of another
//! space, missing data) exits 2 with a message naming the field, tensor or file.

mod eval_common;

use eval_common::{attnas_ok, attnas_usage_error, fixture, scratch};
use serde_json::Value;

/// Calibration and evaluation sizes small enough for a debug build.
const SMALL: &[&str] =
    &["--device", "cpu", "--quiet", "--calib-batches", "4", "--calib-batch-size", "64", "--max-images", "300"];

/// A middle subnet of the tiny space (resolution 32, two depth-1 stages, mixed kernels).
const MID: &str =
    r#"{"resolution":32,"width":[8,16,16,32,32,64],"depth":[1,1,2,1],"kernel":[3,5,3,5],"expand":[1,2,3,3]}"#;

fn eval_json(run: &str, data: &str, extra: &[&str]) -> Value {
    let archs = format!("max,{MID}");
    let mut args = vec!["eval", "--ckpt", run, "--data", data, "--arch", &archs, "--json"];
    args.extend(SMALL);
    args.extend(extra);
    serde_json::from_str(&attnas_ok(&args)).expect("--json output parses")
}

/// (name, top-1, top-5, images) of every result row.
fn rows(v: &Value) -> Vec<(String, f64, f64, u64)> {
    v["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["top1"].as_f64().unwrap(),
                r["top5"].as_f64().unwrap(),
                r["images"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn recalibration_beats_stored_statistics_and_is_deterministic() {
    let Some(f) = fixture("recalibration_beats_stored_statistics_and_is_deterministic") else { return };
    let a = eval_json(f.run(), f.data(), &["--seed", "5"]);
    let b = eval_json(f.run(), f.data(), &["--seed", "5"]);
    let stored = eval_json(f.run(), f.data(), &["--no-calib"]);

    let (ra, rb, rs) = (rows(&a), rows(&b), rows(&stored));
    assert_eq!(ra, rb, "same seed, different numbers");
    assert_eq!(ra.len(), 2);
    assert_eq!(a["calibration"]["images"].as_u64(), Some(256));
    assert!(stored["calibration"].is_null());
    // The stored statistics were calibrated for the min subnet (the trainer's last validation): on any
    // other subnet they mis-scale the activations layer after layer; recalibrated, the weights work.
    for (((name, cal, _, images), (_, unc, _, _)), margin) in ra.iter().zip(&rs).zip([10.0, 2.0]) {
        assert_eq!(*images, 300, "{name}: --max-images");
        assert!(
            *cal > unc + margin,
            "{name}: recalibrated top-1 {cal:.2}% is not {margin} points above stored-stats {unc:.2}%"
        );
    }
    let max = &a["results"][0];
    assert_eq!((max["name"].as_str(), a["results"][1]["name"].as_str()), (Some("max"), Some("inline")));
    assert!(max["mflops"].as_f64().unwrap() > a["results"][1]["mflops"].as_f64().unwrap());
    assert_eq!(max["arch"]["resolution"], 32);
}

#[test]
fn table_lists_every_arch() {
    let Some(f) = fixture("table_lists_every_arch") else { return };
    let arch_file = scratch("table").join("arch.yaml");
    // AttentiveNAS's dict form (kernel_size, expand_ratio), as its configs and .map table write archs.
    let dict = "{'resolution': 24, 'width': [8, 16, 24, 24, 32, 64], 'depth': [1, 2, 1, 1], 'kernel_size': [3, 5, 3, \
                3], 'expand_ratio': [1, 2, 3, 3]}\n";
    std::fs::write(&arch_file, dict).unwrap();
    let archs = format!("max,{}", arch_file.display());
    let mut args = vec!["eval", "--ckpt", f.run(), "--data", f.data(), "--arch", &archs, "--no-calib"];
    args.extend(SMALL);
    let out = attnas_ok(&args);
    assert!(out.contains("MFLOPs") && out.contains("top-1") && out.contains("--no-calib"), "{out}");
    let body: Vec<&str> = out.lines().filter(|l| l.starts_with("max ") || l.contains("arch.yaml")).collect();
    assert_eq!(body.len(), 2, "{out}");
    assert!(body.iter().all(|l| l.contains('%') && l.contains("300")), "{out}");
}

#[test]
fn arch_outside_the_space_is_refused() {
    let Some(f) = fixture("arch_outside_the_space_is_refused") else { return };
    let bad = r#"{"resolution":24,"width":[8,8,16,24,32,64],"depth":[1,1,1,1],"kernel":[3,7,3,3],"expand":[1,2,2,3]}"#;
    let err = attnas_usage_error(&["eval", "--ckpt", f.run(), "--data", f.data(), "--arch", bad, "--device", "cpu"]);
    assert!(err.contains("kernel[1]") && err.contains("= 7") && err.contains("allowed: 3, 5"), "{err}");
    let err =
        attnas_usage_error(&["eval", "--ckpt", f.run(), "--data", f.data(), "--arch", "min,a9", "--device", "cpu"]);
    assert!(err.contains("unknown arch name 'a9'") && err.contains("known names"), "{err}");
}

#[test]
fn checkpoint_of_another_space_names_the_tensor_and_both_shapes() {
    let Some(f) = fixture("checkpoint_of_another_space_names_the_tensor_and_both_shapes") else { return };
    // The tiny space with a wider stem: the first tensor, the stem conv, no longer fits.
    let tiny = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml")).unwrap();
    let other = tiny.replace("stem: {width: [8, 16]", "stem: {width: [8, 24]");
    assert_ne!(tiny, other, "configs/tiny.yaml changed: update this test's stem edit");
    let cfg = scratch("other-space").join("wide-stem.yaml");
    std::fs::write(&cfg, other).unwrap();
    let args = [
        "eval",
        "--ckpt",
        f.run(),
        "--data",
        f.data(),
        "--arch",
        "max",
        "--config",
        cfg.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let err = attnas_usage_error(&args);
    // The first tensor (in file order) whose shape changed: the stem's, or a first-block tensor fed by it.
    let named = err.contains("tensor 'first_conv.") || err.contains("tensor 'blocks.0.");
    assert!(named && err.contains("has shape [16") && err.contains("needs [24"), "{err}");
}

#[test]
fn missing_data_and_bad_dump_requests_are_usage_errors() {
    let Some(f) = fixture("missing_data_and_bad_dump_requests_are_usage_errors") else { return };
    let empty = scratch("no-data");
    let e = empty.to_str().unwrap();
    let err = attnas_usage_error(&["eval", "--ckpt", f.run(), "--data", e, "--arch", "min", "--device", "cpu"]);
    assert!(err.contains("val.pack") && err.contains("--eval-data"), "{err}");
    let dump = empty.join("x.npy");
    let args = [
        "eval",
        "--ckpt",
        f.run(),
        "--data",
        f.data(),
        "--arch",
        "min,max",
        "--device",
        "cpu",
        "--dump-logits",
        dump.to_str().unwrap(),
    ];
    let err = attnas_usage_error(&args);
    assert!(err.contains("exactly one --arch"), "{err}");
    let err = attnas_usage_error(&["eval", "--ckpt", f.run(), "--data", f.data(), "--arch", "min", "--crop", "0"]);
    assert!(err.contains("--crop must be positive"), "{err}");
}
