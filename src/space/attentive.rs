//! The FLOPs-conditioned attentive sampler (spec 4.2, 4.3; AttentiveNAS `ArchSampler`).
//!
//! Built from a FLOPs table: every entry goes to bin b = round(MFLOPs / step) (Python's round, ties
//! to even; step 25 in AttentiveNAS). The prior over bins is the empirical bin frequency or uniform
//! over the bins present ([`Prior`]). For every bin and every gene independently we keep the
//! empirical categorical P(value | bin). A step then draws a target bin from the prior and k
//! candidates: each candidate draws every gene from its bin's conditional, computes MFLOPs
//! analytically and is accepted when it rounds to the target bin; after `max_draws` (101) misses the
//! last draw is kept anyway and counted as a fallback. The training loop scores the candidates (minus
//! the minibatch loss) and [`select`] picks BestUp (highest score) or WorstUp (lowest).
//!
//! The cost need not be FLOPs: with [`AttentiveSampler::with_cost`] (the config's `sampler.cost: latency`)
//! bins are of another per-arch cost, e.g. a latency table's predicted ms; the table entries' `mflops`
//! then hold that cost and `step` is in its unit.

use std::sync::Arc;

use rand::{Rng, RngExt};

use crate::error::{Error, Result};
use crate::space::arch::Arch;
use crate::space::config::Space;
use crate::space::flops;
use crate::space::table::TableEntry;

/// AttentiveNAS: up to 100 retries after the first draw, 101 draws per candidate.
pub const MAX_DRAWS: usize = 101;

/// The bin index of a FLOPs value: round(mflops / step) with ties to even, as Python's `round`.
/// The bin's MFLOPs value is index * step.
pub fn flops_bin(mflops: f64, step: f64) -> i64 {
    (mflops / step).round_ties_even() as i64
}

/// The prior over target bins. Written `empirical` or `uniform` in configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Prior {
    /// Bin frequency in the table (AttentiveNAS's default).
    #[serde(rename = "empirical")]
    Empirical,
    /// Uniform over the bins present in the table (AttentiveNAS's unused `flops_uniform`).
    #[serde(rename = "uniform", alias = "uniform-bins")]
    UniformBins,
}

impl std::str::FromStr for Prior {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "empirical" => Ok(Prior::Empirical),
            "uniform" | "uniform-bins" => Ok(Prior::UniformBins),
            _ => Err(format!("unknown FLOPs prior '{s}'; use empirical or uniform")),
        }
    }
}

/// Which candidate to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The highest score (lowest loss).
    BestUp,
    /// The lowest score (highest loss).
    WorstUp,
}

impl std::str::FromStr for Selection {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bestup" => Ok(Selection::BestUp),
            "worstup" => Ok(Selection::WorstUp),
            _ => Err(format!("unknown selection '{s}'; use bestup or worstup")),
        }
    }
}

/// Index of the candidate to train given its scores (score = -loss). Ties go to the first index, as
/// Python's max/min over enumerate. Errors on no scores or a NaN score (naming its index).
pub fn select(method: Selection, scores: &[f64]) -> Result<usize> {
    if scores.is_empty() {
        return Err(Error::Other("no candidate scores to select from".into()));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Other(format!("candidate score {i} is NaN; cannot rank candidates")));
    }
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate().skip(1) {
        let better = match method {
            Selection::BestUp => s > scores[best],
            Selection::WorstUp => s < scores[best],
        };
        if better {
            best = i;
        }
    }
    Ok(best)
}

/// A categorical distribution over a gene's observed values.
#[derive(Clone, Debug)]
struct Categorical {
    values: Vec<usize>,
    cumulative: Vec<f64>,
}

impl Categorical {
    fn from_counts(counts: &std::collections::BTreeMap<usize, usize>) -> Categorical {
        let mut acc = 0.0;
        let mut values = Vec::with_capacity(counts.len());
        let mut cumulative = Vec::with_capacity(counts.len());
        for (&v, &c) in counts {
            acc += c as f64;
            values.push(v);
            cumulative.push(acc);
        }
        Categorical { values, cumulative }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = self.cumulative[self.cumulative.len() - 1];
        let u = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= u).min(self.values.len() - 1);
        self.values[i]
    }

    fn probability(&self, value: usize) -> f64 {
        let total = self.cumulative[self.cumulative.len() - 1];
        match self.values.iter().position(|&v| v == value) {
            Some(0) => self.cumulative[0] / total,
            Some(i) => (self.cumulative[i] - self.cumulative[i - 1]) / total,
            None => 0.0,
        }
    }
}

/// One FLOPs bin of the table.
#[derive(Clone, Debug)]
struct Bin {
    index: i64,
    count: usize,
    /// One conditional per gene, in `Space::genes` order.
    genes: Vec<Categorical>,
}

/// One drawn candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub arch: Arch,
    pub mflops: f64,
    /// False when no draw landed in the target bin and the last draw was kept (a fallback).
    pub landed: bool,
    /// Draws spent on this candidate (1..=max_draws).
    pub draws: usize,
}

/// Running counts for the training log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerStats {
    pub targets: u64,
    pub candidates: u64,
    pub fallbacks: u64,
    pub draws: u64,
}

/// A per-arch cost other than the analytic MFLOPs, and its unit (for messages).
#[derive(Clone)]
pub struct CostFn {
    pub cost: Arc<dyn Fn(&Arch) -> f64 + Send + Sync>,
    pub unit: &'static str,
}

impl std::fmt::Debug for CostFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CostFn({})", self.unit)
    }
}

/// The attentive sampler over one space.
#[derive(Clone, Debug)]
pub struct AttentiveSampler {
    space: Space,
    step: f64,
    prior: Prior,
    bins: Vec<Bin>,
    /// Cumulative prior weights over `bins`.
    prior_cumulative: Vec<f64>,
    max_draws: usize,
    stats: SamplerStats,
    /// `None`: analytic MFLOPs.
    cost: Option<CostFn>,
}

impl AttentiveSampler {
    /// Build from table entries (already validated against `space`); `step` is the bin width in MFLOPs.
    pub fn new(space: &Space, table: &[TableEntry], step: f64, prior: Prior) -> Result<AttentiveSampler> {
        if !(step.is_finite() && step > 0.0) {
            return Err(Error::usage(format!("FLOPs bin step must be positive, got {step}")));
        }
        if table.is_empty() {
            return Err(Error::usage("the FLOPs table is empty"));
        }
        type Counts = std::collections::BTreeMap<usize, usize>;
        let genes = space.genes();
        let mut by_bin: std::collections::BTreeMap<i64, (usize, Vec<Counts>)> = Default::default();
        for e in table {
            space.validate(&e.arch).map_err(Error::Usage)?;
            let slot = by_bin.entry(flops_bin(e.mflops, step)).or_insert_with(|| (0, vec![Counts::new(); genes.len()]));
            slot.0 += 1;
            for (g, counts) in genes.iter().zip(slot.1.iter_mut()) {
                *counts.entry(e.arch.gene(*g)).or_insert(0) += 1;
            }
        }
        let bins: Vec<Bin> = by_bin
            .into_iter()
            .map(|(index, (count, counts))| Bin {
                index,
                count,
                genes: counts.iter().map(Categorical::from_counts).collect(),
            })
            .collect();
        let mut acc = 0.0;
        let prior_cumulative = bins
            .iter()
            .map(|b| {
                acc += match prior {
                    Prior::Empirical => b.count as f64,
                    Prior::UniformBins => 1.0,
                };
                acc
            })
            .collect();
        Ok(AttentiveSampler {
            space: space.clone(),
            step,
            prior,
            bins,
            prior_cumulative,
            max_draws: MAX_DRAWS,
            stats: SamplerStats::default(),
            cost: None,
        })
    }

    /// Bins by `cost` instead of MFLOPs (the table given to [`AttentiveSampler::new`] must then hold
    /// that cost in its entries' `mflops`, and `step` be in its unit).
    pub fn with_cost(mut self, cost: CostFn) -> Self {
        self.cost = Some(cost);
        self
    }

    /// The cost of `arch` the bins are of.
    pub fn cost_of(&self, arch: &Arch) -> f64 {
        match &self.cost {
            Some(c) => (c.cost)(arch),
            None => flops::mflops(&self.space, arch),
        }
    }

    /// Change the draws per candidate (default [`MAX_DRAWS`]); at least 1.
    pub fn with_max_draws(mut self, max_draws: usize) -> Self {
        self.max_draws = max_draws.max(1);
        self
    }

    pub fn step(&self) -> f64 {
        self.step
    }

    pub fn prior(&self) -> Prior {
        self.prior
    }

    /// The bins present in the table: (bin index, entries, prior probability).
    pub fn bins(&self) -> Vec<(i64, usize, f64)> {
        let total = self.prior_cumulative.last().copied().unwrap_or(1.0);
        let mut prev = 0.0;
        self.bins
            .iter()
            .zip(&self.prior_cumulative)
            .map(|(b, &c)| {
                let p = (c - prev) / total;
                prev = c;
                (b.index, b.count, p)
            })
            .collect()
    }

    /// P(value | bin) for one gene, as estimated from the table (0 for an absent bin or value).
    pub fn conditional(&self, bin: i64, gene: crate::space::Gene, value: usize) -> f64 {
        let (Some(b), Some(g)) = (self.find(bin), self.space.genes().iter().position(|&x| x == gene)) else {
            return 0.0;
        };
        self.bins[b].genes[g].probability(value)
    }

    /// Counts since construction (or the last [`AttentiveSampler::reset_stats`]).
    pub fn stats(&self) -> SamplerStats {
        self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = SamplerStats::default();
    }

    fn find(&self, bin: i64) -> Option<usize> {
        self.bins.binary_search_by_key(&bin, |b| b.index).ok()
    }

    /// Draw a target bin index from the prior.
    pub fn sample_target(&mut self, rng: &mut impl Rng) -> i64 {
        let total = self.prior_cumulative[self.prior_cumulative.len() - 1];
        let u = rng.random::<f64>() * total;
        let i = self.prior_cumulative.partition_point(|&c| c <= u).min(self.bins.len() - 1);
        self.stats.targets += 1;
        self.bins[i].index
    }

    /// Draw `k` candidates for target bin `bin` (which must be in the table).
    pub fn sample_candidates(&mut self, bin: i64, k: usize, rng: &mut impl Rng) -> Result<Vec<Candidate>> {
        let b = self
            .find(bin)
            .ok_or_else(|| Error::usage(format!("FLOPs bin {} MFLOPs is not in the table", bin as f64 * self.step)))?;
        let genes = self.space.genes();
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            let mut arch = Arch::zeros(self.space.num_stages());
            let mut mflops = 0.0;
            let mut landed = false;
            let mut draws = 0;
            while draws < self.max_draws && !landed {
                draws += 1;
                for (g, cat) in genes.iter().zip(&self.bins[b].genes) {
                    arch.set_gene(*g, cat.sample(rng));
                }
                mflops = self.cost_of(&arch);
                landed = flops_bin(mflops, self.step) == bin;
            }
            self.stats.candidates += 1;
            self.stats.draws += draws as u64;
            if !landed {
                self.stats.fallbacks += 1;
            }
            out.push(Candidate { arch, mflops, landed, draws });
        }
        Ok(out)
    }

    /// One attentive step's draws: a target bin from the prior and `k` candidates for it.
    pub fn sample(&mut self, k: usize, rng: &mut impl Rng) -> (i64, Vec<Candidate>) {
        let bin = self.sample_target(rng);
        // The target comes from the table's own bins, so the lookup cannot fail.
        let candidates = self.sample_candidates(bin, k, rng).unwrap_or_default();
        (bin, candidates)
    }
}
