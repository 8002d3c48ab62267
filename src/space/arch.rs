//! An architecture (one subnet of a space) and its text forms.
//!
//! Our form is JSON or YAML with the keys `resolution`, `width`, `depth`, `kernel`, `expand`.
//! AttentiveNAS's own form (its configs and the lines of its `.map` FLOPs table) is a Python dict
//! literal with `kernel_size` and `expand_ratio` (and optionally `flops`, `model`); since Python prints
//! `{'k': v, ...}` with ": " and ", ", that literal is valid YAML flow syntax and one parser reads all
//! three. Parsing never panics: errors name the origin (file or argument) and the field.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::config::{Gene, Space};

/// One subnet: per-stage active values. `width` is [stem, stage 0..S, head]; the others have one
/// value per stage.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    pub resolution: usize,
    pub width: Vec<usize>,
    pub depth: Vec<usize>,
    #[serde(alias = "kernel_size")]
    pub kernel: Vec<usize>,
    #[serde(alias = "expand_ratio")]
    pub expand: Vec<usize>,
}

/// An arch as written in a file: ours, or AttentiveNAS's dict with its extra keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchRecord {
    resolution: usize,
    width: Vec<usize>,
    depth: Vec<usize>,
    #[serde(alias = "kernel_size")]
    kernel: Vec<usize>,
    #[serde(alias = "expand_ratio")]
    expand: Vec<usize>,
    /// MFLOPs as recorded by whoever wrote the record (the `.map` table); not trusted for validation.
    #[serde(default)]
    flops: Option<f64>,
    /// AttentiveNAS's eval config names the model (`attentive_nas_a0`); ignored.
    #[serde(default)]
    #[allow(dead_code)]
    model: Option<String>,
    /// Params (millions) as `attnas export` records them in `arch.json`; informational, ignored.
    #[serde(default)]
    #[allow(dead_code)]
    params: Option<f64>,
}

impl Arch {
    /// An arch of the right lengths for `num_stages` stages, all zeros (fill with `set_gene`).
    pub fn zeros(num_stages: usize) -> Arch {
        Arch {
            resolution: 0,
            width: vec![0; num_stages + 2],
            depth: vec![0; num_stages],
            kernel: vec![0; num_stages],
            expand: vec![0; num_stages],
        }
    }

    /// The value of one gene. The arch must have the space's lengths (validate first).
    pub fn gene(&self, gene: Gene) -> usize {
        match gene {
            Gene::Resolution => self.resolution,
            Gene::Width(i) => self.width[i],
            Gene::Depth(i) => self.depth[i],
            Gene::Kernel(i) => self.kernel[i],
            Gene::Expand(i) => self.expand[i],
        }
    }

    pub fn set_gene(&mut self, gene: Gene, value: usize) {
        match gene {
            Gene::Resolution => self.resolution = value,
            Gene::Width(i) => self.width[i] = value,
            Gene::Depth(i) => self.depth[i] = value,
            Gene::Kernel(i) => self.kernel[i] = value,
            Gene::Expand(i) => self.expand[i] = value,
        }
    }

    /// The flat gene vector in predictor order: [resolution] + width + depth + kernel + expand.
    pub fn to_vector(&self) -> Vec<usize> {
        let mut v = vec![self.resolution];
        v.extend(&self.width);
        v.extend(&self.depth);
        v.extend(&self.kernel);
        v.extend(&self.expand);
        v
    }

    /// Inverse of [`Arch::to_vector`] for a space; errors name the expected length.
    pub fn from_vector(space: &Space, v: &[usize]) -> std::result::Result<Arch, String> {
        let genes = space.genes();
        if v.len() != genes.len() {
            return Err(format!("gene vector has {} values; space '{}' wants {}", v.len(), space.name, genes.len()));
        }
        let mut arch = Arch::zeros(space.num_stages());
        for (g, &x) in genes.iter().zip(v) {
            arch.set_gene(*g, x);
        }
        Ok(arch)
    }

    /// Parse one arch from JSON, YAML or an AttentiveNAS dict literal. Returns the arch and the `flops`
    /// field if present. Does not check it against a space (see [`Space::validate`]).
    pub fn parse(text: &str) -> std::result::Result<(Arch, Option<f64>), String> {
        let r: ArchRecord = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let arch =
            Arch { resolution: r.resolution, width: r.width, depth: r.depth, kernel: r.kernel, expand: r.expand };
        Ok((arch, r.flops))
    }

    /// Our JSON form on one line.
    pub fn to_json(&self) -> String {
        let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        format!(
            "{{\"resolution\":{},\"width\":[{}],\"depth\":[{}],\"kernel\":[{}],\"expand\":[{}]}}",
            self.resolution,
            list(&self.width),
            list(&self.depth),
            list(&self.kernel),
            list(&self.expand)
        )
    }

    /// Our YAML form (block mapping, flow lists).
    pub fn to_yaml(&self) -> String {
        let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
        format!(
            "resolution: {}\nwidth: [{}]\ndepth: [{}]\nkernel: [{}]\nexpand: [{}]\n",
            self.resolution,
            list(&self.width),
            list(&self.depth),
            list(&self.kernel),
            list(&self.expand)
        )
    }

    /// AttentiveNAS's dict literal (as Python prints it), with `flops` first when given: the line
    /// format of its `.map` table, readable by its `eval`-based loader.
    pub fn to_attentivenas_dict(&self, flops: Option<f64>) -> String {
        let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ");
        let flops = flops.map(|f| format!("'flops': {f}, ")).unwrap_or_default();
        format!(
            "{{{flops}'resolution': {}, 'width': [{}], 'depth': [{}], 'kernel_size': [{}], 'expand_ratio': [{}]}}",
            self.resolution,
            list(&self.width),
            list(&self.depth),
            list(&self.kernel),
            list(&self.expand)
        )
    }
}

/// The `--arch` rule, the same for every command that takes archs (`eval`, `export`, `flops`, `grad`,
/// `search --seed-arch`, ...):
///
/// 1. A value that names an existing file is one arch file, whatever characters its name holds.
/// 2. Otherwise the value is a comma-separated list, split at the commas outside `{...}` and `[...]`, so
///    an inline arch (our JSON or AttentiveNAS's dict literal, both starting with `{`) keeps its own
///    commas. Each item is a name of the space (`a0`, `min`, ...), an arch file, or an inline arch.
///    Blank items (`a0,,a1`, a trailing comma) are ignored.
///
/// A flag given several times (`--arch a0 --arch a6`) concatenates its lists. Returns the items as
/// written (trimmed); unbalanced brackets are a usage error naming the item.
pub fn split_arch_list(value: &str) -> Result<Vec<String>> {
    split_arch_list_of("--arch", value)
}

/// [`split_arch_list`] for a value of the flag `flag` (named in errors).
pub fn split_arch_list_of(flag: &str, value: &str) -> Result<Vec<String>> {
    let whole = value.trim();
    if !whole.is_empty() && std::path::Path::new(whole).is_file() {
        return Ok(vec![whole.to_string()]);
    }
    let unbalanced = |item: &str| {
        Error::usage(format!(
            "{flag}: unbalanced brackets in '{}'; an inline arch is one {{...}} mapping, items are separated by \
             commas outside it",
            item.trim()
        ))
    };
    let (mut items, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for ch in value.chars() {
        match ch {
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth < 0 {
                    cur.push(ch);
                    return Err(unbalanced(&cur));
                }
            }
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if depth != 0 {
        return Err(unbalanced(&cur));
    }
    items.push(cur.trim().to_string());
    Ok(items.into_iter().filter(|s| !s.is_empty()).collect())
}

/// How an `--arch` item is written: a name, a file, or inline text.
fn resolve_item(space: &Space, flag: &str, spec: &str) -> Result<Arch> {
    let (arch, origin) = if spec.starts_with('{') {
        let (arch, _) = Arch::parse(spec).map_err(|e| Error::usage(format!("{flag} (inline): {e}")))?;
        (arch, format!("{flag} (inline)"))
    } else if std::path::Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec).map_err(|e| Error::io(spec, e))?;
        let (arch, _) = Arch::parse(&text).map_err(|e| Error::input(spec, 0, e))?;
        (arch, spec.to_string())
    } else if spec.starts_with('[') {
        return Err(Error::usage(format!(
            "{flag} '{spec}': an inline arch is a {{...}} mapping (several: separate them with commas)"
        )));
    } else if spec.contains(['/', '\\']) || [".json", ".yaml", ".yml"].iter().any(|e| spec.ends_with(e)) {
        return Err(Error::usage(format!("{flag} {spec}: no such file")));
    } else {
        return space.named_arch(spec);
    };
    space.validate(&arch).map_err(|e| Error::input(origin, 0, e))?;
    Ok(arch)
}

/// Resolves every item of one or more `--arch` values (see [`split_arch_list`]) against `space`, each
/// with its label: the name or file as written, `inline` for an inline arch (`inline-2`, ... when there
/// are several). A failing item's error names it (`--arch item 2 of 3 ('a9'): ...`).
pub fn resolve_arch_list<S: AsRef<str>>(space: &Space, values: &[S]) -> Result<Vec<(String, Arch)>> {
    resolve_arch_list_of(space, "--arch", values)
}

/// [`resolve_arch_list`] for the values of the flag `flag` (named in errors), e.g. `--seed-arch`.
pub fn resolve_arch_list_of<S: AsRef<str>>(space: &Space, flag: &str, values: &[S]) -> Result<Vec<(String, Arch)>> {
    let mut items = Vec::new();
    for v in values {
        items.extend(split_arch_list_of(flag, v.as_ref())?);
    }
    if items.is_empty() {
        return Err(Error::usage(format!(
            "{flag}: give at least one arch (a name such as a0, min, max, a file, or {{...}})"
        )));
    }
    let inline_total = items.iter().filter(|s| s.starts_with('{')).count();
    let (n, mut inline_seen) = (items.len(), 0);
    let mut out = Vec::with_capacity(n);
    for (i, item) in items.into_iter().enumerate() {
        let inline = item.starts_with('{');
        let label = match (inline, inline_total) {
            (true, 1) => "inline".to_string(),
            (true, _) => {
                inline_seen += 1;
                format!("inline-{inline_seen}")
            }
            (false, _) => item.clone(),
        };
        let arch = resolve_item(space, flag, &item).map_err(|e| match e {
            Error::Usage(m) if n > 1 => Error::usage(format!("{flag} item {} of {n} ('{label}'): {m}", i + 1)),
            other => other,
        })?;
        out.push((label, arch));
    }
    Ok(out)
}

/// Resolves an `--arch` value that must hold exactly one arch (a name, a file, or an inline arch; see
/// [`split_arch_list`]) and validates it. Every failure is a usage or input error (exit code 2).
pub fn resolve_arch(space: &Space, spec: &str) -> Result<Arch> {
    let mut archs = resolve_arch_list(space, &[spec])?;
    if archs.len() != 1 {
        let labels: Vec<&str> = archs.iter().map(|(l, _)| l.as_str()).collect();
        return Err(Error::usage(format!(
            "--arch: this command takes one arch; got {} ({}): run it once per arch",
            archs.len(),
            labels.join(", ")
        )));
    }
    Ok(archs.remove(0).1)
}
