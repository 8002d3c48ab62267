//! Determinism and exact resume of `attnas train` (issue: the same seed and data give bit-identical
//! losses with or without an interruption), the non-finite-loss guard, and the attentive path as the
//! metrics log records it. Small runs of the tiny space on Fashion-MNIST (batch 16, a handful of steps).

mod train_common;

use train_common::{fashion_mnist_packed, fresh_dir, steps, train};

/// Every run here: 6-step schedule, tiny validation (1 calibration batch, 64 held-out images).
const BASE: &[&str] =
    &["batch_size=16", "schedule_steps=6", "bn_calib.batches=1", "bn_calib.batch_size=16", "bn_calib.eval_images=64"];

fn sets<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

fn loss_bits(r: &attnas::train::metrics::StepRecord) -> Vec<u64> {
    r.subnets.iter().map(|s| s.loss.to_bits()).collect()
}

#[test]
fn same_seed_gives_bit_identical_losses_and_resume_continues_exactly() {
    let Some(data) = fashion_mnist_packed("train_resume") else { return };
    let (a, b, c) = (fresh_dir("resume-a"), fresh_dir("resume-b"), fresh_dir("resume-c"));
    for out in [&a, &b] {
        let o = train(&data, out, &sets(&["max_steps=6"]), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (sa, sb) = (steps(&a.join("metrics.jsonl")), steps(&b.join("metrics.jsonl")));
    assert_eq!(sa.len(), 6);
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(loss_bits(x), loss_bits(y), "step {}: two runs with one seed differ", x.step);
        let archs =
            |r: &attnas::train::metrics::StepRecord| r.subnets.iter().map(|s| s.arch.clone()).collect::<Vec<_>>();
        assert_eq!(archs(x), archs(y), "step {}: sampled archs differ", x.step);
    }
    // Interrupted after 3 steps, then resumed to 6.
    let o = train(&data, &c, &sets(&["max_steps=3"]), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train(&data, &c, &sets(&["max_steps=6"]), &["--resume"]);
    assert!(o.status.success(), "resume failed: {}", String::from_utf8_lossy(&o.stderr));
    let sc = steps(&c.join("metrics.jsonl"));
    assert_eq!(sc.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>(), "each step logged once");
    for (x, y) in sa.iter().zip(&sc) {
        assert_eq!(loss_bits(x), loss_bits(y), "step {}: resumed run differs from the uninterrupted one", x.step);
        assert_eq!(x.lr.to_bits(), y.lr.to_bits(), "step {}: learning rate differs", x.step);
    }
    // The losses are not all the same number (the comparison above could not pass vacuously).
    assert!(sa.windows(2).any(|w| loss_bits(&w[0]) != loss_bits(&w[1])));
}

#[test]
fn resume_with_another_config_is_refused() {
    let Some(data) = fashion_mnist_packed("train_resume") else { return };
    let d = fresh_dir("resume-other");
    let o = train(&data, &d, &sets(&["max_steps=1"]), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train(&data, &d, &sets(&["max_steps=2", "label_smoothing=0.2"]), &["--resume"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another config") && err.contains("fingerprint"), "{err}");
    // A new run into a folder that holds one is refused unless told what to do.
    let o = train(&data, &d, &sets(&["max_steps=1"]), &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--resume") && err.contains("--overwrite"), "{err}");
    let o = train(&data, &d, &sets(&["max_steps=1"]), &["--overwrite"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(steps(&d.join("metrics.jsonl")).len(), 1, "the old log was replaced");
}

#[test]
fn a_non_finite_loss_stops_the_run_naming_step_subnet_and_checkpoint() {
    let Some(data) = fashion_mnist_packed("train_resume") else { return };
    let d = fresh_dir("nonfinite");
    // An absurd learning rate without clipping overflows the weights after the first update.
    let o = train(
        &data,
        &d,
        &sets(&["max_steps=6", "base_lr=1.0e38", "grad_clip_value=null", "checkpoint.every_steps=1"]),
        &[],
    );
    assert!(!o.status.success(), "the run should stop");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("non-finite loss") && err.contains("subnet"), "{err}");
    assert!(err.contains("step ") && err.contains("Last good checkpoint"), "{err}");
    assert!(err.contains("ckpt-") || err.contains("none yet"), "names the checkpoint: {err}");
}

#[test]
fn the_log_records_bestup_and_worstup_choices() {
    let Some(data) = fashion_mnist_packed("train_resume") else { return };
    for (method, want_best) in [("bestup", true), ("worstup", false)] {
        let d = fresh_dir(&format!("attentive-{method}"));
        let m = format!("sampler.method={method}");
        let o = train(&data, &d, &sets(&["max_steps=3", "sandwich.num_arch_training=4", &m]), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let records = steps(&d.join("metrics.jsonl"));
        assert_eq!(records.len(), 3);
        for r in &records {
            let roles: Vec<_> = r.subnets.iter().map(|s| s.role.name()).collect();
            assert_eq!(roles, ["max", "sampled", "sampled", "min"], "sandwich order");
            for s in r.subnets.iter().filter(|s| s.role.name() == "sampled") {
                assert_eq!(s.candidates.len(), 3, "BestUp-3 / WorstUp-3 score 3 candidates");
                assert!(s.target_bin.is_some());
                let scores: Vec<f64> = s.candidates.iter().map(|c| c.score).collect();
                let pick = if want_best {
                    scores.iter().enumerate().fold(0, |b, (i, &v)| if v > scores[b] { i } else { b })
                } else {
                    scores.iter().enumerate().fold(0, |b, (i, &v)| if v < scores[b] { i } else { b })
                };
                assert_eq!(s.chosen, Some(pick), "{method}: scores {scores:?}");
                assert_eq!(s.arch, s.candidates[pick].arch, "the trained arch is the chosen candidate");
                assert!(scores.iter().all(|v| v.is_finite() && *v < 0.0), "score = -loss: {scores:?}");
            }
            assert!(r.images_per_sec > 0.0 && r.lr > 0.0);
        }
    }
    // Uniform sampling: no candidates, no target.
    let d = fresh_dir("attentive-uniform");
    let o = train(&data, &d, &sets(&["max_steps=1", "sampler.method=uniform"]), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = &steps(&d.join("metrics.jsonl"))[0];
    assert!(r.subnets.iter().all(|s| s.candidates.is_empty() && s.target_bin.is_none()));
}
