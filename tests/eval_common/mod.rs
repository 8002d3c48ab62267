//! The fixture shared by the eval and export tests: Fashion-MNIST packed from the system dataset, and a
//! tiny supernet trained on it for a few steps by the CLI. Both are cached under CARGO_TARGET_TMPDIR
//! (the run keyed by the recipe, configs/tiny.yaml and the binary), so the test files share them;
//! each is built in a scratch folder and renamed into place, so an interrupted run leaves no half fixture.
//!
//! Training never updates the BN running statistics (spec 1.4); the checkpoint holds those the trainer's
//! end-of-run validation left, i.e. recalibrated for the min subnet (validated last), and so wrong for
//! every other subnet, which is what the recalibration test relies on.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Training settings of the fixture: enough steps (with the LR schedule fitted to them) for the max
/// subnet to beat chance clearly once its BN is recalibrated, few enough for a debug build. The held-out
/// split keeps the trainer's own end-of-run validation small (no val.pack in its data folder).
const TRAIN_SETS: &[&str] = &[
    "max_steps=40",
    "schedule_steps=40",
    "batch_size=32",
    "bn_calib.batches=2",
    "bn_calib.batch_size=32",
    "data.holdout=128",
];

/// The binary under test: `ATTNAS_BIN` (set by the GPU bundle's run.sh) or the one cargo built.
pub fn attnas_bin() -> String {
    std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string())
}

/// Runs the CLI with `args`.
pub fn attnas(args: &[&str]) -> Output {
    Command::new(attnas_bin()).args(args).output().expect("run attnas")
}

/// Stdout of a run that must succeed (panics with its stderr otherwise).
pub fn attnas_ok(args: &[&str]) -> String {
    let out = attnas(args);
    assert!(out.status.success(), "attnas {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Stderr of a run that must fail with exit code 2.
pub fn attnas_usage_error(args: &[&str]) -> String {
    let out = attnas(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "attnas {args:?}: expected exit 2, stderr:\n{stderr}");
    stderr
}

pub fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = tmp_root().join(format!("eval-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The trained fixture: `run` (an `attnas train --out` folder) and `data` (train.pack + val.pack).
pub struct Fixture {
    pub run: PathBuf,
    pub data: PathBuf,
}

impl Fixture {
    pub fn run(&self) -> &str {
        self.run.to_str().unwrap()
    }
    pub fn data(&self) -> &str {
        self.data.to_str().unwrap()
    }
}

/// Builds `dst` with `make(tmp)` in a scratch folder renamed into place, unless `dst` exists.
fn cached(dst: &Path, make: impl FnOnce(&Path)) {
    if dst.is_dir() {
        return;
    }
    let tmp = dst.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    make(&tmp);
    // Another process may have finished first: then keep its copy.
    if std::fs::rename(&tmp, dst).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(dst.is_dir(), "fixture {} was not created", dst.display());
}

/// The cache key of the trained run: the recipe, the space file and the binary (size and mtime), so a
/// rebuilt binary retrains rather than reusing a checkpoint an older build wrote.
fn key() -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    TRAIN_SETS.hash(&mut h);
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml")).unwrap().hash(&mut h);
    let bin = std::fs::metadata(attnas_bin()).expect("the attnas binary");
    (bin.len(), bin.modified().ok()).hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The fixture, built once per process (and cached on disk), or `None` after one skip line when the
/// system dataset is not installed.
pub fn fixture(test: &str) -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let f = FIXTURE.get_or_init(|| {
        // Debian's dataset-fashion-mnist (CI installs it).
        let src = attnas::data::fashion_mnist_dir()?;
        let data = tmp_root().join("eval-fixture-fashion-mnist");
        cached(&data, |tmp| {
            attnas_ok(&["prepare", src.to_str().unwrap(), tmp.to_str().unwrap(), "--quiet"]);
        });
        let run = tmp_root().join(format!("eval-fixture-run-{}", key()));
        cached(&run, |tmp| {
            // Training data: train.pack only, so the trainer validates on a small held-out part.
            let train_dir = tmp.join("train-only");
            std::fs::create_dir_all(&train_dir).unwrap();
            std::os::unix::fs::symlink(data.join("train.pack"), train_dir.join("train.pack")).unwrap();
            let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml");
            let mut args = vec!["train", "--config", config, "--device", "cpu", "--quiet"];
            let (td, out) = (train_dir.to_str().unwrap().to_string(), tmp.to_str().unwrap().to_string());
            args.extend(["--data", &td, "--out", &out]);
            for s in TRAIN_SETS {
                args.extend(["--set", s]);
            }
            let t = std::time::Instant::now();
            attnas_ok(&args);
            eprintln!("fixture: trained the tiny supernet in {:.1} s", t.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&train_dir).unwrap();
        });
        Some(Fixture { run, data })
    });
    if f.is_none() {
        let missing = "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
        attnas::testing::skip_or_require(test, missing, "REQUIRE_SHARED_DATA");
    }
    f.as_ref()
}

/// `.venv-tools/bin/python` of the repository, or `None` after one skip line; with
/// `REQUIRE_PYTHON_TOOLS=1` (CI) a missing venv fails the test instead.
pub fn python_tools(test: &str) -> Option<PathBuf> {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/python");
    if py.is_file() {
        return Some(py);
    }
    if std::env::var("REQUIRE_PYTHON_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{test}: REQUIRE_PYTHON_TOOLS=1 but {} is missing (run scripts/setup-python-tools.sh)", py.display());
    }
    println!("skipped: {test}: {} not found (run scripts/setup-python-tools.sh)", py.display());
    None
}
