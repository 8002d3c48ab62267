//! What a job does across ranks, on top of the transports: tensor all-reduces that take the device path
//! (NCCL) on GPUs and the host path elsewhere, the start-up agreement (same config, same data, one GPU
//! per rank), the training step's hook ([`StepSync`]: scores, gradient buckets, architecture
//! fingerprints), the parameter checksum, BN running-statistics averaging and summed counts.

use sha2::{Digest, Sha256};

use super::buckets::{BucketPlan, GradReducer};
use super::{HostCollectives, ReduceOp};
use crate::backend::{Backend, DeviceHandle, SupernetOps, Tensor};
use crate::error::{Error, Result};
use crate::nn::backward::BackwardProgress;
use crate::nn::Supernet;
use crate::train::step::{RankSync, SubnetOutcome};

/// Starts an in-place all-reduce of `t` over ranks: on a GPU with device collectives, queued on the
/// communicator's stream after the work already on the backend's stream (asynchronous: call
/// [`join_device`] before reading `t` on the backend's stream); elsewhere through the host, synchronous.
pub fn all_reduce_tensor_async<B: Backend>(ranks: &dyn HostCollectives, b: &B, t: Tensor, op: ReduceOp) -> Result<()> {
    if ranks.world_size() == 1 {
        return Ok(());
    }
    match (b.device_handle(), ranks.device()) {
        (Some(h), Some(dev)) => dev.all_reduce_f32_async(t.addr(), t.len(), op, h.stream),
        (None, _) => {
            let mut host = b.download(t)?;
            ranks.all_reduce_f32(&mut host, op)?;
            b.upload(t, &host)
        }
        (Some(_), None) => Err(Error::Other(
            "a GPU tensor needs device collectives (NCCL), which this rank has not attached; GPU ranks are started \
             with --gpus, torchrun or srun"
                .into(),
        )),
    }
}

/// Makes the backend's stream wait for every device collective started so far (no-op on the host path).
pub fn join_device<B: Backend>(ranks: &dyn HostCollectives, b: &B) -> Result<()> {
    match (b.device_handle(), ranks.device()) {
        (Some(h), Some(dev)) if ranks.world_size() > 1 => dev.join(h.stream),
        _ => Ok(()),
    }
}

/// An all-reduce of `t` that later ops on the backend's stream see.
pub fn all_reduce_tensor<B: Backend>(ranks: &dyn HostCollectives, b: &B, t: Tensor, op: ReduceOp) -> Result<()> {
    all_reduce_tensor_async(ranks, b, t, op)?;
    join_device(ranks, b)
}

/// Rank `root`'s `t` on every rank.
pub fn broadcast_tensor<B: Backend>(ranks: &dyn HostCollectives, b: &B, t: Tensor, root: usize) -> Result<()> {
    if ranks.world_size() == 1 {
        return Ok(());
    }
    match (b.device_handle(), ranks.device()) {
        (Some(h), Some(dev)) => {
            dev.broadcast_f32_async(t.addr(), t.len(), root, h.stream)?;
            dev.join(h.stream)
        }
        _ => {
            let mine = if ranks.rank() == root { b.download(t)? } else { Vec::new() };
            let bytes = ranks.broadcast_bytes(root, bytemuck::cast_slice(&mine))?;
            if bytes.len() != t.len() * 4 {
                return Err(Error::Other(format!("broadcast: {} bytes for {} f32", bytes.len(), t.len())));
            }
            let host: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            b.upload(t, &host)
        }
    }
}

/// This host's name (for messages and the one-GPU-per-rank check).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The start-up agreement, a collective: every rank's `identity` (named values that must be equal:
/// config fingerprint, data, resume step) is compared with rank 0's, and no two ranks may drive the
/// same GPU. Then the device collectives are attached for a GPU backend. Errors are one-line usage
/// errors naming the ranks and the value.
pub fn agree_at_start<B: Backend>(ranks: &dyn HostCollectives, b: &B, identity: &[(&str, String)]) -> Result<()> {
    if ranks.world_size() == 1 {
        return Ok(());
    }
    let device = b.device_handle();
    let gpu = device.map(|h| {
        let bus = String::from_utf8_lossy(&h.pci_bus_id).trim_end_matches('\0').to_string();
        format!("{}/{}", host_name(), if bus.is_empty() { format!("cuda:{}", h.ordinal) } else { bus })
    });
    let mine = serde_json::json!({
        "identity": identity.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "gpu": gpu,
    });
    let all = ranks.all_gather_bytes(mine.to_string().as_bytes())?;
    let parsed: Vec<serde_json::Value> =
        all.iter().map(|v| serde_json::from_slice(v).unwrap_or(serde_json::Value::Null)).collect();
    for (key, _) in identity {
        let of = |r: usize| parsed[r]["identity"][*key].as_str().unwrap_or("?").to_string();
        let first = of(0);
        if let Some(r) = (1..parsed.len()).find(|&r| of(r) != first) {
            return Err(Error::usage(format!(
                "ranks disagree on the {key}: rank 0 has {first}, rank {r} has {}; start every rank with the same \
                 --config, --set values, data and run folder",
                of(r)
            )));
        }
    }
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (r, p) in parsed.iter().enumerate() {
        if let Some(g) = p["gpu"].as_str() {
            if let Some(&other) = seen.get(g) {
                return Err(Error::usage(format!(
                    "ranks {other} and {r} both drive GPU {g}: give each rank its own GPU (LOCAL_RANK, or \
                     CUDA_VISIBLE_DEVICES per rank)"
                )));
            }
            seen.insert(g.to_string(), r);
        }
    }
    if let Some(h) = device {
        ranks.attach_device(&h)?;
    }
    Ok(())
}

/// A fast 64-bit checksum of f32 bits (FNV-1a over the words of 4 interleaved lanes, combined in order):
/// equal buffers give equal sums; any differing bit almost surely changes it.
pub fn checksum_f32(v: &[f32]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4, 0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = (*l ^ x.to_bits() as u64).wrapping_mul(PRIME);
        }
    }
    for (l, x) in lanes.iter_mut().zip(chunks.remainder()) {
        *l = (*l ^ x.to_bits() as u64).wrapping_mul(PRIME);
    }
    lanes.iter().fold(v.len() as u64, |h, &l| (h ^ l).wrapping_mul(PRIME).rotate_left(17))
}

/// Compares the parameter checksums of every rank: they must be bit-identical after every step.
pub fn check_parameters<B: Backend>(ranks: &dyn HostCollectives, b: &B, params: Tensor, step: u64) -> Result<()> {
    if ranks.world_size() == 1 {
        return Ok(());
    }
    let sum = checksum_f32(&b.download(params)?);
    let all = ranks.all_gather_bytes(&sum.to_le_bytes())?;
    let sums: Vec<u64> = all.iter().map(|v| u64::from_le_bytes(v.as_slice().try_into().unwrap_or([0; 8]))).collect();
    if let Some(r) = sums.iter().position(|&s| s != sums[0]) {
        return Err(Error::Other(format!(
            "after step {step} the parameters differ across ranks (checksum rank 0 {:016x}, rank {r} {:016x}); \
             stopping: data-parallel ranks must stay bit-identical (same binary and device kind on every rank?)",
            sums[0], sums[r]
        )));
    }
    Ok(())
}

/// Averages the BN running statistics over ranks after each rank calibrated on `my_batches` batches of
/// its own: weighted by batch counts, so the result is the cumulative average over every rank's
/// batches, and every rank then evaluates the same model.
pub fn average_running_stats<B: SupernetOps>(
    ranks: &dyn HostCollectives,
    b: &B,
    net: &Supernet<B::Memory>,
    my_batches: usize,
) -> Result<()> {
    if ranks.world_size() == 1 {
        return Ok(());
    }
    let total = ranks.sum_u64(my_batches as u64)?;
    if total == 0 {
        return Ok(());
    }
    let stats = net.stats_arena();
    let weight = my_batches as f32 / total as f32;
    let mut host = b.download(stats)?;
    for v in &mut host {
        *v *= weight;
    }
    b.upload(stats, &host)?;
    all_reduce_tensor(ranks, b, stats, ReduceOp::Sum)
}

/// A short digest of the step's architectures: every subnet and every attentive candidate (drawn from
/// the same seed on every rank). The chosen candidates count only when the choice is made on the global
/// scores; with `global_scores: false` ranks may choose differently, as in the original.
fn arch_fingerprint(step: u64, subnets: &[SubnetOutcome], with_choice: bool) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(step.to_le_bytes());
    for s in subnets {
        if with_choice || s.candidates.is_empty() {
            h.update(s.arch.to_json().to_string().as_bytes());
        }
        for c in &s.candidates {
            h.update(c.arch.to_json().to_string().as_bytes());
        }
    }
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// The training step's [`RankSync`] for several ranks.
pub struct StepSync<'a> {
    ranks: &'a dyn HostCollectives,
    reducer: GradReducer,
    grads: Tensor,
    /// All-reduce the attentive candidates' scores (`sampler.global_scores`).
    global_scores: bool,
}

impl<'a> StepSync<'a> {
    pub fn new<M: crate::backend::DeviceMemory>(
        ranks: &'a dyn HostCollectives,
        net: &Supernet<M>,
        bucket_bytes: usize,
        global_scores: bool,
    ) -> StepSync<'a> {
        StepSync {
            ranks,
            reducer: GradReducer::new(BucketPlan::new(&net.table, bucket_bytes)),
            grads: net.grads_arena(),
            global_scores,
        }
    }
}

impl<B: SupernetOps> RankSync<B> for StepSync<'_> {
    fn candidate_scores(&mut self, scores: &mut [f64]) -> Result<()> {
        if self.global_scores {
            self.ranks.all_reduce_f64(scores, ReduceOp::Mean)?;
        }
        Ok(())
    }

    fn gradients_final(&mut self, b: &B, done: BackwardProgress) -> Result<()> {
        self.reducer.progress(self.ranks, b, self.grads, done)
    }

    fn before_update(&mut self, b: &B, step: u64, subnets: &mut [SubnetOutcome]) -> Result<()> {
        self.reducer.finish(self.ranks, b, self.grads)?;
        // one exchange: the architecture fingerprint and the losses (logged as their mean over ranks)
        let mut mine = arch_fingerprint(step, subnets, self.global_scores).to_vec();
        for s in subnets.iter() {
            mine.extend_from_slice(&s.loss.to_le_bytes());
        }
        let all = self.ranks.all_gather_bytes(&mine)?;
        if let Some(r) = all.iter().position(|v| v.len() != mine.len() || v[..8] != all[0][..8]) {
            let names: Vec<String> = subnets.iter().map(|s| s.arch.to_json().to_string()).collect();
            return Err(Error::Other(format!(
                "step {step}: rank {r} trains other architectures than rank 0 (fingerprints {} vs {}; this rank {} \
                 has {}); stopping: every rank must run the same binary, seed and config",
                hex(&all[0][..8.min(all[0].len())]),
                hex(&all[r][..8.min(all[r].len())]),
                self.ranks.rank(),
                names.join(" ")
            )));
        }
        let world = all.len() as f64;
        for (i, s) in subnets.iter_mut().enumerate() {
            let mut sum = 0.0;
            for v in &all {
                sum += f64::from_le_bytes(v[8 + 8 * i..16 + 8 * i].try_into().unwrap_or([0; 8]));
            }
            s.loss = sum / world;
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Describes a GPU for messages.
pub fn describe_device(h: &DeviceHandle) -> String {
    format!("cuda:{} ({})", h.ordinal, String::from_utf8_lossy(&h.pci_bus_id).trim_end_matches('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_sees_one_flipped_bit_anywhere() {
        let v: Vec<f32> = (0..1001).map(|i| (i as f32).sin()).collect();
        let base = checksum_f32(&v);
        assert_eq!(base, checksum_f32(&v.clone()));
        for i in [0, 1, 2, 3, 500, 999, 1000] {
            let mut w = v.clone();
            w[i] = f32::from_bits(w[i].to_bits() ^ 1);
            assert_ne!(checksum_f32(&w), base, "element {i}");
        }
        assert_ne!(checksum_f32(&v[..1000]), base, "length counts");
        let mut swapped = v.clone();
        swapped.swap(0, 4);
        assert_ne!(checksum_f32(&swapped), base, "order counts");
    }
}
