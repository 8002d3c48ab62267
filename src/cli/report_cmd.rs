//! `attnas report RUN [--search DIR] [--out FILE]`: the self-contained HTML report of a training run
//! (and of a search over it), see `crate::report`. Works while the run or the search is still going.

use std::path::PathBuf;

use crate::error::Result;
use crate::report::{write_report, ReportInputs};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The training run folder (`attnas train --out`: metrics.jsonl, checkpoints/).
    pub run: PathBuf,
    /// A search folder to include (`attnas search --out`: search-state.json).
    #[arg(long)]
    pub search: Option<PathBuf>,
    /// The HTML file to write (default: RUN/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print a JSON summary of what was written.
    #[arg(long)]
    pub json: bool,
}

pub fn run_report(a: &ReportArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| a.run.join("report.html"));
    let summary = write_report(&ReportInputs { run: a.run.clone(), search: a.search.clone() }, &out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
        return Ok(());
    }
    let mut line = format!(
        "report: {} ({:.0} KiB): {} steps logged (last {}), {} epochs, {} resume(s)",
        summary.out.display(),
        summary.bytes as f64 / 1024.0,
        summary.steps,
        summary.last_step,
        summary.epochs,
        summary.resumes
    );
    if let Some(n) = summary.searched {
        line.push_str(&format!(", search of {n} subnets"));
    }
    if summary.partial_tail_bytes > 0 {
        line.push_str(", unfinished last log line skipped");
    }
    println!("{line}");
    Ok(())
}
