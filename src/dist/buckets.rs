//! Data-parallel gradient averaging in buckets, started during the step's last backward.
//!
//! The sandwich rule accumulates the gradients of its subnets (max, sampled, min) before one optimizer
//! step, so a gradient is final only once the last subnet's backward has passed its layer. Reducing
//! once per step, during that backward, is equivalent to PyTorch DDP reducing after every backward
//! (the mean of sums equals the sum of means) at a quarter of the traffic.
//!
//! The plan: the gradient arena has two contiguous runs (decayed weights, then BN affine parameters and
//! biases), each in forward order (stem, blocks, head). Each run is cut, from its end, into buckets of
//! about `bucket_bytes` at parameter boundaries (the first one, which the backward finishes first, at
//! most [`FIRST_BUCKET_BYTES`], so communication starts early, as in DDP); a bucket is one contiguous range, so it is one
//! all-reduce with no copy. Its readiness is the backward point after which all its gradients are
//! final ([`BackwardProgress`]): buckets are sorted by it and launched, in that order, as the backward
//! reports progress. Every rank computes the same plan and sees the same progress (the last subnet is
//! the min subnet on every rank), so the collectives are issued in the same order everywhere.
//!
//! On GPU ranks each bucket's all-reduce is queued on the communicator's own stream after an event on
//! the compute stream, overlapping the rest of the backward; the optimizer waits for the last one. On
//! CPU ranks the same buckets are reduced synchronously, at the same points.

use super::sync::all_reduce_tensor_async;
use super::{HostCollectives, ReduceOp};
use crate::backend::{Backend, Tensor};
use crate::error::Result;
use crate::nn::backward::BackwardProgress;
use crate::nn::ParamTable;

/// Default bucket size in MiB (PyTorch DDP's `bucket_cap_mb`).
pub const DEFAULT_BUCKET_MB: f64 = 25.0;
/// The first bucket of each run is at most this large (DDP's 1 MiB first bucket).
pub const FIRST_BUCKET_BYTES: usize = 1 << 20;

/// Which part of the backward produces a parameter's gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Head,
    Block(usize),
    Stem,
}

impl Owner {
    /// From an AttentiveNAS state-dict name.
    pub fn of(name: &str) -> Owner {
        if name.starts_with("first_conv.") {
            return Owner::Stem;
        }
        if let Some(rest) = name.strip_prefix("blocks.") {
            if let Some(g) = rest.split('.').next().and_then(|g| g.parse().ok()) {
                return Owner::Block(g);
            }
        }
        Owner::Head
    }

    /// The backward progress after which this owner's gradients are final: 0 after the head, then
    /// `blocks - g` after block `g` (blocks run last to first; a block the subnet skips is final once a
    /// lower block is done), `blocks + 1` after the stem.
    fn ready_at(self, blocks: usize) -> usize {
        match self {
            Owner::Head => 0,
            Owner::Block(g) => blocks.saturating_sub(g),
            Owner::Stem => blocks + 1,
        }
    }
}

fn progress_value(p: BackwardProgress, blocks: usize) -> usize {
    match p {
        BackwardProgress::Head => 0,
        BackwardProgress::Block(g) => blocks.saturating_sub(g),
        BackwardProgress::Stem => blocks + 1,
    }
}

/// One all-reduce: elements `offset .. offset + len` of the gradient arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub offset: usize,
    pub len: usize,
    /// The backward progress value after which it can be reduced.
    pub ready_at: usize,
}

/// The buckets of a parameter table, in launch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketPlan {
    pub buckets: Vec<Bucket>,
    pub blocks: usize,
}

impl BucketPlan {
    /// Buckets of at most about `bucket_bytes` (at least one parameter each) covering every parameter.
    pub fn new(table: &ParamTable, bucket_bytes: usize) -> BucketPlan {
        let blocks = table
            .params
            .iter()
            .filter_map(|p| match Owner::of(&p.name) {
                Owner::Block(g) => Some(g + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let cap = (bucket_bytes / 4).max(1);
        let first_cap = cap.min(FIRST_BUCKET_BYTES / 4);
        let mut buckets = Vec::new();
        // the two runs: weights [0, no_decay_start), the rest after it
        for run in [
            table.params.iter().filter(|p| p.offset < table.no_decay_start).collect::<Vec<_>>(),
            table.params.iter().filter(|p| p.offset >= table.no_decay_start).collect::<Vec<_>>(),
        ] {
            let mut cur: Option<(usize, usize, usize)> = None; // (start, end, ready_at)
            let mut first = true;
            for p in run.iter().rev() {
                let ready = Owner::of(&p.name).ready_at(blocks);
                let limit = if first { first_cap } else { cap };
                cur = match cur {
                    Some((_, end, r)) if end - p.offset <= limit => Some((p.offset, end, r.max(ready))),
                    Some((start, end, r)) => {
                        buckets.push(Bucket { offset: start, len: end - start, ready_at: r });
                        first = false;
                        Some((p.offset, p.offset + p.len, ready))
                    }
                    None => Some((p.offset, p.offset + p.len, ready)),
                };
                // an end past the last parameter's own length covers the alignment gap after it: zeros
            }
            if let Some((start, end, r)) = cur {
                buckets.push(Bucket { offset: start, len: end - start, ready_at: r });
            }
        }
        buckets.sort_by_key(|b| b.ready_at);
        BucketPlan { buckets, blocks }
    }

    /// The plan's total length (every parameter, alignment gaps inside runs included).
    pub fn total_len(&self) -> usize {
        self.buckets.iter().map(|b| b.len).sum()
    }
}

/// Runs a [`BucketPlan`] during one backward: [`GradReducer::progress`] launches the buckets that
/// became ready, [`GradReducer::finish`] the rest and joins them.
pub struct GradReducer {
    plan: BucketPlan,
    launched: usize,
}

impl GradReducer {
    pub fn new(plan: BucketPlan) -> GradReducer {
        GradReducer { plan, launched: 0 }
    }

    pub fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    /// Launches (in plan order) every bucket final at `p`; `grads` is the whole gradient arena.
    pub fn progress<B: Backend>(
        &mut self,
        ranks: &dyn HostCollectives,
        b: &B,
        grads: Tensor,
        p: BackwardProgress,
    ) -> Result<()> {
        let at = progress_value(p, self.plan.blocks);
        while let Some(bucket) = self.plan.buckets.get(self.launched).copied() {
            if bucket.ready_at > at {
                break;
            }
            all_reduce_tensor_async(ranks, b, grads.slice(bucket.offset, bucket.len)?, ReduceOp::Mean)?;
            self.launched += 1;
        }
        Ok(())
    }

    /// Launches what is left, then makes the backend's stream wait for every bucket (the optimizer
    /// reads the averaged gradients); resets for the next step.
    pub fn finish<B: Backend>(&mut self, ranks: &dyn HostCollectives, b: &B, grads: Tensor) -> Result<()> {
        while let Some(bucket) = self.plan.buckets.get(self.launched).copied() {
            all_reduce_tensor_async(ranks, b, grads.slice(bucket.offset, bucket.len)?, ReduceOp::Mean)?;
            self.launched += 1;
        }
        self.launched = 0;
        super::sync::join_device(ranks, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::space::Space;

    #[test]
    fn owners_follow_the_state_dict_names() {
        assert_eq!(Owner::of("first_conv.bn.bn.weight"), Owner::Stem);
        assert_eq!(Owner::of("blocks.12.mobile_inverted_conv.depth_conv.conv.conv.weight"), Owner::Block(12));
        assert_eq!(Owner::of("blocks.3.shortcut.conv.conv.weight"), Owner::Block(3));
        assert_eq!(Owner::of("classifier.linear.linear.bias"), Owner::Head);
        assert_eq!(Owner::of("last_conv.final_expand_layer.bn.bn.bias"), Owner::Head);
    }

    #[test]
    fn buckets_cover_every_parameter_once_and_launch_in_backward_order() {
        let space = Space::builtin("attentivenas").unwrap();
        let table = ParamTable::new(&space).unwrap();
        for mib in [0.001, 1.0, 25.0, 1000.0] {
            let plan = BucketPlan::new(&table, (mib * (1 << 20) as f64) as usize);
            // every parameter element in exactly one bucket
            let mut cover = vec![0u8; table.params_len];
            for b in &plan.buckets {
                for c in &mut cover[b.offset..b.offset + b.len] {
                    *c += 1;
                }
            }
            for p in &table.params {
                assert!(cover[p.offset..p.offset + p.len].iter().all(|&c| c == 1), "{mib} MiB: {}", p.name);
            }
            assert!(cover.iter().all(|&c| c <= 1));
            // sizes: at most the cap unless one parameter alone is larger
            let cap = (mib * (1 << 18) as f64) as usize;
            for b in &plan.buckets {
                let single = table.params.iter().any(|p| p.offset == b.offset && p.len + 64 >= b.len);
                assert!(b.len <= cap.max(1) || single, "{mib} MiB: bucket of {} f32", b.len);
            }
            // launch order never goes back in the backward
            assert!(plan.buckets.windows(2).all(|w| w[0].ready_at <= w[1].ready_at));
            // a bucket is launched only when all its parameters' gradients are final
            for b in &plan.buckets {
                for p in table.params.iter().filter(|p| p.offset >= b.offset && p.offset < b.offset + b.len) {
                    assert!(Owner::of(&p.name).ready_at(plan.blocks) <= b.ready_at, "{}", p.name);
                }
            }
        }
        let plan = BucketPlan::new(&table, 25 << 20);
        assert!(plan.buckets.len() >= 2, "the AttentiveNAS supernet spans several 25 MiB buckets");
        assert_eq!(plan.buckets[0].ready_at, 0, "the head's bucket goes first");
        assert_eq!(plan.blocks, space.stored_blocks().len());
    }

    #[test]
    fn the_reducer_launches_each_bucket_once_as_progress_allows() {
        let space = Space::builtin("tiny").unwrap();
        let table = ParamTable::new(&space).unwrap();
        let plan = BucketPlan::new(&table, 4096);
        let n = plan.buckets.len();
        assert!(n > 4, "tiny buckets: {n}");
        let mut r = GradReducer::new(plan.clone());
        let b = crate::backend::cpu::CpuBackend::new();
        let mem = b.alloc(table.params_len).unwrap();
        let one = crate::dist::single();
        r.progress(one.as_ref(), &b, crate::backend::DeviceMemory::tensor(&mem), BackwardProgress::Head).unwrap();
        let after_head = r.launched;
        assert_eq!(after_head, plan.buckets.iter().filter(|b| b.ready_at == 0).count());
        r.progress(one.as_ref(), &b, crate::backend::DeviceMemory::tensor(&mem), BackwardProgress::Block(0)).unwrap();
        assert!(r.launched > after_head && r.launched < n, "the stem's buckets wait for the stem");
        r.finish(one.as_ref(), &b, crate::backend::DeviceMemory::tensor(&mem)).unwrap();
        assert_eq!(r.launched, 0, "reset for the next step");
    }
}
