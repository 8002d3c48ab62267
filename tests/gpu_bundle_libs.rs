//! `scripts/find-cuda-libs.sh`, which the GPU bundle's `run.sh` uses to find cuBLAS, cuBLASLt, NVRTC and
//! NCCL: on a fake machine (empty files named like the libraries) it takes each library from the first
//! place that has it (the loader's path, then a CUDA toolkit folder, then the `nvidia/*/lib` folders of
//! Python's site-packages), puts only the folders the loader does not already search on
//! `LD_LIBRARY_PATH` (once each), exports NVRTC_LIB / NVRTC_INCLUDE, and names every copy it used.
//! Runs in milliseconds (bash only). Skips with one line where the script is absent (inside the bundle).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn touch(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b"").unwrap();
}

/// Runs the script with the three search lists overridden; returns (stdout, stderr) and the
/// LD_LIBRARY_PATH / NVRTC_* values after `eval` of its output (LD_LIBRARY_PATH starting as `/before`).
fn run(script: &Path, loader: &Path, cuda: &Path, site: &Path) -> (String, String, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"env_lines="$("$0")" || exit 1; echo "$env_lines"; eval "$env_lines"; echo "LD=$LD_LIBRARY_PATH""#)
        .arg(script)
        .env("ATTNAS_LOADER_DIRS", loader)
        .env("ATTNAS_CUDA_DIRS", cuda)
        .env("ATTNAS_PYTHON_SITE", format!("/nonexistent:{}", site.display()))
        .env("LD_LIBRARY_PATH", "/before")
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ld = stdout.lines().find_map(|l| l.strip_prefix("LD=")).unwrap_or("").to_string();
    (stdout, String::from_utf8_lossy(&out.stderr).into_owned(), ld)
}

#[test]
fn finds_each_library_in_order_and_reports_the_copy_used() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/find-cuda-libs.sh");
    if !script.is_file() {
        println!("skipped: find-cuda-libs: {} not here (a bundle run)", script.display());
        return;
    }
    let root: PathBuf = std::env::temp_dir().join(format!("attnas-find-cuda-libs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let (loader, cuda, site) = (root.join("system/lib"), root.join("cuda/lib64"), root.join("site-packages"));
    let cu13 = site.join("nvidia/cu13/lib");
    // NCCL on the loader's path and in Python: the loader's copy wins, nothing added for it.
    touch(&loader.join("libnccl.so.2"));
    touch(&site.join("nvidia/nccl/lib/libnccl.so.2"));
    // cuBLASLt in a toolkit folder and in Python: the toolkit's copy wins.
    touch(&cuda.join("libcublasLt.so.13"));
    touch(&cu13.join("libcublasLt.so.13"));
    // cuBLAS and NVRTC only in Python (the GPU image's case); headers beside NVRTC.
    touch(&cu13.join("libcublas.so.13"));
    touch(&cu13.join("libnvrtc.so.13"));
    touch(&site.join("nvidia/cu13/include/cuda_fp16.h"));
    // A CUDA 12 cuBLAS in another package must not be taken for 13.
    touch(&site.join("nvidia/cublas/lib/libcublas.so.12"));

    let (stdout, report, ld) = run(&script, &loader, &cuda, &site);
    let line = |lib: &str| report.lines().find(|l| l.contains(&format!(" {lib}: "))).unwrap_or("").to_string();
    assert!(line("libnccl.so.2").contains(&format!("{}/libnccl.so.2 [loader path]", loader.display())), "{report}");
    assert!(line("libcublasLt.so.13").contains(&format!("{}/libcublasLt.so.13 [CUDA toolkit", cuda.display())));
    assert!(line("libcublas.so.13").contains(&format!("{}/libcublas.so.13 [Python package (cu13)]", cu13.display())));
    assert!(line("libnvrtc.so.13").contains("[Python package (cu13)]"), "{report}");
    // The loader's folder is not added; the Python and toolkit folders are, once each, in the order of the
    // libraries that needed them (cuBLAS, then cuBLASLt; NVRTC's folder is cuBLAS's), before the old value.
    assert_eq!(ld, format!("{}:{}:/before", cu13.display(), cuda.display()), "{stdout}");
    assert!(stdout.contains(&format!("export NVRTC_LIB='{}/libnvrtc.so.13'", cu13.display())), "{stdout}");
    assert!(stdout.contains(&format!("export NVRTC_INCLUDE='{}'", site.join("nvidia/cu13/include").display())));

    // Nothing anywhere: every library reported missing, no exports.
    let empty = root.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let (stdout, report, ld) = run(&script, &empty, &empty, &empty);
    let _ = fs::remove_dir_all(&root);
    assert_eq!(report.lines().filter(|l| l.ends_with(": not found")).count(), 4, "{report}");
    assert_eq!(ld, "/before");
    assert!(!stdout.contains("export"), "{stdout}");
}
