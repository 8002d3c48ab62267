// Kernel build (DESIGN.md section 3).
// - Always: flatten each kernels/*.cu (local includes inlined) and embed it, so NVRTC can compile it at
//   run time on a machine where no nvcc was present at build time.
// - With nvcc ($NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda/bin): a cubin per arch in
//   KERNEL_ARCHS (default 90a) plus PTX for compute_80, with `-Xptxas -v`; spills become cargo warnings
//   and the whole report is embedded (`attnas info --ptxas`). KERNELS_NO_NVCC=1 skips nvcc;
//   KERNELS_REQUIRE_NVCC=1 makes a missing nvcc an error.
// - Generates $OUT_DIR/kernels_gen.rs: the module table and a `KernelFn` enum with every entry point's
//   name and parameter kinds (parsed from its `extern "C"` signature).
// - With feature `emu`: compiles the kernels as host C++ for the SIMT emulator (build/emu.rs).

#[path = "build/codegen.rs"]
mod codegen;
#[path = "build/emu.rs"]
mod emu;
#[path = "build/entry_points.rs"]
mod entry_points;
#[path = "build/nvcc.rs"]
mod nvcc;
#[path = "build/sources.rs"]
mod sources;

use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let kdir = root.join("kernels");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=build");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "KERNEL_ARCHS", "KERNELS_NO_NVCC", "KERNELS_REQUIRE_NVCC", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    // the optimisation level of this build (`attnas info` prints them: a benchmark of
    // an unoptimised binary is a common mistake; the long CLI tests check that their binary is optimised)
    let opt = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "?".into());
    println!("cargo:rustc-env=ATTNAS_BUILD_OPT_LEVEL={opt}");

    let srcs = sources::load_all(&kdir)?;
    for s in &srcs {
        for d in &s.deps {
            println!("cargo:rerun-if-changed={}", d.display());
        }
        std::fs::write(out_dir.join(format!("{}.flat.cu", s.module)), &s.flat).map_err(|e| e.to_string())?;
    }

    let archs = nvcc::parse_archs(&std::env::var("KERNEL_ARCHS").unwrap_or_else(|_| "90a".into()))?;
    let want_nvcc = std::env::var("KERNELS_NO_NVCC").map(|v| v != "1").unwrap_or(true);
    let nvcc = if want_nvcc { nvcc::find() } else { None };
    if nvcc.is_none() && std::env::var("KERNELS_REQUIRE_NVCC").is_ok_and(|v| v == "1") {
        return Err(
            "KERNELS_REQUIRE_NVCC=1 but no nvcc was found (set NVCC or run scripts/setup-cuda-wheels.sh)".into()
        );
    }

    let mut compiled = Vec::new();
    match &nvcc {
        Some(n) => {
            // one thread per file: nvcc is single-threaded and the files are independent
            let results: Vec<Result<nvcc::Compiled, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = srcs
                    .iter()
                    .map(|s| {
                        scope.spawn(|| {
                            let src = nvcc::with_entry_points(s, &out_dir)?;
                            nvcc::compile(n, &src, &kdir, &out_dir, &s.module, &archs)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("nvcc thread panicked".into()))).collect()
            });
            for r in results {
                let c = r?;
                for spill in nvcc::spills(&c.ptxas_log) {
                    println!("cargo:warning=ptxas spill: {spill}");
                }
                compiled.push(Some(c));
            }
        }
        None => {
            println!("cargo:warning=nvcc not found: kernels are embedded as source and compiled with NVRTC at run time (set NVCC or run scripts/setup-cuda-wheels.sh for cubins)");
            compiled.extend(srcs.iter().map(|_| None));
        }
    }

    let gen = codegen::generate(&srcs, &compiled, nvcc.as_ref(), &archs, &out_dir)?;
    std::fs::write(out_dir.join("kernels_gen.rs"), gen).map_err(|e| e.to_string())?;

    if std::env::var("CARGO_FEATURE_EMU").is_ok() {
        emu::build(&root, &kdir, &srcs, &out_dir)?;
    }
    Ok(())
}
