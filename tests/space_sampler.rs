//! Sampler statistics and invariants: determinism per seed, every sampled arch validates (many seeds),
//! uniform frequencies, FLOPs-range rejection, mutation and crossover invariants, the attentive
//! sampler's bin landing (except counted fallbacks), prior and conditional reproduction, BestUp/WorstUp.
//!
//! Statistical tolerances are 5 binomial standard deviations (sqrt(p (1 - p) / n)): a correct sampler
//! fails one check with probability under 1e-6, and the seeds are fixed, so the tests are deterministic.

use attnas::space::attentive::{flops_bin, select, AttentiveSampler, Prior, Selection, MAX_DRAWS};
use attnas::space::table::{self, TableEntry, TableMethod};
use attnas::space::{flops, sampler, Arch, Gene, Space};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn space() -> Space {
    Space::builtin("attentivenas").unwrap()
}

fn five_sigma(p: f64, n: usize) -> f64 {
    5.0 * (p * (1.0 - p) / n as f64).sqrt()
}

#[test]
fn samplers_are_deterministic_per_seed_and_always_valid() {
    let s = space();
    let t = Space::builtin("tiny").unwrap();
    for seed in 0..200u64 {
        for sp in [&s, &t] {
            let mut r1 = StdRng::seed_from_u64(seed);
            let mut r2 = StdRng::seed_from_u64(seed);
            let a = sampler::uniform(sp, &mut r1);
            assert_eq!(a, sampler::uniform(sp, &mut r2));
            assert!(sp.validate(&a).is_ok());
            let b = sampler::uniform(sp, &mut r1);
            let _ = sampler::uniform(sp, &mut r2);
            let m = sampler::mutate(sp, &a, 0.3, false, &mut r1);
            assert_eq!(m, sampler::mutate(sp, &a, 0.3, false, &mut r2));
            assert!(sp.validate(&m).is_ok());
            let c = sampler::crossover(sp, &a, &b, &mut r1);
            assert_eq!(c, sampler::crossover(sp, &a, &b, &mut r2));
            assert!(sp.validate(&c).is_ok());
        }
    }
    assert!(s.validate(&s.min_arch()).is_ok() && s.validate(&s.max_arch()).is_ok());
}

#[test]
fn uniform_sampler_hits_every_choice_evenly() {
    let s = space();
    let mut rng = StdRng::seed_from_u64(11);
    let n = 20_000;
    let archs: Vec<Arch> = (0..n).map(|_| sampler::uniform(&s, &mut rng)).collect();
    for g in s.genes() {
        let choices = s.choices(g);
        let p = 1.0 / choices.len() as f64;
        for &c in choices {
            let f = archs.iter().filter(|a| a.gene(g) == c).count() as f64 / n as f64;
            assert!((f - p).abs() <= five_sigma(p, n), "{}: value {c} frequency {f} vs {p}", s.gene_name(g));
        }
    }
}

#[test]
fn uniform_in_range_lands_in_range_or_errors() {
    let s = space();
    let mut rng = StdRng::seed_from_u64(5);
    for (lo, hi) in [(200.0, 1200.0), (400.0, 450.0), (1500.0, 1600.0)] {
        for _ in 0..20 {
            let (a, f) = sampler::uniform_in_range(&s, lo, hi, sampler::RANGE_MAX_DRAWS, &mut rng).unwrap();
            assert!(f >= lo && f <= hi);
            assert_eq!(f, flops::mflops(&s, &a));
        }
    }
    // Outside the space, inverted, or too narrow for the budget: usage errors, no endless loop.
    for (lo, hi, budget) in [(10.0, 100.0, 1000), (2000.0, 3000.0, 1000), (500.0, 400.0, 1000), (203.5, 203.6, 50)] {
        let e = sampler::uniform_in_range(&s, lo, hi, budget, &mut rng).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }
}

#[test]
fn mutation_invariants() {
    let s = space();
    let mut rng = StdRng::seed_from_u64(21);
    let multi: Vec<Gene> = s.genes().into_iter().filter(|&g| s.choices(g).len() > 1).collect();
    let (mut changed, mut trials) = (0usize, 0usize);
    for _ in 0..2000 {
        let a = sampler::uniform(&s, &mut rng);
        // p = 0: unchanged. p = 1: every gene with a choice changes; single-choice genes stay.
        assert_eq!(sampler::mutate(&s, &a, 0.0, false, &mut rng), a);
        let m = sampler::mutate(&s, &a, 1.0, false, &mut rng);
        for g in s.genes() {
            assert_eq!(m.gene(g) != a.gene(g), s.choices(g).len() > 1, "{}", s.gene_name(g));
        }
        let m = sampler::mutate(&s, &a, 1.0, true, &mut rng);
        assert_eq!(m.resolution, a.resolution);
        // p = 0.2: each multi-choice gene changes with probability 0.2.
        let m = sampler::mutate(&s, &a, 0.2, false, &mut rng);
        changed += multi.iter().filter(|&&g| m.gene(g) != a.gene(g)).count();
        trials += multi.len();
    }
    let f = changed as f64 / trials as f64;
    assert!((f - 0.2).abs() < five_sigma(0.2, trials), "mutation rate {f}");
}

#[test]
fn crossover_invariants() {
    let s = space();
    let mut rng = StdRng::seed_from_u64(31);
    let (mut from_a, mut differing) = (0usize, 0usize);
    for _ in 0..2000 {
        let a = sampler::uniform(&s, &mut rng);
        let b = sampler::uniform(&s, &mut rng);
        assert_eq!(sampler::crossover(&s, &a, &a, &mut rng), a);
        let c = sampler::crossover(&s, &a, &b, &mut rng);
        for g in s.genes() {
            assert!(c.gene(g) == a.gene(g) || c.gene(g) == b.gene(g));
            if a.gene(g) != b.gene(g) {
                differing += 1;
                from_a += (c.gene(g) == a.gene(g)) as usize;
            }
        }
    }
    let f = from_a as f64 / differing as f64;
    assert!((f - 0.5).abs() < five_sigma(0.5, differing), "share from parent 1: {f}");
}

fn uniform_table(n: usize, seed: u64) -> Vec<TableEntry> {
    table::generate(&space(), n, TableMethod::Uniform, 25.0, &mut StdRng::seed_from_u64(seed))
}

#[test]
fn flops_bins_round_like_python() {
    // Python: round(x) sends exact .5 ties to the even neighbour.
    assert_eq!(flops_bin(212.5, 25.0), 8); // 8.5 -> 8
    assert_eq!(flops_bin(237.5, 25.0), 10); // 9.5 -> 10
    assert_eq!(flops_bin(203.4, 25.0), 8);
    assert_eq!(flops_bin(1939.3, 25.0), 78);
}

#[test]
fn candidates_land_in_the_target_bin_except_counted_fallbacks() {
    let s = space();
    let table = uniform_table(5000, 1);
    let mut sampler = AttentiveSampler::new(&s, &table, 25.0, Prior::Empirical).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let mut fallbacks = 0;
    for _ in 0..300 {
        let (bin, cands) = sampler.sample(3, &mut rng);
        assert_eq!(cands.len(), 3);
        for c in cands {
            assert!(s.validate(&c.arch).is_ok());
            assert_eq!(c.mflops, flops::mflops(&s, &c.arch));
            assert!(c.draws >= 1 && c.draws <= MAX_DRAWS);
            if c.landed {
                assert_eq!(flops_bin(c.mflops, 25.0), bin);
            } else {
                assert_eq!(c.draws, MAX_DRAWS);
                fallbacks += 1;
            }
        }
    }
    let st = sampler.stats();
    assert_eq!((st.targets, st.candidates, st.fallbacks), (300, 900, fallbacks));
    // With an empirical prior over a uniform table the targets sit in well-populated bins, where the
    // per-bin conditionals land most draws: fallbacks are rare.
    assert!(fallbacks < 90, "{fallbacks} fallbacks of 900");
    // One draw per candidate: most candidates miss and are kept anyway, and all are counted.
    let mut one = AttentiveSampler::new(&s, &table, 25.0, Prior::Empirical).unwrap().with_max_draws(1);
    let mut missed = 0;
    for _ in 0..100 {
        let (bin, cands) = one.sample(3, &mut rng);
        for c in &cands {
            assert_eq!(c.landed, flops_bin(c.mflops, 25.0) == bin);
            missed += !c.landed as u64;
        }
    }
    assert!(missed > 0);
    assert_eq!((one.stats().fallbacks, one.stats().draws), (missed, 300));
}

#[test]
fn empirical_and_uniform_priors_are_reproduced() {
    let s = space();
    let table = uniform_table(3000, 4);
    let n = 40_000;
    for prior in [Prior::Empirical, Prior::UniformBins] {
        let mut sampler = AttentiveSampler::new(&s, &table, 25.0, prior).unwrap();
        let bins = sampler.bins();
        // The prior is what the table says: bin counts / entries, or 1 / bins.
        for &(bin, count, p) in &bins {
            let want = match prior {
                Prior::Empirical => count as f64 / table.len() as f64,
                Prior::UniformBins => 1.0 / bins.len() as f64,
            };
            assert!((p - want).abs() < 1e-12, "bin {bin}");
            assert_eq!(count, table.iter().filter(|e| flops_bin(e.mflops, 25.0) == bin).count());
        }
        let mut rng = StdRng::seed_from_u64(9);
        let mut hits = std::collections::HashMap::<i64, usize>::new();
        for _ in 0..n {
            *hits.entry(sampler.sample_target(&mut rng)).or_insert(0) += 1;
        }
        for &(bin, _, p) in &bins {
            let f = *hits.get(&bin).unwrap_or(&0) as f64 / n as f64;
            assert!((f - p).abs() < five_sigma(p, n).max(1e-4), "{prior:?} bin {bin}: {f} vs {p}");
        }
        assert_eq!(hits.len(), bins.len());
    }
}

#[test]
fn per_bin_conditionals_match_the_table_and_are_what_is_drawn() {
    let s = space();
    let table = uniform_table(4000, 6);
    let mut sampler = AttentiveSampler::new(&s, &table, 25.0, Prior::Empirical).unwrap().with_max_draws(1);
    let bin = flops_bin(700.0, 25.0);
    let in_bin: Vec<&TableEntry> = table.iter().filter(|e| flops_bin(e.mflops, 25.0) == bin).collect();
    assert!(in_bin.len() > 50);
    let mut rng = StdRng::seed_from_u64(10);
    let n = 6000;
    // One draw per candidate: the candidate is a raw draw from the conditionals (landed or not).
    let draws = sampler.sample_candidates(bin, n, &mut rng).unwrap();
    for g in s.genes() {
        for &v in s.choices(g) {
            let want = in_bin.iter().filter(|e| e.arch.gene(g) == v).count() as f64 / in_bin.len() as f64;
            assert!((sampler.conditional(bin, g, v) - want).abs() < 1e-12);
            let got = draws.iter().filter(|c| c.arch.gene(g) == v).count() as f64 / n as f64;
            assert!((got - want).abs() < five_sigma(want, n).max(1e-4), "{}={v}: {got} vs {want}", s.gene_name(g));
        }
    }
    // A bin that is not in the table is a usage error.
    assert!(sampler.sample_candidates(10_000, 1, &mut rng).is_err());
}

#[test]
fn balanced_table_flattens_the_prior() {
    let s = space();
    let mut rng = StdRng::seed_from_u64(12);
    let uniform = table::generate(&s, 4000, TableMethod::Uniform, 25.0, &mut rng);
    let balanced = table::generate(&s, 4000, TableMethod::Balanced, 25.0, &mut rng);
    assert_eq!(balanced.len(), 4000);
    let max_share = |t: &[TableEntry]| {
        let sampler = AttentiveSampler::new(&s, t, 25.0, Prior::Empirical).unwrap();
        sampler.bins().iter().map(|b| b.2).fold(0.0, f64::max)
    };
    assert!(max_share(&balanced) < max_share(&uniform), "{} vs {}", max_share(&balanced), max_share(&uniform));
}

#[test]
fn bestup_and_worstup_selection() {
    let scores = [-2.5, -1.0, -3.0, -1.0];
    assert_eq!(select(Selection::BestUp, &scores).unwrap(), 1); // first of the tied maxima
    assert_eq!(select(Selection::WorstUp, &scores).unwrap(), 2);
    assert_eq!(select(Selection::BestUp, &[0.5]).unwrap(), 0);
    assert!(select(Selection::BestUp, &[]).is_err());
    assert!(select(Selection::WorstUp, &[1.0, f64::NAN]).unwrap_err().to_string().contains("score 1"));
    assert_eq!("bestup".parse::<Selection>().unwrap(), Selection::BestUp);
    assert!("best".parse::<Selection>().is_err());
}
