//! The plain samplers and the evolutionary-search operators (spec 6.1). All take `&mut impl Rng`, so
//! training and search can share one seeded stream; the same seed gives the same archs.
//!
//! - uniform: every gene independently uniform over its choices (AttentiveNAS `sample_active_subnet`);
//! - uniform within a FLOPs range: rejection-sample uniform archs until lo <= MFLOPs <= hi;
//! - mutation: each gene, with probability p, takes a *different* value drawn uniformly from the
//!   other choices (a gene with one choice stays); resolution can be frozen;
//! - crossover: gene-wise, each gene from parent 1 with probability 1/2, else from parent 2.
//!
//! Min and max are [`Space::min_arch`] and [`Space::max_arch`].

use rand::{Rng, RngExt};

use crate::error::{Error, Result};
use crate::space::arch::Arch;
use crate::space::config::Space;
use crate::space::flops;

/// Default draw budget of [`uniform_in_range`] before it reports the range as unreachable.
pub const RANGE_MAX_DRAWS: usize = 100_000;

/// Every gene uniform over its choices.
pub fn uniform(space: &Space, rng: &mut impl Rng) -> Arch {
    space.arch_from(|choices| choices[rng.random_range(0..choices.len())])
}

/// A uniform arch with lo <= MFLOPs <= hi, and its MFLOPs. Errors (usage) if the range misses the
/// space's [min, max] FLOPs or if `max_draws` draws all miss.
pub fn uniform_in_range(space: &Space, lo: f64, hi: f64, max_draws: usize, rng: &mut impl Rng) -> Result<(Arch, f64)> {
    let (fmin, fmax) = (flops::mflops(space, &space.min_arch()), flops::mflops(space, &space.max_arch()));
    if lo.is_nan() || hi.is_nan() || lo > hi || hi < fmin || lo > fmax {
        return Err(Error::usage(format!(
            "FLOPs range [{lo}, {hi}] MFLOPs misses space '{}', whose subnets span [{fmin:.1}, {fmax:.1}]",
            space.name
        )));
    }
    for _ in 0..max_draws {
        let arch = uniform(space, rng);
        let f = flops::mflops(space, &arch);
        if f >= lo && f <= hi {
            return Ok((arch, f));
        }
    }
    Err(Error::usage(format!(
        "no uniform arch of space '{}' landed in [{lo}, {hi}] MFLOPs in {max_draws} draws; widen the range",
        space.name
    )))
}

/// Mutate each gene with probability `prob` to a different choice; `keep_resolution` freezes the
/// resolution gene. The parent must be valid for the space; the child then is too.
pub fn mutate(space: &Space, parent: &Arch, prob: f64, keep_resolution: bool, rng: &mut impl Rng) -> Arch {
    let mut child = parent.clone();
    for gene in space.genes() {
        // One uniform per gene, drawn even for frozen genes, so freezing does not shift the stream.
        let hit = rng.random::<f64>() < prob;
        if !hit || (keep_resolution && gene == crate::space::Gene::Resolution) {
            continue;
        }
        let choices = space.choices(gene);
        if choices.len() < 2 {
            continue;
        }
        let current = parent.gene(gene);
        let others: Vec<usize> = choices.iter().copied().filter(|&c| c != current).collect();
        child.set_gene(gene, others[rng.random_range(0..others.len())]);
    }
    child
}

/// Gene-wise uniform crossover: each gene from `a` with probability 1/2, else from `b`.
pub fn crossover(space: &Space, a: &Arch, b: &Arch, rng: &mut impl Rng) -> Arch {
    let mut child = a.clone();
    for gene in space.genes() {
        if !rng.random_bool(0.5) {
            child.set_gene(gene, b.gene(gene));
        }
    }
    child
}
