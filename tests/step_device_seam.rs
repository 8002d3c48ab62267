//! What one training step does at the device seam, checked without a GPU profiler:
//! - NVTX ranges (src/timeline.rs, docs/profiling.md): the tree of ranges a step opens, read back with
//!   `timeline::record`. The phase tree is the same on every backend; with per-op ranges on, every kernel
//!   launch and GEMM of the CUDA backend (emulated here, a GPU when present) sits inside a phase.
//! - Counters (src/backend/counters.rs): a step after the first allocates and uploads nothing, and
//!   waits for the device only where it reads a value back.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::{Arena, Backend, OpCounts, SupernetOps};
use attnas::nn::{activation_arena_len, Supernet};
use attnas::space::attentive::{AttentiveSampler, Prior, Selection};
use attnas::space::table::{generate, TableMethod};
use attnas::space::Space;
use attnas::testing::random_vec;
use attnas::timeline::{self, Event};
use attnas::train::step::{
    CandidateScorer, Distillation, MiddleSampling, StepBuffers, StepOutcome, StepSettings, StepState,
};
use rand::SeedableRng;

const N: usize = 2;
const SIDE: usize = 28;

fn settings() -> StepSettings {
    StepSettings {
        label_smoothing: 0.1,
        dropout: 0.0,
        drop_connect: 0.0,
        drop_connect_only_last_two_stages: false,
        kd: Distillation::Kl,
        num_arch_training: 3,
        sampling: MiddleSampling::Attentive(Selection::BestUp),
        num_trials: 2,
        scorer: CandidateScorer::Loss,
        momentum: 0.9,
        clip: 1.0,
        seed: 3,
    }
}

/// The range events of step 4 of the tiny supernet on `b`.
fn one_step<B: SupernetOps>(b: &B) -> Vec<Event> {
    steps(b, 1).1
}

/// Runs `n` steps (4, 5, ...) of the tiny supernet on `b`: the last step's outcome, range events and
/// device counts (`None` on the CPU).
fn steps<B: SupernetOps>(b: &B, n: u64) -> (StepOutcome, Vec<Event>, Option<OpCounts>) {
    let space = Space::builtin("tiny").unwrap();
    let net = Supernet::new(b, space.clone(), 3).unwrap();
    let mut arena = Arena::new(b, "act", activation_arena_len(&space, N, SIDE, true).unwrap()).unwrap();
    let bufs = StepBuffers::new(b, N, SIDE, space.num_classes).unwrap();
    let groups = net.param_groups(1e-5, &[".bn".into(), ".bias".into()]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let table = generate(&space, 300, TableMethod::Uniform, 0.05, &mut rng);
    let mut sampler = AttentiveSampler::new(&space, &table, 0.05, Prior::Empirical).unwrap();
    bufs.upload(b, &random_vec(9, N * SIDE * SIDE * 3, -2.0, 2.0), &[1, 7]).unwrap();
    let mut last = None;
    for step in 4..4 + n {
        let mut st =
            StepState { b, net: &net, arena: &mut arena, bufs: &bufs, groups: &groups, sampler: Some(&mut sampler) };
        let before = b.op_counts();
        let (outcome, events) = timeline::record(|| st.run(step, 0.05, &settings()).unwrap());
        let counts = b.op_counts().zip(before).map(|(after, before)| after - before);
        last = Some((outcome, events, counts));
    }
    last.unwrap()
}

/// The phase tree of one step with 3 subnets and BestUp-2 (what docs/profiling.md shows).
const PHASES: &[&str] = &[
    "step 4",
    "  zero gradients",
    "  max forward",
    "  max loss",
    "  max backward",
    "  candidate scoring",
    "    candidate forward",
    "    candidate forward",
    "    ranks: candidate scores",
    "  sampled forward",
    "  sampled loss",
    "  sampled backward",
    "  min forward",
    "  min loss",
    "  min backward",
    "  read losses",
    "  ranks: gradients and checks",
    "  optimizer",
];

fn is_phase(line: &str) -> bool {
    PHASES.iter().any(|p| p.trim() == line.trim()) || line == "step 4"
}

#[test]
fn a_step_opens_one_range_per_phase_on_the_cpu() {
    let tree = timeline::tree(&one_step(&CpuBackend::new()));
    assert_eq!(tree, PHASES, "the CPU backend opens no per-op ranges");
}

#[test]
fn per_op_ranges_name_every_kernel_inside_its_phase_on_cuda_targets() {
    attnas::on_cuda_targets!("timeline per-op ranges", |b| {
        // Off (the default): the same phase tree as the CPU, nothing per op.
        timeline::set_op_ranges(false);
        assert_eq!(timeline::tree(&one_step(&b)), PHASES, "{}: op ranges off", b.name());

        timeline::set_op_ranges(true);
        let tree = timeline::tree(&one_step(&b));
        timeline::set_op_ranges(false);
        let phases: Vec<&String> = tree.iter().filter(|l| is_phase(l)).collect();
        assert_eq!(phases, PHASES, "{}: the phases around the op ranges", b.name());
        let mut phase = "";
        let mut ops_in = std::collections::BTreeMap::<&str, Vec<&str>>::new();
        for line in &tree {
            if is_phase(line) {
                phase = line.trim();
                continue;
            }
            assert!(line.starts_with("    "), "{}: op range '{line}' outside a phase", b.name());
            ops_in.entry(phase).or_default().push(line.trim());
        }
        let has = |phase: &str, op: &str| ops_in.get(phase).is_some_and(|ops| ops.contains(&op));
        for phase in ["max forward", "sampled forward", "min forward", "candidate forward"] {
            assert!(has(phase, "depthwise_fwd_f32") && has(phase, "gemm"), "{}: {phase}: {ops_in:?}", b.name());
        }
        assert!(has("max backward", "depthwise_bwd_input_f32"), "{}: {ops_in:?}", b.name());
        assert!(has("max loss", "label_smoothing_ce_fwd_f32"), "{}: {ops_in:?}", b.name());
        assert!(has("min loss", "soft_ce_bwd_f32"), "{}: distilled: {ops_in:?}", b.name());
        let optimizer = &ops_in["optimizer"];
        assert!(!optimizer.is_empty() && optimizer.iter().all(|op| *op == "sgd_nesterov_step_f32"), "{optimizer:?}");
    });
}

/// The second of two steps: no allocation, no upload (the batch was uploaded before the steps); one host
/// read per attentive draw (its k scores together) and one of the subnets' losses before the update, and
/// one synchronisation (the end of the optimizer): a new wait cannot slip into the step unnoticed.
#[test]
fn a_step_after_the_first_allocates_nothing_and_waits_only_for_its_reads() {
    assert_eq!(steps(&CpuBackend::new(), 1).2, None, "the CPU backend has no device counters");
    attnas::on_cuda_targets!("step device work", |b| {
        let (outcome, _, counts) = steps(&b, 2);
        let c = counts.expect("the CUDA backend counts");
        let candidates: usize = outcome.subnets.iter().map(|s| s.candidates.len()).sum();
        assert_eq!(candidates, 2, "BestUp-2: one draw of 2 candidates");
        assert_eq!(c.allocations, 0, "{}: {c:?}", b.name());
        assert_eq!(c.uploads, 0, "{}: {c:?}", b.name());
        assert_eq!(c.downloads, 2, "{}: one draw + the losses: {c:?}", b.name());
        assert_eq!(c.synchronizations, 1, "{}: {c:?}", b.name());
        assert!(c.launches > 100 && c.gemms > 20, "{}: a step of 3 subnets + 2 candidates: {c:?}", b.name());
    });
}
