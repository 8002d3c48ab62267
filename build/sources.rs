// Kernel sources for build.rs: flatten local includes (the embedded NVRTC source, since cudarc cannot
// pass in-memory headers) and parse every `extern "C" __global__` signature (the generated kernel
// table and the emulator glue are both derived from it, so adding a kernel needs no hand-written glue).

use crate::entry_points::{parse_entry_templates, wrappers_source, EntryTemplate};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

pub struct KernelSource {
    /// File stem: `activation` for kernels/activation.cu.
    pub module: String,
    pub path: PathBuf,
    /// The source with local `#include "x.cuh"` inlined (system includes kept), followed by the
    /// generated entry points (`wrappers`).
    pub flat: String,
    /// The `ENTRY_POINTS` templates of the file (build/entry_points.rs).
    pub templates: Vec<EntryTemplate>,
    /// Their generated `extern "C" __global__` wrappers, appended to the module for every compiler.
    pub wrappers: String,
    /// Every file read (for rerun-if-changed).
    pub deps: Vec<PathBuf>,
    pub kernels: Vec<KernelSig>,
}

pub struct KernelSig {
    pub name: String,
    pub params: Vec<Param>,
}

#[allow(dead_code)] // c_type and name feed the emulator glue (build/emu.rs)
pub struct Param {
    /// The C++ type as written, without the parameter name (`const float* __restrict__`).
    pub c_type: String,
    pub name: String,
    /// The Rust-side argument kind (variant name of `KernelArgKind`).
    pub kind: &'static str,
}

pub fn load_all(dir: &Path) -> Result<Vec<KernelSource>, String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files.iter().map(|p| load(dir, p)).collect()
}

fn load(dir: &Path, path: &Path) -> Result<KernelSource, String> {
    let mut seen = HashSet::new();
    let mut deps = Vec::new();
    let mut flat = flatten(dir, path, &mut seen, &mut deps)?;
    let raw = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let code = strip_comments(&raw);
    let templates = parse_entry_templates(&code).map_err(|e| format!("{}: {e}", path.display()))?;
    let wrappers = wrappers_source(&templates);
    flat.push_str(&wrappers);
    let mut kernels = parse_signatures(&code).map_err(|e| format!("{}: {e}", path.display()))?;
    kernels
        .extend(parse_signatures(&wrappers).map_err(|e| format!("{}: generated entry points: {e}", path.display()))?);
    let module = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    Ok(KernelSource { module, path: path.to_path_buf(), flat, templates, wrappers, deps, kernels })
}

fn flatten(dir: &Path, path: &Path, seen: &mut HashSet<PathBuf>, deps: &mut Vec<PathBuf>) -> Result<String, String> {
    let canon = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    if !seen.insert(canon.clone()) {
        return Ok(String::new()); // every local header is include-once (#pragma once)
    }
    deps.push(path.to_path_buf());
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t == "#pragma once" {
            continue;
        }
        if let Some(rest) = t.strip_prefix("#include \"") {
            let name = rest.trim_end_matches('"');
            let inc = path.parent().unwrap_or(dir).join(name);
            out.push_str(&format!("// ---- begin {name}\n"));
            out.push_str(&flatten(dir, &inc, seen, deps)?);
            out.push_str(&format!("// ---- end {name}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Finds `extern "C" __global__ void [__launch_bounds__(...)] name(params)`.
pub fn parse_signatures(src: &str) -> Result<Vec<KernelSig>, String> {
    let mut sigs = Vec::new();
    let mut rest = src;
    while let Some(pos) = rest.find("extern \"C\"") {
        rest = &rest[pos + "extern \"C\"".len()..];
        let head = rest.trim_start();
        if !head.starts_with("__global__") {
            continue;
        }
        let open = head.find('(').ok_or("extern \"C\" __global__ without a parameter list")?;
        let mut before = head[..open].trim().to_string();
        let mut after_open = &head[open + 1..];
        if before.ends_with("__launch_bounds__") {
            // skip the launch-bounds arguments, then find the real parameter list
            let close = after_open.find(')').ok_or("unclosed __launch_bounds__")?;
            let tail = &after_open[close + 1..];
            let open2 = tail.find('(').ok_or("kernel without a parameter list")?;
            before = format!("{} {}", before, tail[..open2].trim());
            after_open = &tail[open2 + 1..];
        }
        let name = before.split_whitespace().last().ok_or("kernel without a name")?.to_string();
        let close = after_open.find(')').ok_or_else(|| format!("{name}: unclosed parameter list"))?;
        let params_src = &after_open[..close];
        let mut params = Vec::new();
        for p in params_src.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "void") {
            let split = p
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .ok_or_else(|| format!("{name}: parameter '{p}' has no type"))?;
            let c_type = p[..=split].trim().to_string();
            let pname = p[split + 1..].to_string();
            let kind = arg_kind(&c_type).ok_or_else(|| {
                format!("{name}: parameter '{p}': type '{c_type}' is not a kernel argument kind (pointers, int, unsigned, float, long long, size_t)")
            })?;
            params.push(Param { c_type, name: pname, kind });
        }
        sigs.push(KernelSig { name, params });
        rest = &after_open[close..];
    }
    Ok(sigs)
}

fn arg_kind(c_type: &str) -> Option<&'static str> {
    if c_type.contains('*') {
        return Some("Ptr");
    }
    let t: Vec<&str> = c_type.split_whitespace().filter(|w| *w != "const").collect();
    match t.join(" ").as_str() {
        "int" | "int32_t" => Some("I32"),
        "unsigned" | "unsigned int" | "uint32_t" => Some("U32"),
        "float" => Some("F32"),
        "long long" | "int64_t" => Some("I64"),
        "unsigned long long" | "uint64_t" | "size_t" => Some("U64"),
        _ => None,
    }
}

/// `swish_fwd_f32` -> `SwishFwdF32`.
pub fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}
