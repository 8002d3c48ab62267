//! Shared by the training-step tests (`train_sandwich_reference`, `attentive_scoring`): the losses of
//! spec 3.2 written out here in f64 from their definitions (not through `backend::cpu::loss`), and a
//! CPU training-step fixture whose candidates do not tie: the tiny supernet with random non-zero BN gammas
//! (`nn_common::randomized`; at AttentiveNAS's init every project-BN gamma is 0 and subnets that differ
//! only in depth, kernel or expand give identical logits), random momentum, a random batch and an
//! attentive sampler, and a classifier scaled up so the logits are far from uniform. Needs `mod nn_common;` beside `mod step_common;` in the test crate.
#![allow(dead_code)]

use attnas::backend::cpu::{CpuBackend, HostMemory};
use attnas::backend::ops::optimizer::ParamGroup;
use attnas::backend::Arena;
use attnas::nn::{activation_arena_len, NamedTensor, Supernet};
use attnas::space::attentive::{AttentiveSampler, Prior, Selection};
use attnas::space::table::{generate, TableMethod};
use attnas::space::Space;
use attnas::testing::random_vec;
use attnas::train::step::{
    CandidateScorer, Distillation, MiddleSampling, StepBuffers, StepOutcome, StepSettings, StepState,
};
use rand::SeedableRng;

use crate::nn_common::{input, tiny_net};

/// Batch of 4 images of 28 x 28 (each subnet resizes them to its resolution, 24 or 32).
pub const N: usize = 4;
pub const SIDE: usize = 28;
/// Coupled weight decay on conv / linear weights. The recipe's 1e-5 moves a parameter by ~1e-9 per
/// step, below what the update comparison can resolve, so the tests use 1e-2 to make a wrong group visible.
pub const WEIGHT_DECAY: f32 = 1e-2;
/// Scale of the classifier weights and bias over their initialisation.
pub const CLASSIFIER_GAIN: f32 = 20.0;
/// The recipe's no-decay keywords (spec 3.1).
pub const NO_DECAY: [&str; 2] = [".bn", ".bias"];

/// log_softmax of one row in f64 (max-subtracted).
pub fn log_softmax(z: &[f32]) -> Vec<f64> {
    let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    z.iter().map(|&v| v as f64 - m - lse).collect()
}

/// Label-smoothed CE (spec 3.2): target = (1 - eps) onehot(y) + eps / k, loss = mean over the batch of
/// -sum_c target_c log_softmax(z)_c. Returns the loss and its gradient (softmax(z) - target) / n.
pub fn label_smoothed_ce(logits: &[f32], labels: &[u32], k: usize, eps: f64) -> (f64, Vec<f64>) {
    let n = labels.len();
    let (mut loss, mut grad) = (0.0, vec![0.0; n * k]);
    for (i, &y) in labels.iter().enumerate() {
        let ls = log_softmax(&logits[i * k..][..k]);
        for c in 0..k {
            let target = eps / k as f64 + if c == y as usize { 1.0 - eps } else { 0.0 };
            loss -= target * ls[c] / n as f64;
            grad[i * k + c] = (ls[c].exp() - target) / n as f64;
        }
    }
    (loss, grad)
}

/// Soft CE of in-place distillation (spec 3.2): mean over the batch of -sum_c softmax(T)_c
/// log_softmax(z)_c, temperature 1, the teacher `T` a constant. Returns the loss and its gradient with
/// respect to `z` only, (softmax(z) - softmax(T)) / n.
pub fn soft_ce(logits: &[f32], teacher: &[f32], k: usize) -> (f64, Vec<f64>) {
    let n = logits.len() / k;
    let (mut loss, mut grad) = (0.0, vec![0.0; n * k]);
    for i in 0..n {
        let (ls, lt) = (log_softmax(&logits[i * k..][..k]), log_softmax(&teacher[i * k..][..k]));
        for c in 0..k {
            loss -= lt[c].exp() * ls[c] / n as f64;
            grad[i * k + c] = (ls[c].exp() - lt[c].exp()) / n as f64;
        }
    }
    (loss, grad)
}

/// The step settings of these tests: the recipe (spec 3.2-3.4) except a raised drop-connect rate (0.6,
/// so that some of the 4 samples are dropped in the tiny space's two eligible blocks) and the given
/// middle-subnet count, candidates per draw and gradient clip.
pub fn settings(selection: Selection, num_arch_training: usize, num_trials: usize, clip: f32) -> StepSettings {
    StepSettings {
        label_smoothing: 0.1,
        kd: Distillation::Kl,
        dropout: 0.2,
        drop_connect: 0.6,
        drop_connect_only_last_two_stages: true,
        num_arch_training,
        sampling: MiddleSampling::Attentive(selection),
        num_trials,
        scorer: CandidateScorer::Loss,
        momentum: 0.9,
        clip,
        seed: 7,
    }
}

/// The tiny supernet on the CPU with everything one training step needs.
pub struct Fixture {
    pub b: CpuBackend,
    pub space: Space,
    pub net: Supernet<HostMemory>,
    pub arena: Arena<HostMemory>,
    pub bufs: StepBuffers<HostMemory>,
    pub groups: Vec<ParamGroup>,
    pub sampler: AttentiveSampler,
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Fixture {
    /// Randomized weights from `seed`, momentum uniform in [-0.05, 0.05), a random batch with labels
    /// spread over the classes, and a sampler over a 500-entry table of the tiny space.
    pub fn new(seed: u64) -> Fixture {
        let b = CpuBackend::new();
        let space = Space::builtin("tiny").unwrap();
        let (net, mut named) = tiny_net(&b, seed);
        // Logits of a freshly initialised net are nearly uniform (losses ~ ln 10), where the losses and
        // choices of different rules (which teacher, which regulariser) differ little; a larger classifier
        // spreads them.
        for t in named.iter_mut().filter(|t| t.name.starts_with("classifier.")) {
            t.data.iter_mut().for_each(|v| *v *= CLASSIFIER_GAIN);
        }
        let momentum: Vec<NamedTensor> = net
            .table
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| NamedTensor {
                name: format!("optimizer.momentum.{}", p.name),
                shape: p.torch_shape.clone(),
                data: random_vec(seed * 1000 + i as u64, p.torch_len(), -0.05, 0.05),
            })
            .collect();
        let all: Vec<NamedTensor> = named.into_iter().chain(momentum).collect();
        assert!(net.load_named(&b, &all, "test weights and momentum").unwrap(), "momentum loaded");
        let arena =
            Arena::new(&b, "act", activation_arena_len(&space, N, SIDE, true, attnas::backend::Dtype::F32).unwrap())
                .unwrap();
        let bufs = StepBuffers::new(&b, N, SIDE, space.num_classes).unwrap();
        let keywords: Vec<String> = NO_DECAY.iter().map(|s| s.to_string()).collect();
        let groups = net.param_groups(WEIGHT_DECAY, &keywords).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 5);
        let table = generate(&space, 500, TableMethod::Uniform, 0.05, &mut rng);
        let sampler = AttentiveSampler::new(&space, &table, 0.05, Prior::Empirical).unwrap();
        let images = input(seed + 100, N, SIDE);
        let labels: Vec<u32> = (0..N as u32).map(|i| (i * 3 + seed as u32) % space.num_classes as u32).collect();
        bufs.upload(&b, &images, &labels).unwrap();
        Fixture { b, space, net, arena, bufs, groups, sampler, images, labels }
    }

    /// The weights, running statistics and momentum in PyTorch layout.
    pub fn named(&self) -> Vec<NamedTensor> {
        self.net.to_named(&self.b, true).unwrap()
    }

    /// A `StepState` over this fixture.
    pub fn state(&mut self) -> StepState<'_, CpuBackend> {
        StepState {
            b: &self.b,
            net: &self.net,
            arena: &mut self.arena,
            bufs: &self.bufs,
            groups: &self.groups,
            sampler: Some(&mut self.sampler),
        }
    }

    /// Runs training step `step` at learning rate `lr` on the fixture's batch.
    pub fn step(&mut self, step: u64, lr: f32, s: &StepSettings) -> StepOutcome {
        self.state().run(step, lr, s).unwrap()
    }

    /// The supernet's gradient arena (the sum the last step accumulated) in PyTorch layout, by name.
    pub fn grads(&self) -> Vec<NamedTensor> {
        crate::nn_common::named_grads(&self.b, &self.net)
    }
}

/// The named tensor `name` of `named`.
pub fn tensor<'a>(named: &'a [NamedTensor], name: &str) -> &'a NamedTensor {
    named.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
}
