//! The evolutionary accuracy-vs-FLOPs search of spec 6.2 (AlphaNet's `parallel_supernet_evo_search.py`),
//! independent of how a subnet is scored, so it runs the same on a supernet or on a synthetic evaluator.
//!
//! - Initial population (`population`, 512): the `--seed-arch` subnets first (ours; none by default),
//!   then the min subnet (when it lies in the FLOPs range and is not a seed; otherwise one more uniform
//!   draw), the rest uniform within [lo, hi] MFLOPs by rejection.
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
//! - Latency objective ([`run_with_latency`]): the same search with each subnet's latency (ms, from a
//!   latency table or measured) as the cost axis: buckets are in ms, the front is top-1 against latency,
//!   and every child must also lie in the latency range. The FLOPs range still applies.

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
    /// Given with `--seed-arch`.
    Seed,
    Min,
    Initial,
    Mutation,
    Crossover,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Seed => "seed",
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
    /// Latency in ms (latency searches only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl Evaluated {
    /// (cost, top-1): the cost is the latency in a latency search, else the MFLOPs.
    pub fn point(&self) -> Point {
        Point { mflops: self.latency_ms.unwrap_or(self.mflops), top1: self.top1 }
    }
}

/// A subnet's latency in ms (a latency table's prediction, or a measurement).
pub type LatencyFn<'a> = dyn FnMut(&Arch) -> Result<f64> + 'a;

/// The latency objective: the cost function and the range [lo, hi] ms every subnet must lie in.
pub struct LatencyObjective<'a> {
    pub latency: &'a mut LatencyFn<'a>,
    pub lo: f64,
    pub hi: f64,
}

impl LatencyObjective<'_> {
    fn accepts(&mut self, arch: &Arch) -> Result<bool> {
        let ms = (self.latency)(arch)?;
        Ok(ms >= self.lo && ms <= self.hi)
    }
}

/// Whether `arch` passes the latency range (always, without a latency objective).
fn latency_ok(lat: &mut Option<&mut LatencyObjective<'_>>, arch: &Arch) -> Result<bool> {
    match lat {
        Some(l) => l.accepts(arch),
        None => Ok(true),
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
    /// Subnets placed first in the initial population (`--seed-arch`); each must lie in the FLOPs range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<Arch>,
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
        if self.seeds.len() > self.population {
            return bad(format!(
                "--seed-arch gives {} subnets but --population is {}; raise --population",
                self.seeds.len(),
                self.population
            ));
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
    initial_population_with(space, s, None)
}

/// Draws of a latency search's population that must land in the latency range too (each a uniform
/// draw in the FLOPs range): the range may be narrow, but the table's predictions are cheap.
const LATENCY_MAX_DRAWS: usize = 10_000;

fn initial_population_with(
    space: &Space,
    s: &EvolutionSettings,
    mut lat: Option<&mut LatencyObjective<'_>>,
) -> Result<Vec<Candidate>> {
    let mut rng = iteration_rng(s.seed, 0);
    let mut out = Vec::with_capacity(s.population);
    for (i, arch) in s.seeds.iter().enumerate() {
        let mflops = flops::mflops(space, arch);
        if !s.in_range(mflops) {
            return Err(Error::usage(format!(
                "--seed-arch item {}: {mflops:.2} MFLOPs lies outside --flops {}:{}; drop it or widen --flops",
                i + 1,
                s.flops_lo,
                s.flops_hi
            )));
        }
        if !latency_ok(&mut lat, arch)? {
            return Err(Error::usage(format!(
                "--seed-arch item {}: its latency lies outside --latency; drop it or widen the range",
                i + 1
            )));
        }
        if !out.iter().any(|c: &Candidate| &c.arch == arch) {
            out.push(Candidate { arch: arch.clone(), origin: Origin::Seed, predicted: None });
        }
    }
    let min = space.min_arch();
    if s.in_range(flops::mflops(space, &min))
        && !out.iter().any(|c| c.arch == min)
        && out.len() < s.population
        && latency_ok(&mut lat, &min)?
    {
        out.push(Candidate { arch: min, origin: Origin::Min, predicted: None });
    }
    while out.len() < s.population {
        let mut found = None;
        for _ in 0..LATENCY_MAX_DRAWS {
            let (arch, _) = uniform_in_range(space, s.flops_lo, s.flops_hi, RANGE_MAX_DRAWS, &mut rng)?;
            if latency_ok(&mut lat, &arch)? {
                found = Some(arch);
                break;
            }
        }
        let arch = found.ok_or_else(|| {
            let (lo, hi) = lat.as_ref().map_or((0.0, 0.0), |l| (l.lo, l.hi));
            Error::usage(format!(
                "no uniform subnet in the FLOPs range landed in [{lo}, {hi}] ms in {LATENCY_MAX_DRAWS} draws; widen \
                 --latency"
            ))
        })?;
        out.push(Candidate { arch, origin: Origin::Initial, predicted: None });
    }
    Ok(out)
}

/// Redraws `make` until its child's FLOPs (and latency) are in range; errors after [`RANGE_MAX_DRAWS`]
/// misses.
fn in_range_child(
    space: &Space,
    s: &EvolutionSettings,
    lat: &mut Option<&mut LatencyObjective<'_>>,
    what: &str,
    mut make: impl FnMut() -> Arch,
) -> Result<Arch> {
    for _ in 0..RANGE_MAX_DRAWS {
        let child = make();
        if s.in_range(flops::mflops(space, &child)) && latency_ok(lat, &child)? {
            return Ok(child);
        }
    }
    let latency = lat.as_ref().map_or(String::new(), |l| format!(" and [{}, {}] ms", l.lo, l.hi));
    Err(Error::usage(format!(
        "no {what} child landed in [{}, {}] MFLOPs{latency} in {RANGE_MAX_DRAWS} draws; widen --flops{}",
        s.flops_lo,
        s.flops_hi,
        if lat.is_some() { " or --latency" } else { "" }
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
    next_population_with(space, s, parents, iteration, predictor, None)
}

fn next_population_with(
    space: &Space,
    s: &EvolutionSettings,
    parents: &[&Arch],
    iteration: usize,
    predictor: Option<&Predictor>,
    mut lat: Option<&mut LatencyObjective<'_>>,
) -> Result<Vec<Candidate>> {
    if parents.is_empty() {
        return Err(Error::Other("no evaluated subnet to breed from".into()));
    }
    let mut rng = iteration_rng(s.seed, iteration);
    let mut out = Vec::with_capacity(s.mutations + s.crossovers);
    for _ in 0..s.mutations {
        let arch = in_range_child(space, s, &mut lat, "mutation", || {
            let p = parents[rng.random_range(0..parents.len())];
            mutate(space, p, s.mutate_prob, s.freeze_resolution, &mut rng)
        })?;
        out.push(Candidate { arch, origin: Origin::Mutation, predicted: None });
    }
    for _ in 0..s.crossovers {
        let arch = in_range_child(space, s, &mut lat, "crossover", || {
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
    run_with_latency(space, s, predictor, progress, evaluate, observer, None)
}

/// [`run`], with a latency objective when `latency` is given (module docs).
pub fn run_with_latency(
    space: &Space,
    s: &EvolutionSettings,
    predictor: Option<&Predictor>,
    progress: &mut SearchProgress,
    evaluate: &mut dyn FnMut(&Arch) -> Result<Accuracy>,
    observer: &mut dyn Observer,
    latency: Option<&mut LatencyObjective<'_>>,
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
    run_batched(space, s, predictor, progress, &mut batch, observer, latency)
}

/// Scores a list of archs (in order); calls the second argument after each one it evaluates.
pub type BatchEvaluator<'a> = dyn FnMut(&[Arch], &mut dyn FnMut()) -> Result<Vec<Accuracy>> + 'a;

/// [`run_with_latency`] with the population's new archs scored as one list per iteration, so that
/// data-parallel ranks can share it (`search::job`: every arch of the list is scored, none dropped).
/// The latency objective must give every rank the same value for an arch (a table's prediction).
pub fn run_batched(
    space: &Space,
    s: &EvolutionSettings,
    predictor: Option<&Predictor>,
    progress: &mut SearchProgress,
    evaluate: &mut BatchEvaluator<'_>,
    observer: &mut dyn Observer,
    mut latency: Option<&mut LatencyObjective<'_>>,
) -> Result<()> {
    s.check()?;
    if let Some(l) = &latency {
        if !(l.lo.is_finite() && l.hi.is_finite() && 0.0 <= l.lo && l.lo <= l.hi) {
            return Err(Error::usage(format!("--latency MIN:MAX needs finite 0 <= MIN <= MAX, got {}:{}", l.lo, l.hi)));
        }
    }
    if progress.iterations_done == 0 && progress.population.is_empty() {
        progress.population = initial_population_with(space, s, latency.as_deref_mut())?;
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
            let latency_ms = match latency.as_deref_mut() {
                Some(l) => Some((l.latency)(&c.arch)?),
                None => None,
            };
            added.push(Evaluated {
                arch: c.arch.clone(),
                mflops: cost.mflops(),
                params: cost.params,
                top1: acc.top1,
                top5: acc.top5,
                iteration,
                origin: c.origin,
                predicted: c.predicted,
                latency_ms,
            });
        }
        for e in added {
            cache.insert(e.arch.clone(), progress.evaluated.len());
            progress.evaluated.push(e);
        }
        let points: Vec<Point> = progress.evaluated.iter().map(Evaluated::point).collect();
        let best = best_per_bucket(&points, s.bucket);
        let parents: Vec<&Arch> = best.values().map(|&i| &progress.evaluated[i].arch).collect();
        progress.population =
            next_population_with(space, s, &parents, iteration + 1, predictor, latency.as_deref_mut())?;
        progress.iterations_done = iteration + 1;
        observer.iteration(progress)?;
    }
    Ok(())
}
