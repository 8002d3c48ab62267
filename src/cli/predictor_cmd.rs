//! `attnas predictor fit`: fit the accuracy predictor (`crate::predictor`) on a search's (arch, top-1)
//! pairs, report Kendall's tau on a held-out part, and save it for `attnas search --predictor` and
//! `train.sampler.scorer: predictor`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::predictor::rank::{holdout_split, kendall_tau};
use crate::predictor::{FitOptions, Predictor};
use crate::search::report::read_evaluated;
use crate::space::Space;

#[derive(Args, Debug)]
pub struct PredictorArgs {
    #[command(subcommand)]
    pub what: PredictorWhat,
}

#[derive(Subcommand, Debug)]
pub enum PredictorWhat {
    /// Fit on a search's evaluated.csv; prints Kendall's tau on held-out pairs.
    Fit(FitArgs),
}

#[derive(Args, Debug)]
pub struct FitArgs {
    /// A search's evaluated.csv, or its output folder.
    #[arg(long)]
    pub from: PathBuf,
    /// Where to write the predictor (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of the pairs held out of the fit to measure Kendall's tau (0: fit on all, no tau).
    #[arg(long, default_value_t = 0.5)]
    pub holdout: f64,
    /// Seeds the held-out split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Space file or built-in name: checks the archs against it and records its name in the predictor.
    #[arg(long)]
    pub config: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct FitReport {
    pairs: usize,
    fit_pairs: usize,
    heldout_pairs: usize,
    lambda: f64,
    kendall_tau: Option<f64>,
    out: PathBuf,
}

pub fn run_predictor(a: &PredictorArgs) -> Result<()> {
    match &a.what {
        PredictorWhat::Fit(f) => run_fit(f),
    }
}

fn run_fit(a: &FitArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.holdout) {
        return Err(Error::usage(format!("--holdout must be in [0, 1), got {}", a.holdout)));
    }
    let csv = if a.from.is_dir() { a.from.join("evaluated.csv") } else { a.from.clone() };
    let pairs = read_evaluated(&csv)?;
    let space = a.config.as_deref().map(Space::resolve).transpose()?;
    if let Some(space) = &space {
        for (i, (arch, _)) in pairs.iter().enumerate() {
            space.validate(arch).map_err(|e| Error::input(&csv, i + 2, format!("arch: {e}")))?;
        }
    }
    let (fit_idx, held_idx) = holdout_split(pairs.len(), a.holdout, a.seed);
    if fit_idx.len() < 2 || (a.holdout > 0.0 && held_idx.len() < 2) {
        return Err(Error::usage(format!(
            "{}: {} pairs are too few to fit on {} and measure tau on {}; search longer or lower --holdout",
            csv.display(),
            pairs.len(),
            fit_idx.len(),
            held_idx.len()
        )));
    }
    let x = |idx: &[usize]| idx.iter().map(|&i| pairs[i].0.to_vector()).collect::<Vec<_>>();
    let y = |idx: &[usize]| idx.iter().map(|&i| pairs[i].1).collect::<Vec<_>>();
    let mut p = Predictor::fit(&x(&fit_idx), &y(&fit_idx), &FitOptions::default())?;
    let predicted: Vec<f64> = x(&held_idx).iter().map(|v| p.predict_vector(v)).collect::<Result<_>>()?;
    p.heldout_pairs = held_idx.len();
    p.heldout_kendall_tau = kendall_tau(&predicted, &y(&held_idx));
    p.space = space.map(|s| s.name);
    p.save(&a.out)?;
    let report = FitReport {
        pairs: pairs.len(),
        fit_pairs: fit_idx.len(),
        heldout_pairs: held_idx.len(),
        lambda: p.lambda,
        kendall_tau: p.heldout_kendall_tau,
        out: a.out.clone(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return Ok(());
    }
    let tau = report.kendall_tau.map_or("undefined (constant scores)".to_string(), |t| format!("{t:.3}"));
    println!(
        "fit a ridge predictor on {} of {} pairs (lambda {}); Kendall's tau on {} held-out pairs: {tau}",
        report.fit_pairs, report.pairs, report.lambda, report.heldout_pairs
    );
    println!("predictor: {}", a.out.display());
    Ok(())
}
