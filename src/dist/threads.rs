//! CPU ranks as threads of one process (`attnas train --device cpu --ranks N`): the test vehicle for every
//! distributed rule on the code path GPU ranks take, without processes or sockets.
//!
//! Collectives meet in a shared table of rounds: collective number `k` of every rank lands in round `k`
//! (each rank counts its own calls, and every rank calls the same collectives in the same order). A rank
//! deposits its bytes, waits until all `world` deposits are there (or the watchdog timeout passes, or a
//! rank aborts), copies the result and leaves; the last to leave removes the round. A fast rank may
//! already deposit into round `k + 1` while slow ones read round `k`: rounds are keyed, not reused.
//!
//! Failure: a rank whose job fails calls [`HostCollectives::abort`]; every rank waiting now or later gets
//! an error naming it. A rank that does not arrive within the timeout is named as dead or hung, and the
//! waiting rank aborts the group so that the others stop too.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::{HostCollectives, LastCheckpoint, RankContext, Ranks, Timeouts};
use crate::error::{Error, Result};

#[derive(Default)]
struct Round {
    slots: Vec<Option<Vec<u8>>>,
    filled: usize,
    taken: usize,
}

#[derive(Default)]
struct State {
    rounds: HashMap<u64, Round>,
    /// The first rank that aborted and why.
    aborted: Option<(usize, String)>,
}

struct Shared {
    world: usize,
    timeouts: Timeouts,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock leaves consistent data (every update is a
        // single assignment), so the poison flag carries no information here.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn abort(&self, rank: usize, reason: &str) {
        let mut st = self.lock();
        if st.aborted.is_none() {
            st.aborted = Some((rank, reason.to_string()));
        }
        drop(st);
        self.cv.notify_all();
    }
}

/// One thread's handle on the group.
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
    calls: Mutex<u64>,
    last_ckpt: LastCheckpoint,
}

/// `world` connected ranks (index = rank), to be moved into one thread each.
pub fn group(world: usize, timeouts: Timeouts) -> Result<Vec<Arc<ThreadRank>>> {
    if world == 0 {
        return Err(Error::usage("--ranks must be at least 1"));
    }
    let shared = Arc::new(Shared { world, timeouts, state: Mutex::new(State::default()), cv: Condvar::new() });
    Ok((0..world)
        .map(|rank| {
            Arc::new(ThreadRank {
                rank,
                shared: shared.clone(),
                calls: Mutex::new(0),
                last_ckpt: LastCheckpoint::default(),
            })
        })
        .collect())
}

/// The same as [`group`], as the jobs' handle type.
pub fn ranks(world: usize, timeouts: Timeouts) -> Result<Vec<Ranks>> {
    Ok(group(world, timeouts)?.into_iter().map(|r| r as Ranks).collect())
}

impl ThreadRank {
    fn aborted_error(&self, who: usize, why: &str) -> Error {
        Error::Other(format!("rank {who} stopped ({why}); rank {} stops too. {}", self.rank, self.last_ckpt.sentence()))
    }
}

impl RankContext for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.world
    }
}

impl HostCollectives for ThreadRank {
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let world = self.shared.world;
        let round = {
            let mut c = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            *c += 1;
            *c - 1
        };
        let deadline = Instant::now() + self.shared.timeouts.collective;
        let mut st = self.shared.lock();
        if let Some((who, why)) = st.aborted.clone() {
            return Err(self.aborted_error(who, &why));
        }
        let r = st.rounds.entry(round).or_default();
        if r.slots.is_empty() {
            r.slots = vec![None; world];
        }
        r.slots[self.rank] = Some(mine.to_vec());
        r.filled += 1;
        if r.filled == world {
            self.shared.cv.notify_all();
        }
        loop {
            if let Some((who, why)) = st.aborted.clone() {
                return Err(self.aborted_error(who, &why));
            }
            let r = st.rounds.get_mut(&round).ok_or_else(|| Error::Other(format!("collective #{round} vanished")))?;
            if r.filled == world {
                let out: Vec<Vec<u8>> = r.slots.iter().map(|s| s.clone().unwrap_or_default()).collect();
                r.taken += 1;
                if r.taken == world {
                    st.rounds.remove(&round);
                }
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> =
                    r.slots.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i.to_string()).collect();
                let why = format!(
                    "rank {} did not reach collective #{round} within {:.0} s (dead or hung; ATTNAS_DIST_TIMEOUT sets the limit)",
                    missing.join(", rank "),
                    self.shared.timeouts.collective.as_secs_f64()
                );
                drop(st);
                self.shared.abort(self.rank, &why);
                return Err(Error::Other(format!("{why}; stopping. {}", self.last_ckpt.sentence())));
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn barrier(&self) -> Result<()> {
        self.all_gather_bytes(&[]).map(|_| ())
    }

    fn abort(&self, reason: &str) {
        self.shared.abort(self.rank, reason);
    }

    fn note_checkpoint(&self, path: &str) {
        self.last_ckpt.set(path);
    }
}

/// The first abort of the group, if any: (rank, reason). The launcher reports it as the cause.
pub fn first_abort(ranks: &[Arc<ThreadRank>]) -> Option<(usize, String)> {
    ranks.first().and_then(|r| r.shared.lock().aborted.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::ReduceOp;
    use std::time::Duration;

    fn quick() -> Timeouts {
        Timeouts { collective: Duration::from_millis(400), rendezvous: Duration::from_secs(1) }
    }

    #[test]
    fn every_rank_sees_every_contribution_in_rank_order() {
        for world in [1, 2, 3, 5] {
            let group = group(world, Timeouts::default()).unwrap();
            let handles: Vec<_> = group
                .into_iter()
                .map(|r| {
                    std::thread::spawn(move || {
                        let mut seen = Vec::new();
                        for k in 0..20u8 {
                            // ranks send different lengths; several rounds in flight
                            let all = r.all_gather_bytes(&vec![r.rank() as u8 + k; r.rank() + 1]).unwrap();
                            seen.push(all);
                        }
                        let mut v = vec![r.rank() as f32, 1.0];
                        r.all_reduce_f32(&mut v, ReduceOp::Mean).unwrap();
                        let total = r.sum_u64(r.rank() as u64 + 1).unwrap();
                        (seen, v, total, r.any(r.rank() == world - 1).unwrap())
                    })
                })
                .collect();
            for h in handles {
                let (seen, v, total, any) = h.join().unwrap();
                for (k, all) in seen.iter().enumerate() {
                    let want: Vec<Vec<u8>> = (0..world).map(|r| vec![r as u8 + k as u8; r + 1]).collect();
                    assert_eq!(all, &want, "round {k}");
                }
                let mean = (0..world).map(|r| r as f32).sum::<f32>() * (1.0 / world as f32);
                assert_eq!(v, vec![mean, 1.0]);
                assert_eq!(total, (world * (world + 1) / 2) as u64);
                assert!(any);
            }
        }
    }

    #[test]
    fn a_missing_rank_is_named_after_the_timeout() {
        let group = group(3, quick()).unwrap();
        group[0].note_checkpoint("run/ckpt-7");
        let (a, b) = (group[0].clone(), group[1].clone());
        let t = Instant::now();
        let ha = std::thread::spawn(move || a.barrier());
        let hb = std::thread::spawn(move || b.barrier());
        let (ea, eb) = (ha.join().unwrap().unwrap_err().to_string(), hb.join().unwrap().unwrap_err().to_string());
        assert!(t.elapsed() < Duration::from_secs(5));
        // One of the waiting ranks times out naming rank 2; the other hears of it through the abort.
        let both = format!("{ea}\n{eb}");
        assert!(both.contains("rank 2 did not reach collective #0"), "{both}");
        assert!(ea.contains("Last good checkpoint: run/ckpt-7"), "rank 0 names its last checkpoint: {ea}");
        assert!(eb.contains("Last good checkpoint: none yet"), "{eb}");
        // Rank 2 arriving late is told at once.
        assert!(group[2].barrier().unwrap_err().to_string().contains("did not reach"));
    }

    #[test]
    fn an_abort_stops_the_waiting_ranks_at_once_naming_the_rank() {
        let group = group(2, Timeouts::default()).unwrap();
        let a = group[0].clone();
        let t = Instant::now();
        let h = std::thread::spawn(move || a.barrier());
        std::thread::sleep(Duration::from_millis(50));
        group[1].abort("data file unreadable");
        let e = h.join().unwrap().unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(5), "not the 90 s timeout");
        assert!(e.contains("rank 1 stopped (data file unreadable)"), "{e}");
        assert_eq!(first_abort(&group), Some((1, "data file unreadable".to_string())));
    }
}
