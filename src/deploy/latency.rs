//! Timing the inference forward: warm-up runs, then repeated timed runs summarised as median, p10 and
//! p90 ([`Timing`]). The clock is the backend's ([`crate::backend::Backend::time_ms`]): CUDA events on a
//! GPU, the wall clock from a synchronised start to a synchronised end elsewhere. Weights are synthetic
//! ([`super::model::synthetic_subnet`]): latency does not depend on their values, so no checkpoint is
//! needed. Inputs are random images already at the measured side.
//!
//! CPU threads: `--threads T` sizes rayon's global pool (the CPU ops) and matrixmultiply's GEMM threads
//! (`MATMUL_NUM_THREADS`, read once at the first GEMM), so it must be applied before any work runs
//! ([`configure_cpu_threads`]).

use rand::{RngExt, SeedableRng};

use super::infer::{
    forward, infer_arena_len, run_block, run_head, run_resize, run_stem, BlockPlan, HeadPlan, InferPlan, ResizePlan,
    StemPlan,
};
use super::latency_table::{space_fingerprint, LayerKey, MeasureIdentity, Timing};
use super::model::{
    block_weights, head_weights, pack, stem_weights, synthetic_block, synthetic_head, synthetic_stem, synthetic_subnet,
    FoldedModel,
};
use super::table_build::LayerTimer;
use crate::backend::{upload_new, Arena, DeviceMemory, SupernetOps};
use crate::error::{Error, Result};
use crate::space::{Arch, Space};

/// Warm-up and timed runs per measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Repeats {
    pub warmup: usize,
    pub repeats: usize,
}

/// The numeric precision of a measurement (the kernels are f32; the flag is recorded so tables of a
/// later reduced-precision path are never mixed with f32 ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Fp32,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" | "f32" => Ok(Precision::Fp32),
            _ => Err(format!("precision '{s}' is not implemented; the engine and the exported models are fp32")),
        }
    }
}

impl Precision {
    pub fn name(self) -> &'static str {
        "fp32"
    }
}

/// Sizes rayon's global pool and matrixmultiply's threads to `threads` (0: leave the defaults, one
/// per core). Call before anything runs on the CPU; returns the thread count in effect.
pub fn configure_cpu_threads(threads: usize) -> Result<usize> {
    if threads > 0 {
        // matrixmultiply reads this once, at its first GEMM; nothing else has run yet (single-threaded here).
        std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| Error::Other(format!("--threads {threads}: cannot size the CPU thread pool: {e}")))?;
    }
    Ok(rayon::current_num_threads())
}

/// The CPU's model name (`/proc/cpuinfo`), or the architecture when it cannot be read.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The device part of a measurement's identity: `cpu: <model>` for the CPU backend, else the backend's
/// own description (`cuda:0 (NVIDIA H100 ..., sm_90)`, `emu (...)`).
pub fn device_description<B: SupernetOps>(b: &B) -> String {
    let name = b.name();
    if name.starts_with("cpu") {
        format!("cpu: {}", cpu_model())
    } else {
        name
    }
}

/// The identity of measurements made here with the attnas runtime.
pub fn identity_here<B: SupernetOps>(
    b: &B,
    space: &Space,
    batch: usize,
    input_side: Option<usize>,
    runtime: &str,
) -> MeasureIdentity {
    MeasureIdentity {
        device: device_description(b),
        runtime: runtime.to_string(),
        precision: Precision::Fp32.name().to_string(),
        threads: rayon::current_num_threads(),
        batch,
        input_side,
        space: space.name.clone(),
        space_fingerprint: space_fingerprint(space),
    }
}

/// Times `f` `r.warmup` times untimed, then `r.repeats` times.
pub fn time_runs<B: SupernetOps>(b: &B, r: Repeats, f: impl FnMut() -> Result<()>) -> Result<Timing> {
    summarize(&time_samples(b, r, f)?)
}

/// The timed runs' samples (ms) of [`time_runs`].
pub fn time_samples<B: SupernetOps>(b: &B, r: Repeats, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..r.warmup {
        f()?;
    }
    b.synchronize()?;
    let mut samples = Vec::with_capacity(r.repeats);
    for _ in 0..r.repeats.max(1) {
        samples.push(b.time_ms(&mut f)?);
    }
    Ok(samples)
}

fn summarize(samples: &[f64]) -> Result<Timing> {
    Timing::of(samples).ok_or_else(|| Error::Other("no timed runs".into()))
}

/// Timed runs split into rounds that visit every item in turn (round-robin), so that a slow period of
/// a shared host (another job, a frequency drop) spreads over all items instead of inflating the few
/// measured while it lasted; each item's median is over all its rounds' samples. Round 0 warms up with
/// `warmup` runs, later rounds with one (the item's weights and input were evicted by the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rounds {
    pub rounds: usize,
}

impl Rounds {
    /// Round `i`'s share of `r`: the timed runs spread as evenly as possible (every round times at
    /// least one run while runs remain; rounds beyond `r.repeats` are dropped).
    pub fn share(self, r: Repeats, i: usize) -> Repeats {
        let n = self.effective(r);
        let timed = r.repeats.max(1) / n + usize::from(i < r.repeats.max(1) % n);
        Repeats { warmup: if i == 0 { r.warmup } else { r.warmup.min(1) }, repeats: timed }
    }

    /// Rounds actually run for `r` (at least 1, at most one per timed run).
    pub fn effective(self, r: Repeats) -> usize {
        self.rounds.clamp(1, r.repeats.max(1))
    }
}

fn random_input<B: SupernetOps>(b: &B, len: usize, seed: u64) -> Result<B::Memory> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let host: Vec<f32> = (0..len).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    upload_new(b, &host)
}

/// Device memory for timing whole subnets of one space at one batch and input side (reused across
/// archs: an arena sized for the max subnet).
pub struct SubnetTimer<'a, B: SupernetOps> {
    b: &'a B,
    space: Space,
    batch: usize,
    side: Option<usize>,
    arena: Arena<B::Memory>,
    inputs: Vec<(usize, B::Memory)>,
}

impl<'a, B: SupernetOps> SubnetTimer<'a, B> {
    /// `side`: the side images arrive at (`None`: each subnet's own resolution, no resize).
    pub fn new(b: &'a B, space: &Space, batch: usize, side: Option<usize>) -> Result<Self> {
        if batch == 0 {
            return Err(Error::usage("--batch must be >= 1"));
        }
        // The max subnet at the largest resolution, from `side` (its resize included) or at its own.
        let plan_side = side.unwrap_or_else(|| space.resolutions.iter().copied().max().unwrap_or(1));
        let arena = Arena::new(b, "inference activations", infer_arena_len(space, batch, plan_side)?)?;
        Ok(SubnetTimer { b, space: space.clone(), batch, side, arena, inputs: Vec::new() })
    }

    /// Median / p10 / p90 of `arch`'s folded forward with synthetic weights.
    pub fn measure(&mut self, arch: &Arch, r: Repeats, seed: u64) -> Result<Timing> {
        summarize(&self.samples(arch, r, seed)?)
    }

    /// The timed runs (ms) of [`Self::measure`].
    pub fn samples(&mut self, arch: &Arch, r: Repeats, seed: u64) -> Result<Vec<f64>> {
        let b = self.b;
        let model = FoldedModel::upload(b, &self.space, arch, &synthetic_subnet(&self.space, arch, seed)?)?;
        let side = self.side.unwrap_or(arch.resolution);
        if !self.inputs.iter().any(|(s, _)| *s == side) {
            let mem = random_input(b, self.batch * side * side * 3, seed ^ side as u64)?;
            self.inputs.push((side, mem));
        }
        let input = self
            .inputs
            .iter()
            .find(|(s, _)| *s == side)
            .map(|(_, m)| m.tensor())
            .ok_or_else(|| Error::Other("input".into()))?;
        self.arena.reset();
        let plan = InferPlan::allocate(&self.space, arch, self.batch, input, side, &mut self.arena)?;
        time_samples(b, r, || forward(b, &plan, &model))
    }
}

/// Times one layer of the table alone (synthetic weights, random input), exactly as the whole forward
/// runs it.
pub fn measure_layer<B: SupernetOps>(
    b: &B,
    space: &Space,
    key: &LayerKey,
    batch: usize,
    r: Repeats,
    seed: u64,
) -> Result<Timing> {
    summarize(&layer_samples(b, space, key, batch, r, seed)?)
}

/// The timed runs (ms) of [`measure_layer`].
pub fn layer_samples<B: SupernetOps>(
    b: &B,
    space: &Space,
    key: &LayerKey,
    batch: usize,
    r: Repeats,
    seed: u64,
) -> Result<Vec<f64>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = batch;
    match key {
        LayerKey::Resize { side, r: res } => {
            let input = random_input(b, n * side * side * 3, seed)?;
            let mut arena = Arena::new(b, "layer", n * res * res * 3 + 64)?;
            let plan = ResizePlan::allocate(n, *side, *res, input.tensor(), &mut arena)?;
            time_samples(b, r, || run_resize(b, &plan))
        }
        LayerKey::Stem { r: res, c } => {
            let (_mem, w) = pack(b, &synthetic_stem(*c, space.stem.kernel, &mut rng), |take| {
                stem_weights(take, *c, space.stem.kernel)
            })?;
            let input = random_input(b, n * res * res * 3, seed)?;
            let s = space.stem_size(*res);
            let mut arena = Arena::new(b, "layer", 2 * n * s * s * c + 256)?;
            let plan = StemPlan::allocate(n, *res, *c, input.tensor(), &mut arena)?;
            time_samples(b, r, || run_stem(b, &plan, &w))
        }
        LayerKey::Block { .. } => {
            let blk = key.block(space).ok_or_else(|| {
                Error::Other(format!("latency table: key '{key}' names no block of space '{}'", space.name))
            })?;
            let (_mem, w) = pack(b, &synthetic_block(0, &blk, &mut rng), |take| block_weights(take, 0, &blk))?;
            let input = random_input(b, n * blk.size_in * blk.size_in * blk.c_in, seed)?;
            let mut counting = Arena::measuring("layer");
            BlockPlan::allocate(&blk, n, input.tensor(), &mut counting)?;
            let mut arena = Arena::new(b, "layer", counting.used() + 64)?;
            let plan = BlockPlan::allocate(&blk, n, input.tensor(), &mut arena)?;
            time_samples(b, r, || run_block(b, &plan, &w))
        }
        LayerKey::Head { c_in, .. } => {
            let shape = key.head_shape(space).ok_or_else(|| Error::Other(format!("key '{key}' names no head")))?;
            let size = shape.size;
            let (_mem, w) = pack(b, &synthetic_head(&shape, &mut rng), head_weights)?;
            let input = random_input(b, n * size * size * c_in, seed)?;
            let mut counting = Arena::measuring("layer");
            HeadPlan::allocate(&shape, n, input.tensor(), &mut counting)?;
            let mut arena = Arena::new(b, "layer", counting.used() + 64)?;
            let plan = HeadPlan::allocate(&shape, n, input.tensor(), &mut arena)?;
            time_samples(b, r, || run_head(b, &plan, &w))
        }
    }
}

/// This engine on a backend as a [`LayerTimer`] (the `attnas` runtime): layers and whole subnets
/// timed in [`Rounds`].
pub struct EngineTimer<'a, B: SupernetOps> {
    b: &'a B,
    space: Space,
    identity: MeasureIdentity,
    layer_repeats: Repeats,
    subnet_repeats: Repeats,
    rounds: Rounds,
    seed: u64,
    subnets: SubnetTimer<'a, B>,
}

impl<'a, B: SupernetOps> EngineTimer<'a, B> {
    /// `layer_repeats` for each key of a table, `subnet_repeats` for each whole forward, both split
    /// into `rounds`.
    pub fn new(
        b: &'a B,
        space: &Space,
        batch: usize,
        input_side: Option<usize>,
        (layer_repeats, subnet_repeats): (Repeats, Repeats),
        rounds: Rounds,
        seed: u64,
    ) -> Result<Self> {
        Ok(EngineTimer {
            b,
            space: space.clone(),
            identity: identity_here(b, space, batch, input_side, "attnas"),
            layer_repeats,
            subnet_repeats,
            rounds,
            seed,
            subnets: SubnetTimer::new(b, space, batch, input_side)?,
        })
    }
}

/// Runs `rounds` of `sample(i, round_repeats)` over every item in turn, then summarises each item.
fn round_robin(
    n: usize,
    r: Repeats,
    rounds: Rounds,
    done: &mut dyn FnMut(usize, &Timing),
    mut sample: impl FnMut(usize, Repeats) -> Result<Vec<f64>>,
) -> Result<Vec<Timing>> {
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds.effective(r) {
        let share = rounds.share(r, round);
        for (i, samples) in all.iter_mut().enumerate() {
            let got = sample(i, share)?;
            done(i, &summarize(&got)?);
            samples.extend(got);
        }
    }
    all.iter().map(|s| summarize(s)).collect()
}

impl<B: SupernetOps> LayerTimer for EngineTimer<'_, B> {
    fn identity(&self) -> &MeasureIdentity {
        &self.identity
    }

    fn passes(&self, whole_subnets: bool) -> usize {
        self.rounds.effective(if whole_subnets { self.subnet_repeats } else { self.layer_repeats })
    }

    fn layers(&mut self, keys: &[LayerKey], done: &mut dyn FnMut(usize, &Timing)) -> Result<Vec<Timing>> {
        let (b, space, batch, seed) = (self.b, &self.space, self.identity.batch, self.seed);
        round_robin(keys.len(), self.layer_repeats, self.rounds, done, |i, r| {
            layer_samples(b, space, &keys[i], batch, r, seed ^ i as u64)
        })
    }

    fn subnets(&mut self, archs: &[Arch], done: &mut dyn FnMut(usize, &Timing)) -> Result<Vec<Timing>> {
        let (seed, timer) = (self.seed, &mut self.subnets);
        round_robin(archs.len(), self.subnet_repeats, self.rounds, done, |i, r| {
            timer.samples(&archs[i], r, seed ^ (i as u64) << 8)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_share_the_timed_runs_and_warm_up_fully_once() {
        let r = Repeats { warmup: 5, repeats: 30 };
        for rounds in [1, 2, 4, 5, 7, 30, 31, 100] {
            let k = Rounds { rounds };
            let n = k.effective(r);
            assert_eq!(n, rounds.min(30));
            let shares: Vec<Repeats> = (0..n).map(|i| k.share(r, i)).collect();
            assert_eq!(shares.iter().map(|s| s.repeats).sum::<usize>(), 30, "rounds {rounds}");
            assert!(shares.iter().all(|s| s.repeats >= 1), "rounds {rounds}: {shares:?}");
            let (lo, hi) = (shares.iter().map(|s| s.repeats).min(), shares.iter().map(|s| s.repeats).max());
            assert!(hi.unwrap() - lo.unwrap() <= 1, "uneven split {shares:?}");
            assert_eq!(shares[0].warmup, 5);
            assert!(shares[1..].iter().all(|s| s.warmup == 1));
        }
        assert_eq!(Rounds { rounds: 0 }.effective(r), 1);
    }

    /// Ten items of equal true cost 1 ms, ten timed runs each; runs 30..70 (in time order) take 3 ms, as
    /// when another job shares the host for a while. Measured one after the other, the items timed
    /// during the slow period read 3 ms; in five rounds every item has at most two slow rounds of five
    /// (4 of its 10 samples), so every median stays at 1 ms.
    #[test]
    fn round_robin_spreads_a_slow_period_over_all_items() {
        let r = Repeats { warmup: 0, repeats: 10 };
        let run = |rounds: usize| {
            let mut runs = 0usize;
            let mut order = Vec::new();
            let t = round_robin(10, r, Rounds { rounds }, &mut |_, _| {}, |i, share| {
                order.push(i);
                let samples = (runs..runs + share.repeats).map(|t| if (30..70).contains(&t) { 3.0 } else { 1.0 });
                runs += share.repeats;
                Ok(samples.collect())
            })
            .unwrap();
            (t, order)
        };
        let (one, order) = run(1);
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        assert!(one.iter().any(|t| t.median_ms == 3.0), "the slow period must show when measured in one go");
        let (five, order) = run(5);
        assert_eq!(order, (0..5).flat_map(|_| 0..10).collect::<Vec<_>>(), "each round visits every item in turn");
        assert!(five.iter().all(|t| t.median_ms == 1.0), "{five:?}");
    }
}
