// nvcc for build.rs: find it, compile every kernel file to a cubin per arch in KERNEL_ARCHS plus PTX
// for compute_80 (JIT fallback for other cards), in parallel, with the ptxas register/spill report.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sources::KernelSource;

/// The file nvcc compiles for a module: the .cu itself, or, when it has `ENTRY_POINTS` templates, a
/// generated `$OUT_DIR/<module>.entry.cu` that includes it and adds the generated entry points (so
/// nvcc's messages still point into kernels/).
pub fn with_entry_points(s: &KernelSource, out_dir: &Path) -> Result<PathBuf, String> {
    if s.wrappers.is_empty() {
        return Ok(s.path.clone());
    }
    let path = out_dir.join(format!("{}.entry.cu", s.module));
    let abs = s.path.canonicalize().map_err(|e| format!("{}: {e}", s.path.display()))?;
    let text = format!("#include {:?}\n{}", abs.display().to_string(), s.wrappers);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

pub struct Nvcc {
    pub path: PathBuf,
    pub version: String,
}

pub struct Compiled {
    /// (arch name like "sm_90a", cubin path)
    pub cubins: Vec<(String, PathBuf)>,
    pub ptx: PathBuf,
    /// ptxas -v output for every arch, verbatim.
    pub ptxas_log: String,
}

pub const PTX_ARCH: &str = "compute_80";

pub fn find() -> Option<Nvcc> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("NVCC") {
        candidates.push(p.into());
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(p) = std::env::var(var) {
            candidates.push(Path::new(&p).join("bin/nvcc"));
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.push("/usr/local/cuda/bin/nvcc".into());
    for c in candidates {
        if let Ok(out) = Command::new(&c).arg("--version").output() {
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                let version = text
                    .lines()
                    .find(|l| l.contains("release"))
                    .map(|l| l.trim().to_string())
                    .unwrap_or_else(|| "unknown".into());
                return Some(Nvcc { path: c, version });
            }
        }
    }
    None
}

/// `90a` -> `sm_90a`; rejects anything that is not digits plus an optional `a`/`f`.
pub fn parse_archs(spec: &str) -> Result<Vec<String>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s = s.trim_start_matches("sm_");
            let digits = s.trim_end_matches(['a', 'f']);
            if digits.len() >= 2 && digits.chars().all(|c| c.is_ascii_digit()) {
                Ok(format!("sm_{s}"))
            } else {
                Err(format!("KERNEL_ARCHS: '{s}' is not an arch like 90a, 89 or 80"))
            }
        })
        .collect()
}

pub fn compile(
    nvcc: &Nvcc,
    src: &Path,
    include: &Path,
    out_dir: &Path,
    stem: &str,
    archs: &[String],
) -> Result<Compiled, String> {
    let mut cubins = Vec::new();
    let mut ptxas_log = String::new();
    let common = ["-std=c++17", "-O3", "-lineinfo"];
    for arch in archs {
        let compute = arch.replace("sm_", "compute_");
        let out = out_dir.join(format!("{stem}.{arch}.cubin"));
        let output = Command::new(&nvcc.path)
            .args(common)
            .arg("-cubin")
            .arg(format!("-gencode=arch={compute},code={arch}"))
            .args(["-Xptxas", "-v", "-I"])
            .arg(include)
            .arg("-o")
            .arg(&out)
            .arg(src)
            .output()
            .map_err(|e| format!("running {}: {e}", nvcc.path.display()))?;
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(format!(
                "nvcc failed on {} for {arch}:\n{log}{}",
                src.display(),
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        ptxas_log.push_str(&log);
        cubins.push((arch.clone(), out));
    }
    let ptx = out_dir.join(format!("{stem}.{PTX_ARCH}.ptx"));
    let output = Command::new(&nvcc.path)
        .args(common)
        .arg("-ptx")
        .arg(format!("-arch={PTX_ARCH}"))
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(&ptx)
        .arg(src)
        .output()
        .map_err(|e| format!("running {}: {e}", nvcc.path.display()))?;
    if !output.status.success() {
        return Err(format!("nvcc -ptx failed on {}:\n{}", src.display(), String::from_utf8_lossy(&output.stderr)));
    }
    Ok(Compiled { cubins, ptx, ptxas_log })
}

/// Lines of a ptxas -v log that report spills (non-zero spill stores or loads), with the function
/// they belong to.
pub fn spills(log: &str) -> Vec<String> {
    let mut func = String::new();
    let mut found = Vec::new();
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            func = rest.split('\'').next().unwrap_or("").to_string();
        }
        if line.contains("spill stores") {
            let nonzero = line
                .split(',')
                .filter(|part| part.contains("spill"))
                .any(|part| part.split_whitespace().next().is_some_and(|n| n != "0"));
            if nonzero {
                found.push(format!("{func}: {}", line.trim()));
            }
        }
    }
    found
}
