//! Clean stops on SIGTERM and SIGINT (what SLURM, Kubernetes and Ctrl+C send before they end a job).
//!
//! The first SIGTERM or SIGINT only sets a flag and says so on stderr at once: the training step in
//! progress finishes, the trainer writes a checkpoint at that step, logs a `stop` line and exits 0
//! ([`crate::train::trainer`]). A second signal of either kind exits at once with 128 + its number (143
//! for SIGTERM, 130 for SIGINT), the shell's convention for "ended by that signal"; checkpoint writes are
//! atomic, so that leaves at most a temporary file behind. The handler counts deliveries with one atomic
//! add, so two signals arriving together on two threads still make exactly one of them the second.
//!
//! Handlers are installed by the command line ([`StopRequest::install`]), never by the library on its
//! own: a program (or test) that calls the trainer keeps its own signal dispositions and passes
//! [`StopRequest::never`]. With several ranks the decision goes through [`StopPoll::stop_now`], which asks
//! every rank once per step (`ranks.any`), so all ranks stop after the same step.
//!
//! Ranks started by attnas's own launcher (`--gpus N`, `--ranks N --rank-processes`; `ATTNAS_LAUNCHER` set)
//! also take a stop request forwarded by the launcher: [`FORWARDED_TERM`] (SIGUSR1) stands for a SIGTERM and
//! [`FORWARDED_INT`] (SIGUSR2) for a SIGINT the launcher received. Forwarded requests set the same flags but
//! are not counted as signals, so a rank that got the signal directly too (SLURM signals every process of
//! the job, Ctrl+C the whole process group) still stops cleanly instead of taking the forward as its
//! second signal; and the launcher may repeat them until every rank has stopped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::signal::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

use super::metrics::{LogLine, MetricsLog, StopRecord};
use crate::checkpoint::SavedCheckpoint;
use crate::dist::HostCollectives;
use crate::error::{Error, Result};

/// The signal attnas's launcher sends its ranks for a SIGTERM it received (see the module comment).
pub const FORWARDED_TERM: i32 = SIGUSR1;
/// The signal attnas's launcher sends its ranks for a SIGINT it received.
pub const FORWARDED_INT: i32 = SIGUSR2;

/// The request [`StopRequest::install`] installed in this process, if it did (the launcher polls it).
static INSTALLED: OnceLock<StopRequest> = OnceLock::new();

/// The exit code after a second signal: 128 + the signal's number.
pub fn second_signal_exit_code(signo: i32) -> i32 {
    128 + signo
}

/// Whether a stop was asked for, and by which signal. Cheap to clone (shared flags).
#[derive(Clone, Debug, Default)]
pub struct StopRequest {
    term: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    /// Signals delivered so far (either kind).
    count: Arc<AtomicUsize>,
}

impl StopRequest {
    /// A request no signal sets (library callers, tests, benchmarks).
    pub fn never() -> StopRequest {
        StopRequest::default()
    }

    /// Installs the SIGTERM and SIGINT handlers of this process (see the module comment), and in a rank
    /// of attnas's launcher the handlers of the forwarded requests. Once per process: a second call
    /// returns the first call's request.
    pub fn install() -> Result<StopRequest> {
        if let Some(req) = INSTALLED.get() {
            return Ok(req.clone());
        }
        let req = StopRequest::default();
        for (signo, flag, notice) in [
            (SIGTERM, req.term.clone(), FIRST_TERM_NOTICE.as_bytes()),
            (SIGINT, req.int.clone(), FIRST_INT_NOTICE.as_bytes()),
        ] {
            let count = req.count.clone();
            let action = move || {
                if count.fetch_add(1, Ordering::SeqCst) > 0 {
                    signal_hook::low_level::exit(second_signal_exit_code(signo));
                }
                flag.store(true, Ordering::SeqCst);
                // SAFETY: write(2) is async-signal-safe; the buffer is a 'static byte string. A failed or
                // short write only loses the notice.
                let _ = unsafe { libc::write(2, notice.as_ptr().cast(), notice.len()) };
            };
            // SAFETY: the action uses only async-signal-safe operations (an atomic add and store,
            // write(2), _exit through signal_hook::low_level::exit) and allocates nothing.
            unsafe { signal_hook::low_level::register(signo, action) }
                .map_err(|e| Error::Other(format!("cannot install the handler for signal {signo}: {e}")))?;
        }
        if std::env::var_os(crate::dist::launch::LAUNCHER_ENV).is_some() {
            for (signo, flag) in [(FORWARDED_TERM, req.term.clone()), (FORWARDED_INT, req.int.clone())] {
                // SAFETY: the action is one atomic store (async-signal-safe, no allocation).
                unsafe { signal_hook::low_level::register(signo, move || flag.store(true, Ordering::SeqCst)) }
                    .map_err(|e| Error::Other(format!("cannot install the handler for signal {signo}: {e}")))?;
            }
        }
        Ok(INSTALLED.get_or_init(|| req).clone())
    }

    /// The request installed in this process by [`StopRequest::install`], if any.
    pub fn installed() -> Option<&'static StopRequest> {
        INSTALLED.get()
    }

    /// The signal that asked for the stop, if one did (SIGTERM first when both arrived).
    pub fn signal(&self) -> Option<&'static str> {
        if self.term.load(Ordering::SeqCst) {
            Some("SIGTERM")
        } else if self.int.load(Ordering::SeqCst) {
            Some("SIGINT")
        } else {
            None
        }
    }
}

/// What the first signal prints at once (the step may take a while to finish).
pub const FIRST_TERM_NOTICE: &str =
    "\nattnas: SIGTERM received: finishing the step in progress, then checkpointing and exiting (send another \
     signal to exit at once)\n";
pub const FIRST_INT_NOTICE: &str =
    "\nattnas: SIGINT received: finishing the step in progress, then checkpointing and exiting (press Ctrl+C \
     again to exit at once)\n";

/// Polls the stop request once per step on every rank and remembers the decision.
pub struct StopPoll<'a> {
    request: &'a StopRequest,
    reason: Option<String>,
}

impl<'a> StopPoll<'a> {
    pub fn new(request: &'a StopRequest) -> Self {
        StopPoll { request, reason: None }
    }

    /// True when a signal reached any rank. Every rank must call this at the same point of each step:
    /// it is a collective.
    pub fn stop_now(&mut self, ranks: &dyn HostCollectives) -> Result<bool> {
        if self.reason.is_some() {
            return Ok(true);
        }
        let mine = self.request.signal();
        if ranks.any(mine.is_some())? {
            self.reason = Some(mine.map_or_else(|| "a stop signal on another rank".to_string(), str::to_string));
        }
        Ok(self.reason.is_some())
    }

    /// Why the run stops ("SIGTERM", "SIGINT", "a stop signal on another rank"), once it does.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// The metrics-log line of a stop at `step` (after `reason`), naming the checkpoint to resume from.
pub fn stop_line(step: u64, reason: &str, message: Option<String>, ckpt: Option<&SavedCheckpoint>) -> LogLine {
    LogLine::Stop(StopRecord {
        step,
        reason: reason.to_string(),
        message,
        checkpoint: ckpt.map(|c| c.weights.display().to_string()),
    })
}

/// A failure that ends the run at `step` (a checkpoint that could not be written): logs a `stop` line
/// (best effort: the log may sit on the same full disk) and returns the error with the last good
/// checkpoint named.
/// `log` is `None` on ranks that keep no log (all but rank 0).
pub fn stopped_by_error(log: Option<&mut MetricsLog>, step: u64, e: Error, last: Option<&SavedCheckpoint>) -> Error {
    if let Some(log) = log {
        let _ = log.append(&stop_line(step, "error", Some(e.to_string()), last));
    }
    let last = last.map_or_else(|| "none yet".to_string(), |c| c.weights.display().to_string());
    Error::Other(format!(
        "{e}\nthe run stops after step {step}. Last good checkpoint: {last} (continue from it with --resume once \
         the problem is fixed)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_signals_never_stops() {
        let req = StopRequest::never();
        let mut poll = StopPoll::new(&req);
        let ranks = crate::dist::single();
        assert!(!poll.stop_now(&*ranks).unwrap());
        assert_eq!(poll.reason(), None);
        // The flags the handlers set, set by hand: the poll names the signal and stays stopped.
        req.int.store(true, Ordering::SeqCst);
        assert!(poll.stop_now(&*ranks).unwrap());
        assert_eq!(poll.reason(), Some("SIGINT"));
        req.term.store(true, Ordering::SeqCst);
        assert_eq!(req.signal(), Some("SIGTERM"));
        assert_eq!(second_signal_exit_code(SIGTERM), 143);
        assert_eq!(second_signal_exit_code(SIGINT), 130);
    }

    /// Rank 0 of two, whose peer always reports a stop.
    struct PeerStops;
    impl crate::dist::RankContext for PeerStops {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
    }
    impl HostCollectives for PeerStops {
        fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
            Ok(vec![mine.to_vec(), vec![1]])
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_signal_on_another_rank_stops_this_one() {
        let req = StopRequest::never();
        let mut poll = StopPoll::new(&req);
        assert!(poll.stop_now(&PeerStops).unwrap());
        assert_eq!(poll.reason(), Some("a stop signal on another rank"));
    }
}
