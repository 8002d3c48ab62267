//! `attnas train` with data-parallel CPU ranks on Fashion-MNIST (tiny space, batch 8 per rank, a few
//! steps): threads (`--ranks 2`) and OS processes meeting over 127.0.0.1 with RANK / WORLD_SIZE /
//! MASTER_* set, as torchrun would start them.
//! - 2 ranks train, rank 0 alone writes the log and checkpoints; resuming with 2 ranks is bit-identical
//!   to the uninterrupted run; resuming with 1 rank continues with a notice;
//! - two processes train together; killing one makes the other exit non-zero within the watchdog time,
//!   naming the rank and the last good checkpoint, and the checkpoints stay loadable;
//! - bad launches (RANK >= WORLD_SIZE, no MASTER_ADDR, rank 0 unreachable, ranks with other configs)
//!   are one-line errors with exit code 2, within seconds;
//! - `--ranks 2 --rank-processes` prefixes the workers' output and exits with a failing rank's code.
//!
//! Time: about 1-2 minutes on 2 busy cores (test-profile binary).

mod train_common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use train_common::{attnas_bin, fashion_mnist_packed, fresh_dir, steps};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml");
const BASE: &[&str] = &[
    "batch_size=8",
    "schedule_steps=6",
    "bn_calib.batches=1",
    "bn_calib.batch_size=8",
    "bn_calib.eval_images=32",
    "sampler.table_samples=500",
    "data.threads=1",
];

fn train_cmd(data: &Path, out: &Path, sets: &[&str], extra: &[&str]) -> Command {
    let mut cmd = Command::new(attnas_bin());
    cmd.args(["train", "--config", TINY, "--device", "cpu", "--quiet"]);
    cmd.arg("--data").arg(data).arg("--out").arg(out);
    for s in BASE.iter().chain(sets) {
        cmd.args(["--set", s]);
    }
    cmd.args(extra);
    for v in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_ID", "ATTNAS_RDZV_PORT"] {
        cmd.env_remove(v);
    }
    cmd
}

fn ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\n{}", o.status.code(), String::from_utf8_lossy(&o.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Rank `rank` of `world` as its own process, as torchrun starts it.
fn rank_process(cmd: &mut Command, rank: usize, world: usize, port: u16) -> &mut Command {
    cmd.env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

fn loss_bits(r: &attnas::train::metrics::StepRecord) -> Vec<u64> {
    r.subnets.iter().map(|s| s.loss.to_bits()).collect()
}

/// The tensors (name, shape, values as bits) of the checkpoint of `step` in run folder `out`.
fn weights_of(out: &Path, step: u64) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let stem = out.join(format!("checkpoints/ckpt-{step:09}"));
    let ck = attnas::checkpoint::SavedCheckpoint {
        step,
        weights: stem.with_extension("safetensors"),
        state: stem.with_extension("state.json"),
    };
    let (tensors, _, _) = attnas::checkpoint::load(&ck).expect("checkpoint loads");
    tensors.into_iter().map(|t| (t.name, t.shape, t.data.iter().map(|v| v.to_bits()).collect())).collect()
}

#[test]
fn two_ranks_train_and_resume_bit_identically() {
    let Some(data) = fashion_mnist_packed("dist_train") else { return };
    let (a, c) = (fresh_dir("dist-a"), fresh_dir("dist-c"));
    ok(&train_cmd(&data, &a, &["max_steps=6"], &["--ranks", "2"]).output().unwrap());
    let sa = steps(&a.join("metrics.jsonl"));
    assert_eq!(
        sa.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>(),
        "rank 0 logs each step once"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("checkpoints/ckpt-000000006.state.json")).unwrap()).unwrap();
    assert_eq!((state["world_size"].as_u64(), state["global_batch"].as_u64()), (Some(2), Some(16)));
    // interrupted after 3 steps, resumed to 6, with 2 ranks
    ok(&train_cmd(&data, &c, &["max_steps=3"], &["--ranks", "2"]).output().unwrap());
    ok(&train_cmd(&data, &c, &["max_steps=6"], &["--ranks", "2", "--resume"]).output().unwrap());
    let sc = steps(&c.join("metrics.jsonl"));
    assert_eq!(sc.len(), 6);
    for (x, y) in sa.iter().zip(&sc) {
        assert_eq!(loss_bits(x), loss_bits(y), "step {}: resumed 2-rank run differs", x.step);
        assert_eq!(
            x.subnets.iter().map(|s| &s.arch).collect::<Vec<_>>(),
            y.subnets.iter().map(|s| &s.arch).collect::<Vec<_>>()
        );
    }
    assert!(sa.windows(2).any(|w| loss_bits(&w[0]) != loss_bits(&w[1])), "the losses move");
    let (wa, wc) = (weights_of(&a, 6), weights_of(&c, 6));
    assert!(wa.len() > 100 && wa == wc, "final weights (parameters, BN statistics, momentum) bit-identical");
    // another world size continues, with a notice
    let o = train_cmd(&data, &c, &["max_steps=6"], &["--resume"]).output().unwrap();
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("written by 2 rank(s)") && err.contains("resumed with 1"), "{err}");
}

#[test]
fn two_processes_over_loopback_train_together_and_a_killed_rank_stops_the_other() {
    let Some(data) = fashion_mnist_packed("dist_train") else { return };
    // train together
    let d = fresh_dir("dist-procs");
    let port = free_port();
    let children: Vec<Child> = (0..2)
        .map(|r| rank_process(&mut train_cmd(&data, &d, &["max_steps=3"], &[]), r, 2, port).spawn().unwrap())
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    outs.iter().for_each(ok);
    assert_eq!(steps(&d.join("metrics.jsonl")).len(), 3);
    assert!(String::from_utf8_lossy(&outs[0].stdout).contains("trained 3 steps"), "rank 0 reports");
    assert!(outs[1].stdout.is_empty(), "rank 1 prints nothing: {}", String::from_utf8_lossy(&outs[1].stdout));

    // kill rank 1 mid-run: rank 0 stops within the watchdog time, naming it and the last checkpoint
    let d = fresh_dir("dist-kill");
    let port = free_port();
    let long = ["max_steps=1000", "schedule_steps=1000", "checkpoint.every_steps=2"];
    let spawn = |r| {
        let mut cmd = train_cmd(&data, &d, &long, &[]);
        rank_process(&mut cmd, r, 2, port).env("ATTNAS_DIST_TIMEOUT", "10").spawn().unwrap()
    };
    let (mut r0, mut r1) = (spawn(0), spawn(1));
    let t = Instant::now();
    while !d.join("checkpoints/ckpt-000000004.state.json").is_file() {
        assert!(t.elapsed() < Duration::from_secs(240), "no checkpoint after 4 min");
        assert!(r0.try_wait().unwrap().is_none(), "rank 0 ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    r1.kill().unwrap();
    r1.wait().unwrap();
    let killed = Instant::now();
    let out = loop {
        if r0.try_wait().unwrap().is_some() {
            break r0.wait_with_output().unwrap();
        }
        assert!(killed.elapsed() < Duration::from_secs(40), "rank 0 still running 40 s after rank 1 died");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rank 1") && err.contains("Last good checkpoint") && err.contains("ckpt-"), "{err}");
    // every checkpoint on disk is complete and loads
    let store = attnas::checkpoint::CheckpointStore::new(d.join("checkpoints"), 3).unwrap();
    let latest = store.latest().unwrap().expect("a checkpoint");
    assert!(latest.step >= 4);
    attnas::checkpoint::load(&latest).expect("the last checkpoint loads");
}

#[test]
fn bad_launches_are_one_line_errors_never_hangs() {
    let Some(data) = fashion_mnist_packed("dist_train") else { return };
    let d = fresh_dir("dist-bad");
    let run = |cmd: &mut Command| {
        let t = Instant::now();
        let o = cmd.output().unwrap();
        assert!(t.elapsed() < Duration::from_secs(60), "took {:?}", t.elapsed());
        assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.trim().lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
        err
    };
    let mut c = train_cmd(&data, &d, &["max_steps=1"], &[]);
    assert!(run(rank_process(&mut c, 2, 2, 1)).contains("RANK=2 >= WORLD_SIZE=2"));
    let mut c = train_cmd(&data, &d, &["max_steps=1"], &[]);
    assert!(run(rank_process(&mut c, 1, 2, 1).env_remove("MASTER_ADDR")).contains("MASTER_ADDR is not set"));
    let mut c = train_cmd(&data, &d, &["max_steps=1"], &[]);
    let e = run(rank_process(&mut c, 1, 2, free_port()).env("ATTNAS_RDZV_TIMEOUT", "2"));
    assert!(e.contains("rank 0 unreachable"), "{e}");
    let mut c = train_cmd(&data, &d, &["max_steps=1"], &["--ranks", "2"]);
    assert!(run(rank_process(&mut c, 0, 2, 1)).contains("leave out"));
    // two ranks started with different configs: both stop at start-up, naming the difference
    let port = free_port();
    let a = rank_process(&mut train_cmd(&data, &d, &["max_steps=1"], &[]), 0, 2, port).spawn().unwrap();
    let b = rank_process(&mut train_cmd(&data, &d, &["max_steps=1", "label_smoothing=0.2"], &[]), 1, 2, port)
        .spawn()
        .unwrap();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(oa.status.code(), Some(2), "{}", String::from_utf8_lossy(&oa.stderr));
    assert!(String::from_utf8_lossy(&oa.stderr).contains("ranks disagree on the config fingerprint"));
    assert!(!ob.status.success());
}

#[test]
fn the_launcher_prefixes_worker_output_and_returns_the_failing_code() {
    let Some(data) = fashion_mnist_packed("dist_train") else { return };
    let d = fresh_dir("dist-launch");
    let o = train_cmd(&data, &d, &["max_steps=2"], &["--ranks", "2", "--rank-processes"]).output().unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("trained 2 steps"), "rank 0 keeps the terminal");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("[rank 1] device: cpu"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // every worker fails on a missing data folder: the launcher exits with its code (2)
    let o =
        train_cmd(&d.join("missing"), &d, &["max_steps=2"], &["--ranks", "2", "--rank-processes"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}

mod eval_common;

/// `attnas eval` and `attnas search` with 2 CPU ranks against one: eval splits the calibration batches
/// and the images (counts summed, statistics averaged: the same result up to float reassociation in the
/// averaged statistics); search splits each iteration's candidates (population 5: the remainder modulo
/// the world size is scored too) and scores each one exactly as one rank does.
#[test]
fn eval_and_search_shard_over_ranks() {
    let Some(f) = eval_common::fixture("dist_train eval/search") else { return };
    let eval = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["eval", "--ckpt", f.run(), "--arch", "min,max", "--data", f.data(), "--device", "cpu"];
        args.extend(["--calib-batches", "3", "--calib-batch-size", "16", "--batch-size", "32", "--max-images", "101"]);
        args.extend(["--json", "--quiet"]);
        args.extend(extra);
        serde_json::from_str(&eval_common::attnas_ok(&args)).unwrap()
    };
    let (one, two) = (eval(&[]), eval(&["--ranks", "2"]));
    assert_eq!(two["calibration"]["batches"], 3, "the 3 calibration batches split over the ranks");
    for (a, b) in one["results"].as_array().unwrap().iter().zip(two["results"].as_array().unwrap()) {
        assert_eq!(b["images"], 101, "every image once over the ranks");
        let (t1, t2) = (a["top1"].as_f64().unwrap(), b["top1"].as_f64().unwrap());
        assert!((t1 - t2).abs() <= 100.0 / 101.0 + 1e-9, "{}: top-1 {t1} alone, {t2} on 2 ranks", a["name"]);
    }
    let search = |out: &Path, extra: &[&str]| {
        let mut args = vec!["search", "--ckpt", f.run(), "--data", f.data(), "--flops", "0.3:2.0", "--bucket", "0.05"];
        args.extend(["--population", "5", "--mutations", "3", "--crossovers", "2", "--iterations", "2"]);
        args.extend(["--calib-batches", "2", "--calib-batch-size", "16", "--eval-images", "64"]);
        args.extend(["--eval-batch-size", "32", "--device", "cpu", "--quiet", "--out", out.to_str().unwrap()]);
        args.extend(extra);
        eval_common::attnas_ok(&args);
        std::fs::read_to_string(out.join("evaluated.csv")).unwrap()
    };
    let (s1, s2) = (search(&fresh_dir("dist-search-1"), &[]), search(&fresh_dir("dist-search-2"), &["--ranks", "2"]));
    assert!(s1.lines().count() >= 6, "population of 5 and children scored: {s1}");
    assert_eq!(s1, s2, "2 ranks score the same candidates the same way");
}
