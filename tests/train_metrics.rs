//! The JSON-lines metrics log: records read back equal, a crash's partial last line is ignored and
//! reported, resuming drops what came after the checkpoint.

use std::io::Write;
use std::path::PathBuf;

use attnas::space::Space;
use attnas::train::metrics::{
    read_log_report, CandidateRecord, EpochRecord, EvalRecord, LogLine, ResumeReport, Role, StartRecord, StepRecord,
    SubnetRecord,
};
use attnas::train::{read_log, MetricsLog, TrainConfig};

/// A fresh temp file path for one test.
fn temp_log(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("attnas-train-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&path);
    path
}

fn start(step: u64) -> LogLine {
    let space = Space::builtin("tiny").unwrap();
    let cfg = TrainConfig::default();
    LogLine::Start(StartRecord {
        step,
        space: space.name.clone(),
        fingerprint: cfg.fingerprint(&space),
        config: cfg.to_value(),
        unix_time: Some(1_700_000_000.5),
    })
}

/// A step line with the sandwich of the tiny space: max, one attentive draw, min.
fn step(step: u64, loss: f64) -> LogLine {
    let space = Space::builtin("tiny").unwrap();
    let (max, min) = (space.max_arch(), space.min_arch());
    let mut mid = max.clone();
    mid.resolution = 28;
    let subnet = |role, arch: &attnas::space::Arch, loss| SubnetRecord {
        role,
        arch: arch.clone(),
        mflops: 1.25,
        loss,
        candidates: Vec::new(),
        chosen: None,
        target_bin: None,
        fallbacks: 0,
    };
    let mut sampled = subnet(Role::Sampled, &mid, loss * 0.9);
    sampled.candidates = vec![
        CandidateRecord { arch: mid.clone(), mflops: 1.2, score: -2.5 },
        CandidateRecord { arch: min.clone(), mflops: 0.37, score: -2.75 },
    ];
    sampled.chosen = Some(0);
    sampled.target_bin = Some(24);
    sampled.fallbacks = 1;
    LogLine::Step(StepRecord {
        step,
        epoch: step / 10,
        lr: 0.1 * step as f64 / 7.0,
        images_per_sec: 812.5,
        wall_s: 0.25 * step as f64,
        subnets: vec![subnet(Role::Max, &max, loss), sampled, subnet(Role::Min, &min, loss * 1.1)],
        total_loss: loss * 3.0,
        grad_clip_fraction: Some(0.015625),
        data_wait_s: Some(0.003),
    })
}

fn epoch(epoch: u64, step: u64) -> LogLine {
    let space = Space::builtin("tiny").unwrap();
    let eval =
        |role, arch: attnas::space::Arch| EvalRecord { role, arch, mflops: 0.5, top1: 81.25, top5: 99.5, images: 2000 };
    EpochRecord {
        epoch,
        step,
        subnets: vec![eval(Role::Max, space.max_arch()), eval(Role::Min, space.min_arch())],
        calib_batches: 8,
        calib_images: 512,
        wall_s: 12.5,
    }
    .into()
}

#[test]
fn records_read_back_equal() {
    let path = temp_log("roundtrip");
    let lines = vec![start(0), step(1, 2.3), step(2, 2.1), epoch(0, 2), step(3, 1.9)];
    let mut log = MetricsLog::create(&path).unwrap();
    for l in &lines {
        log.append(l).unwrap();
    }
    drop(log);
    assert_eq!(read_log(&path).unwrap(), lines);
    // One JSON object per line, tagged with its kind, the sandwich roles in lower case.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), lines.len());
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["start", "step", "step", "epoch", "step"]);
    assert!(text.contains(r#""role":"sampled""#) && text.contains(r#""chosen":0"#), "{text}");
    // The effective config stored in the start line reads back as the config.
    let LogLine::Start(s) = &read_log(&path).unwrap()[0] else { panic!("first line is not a start line") };
    assert_eq!(TrainConfig::from_value(s.config.clone()).unwrap(), TrainConfig::default());
    // create replaces an old log.
    MetricsLog::create(&path).unwrap().append(&step(1, 5.0)).unwrap();
    assert_eq!(read_log(&path).unwrap(), vec![step(1, 5.0)]);
}

#[test]
fn non_finite_losses_survive() {
    let path = temp_log("nan");
    let mut log = MetricsLog::create(&path).unwrap();
    log.append(&step(1, f64::NAN)).unwrap();
    log.append(&step(2, f64::INFINITY)).unwrap();
    let lines = read_log(&path).unwrap();
    let LogLine::Step(a) = &lines[0] else { panic!("not a step") };
    let LogLine::Step(b) = &lines[1] else { panic!("not a step") };
    assert!(a.total_loss.is_nan() && a.subnets[0].loss.is_nan());
    assert_eq!((b.total_loss, b.subnets[2].loss), (f64::INFINITY, f64::INFINITY));
    assert!(std::fs::read_to_string(&path).unwrap().contains(r#""total_loss":"NaN""#));
}

#[test]
fn a_partial_last_line_is_ignored_and_reported() {
    let path = temp_log("partial");
    let mut log = MetricsLog::create(&path).unwrap();
    log.append(&step(1, 2.0)).unwrap();
    log.append(&step(2, 1.8)).unwrap();
    drop(log);
    // Simulate a crash in the middle of writing line 3.
    let third = serde_json::to_string(&step(3, 1.7)).unwrap();
    let cut = &third[..third.len() / 2];
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(cut.as_bytes()).unwrap();

    let report = read_log_report(&path).unwrap();
    assert_eq!(report.lines, vec![step(1, 2.0), step(2, 1.8)]);
    assert_eq!(report.partial_tail_bytes, cut.len());
    assert_eq!(read_log(&path).unwrap().len(), 2);

    // Resuming drops the fragment, so the next line starts on a line of its own.
    let (mut log, rep) = MetricsLog::resume(&path, u64::MAX).unwrap();
    assert_eq!(rep, ResumeReport { kept_lines: 2, dropped_lines: 0, partial_tail_bytes: cut.len() });
    log.append(&step(3, 1.7)).unwrap();
    let report = read_log_report(&path).unwrap();
    assert_eq!((report.lines.len(), report.partial_tail_bytes), (3, 0));
    assert_eq!(report.lines[2], step(3, 1.7));
}

#[test]
fn a_corrupt_complete_line_names_the_file_and_line() {
    let path = temp_log("corrupt");
    let good = serde_json::to_string(&step(1, 2.0)).unwrap();
    std::fs::write(&path, format!("{good}\n\n{{\"kind\": \"step\", \"step\": oops}}\n{good}\n")).unwrap();
    let e = read_log(&path).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}:3: not a metrics record", path.display())), "{msg}");
    // resume refuses too, and leaves the file alone.
    let before = std::fs::read(&path).unwrap();
    assert!(MetricsLog::resume(&path, u64::MAX).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn resume_keeps_the_lines_up_to_the_checkpoint() {
    let path = temp_log("resume");
    let mut log = MetricsLog::create(&path).unwrap();
    let lines = vec![start(0), step(1, 2.3), step(2, 2.1), epoch(0, 2), step(3, 1.9), step(4, 1.8)];
    for l in &lines {
        log.append(l).unwrap();
    }
    drop(log);
    // Checkpoint after step 2 (with its epoch line): steps 3 and 4 are written again by the resumed run.
    let (mut log, rep) = MetricsLog::resume(&path, 2).unwrap();
    assert_eq!(rep, ResumeReport { kept_lines: 4, dropped_lines: 2, partial_tail_bytes: 0 });
    log.append(&start(2)).unwrap();
    log.append(&step(3, 1.95)).unwrap();
    let mut want = lines[..4].to_vec();
    want.extend([start(2), step(3, 1.95)]);
    assert_eq!(read_log(&path).unwrap(), want);
    // A missing file is created.
    let fresh = temp_log("resume-missing");
    let (mut log, rep) = MetricsLog::resume(&fresh, 10).unwrap();
    assert_eq!(rep, ResumeReport::default());
    log.append(&step(11, 1.0)).unwrap();
    assert_eq!(read_log(&fresh).unwrap(), vec![step(11, 1.0)]);
}

#[test]
fn score_margin_is_the_gap_to_the_runner_up() {
    let LogLine::Step(s) = step(1, 2.0) else { panic!("not a step") };
    let mut sampled = s.subnets[1].clone();
    // Scores -2.5 (chosen, index 0) and -2.75: BestUp's margin is 0.25, and the choice is the first drawn.
    assert_eq!(sampled.score_margin(), Some(0.25));
    assert_eq!(sampled.choice_differs_from_first(), Some(false));
    sampled.candidates.push(CandidateRecord { arch: sampled.arch.clone(), mflops: 1.2, score: -2.0 });
    sampled.chosen = Some(2);
    assert_eq!((sampled.score_margin(), sampled.choice_differs_from_first()), (Some(0.5), Some(true)));
    // WorstUp picking the lowest: the gap to the nearest other score.
    sampled.chosen = Some(1);
    assert_eq!(sampled.score_margin(), Some(0.25));
    // No candidates (max, min, uniform draws): no margin, no choice.
    assert_eq!((s.subnets[0].score_margin(), s.subnets[0].choice_differs_from_first()), (None, None));
}
