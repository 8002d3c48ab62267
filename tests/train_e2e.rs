//! End to end on real data, on the CPU: `attnas train` trains the tiny supernet on Fashion-MNIST for a
//! few minutes (300 steps of 64 images, about a third of an epoch, with its own 300-step cosine
//! schedule), then validates the min and max subnets after BN recalibration on the 10,000 test images.
//!
//! Thresholds: chance is 10 %. A run of this length reaches 60-70 % top-1 for both subnets; a broken
//! gradient, a wrong layout or BN recalibration that does not work leaves them near chance (10-20 %).
//! We require >= 45 % for both (4.5x chance, with margin for changes of seed or schedule) and the max
//! subnet (1.94 MFLOPs) above the min subnet (0.24 MFLOPs), as the sandwich rule's premise predicts.
//! The run is deterministic for its seed (fixed-order reductions on the CPU), so the test is not flaky.

mod train_common;

use attnas::train::metrics::{read_log, LogLine};
use train_common::{fashion_mnist_packed, fresh_dir, have_release_bin, steps, train};

#[test]
fn tiny_supernet_learns_fashion_mnist_on_the_cpu() {
    if !have_release_bin() {
        println!("skipped: train_e2e: needs an optimised binary (scripts/test.sh builds one and sets ATTNAS_BIN)");
        return;
    }
    let Some(data) = fashion_mnist_packed("train_e2e") else { return };
    let out = fresh_dir("e2e-tiny");
    let o = train(&data, &out, &["max_steps=300", "schedule_steps=300"], &[]);
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
}
