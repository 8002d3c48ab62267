//! `attnas info` runs everywhere: exit 0, the kernel build line, and on a machine without CUDA one
//! plain "no GPU found" line.

use std::process::Command;

#[test]
fn info_exits_zero_and_reports_kernels_and_gpu_state() {
    let out = Command::new(attnas_bin()).arg("info").output().expect("run attnas info");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "attnas info failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("kernels:"), "{text}");
    // the first line says how the binary was built: the library this test links has the same profile
    let first = text.lines().next().unwrap_or("");
    let expect = format!(
        "(opt-level {}, debug assertions {})",
        attnas::build_info::BUILD_OPT_LEVEL,
        attnas::build_info::BUILD_DEBUG_ASSERTIONS
    );
    if std::env::var("ATTNAS_BIN").is_err() {
        assert!(first.starts_with("attnas ") && first.ends_with(&expect), "{first:?} should end with {expect:?}");
    }
    assert!(text.contains("cpu threads:"), "{text}");
    let has_gpu = attnas::backend::cuda::probe::device_count().map(|n| n > 0).unwrap_or(false);
    if has_gpu {
        assert!(text.contains("gpu 0:"), "{text}");
    } else {
        assert_eq!(text.lines().filter(|l| l.starts_with("no GPU found")).count(), 1, "{text}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = Command::new(attnas_bin()).arg("no-such-command").output().expect("run attnas");
    assert_eq!(out.status.code(), Some(2));
}

/// The binary under test: `ATTNAS_BIN` (set by the GPU bundle's run.sh) or the one cargo built.
fn attnas_bin() -> String {
    std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string())
}
