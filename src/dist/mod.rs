//! Ranks: how one training, evaluation or search job runs as several cooperating processes (or threads).
//!
//! This module is the seam between the jobs and the distributed engine. The jobs see only
//! [`RankContext`] (which rank am I, how many are there) and [`HostCollectives`] (small host-side
//! exchanges: a stop flag, a fingerprint, counts, host f32 buffers), plus the tensor helpers of
//! [`sync`] that pick the device path ([`DeviceCollectives`], NCCL) or the host path. A single-device
//! run uses [`SingleRank`], for which every collective is the identity, so it reads exactly as it did
//! before ranks existed.
//!
//! Submodules:
//! - [`threads`]: CPU ranks as threads of one process (`--device cpu --ranks N`), the test vehicle;
//! - [`tcp`]: a star over TCP between OS processes (rank 0 the hub): CPU ranks as processes, and the
//!   host side (rendezvous, small values, the NCCL unique id) of GPU ranks;
//! - [`env`]: the launch environment (torchrun, SLURM, our own launcher) and the rendezvous port rule;
//! - [`launch`]: `--gpus N` / `--ranks N`: spawning the workers, prefixing their output, exit codes;
//! - [`nccl`]: device collectives over NCCL (cudarc, loaded at run time) and its watchdog;
//! - [`buckets`]: the gradient bucket plan and the reducer that runs during the last backward;
//! - [`sync`]: what a job does across ranks (start-up checks, the step hook, checksums, BN averaging);
//!
//! Every collective must be called by every rank in the same order. A collective that cannot complete
//! (a rank died, hung past the watchdog timeout, or aborted) returns an error naming the rank and the
//! last good checkpoint ([`HostCollectives::note_checkpoint`]).

pub mod buckets;
pub mod env;
pub mod launch;
pub mod nccl;
pub mod sync;
pub mod tcp;
pub mod threads;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// Who this process is among the job's ranks.
pub trait RankContext: Send + Sync {
    /// 0-based global rank.
    fn rank(&self) -> usize;
    /// Number of ranks in the job (>= 1).
    fn world_size(&self) -> usize;
    /// Rank 0 writes checkpoints, metrics, TensorBoard files and reports.
    fn is_leader(&self) -> bool {
        self.rank() == 0
    }
}

/// How an all-reduce combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size (gradients, BN statistics, scores).
    Mean,
}

/// Small host-side exchanges between ranks. Every rank must call each collective in the same order.
pub trait HostCollectives: RankContext {
    /// Every rank's `mine`, indexed by rank (each rank may send a different length).
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// Tells every other rank to stop now (this rank failed with `reason`); their pending and next
    /// collectives return an error naming this rank. Never blocks for long.
    fn abort(&self, _reason: &str) {}

    /// Device-memory collectives of this rank's GPU (NCCL), once attached; `None` for CPU ranks.
    fn device(&self) -> Option<&dyn DeviceCollectives> {
        None
    }

    /// Creates the device communicator for this rank's GPU (NCCL ranks; a collective call on every rank).
    /// CPU transports refuse a GPU: their traffic is host memory only.
    fn attach_device(&self, _device: &crate::backend::DeviceHandle) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        Err(Error::usage(
            "CPU ranks (--ranks N) run on the CPU only: pass --device cpu, or launch GPU ranks with --gpus N, \
             torchrun or srun",
        ))
    }

    /// Remembers the last checkpoint every rank can fall back to; failure messages name it.
    fn note_checkpoint(&self, _path: &str) {}

    /// True when any rank passes true (for example: a stop signal arrived on some rank).
    fn any(&self, flag: bool) -> Result<bool> {
        Ok(self.all_gather_bytes(&[flag as u8])?.iter().any(|v| v.first() == Some(&1)))
    }

    /// The sum over ranks of `mine` (counts: images seen, correct predictions).
    fn sum_u64(&self, mine: u64) -> Result<u64> {
        let all = self.all_gather_bytes(&mine.to_le_bytes())?;
        let mut total = 0u64;
        for v in all {
            let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                crate::error::Error::Other(format!("sum_u64: a rank sent {} bytes instead of 8", v.len()))
            })?;
            total = total.wrapping_add(u64::from_le_bytes(bytes));
        }
        Ok(total)
    }

    /// `buf` combined over ranks, in place. Host transports sum in rank order (0, 1, ...), so every rank
    /// computes bit-identical results; the mean multiplies the sum by `1 / world`.
    fn all_reduce_f32(&self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let all = self.all_gather_bytes(bytemuck::cast_slice(buf))?;
        reduce_gathered_f32(&all, buf, op, self.world_size())
    }

    /// Like [`HostCollectives::all_reduce_f32`] for f64 values (attentive scores, losses).
    fn all_reduce_f64(&self, buf: &mut [f64], op: ReduceOp) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all = self.all_gather_bytes(&bytes)?;
        for (r, v) in all.iter().enumerate() {
            if v.len() != bytes.len() {
                return Err(Error::Other(format!(
                    "all-reduce: rank {r} sent {} values, this rank {} (ranks out of step)",
                    v.len() / 8,
                    buf.len()
                )));
            }
        }
        for (i, x) in buf.iter_mut().enumerate() {
            let mut s = 0.0f64;
            for v in &all {
                let b: [u8; 8] = v[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]);
                s += f64::from_le_bytes(b);
            }
            *x = if op == ReduceOp::Mean { s / self.world_size() as f64 } else { s };
        }
        Ok(())
    }

    /// Rank `root`'s bytes on every rank (`mine` is ignored on the others).
    fn broadcast_bytes(&self, root: usize, mine: &[u8]) -> Result<Vec<u8>> {
        let send = if self.rank() == root { mine } else { &[] };
        let mut all = self.all_gather_bytes(send)?;
        if root >= all.len() {
            return Err(Error::Other(format!("broadcast: root {root} is not a rank of {}", all.len())));
        }
        Ok(all.swap_remove(root))
    }
}

impl std::fmt::Debug for dyn HostCollectives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.world_size())
    }
}

/// Element-wise sum (or mean) of the gathered f32 buffers into `out`, in rank order.
pub fn reduce_gathered_f32(all: &[Vec<u8>], out: &mut [f32], op: ReduceOp, world: usize) -> Result<()> {
    for (r, v) in all.iter().enumerate() {
        if v.len() != out.len() * 4 {
            return Err(Error::Other(format!(
                "all-reduce: rank {r} sent {} f32, this rank has {} (ranks out of step)",
                v.len() / 4,
                out.len()
            )));
        }
    }
    let scale = 1.0 / world as f32;
    for (i, x) in out.iter_mut().enumerate() {
        let mut s = 0.0f32;
        for v in all {
            s += f32::from_le_bytes([v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]]);
        }
        *x = if op == ReduceOp::Mean { s * scale } else { s };
    }
    Ok(())
}

/// Collectives on device memory (a GPU's tensors), asynchronous on the device like every other op.
pub trait DeviceCollectives: Send + Sync {
    /// In-place all-reduce of `len` f32 at device address `addr`, ordered after the work already queued
    /// on `stream`; returns without waiting (it runs on the communicator's own stream).
    fn all_reduce_f32_async(&self, addr: u64, len: usize, op: ReduceOp, stream: u64) -> Result<()>;
    /// Makes `stream` wait for every collective launched so far.
    fn join(&self, stream: u64) -> Result<()>;
    /// In-place broadcast of `len` f32 from rank `root`, ordered on `stream` like the all-reduce.
    fn broadcast_f32_async(&self, addr: u64, len: usize, root: usize, stream: u64) -> Result<()>;
    /// A one-line description: NCCL version, ranks, device.
    fn describe(&self) -> String;
}

/// The one-process, one-device job: rank 0 of 1, every collective the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleRank;

impl RankContext for SingleRank {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
}

impl HostCollectives for SingleRank {
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// The handle jobs hold.
pub type Ranks = Arc<dyn HostCollectives>;

/// The single-rank handle.
pub fn single() -> Ranks {
    Arc::new(SingleRank)
}

/// How long a rank waits for the others before it declares one dead or hung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A collective (every rank must reach it within this time of the first): `ATTNAS_DIST_TIMEOUT`
    /// seconds, default 90, so that every rank exits within 2 minutes of a failure.
    pub collective: Duration,
    /// Start-up: how long ranks wait for each other to appear (`ATTNAS_RDZV_TIMEOUT`, default 300 s).
    pub rendezvous: Duration,
}

/// Default collective timeout (seconds).
pub const DEFAULT_COLLECTIVE_TIMEOUT_S: f64 = 90.0;
/// Default rendezvous timeout (seconds).
pub const DEFAULT_RENDEZVOUS_TIMEOUT_S: f64 = 300.0;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            collective: Duration::from_secs_f64(DEFAULT_COLLECTIVE_TIMEOUT_S),
            rendezvous: Duration::from_secs_f64(DEFAULT_RENDEZVOUS_TIMEOUT_S),
        }
    }
}

impl Timeouts {
    /// The defaults, overridden by `ATTNAS_DIST_TIMEOUT` / `ATTNAS_RDZV_TIMEOUT` (seconds, > 0).
    pub fn from_env() -> Result<Timeouts> {
        let read = |var: &str, default: f64| -> Result<Duration> {
            match std::env::var(var) {
                Ok(v) => match v.trim().parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
                    _ => Err(Error::usage(format!("{var}={v}: give the timeout in seconds (a number > 0)"))),
                },
                Err(_) => Ok(Duration::from_secs_f64(default)),
            }
        };
        Ok(Timeouts {
            collective: read("ATTNAS_DIST_TIMEOUT", DEFAULT_COLLECTIVE_TIMEOUT_S)?,
            rendezvous: read("ATTNAS_RDZV_TIMEOUT", DEFAULT_RENDEZVOUS_TIMEOUT_S)?,
        })
    }
}

/// The last checkpoint every rank can fall back to, shared by a transport's failure messages.
#[derive(Debug, Default)]
pub struct LastCheckpoint(Mutex<Option<String>>);

impl LastCheckpoint {
    pub fn set(&self, path: &str) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(path.to_string());
        }
    }

    /// `Last good checkpoint: PATH` (or `none yet`).
    pub fn sentence(&self) -> String {
        let p = self.0.lock().ok().and_then(|g| g.clone()).unwrap_or_else(|| "none yet".to_string());
        format!("Last good checkpoint: {p}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_rank_collectives_are_the_identity() {
        let r = single();
        assert_eq!((r.rank(), r.world_size(), r.is_leader()), (0, 1, true));
        assert!(r.any(true).unwrap());
        assert!(!r.any(false).unwrap());
        assert_eq!(r.sum_u64(41).unwrap(), 41);
        assert_eq!(r.all_gather_bytes(b"ab").unwrap(), vec![b"ab".to_vec()]);
        let mut v = [1.5f32, -2.0];
        r.all_reduce_f32(&mut v, ReduceOp::Mean).unwrap();
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!(r.broadcast_bytes(0, b"x").unwrap(), b"x");
        let gpu = crate::backend::DeviceHandle { ordinal: 0, context: 0, stream: 0, pci_bus_id: [0; 16] };
        r.attach_device(&gpu).unwrap();
        r.barrier().unwrap();
    }

    #[test]
    fn gathered_buffers_reduce_in_rank_order() {
        let bufs: Vec<Vec<u8>> =
            [[1.0f32, 2.0], [3.0, -4.0], [0.5, 0.25]].iter().map(|v| bytemuck::cast_slice(v).to_vec()).collect();
        let mut out = [0f32; 2];
        reduce_gathered_f32(&bufs, &mut out, ReduceOp::Sum, 3).unwrap();
        assert_eq!(out, [4.5, -1.75]);
        reduce_gathered_f32(&bufs, &mut out, ReduceOp::Mean, 3).unwrap();
        assert_eq!(out, [4.5 * (1.0 / 3.0f32), -1.75 * (1.0 / 3.0f32)]);
        let short = vec![bufs[0].clone(), vec![0u8; 4]];
        assert!(reduce_gathered_f32(&short, &mut out, ReduceOp::Sum, 2).unwrap_err().to_string().contains("rank 1"));
    }

    #[test]
    fn timeouts_come_from_the_environment_or_default() {
        let t = Timeouts::default();
        assert_eq!(t.collective, Duration::from_secs(90));
        assert!(t.collective + Duration::from_secs(15) < Duration::from_secs(120), "exit within 2 minutes");
    }
}
