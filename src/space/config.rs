//! The search-space description: the YAML schema (`configs/attentivenas.yaml`, `configs/tiny.yaml`),
//! its validation, and the gene addressing every sampler and operator uses. A space file may also hold
//! the training recipe under `train:`; the space ignores that key (see `crate::train::config`).
//!
//! A space is a stem, a list of MBConv stages and a MobileNetV3-style head. Every stage offers choices
//! of width, depth, depthwise kernel and expand ratio (chosen once per stage, as in AttentiveNAS), and
//! fixes its stride and whether its blocks carry squeeze-and-excitation. An architecture is then the
//! fixed-length gene vector [resolution] + width[S+2] (stem, stages, head) + depth[S] + kernel[S] +
//! expand[S] (the AttentiveNAS predictor's order). Choice lists must be strictly ascending so that the
//! min and max subnets are the first and last choices and mutation can always pick a different value.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::space::arch::Arch;

/// The AttentiveNAS space, built in so that `attnas flops --arch a0` works from any directory.
pub const ATTENTIVENAS_YAML: &str = include_str!("../../configs/attentivenas.yaml");
/// The tiny space for CPU tests on 28x28 images.
pub const TINY_YAML: &str = include_str!("../../configs/tiny.yaml");

/// The stem: a dense k x k conv from the input channels, with BN and swish.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StemSpec {
    pub width: Vec<usize>,
    pub kernel: usize,
    pub stride: usize,
}

/// One stage of MBConv blocks. The stride applies to the stage's first block only.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    pub width: Vec<usize>,
    pub depth: Vec<usize>,
    pub kernel: Vec<usize>,
    pub expand: Vec<usize>,
    pub stride: usize,
    pub se: bool,
}

impl StageSpec {
    pub fn max_width(&self) -> usize {
        last(&self.width)
    }
    pub fn max_depth(&self) -> usize {
        last(&self.depth)
    }
    pub fn max_kernel(&self) -> usize {
        last(&self.kernel)
    }
    pub fn max_expand(&self) -> usize {
        last(&self.expand)
    }
    /// The expand 1x1 conv exists only when some choice expands (AttentiveNAS decides this from the
    /// stage's maximum ratio: mb1 with t = {1} has none).
    pub fn has_expand_conv(&self) -> bool {
        self.max_expand() > 1
    }
}

/// The head: 1x1 conv to `expand_ratio` x the last stage's width (BN, swish), global pool, 1x1 conv
/// to `width` (no BN, swish), linear classifier.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    pub width: Vec<usize>,
    pub expand_ratio: usize,
}

fn default_divisor() -> usize {
    8
}
fn default_se_reduction() -> usize {
    4
}
fn default_in_channels() -> usize {
    3
}

/// A validated search space (the YAML file's content). Build with [`Space::from_yaml`],
/// [`Space::load`] or [`Space::builtin`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Space {
    pub name: String,
    pub num_classes: usize,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Mid and SE widths are rounded with make_divisible(., channel_divisor).
    #[serde(default = "default_divisor")]
    pub channel_divisor: usize,
    /// se_mid = make_divisible(mid / se_reduction, channel_divisor).
    #[serde(default = "default_se_reduction")]
    pub se_reduction: usize,
    pub resolutions: Vec<usize>,
    pub stem: StemSpec,
    pub stages: Vec<StageSpec>,
    pub head: HeadSpec,
    /// Architectures known by name (for AttentiveNAS: a0..a6, AlphaNet's alphanet-a5 and a5-1).
    #[serde(default)]
    pub named_archs: BTreeMap<String, Arch>,
    /// The training recipe may share the file (`train:`, read by `crate::train::config`); the space
    /// skips it, so every command that takes a space accepts a training config too.
    #[serde(default, rename = "train")]
    _train: serde::de::IgnoredAny,
}

/// One slot of the gene vector; the index is the stage (width: 0 = stem, S + 1 = head).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gene {
    Resolution,
    Width(usize),
    Depth(usize),
    Kernel(usize),
    Expand(usize),
}

fn last(v: &[usize]) -> usize {
    v.last().copied().unwrap_or(0)
}

impl Space {
    /// Parse and validate a space from YAML text; `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Space> {
        let space: Space = serde_yaml_ng::from_str(text).map_err(|e| Error::input(origin, 0, e.to_string()))?;
        space.check().map_err(|msg| Error::input(origin, 0, msg))?;
        Ok(space)
    }

    /// Read a space from a YAML file.
    pub fn load(path: &Path) -> Result<Space> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Space::from_yaml(&text, &path.display().to_string())
    }

    /// `attentivenas` or `tiny` (the configs built into the binary).
    pub fn builtin(name: &str) -> Result<Space> {
        match name {
            "attentivenas" => Space::from_yaml(ATTENTIVENAS_YAML, "configs/attentivenas.yaml"),
            "tiny" => Space::from_yaml(TINY_YAML, "configs/tiny.yaml"),
            _ => Err(Error::usage(format!("unknown built-in space '{name}'; built-in spaces: attentivenas, tiny"))),
        }
    }

    /// A built-in name or a YAML file path.
    pub fn resolve(name_or_path: &str) -> Result<Space> {
        match name_or_path {
            "attentivenas" | "tiny" => Space::builtin(name_or_path),
            path if !Path::new(path).is_file() => Err(Error::usage(format!(
                "space config '{path}' is not a file; give a YAML file or a built-in space: attentivenas, tiny"
            ))),
            path => Space::load(Path::new(path)),
        }
    }

    pub fn num_stages(&self) -> usize {
        self.stages.len()
    }

    /// Width slots: stem, one per stage, head.
    pub fn num_widths(&self) -> usize {
        self.stages.len() + 2
    }

    /// Genes in predictor order: resolution, widths, depths, kernels, expands.
    pub fn genes(&self) -> Vec<Gene> {
        let s = self.num_stages();
        let mut g = Vec::with_capacity(1 + self.num_widths() + 3 * s);
        g.push(Gene::Resolution);
        g.extend((0..self.num_widths()).map(Gene::Width));
        g.extend((0..s).map(Gene::Depth));
        g.extend((0..s).map(Gene::Kernel));
        g.extend((0..s).map(Gene::Expand));
        g
    }

    /// The allowed values of a gene, ascending.
    pub fn choices(&self, gene: Gene) -> &[usize] {
        let s = self.num_stages();
        match gene {
            Gene::Resolution => &self.resolutions,
            Gene::Width(0) => &self.stem.width,
            Gene::Width(i) if i == s + 1 => &self.head.width,
            Gene::Width(i) => &self.stages[i - 1].width,
            Gene::Depth(i) => &self.stages[i].depth,
            Gene::Kernel(i) => &self.stages[i].kernel,
            Gene::Expand(i) => &self.stages[i].expand,
        }
    }

    /// A readable slot name for messages: `width[3] (mb3)`, `kernel[0] (mb1)`, `resolution`.
    pub fn gene_name(&self, gene: Gene) -> String {
        let s = self.num_stages();
        let stage = |i: usize| self.stages.get(i).map_or("?", |st| st.name.as_str());
        match gene {
            Gene::Resolution => "resolution".to_string(),
            Gene::Width(0) => "width[0] (stem)".to_string(),
            Gene::Width(i) if i == s + 1 => format!("width[{i}] (head)"),
            Gene::Width(i) => format!("width[{i}] ({})", stage(i - 1)),
            Gene::Depth(i) => format!("depth[{i}] ({})", stage(i)),
            Gene::Kernel(i) => format!("kernel[{i}] ({})", stage(i)),
            Gene::Expand(i) => format!("expand[{i}] ({})", stage(i)),
        }
    }

    /// Number of distinct subnets: the product of every gene's choice count. Depth does not hide any
    /// gene here because kernel and expand are per stage, so every combination is a distinct network.
    pub fn num_subnets(&self) -> f64 {
        self.genes().iter().map(|&g| self.choices(g).len() as f64).product()
    }

    /// The smallest subnet: the first choice of every gene.
    pub fn min_arch(&self) -> Arch {
        self.arch_from(|choices| choices[0])
    }

    /// The largest subnet: the last choice of every gene.
    pub fn max_arch(&self) -> Arch {
        self.arch_from(|choices| choices[choices.len() - 1])
    }

    /// An arch whose every gene is `pick(choices)`.
    pub fn arch_from(&self, mut pick: impl FnMut(&[usize]) -> usize) -> Arch {
        let s = self.num_stages();
        let mut arch = Arch::zeros(s);
        for gene in self.genes() {
            let v = pick(self.choices(gene));
            arch.set_gene(gene, v);
        }
        arch
    }

    /// Check an arch against the space: vector lengths, then every gene's value. The message names
    /// the slot, the value and the allowed choices.
    pub fn validate(&self, arch: &Arch) -> std::result::Result<(), String> {
        let s = self.num_stages();
        let lengths = [
            ("width", arch.width.len(), s + 2, "stem, stages, head"),
            ("depth", arch.depth.len(), s, "one per stage"),
            ("kernel", arch.kernel.len(), s, "one per stage"),
            ("expand", arch.expand.len(), s, "one per stage"),
        ];
        for (field, got, want, what) in lengths {
            if got != want {
                return Err(format!("{field} has {got} values; space '{}' wants {want} ({what})", self.name));
            }
        }
        for gene in self.genes() {
            let v = arch.gene(gene);
            let choices = self.choices(gene);
            if !choices.contains(&v) {
                let allowed: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
                return Err(format!(
                    "{} = {v} is not in space '{}'; allowed: {}",
                    self.gene_name(gene),
                    self.name,
                    allowed.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Look up a named arch: `min`, `max`, or one of `named_archs`. Errors list the known names.
    pub fn named_arch(&self, name: &str) -> Result<Arch> {
        match name {
            "min" => Ok(self.min_arch()),
            "max" => Ok(self.max_arch()),
            _ => self.named_archs.get(name).cloned().ok_or_else(|| {
                let mut known = vec!["min".to_string(), "max".to_string()];
                known.extend(self.named_archs.keys().cloned());
                Error::usage(format!(
                    "unknown arch name '{name}' in space '{}'; known names: {} (or give a YAML/JSON file or an inline {{...}} arch)",
                    self.name,
                    known.join(", ")
                ))
            }),
        }
    }

    /// Structural checks of a freshly parsed space; the message names the field at fault.
    fn check(&self) -> std::result::Result<(), String> {
        let ascending = |field: String, v: &[usize]| -> std::result::Result<(), String> {
            if v.is_empty() {
                return Err(format!("{field}: the choice list is empty"));
            }
            if v.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{field}: choices must be strictly ascending, got {v:?}"));
            }
            if v[0] == 0 {
                return Err(format!("{field}: choices must be positive, got {v:?}"));
            }
            Ok(())
        };
        if self.stages.is_empty() {
            return Err("stages: at least one stage is needed".into());
        }
        if self.num_classes == 0 || self.in_channels == 0 || self.channel_divisor == 0 || self.se_reduction == 0 {
            return Err("num_classes, in_channels, channel_divisor and se_reduction must be positive".into());
        }
        ascending("resolutions".into(), &self.resolutions)?;
        ascending("stem.width".into(), &self.stem.width)?;
        ascending("head.width".into(), &self.head.width)?;
        if self.head.expand_ratio == 0 {
            return Err("head.expand_ratio must be positive".into());
        }
        let odd_kernel = |field: String, k: usize| {
            if k % 2 == 1 {
                Ok(())
            } else {
                Err(format!("{field}: kernel sizes must be odd (same padding k/2), got {k}"))
            }
        };
        odd_kernel("stem.kernel".into(), self.stem.kernel)?;
        let stride_ok = |field: String, s: usize| {
            if s == 1 || s == 2 {
                Ok(())
            } else {
                Err(format!("{field}: stride must be 1 or 2, got {s}"))
            }
        };
        stride_ok("stem.stride".into(), self.stem.stride)?;
        for (i, st) in self.stages.iter().enumerate() {
            let f = |field: &str| format!("stages[{i}] ({}).{field}", st.name);
            ascending(f("width"), &st.width)?;
            ascending(f("depth"), &st.depth)?;
            ascending(f("kernel"), &st.kernel)?;
            ascending(f("expand"), &st.expand)?;
            for &k in &st.kernel {
                odd_kernel(f("kernel"), k)?;
            }
            stride_ok(f("stride"), st.stride)?;
        }
        for (name, arch) in &self.named_archs {
            self.validate(arch).map_err(|e| format!("named_archs.{name}: {e}"))?;
        }
        Ok(())
    }
}
