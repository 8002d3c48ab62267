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

/// Resolve a command-line `--arch` value against a space: a name (`a0`, `min`, ...), a file holding
/// one arch (JSON, YAML or dict literal), or an inline arch starting with `{`. The result is
/// validated; every failure is a usage or input error (exit code 2) naming what is wrong.
pub fn resolve_arch(space: &Space, spec: &str) -> Result<Arch> {
    let spec_trim = spec.trim();
    let (arch, origin) = if spec_trim.starts_with('{') {
        let (arch, _) = Arch::parse(spec_trim).map_err(|e| Error::usage(format!("--arch (inline): {e}")))?;
        (arch, "--arch (inline)".to_string())
    } else if std::path::Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec).map_err(|e| Error::io(spec, e))?;
        let (arch, _) = Arch::parse(&text).map_err(|e| Error::input(spec, 0, e))?;
        (arch, spec.to_string())
    } else {
        return space.named_arch(spec);
    };
    space.validate(&arch).map_err(|e| Error::input(origin, 0, e))?;
    Ok(arch)
}
