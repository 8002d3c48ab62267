//! TensorBoard event files of `attnas train` (`OUT/tb/`): every record's CRCs checked by our reader, the
//! events decoded and compared with `metrics.jsonl`, and the folder read back by TensorBoard's own event
//! accumulator (the `tensorboard` package in the Python tools venv) with the expected tags and values. A
//! resumed run (checkpoint at step 2, steps 3-5 logged then lost) shows every step once, and its rebuilt
//! event file begins with exactly the events the live file held for the kept steps.
//! Tiny runs (batch 16, 6 steps) of the tiny space on Fashion-MNIST: about 1 s of training each.

mod train_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use attnas::tensorboard::proto::{event::What, summary_value::Value, Event, SESSION_START};
use attnas::tensorboard::read_records;
use attnas::train::metrics::{read_log, LogLine};
use attnas::train::tensorboard::event_files;
use prost::Message;
use train_common::{fashion_mnist_packed, forget_checkpoints_after, fresh_dir, python_with, steps, train, SHORT_RUN};

fn sets<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    SHORT_RUN.iter().copied().chain(extra.iter().copied()).collect()
}

fn run_ok(data: &Path, out: &Path, extra: &[&str], flags: &[&str]) {
    let o = train(data, out, &sets(extra), flags);
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// The events of the folder's one event file, every record's CRCs checked.
fn events_of(tb: &Path) -> Vec<Event> {
    let files = event_files(tb).expect("list tb/");
    assert_eq!(files.len(), 1, "one event file in {}: {files:?}", tb.display());
    let bytes = std::fs::read(&files[0]).unwrap();
    let records = read_records(&bytes, &files[0].display().to_string()).expect("every CRC matches");
    assert_eq!(records.partial_tail_bytes, 0, "the file ends on a record boundary");
    records.records.iter().map(|r| Event::decode(*r).expect("an Event proto")).collect()
}

/// Scalars by tag: (step, value) in file order.
fn scalars(events: &[Event]) -> BTreeMap<String, Vec<(i64, f32)>> {
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for e in events {
        if let Some(What::Summary(s)) = &e.what {
            for v in &s.value {
                if let Some(Value::SimpleValue(x)) = v.value {
                    out.entry(v.tag.clone()).or_default().push((e.step, x));
                }
            }
        }
    }
    out
}

fn histogram_steps(events: &[Event], tag: &str) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for e in events {
        if let Some(What::Summary(s)) = &e.what {
            for v in s.value.iter().filter(|v| v.tag == tag) {
                if let Some(Value::Histo(h)) = &v.value {
                    out.push((e.step, h.num));
                }
            }
        }
    }
    out
}

fn session_starts(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::SessionLog(l)) if l.status == SESSION_START => Some(e.step),
            _ => None,
        })
        .collect()
}

/// The events mirror the metrics log: one value per (tag, step), the losses, LR and data wait of every
/// step line, the accuracies of the epoch line.
fn check_against_log(events: &[Event], log: &Path, n_steps: i64) {
    assert!(matches!(&events[0].what, Some(What::FileVersion(v)) if v == "brain.Event:2"), "{:?}", events[0]);
    let sc = scalars(events);
    for (tag, values) in &sc {
        let mut seen: Vec<i64> = values.iter().map(|v| v.0).collect();
        seen.dedup();
        assert_eq!(seen.len(), values.len(), "{tag}: a step logged twice: {values:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{tag}: steps not ascending: {seen:?}");
    }
    let records = steps(log);
    assert_eq!(records.len() as i64, n_steps);
    let want_steps: Vec<i64> = (1..=n_steps).collect();
    for tag in ["loss/max", "loss/sampled", "loss/min", "loss/total", "lr", "throughput/images_per_sec"] {
        let got: Vec<i64> = sc.get(tag).unwrap_or_else(|| panic!("no {tag}")).iter().map(|v| v.0).collect();
        assert_eq!(got, want_steps, "{tag}");
    }
    for (r, (_, max)) in records.iter().zip(&sc["loss/max"]) {
        assert_eq!(*max, r.subnets[0].loss as f32, "step {}: loss/max", r.step);
    }
    for (r, (_, lr)) in records.iter().zip(&sc["lr"]) {
        assert_eq!(*lr, r.lr as f32, "step {}: lr", r.step);
    }
    for (r, (_, min)) in records.iter().zip(&sc["loss/min"]) {
        assert_eq!(*min, r.subnets.last().unwrap().loss as f32, "step {}: loss/min", r.step);
    }
    // The data wait is logged for every step, in ms in TensorBoard and s in the log.
    let wait = &sc["throughput/data_wait_ms"];
    assert_eq!(wait.len() as i64, n_steps);
    for (r, (_, w)) in records.iter().zip(wait) {
        let s = r.data_wait_s.expect("data_wait_s logged");
        assert!(s >= 0.0 && *w == (s * 1e3) as f32, "step {}: {w} ms vs {s} s", r.step);
    }
    // Attentive sampling: the chosen candidate's margin and the sampled MFLOPs.
    assert_eq!(sc["sampler/sampled_mflops"].len() as i64, n_steps);
    assert!(sc["sampler/score_margin"].iter().all(|v| v.1 >= 0.0));
    // The epoch line: accuracies at its step, and the epoch's draws as histograms.
    let epoch = read_log(log)
        .unwrap()
        .into_iter()
        .filter_map(|l| match l {
            LogLine::Epoch(e) => Some(e),
            _ => None,
        })
        .next_back()
        .expect("an epoch line");
    let max = epoch.subnets.iter().find(|s| s.role.name() == "max").unwrap();
    assert_eq!(sc["eval/max_top1"], vec![(epoch.step as i64, max.top1 as f32)]);
    assert_eq!(sc["eval/min_top5"].len(), 1);
    // Two sampled subnets per step (num_arch_training 4), all of the epoch's steps in one histogram.
    assert_eq!(
        histogram_steps(events, "sampler_epoch/sampled_mflops"),
        vec![(epoch.step as i64, 2.0 * n_steps as f64)]
    );
}

#[test]
fn the_event_file_mirrors_the_log_and_a_resume_keeps_one_value_per_step() {
    let Some(data) = fashion_mnist_packed("train_tensorboard") else { return };
    let out = fresh_dir("tb-resume");
    let (tb, log) = (out.join("tb"), out.join("metrics.jsonl"));
    run_ok(&data, &out, &["max_steps=5"], &[]);
    let live = events_of(&tb);
    check_against_log(&live, &log, 5);
    assert_eq!(session_starts(&live), vec![1], "one start, before step 1");

    // Crash after step 5 with the newest checkpoint at step 2, then resume to step 6.
    forget_checkpoints_after(&out, 2);
    run_ok(&data, &out, &["max_steps=6"], &["--resume"]);
    let after = events_of(&tb);
    check_against_log(&after, &log, 6);
    assert_eq!(session_starts(&after), vec![1, 3], "the resume after step 2 restarts at step 3");
    // The rebuilt file begins with the live file's events up to step 2 (the file-version event aside,
    // whose wall time is when the file was made): the events are a function of the log lines.
    let kept = live.iter().position(|e| e.step == 3).expect("live file reached step 3");
    assert_eq!(after[1..kept], live[1..kept], "rebuilt events of steps <= 2 differ from the live ones");

    // TensorBoard's own reader sees the same, with no orphaned purging to hide duplicates.
    let Some(py) = python_with("tensorboard", "train_tensorboard") else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tensorboard_check.py");
    let tags = "loss/max,loss/sampled,loss/min,lr,throughput/images_per_sec,throughput/data_wait_ms,\
                sampler/sampled_mflops,sampler/score_margin,eval/max_top1,eval/min_top1";
    let o = Command::new(py)
        .arg(&script)
        .arg(&tb)
        .args(["--expect-steps", "6", "--expect-tags", tags])
        .output()
        .expect("run tensorboard_check.py");
    assert!(o.status.success(), "tensorboard_check.py: {}", String::from_utf8_lossy(&o.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON from tensorboard_check.py");
    let ours = scalars(&after);
    for tag in ["loss/max", "loss/min", "lr", "eval/max_top1"] {
        let theirs: Vec<(i64, f32)> = seen["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("TensorBoard has no {tag}"))
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(theirs, ours[tag], "{tag}: TensorBoard reads other values");
    }
    assert_eq!(seen["duplicates"], serde_json::json!({}));
    assert_eq!(seen["histograms"]["sampler_epoch/sampled_mflops"][0][1].as_f64(), Some(12.0));
    let text = seen["text"]["run/config"].as_array().expect("run/config text");
    assert_eq!(text.len(), 2, "a start and a resume");
    assert!(text[1][1].as_str().unwrap().contains("resumed after step 2"), "{text:?}");
}

#[test]
fn tensorboard_off_writes_no_events_and_overwrite_replaces_old_ones() {
    let Some(data) = fashion_mnist_packed("train_tensorboard") else { return };
    let out = fresh_dir("tb-off");
    run_ok(&data, &out, &["max_steps=2", "log.tensorboard=false"], &[]);
    assert!(!out.join("tb").exists(), "log.tensorboard=false wrote {}", out.join("tb").display());
    run_ok(&data, &out, &["max_steps=1"], &["--overwrite"]);
    run_ok(&data, &out, &["max_steps=2"], &["--overwrite"]);
    let events = events_of(&out.join("tb"));
    assert_eq!(scalars(&events)["loss/max"].iter().map(|v| v.0).collect::<Vec<_>>(), vec![1, 2]);
}
