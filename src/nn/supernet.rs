//! The supernet's memory and its entry points: one arena each for parameters, gradients, momentum (same
//! offsets, from the [`ParamTable`]) and BN running statistics; initialisation (spec 1.5); a subnet's
//! forward and backward on a caller's activation arena; the weights as named tensors in PyTorch's
//! layout (checkpoints, export, import).
//!
//! Precision (issue #13 item 1): in bf16 the supernet also holds a bf16 copy of the parameter arena (same
//! offsets) that the trunk's 1x1 convs read; the f32 parameters stay the master weights. The copy is
//! written whenever the parameters are (initialisation, loading, switching precision) and refreshed by
//! the optimizer step in the same pass ([`Supernet::param_groups`] hands each group its copy).

use rand::{RngExt, SeedableRng};

use super::backward::{backward, BackwardProgress};
use super::forward::forward;
use super::handles::{NetStats, NetTensors};
use super::params::{Init, ParamSpec, ParamTable};
use super::tape::{ForwardOptions, GradBuffers, Tape};
use crate::backend::ops::optimizer::ParamGroup;
use crate::backend::{Arena, Backend, DeviceMemory, Dtype, SupernetOps, Tensor};
use crate::error::{Error, Result};
use crate::space::{Arch, Space};

/// A named tensor in PyTorch's layout and shape (what checkpoints hold).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub struct Supernet<M: DeviceMemory> {
    pub space: Space,
    pub table: ParamTable,
    params_mem: M,
    grads_mem: M,
    momentum_mem: M,
    stats_mem: M,
    params: NetTensors,
    grads: NetTensors,
    stats: NetStats,
    /// Storage type of the activations of every forward and backward (f32 unless set).
    precision: Dtype,
    /// The bf16 copy of the parameter arena and its views, in bf16 only.
    copy: Option<(M, NetTensors)>,
}

/// Initial values of one tensor (spec 1.5) in our layout, drawn from `rng` in PyTorch's.
fn initial_values(p: &ParamSpec, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
    match p.init {
        Init::Const(v) => vec![v; p.len],
        Init::KaimingUniform { fan_in } | Init::BiasUniform { fan_in } => {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            p.from_torch(&(0..p.torch_len()).map(|_| rng.random_range(-bound..bound)).collect::<Vec<_>>())
        }
    }
}

impl<M: DeviceMemory> Supernet<M> {
    /// Allocates the supernet of `space` on `b` and initialises it from `seed`.
    pub fn new<B: Backend<Memory = M>>(b: &B, space: Space, seed: u64) -> Result<Self> {
        let table = ParamTable::new(&space)?;
        let alloc = |len: usize, what: &str| {
            b.alloc(len).map_err(|e| Error::Other(format!("allocating the supernet's {what} ({len} f32): {e}")))
        };
        let params_mem = alloc(table.params_len, "parameters")?;
        let grads_mem = alloc(table.params_len, "gradients")?;
        let momentum_mem = alloc(table.params_len, "momentum")?;
        let stats_mem = alloc(table.buffers_len.max(1), "BN running statistics")?;
        let params = NetTensors::new(&space, &table, params_mem.tensor())?;
        let grads = NetTensors::new(&space, &table, grads_mem.tensor())?;
        let stats = NetStats::new(&space, &table, stats_mem.tensor())?;
        let net = Supernet {
            space,
            table,
            params_mem,
            grads_mem,
            momentum_mem,
            stats_mem,
            params,
            grads,
            stats,
            precision: Dtype::F32,
            copy: None,
        };
        net.initialize(b, seed)?;
        Ok(net)
    }

    /// PyTorch-default initialisation with zero gamma on every projection BN; running stats 0 / 1.
    pub fn initialize<B: Backend<Memory = M>>(&self, b: &B, seed: u64) -> Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut host = vec![0f32; self.table.params_len];
        for p in &self.table.params {
            host[p.offset..p.offset + p.len].copy_from_slice(&initial_values(p, &mut rng));
        }
        b.upload(self.params_mem.tensor(), &host)?;
        self.write_copy(b, &host)?;
        b.upload(self.momentum_mem.tensor(), &vec![0.0; self.table.params_len])?;
        b.upload(self.grads_mem.tensor(), &vec![0.0; self.table.params_len])?;
        self.reset_running_stats_host(b)
    }

    /// Sets the storage type of the activations: bf16 allocates the bf16 copy of the parameters and
    /// fills it; f32 drops it.
    pub fn set_precision<B: Backend<Memory = M>>(&mut self, b: &B, precision: Dtype) -> Result<()> {
        self.precision = precision;
        self.copy = match precision {
            Dtype::F32 => None,
            dtype => {
                let len = self.table.params_len;
                let mem = b.alloc((len * dtype.size()).div_ceil(4)).map_err(|e| {
                    Error::Other(format!("allocating the supernet's {dtype} weight copy ({len} elements): {e}"))
                })?;
                let views = NetTensors::new(&self.space, &self.table, self.copy_base(&mem, dtype)?)?;
                Some((mem, views))
            }
        };
        let host = b.download(self.params_mem.tensor())?;
        self.write_copy(b, &host)
    }

    /// The storage type of the activations (and of the GEMMs' weight copies).
    pub fn precision(&self) -> Dtype {
        self.precision
    }

    fn copy_base(&self, mem: &M, dtype: Dtype) -> Result<Tensor> {
        mem.tensor().view_as(dtype).slice(0, self.table.params_len)
    }

    /// The parameter arena's copy in the storage type, when there is one.
    fn copy_arena(&self) -> Result<Option<Tensor>> {
        self.copy.as_ref().map(|(mem, _)| self.copy_base(mem, self.precision)).transpose()
    }

    /// Writes the copy from host parameter values (rounded on upload), when there is one.
    fn write_copy<B: Backend<Memory = M>>(&self, b: &B, host_params: &[f32]) -> Result<()> {
        match self.copy_arena()? {
            Some(copy) => b.upload(copy, host_params),
            None => Ok(()),
        }
    }

    /// The weights the trunk's 1x1 convs read: the copy in bf16, the parameters in f32.
    pub fn gemm_weights(&self) -> &NetTensors {
        self.copy.as_ref().map_or(&self.params, |(_, views)| views)
    }

    fn reset_running_stats_host<B: Backend<Memory = M>>(&self, b: &B) -> Result<()> {
        let mut host = vec![0f32; self.stats_mem.tensor().len()];
        for p in &self.table.buffers {
            let v = if let Init::Const(v) = p.init { v } else { 0.0 };
            host[p.offset..p.offset + p.len].fill(v);
        }
        b.upload(self.stats_mem.tensor(), &host)
    }

    /// Running mean 0 and variance 1 everywhere (before BN calibration).
    pub fn reset_running_stats<B: SupernetOps<Memory = M>>(&self, b: &B) -> Result<()> {
        for p in &self.table.buffers {
            let v = if p.name.ends_with("running_var") { 1.0 } else { 0.0 };
            b.fill(self.stats_mem.tensor().slice(p.offset, p.len)?, v)?;
        }
        Ok(())
    }

    pub fn params(&self) -> &NetTensors {
        &self.params
    }
    pub fn grads(&self) -> &NetTensors {
        &self.grads
    }
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }
    /// The whole parameter, gradient and momentum arenas.
    pub fn params_arena(&self) -> Tensor {
        self.params_mem.tensor()
    }
    pub fn grads_arena(&self) -> Tensor {
        self.grads_mem.tensor()
    }
    pub fn momentum_arena(&self) -> Tensor {
        self.momentum_mem.tensor()
    }
    /// The BN running statistics (every `running_mean` / `running_var`, [`ParamTable::buffers`] offsets).
    pub fn stats_arena(&self) -> Tensor {
        self.stats_mem.tensor()
    }

    /// Zeroes every gradient (once per training step, before the subnets' backwards).
    pub fn zero_grads<B: SupernetOps<Memory = M>>(&self, b: &B) -> Result<()> {
        b.fill(self.grads_mem.tensor(), 0.0)
    }

    /// The optimizer's parameter groups: weight decay `wd` on every parameter whose name contains none of
    /// `no_decay_keywords`, 0 on the rest, as contiguous runs (two for the recipe's `.bn` / `.bias` rule).
    pub fn param_groups(&self, wd: f32, no_decay_keywords: &[String]) -> Result<Vec<ParamGroup>> {
        let mut groups: Vec<ParamGroup> = Vec::new();
        let mut run: Option<(usize, usize, f32)> = None;
        let copy = self.copy_arena()?;
        let flush = |run: Option<(usize, usize, f32)>, groups: &mut Vec<ParamGroup>| -> Result<()> {
            if let Some((start, end, decay)) = run {
                groups.push(ParamGroup {
                    params: self.params_mem.tensor().slice(start, end - start)?,
                    grads: self.grads_mem.tensor().slice(start, end - start)?,
                    momentum: self.momentum_mem.tensor().slice(start, end - start)?,
                    weight_decay: decay,
                    copy: copy.map(|c| c.slice(start, end - start)).transpose()?,
                });
            }
            Ok(())
        };
        for p in &self.table.params {
            let decay = if no_decay_keywords.iter().any(|k| p.name.contains(k.as_str())) { 0.0 } else { wd };
            match run {
                Some((start, _, d)) if d == decay => run = Some((start, p.offset + p.len, d)),
                _ => {
                    flush(run, &mut groups)?;
                    run = Some((p.offset, p.offset + p.len, decay));
                }
            }
        }
        flush(run, &mut groups)?;
        Ok(groups)
    }

    /// Plans and runs `arch`'s forward on `input` (`[n, side, side, 3]`, normalised) with activations
    /// from `arena`; the logits are `tape.head.logits`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<B: SupernetOps<Memory = M>, A: DeviceMemory>(
        &self,
        b: &B,
        arch: &Arch,
        input: Tensor,
        n: usize,
        side: usize,
        options: ForwardOptions,
        arena: &mut Arena<A>,
    ) -> Result<Tape> {
        self.space.validate(arch).map_err(Error::usage)?;
        let tape = Tape::allocate(&self.space, arch, n, input, side, options, self.precision, arena)?;
        forward(b, &tape, input, side, &self.params, self.gemm_weights(), &self.stats)?;
        Ok(tape)
    }

    /// Accumulates `tape`'s parameter gradients for `dlogits` into the gradient arena.
    pub fn backward<B: SupernetOps<Memory = M>, A: DeviceMemory>(
        &self,
        b: &B,
        tape: &Tape,
        dlogits: Tensor,
        arena: &mut Arena<A>,
    ) -> Result<()> {
        self.backward_observed(b, tape, dlogits, arena, &mut |_| Ok(()))
    }

    /// [`Supernet::backward`], telling `on_progress` as each part's gradients become final (the
    /// data-parallel gradient buckets start their all-reduce from there).
    pub fn backward_observed<B: SupernetOps<Memory = M>, A: DeviceMemory>(
        &self,
        b: &B,
        tape: &Tape,
        dlogits: Tensor,
        arena: &mut Arena<A>,
        on_progress: &mut dyn FnMut(BackwardProgress) -> Result<()>,
    ) -> Result<()> {
        let buf = GradBuffers::allocate(tape, arena)?;
        backward(b, tape, dlogits, &self.params, self.gemm_weights(), &self.grads, &buf, on_progress)
    }

    /// Parameters, BN running statistics and (optionally) momentum as named tensors in PyTorch's layout.
    /// Momentum tensors are named `optimizer.momentum.<param name>`.
    pub fn to_named<B: Backend<Memory = M>>(&self, b: &B, with_momentum: bool) -> Result<Vec<NamedTensor>> {
        let params = b.download(self.params_mem.tensor())?;
        let stats = b.download(self.stats_mem.tensor())?;
        let momentum = if with_momentum { Some(b.download(self.momentum_mem.tensor())?) } else { None };
        let mut out = Vec::new();
        let mut push = |prefix: &str, p: &ParamSpec, host: &[f32]| {
            let data = p.to_torch(&host[p.offset..p.offset + p.len]);
            out.push(NamedTensor { name: format!("{prefix}{}", p.name), shape: p.torch_shape.clone(), data });
        };
        for p in &self.table.params {
            push("", p, &params);
        }
        for p in &self.table.buffers {
            push("", p, &stats);
        }
        if let Some(m) = &momentum {
            for p in &self.table.params {
                push("optimizer.momentum.", p, m);
            }
        }
        Ok(out)
    }

    /// The gradient arena as named tensors in PyTorch's layout, one per parameter in table order.
    pub fn named_grads<B: Backend<Memory = M>>(&self, b: &B) -> Result<Vec<NamedTensor>> {
        let g = b.download(self.grads_mem.tensor())?;
        Ok(self
            .table
            .params
            .iter()
            .map(|p| NamedTensor {
                name: p.name.clone(),
                shape: p.torch_shape.clone(),
                data: p.to_torch(&g[p.offset..p.offset + p.len]),
            })
            .collect())
    }

    /// Loads named tensors (PyTorch layout). Every parameter must be present with its exact shape (the
    /// error names the first mismatching tensor and both shapes); running statistics and momentum are
    /// loaded when present. A `module.` prefix (DDP checkpoints) is stripped; unknown names such as
    /// `num_batches_tracked` or `bn_tracking` are ignored. Returns whether momentum was loaded.
    pub fn load_named<B: Backend<Memory = M>>(&self, b: &B, tensors: &[NamedTensor], origin: &str) -> Result<bool> {
        let mut params = b.download(self.params_mem.tensor())?;
        let mut stats = b.download(self.stats_mem.tensor())?;
        let mut momentum = b.download(self.momentum_mem.tensor())?;
        let mut seen_params = vec![false; self.table.params.len()];
        let mut any_momentum = false;
        for t in tensors {
            let name = t.name.strip_prefix("module.").unwrap_or(&t.name);
            let (name, into_momentum) = match name.strip_prefix("optimizer.momentum.") {
                Some(rest) => (rest, true),
                None => (name, false),
            };
            let Some((spec, is_param)) = self.table.lookup(name) else { continue };
            if t.shape != spec.torch_shape || t.data.len() != spec.torch_len() {
                return Err(Error::input(
                    origin,
                    0,
                    format!(
                        "tensor '{}' has shape {:?} but the space '{}' needs {:?} (is this checkpoint from another \
                         search space config?)",
                        t.name, t.shape, self.space.name, spec.torch_shape
                    ),
                ));
            }
            let ours = spec.from_torch(&t.data);
            let dst = match (is_param, into_momentum) {
                (true, false) => {
                    seen_params[self.table.params.iter().position(|p| p.name == spec.name).unwrap_or(0)] = true;
                    &mut params
                }
                (true, true) => {
                    any_momentum = true;
                    &mut momentum
                }
                (false, _) => &mut stats,
            };
            dst[spec.offset..spec.offset + spec.len].copy_from_slice(&ours);
        }
        if let Some(i) = seen_params.iter().position(|s| !s) {
            let p = &self.table.params[i];
            return Err(Error::input(
                origin,
                0,
                format!("missing parameter '{}' (shape {:?}) for space '{}'", p.name, p.torch_shape, self.space.name),
            ));
        }
        b.upload(self.params_mem.tensor(), &params)?;
        self.write_copy(b, &params)?;
        b.upload(self.stats_mem.tensor(), &stats)?;
        if any_momentum {
            b.upload(self.momentum_mem.tensor(), &momentum)?;
        }
        Ok(any_momentum)
    }
}

/// Activation-arena elements needed by a forward (and its backward when `with_backward`) of the largest
/// subnet of `space` on `n` images of side `input_side` (the input itself lives elsewhere): the arena the
/// training loop plans up front. The max arch is the largest subnet at every layer, so every smaller
/// subnet's plan fits; the count uses the arena's own alignment, so it is exact. `dtype` is the storage
/// type of the trunk's activations (the supernet's precision).
pub fn activation_arena_len(
    space: &Space,
    n: usize,
    input_side: usize,
    with_backward: bool,
    dtype: Dtype,
) -> Result<usize> {
    let options = ForwardOptions {
        dropout: 0.5,
        drop_connect: 0.5,
        drop_connect_only_last_two_stages: false,
        ..ForwardOptions::train()
    };
    arch_activation_arena_len(space, &space.max_arch(), n, input_side, options, with_backward, dtype)
}

/// The same count for one subnet `arch` and forward `options` (what a single forward and backward needs).
pub fn arch_activation_arena_len(
    space: &Space,
    arch: &Arch,
    n: usize,
    input_side: usize,
    options: ForwardOptions,
    with_backward: bool,
    dtype: Dtype,
) -> Result<usize> {
    let mut arena = Arena::measuring("activation plan");
    let input = arena.alloc(n * input_side * input_side * 3)?;
    let before = arena.used();
    let tape = Tape::allocate(space, arch, n, input, input_side, options, dtype, &mut arena)?;
    if with_backward {
        GradBuffers::allocate(&tape, &mut arena)?;
    }
    Ok(arena.used() - before + crate::backend::arena::ARENA_ALIGN_ELEMS)
}
