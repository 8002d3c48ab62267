//! `attnas report`: one self-contained HTML page about a training run (and optionally its search) that
//! can be opened anywhere or sent to a colleague: inline SVG charts drawn with `plotters`, an inline
//! stylesheet, no scripts and no network (the page's Content-Security-Policy forbids both).
//!
//! Contents: the run's status (finished, or how far along; resumes; an unfinished last log line), the
//! training curves (loss per sandwich role, accuracy per epoch, LR, throughput, data-loader wait), the
//! FLOPs targets attentive sampling drew against its prior, how often the attentive choice differed from
//! the first candidate, the search's Pareto front, and the effective config with its fingerprint.
//!
//! - `history`: the metrics log (and the newest checkpoint's state) read into compact series;
//! - `sampling`: the prior rebuilt from the run's config, drawn targets, attentive choices;
//! - `search`: a search folder's state file and its front;
//! - `charts`: the SVG charts; `html`: page building blocks; `sections`: the page's sections.
//!
//! It reads files only, so it works on a run in progress (the log being appended, its last line maybe
//! partial) and on a search between iterations.

pub mod charts;
pub mod history;
pub mod html;
pub mod sampling;
pub mod search;
pub mod sections;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::util::atomic::write_atomic;
use crate::util::clock::unix_now;
pub use history::RunHistory;
pub use search::SearchHistory;

/// What the report covers.
#[derive(Clone, Debug)]
pub struct ReportInputs {
    /// A training run folder (`attnas train --out`).
    pub run: PathBuf,
    /// A search folder (`attnas search --out`).
    pub search: Option<PathBuf>,
}

/// What was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReportSummary {
    pub out: PathBuf,
    pub bytes: usize,
    pub steps: usize,
    pub last_step: u64,
    pub epochs: usize,
    pub resumes: usize,
    pub partial_tail_bytes: usize,
    pub searched: Option<usize>,
}

/// The page's HTML, with the loaded run (and search) it shows.
pub fn render(inputs: &ReportInputs) -> Result<(String, RunHistory, Option<SearchHistory>)> {
    let run = RunHistory::load(&inputs.run)?;
    let search = inputs.search.as_deref().map(SearchHistory::load).transpose()?;
    let mut body = html::section("summary", "Run", &sections::summary(&run, unix_now()));
    body.push_str(&html::section("training", "Training curves", &sections::training(&run)?));
    body.push_str(&html::section("sampling", "Attentive sampling", &sections::sampling(&run)?));
    match &search {
        Some(s) => body.push_str(&html::section("search", "Search: Pareto front", &sections::search(s)?)),
        None => body.push_str(&html::section(
            "search",
            "Search",
            "<p>No search in this report; add <code>--search DIR</code> (an <code>attnas search --out</code> folder).</p>",
        )),
    }
    body.push_str(&html::section("config", "Config", &sections::config(&run)));
    let name = inputs.run.file_name().map_or_else(|| inputs.run.display().to_string(), |n| n.to_string_lossy().into());
    let subtitle = format!(
        "{} · space {} · {}",
        inputs.run.display(),
        run.starts.last().map_or("?", |s| s.space.as_str()),
        html::format_utc(unix_now())
    );
    Ok((html::page(&format!("attnas report: {name}"), &subtitle, &body), run, search))
}

/// Renders the report and writes it atomically to `out`.
pub fn write_report(inputs: &ReportInputs, out: &Path) -> Result<ReportSummary> {
    let (page, run, search) = render(inputs)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(out, |w| w.write_all(page.as_bytes()).map_err(|e| Error::io(out, e)))?;
    Ok(ReportSummary {
        out: out.to_path_buf(),
        bytes: page.len(),
        steps: run.steps.len(),
        last_step: run.last_step(),
        epochs: run.epochs.len(),
        resumes: run.starts.iter().filter(|s| s.step > 0).count(),
        partial_tail_bytes: run.partial_tail_bytes,
        searched: search.map(|s| s.evaluated().len()),
    })
}
