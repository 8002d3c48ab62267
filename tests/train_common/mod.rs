//! Shared by the training tests: the binary, the packed Fashion-MNIST (prepared once per target dir),
//! and the metrics-log readers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use attnas::train::metrics::{read_log, LogLine, StepRecord};

/// The binary under test: `ATTNAS_BIN` (e.g. a release build, or the GPU bundle's), else the one cargo
/// built for these tests (same profile as this test crate).
pub fn attnas_bin() -> String {
    std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string())
}

/// Whether `attnas_bin()` is an optimised build (the multi-minute training tests need one): `ATTNAS_BIN`
/// is taken to be, and cargo's binary is when the profile optimises (the test profile does: opt-level 1).
pub fn have_optimised_bin() -> bool {
    std::env::var("ATTNAS_BIN").is_ok() || attnas::build_info::build_is_optimised()
}

/// Fashion-MNIST packed into `train.pack` / `val.pack` under the target's temp dir (once per run of the
/// test binary; `attnas prepare` is atomic, so a concurrent test binary cannot see a half-written file).
/// `None` (after one `skipped:` line) when Debian's dataset-fashion-mnist is not installed.
pub fn fashion_mnist_packed(test: &str) -> Option<PathBuf> {
    static PACKED: OnceLock<Option<PathBuf>> = OnceLock::new();
    let packed = PACKED.get_or_init(|| {
        let src = attnas::data::fashion_mnist_dir()?;
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fashion-mnist-packed");
        if !out.join("val.pack").is_file() {
            let o = Command::new(attnas_bin()).arg("prepare").arg(&src).arg(&out).arg("--quiet").output().ok()?;
            assert!(o.status.success(), "prepare failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Some(out)
    });
    if packed.is_none() {
        let missing = "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
        attnas::testing::skip_or_require(test, missing, "REQUIRE_SHARED_DATA");
    }
    packed.clone()
}

/// A few steps of batch 16 with a tiny validation (1 calibration batch, 64 held-out images), a 6-step
/// schedule and a checkpoint every 2 steps (5 kept): runs that resume, log and report in about a second.
/// Four subnets per step (max, 2 attentive draws, min) as in the published recipe, whatever the tiny
/// demo recipe uses, so that the logs hold several draws per step.
pub const SHORT_RUN: &[&str] = &[
    "batch_size=16",
    "sandwich.num_arch_training=4",
    "schedule_steps=6",
    "bn_calib.batches=1",
    "bn_calib.batch_size=16",
    "bn_calib.eval_images=64",
    "checkpoint.every_steps=2",
    "checkpoint.keep=5",
];

/// Runs `attnas train` with the tiny config and the given `--set` overrides into `out`.
pub fn train(data: &Path, out: &Path, sets: &[&str], extra: &[&str]) -> Output {
    train_command(data, out, sets, extra).output().expect("run attnas train")
}

/// The `attnas train` command [`train`] runs, for a test that runs several at once (`spawn`, then
/// `wait_with_output`, with stdout and stderr piped).
pub fn train_command(data: &Path, out: &Path, sets: &[&str], extra: &[&str]) -> Command {
    let mut cmd = Command::new(attnas_bin());
    cmd.args(["train", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml"), "--device", "cpu"]);
    cmd.arg("--data").arg(data).arg("--out").arg(out).arg("--quiet");
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.args(extra);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd
}

pub fn steps(log: &Path) -> Vec<StepRecord> {
    read_log(log)
        .expect("read metrics log")
        .into_iter()
        .filter_map(|l| match l {
            LogLine::Step(s) => Some(s),
            _ => None,
        })
        .collect()
}

pub fn fresh_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The Python tools venv's interpreter (`$PYTHON_TOOLS_VENV/bin/python` when set, as
/// scripts/setup-python-tools.sh uses it, else `.venv-tools/bin/python`) if it imports `module`; else
/// `None` after one skip line, or a failure under `REQUIRE_PYTHON_TOOLS=1` (CI).
pub fn python_with(module: &str, test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("PYTHON_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools"));
    let py = venv.join("bin/python");
    let ok = py.is_file()
        && Command::new(&py).args(["-c", &format!("import {module}")]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let why = format!("{} cannot import {module} (run scripts/setup-python-tools.sh)", py.display());
    if std::env::var("REQUIRE_PYTHON_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{test}: REQUIRE_PYTHON_TOOLS=1 but {why}");
    }
    println!("skipped: {test}: {why}");
    None
}

/// Removes the checkpoints after `step` from a run folder (and the `latest` pointer), as if the run had
/// crashed after logging steps it never checkpointed.
pub fn forget_checkpoints_after(run: &Path, step: u64) {
    let dir = run.join("checkpoints");
    let _ = std::fs::remove_file(dir.join("latest"));
    for entry in std::fs::read_dir(&dir).expect("checkpoints folder") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        let s: Option<u64> = name.strip_prefix("ckpt-").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok());
        if s.is_some_and(|s| s > step) {
            std::fs::remove_file(&path).expect("remove checkpoint file");
        }
    }
}
