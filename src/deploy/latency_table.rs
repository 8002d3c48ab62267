//! Latency lookup tables: the keys (one per distinct layer configuration a space allows), the file
//! format, the identity checks and the prediction (the sum of a subnet's entries, then the table's
//! calibration). Building and checking a table is `super::table_build`; `docs/deployment.md` documents
//! the format for users.
//!
//! Keys (their text form is what the file stores):
//! - `resize/{side}->{r}`: the model's bicubic resize, only when the input side differs from r;
//! - `stem/r{r}/c{c0}`;
//! - `block/{stage}/r{r}/c{c_in}-{c_out}/k{k}/e{t}/s{stride}/se{0|1}`: one MBConv block. Its input size
//!   follows from r and the stage; every block after a stage's first has c_in = c_out and stride 1, so
//!   one entry serves all of them, and a first block of a stride-1 stage whose c_in equals its c_out is
//!   the same computation as a later block and shares that key;
//! - `head/r{r}/c{c}/w{width}`: final expand, pool, feature mix, classifier.
//!
//! A subnet's prediction is `scale * sum + offset_ms` over the entries of its layers (a block key
//! counted once per block that has it); `scale` and `offset_ms` are fitted when the table is built, on
//! whole forwards of a few subnets (`calibration`), and are 1 and 0 in a table that was not calibrated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::{ActiveBlock, Arch, Gene, HeadShape, Space};
use crate::util::atomic::write_atomic;

/// The table file's `format`.
pub const TABLE_FORMAT: &str = "attnas-latency-table/1";

/// One distinct layer configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKey {
    Resize {
        side: usize,
        r: usize,
    },
    Stem {
        r: usize,
        c: usize,
    },
    Block {
        stage: usize,
        stage_name: String,
        r: usize,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        expand: usize,
        stride: usize,
        se: bool,
    },
    Head {
        r: usize,
        c_in: usize,
        width: usize,
    },
}

impl std::fmt::Display for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerKey::Resize { side, r } => write!(f, "resize/{side}->{r}"),
            LayerKey::Stem { r, c } => write!(f, "stem/r{r}/c{c}"),
            LayerKey::Block { stage_name, r, c_in, c_out, kernel, expand, stride, se, .. } => {
                write!(f, "block/{stage_name}/r{r}/c{c_in}-{c_out}/k{kernel}/e{expand}/s{stride}/se{}", u8::from(*se))
            }
            LayerKey::Head { r, c_in, width } => write!(f, "head/r{r}/c{c_in}/w{width}"),
        }
    }
}

impl LayerKey {
    /// The key of an active block of a subnet at resolution `r`.
    pub fn of_block(space: &Space, r: usize, blk: &ActiveBlock) -> LayerKey {
        LayerKey::Block {
            stage: blk.stage,
            stage_name: space.stages[blk.stage].name.clone(),
            r,
            c_in: blk.c_in,
            c_out: blk.c_out,
            kernel: blk.kernel,
            expand: blk.expand,
            stride: blk.stride,
            se: blk.se,
        }
    }

    /// The block this key describes (sizes from the space), for measuring it alone.
    pub fn block(&self, space: &Space) -> Option<ActiveBlock> {
        let LayerKey::Block { stage, r, c_in, c_out, kernel, expand, stride, .. } = *self else { return None };
        let st = space.stages.get(stage)?;
        let mut size_in = space.stem_size(r);
        for s in &space.stages[..stage] {
            size_in = crate::space::blocks::strided_size(size_in, s.stride);
        }
        // A stride-1 block of a stride-2 stage is a later block: its input is the stage's output size.
        if stride != st.stride {
            size_in = crate::space::blocks::strided_size(size_in, st.stride);
        }
        let mid = space.mid_channels(c_in, expand);
        Some(ActiveBlock {
            stage,
            index: usize::from(stride == 1 && c_in == c_out),
            global: 0,
            c_in,
            c_out,
            stride,
            kernel,
            expand,
            mid,
            has_expand_conv: st.has_expand_conv(),
            se: st.se,
            se_mid: if st.se { space.se_mid_channels(mid) } else { 0 },
            identity_shortcut: c_in == c_out && stride == 1,
            shortcut_conv: c_in != c_out,
            size_in,
            size_out: crate::space::blocks::strided_size(size_in, stride),
        })
    }

    /// The head this key describes (its feature size from the resolution), for measuring it alone.
    pub fn head_shape(&self, space: &Space) -> Option<HeadShape> {
        let LayerKey::Head { r, c_in, width } = *self else { return None };
        let size = space.head_shape(&Arch { resolution: r, ..space.min_arch() }).size;
        Some(HeadShape { c_in, expand: c_in * space.head.expand_ratio, width, size, num_classes: space.num_classes })
    }

    /// Multiply-accumulates of the layer (the FLOPs convention of `space::flops`, resize excluded): the
    /// build uses it to estimate its running time.
    pub fn macs(&self, space: &Space) -> u64 {
        match self {
            LayerKey::Resize { .. } => 0,
            LayerKey::Stem { r, c } => {
                let s = space.stem_size(*r);
                (space.in_channels * c * space.stem.kernel.pow(2) * s * s) as u64
            }
            LayerKey::Block { .. } => {
                let Some(b) = self.block(space) else { return 0 };
                let (pi, po) = (b.size_in * b.size_in, b.size_out * b.size_out);
                let expand = if b.has_expand_conv { b.c_in * b.mid * pi } else { 0 };
                let se = if b.se { 2 * b.mid * b.se_mid } else { 0 };
                let sc = if b.shortcut_conv { b.c_in * b.c_out * po } else { 0 };
                (expand + b.mid * b.kernel * b.kernel * po + se + b.mid * b.c_out * po + sc) as u64
            }
            LayerKey::Head { .. } => {
                let Some(h) = self.head_shape(space) else { return 0 };
                (h.c_in * h.expand * h.size * h.size + h.expand * h.width + h.width * h.num_classes) as u64
            }
        }
    }
}

/// The layers of `arch` in network order, with their keys (`input_side`: the side images arrive at;
/// `None` or the resolution itself: no resize layer).
pub fn subnet_layers(space: &Space, arch: &Arch, input_side: Option<usize>) -> Vec<LayerKey> {
    let r = arch.resolution;
    let mut out = Vec::new();
    if let Some(side) = input_side.filter(|&s| s != r) {
        out.push(LayerKey::Resize { side, r });
    }
    out.push(LayerKey::Stem { r, c: arch.width[0] });
    out.extend(space.active_blocks(arch).map(|b| LayerKey::of_block(space, r, &b)));
    let s = space.num_stages();
    out.push(LayerKey::Head { r, c_in: arch.width[s], width: arch.width[s + 1] });
    out
}

/// Every distinct layer configuration of `space`'s subnets, sorted (see the module docs).
pub fn enumerate_keys(space: &Space, input_side: Option<usize>) -> Vec<LayerKey> {
    let mut keys = BTreeSet::new();
    let s = space.num_stages();
    for &r in &space.resolutions {
        if let Some(side) = input_side.filter(|&side| side != r) {
            keys.insert(LayerKey::Resize { side, r });
        }
        for &c in &space.stem.width {
            keys.insert(LayerKey::Stem { r, c });
        }
        for (i, st) in space.stages.iter().enumerate() {
            let prev: &[usize] = if i == 0 { &space.stem.width } else { &space.stages[i - 1].width };
            let block = |c_in: usize, c_out: usize, kernel: usize, expand: usize, stride: usize| LayerKey::Block {
                stage: i,
                stage_name: st.name.clone(),
                r,
                c_in,
                c_out,
                kernel,
                expand,
                stride,
                se: st.se,
            };
            for &k in &st.kernel {
                for &t in &st.expand {
                    for &c_out in &st.width {
                        for &c_in in prev {
                            keys.insert(block(c_in, c_out, k, t, st.stride));
                        }
                        if st.max_depth() >= 2 {
                            keys.insert(block(c_out, c_out, k, t, 1));
                        }
                    }
                }
            }
        }
        for &c_in in &space.stages[s - 1].width {
            for &width in &space.head.width {
                keys.insert(LayerKey::Head { r, c_in, width });
            }
        }
    }
    keys.into_iter().collect()
}

/// Median and spread of repeated timings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
}

impl Timing {
    /// Median, 10th and 90th percentiles (linear interpolation) of `samples` (ms); `None` when empty.
    pub fn of(samples: &[f64]) -> Option<Timing> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let x = p * (v.len() - 1) as f64;
            let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
        };
        Some(Timing { median_ms: q(0.5), p10_ms: q(0.1), p90_ms: q(0.9) })
    }
}

/// What a table (or a measurement) was taken on; tables are comparable only when these agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasureIdentity {
    /// `cpu: <model name>` or `cuda:N (<name>, sm_XY)`.
    pub device: String,
    /// `attnas` (this engine) or `onnxruntime <version>`.
    pub runtime: String,
    pub precision: String,
    /// CPU threads (intra-op threads for onnxruntime).
    pub threads: usize,
    pub batch: usize,
    /// The side images arrive at (`None`: at the subnet's resolution, no resize).
    pub input_side: Option<usize>,
    pub space: String,
    /// SHA-256 of everything in the space that shapes a layer (see [`space_fingerprint`]).
    pub space_fingerprint: String,
}

impl MeasureIdentity {
    /// The fields that differ, `name: 'table' in the table, 'here' here`.
    pub fn differences(&self, here: &MeasureIdentity) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: '{a}' in the table, '{b}' here"));
            }
        };
        cmp("device", self.device.clone(), here.device.clone());
        cmp("runtime", self.runtime.clone(), here.runtime.clone());
        cmp("precision", self.precision.clone(), here.precision.clone());
        cmp("threads", self.threads.to_string(), here.threads.to_string());
        cmp("batch", self.batch.to_string(), here.batch.to_string());
        let side = |s: Option<usize>| s.map_or("the resolution".to_string(), |s| s.to_string());
        cmp("input side", side(self.input_side), side(here.input_side));
        let sp = |i: &MeasureIdentity| {
            format!("{} ({})", i.space, &i.space_fingerprint[..12.min(i.space_fingerprint.len())])
        };
        cmp("space", sp(self), sp(here));
        out
    }
}

/// SHA-256 of the parts of a space that shape a layer (resolutions, stem, stages, head, classes,
/// channel rules); named archs do not count.
pub fn space_fingerprint(space: &Space) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{}",
        space.resolutions,
        space.stem,
        space.stages,
        space.head,
        space.num_classes,
        space.in_channels,
        space.channel_divisor,
        space.se_reduction
    );
    crate::search::state::text_digest(&text)
}

/// `prediction = scale * sum + offset_ms`, fitted on whole forwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub scale: f64,
    pub offset_ms: f64,
    /// How it was obtained (`none`, or the fit and its subnets).
    pub method: String,
    /// (sum of entries, measured whole forward) per calibration subnet, ms.
    #[serde(default)]
    pub points: Vec<(f64, f64)>,
}

impl Calibration {
    pub fn none() -> Calibration {
        Calibration { scale: 1.0, offset_ms: 0.0, method: "none".into(), points: Vec::new() }
    }

    /// Least squares `measured = scale * sum + offset` over `points`; with fewer than 3 points, or when
    /// the fit would give a negative offset or scale, the median ratio alone (offset 0).
    pub fn fit(points: Vec<(f64, f64)>) -> Calibration {
        let n = points.len() as f64;
        let ratio = || {
            let ratios: Vec<f64> = points.iter().filter(|p| p.0 > 0.0).map(|p| p.1 / p.0).collect();
            Timing::of(&ratios).map_or(1.0, |t| t.median_ms)
        };
        if points.len() >= 3 {
            let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
            let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
            let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
            if sxx > 0.0 {
                let scale = sxy / sxx;
                let offset = my - scale * mx;
                if scale > 0.0 && offset >= 0.0 {
                    let method = format!("least squares over {} whole forwards", points.len());
                    return Calibration { scale, offset_ms: offset, method, points };
                }
            }
        }
        let method = format!("median ratio over {} whole forwards", points.len());
        Calibration { scale: ratio(), offset_ms: 0.0, method, points }
    }

    pub fn apply(&self, sum_ms: f64) -> f64 {
        self.scale * sum_ms + self.offset_ms
    }
}

/// How the entries were measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub warmup: usize,
    pub repeats: usize,
    /// Rounds the timed runs were split into, visiting every key (then every calibration subnet) in
    /// turn; 1 in tables written before rounds existed.
    #[serde(default = "one")]
    pub rounds: usize,
    /// Runs of each calibration forward (0 in tables written before they were recorded).
    #[serde(default)]
    pub calib_warmup: usize,
    #[serde(default)]
    pub calib_repeats: usize,
    pub seconds: f64,
    /// Unix time of the build.
    pub created: u64,
    pub attnas_version: String,
}

fn one() -> usize {
    1
}

/// A latency table (the JSON file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    pub format: String,
    pub identity: MeasureIdentity,
    /// Each gene's choices the table covers (`Space::gene_name` -> values), to name a slot outside it.
    pub choices: BTreeMap<String, Vec<usize>>,
    pub build: BuildInfo,
    pub calibration: Calibration,
    pub entries: BTreeMap<String, Timing>,
}

/// A subnet's predicted latency.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub sum_ms: f64,
    /// After the calibration.
    pub ms: f64,
    pub layers: Vec<(String, f64)>,
}

/// Every gene's choices, by slot name.
pub fn gene_choices(space: &Space) -> BTreeMap<String, Vec<usize>> {
    space.genes().into_iter().map(|g| (space.gene_name(g), space.choices(g).to_vec())).collect()
}

/// The genes that shape a layer, for messages.
fn layer_genes(space: &Space, layer: &LayerKey) -> Vec<Gene> {
    let s = space.num_stages();
    match layer {
        LayerKey::Resize { .. } => vec![Gene::Resolution],
        LayerKey::Stem { .. } => vec![Gene::Resolution, Gene::Width(0)],
        LayerKey::Block { stage, .. } => {
            vec![
                Gene::Resolution,
                Gene::Width(*stage),
                Gene::Width(stage + 1),
                Gene::Kernel(*stage),
                Gene::Expand(*stage),
            ]
        }
        LayerKey::Head { .. } => vec![Gene::Resolution, Gene::Width(s), Gene::Width(s + 1)],
    }
}

impl LatencyTable {
    pub fn read(path: &Path) -> Result<LatencyTable> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let t: LatencyTable =
            serde_json::from_str(&text).map_err(|e| Error::input(path, e.line(), format!("latency table: {e}")))?;
        if t.format != TABLE_FORMAT {
            return Err(Error::input(path, 0, format!("format '{}', expected '{TABLE_FORMAT}'", t.format)));
        }
        if let Some((k, v)) = t.entries.iter().find(|(_, v)| !(v.median_ms.is_finite() && v.median_ms >= 0.0)) {
            return Err(Error::input(path, 0, format!("entry '{k}': median_ms {} is not a time", v.median_ms)));
        }
        Ok(t)
    }

    /// Writes the table atomically, one entry per line.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Other(e.to_string()))? + "\n";
        write_atomic(path, |w| w.write_all(text.as_bytes()).map_err(|e| Error::io(path, e)))
    }

    /// Errors (usage, exit 2) when the table was measured under another identity than `here`, naming
    /// both sides of each difference; with `allow_mismatch` the differences are returned instead, for
    /// the caller to record in its output.
    pub fn check_identity(&self, origin: &Path, here: &MeasureIdentity, allow_mismatch: bool) -> Result<Vec<String>> {
        let diff = self.identity.differences(here);
        if diff.is_empty() || allow_mismatch {
            return Ok(diff);
        }
        Err(Error::usage(format!(
            "latency table {} was measured elsewhere:\n  {}\nbuild a table here (attnas latency-table), or pass \
             --allow-table-mismatch to use it anyway (the output records the mismatch)",
            origin.display(),
            diff.join("\n  ")
        )))
    }

    /// The predicted latency of `arch`: errors (usage) name the slot outside the table.
    pub fn predict(&self, space: &Space, arch: &Arch) -> Result<Prediction> {
        space.validate(arch).map_err(Error::usage)?;
        for g in space.genes() {
            let name = space.gene_name(g);
            if let Some(choices) = self.choices.get(&name) {
                if !choices.contains(&arch.gene(g)) {
                    let list: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
                    return Err(Error::usage(format!(
                        "{name} = {} is outside the latency table's space '{}' (measured: {})",
                        arch.gene(g),
                        self.identity.space,
                        list.join(", ")
                    )));
                }
            }
        }
        let mut layers = Vec::new();
        let mut sum = 0.0;
        for layer in subnet_layers(space, arch, self.identity.input_side) {
            let key = layer.to_string();
            let Some(t) = self.entries.get(&key) else {
                let genes: Vec<String> = layer_genes(space, &layer)
                    .iter()
                    .map(|&g| format!("{} = {}", space.gene_name(g), arch.gene(g)))
                    .collect();
                return Err(Error::usage(format!(
                    "the latency table has no entry '{key}' for this subnet's {}: {} (an incomplete table, or one \
                     of another space)",
                    match layer {
                        LayerKey::Block { ref stage_name, .. } => format!("block in stage {stage_name}"),
                        LayerKey::Resize { .. } => "input resize".into(),
                        LayerKey::Stem { .. } => "stem".into(),
                        LayerKey::Head { .. } => "head".into(),
                    },
                    genes.join(", ")
                )));
            };
            sum += t.median_ms;
            layers.push((key, t.median_ms));
        }
        Ok(Prediction { sum_ms: sum, ms: self.calibration.apply(sum), layers })
    }
}
