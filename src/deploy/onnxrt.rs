//! The onnxruntime runtime: timing the exported (BN-folded) ONNX graphs in onnxruntime, as people
//! deploy CPU models, through the Python tools venv (`scripts/setup-python-tools.sh`). The binary
//! embeds `scripts/onnx_latency.py`, writes the graphs (whole subnets, or one layer each for a table,
//! synthetic weights) into a scratch folder and runs the script once per batch of graphs, reading one
//! JSON line per graph as it finishes (so the progress bar moves).
//!
//! The Python interpreter: `$ATTNAS_PYTHON`, else `.venv-tools/bin/python` in the current folder, else
//! the venv of the source tree the binary was built from.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::SeedableRng;

use super::latency::Repeats;
use super::latency_table::{space_fingerprint, LayerKey, MeasureIdentity, Timing};
use super::model::{synthetic_block, synthetic_head, synthetic_stem, synthetic_subnet};
use super::table_build::LayerTimer;
use crate::error::{Error, Result};
use crate::eval::onnx::{build_part, GraphPart};
use crate::space::{Arch, Space};

const SCRIPT: &str = include_str!("../../scripts/onnx_latency.py");

/// The Python interpreter of the tools venv (see the module docs).
pub fn python_tools() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ATTNAS_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let candidates = [
        PathBuf::from(".venv-tools/bin/python"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/python"),
    ];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::usage(
            "--runtime onnxruntime needs Python with numpy and onnxruntime: run scripts/setup-python-tools.sh (makes \
             .venv-tools/) or set ATTNAS_PYTHON to such an interpreter",
        )
    })
}

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Times ONNX graphs in onnxruntime.
pub struct OnnxTimer {
    space: Space,
    identity: MeasureIdentity,
    python: PathBuf,
    scratch: Scratch,
    batch: usize,
    threads: usize,
    layer_repeats: Repeats,
    subnet_repeats: Repeats,
    seed: u64,
}

impl OnnxTimer {
    /// `threads`: intra-op threads (0: onnxruntime's default, recorded as the core count).
    /// `layer_repeats` time each table key, `subnet_repeats` each whole subnet.
    pub fn new(
        space: &Space,
        batch: usize,
        threads: usize,
        (layer_repeats, subnet_repeats): (Repeats, Repeats),
        seed: u64,
    ) -> Result<Self> {
        let python = python_tools()?;
        let out = Command::new(&python)
            .args(["-c", "import onnxruntime, numpy; print(onnxruntime.__version__)"])
            .output()
            .map_err(|e| Error::usage(format!("{}: {e}", python.display())))?;
        if !out.status.success() {
            return Err(Error::usage(format!(
                "{} cannot import onnxruntime and numpy ({}); run scripts/setup-python-tools.sh",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dir = std::env::temp_dir().join(format!("attnas-onnxrt-{}-{seed}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let scratch = Scratch(dir);
        let script = scratch.0.join("onnx_latency.py");
        std::fs::write(&script, SCRIPT).map_err(|e| Error::io(&script, e))?;
        let identity = MeasureIdentity {
            device: format!("cpu: {}", super::latency::cpu_model()),
            runtime: format!("onnxruntime {version}"),
            precision: "fp32".into(),
            threads: if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads },
            batch,
            input_side: None,
            space: space.name.clone(),
            space_fingerprint: space_fingerprint(space),
        };
        Ok(OnnxTimer {
            space: space.clone(),
            identity,
            python,
            scratch,
            batch,
            threads,
            layer_repeats,
            subnet_repeats,
            seed,
        })
    }

    fn write(&self, name: &str, model: crate::eval::onnx::proto::ModelProto) -> Result<PathBuf> {
        let path = self.scratch.0.join(name);
        std::fs::write(&path, model.to_bytes()).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// The graph of one table key (synthetic weights).
    fn layer_graph(&self, i: usize, key: &LayerKey) -> Result<PathBuf> {
        let space = &self.space;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ i as u64);
        let model = match key {
            LayerKey::Resize { .. } => {
                return Err(Error::usage(
                    "--runtime onnxruntime times the exported graph, whose input is already at the subnet's \
                     resolution: drop --input-side",
                ))
            }
            LayerKey::Stem { r, c } => build_part(
                space,
                GraphPart::Stem { r: *r, c0: *c },
                &synthetic_stem(*c, space.stem.kernel, &mut rng),
                &[],
            )?,
            LayerKey::Block { .. } => {
                let blk = key.block(space).ok_or_else(|| Error::Other(format!("key '{key}' names no block")))?;
                build_part(space, GraphPart::Block(&blk), &synthetic_block(0, &blk, &mut rng), &[])?
            }
            LayerKey::Head { .. } => {
                let shape = key.head_shape(space).ok_or_else(|| Error::Other(format!("key '{key}' names no head")))?;
                build_part(space, GraphPart::Head(&shape), &synthetic_head(&shape, &mut rng), &[])?
            }
        };
        self.write(&format!("layer-{i}.onnx"), model)
    }

    /// Runs the script over `models`, calling `done` per result.
    fn run(&self, models: &[PathBuf], r: Repeats, done: &mut dyn FnMut(usize, &Timing)) -> Result<Vec<Timing>> {
        let list = self.scratch.0.join("models.txt");
        let text: String = models.iter().map(|p| format!("{}\n", p.display())).collect();
        std::fs::write(&list, text).map_err(|e| Error::io(&list, e))?;
        let mut child = Command::new(&self.python)
            .arg(self.scratch.0.join("onnx_latency.py"))
            .args(["--list", &list.display().to_string()])
            .args(["--batch", &self.batch.to_string(), "--threads", &self.threads.to_string()])
            .args(["--warmup", &r.warmup.to_string(), "--repeats", &r.repeats.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Other(format!("{}: {e}", self.python.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Other("onnx_latency.py: no stdout".into()))?;
        let mut out = Vec::with_capacity(models.len());
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| Error::Other(format!("onnx_latency.py: {e}")))?;
            let v: serde_json::Value = serde_json::from_str(&line)
                .map_err(|e| Error::Other(format!("onnx_latency.py printed '{line}': {e}")))?;
            if v.get("model").is_none() {
                continue;
            }
            let t: Timing = serde_json::from_value(v).map_err(|e| Error::Other(format!("onnx_latency.py: {e}")))?;
            done(out.len(), &t);
            out.push(t);
        }
        let status = child.wait_with_output().map_err(|e| Error::Other(format!("onnx_latency.py: {e}")))?;
        if !status.status.success() || out.len() != models.len() {
            return Err(Error::Other(format!(
                "onnx_latency.py failed after {} of {} models: {}",
                out.len(),
                models.len(),
                String::from_utf8_lossy(&status.stderr).trim()
            )));
        }
        Ok(out)
    }

    pub fn scratch_dir(&self) -> &Path {
        &self.scratch.0
    }
}

impl LayerTimer for OnnxTimer {
    fn identity(&self) -> &MeasureIdentity {
        &self.identity
    }

    fn layers(&mut self, keys: &[LayerKey], done: &mut dyn FnMut(usize, &Timing)) -> Result<Vec<Timing>> {
        let models = keys.iter().enumerate().map(|(i, k)| self.layer_graph(i, k)).collect::<Result<Vec<_>>>()?;
        self.run(&models, self.layer_repeats, done)
    }

    fn subnets(&mut self, archs: &[Arch], done: &mut dyn FnMut(usize, &Timing)) -> Result<Vec<Timing>> {
        let mut models = Vec::with_capacity(archs.len());
        for (i, arch) in archs.iter().enumerate() {
            let tensors = synthetic_subnet(&self.space, arch, self.seed ^ (i as u64) << 8)?;
            models.push(
                self.write(
                    &format!("subnet-{i}.onnx"),
                    build_part(&self.space, GraphPart::Whole(arch), &tensors, &[])?,
                )?,
            );
        }
        self.run(&models, self.subnet_repeats, done)
    }
}
