//! The evolutionary search (spec 6.2). In process, with a synthetic scorer: the front is non-dominated
//! and covers every evaluated subnet, every subnet lies in the FLOPs range and is evaluated once, a
//! search continued from its saved progress equals an uninterrupted one, and the predictor filter keeps
//! the children it ranks best. End to end (`attnas search` on a tiny supernet trained on Fashion-MNIST in
//! a fixture): the files, the front, resume and the refusal of another search's state.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use attnas::predictor::{FitOptions, Predictor};
use attnas::search::evolution::{self, filter_by_predictor, next_population, Observer};
use attnas::search::pareto::{dominates, Point};
use attnas::search::{EvolutionSettings, Origin, SearchProgress};
use attnas::space::{flops, sampler, Arch, Space};
use attnas::train::validate::Accuracy;
use rand::SeedableRng;

fn settings(iterations: usize) -> EvolutionSettings {
    EvolutionSettings {
        population: 16,
        mutations: 8,
        crossovers: 8,
        iterations,
        mutate_prob: 0.2,
        freeze_resolution: false,
        bucket: 0.05,
        flops_lo: 0.3,
        flops_hi: 2.0,
        seed: 3,
        predictor_keep: 0.5,
        seeds: Vec::new(),
    }
}

/// A deterministic stand-in for "BN-recalibrated top-1": grows with FLOPs, plus arch-dependent noise.
fn synthetic(space: &Space, arch: &Arch) -> Accuracy {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    arch.hash(&mut h);
    let noise = (h.finish() % 1000) as f64 / 100.0;
    let top1 = 40.0 + 20.0 * flops::mflops(space, arch).ln() + noise;
    Accuracy { top1, top5: 90.0, images: 100 }
}

struct Count(usize);
impl Observer for Count {
    fn iteration(&mut self, _: &SearchProgress) -> attnas::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

fn search(progress: &mut SearchProgress, iterations: usize) -> usize {
    let space = Space::builtin("tiny").unwrap();
    let mut calls = 0;
    let mut eval = |a: &Arch| {
        calls += 1;
        Ok(synthetic(&space, a))
    };
    evolution::run(&space, &settings(iterations), None, progress, &mut eval, &mut Count(0)).unwrap();
    calls
}

fn assert_front_is_non_dominated(front: &[Point], all: &[Point]) {
    for (i, a) in front.iter().enumerate() {
        for (j, b) in front.iter().enumerate() {
            assert!(i == j || !dominates(*b, *a), "front point {a:?} is dominated by {b:?}");
        }
        assert!(all.iter().all(|q| !dominates(*q, *a)), "front point {a:?} is dominated by an evaluated one");
    }
}

#[test]
fn synthetic_search_front_is_non_dominated_in_range_and_evaluates_each_arch_once() {
    let space = Space::builtin("tiny").unwrap();
    let mut progress = SearchProgress::default();
    let calls = search(&mut progress, 3);
    let ev = &progress.evaluated;
    assert_eq!(calls, ev.len(), "one evaluation per recorded subnet");
    assert_eq!(ev.iter().map(|e| &e.arch).collect::<HashSet<_>>().len(), ev.len(), "no arch evaluated twice");
    assert!(ev.len() > 16 && ev.len() <= 16 + 2 * 16, "{} evaluated", ev.len());
    assert_eq!(ev[0].origin, Origin::Initial, "the min subnet (0.24 MFLOPs) is outside 0.3:2.0");
    assert!(ev.iter().any(|e| e.origin == Origin::Mutation) && ev.iter().any(|e| e.origin == Origin::Crossover));
    for e in ev {
        assert!((0.3..=2.0).contains(&e.mflops), "{} MFLOPs out of range", e.mflops);
        assert_eq!(e.mflops, flops::mflops(&space, &e.arch));
    }
    let all: Vec<Point> = ev.iter().map(|e| e.point()).collect();
    let front: Vec<Point> = attnas::search::pareto::pareto_front(&all).into_iter().map(|i| all[i]).collect();
    assert!(front.len() >= 2);
    assert_front_is_non_dominated(&front, &all);
    // Every evaluated point is on the front or dominated by (or equal to) a front point.
    for p in &all {
        assert!(front.iter().any(|f| f == p || dominates(*f, *p)), "{p:?} neither on nor behind the front");
    }
    // The min subnet leads the population when it is in range.
    let mut s = settings(1);
    s.flops_lo = 0.0;
    assert_eq!(evolution::initial_population(&space, &s).unwrap()[0].origin, Origin::Min);
}

/// `--seed-arch`: the given subnets lead the initial population (duplicates and the min subnet once),
/// the rest is drawn as without seeds; a seed outside the FLOPs range or more seeds than the population
/// are usage errors naming the fix.
#[test]
fn seed_archs_lead_the_initial_population() {
    let space = Space::builtin("tiny").unwrap();
    let mut s = settings(1);
    s.flops_lo = 0.0;
    let plain = evolution::initial_population(&space, &s).unwrap();
    let max = space.max_arch();
    let mid = plain[3].arch.clone();
    s.seeds = vec![max.clone(), mid.clone(), max.clone(), space.min_arch()];
    let seeded = evolution::initial_population(&space, &s).unwrap();
    assert_eq!(seeded.len(), s.population);
    let head: Vec<(&Arch, Origin)> = seeded[..3].iter().map(|c| (&c.arch, c.origin)).collect();
    assert_eq!(head, [(&max, Origin::Seed), (&mid, Origin::Seed), (&space.min_arch(), Origin::Seed)]);
    assert!(seeded[3..].iter().all(|c| c.origin == Origin::Initial));
    // The uniform draws are those of the unseeded search (the seeds take no random numbers).
    assert_eq!(seeded[3].arch, plain[1].arch);
    s.flops_lo = 0.3;
    s.seeds = vec![space.min_arch()];
    let e = evolution::initial_population(&space, &s).unwrap_err();
    assert!(e.to_string().contains("--seed-arch item 1: 0.24 MFLOPs lies outside --flops 0.3:2"), "{e}");
    s.seeds = vec![max; 17];
    assert!(s.check().unwrap_err().to_string().contains("--seed-arch gives 17 subnets but --population is 16"));
}

#[test]
fn continuing_saved_progress_equals_an_uninterrupted_search() {
    let mut full = SearchProgress::default();
    search(&mut full, 4);
    let mut part = SearchProgress::default();
    search(&mut part, 2);
    assert_eq!(part.iterations_done, 2);
    // Through JSON, as the state file stores it.
    let mut resumed: SearchProgress = serde_json::from_str(&serde_json::to_string(&part).unwrap()).unwrap();
    let calls = search(&mut resumed, 4);
    assert_eq!(calls, full.evaluated.len() - part.evaluated.len(), "nothing evaluated twice across the resume");
    assert_eq!(resumed, full);
    // A finished search continued with the same iteration count evaluates nothing.
    assert_eq!(search(&mut resumed, 4), 0);
}

#[test]
fn predictor_filter_keeps_the_children_it_ranks_best() {
    let space = Space::builtin("tiny").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let archs: Vec<Arch> = (0..60).map(|_| sampler::uniform(&space, &mut rng)).collect();
    let x: Vec<Vec<usize>> = archs.iter().map(Arch::to_vector).collect();
    let y: Vec<f64> = archs.iter().map(|a| synthetic(&space, a).top1).collect();
    let p = Predictor::fit(&x, &y, &FitOptions::default()).unwrap();
    let s = settings(2);
    let parents: Vec<&Arch> = archs.iter().take(10).collect();
    let children = next_population(&space, &s, &parents, 1, None).unwrap();
    assert_eq!(children.len(), 16);
    let kept = next_population(&space, &s, &parents, 1, Some(&p)).unwrap();
    assert_eq!(kept.len(), 8, "half of 16");
    let scores: Vec<f64> = children.iter().map(|c| p.predict(&c.arch).unwrap()).collect();
    let threshold = kept.iter().map(|c| c.predicted.unwrap()).fold(f64::INFINITY, f64::min);
    let dropped: Vec<f64> =
        children.iter().zip(&scores).filter(|(c, _)| !kept.iter().any(|k| k.arch == c.arch)).map(|(_, &s)| s).collect();
    assert!(dropped.iter().all(|&d| d <= threshold), "a dropped child ranks above a kept one");
    assert_eq!(filter_by_predictor(children.clone(), &p, 1.0).unwrap().len(), 16);
}

// ---- end to end ---------------------------------------------------------------------------------------

/// The binary under test: `ATTNAS_BIN` (set by the GPU bundle's run.sh) or the one cargo built.
fn attnas_bin() -> String {
    std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string())
}

fn run(args: &[&str]) -> Output {
    Command::new(attnas_bin()).args(args).output().unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Fashion-MNIST packed (train.pack, val.pack) and a tiny supernet trained on it for a few steps:
/// (scratch dir, data dir, run dir). `None` (after one `skipped:` line) without the dataset.
fn fixture() -> Option<&'static (tempfile::TempDir, PathBuf, PathBuf)> {
    static FIXTURE: OnceLock<Option<(tempfile::TempDir, PathBuf, PathBuf)>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let Some(src) = attnas::data::fashion_mnist_dir() else {
                let missing = "Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)";
                attnas::testing::skip_or_require("search end to end", missing, "REQUIRE_SHARED_DATA");
                return None;
            };
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("fm");
            ok(run(&["prepare", src.to_str()?, data.to_str()?, "--quiet"]), "prepare");
            // Training validates on images held out of train.pack (no val.pack beside it): fast.
            let train_only = dir.path().join("train-only");
            std::fs::create_dir(&train_only).unwrap();
            std::os::unix::fs::symlink(data.join("train.pack"), train_only.join("train.pack")).unwrap();
            let run_dir = dir.path().join("run");
            let sets =
                ["max_steps=30", "batch_size=16", "bn_calib.batches=2", "bn_calib.batch_size=16", "data.holdout=64"];
            // The space file from the one built into the library: the tests need no working directory.
            let config = dir.path().join("tiny.yaml");
            std::fs::write(&config, attnas::space::config::TINY_YAML).unwrap();
            let config = config.to_str()?.to_string();
            let mut args = vec!["train", "--config", &config, "--device", "cpu", "--quiet"];
            let (td, rd) = (train_only.to_str()?.to_string(), run_dir.to_str()?.to_string());
            args.extend(["--data", &td, "--out", &rd]);
            for s in &sets {
                args.extend(["--set", s]);
            }
            ok(run(&args), "train");
            Some((dir, data, run_dir))
        })
        .as_ref()
}

fn search_args<'a>(f: &'a (tempfile::TempDir, PathBuf, PathBuf), out: &'a str, iterations: &'a str) -> Vec<&'a str> {
    vec![
        "search",
        "--ckpt",
        f.2.to_str().unwrap(),
        "--data",
        f.1.to_str().unwrap(),
        "--flops",
        "0.3:2.0",
        "--bucket",
        "0.05",
        "--population",
        "8",
        "--mutations",
        "4",
        "--crossovers",
        "4",
        "--iterations",
        iterations,
        "--calib-batches",
        "2",
        "--calib-batch-size",
        "16",
        "--eval-images",
        "64",
        "--eval-batch-size",
        "32",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        out,
    ]
}

/// The uninterrupted 3-iteration search, run once for the tests below.
fn full_search() -> Option<&'static PathBuf> {
    static FULL: OnceLock<Option<PathBuf>> = OnceLock::new();
    FULL.get_or_init(|| {
        let f = fixture()?;
        let out = f.0.path().join("search-full");
        ok(run(&search_args(f, out.to_str()?, "3")), "search");
        Some(out)
    })
    .as_ref()
}

fn front_of(dir: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("pareto.json")).unwrap()).unwrap()
}

#[test]
fn search_command_writes_a_non_dominated_front_in_range() {
    let Some(dir) = full_search() else { return };
    let front = front_of(dir);
    assert!(!front.is_empty());
    let pts: Vec<Point> = front
        .iter()
        .map(|e| Point { mflops: e["mflops"].as_f64().unwrap(), top1: e["top1"].as_f64().unwrap() })
        .collect();
    let all = attnas::search::report::read_evaluated(&dir.join("evaluated.csv")).unwrap();
    let space = Space::builtin("tiny").unwrap();
    let all_pts: Vec<Point> = all.iter().map(|(a, t)| Point { mflops: flops::mflops(&space, a), top1: *t }).collect();
    assert!(all.len() > 8 && all.len() <= 24, "{} evaluated", all.len());
    for p in &all_pts {
        assert!((0.3..=2.0).contains(&p.mflops), "{p:?} out of range");
    }
    assert_front_is_non_dominated(&pts, &all_pts);
    for e in &front {
        let arch: Arch = serde_json::from_value(e["arch"].clone()).unwrap();
        space.validate(&arch).unwrap();
        assert!(e["params"].as_u64().unwrap() > 0 && e["top5"].as_f64().unwrap() >= e["top1"].as_f64().unwrap());
    }
    let csv = std::fs::read_to_string(dir.join("pareto.csv")).unwrap();
    assert_eq!(csv.lines().count(), front.len() + 1, "header + one line per front subnet");
    let svg = std::fs::read_to_string(dir.join("pareto.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Pareto front"));
    assert!(dir.join("buckets.csv").is_file() && dir.join("search-state.json").is_file());
}

#[test]
fn resumed_search_gives_the_same_front_and_other_searches_are_refused() {
    let Some(full) = full_search() else { return };
    let f = fixture().unwrap();
    let out = f.0.path().join("search-resumed");
    let o = out.to_str().unwrap();
    let summary = |out: Output| -> serde_json::Value { serde_json::from_slice(&out.stdout).unwrap() };
    let mut first = search_args(f, o, "1");
    first.push("--json");
    let first = summary(ok(run(&first), "search (1 iteration)"));
    assert_eq!(first["iterations_done"], 1);
    // Without --resume an existing search is not overwritten.
    let again = run(&search_args(f, o, "3"));
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    let mut resume = search_args(f, o, "3");
    resume.extend(["--resume", "--json"]);
    let resumed = summary(ok(run(&resume), "search --resume"));
    let (done, now, total) = (&first["evaluated"], &resumed["evaluated_now"], &resumed["evaluated"]);
    assert_eq!(done.as_u64().unwrap() + now.as_u64().unwrap(), total.as_u64().unwrap(), "iteration 0 evaluated again");
    assert_eq!(front_of(&out), front_of(full), "resumed front differs from the uninterrupted one");
    let evaluated = |d: &Path| std::fs::read_to_string(d.join("evaluated.csv")).unwrap();
    assert_eq!(evaluated(&out), evaluated(full));

    // Other settings, or another config's transforms: refused with the reason, exit 2.
    let mut other = search_args(f, o, "3");
    other.extend(["--resume", "--mutate-prob", "0.3"]);
    let refused = run(&other);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("settings.mutate_prob: 0.2 in the state, 0.3 now"), "{err}");
    let cfg = f.0.path().join("tiny-other.yaml");
    let text = attnas::space::config::TINY_YAML;
    std::fs::write(&cfg, text.replace("random_crop_scale: [0.5, 1.0]", "random_crop_scale: [0.3, 1.0]")).unwrap();
    let mut other = search_args(f, o, "3");
    other.extend(["--resume", "--config", cfg.to_str().unwrap()]);
    let refused = run(&other);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("data.transform"), "{err}");
}
