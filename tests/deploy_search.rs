//! Latency as a search and sampling objective: the evolution with a latency cost (in process, synthetic
//! accuracy and latency), the attentive sampler binning by latency (`sampler.cost: latency`), and
//! `attnas search --objective latency --latency-table` end to end on the tiny supernet of the eval fixture
//! (the files carry both latency and FLOPs, the plot's axis is in ms, bad latency sources are refused).
//! Latency values here are synthetic or read from a table; no timing is asserted.

mod eval_common;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use attnas::deploy::latency_table::LatencyTable;
use attnas::search::evolution::{self, LatencyObjective};
use attnas::search::pareto::{dominates, pareto_front, Point};
use attnas::search::{EvolutionSettings, SearchProgress};
use attnas::space::attentive::{flops_bin, AttentiveSampler, CostFn, Prior};
use attnas::space::table::{generate, TableEntry, TableMethod};
use attnas::space::{flops, Arch, Space};
use attnas::train::validate::Accuracy;
use eval_common::{attnas_ok, attnas_usage_error, fixture, scratch};
use rand::SeedableRng;

/// A synthetic latency: 2 + the number of blocks + 0.5 per kernel-5 stage, in ms.
fn fake_ms(a: &Arch) -> f64 {
    2.0 + a.depth.iter().sum::<usize>() as f64 + 0.5 * a.kernel.iter().filter(|&&k| k == 5).count() as f64
}

fn accuracy(space: &Space, a: &Arch) -> Accuracy {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    a.hash(&mut h);
    let top1 = 40.0 + 20.0 * flops::mflops(space, a).ln() + (h.finish() % 1000) as f64 / 100.0;
    Accuracy { top1, top5: 90.0, images: 100 }
}

#[test]
fn latency_search_keeps_subnets_in_the_latency_range_and_fronts_on_latency() {
    let space = Space::builtin("tiny").unwrap();
    let s = EvolutionSettings {
        population: 12,
        mutations: 6,
        crossovers: 6,
        iterations: 3,
        mutate_prob: 0.3,
        freeze_resolution: false,
        bucket: 0.5,
        flops_lo: 0.0,
        flops_hi: 1e12,
        seed: 4,
        predictor_keep: 0.5,
        seeds: Vec::new(),
    };
    let mut progress = SearchProgress::default();
    let mut eval = |a: &Arch| Ok(accuracy(&space, a));
    let mut lat = |a: &Arch| Ok(fake_ms(a));
    let mut objective = LatencyObjective { latency: &mut lat, lo: 7.0, hi: 9.5 };
    struct Quiet;
    impl evolution::Observer for Quiet {}
    evolution::run_with_latency(&space, &s, None, &mut progress, &mut eval, &mut Quiet, Some(&mut objective)).unwrap();
    let ev = &progress.evaluated;
    assert!(ev.len() > 12);
    for e in ev {
        let ms = e.latency_ms.expect("every subnet of a latency search has a latency");
        assert_eq!(ms, fake_ms(&e.arch));
        assert!((7.0..=9.5).contains(&ms), "{ms} ms outside the range");
        assert_eq!(e.point().mflops, ms, "the cost axis is the latency");
    }
    let pts: Vec<Point> = ev.iter().map(|e| e.point()).collect();
    let front = pareto_front(&pts);
    for &i in &front {
        assert!(pts.iter().all(|q| !dominates(*q, pts[i])));
    }
    // The min subnet (1 + 1 + 1 + 1 blocks: 6 ms) is outside 7..9.5 and so not the first member.
    assert_ne!(ev[0].arch, space.min_arch());
}

#[test]
fn attentive_sampler_bins_by_latency() {
    let space = Space::builtin("tiny").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let table: Vec<TableEntry> = generate(&space, 500, TableMethod::Uniform, 1.0, &mut rng)
        .into_iter()
        .map(|e| TableEntry { mflops: fake_ms(&e.arch), arch: e.arch })
        .collect();
    let cost = CostFn { cost: Arc::new(fake_ms), unit: "ms" };
    let mut sampler = AttentiveSampler::new(&space, &table, 1.0, Prior::UniformBins).unwrap().with_cost(cost);
    let bins: Vec<i64> = sampler.bins().iter().map(|b| b.0).collect();
    assert_eq!(*bins.first().unwrap(), 6, "bins are in ms: the min subnet's 6 ms");
    for _ in 0..30 {
        let (bin, candidates) = sampler.sample(3, &mut rng);
        for c in candidates {
            assert_eq!(c.mflops, fake_ms(&c.arch), "the candidate's cost is its latency");
            if c.landed {
                assert_eq!(flops_bin(c.mflops, 1.0), bin);
            }
        }
    }
}

fn search_args<'a>(f: &'a eval_common::Fixture, out: &'a str) -> Vec<&'a str> {
    vec![
        "search",
        "--ckpt",
        f.run(),
        "--data",
        f.data(),
        "--objective",
        "latency",
        "--bucket",
        "0.01",
        "--population",
        "6",
        "--mutations",
        "3",
        "--crossovers",
        "3",
        "--iterations",
        "2",
        "--calib-batches",
        "1",
        "--calib-batch-size",
        "32",
        "--eval-images",
        "64",
        "--eval-batch-size",
        "64",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        out,
    ]
}

#[test]
fn search_command_fronts_accuracy_against_a_latency_table() {
    let Some(f) = fixture("search_command_fronts_accuracy_against_a_latency_table") else { return };
    let dir = scratch("latency-search");
    let table = dir.join("tiny-table.json");
    let t = table.to_str().unwrap();
    attnas_ok(
        &["latency-table", "--config", "tiny", "--device", "cpu", "--warmup", "0", "--repeats", "1"]
            .into_iter()
            .chain(["--calib-subnets", "0", "--quiet", "--out", t])
            .collect::<Vec<_>>(),
    );
    let read = LatencyTable::read(&table).unwrap();
    let space = Space::builtin("tiny").unwrap();

    let out = dir.join("search");
    let mut args = search_args(f, out.to_str().unwrap());
    args.extend(["--latency-table", t]);
    attnas_ok(&args);
    let front: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("pareto.json")).unwrap()).unwrap();
    assert!(!front.is_empty());
    let mut last = f64::NEG_INFINITY;
    for e in &front {
        let arch: Arch = serde_json::from_value(e["arch"].clone()).unwrap();
        let ms = e["latency_ms"].as_f64().expect("latency in pareto.json");
        assert_eq!(ms, read.predict(&space, &arch).unwrap().ms, "the table's prediction");
        assert_eq!(e["mflops"].as_f64().unwrap(), flops::mflops(&space, &arch), "FLOPs too");
        assert!(ms >= last, "the front is sorted by latency");
        last = ms;
    }
    let csv = std::fs::read_to_string(out.join("pareto.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("mflops,latency_ms"), "{csv}");
    assert!(std::fs::read_to_string(out.join("pareto.svg")).unwrap().contains("latency (ms)"));
    let note: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("latency.json")).unwrap()).unwrap();
    assert_eq!(note["source"]["table"], t);
    assert!(note["table_mismatch"].as_array().unwrap().is_empty());

    // A table of another device is refused naming both sides; no latency source at all is refused.
    let mut moved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    moved["identity"]["device"] = "cpu: some other CPU".into();
    let other = dir.join("other.json");
    std::fs::write(&other, moved.to_string()).unwrap();
    let out2 = dir.join("search2");
    let mut args = search_args(f, out2.to_str().unwrap());
    args.extend(["--latency-table", other.to_str().unwrap()]);
    let err = attnas_usage_error(&args);
    assert!(err.contains("'cpu: some other CPU' in the table"), "{err}");
    let args = search_args(f, out2.to_str().unwrap());
    assert!(attnas_usage_error(&args).contains("--latency-table FILE or --measure"));
    let mut args = search_args(f, out2.to_str().unwrap());
    args[6] = "flops";
    args.extend(["--flops", "0.3:2.0", "--latency-table", t]);
    assert!(attnas_usage_error(&args).contains("--objective latency"));

    // Training with the attentive sampler binned by the table's latency (2 steps): every draw's target
    // is a latency bin, and a draw whose candidates all landed trained a subnet of that bin.
    let run = dir.join("train");
    let sets = [
        "max_steps=2".to_string(),
        "schedule_steps=2".into(),
        "batch_size=16".into(),
        "bn_calib.batches=1".into(),
        "bn_calib.batch_size=16".into(),
        "bn_calib.eval_images=32".into(),
        "data.holdout=64".into(),
        "sandwich.num_arch_training=4".into(), // max, min and 2 attentive draws per step
        "sampler.table_samples=300".into(),
        "sampler.cost=latency".into(),
        format!("sampler.latency_table={t}"),
        "sampler.discretize_step=0.05".into(),
    ];
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml");
    let mut args =
        vec!["train", "--config", config, "--data", f.data(), "--out", run.to_str().unwrap(), "--device", "cpu"];
    args.push("--quiet");
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    attnas_ok(&args);
    let log = attnas::train::metrics::read_log(&run.join("metrics.jsonl")).unwrap();
    let mut targets = 0;
    for line in log {
        let attnas::train::metrics::LogLine::Step(step) = line else { continue };
        for sub in step.subnets {
            let Some(bin) = sub.target_bin else { continue };
            targets += 1;
            if sub.fallbacks == 0 {
                let ms = read.predict(&space, &sub.arch).unwrap().ms;
                assert_eq!(flops_bin(ms, 0.05), bin, "{ms} ms trained for target bin {bin}");
            }
        }
    }
    assert_eq!(targets, 4, "2 attentive draws per step");
    let bad: Vec<&str> = args
        .iter()
        .map(|a| if a.starts_with("sampler.latency_table=") { "sampler.latency_table=null" } else { a })
        .collect();
    let err = attnas_usage_error(&[bad.as_slice(), &["--overwrite"]].concat());
    assert!(err.contains("latency_table"), "{err}");
}
