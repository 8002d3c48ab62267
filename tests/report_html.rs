//! `attnas report`: the HTML report of a resumed run with its search (every step once, every section,
//! one self-contained file), of a run in progress (a partial last log line) and of a log holding a
//! restarted run, bad inputs as one-line usage errors, and the page rendered by a real headless browser
//! (Debian's Chromium) with no console errors. The fixture (a 6-step tiny run resumed after step 2, and a
//! 12-subnet search over it) is made once per test binary: a few seconds on 2 cores.
//!
//! Chromium: when it is not installed the render test prints one `skipped:` line, unless
//! `REQUIRE_CHROMIUM=1` (set by CI, which installs it), where it fails.

mod train_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use attnas::report::{render, ReportInputs, RunHistory};
use train_common::{attnas_bin, fashion_mnist_packed, forget_checkpoints_after, fresh_dir, train, SHORT_RUN};

struct Fixture {
    run: PathBuf,
    search: PathBuf,
}

/// A tiny run trained to step 5, cut back to its step-2 checkpoint and resumed to step 6, and a search
/// over it (2 iterations of 6 + 6 subnets on 128 held-out images).
fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let data = fashion_mnist_packed("report_html")?;
        let run = fresh_dir("report-run");
        let sets = |extra: &'static str| SHORT_RUN.iter().copied().chain([extra]).collect::<Vec<_>>();
        let o = train(&data, &run, &sets("max_steps=5"), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        forget_checkpoints_after(&run, 2);
        let o = train(&data, &run, &sets("max_steps=6"), &["--resume"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let search = fresh_dir("report-search");
        let o = Command::new(attnas_bin())
            .arg("search")
            .arg("--ckpt")
            .arg(&run)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&search)
            .args(["--device", "cpu", "--flops", "0.3:2.0", "--bucket", "0.05", "--population", "6"])
            .args(["--mutations", "3", "--crossovers", "3", "--iterations", "2", "--calib-batches", "1"])
            .args(["--calib-batch-size", "32", "--eval-images", "128", "--quiet"])
            .output()
            .expect("run attnas search");
        assert!(o.status.success(), "search failed: {}", String::from_utf8_lossy(&o.stderr));
        Some(Fixture { run, search })
    })
    .as_ref()
}

fn report_cli(args: &[&str]) -> std::process::Output {
    Command::new(attnas_bin()).arg("report").args(args).output().expect("run attnas report")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn report_of_a_resumed_run_and_its_search() {
    let Some(f) = fixture() else { return };
    let out = fresh_dir("report-out").join("report.html");
    let o = report_cli(&[s(&f.run), "--search", s(&f.search), "--out", s(&out), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json summary");
    assert_eq!(summary["steps"], 6, "{summary}");
    assert_eq!((summary["last_step"].as_u64(), summary["resumes"].as_u64()), (Some(6), Some(1)));
    assert_eq!((summary["epochs"].as_u64(), summary["searched"].as_u64()), (Some(1), Some(12)));

    // Every step once, ascending, though steps 3-5 were logged twice (before the crash and after the resume).
    let h = RunHistory::load(&f.run).unwrap();
    assert_eq!(h.steps.iter().map(|p| p.step).collect::<Vec<_>>(), (1..=6).collect::<Vec<u64>>());
    assert_eq!((h.superseded_lines, h.partial_tail_bytes, h.starts.len()), (0, 0, 2));
    assert_eq!(h.draws.len(), 12, "2 sampled subnets per step");
    assert!(h.steps.iter().all(|p| p.data_wait_s.is_some_and(|w| w >= 0.0)));

    let page = std::fs::read_to_string(&out).unwrap();
    for id in ["summary", "training", "sampling", "search", "config"] {
        assert!(page.contains(&format!("<section id=\"{id}\">")), "section {id} missing");
    }
    for text in [
        "Finished: 6 of 6 steps",
        "resume after step 2",
        "Training loss per sandwich role",
        "Validation accuracy per epoch",
        "Learning rate",
        "Throughput",
        "Time waiting for the data loader",
        "FLOPs targets drawn vs the sampler",
        "Total variation distance",
        "the trained candidate was another than the first drawn in",
        "12 subnets evaluated",
        "Pareto front",
    ] {
        assert!(page.contains(text), "the report lacks '{text}'");
    }
    let fingerprint = h.starts[0].fingerprint.as_str();
    assert!(page.contains(fingerprint) && page.contains("&quot;discretize_step&quot;: 0.05"), "config and fingerprint");
    assert!(page.matches("<svg").count() >= 7, "charts inline: {}", page.matches("<svg").count());
    // Self-contained: no script, no link to anything outside the file.
    let lower = page.to_lowercase();
    assert!(!lower.contains("<script") && !lower.contains("<link") && !lower.contains("src=\"http"));
    assert!(!lower.contains("<img"), "images are inline SVG");
}

#[test]
fn report_of_a_run_in_progress_and_of_a_restarted_log() {
    let Some(f) = fixture() else { return };
    let text = std::fs::read_to_string(f.run.join("metrics.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // lines: start(0), steps 1-2, start(2) (the resume), steps 3-6, epoch(6).
    assert!(lines.len() >= 8, "{}", lines.len());

    // In progress: start, steps 1-2, the resume line, and half of step 3 still being written.
    let dir = fresh_dir("report-in-progress");
    std::fs::create_dir_all(&dir).unwrap();
    let mut log = std::fs::File::create(dir.join("metrics.jsonl")).unwrap();
    for l in &lines[..4] {
        writeln!(log, "{l}").unwrap();
    }
    log.write_all(&lines[4].as_bytes()[..lines[4].len() / 2]).unwrap();
    drop(log);
    let (page, h, _) = render(&ReportInputs { run: dir.clone(), search: None }).unwrap();
    assert_eq!(h.steps.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(h.partial_tail_bytes, lines[4].len() / 2);
    assert!(page.contains("In progress or stopped at step 2"), "status line");
    assert!(page.contains("unfinished line"), "the partial line is reported");
    assert!(page.contains("No search in this report"));

    // A log that holds a restart without resume (two runs concatenated): later lines win, each step once.
    let dir = fresh_dir("report-restarted");
    std::fs::create_dir_all(&dir).unwrap();
    let steps_1_to_6: Vec<&str> = lines.iter().copied().filter(|l| l.contains("\"kind\":\"step\"")).collect();
    let mut body: Vec<&str> = vec![lines[0]];
    body.extend(&steps_1_to_6);
    body.push(lines[0]);
    body.extend(&steps_1_to_6[..2]);
    std::fs::write(dir.join("metrics.jsonl"), body.join("\n") + "\n").unwrap();
    let (page, h, _) = render(&ReportInputs { run: dir, search: None }).unwrap();
    assert_eq!(h.steps.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(h.superseded_lines, 6, "steps 1-6 of the first run");
    assert!(page.contains("6 logged lines were superseded"));
}

/// A run that stopped early (a SIGTERM's `stop` line): the report lists the stop, and the TensorBoard
/// mirror rebuilt from the log carries it as a `run/stop` text event at its step.
#[test]
fn an_early_stop_is_in_the_report_and_the_tensorboard_mirror() {
    let Some(f) = fixture() else { return };
    let text = std::fs::read_to_string(f.run.join("metrics.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().take(3).collect(); // start, steps 1-2
    let dir = fresh_dir("report-stopped");
    std::fs::create_dir_all(&dir).unwrap();
    let stop = r#"{"kind":"stop","step":2,"reason":"SIGTERM","checkpoint":"checkpoints/ckpt-2.safetensors"}"#;
    std::fs::write(dir.join("metrics.jsonl"), format!("{}\n{stop}\n", lines.join("\n"))).unwrap();
    let (page, h, _) = render(&ReportInputs { run: dir.clone(), search: None }).unwrap();
    assert_eq!(h.stops.len(), 1);
    assert!(page.contains("Early stops") && page.contains("SIGTERM") && page.contains("ckpt-2.safetensors"));

    let tb = attnas::train::tensorboard::TensorBoardLog::rebuild(&dir.join("tb"), &dir.join("metrics.jsonl")).unwrap();
    let bytes = std::fs::read(tb.path()).unwrap();
    let records = attnas::tensorboard::read_records(&bytes, "stop events").unwrap();
    let stop_events: Vec<i64> = records
        .records
        .iter()
        .map(|r| <attnas::tensorboard::Event as prost::Message>::decode(*r).unwrap())
        .filter(|e| format!("{e:?}").contains("run/stop"))
        .map(|e| e.step)
        .collect();
    assert_eq!(stop_events, vec![2], "one run/stop event at the stop's step");
}

#[test]
fn bad_inputs_are_one_line_usage_errors() {
    let empty = fresh_dir("report-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = report_cli(&[s(&empty)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("metrics.jsonl") && err.contains("attnas train") && err.lines().count() == 1, "{err}");

    std::fs::write(empty.join("metrics.jsonl"), "{\"kind\":\"start\"\n").unwrap();
    let o = report_cli(&[s(&empty)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("metrics.jsonl:1") && err.contains("not a metrics record"), "{err}");

    std::fs::write(empty.join("metrics.jsonl"), "").unwrap();
    let o = report_cli(&[s(&empty), "--search", s(&empty)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("search-state.json") && err.lines().count() == 1, "{err}");
}

/// Debian's Chromium (or another Chromium build) on PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

#[test]
fn the_report_renders_in_headless_chromium_without_console_errors() {
    let Some(browser) = chromium() else {
        if std::env::var("REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
            panic!("REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)");
        }
        println!("skipped: report render: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let Some(f) = fixture() else { return };
    let dir = fresh_dir("report-render");
    let (html, png) = (dir.join("report.html"), dir.join("report.png"));
    let o = report_cli(&[s(&f.run), "--search", s(&f.search), "--out", s(&html)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut child = Command::new(&browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--enable-logging=stderr", "--v=0", "--window-size=1400,3000"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    while child.try_wait().expect("wait for chromium").is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().expect("chromium output");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "chromium failed: {log}");
    // Console messages are logged as CONSOLE(...) lines; CSP violations as "Refused to ...".
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Refused to") || l.contains("ERR_FILE")
        })
        .collect();
    assert!(bad.is_empty(), "console errors while rendering the report:\n{}", bad.join("\n"));

    let img = image::open(&png).expect("a PNG screenshot").to_rgb8();
    assert_eq!(img.dimensions(), (1400, 3000));
    // Not a blank page: the dark header band at the top, and charts (many colours) further down.
    let header = img.get_pixel(700, 20);
    assert!(header.0.iter().all(|&c| c < 80), "dark header expected, got {header:?}");
    let mut colours = std::collections::HashSet::new();
    let mut ink = 0usize;
    for p in img.pixels() {
        colours.insert(p.0);
        ink += (p.0.iter().map(|&c| c as u32).sum::<u32>() < 600) as usize;
    }
    assert!(colours.len() > 200, "{} distinct colours: the charts did not render", colours.len());
    assert!(ink > 20_000, "only {ink} non-background pixels");
    println!("report screenshot: {} ({} colours)", png.display(), colours.len());
}
