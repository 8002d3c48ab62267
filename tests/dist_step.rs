//! Data-parallel training step on CPU ranks (threads of this process, the test vehicle of the GPU path):
//! with 2 and 4 ranks, each on its own tiny batch of the tiny space,
//! - the parameters stay bit-identical on every rank over 20 steps (and do change);
//! - the gradient the optimizer sees is the mean of each rank's gradient computed alone on its inputs;
//! - the attentive choice is the same on every rank and is the choice made from the mean over ranks of
//!   the candidates' scores (with `global_scores: false`, each rank's own choice, as the original).
//!
//! Time: about 10-20 s in all on 2 cores (2-image batches, 28 px).

use std::sync::Mutex;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::{Arena, Backend};
use attnas::dist::sync::StepSync;
use attnas::dist::{threads, HostCollectives, Ranks, Timeouts};
use attnas::nn::backward::BackwardProgress;
use attnas::nn::{activation_arena_len, Supernet};
use attnas::space::attentive::{select, AttentiveSampler, Prior, Selection};
use attnas::space::table::{generate, TableMethod};
use attnas::space::Space;
use attnas::testing::random_vec;
use attnas::train::step::{
    CandidateScorer, MiddleSampling, OneRank, RankSync, StepBuffers, StepOutcome, StepSettings, StepState,
    SubnetOutcome,
};
use rand::SeedableRng;

const N: usize = 2;
const SIDE: usize = 28;

fn settings(sampling: MiddleSampling) -> StepSettings {
    StepSettings {
        label_smoothing: 0.1,
        kd: attnas::train::step::Distillation::Kl,
        dropout: 0.2,
        drop_connect: 0.2,
        drop_connect_only_last_two_stages: false,
        num_arch_training: 4,
        sampling,
        num_trials: 3,
        scorer: CandidateScorer::Loss,
        momentum: 0.9,
        clip: 1.0,
        seed: 7,
    }
}

/// Rank `rank`'s batch at `step`: different images and labels on every rank.
fn batch(rank: usize, step: u64) -> (Vec<f32>, Vec<u32>) {
    let images = random_vec(1000 * rank as u64 + step, N * SIDE * SIDE * 3, -2.0, 2.0);
    let labels = (0..N as u32).map(|i| (i * 7 + 3 * rank as u32 + step as u32) % 10).collect();
    (images, labels)
}

/// What a rank saw: the scores of each draw before and after the sync, and the gradient the optimizer read.
#[derive(Default, Clone)]
struct Seen {
    local_scores: Vec<Vec<f64>>,
    used_scores: Vec<Vec<f64>>,
    grads: Vec<Vec<f32>>,
}

/// Wraps a [`RankSync`] and records what went through it.
struct Spy<'a, S> {
    inner: S,
    grads: attnas::backend::Tensor,
    seen: &'a mut Seen,
}

impl<S: RankSync<CpuBackend>> RankSync<CpuBackend> for Spy<'_, S> {
    fn candidate_scores(&mut self, scores: &mut [f64]) -> attnas::error::Result<()> {
        self.seen.local_scores.push(scores.to_vec());
        self.inner.candidate_scores(scores)?;
        self.seen.used_scores.push(scores.to_vec());
        Ok(())
    }
    fn gradients_final(&mut self, b: &CpuBackend, done: BackwardProgress) -> attnas::error::Result<()> {
        self.inner.gradients_final(b, done)
    }
    fn before_update(&mut self, b: &CpuBackend, step: u64, subnets: &mut [SubnetOutcome]) -> attnas::error::Result<()> {
        self.inner.before_update(b, step, subnets)?;
        self.seen.grads.push(b.download(self.grads)?);
        Ok(())
    }
}

/// Runs `steps` steps as `rank` (or alone when `ranks` is `None`, on rank `rank`'s batches); returns the
/// outcomes, the final parameters and what went through the sync.
fn run_rank(
    ranks: Option<&dyn HostCollectives>,
    rank: usize,
    steps: u64,
    s: &StepSettings,
    global_scores: bool,
) -> (Vec<StepOutcome>, Vec<f32>, Seen) {
    let b = CpuBackend::new();
    let space = Space::builtin("tiny").unwrap();
    let net = Supernet::new(&b, space.clone(), 3).unwrap();
    let mut arena =
        Arena::new(&b, "act", activation_arena_len(&space, N, SIDE, true, attnas::backend::Dtype::F32).unwrap())
            .unwrap();
    let bufs = StepBuffers::new(&b, N, SIDE, space.num_classes).unwrap();
    let groups = net.param_groups(1e-5, &[".bn".into(), ".bias".into()]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let table = generate(&space, 500, TableMethod::Uniform, 0.05, &mut rng);
    let mut sampler = AttentiveSampler::new(&space, &table, 0.05, Prior::Empirical).unwrap();
    let mut seen = Seen::default();
    let mut outs = Vec::new();
    for step in 0..steps {
        let (images, labels) = batch(rank, step);
        bufs.upload(&b, &images, &labels).unwrap();
        let mut st = StepState {
            b: &b,
            net: &net,
            arena: &mut arena,
            bufs: &bufs,
            groups: &groups,
            sampler: Some(&mut sampler),
        };
        let grads = net.grads_arena();
        let out = match ranks {
            Some(r) => {
                let inner = StepSync::new(r, &net, 4096, global_scores); // small buckets: many of them
                st.run_ranked(step, 0.05, s, &mut Spy { inner, grads, seen: &mut seen })
            }
            None => st.run_ranked(step, 0.05, s, &mut Spy { inner: OneRank, grads, seen: &mut seen }),
        };
        outs.push(out.unwrap());
    }
    (outs, b.download(net.params_arena()).unwrap(), seen)
}

/// Every rank's result, in rank order.
fn run_world(
    world: usize,
    steps: u64,
    s: &StepSettings,
    global_scores: bool,
) -> Vec<(Vec<StepOutcome>, Vec<f32>, Seen)> {
    let group: Vec<Ranks> = threads::ranks(world, Timeouts::default()).unwrap();
    let results = Mutex::new(vec![None; world]);
    std::thread::scope(|scope| {
        for r in &group {
            let (r, results) = (r.clone(), &results);
            scope.spawn(move || {
                let out = run_rank(Some(r.as_ref()), r.rank(), steps, s, global_scores);
                results.lock().unwrap()[r.rank()] = Some(out);
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|o| o.expect("rank finished")).collect()
}

#[test]
fn parameters_stay_bit_identical_across_ranks_over_20_steps() {
    let s = settings(MiddleSampling::Attentive(Selection::BestUp));
    let init = {
        let b = CpuBackend::new();
        let net = Supernet::new(&b, Space::builtin("tiny").unwrap(), 3).unwrap();
        b.download(net.params_arena()).unwrap()
    };
    for world in [2, 4] {
        let results = run_world(world, 20, &s, true);
        let p0 = &results[0].1;
        assert_ne!(p0, &init, "the parameters were trained");
        for (r, (outs, p, _)) in results.iter().enumerate() {
            assert_eq!(outs.len(), 20);
            let same = p.iter().zip(p0).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "world {world}: rank {r}'s parameters differ from rank 0's after 20 steps");
            // the logged losses are the mean over ranks: the same on every rank
            for (o, o0) in outs.iter().zip(&results[0].0) {
                let bits = |o: &StepOutcome| o.subnets.iter().map(|s| s.loss.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(o), bits(o0));
            }
        }
    }
}

#[test]
fn the_reduced_gradient_is_the_mean_of_each_ranks_own_gradient() {
    // Uniform middle subnets: the archs depend on the seed only, so each rank alone trains the same ones.
    let s = settings(MiddleSampling::Uniform);
    for world in [2, 4] {
        let together = run_world(world, 1, &s, true);
        let alone: Vec<Vec<f32>> = (0..world).map(|r| run_rank(None, r, 1, &s, true).2.grads[0].clone()).collect();
        assert_ne!(alone[0], alone[1], "the ranks' own gradients differ (different batches)");
        let scale = 1.0 / world as f32;
        let mean: Vec<f32> =
            (0..alone[0].len()).map(|i| alone.iter().fold(0.0f32, |acc, g| acc + g[i]) * scale).collect();
        for (r, (_, _, seen)) in together.iter().enumerate() {
            let got = &seen.grads[0];
            let worst = got.iter().zip(&mean).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(
                got.iter().zip(&mean).all(|(a, b)| a.to_bits() == b.to_bits()),
                "world {world} rank {r}: reduced gradient != mean of the ranks' own (max abs diff {worst})"
            );
        }
    }
}

#[test]
fn the_attentive_choice_is_made_on_the_mean_score_and_is_the_same_on_every_rank() {
    let s = settings(MiddleSampling::Attentive(Selection::BestUp));
    for world in [2, 4] {
        let results = run_world(world, 4, &s, true);
        let draws = results[0].2.local_scores.len();
        assert_eq!(draws, 8, "2 attentive draws per step");
        let mut local_choice_differs = false;
        for d in 0..draws {
            let mean: Vec<f64> = (0..3)
                .map(|c| results.iter().map(|(_, _, seen)| seen.local_scores[d][c]).sum::<f64>() / world as f64)
                .collect();
            let want = select(Selection::BestUp, &mean).unwrap();
            for (r, (outs, _, seen)) in results.iter().enumerate() {
                assert_eq!(
                    seen.used_scores[d], mean,
                    "world {world} rank {r} draw {d}: scores are the mean over ranks"
                );
                let sub = &outs[d / 2].subnets[1 + d % 2];
                assert_eq!(sub.chosen, Some(want), "world {world} rank {r} draw {d}");
                assert_eq!(sub.arch, results[0].0[d / 2].subnets[1 + d % 2].arch, "same subnet on every rank");
                local_choice_differs |= select(Selection::BestUp, &seen.local_scores[d]).unwrap() != want;
            }
        }
        assert!(local_choice_differs, "world {world}: some rank's own batch would have chosen differently");
    }
    // global_scores: false reproduces the original: each rank chooses on its own batch.
    let results = run_world(2, 2, &s, false);
    for (outs, _, seen) in &results {
        for d in 0..4 {
            assert_eq!(seen.used_scores[d], seen.local_scores[d]);
            let own = select(Selection::BestUp, &seen.local_scores[d]).unwrap();
            assert_eq!(outs[d / 2].subnets[1 + d % 2].chosen, Some(own));
        }
    }
}
