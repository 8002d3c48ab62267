//! What one training step does at the device seam, checked without a GPU profiler:
//! - NVTX ranges (src/timeline.rs, docs/profiling.md): the tree of ranges a step opens, read back with
//!   `timeline::record`. The phase tree is the same on every backend; with per-op ranges on, every kernel
//!   launch and GEMM of the CUDA backend (emulated here, a GPU when present) sits inside a phase.
//! - Counters (src/backend/counters.rs): a step after the first allocates and uploads nothing, and
//!   waits for the device only where it reads a value back.

use attnas::backend::cpu::CpuBackend;
use attnas::backend::{Arena, Backend, Dtype, OpCounts, SupernetOps};
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

/// Runs `n` steps (4, 5, ...) of the tiny supernet on `b`: each step's outcome, range events and device
/// counts (`None` on the CPU), and the bytes the setup allocated (supernet, activation arena, step
/// buffers; `None` on the CPU). With `Some(k)`, per-op ranges are off before step `k` and on from it
/// (the switch is process-wide, so only one test flips it: the CPU test passes `None`).
#[allow(clippy::type_complexity)]
fn steps<B: SupernetOps>(
    b: &B,
    n: u64,
    op_ranges_from: Option<u64>,
    dtype: Dtype,
) -> (Vec<(StepOutcome, Vec<Event>, Option<OpCounts>)>, Option<u64>) {
    let space = Space::builtin("tiny").unwrap();
    let setup_before = b.op_counts();
    let mut net = Supernet::new(b, space.clone(), 3).unwrap();
    net.set_precision(b, dtype).unwrap();
    let mut arena = Arena::new(b, "act", activation_arena_len(&space, N, SIDE, true, dtype).unwrap()).unwrap();
    let bufs = StepBuffers::new(b, N, SIDE, space.num_classes).unwrap();
    let setup_bytes = b.op_counts().zip(setup_before).map(|(after, before)| (after - before).allocated_bytes);
    let groups = net.param_groups(1e-5, &[".bn".into(), ".bias".into()]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let table = generate(&space, 300, TableMethod::Uniform, 0.05, &mut rng);
    let mut sampler = AttentiveSampler::new(&space, &table, 0.05, Prior::Empirical).unwrap();
    bufs.upload(b, &random_vec(9, N * SIDE * SIDE * 3, -2.0, 2.0), &[1, 7]).unwrap();
    let mut out = Vec::new();
    for step in 4..4 + n {
        let mut st =
            StepState { b, net: &net, arena: &mut arena, bufs: &bufs, groups: &groups, sampler: Some(&mut sampler) };
        if let Some(k) = op_ranges_from {
            timeline::set_op_ranges(step >= k);
        }
        let before = b.op_counts();
        let (outcome, events) = timeline::record(|| st.run(step, 0.05, &settings()).unwrap());
        let counts = b.op_counts().zip(before).map(|(after, before)| after - before);
        out.push((outcome, events, counts));
    }
    if op_ranges_from.is_some() {
        timeline::set_op_ranges(false);
    }
    (out, setup_bytes)
}

/// The phase tree of one step with 3 subnets and BestUp-2 (what docs/profiling.md shows), under the
/// root range `step N` ([`phases`]).
const PHASES: &[&str] = &[
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

/// The tree of step `step`: its root range, then [`PHASES`].
fn phases(step: u64) -> Vec<String> {
    std::iter::once(format!("step {step}")).chain(PHASES.iter().map(|p| p.to_string())).collect()
}

fn is_phase(line: &str) -> bool {
    PHASES.iter().any(|p| p.trim() == line.trim()) || line.starts_with("step ")
}

#[test]
fn a_step_opens_one_range_per_phase_on_the_cpu() {
    let (run, _) = steps(&CpuBackend::new(), 1, None, Dtype::F32);
    let (_, events, counts) = &run[0];
    assert_eq!(timeline::tree(events), phases(4), "the CPU backend opens no per-op ranges");
    assert_eq!(*counts, None, "the CPU backend has no device counters");
}

/// Two steps on each CUDA target (the emulator here), one supernet for both checks, since an emulated
/// step costs seconds:
/// - step 4, per-op ranges off (the default): the same phase tree as the CPU, nothing per op;
/// - step 5, per-op ranges on: the same phases, every kernel launch and GEMM inside one, the expected
///   kernels in the expected phases;
/// - step 5's device work (the second step): no allocation, no upload (the batch was uploaded before the
///   steps); one host read per attentive draw (its k scores together) and one of the subnets' losses
///   before the update, and one synchronisation (the end of the optimizer): a new wait cannot slip into
///   the step unnoticed;
/// - the setup's allocations equal `train::memory_plan` at the same batch and side.
#[test]
fn per_op_ranges_sit_inside_phases_and_a_later_step_allocates_nothing_and_waits_only_for_its_reads() {
    attnas::on_cuda_targets!("timeline per-op ranges and step device work", |b| {
        let (run, setup_bytes) = steps(&b, 2, Some(5), Dtype::F32);
        // the memory plan `bench train` reports is exactly what the step's setup allocated
        let plan =
            attnas::train::memory_plan::plan(&Space::builtin("tiny").unwrap(), N, SIDE, attnas::backend::Dtype::F32)
                .unwrap();
        assert_eq!(setup_bytes, Some(plan.total_bytes), "{}: planned {plan:?}", b.name());
        assert_eq!(timeline::tree(&run[0].1), phases(4), "{}: op ranges off", b.name());

        let (outcome, events, counts) = &run[1];
        let tree = timeline::tree(events);
        let found: Vec<&String> = tree.iter().filter(|l| is_phase(l)).collect();
        assert_eq!(found, phases(5).iter().collect::<Vec<_>>(), "{}: the phases around the op ranges", b.name());
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

/// The same guarantees in bf16 (issue #13 item 1): the setup allocates exactly the bf16 plan (the smaller
/// activation arena plus the bf16 weight copy), and a later step allocates nothing, uploads nothing and
/// waits only for its reads: the weight copy is refreshed by the optimizer, not re-uploaded.
#[test]
fn a_bf16_step_allocates_its_plan_up_front_and_nothing_inside() {
    attnas::on_cuda_targets!("bf16 step device work", |b| {
        let (run, setup_bytes) = steps(&b, 2, None, Dtype::Bf16);
        let space = Space::builtin("tiny").unwrap();
        let plan = attnas::train::memory_plan::plan(&space, N, SIDE, Dtype::Bf16).unwrap();
        let fp32 = attnas::train::memory_plan::plan(&space, N, SIDE, Dtype::F32).unwrap();
        assert_eq!(setup_bytes, Some(plan.total_bytes), "{}: planned {plan:?}", b.name());
        assert!(plan.activation_bytes < fp32.activation_bytes, "{plan:?} vs {fp32:?}");
        let c = run[1].2.expect("the CUDA backend counts");
        assert_eq!((c.allocations, c.uploads), (0, 0), "{}: {c:?}", b.name());
        assert_eq!((c.downloads, c.synchronizations), (2, 1), "{}: {c:?}", b.name());
        assert!(run.iter().all(|(o, _, _)| o.subnets.iter().all(|s| s.loss.is_finite())), "finite losses");
    });
}
