//! Latency tables and the latency commands' plumbing (`attnas::deploy`, `attnas latency`,
//! `attnas latency-table`). Timings are never asserted (a test machine's speed and load are unknown):
//! the tests check the keys against the space definition, the predictor's sums on synthetic tables with
//! known values, the identity refusals, and that the commands measure, write and read what they say.

mod eval_common;

use std::collections::{BTreeMap, BTreeSet};

use attnas::backend::cpu::CpuBackend;
use attnas::deploy::latency::{measure_layer, Repeats, SubnetTimer};
use attnas::deploy::latency_table::{
    enumerate_keys, gene_choices, subnet_layers, BuildInfo, Calibration, LatencyTable, LayerKey, MeasureIdentity,
    Timing, TABLE_FORMAT,
};
use attnas::space::{sampler, Arch, Space};
use eval_common::{attnas_ok, attnas_usage_error, python_tools, scratch};
use rand::SeedableRng;

/// The number of distinct layer configurations, counted from the choice lists alone: per resolution,
/// per stage, the first block's (c_in from the previous stage) x c_out x kernel x expand, plus the later
/// blocks' (c_in = c_out, stride 1) when the stage can be 2 deep, less the first-block configurations a
/// stride-1 stage shares with its later blocks (c_in = c_out); the stem's widths; the head's last-stage x
/// head widths; one resize per resolution that differs from the input side.
fn count_from_choices(space: &Space, input_side: Option<usize>) -> usize {
    let mut per_r = space.stem.width.len();
    for (i, st) in space.stages.iter().enumerate() {
        let prev: &[usize] = if i == 0 { &space.stem.width } else { &space.stages[i - 1].width };
        let kt = st.kernel.len() * st.expand.len();
        per_r += prev.len() * st.width.len() * kt;
        if st.depth.iter().max().copied().unwrap_or(0) >= 2 {
            per_r += st.width.len() * kt;
            if st.stride == 1 {
                per_r -= prev.iter().filter(|c| st.width.contains(c)).count() * kt;
            }
        }
    }
    per_r += space.stages.last().unwrap().width.len() * space.head.width.len();
    let resizes = input_side.map_or(0, |s| space.resolutions.iter().filter(|&&r| r != s).count());
    space.resolutions.len() * per_r + resizes
}

#[test]
fn table_keys_cover_every_layer_configuration_of_the_space() {
    for (name, side, want) in
        [("tiny", None, 156), ("tiny", Some(28), 158), ("attentivenas", None, 904), ("attentivenas", Some(224), 907)]
    {
        let space = Space::builtin(name).unwrap();
        let keys = enumerate_keys(&space, side);
        assert_eq!(keys.len(), want, "{name} side {side:?}");
        assert_eq!(keys.len(), count_from_choices(&space, side), "{name} side {side:?}: against the choice lists");
        let names: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(names.len(), keys.len(), "{name}: two keys print alike");
        // Every layer of every sampled subnet (and the ends) has a key in the enumeration.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut archs = vec![space.min_arch(), space.max_arch()];
        archs.extend((0..500).map(|_| sampler::uniform(&space, &mut rng)));
        for a in &archs {
            for layer in subnet_layers(&space, a, side) {
                assert!(names.contains(&layer.to_string()), "{name}: {layer} of {} is not enumerated", a.to_json());
            }
            // The block a key rebuilds (what the table times) is the subnet's block, sizes included.
            for blk in space.active_blocks(a) {
                let key = LayerKey::of_block(&space, a.resolution, &blk);
                let rebuilt = key.block(&space).unwrap();
                let strip = |b: attnas::space::ActiveBlock| attnas::space::ActiveBlock { index: 0, global: 0, ..b };
                assert_eq!(strip(rebuilt), strip(blk), "{name}: {key}");
            }
        }
    }
}

fn identity(space: &Space, device: &str) -> MeasureIdentity {
    MeasureIdentity {
        device: device.into(),
        runtime: "attnas".into(),
        precision: "fp32".into(),
        threads: 2,
        batch: 1,
        input_side: None,
        space: space.name.clone(),
        space_fingerprint: attnas::deploy::latency_table::space_fingerprint(space),
    }
}

/// A table of `space` whose entries are `value(key)`.
fn synthetic_table(space: &Space, value: impl Fn(&LayerKey) -> f64) -> LatencyTable {
    let t = |ms| Timing { median_ms: ms, p10_ms: ms, p90_ms: ms };
    LatencyTable {
        format: TABLE_FORMAT.into(),
        identity: identity(space, "cpu: test"),
        choices: gene_choices(space),
        build: BuildInfo {
            warmup: 0,
            repeats: 1,
            rounds: 1,
            calib_warmup: 0,
            calib_repeats: 0,
            seconds: 0.0,
            created: 0,
            attnas_version: "test".into(),
        },
        calibration: Calibration::none(),
        entries: enumerate_keys(space, None).iter().map(|k| (k.to_string(), t(value(k)))).collect(),
    }
}

/// Stem 1000, head 100000, each block (stage i + 1) plus 0.5 for kernel 5 plus 10 at stride 2: the sum
/// of a subnet is then known from its genes alone.
#[test]
fn prediction_sums_the_subnets_entries() {
    let space = Space::builtin("tiny").unwrap();
    let mut table = synthetic_table(&space, |k| match k {
        LayerKey::Stem { .. } => 1000.0,
        LayerKey::Head { .. } => 100_000.0,
        LayerKey::Block { stage, kernel, stride, .. } => {
            (stage + 1) as f64 + if *kernel == 5 { 0.5 } else { 0.0 } + if *stride == 2 { 10.0 } else { 0.0 }
        }
        LayerKey::Resize { .. } => unreachable!(),
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..50 {
        let a = sampler::uniform(&space, &mut rng);
        let mut want = 101_000.0;
        for (i, st) in space.stages.iter().enumerate() {
            let d = a.depth[i] as f64;
            want += d * ((i + 1) as f64 + if a.kernel[i] == 5 { 0.5 } else { 0.0 });
            if st.stride == 2 {
                want += 10.0; // the stage's first block only
            }
        }
        let p = table.predict(&space, &a).unwrap();
        assert_eq!(p.sum_ms, want, "{}", a.to_json());
        assert_eq!(p.ms, want, "no calibration");
        assert_eq!(p.layers.len(), 2 + a.depth.iter().sum::<usize>());
    }
    table.calibration = Calibration::fit(vec![(1.0, 5.0), (2.0, 7.0), (4.0, 11.0)]);
    assert!((table.calibration.scale - 2.0).abs() < 1e-12 && (table.calibration.offset_ms - 3.0).abs() < 1e-12);
    let a = space.min_arch();
    let p = table.predict(&space, &a).unwrap();
    assert!((p.ms - (2.0 * p.sum_ms + 3.0)).abs() < 1e-9);
}

#[test]
fn calibration_and_percentiles() {
    // a fit with a negative offset falls back to the median ratio
    let c = Calibration::fit(vec![(10.0, 5.0), (20.0, 30.0), (30.0, 55.0)]);
    assert_eq!(c.offset_ms, 0.0);
    assert!((c.scale - 1.5).abs() < 1e-12, "{c:?}");
    let t = Timing::of(&(1..=11).rev().map(f64::from).collect::<Vec<_>>()).unwrap();
    assert_eq!((t.median_ms, t.p10_ms, t.p90_ms), (6.0, 2.0, 10.0));
    assert!(Timing::of(&[]).is_none());
}

#[test]
fn tables_from_elsewhere_and_subnets_outside_them_are_refused() {
    let space = Space::builtin("tiny").unwrap();
    let table = synthetic_table(&space, |_| 1.0);
    let mut here = identity(&space, "cpu: other model");
    here.threads = 4;
    let err = table.check_identity(std::path::Path::new("t.json"), &here, false).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(msg.contains("'cpu: test' in the table, 'cpu: other model' here"), "{msg}");
    assert!(msg.contains("threads: '2' in the table, '4' here") && msg.contains("--allow-table-mismatch"), "{msg}");
    let accepted = table.check_identity(std::path::Path::new("t.json"), &here, true).unwrap();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    let other_space = Space::builtin("attentivenas").unwrap();
    let err = table.check_identity(std::path::Path::new("t.json"), &identity(&other_space, "cpu: test"), false);
    assert!(err.unwrap_err().to_string().contains("space: 'tiny ("), "names both spaces");

    // A table measured at resolution 24 only: resolution 32 is outside it, named as the slot.
    let mut narrow = table.clone();
    narrow.choices.insert("resolution".into(), vec![24]);
    let a = Arch { resolution: 32, ..space.min_arch() };
    let err = narrow.predict(&space, &a).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("resolution = 32 is outside the latency table"), "{err}");
    // A missing entry names the layer and its genes.
    let mut holes = table.clone();
    let blk = subnet_layers(&space, &space.min_arch(), None)[2].to_string();
    holes.entries.remove(&blk);
    let err = holes.predict(&space, &space.min_arch()).unwrap_err().to_string();
    assert!(err.contains(&blk) && err.contains("stage s2") && err.contains("kernel[1] (s2) = 3"), "{err}");
}

/// The engine's timers run on the CPU and every CUDA target (plumbing only: a positive median inside
/// [p10, p90]).
#[test]
fn timers_measure_layers_and_subnets_on_every_backend() {
    let space = Space::builtin("tiny").unwrap();
    let r = Repeats { warmup: 0, repeats: 2 };
    let key = enumerate_keys(&space, Some(28))
        .into_iter()
        .find(|k| matches!(k, LayerKey::Block { se: true, stride: 2, .. }))
        .unwrap();
    let ok = |t: Timing| assert!(t.median_ms > 0.0 && t.p10_ms <= t.median_ms && t.median_ms <= t.p90_ms, "{t:?}");
    let cpu = CpuBackend::new();
    ok(SubnetTimer::new(&cpu, &space, 2, Some(28)).unwrap().measure(&space.max_arch(), r, 1).unwrap());
    ok(measure_layer(&cpu, &space, &key, 2, r, 1).unwrap());
    ok(measure_layer(&cpu, &space, &LayerKey::Resize { side: 28, r: 32 }, 2, r, 1).unwrap());
    attnas::on_cuda_targets!("timers_measure_layers_and_subnets_on_every_backend", |b| {
        ok(SubnetTimer::new(&b, &space, 1, None).unwrap().measure(&space.min_arch(), r, 1).unwrap());
        ok(measure_layer(&b, &space, &key, 1, r, 1).unwrap());
    });
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[test]
fn latency_commands_measure_build_predict_and_check() {
    let dir = scratch("latency");
    let common = ["--config", "tiny", "--device", "cpu", "--threads", "2", "--quiet", "--json"];
    let mut args = vec!["latency", "--arch", "min,max", "--warmup", "0", "--repeats", "3"];
    args.extend(common);
    let r = json(&attnas_ok(&args));
    // the default 5 rounds, capped at one per timed run
    assert_eq!((r["rounds"].as_u64(), r["repeats"]["repeats"].as_u64()), (Some(3), Some(3)), "{r}");
    assert_eq!(r["identity"]["runtime"], "attnas");
    assert_eq!((r["identity"]["batch"].as_u64(), r["identity"]["threads"].as_u64()), (Some(1), Some(2)));
    assert!(r["identity"]["device"].as_str().unwrap().starts_with("cpu: "));
    let rows = r["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let m = &row["measured"];
        assert!(m["median_ms"].as_f64().unwrap() > 0.0 && m["p10_ms"].as_f64() <= m["p90_ms"].as_f64(), "{row}");
    }

    let table = dir.join("tiny.json");
    let t = table.to_str().unwrap();
    let mut args = vec!["latency-table", "--out", t, "--warmup", "0", "--repeats", "1", "--calib-subnets", "3"];
    args.extend(common);
    let s = json(&attnas_ok(&args));
    assert_eq!(s["entries"], 156);
    let read = LatencyTable::read(&table).unwrap();
    let space = Space::builtin("tiny").unwrap();
    let want: BTreeSet<String> = enumerate_keys(&space, None).iter().map(|k| k.to_string()).collect();
    assert_eq!(read.entries.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(read.calibration.points.len(), 3);
    // layers in one round (one timed run each); calibration forwards timed as `attnas latency` times a subnet
    assert_eq!((read.build.rounds, read.build.calib_warmup, read.build.calib_repeats), (1, 5, 30));
    assert!(read.calibration.scale > 0.0);
    let err = attnas_usage_error(&args);
    assert!(err.contains("--overwrite"), "{err}");

    let mut args = vec!["latency", "--predict", t, "--arch", "min"];
    args.extend(common);
    let p = json(&attnas_ok(&args));
    let want = read.predict(&space, &space.min_arch()).unwrap().ms;
    assert_eq!(p["results"][0]["predicted_ms"].as_f64(), Some(want));
    assert!(p["results"][0]["measured"].is_null(), "prediction only");

    let mut args = vec!["latency", "--predict", t, "--check", "3", "--warmup", "0", "--repeats", "1"];
    args.extend(common);
    let c = json(&attnas_ok(&args));
    assert_eq!(c["check"]["subnets"], 3);
    assert!(c["check"]["median_abs_error_pct"].as_f64().unwrap().is_finite());

    // A table from another device is refused naming both sides, or accepted and recorded.
    let mut moved: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    moved.get_mut("identity").unwrap()["device"] = "cuda:0 (NVIDIA H100, sm_90)".into();
    let other = dir.join("other.json");
    std::fs::write(&other, serde_json::to_string(&moved).unwrap()).unwrap();
    let o = other.to_str().unwrap();
    let mut args = vec!["latency", "--predict", o, "--arch", "min"];
    args.extend(common);
    let err = attnas_usage_error(&args);
    assert!(err.contains("'cuda:0 (NVIDIA H100, sm_90)' in the table") && err.contains("here"), "{err}");
    args.push("--allow-table-mismatch");
    let p = json(&attnas_ok(&args));
    assert!(p["table_mismatch"][0].as_str().unwrap().starts_with("device: "), "{p}");

    // A subnet outside the space, and bad flag combinations, are usage errors.
    let mut args = vec![
        "latency",
        "--arch",
        r#"{"resolution":40,"width":[8,8,16,24,32,64],"depth":[1,1,1,1],"kernel":[3,3,3,3],"expand":[1,2,2,3]}"#,
    ];
    args.extend(common);
    assert!(attnas_usage_error(&args).contains("resolution = 40"));
    assert!(attnas_usage_error(&["latency", "--config", "tiny", "--check", "3"]).contains("--predict"));
    assert!(attnas_usage_error(&["latency", "--config", "tiny", "--arch", "min", "--rounds", "0"]).contains("--rounds"));
    let err = attnas_usage_error(&[
        "latency",
        "--config",
        "tiny",
        "--arch",
        "min",
        "--runtime",
        "onnxruntime",
        "--input-side",
        "28",
    ]);
    assert!(err.contains("--input-side"), "{err}");
}

#[test]
fn onnxruntime_runtime_times_the_exported_graph() {
    let Some(py) = python_tools("onnxruntime_runtime_times_the_exported_graph") else { return };
    let out = std::process::Command::new(eval_common::attnas_bin())
        .args(["latency", "--config", "tiny", "--arch", "min,max", "--runtime", "onnxruntime", "--threads", "1"])
        .args(["--warmup", "1", "--repeats", "3", "--json", "--quiet"])
        .env("ATTNAS_PYTHON", &py)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = json(&String::from_utf8_lossy(&out.stdout));
    assert!(r["identity"]["runtime"].as_str().unwrap().starts_with("onnxruntime "), "{r}");
    assert_eq!(r["identity"]["threads"], 1);
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    assert!(r["results"][1]["measured"]["median_ms"].as_f64().unwrap() > 0.0);
}
