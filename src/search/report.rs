//! The search's result files: `evaluated.csv` (every subnet scored), `pareto.csv` / `pareto.json` (the
//! non-dominated front, by ascending MFLOPs, or by ascending latency in a latency search) and `buckets.csv`
//! (the best subnet per FLOPs bucket, the original's final "front", spec 6.2; per latency bucket in a
//! latency search). Every file carries both MFLOPs and, in a latency search, `latency_ms`. Archs are written as one-line JSON (`Arch::to_json`) in a quoted
//! CSV field; [`read_evaluated`] reads `evaluated.csv` back (for `attnas predictor fit`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::evolution::{Evaluated, Origin};
use super::pareto::bucket_of;
use crate::error::{Error, Result};
use crate::space::Arch;
use crate::util::atomic::write_atomic;

/// One line of `evaluated.csv`.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    index: usize,
    iteration: usize,
    origin: Origin,
    mflops: f64,
    params: u64,
    top1: f64,
    top5: f64,
    predicted: Option<f64>,
    #[serde(default)]
    latency_ms: Option<f64>,
    arch: String,
}

/// One subnet of the front or of the bucket list, as written to `pareto.json`.
#[derive(Debug, Serialize)]
pub struct FrontEntry<'a> {
    pub arch: &'a Arch,
    pub mflops: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    pub params: u64,
    pub top1: f64,
    pub top5: f64,
    /// The bucket's label: MFLOPs, or ms in a latency search.
    pub bucket_mflops: f64,
    pub iteration: usize,
    pub origin: Origin,
}

fn csv_err(path: &Path) -> impl Fn(csv::Error) -> Error + '_ {
    move |e| Error::Other(format!("{}: {e}", path.display()))
}

fn write_rows<T: Serialize>(path: &Path, rows: impl IntoIterator<Item = T>) -> Result<()> {
    write_atomic(path, |w| {
        let mut out = csv::Writer::from_writer(w);
        for r in rows {
            out.serialize(r).map_err(csv_err(path))?;
        }
        out.flush().map_err(|e| Error::io(path, e))
    })
}

/// Writes every scored subnet, in evaluation order.
pub fn write_evaluated(path: &Path, evaluated: &[Evaluated]) -> Result<()> {
    write_rows(
        path,
        evaluated.iter().enumerate().map(|(index, e)| Row {
            index,
            iteration: e.iteration,
            origin: e.origin,
            mflops: e.mflops,
            params: e.params,
            top1: e.top1,
            top5: e.top5,
            predicted: e.predicted,
            latency_ms: e.latency_ms,
            arch: e.arch.to_json(),
        }),
    )
}

/// The (arch, top-1) pairs of an `evaluated.csv`. Errors name the file and line.
pub fn read_evaluated(path: &Path) -> Result<Vec<(Arch, f64)>> {
    let mut reader = csv::Reader::from_path(path).map_err(csv_err(path))?;
    let mut out = Vec::new();
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| Error::input(path, line, e.to_string()))?;
        let (arch, _) = Arch::parse(&row.arch).map_err(|e| Error::input(path, line, format!("arch: {e}")))?;
        out.push((arch, row.top1));
    }
    Ok(out)
}

fn entry(e: &Evaluated, bucket: f64) -> FrontEntry<'_> {
    FrontEntry {
        arch: &e.arch,
        mflops: e.mflops,
        latency_ms: e.latency_ms,
        params: e.params,
        top1: e.top1,
        top5: e.top5,
        bucket_mflops: bucket_of(e.point().mflops, bucket) as f64 * bucket,
        iteration: e.iteration,
        origin: e.origin,
    }
}

/// One CSV line of the front or bucket list.
#[derive(Serialize)]
struct FrontRow {
    mflops: f64,
    latency_ms: Option<f64>,
    params: u64,
    top1: f64,
    top5: f64,
    bucket_mflops: f64,
    iteration: usize,
    origin: Origin,
    arch: String,
}

fn front_rows<'a>(points: &'a [&'a Evaluated], bucket: f64) -> impl Iterator<Item = FrontRow> + 'a {
    points.iter().map(move |e| {
        let f = entry(e, bucket);
        FrontRow {
            mflops: f.mflops,
            latency_ms: f.latency_ms,
            params: f.params,
            top1: f.top1,
            top5: f.top5,
            bucket_mflops: f.bucket_mflops,
            iteration: f.iteration,
            origin: f.origin,
            arch: e.arch.to_json(),
        }
    })
}

/// Writes the front as `pareto.csv` and `pareto.json` in `dir`, and the per-bucket bests as `buckets.csv`.
pub fn write_front(dir: &Path, front: &[&Evaluated], buckets: &[&Evaluated], bucket: f64) -> Result<()> {
    write_rows(&dir.join("pareto.csv"), front_rows(front, bucket))?;
    write_rows(&dir.join("buckets.csv"), front_rows(buckets, bucket))?;
    // One subnet per line: readable, and still one JSON array.
    let lines: Vec<String> = front
        .iter()
        .map(|e| serde_json::to_string(&entry(e, bucket)).map_err(|e| Error::Other(e.to_string())))
        .collect::<Result<_>>()?;
    let json = if lines.is_empty() { "[]\n".to_string() } else { format!("[\n  {}\n]\n", lines.join(",\n  ")) };
    let path = dir.join("pareto.json");
    write_atomic(&path, |w| w.write_all(json.as_bytes()).map_err(|e| Error::io(&path, e)))
}
