//! Ranks: how one training, evaluation or search job runs as several cooperating processes (or threads).
//!
//! This module is the seam between the jobs and the distributed engine. The jobs see only
//! [`RankContext`] (which rank am I, how many are there) and [`HostCollectives`] (small host-side
//! exchanges: a stop flag, a fingerprint, counts). A single-device run uses [`SingleRank`], for which
//! every collective is the identity, so it reads exactly as it did before ranks existed.
//!
//! The launchers, rendezvous, transports (NCCL on GPUs; threads or loopback TCP for CPU test ranks),
//! gradient reduction and the watchdog live in submodules of this one and implement these traits.

use std::sync::Arc;

use crate::error::Result;

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

/// Small host-side exchanges between ranks. Every rank must call each collective in the same order.
pub trait HostCollectives: RankContext {
    /// Every rank's `mine`, indexed by rank (each rank may send a different length).
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;

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
        r.barrier().unwrap();
    }
}
