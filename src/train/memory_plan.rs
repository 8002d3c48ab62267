//! Device memory of a training step, planned before anything is allocated, and the largest batch that
//! fits a memory budget (`attnas bench train` reports both; issue #13 item 4).
//!
//! Training allocates everything up front and nothing inside a step (the device seam's counters check
//! it): the supernet's parameters, gradients, momentum and BN running statistics (independent of the
//! batch), one activation arena sized for the max subnet's forward and backward at the batch and input
//! side ([`activation_arena_len`]), and the step buffers (input, labels, teacher logits, losses, the u8
//! staging of the input pipeline). The plan counts exactly those allocations, so on a device with
//! counters (a GPU, the emulator) it equals what a step's setup allocated; the cuBLAS workspace and the
//! CUDA context are outside it (the budget is taken from the device's free memory, which already
//! excludes them).
//!
//! Precision: in bf16 the trunk's activations and their gradients take 2 bytes an element (about half
//! the activation arena; the head, BN statistics and scratch stay f32) and the model adds the bf16 copy
//! of the parameters that the 1x1 convs read (2 bytes a parameter).

use crate::backend::Dtype;
use crate::error::{Error, Result};
use crate::nn::{activation_arena_len, ParamTable};
use crate::space::Space;

use super::step::step_buffer_elements;

const F32_BYTES: u64 = 4;

/// What a training step at one batch and input side holds on the device, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TrainMemoryPlan {
    pub batch: usize,
    pub side: usize,
    /// Storage of the trunk's activations: `fp32` or `bf16`.
    pub precision: &'static str,
    /// Parameters, gradients, momentum and BN running statistics (and, in bf16, the parameters' copy).
    pub model_bytes: u64,
    /// The activation arena (the max subnet's forward tape and its backward's gradients).
    pub activation_bytes: u64,
    /// Input, labels, teacher logits, losses and the u8 staging buffer.
    pub step_buffer_bytes: u64,
    pub total_bytes: u64,
}

/// The name of a precision in plans and reports: `fp32` or `bf16`.
pub fn precision_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "fp32",
        Dtype::Bf16 => "bf16",
    }
}

/// The plan of `space`'s training step at `batch` images of `side` x `side`, activations stored as `dtype`.
pub fn plan(space: &Space, batch: usize, side: usize, dtype: Dtype) -> Result<TrainMemoryPlan> {
    if batch == 0 || side == 0 {
        return Err(Error::usage(format!("memory plan: batch ({batch}) and side ({side}) must be positive")));
    }
    let table = ParamTable::new(space)?;
    let copy = match dtype {
        Dtype::F32 => 0,
        _ => (table.params_len * dtype.size()).div_ceil(4),
    };
    let model = (3 * table.params_len.max(1) + table.buffers_len.max(1) + copy) as u64 * F32_BYTES;
    let activations = activation_arena_len(space, batch, side, true, dtype)? as u64 * F32_BYTES;
    let step_buffers = step_buffer_elements(batch, side, space.num_classes) as u64 * F32_BYTES;
    Ok(TrainMemoryPlan {
        batch,
        side,
        precision: precision_name(dtype),
        model_bytes: model,
        activation_bytes: activations,
        step_buffer_bytes: step_buffers,
        total_bytes: model + activations + step_buffers,
    })
}

/// The largest batch whose plan fits in `budget_bytes` at `side` (`None` when not even one image
/// does), searched up to `max_batch`. The plan grows with the batch, so a binary search finds it.
pub fn largest_batch(
    space: &Space,
    side: usize,
    dtype: Dtype,
    budget_bytes: u64,
    max_batch: usize,
) -> Result<Option<usize>> {
    let fits = |n: usize| -> Result<bool> { Ok(plan(space, n, side, dtype)?.total_bytes <= budget_bytes) };
    if max_batch == 0 || !fits(1)? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (1usize, max_batch);
    if fits(hi)? {
        return Ok(Some(hi));
    }
    // invariant: fits(lo) and !fits(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo))
}

/// The memory a training job on this device could use: what is free now plus what the job itself has
/// already allocated (`allocated_bytes`), or an explicit budget.
pub fn budget_bytes(free_now: u64, allocated_bytes: u64) -> u64 {
    free_now.saturating_add(allocated_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_grows_with_the_batch_and_the_search_finds_the_edge() {
        let space = Space::builtin("tiny").unwrap();
        let p1 = plan(&space, 1, 32, Dtype::F32).unwrap();
        let p8 = plan(&space, 8, 32, Dtype::F32).unwrap();
        assert_eq!(p1.model_bytes, p8.model_bytes, "parameters do not depend on the batch");
        assert!(p8.activation_bytes > 7 * p1.activation_bytes, "{p1:?} {p8:?}");
        assert_eq!(p8.total_bytes, p8.model_bytes + p8.activation_bytes + p8.step_buffer_bytes);
        // a budget of exactly the plan at 37 fits 37 and not 38
        let budget = plan(&space, 37, 32, Dtype::F32).unwrap().total_bytes;
        assert_eq!(largest_batch(&space, 32, Dtype::F32, budget, 4096).unwrap(), Some(37));
        assert_eq!(largest_batch(&space, 32, Dtype::F32, budget - 1, 4096).unwrap(), Some(36));
        assert_eq!(largest_batch(&space, 32, Dtype::F32, budget, 20).unwrap(), Some(20), "capped at max_batch");
        assert_eq!(largest_batch(&space, 32, Dtype::F32, p1.total_bytes - 1, 4096).unwrap(), None);
        assert!(plan(&space, 0, 32, Dtype::F32).is_err());
    }

    #[test]
    fn bf16_roughly_halves_the_activations_and_adds_the_weight_copy() {
        let space = Space::builtin("attentivenas").unwrap();
        let full = plan(&space, 8, 224, Dtype::F32).unwrap();
        let half = plan(&space, 8, 224, Dtype::Bf16).unwrap();
        let ratio = half.activation_bytes as f64 / full.activation_bytes as f64;
        // the trunk halves; the head, BN statistics, SE and scratch stay f32
        assert!((0.5..0.6).contains(&ratio), "bf16 / fp32 activation bytes = {ratio}");
        let params = ParamTable::new(&space).unwrap().params_len as u64;
        assert_eq!(half.model_bytes, full.model_bytes + (2 * params).div_ceil(4) * 4, "the bf16 copy");
        assert_eq!((full.precision, half.precision), ("fp32", "bf16"));
        let budget = full.total_bytes;
        let more = largest_batch(&space, 224, Dtype::Bf16, budget, 4096).unwrap().unwrap();
        assert!(more >= 14, "bf16 fits {more} images where fp32 fits 8");
    }
}
