//! The evolutionary accuracy-vs-FLOPs search of spec 6.2 (AlphaNet's `parallel_supernet_evo_search.py`),
//! independent of how a subnet is scored, so it runs the same on a supernet or on a synthetic evaluator.
//!
//! - Initial population (`population`, 512): the min subnet first (when it lies in the FLOPs range;
//!   otherwise one more uniform draw), the rest uniform within [lo, hi] MFLOPs by rejection.
//! - Each iteration (`iterations`, 20) evaluates the population (an arch met before is not evaluated
//!   again: its score is cached), updates the best top-1 per FLOPs bucket over everything evaluated so
//!   far, and builds the next population from that dict only: `mutations` (128) children of a parent
//!   drawn uniformly from the dict, each gene mutated with `mutate_prob` (0.2), and `crossovers` (128)
//!   gene-wise crossovers of two parents drawn uniformly; each child is redrawn (parents included) until
//!   its FLOPs are in range. With a predictor, only the best `predictor_keep` fraction of the children by
//!   predicted top-1 is kept.
//! - The random draws of iteration i come from a generator seeded by (seed, i), so a resumed search
//!   needs no generator state and repeats the uninterrupted one exactly. The next population is built
//!   after every iteration, the last included (it is cheap), so a finished search can be extended by
//!   resuming it with more iterations.

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::pareto::{best_per_bucket, Point};
use crate::error::{Error, Result};
use crate::predictor::Predictor;
use crate::space::sampler::{crossover, mutate, uniform_in_range, RANGE_MAX_DRAWS};
use crate::space::{flops, Arch, Space};
use crate::train::validate::Accuracy;

/// How a candidate came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Min,
    Initial,
    Mutation,
    Crossover,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Min => "min",
            Origin::Initial => "initial",
            Origin::Mutation => "mutation",
            Origin::Crossover => "crossover",
        }
    }
}

/// A member of a population, not yet scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub arch: Arch,
    pub origin: Origin,
    /// The predictor's top-1, when a predictor filtered the children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<f64>,
}

/// A scored subnet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub arch: Arch,
    pub mflops: f64,
    pub params: u64,
    pub top1: f64,
    pub top5: f64,
    /// The iteration (0-based) that evaluated it.
    pub iteration: usize,
    pub origin: Origin,
    #[serde(default)]
    pub predicted: Option<f64>,
}

impl Evaluated {
    pub fn point(&self) -> Point {
        Point { mflops: self.mflops, top1: self.top1 }
    }
}

/// The search settings (spec 6.2 defaults in the CLI).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvolutionSettings {
    pub population: usize,
    pub mutations: usize,
    pub crossovers: usize,
    pub iterations: usize,
    pub mutate_prob: f64,
    /// Keep the parent's resolution when mutating.
    pub freeze_resolution: bool,
    /// FLOPs bucket width (MFLOPs).
    pub bucket: f64,
    /// The FLOPs range [lo, hi] (MFLOPs).
    pub flops_lo: f64,
    pub flops_hi: f64,
    pub seed: u64,
    /// Fraction of the children kept by the predictor filter (used only with a predictor).
    pub predictor_keep: f64,
}

impl EvolutionSettings {
    /// Errors (usage) naming the flag of the first bad value.
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::usage(msg));
        if self.population == 0 {
            return bad("--population must be >= 1".into());
        }
        if self.iterations == 0 {
            return bad("--iterations must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&self.mutate_prob) {
            return bad(format!("--mutate-prob must be in [0, 1], got {}", self.mutate_prob));
        }
        if !(self.bucket.is_finite() && self.bucket > 0.0) {
            return bad(format!("--bucket must be a finite number of MFLOPs > 0, got {}", self.bucket));
        }
        if !(self.flops_lo.is_finite() && self.flops_hi.is_finite() && self.flops_lo <= self.flops_hi) {
            return bad(format!("--flops MIN:MAX needs finite MIN <= MAX, got {}:{}", self.flops_lo, self.flops_hi));
        }
        if !(self.predictor_keep > 0.0 && self.predictor_keep <= 1.0) {
            return bad(format!("--predictor-keep must be in (0, 1], got {}", self.predictor_keep));
        }
        Ok(())
    }

    fn in_range(&self, mflops: f64) -> bool {
        mflops >= self.flops_lo && mflops <= self.flops_hi
    }
}

/// Where a search stands: the iterations done, the population the next iteration evaluates and every
/// subnet scored so far, in evaluation order. Saved in the state file after each iteration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchProgress {
    pub iterations_done: usize,
    pub population: Vec<Candidate>,
    pub evaluated: Vec<Evaluated>,
}

/// Hears about the search as it runs (progress display, state file).
pub trait Observer {
    /// A candidate of `iteration` was scored (`cached`: met before, not evaluated again).
    fn candidate(&mut self, _iteration: usize, _cached: bool) {}
    /// An iteration finished and the next population is built.
    fn iteration(&mut self, _progress: &SearchProgress) -> Result<()> {
        Ok(())
    }
}

/// The generator of iteration `iteration`'s draws.
pub fn iteration_rng(seed: u64, iteration: usize) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(crate::nn::tape::layer_seed(seed ^ 0x45_564f_5345_4152, iteration as u64))
}

/// The initial population (iteration 0's draws).
pub fn initial_population(space: &Space, s: &EvolutionSettings) -> Result<Vec<Candidate>> {
    let mut rng = iteration_rng(s.seed, 0);
    let mut out = Vec::with_capacity(s.population);
    let min = space.min_arch();
    if s.in_range(flops::mflops(space, &min)) {
        out.push(Candidate { arch: min, origin: Origin::Min, predicted: None });
    }
    while out.len() < s.population {
        let (arch, _) = uniform_in_range(space, s.flops_lo, s.flops_hi, RANGE_MAX_DRAWS, &mut rng)?;
        out.push(Candidate { arch, origin: Origin::Initial, predicted: None });
    }
    Ok(out)
}

/// Redraws `make` until its child's FLOPs are in range; errors after [`RANGE_MAX_DRAWS`] misses.
fn in_range_child(space: &Space, s: &EvolutionSettings, what: &str, mut make: impl FnMut() -> Arch) -> Result<Arch> {
    for _ in 0..RANGE_MAX_DRAWS {
        let child = make();
        if s.in_range(flops::mflops(space, &child)) {
            return Ok(child);
        }
    }
    Err(Error::usage(format!(
        "no {what} child landed in [{}, {}] MFLOPs in {RANGE_MAX_DRAWS} draws; widen --flops",
        s.flops_lo, s.flops_hi
    )))
}

/// The population of iteration `iteration` (>= 1), bred from `parents` (the per-bucket bests).
pub fn next_population(
    space: &Space,
    s: &EvolutionSettings,
    parents: &[&Arch],
    iteration: usize,
    predictor: Option<&Predictor>,
) -> Result<Vec<Candidate>> {
    if parents.is_empty() {
        return Err(Error::Other("no evaluated subnet to breed from".into()));
    }
    let mut rng = iteration_rng(s.seed, iteration);
    let mut out = Vec::with_capacity(s.mutations + s.crossovers);
    for _ in 0..s.mutations {
        let arch = in_range_child(space, s, "mutation", || {
            let p = parents[rng.random_range(0..parents.len())];
            mutate(space, p, s.mutate_prob, s.freeze_resolution, &mut rng)
        })?;
        out.push(Candidate { arch, origin: Origin::Mutation, predicted: None });
    }
    for _ in 0..s.crossovers {
        let arch = in_range_child(space, s, "crossover", || {
            let a = parents[rng.random_range(0..parents.len())];
            let b = parents[rng.random_range(0..parents.len())];
            crossover(space, a, b, &mut rng)
        })?;
        out.push(Candidate { arch, origin: Origin::Crossover, predicted: None });
    }
    match predictor {
        Some(p) => filter_by_predictor(out, p, s.predictor_keep),
        None => Ok(out),
    }
}

/// Keeps the best `keep` fraction (rounded up) of `children` by predicted top-1, in their original
/// order; ties go to the earlier child.
pub fn filter_by_predictor(children: Vec<Candidate>, p: &Predictor, keep: f64) -> Result<Vec<Candidate>> {
    let mut scored = Vec::with_capacity(children.len());
    for mut c in children {
        c.predicted = Some(p.predict(&c.arch)?);
        scored.push(c);
    }
    let n_keep = ((scored.len() as f64) * keep).ceil() as usize;
    let mut order: Vec<usize> = (0..scored.len()).collect();
    let score = |i: usize| scored[i].predicted.unwrap_or(f64::NEG_INFINITY);
    order.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
    let mut kept = vec![false; scored.len()];
    for &i in order.iter().take(n_keep) {
        kept[i] = true;
    }
    Ok(scored.into_iter().zip(kept).filter(|(_, k)| *k).map(|(c, _)| c).collect())
}

/// Runs (or continues) the search until `s.iterations` iterations are done, scoring new archs with
/// `evaluate`. `progress` is updated in place; the observer sees every candidate and iteration.
pub fn run(
    space: &Space,
    s: &EvolutionSettings,
    predictor: Option<&Predictor>,
    progress: &mut SearchProgress,
    evaluate: &mut dyn FnMut(&Arch) -> Result<Accuracy>,
    observer: &mut dyn Observer,
) -> Result<()> {
    let mut batch = |archs: &[Arch], done: &mut dyn FnMut()| -> Result<Vec<Accuracy>> {
        archs
            .iter()
            .map(|a| {
                let acc = evaluate(a)?;
                done();
                Ok(acc)
            })
            .collect()
    };
    run_batched(space, s, predictor, progress, &mut batch, observer)
}

/// Scores a list of archs (in order); calls the second argument after each one it evaluates.
pub type BatchEvaluator<'a> = dyn FnMut(&[Arch], &mut dyn FnMut()) -> Result<Vec<Accuracy>> + 'a;

/// [`run`] with the population's new archs scored as one list per iteration, so that data-parallel
/// ranks can share it (`search::job`: every arch of the list is scored, none dropped).
pub fn run_batched(
    space: &Space,
    s: &EvolutionSettings,
    predictor: Option<&Predictor>,
    progress: &mut SearchProgress,
    evaluate: &mut BatchEvaluator<'_>,
    observer: &mut dyn Observer,
) -> Result<()> {
    s.check()?;
    if progress.iterations_done == 0 && progress.population.is_empty() {
        progress.population = initial_population(space, s)?;
    }
    let mut cache: HashMap<Arch, usize> =
        progress.evaluated.iter().enumerate().map(|(i, e)| (e.arch.clone(), i)).collect();
    for iteration in progress.iterations_done..s.iterations {
        // the archs not met before, each once, in population order
        let mut fresh: Vec<&Candidate> = Vec::new();
        let mut fresh_set = std::collections::HashSet::new();
        for c in &progress.population {
            if cache.contains_key(&c.arch) || !fresh_set.insert(&c.arch) {
                observer.candidate(iteration, true);
            } else {
                fresh.push(c);
            }
        }
        let archs: Vec<Arch> = fresh.iter().map(|c| c.arch.clone()).collect();
        let scores = evaluate(&archs, &mut || observer.candidate(iteration, false))?;
        if scores.len() != fresh.len() {
            return Err(Error::Other(format!("search: {} scores for {} candidates", scores.len(), fresh.len())));
        }
        let mut added = Vec::with_capacity(fresh.len());
        for (c, acc) in fresh.into_iter().zip(scores) {
            let cost = flops::cost(space, &c.arch);
            added.push(Evaluated {
                arch: c.arch.clone(),
                mflops: cost.mflops(),
                params: cost.params,
                top1: acc.top1,
                top5: acc.top5,
                iteration,
                origin: c.origin,
                predicted: c.predicted,
            });
        }
        for e in added {
            cache.insert(e.arch.clone(), progress.evaluated.len());
            progress.evaluated.push(e);
        }
        let points: Vec<Point> = progress.evaluated.iter().map(Evaluated::point).collect();
        let best = best_per_bucket(&points, s.bucket);
        let parents: Vec<&Arch> = best.values().map(|&i| &progress.evaluated[i].arch).collect();
        progress.population = next_population(space, s, &parents, iteration + 1, predictor)?;
        progress.iterations_done = iteration + 1;
        observer.iteration(progress)?;
    }
    Ok(())
}
