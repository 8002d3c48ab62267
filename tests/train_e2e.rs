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
//! as well, within 3 points of the fp32 run for both subnets. Measured (docs/precision.md): bf16 is 1.0
//! and 1.6-1.9 points below fp32 after these 300 steps (seeds 0 and 1), and 0.3 / 0.0 points after the tiny
//! recipe's 1,000 steps (the goal of 1 point holds there; too long for CI). A broken bf16 path (a
//! wrong storage type, a stale weight copy) stays near chance.

mod train_common;

use attnas::train::metrics::{read_log, LogLine};
use train_common::{fashion_mnist_packed, fresh_dir, have_release_bin, steps, train_command};

#[test]
fn tiny_supernet_learns_fashion_mnist_on_the_cpu() {
    if !have_release_bin() {
        println!("skipped: train_e2e: needs an optimised binary (scripts/test.sh builds one and sets ATTNAS_BIN)");
        return;
    }
    let Some(data) = fashion_mnist_packed("train_e2e") else { return };
    // The fp32 and bf16 runs train at the same time: each alone leaves part of the CPU idle (the data
    // pipeline and the serial parts of a step), so the pair takes about 0.8x the time of one after the other.
    let out = fresh_dir("e2e-tiny");
    let out16 = fresh_dir("e2e-tiny-bf16");
    let run = |out: &std::path::Path, sets: &[&str]| {
        train_command(&data, out, sets, &[]).spawn().expect("spawn attnas train")
    };
    let fp32 = run(&out, &["max_steps=300", "schedule_steps=300"]);
    let bf16 = run(&out16, &["max_steps=300", "schedule_steps=300", "precision=bf16"]);
    let (o, o16) =
        (fp32.wait_with_output().expect("attnas train (fp32)"), bf16.wait_with_output().expect("attnas train (bf16)"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&o.stderr));
    println!("{stdout}");
    let log = read_log(&out.join("metrics.jsonl")).unwrap();
    let epoch = log
        .iter()
        .rev()
        .find_map(|l| match l {
            LogLine::Epoch(e) => Some(e.clone()),
            _ => None,
        })
        .expect("a validation record");
    let acc = |role: &str| epoch.subnets.iter().find(|s| s.role.name() == role).expect(role).top1;
    let (max, min) = (acc("max"), acc("min"));
    assert!(epoch.subnets.iter().all(|s| s.images == 10_000), "validated on the whole test split");
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
    assert!(o16.status.success(), "{}", String::from_utf8_lossy(&o16.stderr));
    let log16 = read_log(&out16.join("metrics.jsonl")).unwrap();
    let epoch16 = log16
        .iter()
        .rev()
        .find_map(|l| match l {
            LogLine::Epoch(e) => Some(e.clone()),
            _ => None,
        })
        .expect("a bf16 validation record");
    let acc16 = |role: &str| epoch16.subnets.iter().find(|s| s.role.name() == role).expect(role).top1;
    let (max16, min16) = (acc16("max"), acc16("min"));
    println!("top-1 fp32 max {max:.2} % min {min:.2} %; bf16 max {max16:.2} % min {min16:.2} %");
    assert!(
        (max - max16).abs() <= 3.0 && (min - min16).abs() <= 3.0,
        "bf16 top-1 max {max16:.2} % min {min16:.2} % against fp32 {max:.2} % {min:.2} %"
    );
}
