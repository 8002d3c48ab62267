//! The FLOPs lookup table (AttentiveNAS's `.map` format): one arch per line as a Python dict literal
//! `{'flops': MFLOPs, 'resolution': r, 'width': [...], 'depth': [...], 'kernel_size': [...],
//! 'expand_ratio': [...]}`. Blank lines and lines starting with `#` are skipped. Reading reports the
//! first bad line as `file:line: field: problem` (exit code 2). The `flops` recorded in the file are
//! used as given (AttentiveNAS bins by them); [`generate`] writes our analytic MFLOPs.
//!
//! How our tables are drawn (AttentiveNAS never published its generator, issue #4):
//! - the min and max subnets come first, so the sampler knows both ends of the FLOPs range;
//! - `uniform`: then every arch is uniform per gene. Within any FLOPs bin the entries are then uniform
//!   draws conditioned on that bin, which is what the per-bin conditionals estimate (the paper's
//!   pi(alpha | tau) is uniform over the archs in bin tau). The empirical prior is the FLOPs
//!   distribution of uniform sampling, which almost never reaches the 200-300 MFLOPs bins;
//! - `balanced`: the same uniform draws, but a bin stops accepting once it holds n / (number of bins
//!   between min and max) entries, so rare bins are not crowded out. Conditionals within a bin are
//!   unchanged (still uniform draws conditioned on the bin); the empirical prior becomes nearly flat
//!   over the bins uniform sampling can reach. After 100 n draws any shortfall is filled uncapped.

use std::io::Write;
use std::path::Path;

use rand::Rng;

use crate::error::{Error, Result};
use crate::space::arch::Arch;
use crate::space::attentive::flops_bin;
use crate::space::config::Space;
use crate::space::{flops, sampler};

/// One table line: an arch and its MFLOPs.
#[derive(Clone, Debug, PartialEq)]
pub struct TableEntry {
    pub arch: Arch,
    pub mflops: f64,
}

/// How [`generate`] draws archs (see the file header). Written `uniform` or `balanced` in configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableMethod {
    Uniform,
    Balanced,
}

impl std::str::FromStr for TableMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uniform" => Ok(TableMethod::Uniform),
            "balanced" => Ok(TableMethod::Balanced),
            _ => Err(format!("unknown table method '{s}'; use uniform or balanced")),
        }
    }
}

/// Parse table text; `origin` names the file in errors. Every arch is validated against the space.
pub fn parse_table(space: &Space, text: &str, origin: &str) -> Result<Vec<TableEntry>> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |msg: String| Error::input(origin, i + 1, msg);
        // The parser sees one line, so its "at line 1 column N" is only the column.
        let (arch, f) = Arch::parse(line).map_err(|e| err(e.replace(" at line 1 column ", " at column ")))?;
        let mflops = f.ok_or_else(|| err("flops: missing (every table line records its MFLOPs)".into()))?;
        if !mflops.is_finite() || mflops < 0.0 {
            return Err(err(format!("flops: {mflops} is not a non-negative number")));
        }
        space.validate(&arch).map_err(err)?;
        entries.push(TableEntry { arch, mflops });
    }
    if entries.is_empty() {
        return Err(Error::input(origin, 0, "the table holds no entries"));
    }
    Ok(entries)
}

/// Read a `.map` table file.
pub fn read_table(space: &Space, path: &Path) -> Result<Vec<TableEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_table(space, &text, &path.display().to_string())
}

/// One table line (no newline), AttentiveNAS's dict form.
pub fn format_line(entry: &TableEntry) -> String {
    entry.arch.to_attentivenas_dict(Some(entry.mflops))
}

/// Write a `.map` table file.
pub fn write_table(path: &Path, entries: &[TableEntry]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    for e in entries {
        writeln!(w, "{}", format_line(e)).map_err(|e| Error::io(path, e))?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

/// Draw a table of `n` entries (n >= 2: min and max come first); `step` is the bin width used by
/// the balanced method's cap.
pub fn generate(space: &Space, n: usize, method: TableMethod, step: f64, rng: &mut impl Rng) -> Vec<TableEntry> {
    let entry = |arch: Arch| {
        let mflops = flops::mflops(space, &arch);
        TableEntry { arch, mflops }
    };
    let mut out = vec![entry(space.min_arch()), entry(space.max_arch())];
    out.truncate(n);
    let need = n.saturating_sub(out.len());
    match method {
        TableMethod::Uniform => out.extend((0..need).map(|_| entry(sampler::uniform(space, rng)))),
        TableMethod::Balanced => {
            let lo = flops_bin(out[0].mflops, step);
            let hi = out.get(1).map_or(lo, |e| flops_bin(e.mflops, step));
            let bins = (hi - lo + 1).max(1) as usize;
            let cap = n.div_ceil(bins);
            let mut counts = std::collections::HashMap::<i64, usize>::new();
            let mut draws = 0usize;
            while out.len() < n && draws < 100 * n {
                draws += 1;
                let e = entry(sampler::uniform(space, rng));
                let c = counts.entry(flops_bin(e.mflops, step)).or_insert(0);
                if *c < cap {
                    *c += 1;
                    out.push(e);
                }
            }
            while out.len() < n {
                out.push(entry(sampler::uniform(space, rng)));
            }
        }
    }
    out
}
