//! `scripts/side_by_side.py` (issue #13 item 6), the side-by-side timing of the original AttentiveNAS
//! PyTorch step against `attnas bench train`: its plumbing without PyTorch or the original source. `--help`
//! works without either, and a missing or bogus `--attentivenas` checkout is a usage error (exit 2) that
//! names the path and points to DEVELOPERS.md, which must exist and say where the source goes.
//!
//! Needs `python3` on PATH; without it the tests print one `skipped:` line, unless
//! `REQUIRE_PYTHON_TOOLS=1` (CI), where they fail. The GPU bundle's run.sh sets `ATTNAS_SIDE_BY_SIDE` to
//! the bundle's copy of the script (there is no repository there).

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The script: `ATTNAS_SIDE_BY_SIDE` (the GPU bundle) or the repository's.
fn script() -> PathBuf {
    match std::env::var_os("ATTNAS_SIDE_BY_SIDE") {
        Some(p) => PathBuf::from(p),
        None => repo().join("scripts/side_by_side.py"),
    }
}

/// True when python3 runs; otherwise prints why the test is skipped (or panics under REQUIRE_PYTHON_TOOLS=1).
fn have_python(test: &str) -> bool {
    if Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("REQUIRE_PYTHON_TOOLS").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_PYTHON_TOOLS=1 but python3 does not run");
    }
    println!("skipped: {test}: no python3 on PATH");
    false
}

fn run(args: &[&str]) -> Output {
    let s = script();
    assert!(s.is_file(), "{} is missing", s.display());
    Command::new("python3").arg(&s).args(args).env("PYTHONDONTWRITEBYTECODE", "1").output().expect("run python3")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_needs_neither_pytorch_nor_the_original() {
    if !have_python("help_needs_neither_pytorch_nor_the_original") {
        return;
    }
    let out = run(&["--help"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    for flag in ["--attentivenas", "--attnas", "--batch", "--k", "--resolution", "--steps", "--warmup", "--device"] {
        assert!(stdout.contains(flag), "--help does not mention {flag}:\n{stdout}");
    }
    assert!(stdout.contains("--out-md") && stdout.contains("--json"), "{stdout}");
    assert!(stdout.contains("DEVELOPERS.md"), "--help should say where the original comes from:\n{stdout}");
}

#[test]
fn a_missing_or_bogus_checkout_is_a_usage_error_pointing_to_developers_md() {
    if !have_python("a_missing_or_bogus_checkout_is_a_usage_error_pointing_to_developers_md") {
        return;
    }
    let missing = std::env::temp_dir().join(format!("attnas-no-such-attentivenas-{}", std::process::id()));
    let missing = missing.to_str().unwrap().to_string();
    // a folder that exists but is no AttentiveNAS checkout
    let bogus = std::env::temp_dir().to_str().unwrap().to_string();
    for (args, names) in [
        (vec!["--attentivenas", missing.as_str(), "--device", "cpu"], missing.as_str()),
        (vec!["--attentivenas", bogus.as_str(), "--device", "cpu"], bogus.as_str()),
        (vec!["--device", "cpu"], "--attentivenas"),
    ] {
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}\n{}", text(&out.stdout));
        assert!(stderr.contains(names), "{args:?}: the message should name {names}: {stderr}");
        assert!(stderr.contains("DEVELOPERS.md"), "{args:?}: the message should point to DEVELOPERS.md: {stderr}");
        assert!(!stderr.contains("Traceback"), "{args:?}: a usage error, not a crash: {stderr}");
    }
    let out = run(&["--attentivenas", bogus.as_str()]);
    assert!(text(&out.stderr).contains("models/attentive_nas_dynamic_model.py"), "{}", text(&out.stderr));

    // the file the message points to: in the repository (not in the GPU bundle, which has no docs)
    if std::env::var_os("ATTNAS_SIDE_BY_SIDE").is_none() {
        let dev = std::fs::read_to_string(repo().join("DEVELOPERS.md")).expect("DEVELOPERS.md at the repository root");
        assert!(dev.contains("third_party/AttentiveNAS") && dev.contains("side_by_side.py"), "{dev}");
        let ignore = std::fs::read_to_string(repo().join(".gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l.trim() == "/third_party/AttentiveNAS"), "the source must stay gitignored");
    }
}
