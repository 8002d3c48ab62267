//! The accuracy predictor: it ranks held-out subnets of a known monotone relation (Kendall's tau > 0.8),
//! it finds no order in shuffled targets (tau near 0), its file round-trips and refuses bad input,
//! `attnas predictor fit` reports tau, and the attentive training step with `scorer: predictor` trains the
//! candidate the predictor ranks best (BestUp) or worst (WorstUp).

use std::path::Path;
use std::sync::Arc;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::Arena;
use attnas::nn::{activation_arena_len, Supernet};
use attnas::predictor::rank::{holdout_split, kendall_tau};
use attnas::predictor::{FitOptions, Predictor};
use attnas::search::report::write_evaluated;
use attnas::search::{Evaluated, Origin};
use attnas::space::attentive::{AttentiveSampler, Prior, Selection};
use attnas::space::table::{generate, TableMethod};
use attnas::space::{flops, sampler, Arch, Space};
use attnas::train::step::{CandidateScorer, Distillation, MiddleSampling, StepBuffers, StepSettings, StepState};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// `n` uniform archs of `space` with targets `f(arch) + noise` (noise uniform in +-`noise`).
fn pairs(space: &Space, n: usize, noise: f64, f: impl Fn(&Arch) -> f64) -> (Vec<Arch>, Vec<f64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let archs: Vec<Arch> = (0..n).map(|_| sampler::uniform(space, &mut rng)).collect();
    let y = archs.iter().map(|a| f(a) + noise * (2.0 * rng.random::<f64>() - 1.0)).collect();
    (archs, y)
}

/// Fit on half, Kendall's tau on the other half.
fn heldout_tau(archs: &[Arch], y: &[f64]) -> f64 {
    let (fit, held) = holdout_split(archs.len(), 0.5, 3);
    let x = |idx: &[usize]| idx.iter().map(|&i| archs[i].to_vector()).collect::<Vec<_>>();
    let p = Predictor::fit(&x(&fit), &fit.iter().map(|&i| y[i]).collect::<Vec<_>>(), &FitOptions::default()).unwrap();
    let predicted: Vec<f64> = x(&held).iter().map(|v| p.predict_vector(v).unwrap()).collect();
    kendall_tau(&predicted, &held.iter().map(|&i| y[i]).collect::<Vec<_>>()).unwrap()
}

/// A monotone "accuracy": more resolution, depth, width and expansion help, with diminishing returns.
fn accuracy_like(a: &Arch) -> f64 {
    let sum = |v: &[usize]| v.iter().sum::<usize>() as f64;
    60.0 + 0.04 * a.resolution as f64 + 0.4 * sum(&a.depth) + 0.01 * sum(&a.width) + 0.2 * sum(&a.expand)
}

#[test]
fn ranks_a_known_monotone_relation_and_not_shuffled_targets() {
    let space = Space::builtin("attentivenas").unwrap();
    let (archs, y) = pairs(&space, 400, 0.2, accuracy_like);
    assert_eq!(archs[0].to_vector().len(), 31, "the 31-number encoding of spec 4.5");
    let tau = heldout_tau(&archs, &y);
    assert!(tau > 0.8, "tau {tau} on a monotone relation");
    // log-FLOPs is multiplicative in the genes, not additive: still ranked well.
    let (archs_f, y_f) = pairs(&space, 400, 0.0, |a| flops::mflops(&space, a).ln());
    let tau_f = heldout_tau(&archs_f, &y_f);
    assert!(tau_f > 0.8, "tau {tau_f} on log-MFLOPs");
    // No relation: 500 held-out pairs put a chance tau within about +-0.06 (two standard deviations).
    let (archs_s, mut shuffled) = pairs(&space, 1000, 0.2, accuracy_like);
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(5));
    let tau0 = heldout_tau(&archs_s, &shuffled);
    println!("held-out tau: monotone {tau:.3}, log-MFLOPs {tau_f:.3}, shuffled {tau0:.3}");
    assert!(tau0.abs() < 0.1, "tau {tau0} on shuffled targets");
}

#[test]
fn file_round_trips_and_bad_input_is_refused() {
    let space = Space::builtin("tiny").unwrap();
    let (archs, y) = pairs(&space, 60, 0.1, accuracy_like);
    let x: Vec<Vec<usize>> = archs.iter().map(Arch::to_vector).collect();
    let p = Predictor::fit(&x, &y, &FitOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    p.save(&path).unwrap();
    let q = Predictor::load(&path).unwrap();
    assert_eq!(q, p);
    assert_eq!(q.predict(&archs[3]).unwrap(), p.predict(&archs[3]).unwrap());
    p.check_space(&space, "p.json").unwrap();
    let other = Space::builtin("attentivenas").unwrap();
    let e = p.check_space(&other, "p.json").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("31 genes"), "{e}");
    assert!(p.predict(&other.min_arch()).is_err());
    // A file with a weight missing is an input error naming the file.
    let mut broken = p.clone();
    broken.weights.pop();
    std::fs::write(&path, serde_json::to_string(&broken).unwrap()).unwrap();
    let e = Predictor::load(&path).unwrap_err();
    assert!(e.exit_code() == 2 && e.to_string().contains("p.json"), "{e}");
    assert!(Predictor::fit(&x[..1], &y[..1], &FitOptions::default()).is_err());
}

#[test]
fn predictor_fit_command_reports_tau_on_held_out_pairs() {
    let space = Space::builtin("tiny").unwrap();
    let (archs, y) = pairs(&space, 80, 0.1, accuracy_like);
    let evaluated: Vec<Evaluated> = archs
        .iter()
        .zip(&y)
        .map(|(a, &top1)| Evaluated {
            arch: a.clone(),
            mflops: flops::mflops(&space, a),
            params: 0,
            top1,
            top5: 100.0,
            iteration: 0,
            origin: Origin::Initial,
            predicted: None,
            latency_ms: None,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_evaluated(&dir.path().join("evaluated.csv"), &evaluated).unwrap();
    let out_file = dir.path().join("predictor.json");
    let bin = std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string());
    let out = std::process::Command::new(bin)
        .args(["predictor", "fit", "--config", "tiny", "--json", "--from"])
        .arg(dir.path())
        .arg("--out")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["pairs"].as_u64(), report["heldout_pairs"].as_u64()), (Some(80), Some(40)));
    let tau = report["kendall_tau"].as_f64().unwrap();
    assert!(tau > 0.6, "tau {tau}");
    let p = Predictor::load(&out_file).unwrap();
    assert_eq!((p.heldout_kendall_tau, p.space.as_deref()), (Some(tau), Some("tiny")));
}

/// One attentive step on a tiny supernet with the predictor as scorer; returns, per sampled subnet, the
/// candidates' predicted scores and the chosen index.
fn attentive_step(selection: Selection, p: &Arc<Predictor>) -> Vec<(Vec<f64>, usize)> {
    let b = CpuBackend::new();
    let space = Space::builtin("tiny").unwrap();
    let (n, side) = (4, 28);
    let net = Supernet::new(&b, space.clone(), 0).unwrap();
    let mut arena = Arena::new(
        &b,
        "activations",
        activation_arena_len(&space, n, side, true, attnas::backend::Dtype::F32).unwrap(),
    )
    .unwrap();
    let bufs = StepBuffers::new(&b, n, side, space.num_classes).unwrap();
    let images = attnas::testing::random_vec(1, n * side * side * 3, -2.0, 2.0);
    bufs.upload(&b, &images, &[0, 1, 2, 3]).unwrap();
    let groups = net.param_groups(1e-5, &[".bn".to_string()]).unwrap();
    let table = generate(&space, 500, TableMethod::Uniform, 0.05, &mut rand::rngs::StdRng::seed_from_u64(2));
    let mut sampler = AttentiveSampler::new(&space, &table, 0.05, Prior::Empirical).unwrap();
    let settings = StepSettings {
        label_smoothing: 0.1,
        dropout: 0.0,
        drop_connect: 0.0,
        drop_connect_only_last_two_stages: true,
        kd: Distillation::Kl,
        num_arch_training: 4,
        sampling: MiddleSampling::Attentive(selection),
        num_trials: 4,
        scorer: CandidateScorer::Predictor(p.clone()),
        momentum: 0.9,
        clip: 1.0,
        seed: 7,
    };
    let mut state =
        StepState { b: &b, net: &net, arena: &mut arena, bufs: &bufs, groups: &groups, sampler: Some(&mut sampler) };
    let out = state.run(0, 0.01, &settings).unwrap();
    let sampled = &out.subnets[1..out.subnets.len() - 1];
    assert_eq!(sampled.len(), 2);
    sampled
        .iter()
        .map(|s| {
            let chosen = s.chosen.unwrap();
            assert_eq!(s.arch, s.candidates[chosen].arch, "the chosen candidate is the one trained");
            let scores: Vec<f64> = s.candidates.iter().map(|c| c.score).collect();
            for c in &s.candidates {
                assert_eq!(c.score, p.predict(&c.arch).unwrap(), "candidates are scored by the predictor");
            }
            (scores, chosen)
        })
        .collect()
}

#[test]
fn attentive_step_trains_the_candidate_the_predictor_ranks_best_or_worst() {
    let space = Space::builtin("tiny").unwrap();
    let (archs, y) = pairs(&space, 80, 0.0, accuracy_like);
    let x: Vec<Vec<usize>> = archs.iter().map(Arch::to_vector).collect();
    let p = Arc::new(Predictor::fit(&x, &y, &FitOptions::default()).unwrap());
    for (selection, want_max) in [(Selection::BestUp, true), (Selection::WorstUp, false)] {
        let draws = attentive_step(selection, &p);
        let mut distinct = false;
        for (scores, chosen) in draws {
            let extreme = if want_max {
                scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            } else {
                scores.iter().cloned().fold(f64::INFINITY, f64::min)
            };
            assert_eq!(scores[chosen], extreme, "{selection:?} picked {chosen} of {scores:?}");
            distinct |= scores.iter().any(|&s| s != scores[0]);
        }
        assert!(distinct, "the candidates should differ in predicted top-1, or the test proves nothing");
    }
}

#[test]
fn training_config_takes_a_predictor_scorer() {
    let (space, mut cfg) = attnas::train::config::from_yaml(attnas::space::config::TINY_YAML, "tiny.yaml").unwrap();
    let base = cfg.fingerprint(&space);
    cfg.apply_set("sampler.scorer=predictor").unwrap();
    let e = cfg.check(&space).unwrap_err();
    assert!(e.exit_code() == 2 && e.to_string().contains("train.sampler.predictor"), "{e}");
    cfg.apply_set("sampler.predictor=p.json").unwrap();
    cfg.check(&space).unwrap();
    assert_ne!(cfg.fingerprint(&space), base);
}

#[test]
fn train_command_runs_with_the_predictor_scorer() {
    let Some(src) = attnas::data::fashion_mnist_dir() else {
        let missing = "Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)";
        attnas::testing::skip_or_require("train with a predictor", missing, "REQUIRE_SHARED_DATA");
        return;
    };
    let bin = std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fm");
    let run = |args: &[&str]| std::process::Command::new(&bin).args(args).output().unwrap();
    assert!(run(&["prepare", src.to_str().unwrap(), data.to_str().unwrap(), "--quiet"]).status.success());
    // Only train.pack, so that validation uses a few held-out training images rather than val.pack.
    std::fs::remove_file(data.join("val.pack")).unwrap();
    let space = Space::builtin("tiny").unwrap();
    let (archs, y) = pairs(&space, 40, 0.0, accuracy_like);
    let x: Vec<Vec<usize>> = archs.iter().map(Arch::to_vector).collect();
    let good = dir.path().join("tiny.json");
    Predictor::fit(&x, &y, &FitOptions::default()).unwrap().save(&good).unwrap();
    let big = Space::builtin("attentivenas").unwrap();
    let (archs, y) = pairs(&big, 40, 0.0, accuracy_like);
    let x: Vec<Vec<usize>> = archs.iter().map(Arch::to_vector).collect();
    let wrong = dir.path().join("attentivenas.json");
    Predictor::fit(&x, &y, &FitOptions::default()).unwrap().save(&wrong).unwrap();
    let config = dir.path().join("tiny.yaml");
    std::fs::write(&config, attnas::space::config::TINY_YAML).unwrap();
    let train = |predictor: &Path, out: &str| {
        let set = format!("sampler.predictor={}", predictor.display());
        let out = dir.path().join(out);
        run(&[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--device",
            "cpu",
            "--quiet",
            "--json",
            "--data",
            data.join("train.pack").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "sampler.scorer=predictor",
            "--set",
            &set,
            "--set",
            "max_steps=2",
            "--set",
            "batch_size=8",
            "--set",
            "bn_calib.batches=1",
            "--set",
            "bn_calib.batch_size=8",
            "--set",
            "data.eval_split=null",
            "--set",
            "data.holdout=16",
        ])
    };
    let out = train(&good, "run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The step log records the candidates' scores: the predictor's top-1 of each candidate.
    let log = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let p = Predictor::load(&good).unwrap();
    let mut checked = 0;
    for line in log.lines().filter(|l| l.contains("\"candidates\"")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for s in v["subnets"].as_array().into_iter().flatten() {
            for c in s["candidates"].as_array().into_iter().flatten() {
                let arch: Arch = serde_json::from_value(c["arch"].clone()).unwrap();
                assert!((c["score"].as_f64().unwrap() - p.predict(&arch).unwrap()).abs() < 1e-9);
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "{checked} candidate scores checked");
    let out = train(&wrong, "run-wrong");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("31-gene") && err.contains("space 'tiny'"), "{err}");
}
