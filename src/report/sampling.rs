//! What attentive sampling did: the FLOPs target bins drawn against the sampler's prior, and how often
//! the trained candidate was another than the first drawn, with the score margins.
//!
//! The prior is rebuilt exactly as the trainer builds it (`trainer::build_sampler`: the config's FLOPs
//! table, or the table generated from the run's seed), over the run's own space: the YAML stored with the
//! checkpoint, else the built-in space of that name. When neither is available (no checkpoint yet and a
//! space file of the user's), the report says so and shows the draws alone.

use std::collections::BTreeMap;

use super::history::RunHistory;
use crate::space::Space;
use crate::train::trainer::build_sampler;

/// One FLOPs bin: its MFLOPs, the prior probability and how often it was drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct BinRow {
    pub mflops: f64,
    pub prior: Option<f64>,
    pub drawn: u64,
}

/// Targets drawn against the prior.
#[derive(Clone, Debug)]
pub struct TargetStats {
    pub bins: Vec<BinRow>,
    pub draws: u64,
    /// Total variation distance between the drawn frequencies and the prior (0 = identical).
    pub tv_distance: Option<f64>,
    /// The distance sampling noise alone gives on average for this many draws from the prior (normal
    /// approximation: 0.5 * sum sqrt(2 p (1 - p) / (pi n))).
    pub tv_noise: Option<f64>,
    /// Why the prior is missing, when it is.
    pub prior_note: Option<String>,
}

/// One epoch's attentive choices.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceRow {
    pub epoch: u64,
    pub draws: u64,
    pub not_first: u64,
    pub mean_margin: Option<f64>,
}

/// The candidates per draw (the mode of the logged counts; 0 without attentive draws).
pub fn candidates_per_draw(h: &RunHistory) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for d in h.draws.iter().filter(|d| d.candidates > 1) {
        *counts.entry(d.candidates).or_insert(0) += 1;
    }
    counts.into_iter().max_by_key(|&(k, n)| (n, k)).map_or(0, |(k, _)| k)
}

/// The run's space: stored with the checkpoint, else built in under the logged name.
fn run_space(h: &RunHistory) -> Result<Space, String> {
    if let Some(yaml) = h.space_yaml() {
        return Space::from_yaml(yaml, "the checkpoint's stored space").map_err(|e| e.to_string());
    }
    let name = h.starts.last().map(|s| s.space.as_str()).unwrap_or("");
    Space::builtin(name).map_err(|_| {
        format!("the space '{name}' is not built in and no checkpoint stores its definition yet, so the prior cannot be rebuilt")
    })
}

/// The prior over target bins, as (bin index, probability).
fn prior(h: &RunHistory) -> Result<Vec<(i64, f64)>, String> {
    let cfg = h.config().ok_or("the log has no readable start line (config)")?;
    let space = run_space(h)?;
    let sampler = build_sampler(&space, &cfg).map_err(|e| format!("cannot rebuild the sampler: {e}"))?;
    let sampler = sampler.ok_or("the run samples uniformly (no FLOPs prior)")?;
    Ok(sampler.bins().into_iter().map(|(bin, _, p)| (bin, p)).collect())
}

/// The drawn target bins against the prior (`None` when the run made no attentive draw).
pub fn target_stats(h: &RunHistory) -> Option<TargetStats> {
    let bin_mflops = h.config()?.sampler.discretize_step;
    let mut drawn: BTreeMap<i64, u64> = BTreeMap::new();
    for b in h.draws.iter().filter_map(|d| d.target_bin) {
        *drawn.entry(b).or_insert(0) += 1;
    }
    let draws: u64 = drawn.values().sum();
    if draws == 0 {
        return None;
    }
    let (prior, prior_note) = match prior(h) {
        Ok(p) => (p.into_iter().collect::<BTreeMap<i64, f64>>(), None),
        Err(why) => (BTreeMap::new(), Some(why)),
    };
    let mut keys: Vec<i64> = drawn.keys().chain(prior.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let bins: Vec<BinRow> = keys
        .iter()
        .map(|k| BinRow {
            mflops: *k as f64 * bin_mflops,
            prior: if prior.is_empty() { None } else { Some(prior.get(k).copied().unwrap_or(0.0)) },
            drawn: drawn.get(k).copied().unwrap_or(0),
        })
        .collect();
    let tv_distance = (!prior.is_empty()).then(|| {
        0.5 * bins.iter().map(|b| (b.drawn as f64 / draws as f64 - b.prior.unwrap_or(0.0)).abs()).sum::<f64>()
    });
    let n = draws as f64;
    let tv_noise = (!prior.is_empty())
        .then(|| 0.5 * prior.values().map(|&p| (2.0 * p * (1.0 - p) / (std::f64::consts::PI * n)).sqrt()).sum::<f64>());
    Some(TargetStats { bins, draws, tv_distance, tv_noise, prior_note })
}

/// Per epoch: attentive draws, how many trained another candidate than the first, the mean margin.
pub fn choices_per_epoch(h: &RunHistory) -> Vec<ChoiceRow> {
    let mut rows: BTreeMap<u64, (u64, u64, f64, u64)> = BTreeMap::new();
    for d in &h.draws {
        let Some(differs) = d.differs_from_first else { continue };
        let r = rows.entry(d.epoch).or_insert((0, 0, 0.0, 0));
        r.0 += 1;
        r.1 += differs as u64;
        if let Some(m) = d.score_margin {
            r.2 += m;
            r.3 += 1;
        }
    }
    rows.into_iter()
        .map(|(epoch, (draws, not_first, sum, n))| ChoiceRow {
            epoch,
            draws,
            not_first,
            mean_margin: (n > 0).then(|| sum / n as f64),
        })
        .collect()
}
