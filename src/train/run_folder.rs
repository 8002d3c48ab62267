//! The run folder at start-up, after the leader took its lock ([`super::run_lock`]): refuse or clear an
//! earlier run (`--overwrite`), or find the checkpoint to resume from.
//!
//! - New run: a folder holding `checkpoints/` or `metrics.jsonl` is refused unless `--overwrite`, which
//!   removes them and `tb/` (the leader only, under the lock).
//! - `--resume`: the newest checkpoint that loads and verifies ([`crate::checkpoint::newest_intact`]).
//!   Newer damaged ones are named with the reason on stderr and moved aside (`ckpt-N.damaged.*`); when
//!   none is intact the run is refused listing each, and nothing is moved or started over.
//! - `--resume auto` (`TrainJob::start_if_empty`): as `--resume`, but a folder with no checkpoint at all
//!   starts a new run, so one job script serves the first submission and every requeue.
//!
//! With several ranks the leader decides and tells the others (one `all_gather_bytes`): every rank
//! resumes from the same step, and only the leader reads the damaged files' names or moves them.

use crate::checkpoint::{load_checked, newest_intact, set_aside, CheckpointStore, LoadedCheckpoint};
use crate::error::{Error, Result};

use super::trainer::TrainJob;

/// What the leader decided, as sent to the other ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Fresh,
    Resume(u64),
    Failed,
}

impl Decision {
    fn encode(self) -> Vec<u8> {
        match self {
            Decision::Fresh => vec![0],
            Decision::Resume(step) => std::iter::once(1).chain(step.to_le_bytes()).collect(),
            Decision::Failed => vec![2],
        }
    }

    fn decode(bytes: &[u8]) -> Result<Decision> {
        match bytes {
            [0] => Ok(Decision::Fresh),
            [1, rest @ ..] if rest.len() == 8 => {
                Ok(Decision::Resume(u64::from_le_bytes(rest.try_into().map_err(|_| bad(bytes))?)))
            }
            [2] => Ok(Decision::Failed),
            _ => Err(bad(bytes)),
        }
    }
}

fn bad(bytes: &[u8]) -> Error {
    Error::Other(format!("rank 0 sent an unreadable resume decision ({} bytes)", bytes.len()))
}

/// Opens the checkpoint store of `job.out` (keeping `keep`) and, when resuming, the checkpoint to resume
/// from (`None`: start at step 0).
pub fn open(job: &TrainJob, keep: usize) -> Result<(CheckpointStore, Option<LoadedCheckpoint>)> {
    let ckpt_dir = job.out.join("checkpoints");
    let log = job.out.join("metrics.jsonl");
    let leader = job.ranks.is_leader();
    if !job.resume {
        // The leader alone looks at the folder (the other ranks would see its first files); the others
        // follow its decision.
        let mine = if leader { Some(clear_for_new_run(job, &ckpt_dir, &log)) } else { None };
        let payload = match &mine {
            Some(Ok(())) => Decision::Fresh.encode(),
            Some(Err(_)) => Decision::Failed.encode(),
            None => Vec::new(),
        };
        let all = job.ranks.all_gather_bytes(&payload)?;
        match mine {
            Some(result) => result?,
            None => {
                if Decision::decode(all.first().map_or(&[][..], Vec::as_slice))? != Decision::Fresh {
                    return Err(Error::Other("rank 0 refused the run folder (see its error)".into()));
                }
            }
        }
        return Ok((CheckpointStore::new(ckpt_dir, keep)?, None));
    }
    let store = CheckpointStore::new(&ckpt_dir, keep)?;
    let mine = if leader { Some(choose(job, &store)) } else { None };
    // Only rank 0's bytes count; the others send nothing.
    let payload = match &mine {
        Some(Ok(Some(found))) => Decision::Resume(found.ckpt.step).encode(),
        Some(Ok(None)) => Decision::Fresh.encode(),
        Some(Err(_)) => Decision::Failed.encode(),
        None => Vec::new(),
    };
    let all = job.ranks.all_gather_bytes(&payload)?;
    if let Some(result) = mine {
        return result.map(|found| (store, found));
    }
    let decided = Decision::decode(all.first().map_or(&[][..], Vec::as_slice))?;
    let found = match decided {
        Decision::Fresh => None,
        Decision::Failed => {
            return Err(Error::Other("rank 0 could not open the run folder to resume (see its error)".into()))
        }
        Decision::Resume(step) => {
            let ckpt = store.list()?.into_iter().find(|c| c.step == step).ok_or_else(|| missing(&store, step))?;
            Some(load_checked(&ckpt)?)
        }
    };
    Ok((store, found))
}

/// A new run's folder on the leader: refused when it holds a run, unless `--overwrite`, which clears it.
fn clear_for_new_run(job: &TrainJob, ckpt_dir: &std::path::Path, log: &std::path::Path) -> Result<()> {
    if !(ckpt_dir.is_dir() || log.is_file()) {
        return Ok(());
    }
    if !job.overwrite {
        return Err(Error::usage(format!(
            "{} already holds a run; pass --resume to continue it (--resume auto: continue it, or start \
             when there is no checkpoint), --overwrite to start afresh, or another --out",
            job.out.display()
        )));
    }
    let _ = std::fs::remove_dir_all(ckpt_dir);
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_dir_all(job.out.join("tb"));
    Ok(())
}

fn missing(store: &CheckpointStore, step: u64) -> Error {
    Error::Other(format!(
        "rank 0 resumes from step {step}, but {} holds no checkpoint of that step here (is --out on a file \
         system every rank sees?)",
        store.dir().display()
    ))
}

/// The leader's choice: the newest intact checkpoint (damaged newer ones named and moved aside), none for
/// a fresh start under `--resume auto`, or an error.
fn choose(job: &TrainJob, store: &CheckpointStore) -> Result<Option<LoadedCheckpoint>> {
    let search = newest_intact(store.dir())?;
    let Some(found) = search.found else {
        if search.damaged.is_empty() {
            if job.start_if_empty {
                let log = job.out.join("metrics.jsonl");
                if log.is_file() {
                    eprintln!(
                        "note: --resume auto: no checkpoint in {}: starting a new run (replacing {}, the log of an \
                         attempt that wrote no checkpoint)",
                        store.dir().display(),
                        log.display()
                    );
                }
                return Ok(None);
            }
            return Err(Error::usage(format!(
                "--resume: no checkpoint in {} (--resume auto starts a new run when there is none)",
                store.dir().display()
            )));
        }
        let list: Vec<String> = search.damaged.iter().map(|d| format!("  {}", d.reason)).collect();
        return Err(Error::usage(format!(
            "--resume: no intact checkpoint in {}; each one failed to load:\n{}\nrestore a copy, or start afresh \
             with --overwrite",
            store.dir().display(),
            list.join("\n")
        )));
    };
    for d in &search.damaged {
        let aside = set_aside(d)?;
        eprintln!(
            "note: --resume: skipped checkpoint of step {} ({}); moved aside as {}",
            d.ckpt.step,
            d.reason,
            aside.display()
        );
    }
    if found.digest == crate::checkpoint::DigestCheck::Absent {
        eprintln!("{}", crate::checkpoint::digest::absent_notice(&found.ckpt.weights));
    }
    if !search.damaged.is_empty() {
        eprintln!("note: --resume: continuing from step {} ({})", found.ckpt.step, found.ckpt.weights.display());
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip() {
        for d in [Decision::Fresh, Decision::Resume(0), Decision::Resume(123_456_789_012), Decision::Failed] {
            assert_eq!(Decision::decode(&d.encode()).unwrap(), d);
        }
        assert!(Decision::decode(&[]).is_err());
        assert!(Decision::decode(&[1, 2, 3]).is_err());
    }
}
