//! End to end on real data, on the CPU: `attnas train` trains the tiny supernet on Fashion-MNIST for a
//! few minutes (300 steps of 64 images, about a third of an epoch, with its own 300-step cosine
//! schedule), then validates the min and max subnets after BN recalibration on the 10,000 test images.
//!
//! Thresholds: chance is 10 %. A run of this length reaches 60-70 % top-1 for both subnets; a broken
//! gradient, a wrong layout or BN recalibration that does not work leaves them near chance (10-20 %).
//! We require >= 45 % for both (4.5x chance, with margin for changes of seed or schedule) and the max
//! subnet (1.94 MFLOPs) above the min subnet (0.24 MFLOPs), as the sandwich rule's premise predicts.
//! The run is deterministic for its seed (fixed-order reductions on the CPU), so the test is not flaky.
//!
//! bf16 (issue #13 item 1): the same run with `precision=bf16` (the CPU bf16 mode: activations, their
//! gradients and the 1x1 convs' weight copies stored as bf16, rounded where the kernels round) must learn
//! as well, within 3 points of the fp32 run for both subnets (a broken bf16 path, a wrong storage type or a
//! stale weight copy, stays near chance). Measured (docs/precision.md): bf16 is 0.6 / -0.2 (seed 0) and
//! 1.1 / 1.7 (seed 1) points below fp32 after these 300 steps; short runs differ by more than long ones.
//!
//! The goal, bf16 within 1 point of fp32, is a statement about a finished run: the ignored test
//! below trains the tiny recipe's whole 1,000 steps both ways and asserts it (about 11 minutes on 2
//! cores, too long for CI; `cargo test --release --features emu --test train_e2e -- --ignored`, seed from
//! ATTNAS_E2E_SEED). Measured: 0.09 / 0.33 points (seed 0) and 0.22 / 0.45 (seed 1).

mod train_common;

use attnas::train::metrics::{read_log, EpochRecord, LogLine};
use std::path::{Path, PathBuf};
use train_common::{fashion_mnist_packed, fresh_dir, have_optimised_bin, steps, train_command};

/// Top-1 of the max and min subnets in a run's last validation record.
fn final_top1(out: &Path) -> (f64, f64) {
    let epoch: EpochRecord = read_log(&out.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .rev()
        .find_map(|l| match l {
            LogLine::Epoch(e) => Some(e),
            _ => None,
        })
        .expect("a validation record");
    assert!(epoch.subnets.iter().all(|s| s.images == 10_000), "validated on the whole test split");
    let acc = |role: &str| epoch.subnets.iter().find(|s| s.role.name() == role).expect(role).top1;
    (acc("max"), acc("min"))
}

/// Trains the tiny recipe for `steps` steps (its own cosine schedule) in fp32 and in bf16 at the same
/// time: each alone leaves part of the CPU idle (the data pipeline and the serial parts of a step), so
/// the pair takes about 0.8x the time of one after the other. Returns both output folders and the fp32
/// run's stdout.
fn train_pair(data: &Path, name: &str, steps: u32, seed: u64) -> (PathBuf, PathBuf, String) {
    let (out, out16) = (fresh_dir(name), fresh_dir(&format!("{name}-bf16")));
    let (n, sd) = (format!("max_steps={steps}"), format!("seed={seed}"));
    let sched = format!("schedule_steps={steps}");
    let run = |out: &Path, sets: &[&str]| train_command(data, out, sets, &[]).spawn().expect("spawn attnas train");
    let fp32 = run(&out, &[&n, &sched, &sd]);
    let bf16 = run(&out16, &[&n, &sched, &sd, "precision=bf16"]);
    let (o, o16) =
        (fp32.wait_with_output().expect("attnas train (fp32)"), bf16.wait_with_output().expect("attnas train (bf16)"));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&o.stderr));
    assert!(o16.status.success(), "{}", String::from_utf8_lossy(&o16.stderr));
    (out, out16, stdout)
}

#[test]
fn tiny_supernet_learns_fashion_mnist_on_the_cpu() {
    if !have_optimised_bin() {
        println!("skipped: train_e2e: needs an optimised binary (the test profile is; this build has opt-level 0: set ATTNAS_BIN)");
        return;
    }
    let Some(data) = fashion_mnist_packed("train_e2e") else { return };
    let (out, out16, stdout) = train_pair(&data, "e2e-tiny", 300, 0);
    println!("{stdout}");
    let (max, min) = final_top1(&out);
    assert!(max >= 45.0 && min >= 45.0, "top-1 max {max:.2} % min {min:.2} % (chance 10 %)");
    assert!(max > min, "max subnet {max:.2} % should beat min subnet {min:.2} %");
    // The training loss fell: the last 20 steps' mean is well below the first step's (ln 10 = 2.30).
    let s = steps(&out.join("metrics.jsonl"));
    let first = s[0].subnets[0].loss;
    let late: f64 = s[s.len() - 20..].iter().map(|r| r.subnets[0].loss).sum::<f64>() / 20.0;
    assert!(late < first - 0.5, "max-subnet loss {first:.3} -> {late:.3}");
    // The README's output names both subnets and a checkpoint.
    assert!(stdout.contains("max") && stdout.contains("min") && stdout.contains("checkpoint:"), "{stdout}");

    // The same run in bf16.
    let (max16, min16) = final_top1(&out16);
    println!("top-1 fp32 max {max:.2} % min {min:.2} %; bf16 max {max16:.2} % min {min16:.2} %");
    assert!(
        (max - max16).abs() <= 3.0 && (min - min16).abs() <= 3.0,
        "bf16 top-1 max {max16:.2} % min {min16:.2} % against fp32 {max:.2} % {min:.2} %"
    );
}

#[test]
#[ignore = "the tiny recipe's whole 1,000 steps in fp32 and bf16: about 11 minutes on 2 cores"]
fn bf16_reaches_the_fp32_accuracy_within_one_point_at_the_recipe_length() {
    if !have_optimised_bin() {
        println!("skipped: bf16 recipe pair: needs an optimised binary");
        return;
    }
    let Some(data) = fashion_mnist_packed("train_e2e") else { return };
    let seed: u64 = std::env::var("ATTNAS_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let (out, out16, _) = train_pair(&data, "e2e-recipe", 1000, seed);
    let ((max, min), (max16, min16)) = (final_top1(&out), final_top1(&out16));
    println!("seed {seed}: top-1 fp32 max {max:.2} % min {min:.2} %; bf16 max {max16:.2} % min {min16:.2} %");
    assert!(max >= 80.0 && min >= 75.0, "the recipe reaches about 86 / 83 %: fp32 {max:.2} / {min:.2} %");
    assert!(
        max - max16 <= 1.0 && min - min16 <= 1.0,
        "bf16 top-1 max {max16:.2} % min {min16:.2} % more than 1 point below fp32 {max:.2} % {min:.2} %"
    );
}
