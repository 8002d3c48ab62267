//! Every kernel file compiles with NVRTC for sm_90a, every `extern "C" __global__` entry it declares is in
//! the output, the build-time kernel table lists exactly those entries, and ptxas reports no spills and
//! no stack frame (local memory: a per-thread struct reached through a pointer, or an array indexed at
//! run time, lives there; the BN backward kernels had a 48-byte frame that way until c189d14).
//! Skips (one line) without libnvrtc unless REQUIRE_NVRTC=1, then fails: CI sets it, so a syntax error in
//! any .cu or a missing entry point fails CI even where nvcc was not used.

use attnas::backend::cuda::kernels::{KernelFn, MODULES};
use attnas::backend::cuda::nvrtc::{self, Target};

fn nvrtc_or_skip() -> bool {
    if nvrtc::is_available() {
        return true;
    }
    if std::env::var("REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_NVRTC=1 but libnvrtc was not found: run `source <(scripts/setup-cuda-wheels.sh)`");
    }
    println!("skipped: kernels_compile: no libnvrtc (set NVRTC_LIB, see scripts/setup-cuda-wheels.sh)");
    false
}

#[test]
fn every_kernel_compiles_to_ptx_with_all_entries() {
    if !nvrtc_or_skip() {
        return;
    }
    for m in MODULES {
        let declared = nvrtc::declared_entries(m.source);
        assert!(!declared.is_empty(), "{}.cu declares no extern \"C\" __global__ kernel", m.name);
        let out = nvrtc::compile(m.name, m.source, Target::Ptx("compute_90a")).unwrap_or_else(|e| panic!("{e}"));
        let ptx = String::from_utf8_lossy(&out.image);
        for name in &declared {
            assert!(ptx.contains(&format!(".entry {name}(")), "{}.cu: entry {name} missing from the PTX", m.name);
        }
    }
}

#[test]
fn kernel_table_matches_the_sources() {
    let mut declared: Vec<String> = MODULES.iter().flat_map(|m| nvrtc::declared_entries(m.source)).collect();
    let mut table: Vec<String> = KernelFn::ALL.iter().map(|k| k.name().to_string()).collect();
    declared.sort();
    table.sort();
    assert_eq!(declared, table, "KernelFn (build.rs) and the extern \"C\" entries in kernels/*.cu differ");
    for k in KernelFn::ALL {
        let m = &MODULES[k.module()];
        assert!(nvrtc::declared_entries(m.source).iter().any(|n| n == k.name()), "{} not in {}.cu", k.name(), m.name);
    }
}

#[test]
fn every_kernel_builds_sm90a_sass_without_spills_or_stack() {
    if !nvrtc_or_skip() {
        return;
    }
    let mut spills = Vec::new();
    for m in MODULES {
        let out = nvrtc::compile(m.name, m.source, Target::Cubin("sm_90a")).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.image.starts_with(b"\x7fELF"), "{}: NVRTC did not return an ELF cubin", m.name);
        for name in nvrtc::declared_entries(m.source) {
            assert!(
                out.image.windows(name.len()).any(|w| w == name.as_bytes()),
                "{}: symbol {name} missing from the cubin",
                m.name
            );
        }
        // each report line follows "Function properties for <kernel>"
        let mut kernel = "?";
        for line in out.log.lines() {
            if let Some((_, name)) = line.split_once("Function properties for ") {
                kernel = name.trim();
            }
            if !line.contains("spill stores") {
                continue;
            }
            // "[ptxas .] N bytes stack frame, N bytes spill stores, N bytes spill loads": the count is the
            // word before "bytes"
            let nonzero = line.split(',').filter(|p| p.contains("spill") || p.contains("stack frame")).any(|p| {
                let words: Vec<&str> = p.split_whitespace().collect();
                words.iter().position(|w| *w == "bytes").is_some_and(|i| i > 0 && words[i - 1] != "0")
            });
            if nonzero {
                spills.push(format!("{}.cu {kernel}: {}", m.name, line.trim()));
            }
        }
    }
    assert!(
        spills.is_empty(),
        "ptxas reports register spills or a stack frame (local memory) at sm_90a:\n{}",
        spills.join("\n")
    );
}
