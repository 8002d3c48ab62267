//! Starting the ranks of a job: `--gpus N|all` (one worker process per GPU of this node), `--ranks N`
//! (CPU ranks: threads of this process, or processes with `--rank-processes`), or nothing when a
//! launcher (torchrun, srun, our own `--gpus`) already started this process as one rank
//! ([`super::env`]). Every subcommand that runs ranks (train, eval, search, bench) goes through
//! [`plan`] and [`run_ranked`], so the rules are the same everywhere.
//!
//! Our own worker processes: the same command line without the launch flags, with `RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1` and a free `MASTER_PORT` /
//! `ATTNAS_RDZV_PORT` set. Rank 0 keeps the terminal (its progress bar, its report); the other ranks'
//! lines are prefixed `[rank N]`. The launcher waits for all of them and exits with the first failing
//! rank's exit code; ranks still running one watchdog timeout (+30 s) after the first failure are
//! killed.
//!
//! Signals: a SIGTERM or SIGINT sent to the launcher alone (Kubernetes, `kill PID`) reaches the ranks as a
//! forwarded stop request ([`crate::train::stop::FORWARDED_TERM`] / `FORWARDED_INT`), repeated every
//! second until they exit, so `train` stops every rank after one step with a checkpoint, as on one
//! device; the ranks ignore the forwarded signals until their handlers are in place. A second signal
//! ends the launcher at once, and with it the ranks: each is started with the parent-death signal
//! SIGKILL, so no rank outlives its launcher (not even a `kill -9` of it) to hold a GPU.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::env::{self, LaunchEnv};
use super::nccl::{self, NcclRanks};
use super::tcp::TcpRank;
use super::threads;
use super::{single, HostCollectives, RankContext, Ranks, Timeouts};
use crate::backend::cuda::probe;
use crate::cli::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::train::stop::{StopRequest, FORWARDED_INT, FORWARDED_TERM};

/// Set in the environment of the worker processes the launcher starts.
pub const LAUNCHER_ENV: &str = "ATTNAS_LAUNCHER";

/// `--gpus N` or `--gpus all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuCount {
    All,
    N(usize),
}

impl FromStr for GpuCount {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(GpuCount::All),
            _ => s
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .map(GpuCount::N)
                .ok_or_else(|| format!("--gpus takes a positive count or `all`, got '{s}'")),
        }
    }
}

/// The launch flags shared by the subcommands that run ranks.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RankArgs {
    /// Data-parallel GPU ranks on this node, N or `all`: one worker process per GPU, NCCL between them
    /// (multi-node: start attnas under torchrun or srun instead; see docs/distributed.md).
    #[arg(long, value_name = "N|all")]
    pub gpus: Option<GpuCount>,
    /// Data-parallel CPU ranks (with --device cpu): N threads of this process, the test vehicle of every
    /// rule GPU ranks follow.
    #[arg(long, value_name = "N", conflicts_with = "gpus")]
    pub ranks: Option<usize>,
    /// Run the --ranks as OS processes meeting over loopback TCP instead of threads.
    #[arg(long, requires = "ranks")]
    pub rank_processes: bool,
}

/// How this invocation runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// One rank, this process.
    Single,
    /// CPU ranks as threads of this process.
    Threads(usize),
    /// Start `n` worker processes (GPU ranks, or CPU ranks as processes) and wait for them.
    Spawn { n: usize, gpus: bool },
    /// This process is one rank of a job a launcher started.
    Env(LaunchEnv),
}

/// What a ranked run produced.
pub enum Outcome<T> {
    /// Rank 0's result (single process, threads, or rank 0 of a launched job): print it.
    Leader(T),
    /// Another rank of a launched job: rank 0 reports.
    Follower,
    /// This process only launched the workers, which all succeeded (they printed their own output).
    Workers,
}

impl<T> Outcome<T> {
    /// The result to report, when this process reports.
    pub fn leader(self) -> Option<T> {
        match self {
            Outcome::Leader(t) => Some(t),
            _ => None,
        }
    }
}

/// Decides how to run from the flags, the environment and the device.
pub fn plan(args: &RankArgs, device: DeviceChoice) -> Result<Plan> {
    if let Some(e) = env::from_env()? {
        if args.gpus.is_some() || args.ranks.is_some() {
            return Err(Error::usage(format!(
                "this process is rank {} of {} started by {} (RANK/WORLD_SIZE or SLURM variables are set): leave out \
                 --gpus and --ranks, the launcher starts the ranks",
                e.rank, e.world, e.launcher
            )));
        }
        return Ok(Plan::Env(e));
    }
    if let Some(g) = args.gpus {
        if matches!(device, DeviceChoice::Cpu | DeviceChoice::Emu) {
            return Err(Error::usage(
                "--gpus runs GPU ranks: leave out --device (or pass --device cuda); CPU ranks: --ranks N",
            ));
        }
        let visible = probe::device_count().map_err(|e| Error::usage(format!("--gpus: no GPU available ({e})")))?;
        let n = match g {
            GpuCount::All => visible,
            GpuCount::N(n) => n,
        };
        if n == 0 || n > visible {
            return Err(Error::usage(format!(
                "--gpus {n}: {visible} GPU(s) visible{}; ask for at most {visible}",
                std::env::var("CUDA_VISIBLE_DEVICES")
                    .map(|v| format!(" (CUDA_VISIBLE_DEVICES={v})"))
                    .unwrap_or_default()
            )));
        }
        return Ok(if n == 1 { Plan::Single } else { Plan::Spawn { n, gpus: true } });
    }
    if let Some(n) = args.ranks {
        if !matches!(device, DeviceChoice::Cpu | DeviceChoice::Emu) {
            return Err(Error::usage(
                "--ranks runs CPU ranks: pass --device cpu (GPU ranks: --gpus N, torchrun or srun)",
            ));
        }
        if n == 0 {
            return Err(Error::usage("--ranks must be at least 1"));
        }
        return Ok(match (n, args.rank_processes) {
            (1, _) => Plan::Single,
            (_, false) => Plan::Threads(n),
            (_, true) => Plan::Spawn { n, gpus: false },
        });
    }
    Ok(Plan::Single)
}

/// The device of a launched rank: its own GPU (`cuda:LOCAL_RANK`) unless the command asked for the CPU.
pub fn rank_device(device: DeviceChoice, env: &LaunchEnv) -> DeviceChoice {
    match device {
        DeviceChoice::Cpu | DeviceChoice::Emu => device,
        DeviceChoice::Cuda(_) => DeviceChoice::Cuda(env.local_rank),
        DeviceChoice::Auto => match probe::device_count() {
            Ok(n) if n > 0 => DeviceChoice::Cuda(env.local_rank),
            _ => DeviceChoice::Cpu,
        },
    }
}

/// Runs `job` as `plan` says: once (single), once per thread, or as this launched rank; or starts the
/// worker processes and waits for them. A rank whose job fails tells the others (abort) before
/// returning its error; with threads, the first failing rank's error is returned.
pub fn run_ranked<T: Send>(
    plan: Plan,
    device: DeviceChoice,
    job: &(dyn Fn(Ranks, DeviceChoice) -> Result<T> + Sync),
) -> Result<Outcome<T>> {
    match plan {
        Plan::Single => job(single(), device).map(Outcome::Leader),
        Plan::Threads(n) => run_threads(n, job),
        Plan::Env(e) => {
            let timeouts = Timeouts::from_env()?;
            let device = rank_device(device, &e);
            let gpu = matches!(device, DeviceChoice::Cuda(_));
            if !gpu && e.local_world.is_some_and(|lw| lw < e.world) {
                return Err(Error::usage(format!(
                    "CPU ranks run on one node only (they are the test vehicle of the GPU path; all their traffic \
                     passes through rank 0): LOCAL_WORLD_SIZE={} < WORLD_SIZE={}; run GPU ranks across nodes",
                    e.local_world.unwrap_or(0),
                    e.world
                )));
            }
            if gpu {
                nccl::reexec_with_nccl();
            }
            let tcp = TcpRank::connect(e.rank, e.world, &e.endpoint, timeouts)?;
            let ranks: Ranks = if gpu { Arc::new(NcclRanks::new(tcp, timeouts)) } else { Arc::new(tcp) };
            let leader = ranks.is_leader();
            match job(ranks.clone(), device) {
                Ok(t) if leader => Ok(Outcome::Leader(t)),
                Ok(_) => Ok(Outcome::Follower),
                Err(err) => {
                    ranks.abort(&err.to_string());
                    Err(err)
                }
            }
        }
        Plan::Spawn { n, gpus } => spawn_workers(n, gpus).map(|()| Outcome::Workers),
    }
}

fn run_threads<T: Send>(n: usize, job: &(dyn Fn(Ranks, DeviceChoice) -> Result<T> + Sync)) -> Result<Outcome<T>> {
    let group = threads::group(n, Timeouts::from_env()?)?;
    let results: Vec<Result<T>> = std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .iter()
            .map(|r| {
                let r = r.clone();
                scope.spawn(move || {
                    let ranks: Ranks = r.clone();
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(ranks, DeviceChoice::Cpu)))
                        .unwrap_or_else(|_| Err(Error::Other(format!("rank {} panicked", r.rank()))));
                    if let Err(e) = &out {
                        r.abort(&e.to_string());
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| h.join().unwrap_or_else(|_| Err(Error::Other(format!("rank {i} panicked")))))
            .collect()
    });
    // The cause, not its echoes: the error of the rank that aborted first.
    let first = threads::first_abort(&group).map(|(r, _)| r);
    let mut results: Vec<Option<Result<T>>> = results.into_iter().map(Some).collect();
    if let Some(r) = first {
        if let Some(Some(Err(e))) = results.get_mut(r).map(Option::take) {
            return Err(e);
        }
    }
    match results.into_iter().next().flatten() {
        Some(Ok(t)) => Ok(Outcome::Leader(t)),
        Some(Err(e)) => Err(e),
        None => Err(Error::Other("no rank ran".into())),
    }
}

/// This command line without the launch flags (`--gpus X`, `--ranks X`, `--rank-processes`).
fn worker_args() -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in std::env::args_os().skip(1) {
        if skip_value {
            skip_value = false;
            continue;
        }
        let s = a.to_string_lossy();
        if s == "--gpus" || s == "--ranks" {
            skip_value = true;
            continue;
        }
        if s.starts_with("--gpus=") || s.starts_with("--ranks=") || s == "--rank-processes" {
            continue;
        }
        out.push(a);
    }
    out
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Other(format!("launcher: no free local port for the rendezvous: {e}")))
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Starts `n` workers of this command and waits; the first failing rank's code becomes an
/// [`Error::Exit`].
fn spawn_workers(n: usize, gpus: bool) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("launcher: cannot find this binary: {e}")))?;
    let args = worker_args();
    let port = free_port()?;
    let nccl_dir = if gpus { nccl::library_dir_fix() } else { None };
    let timeouts = Timeouts::from_env()?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    let mut printers = Vec::new();
    for r in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", r.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_RANK", r.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("ATTNAS_RDZV_PORT", port.to_string())
            .env(LAUNCHER_ENV, "1");
        // SAFETY: runs in the child between fork and exec and calls only async-signal-safe functions
        // (prctl, signal, getppid, _exit); it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                // A forward that comes before the rank's handlers exist is dropped, not fatal; the
                // launcher repeats it.
                libc::signal(FORWARDED_TERM, libc::SIG_IGN);
                libc::signal(FORWARDED_INT, libc::SIG_IGN);
                if libc::getppid() == 1 {
                    libc::_exit(1); // the launcher is already gone
                }
                Ok(())
            });
        }
        if let Some(d) = &nccl_dir {
            cmd.env("LD_LIBRARY_PATH", nccl::library_path_with(d)).env("ATTNAS_NCCL_REEXEC", "1");
        }
        if r > 0 {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| Error::Other(format!("launcher: cannot start rank {r}: {e}")))?;
        if r > 0 {
            if let Some(out) = child.stdout.take() {
                printers.push(std::thread::spawn(move || prefix_lines(r, out, false)));
            }
            if let Some(err) = child.stderr.take() {
                printers.push(std::thread::spawn(move || prefix_lines(r, err, true)));
            }
        }
        children.push((r, child));
    }
    let mut first_failure: Option<(usize, i32)> = None;
    let mut kill_at: Option<Instant> = None;
    let mut running: Vec<(usize, Child)> = children;
    let mut forwarded: Option<Instant> = None;
    while !running.is_empty() {
        forward_stop_request(&running, &mut forwarded);
        let mut still = Vec::new();
        for (r, mut c) in running {
            match c.try_wait() {
                Ok(Some(status)) => {
                    let code = exit_code(status);
                    if code != 0 && first_failure.is_none() {
                        first_failure = Some((r, code));
                        kill_at = Some(Instant::now() + timeouts.collective + Duration::from_secs(30));
                    }
                }
                Ok(None) => still.push((r, c)),
                Err(_) => {}
            }
        }
        running = still;
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            for (r, c) in &mut running {
                eprintln!("launcher: rank {r} still running after the first failure; killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
            running.clear();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in printers {
        let _ = p.join();
    }
    match first_failure {
        None => Ok(()),
        Some((rank, code)) => Err(Error::Exit { code, msg: format!("rank {rank} failed (exit code {code})") }),
    }
}

/// Passes a stop signal this launcher received on to the running ranks (see the module comment): the
/// first time with a notice, then again every second until they exit.
fn forward_stop_request(running: &[(usize, Child)], last: &mut Option<Instant>) {
    let Some(signal) = StopRequest::installed().and_then(StopRequest::signal) else { return };
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
        return;
    }
    if last.is_none() {
        eprintln!("launcher: {signal} received: asking the {} running ranks to stop after this step", running.len());
    }
    let forward = if signal == "SIGTERM" { FORWARDED_TERM } else { FORWARDED_INT };
    for (_, c) in running {
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: kill(2) with a pid of our own unreaped child: it cannot name another process.
            unsafe { libc::kill(pid, forward) };
        }
    }
    *last = Some(Instant::now());
}

/// Copies a worker's output to ours, each line prefixed `[rank N]`.
fn prefix_lines(rank: usize, from: impl std::io::Read, to_stderr: bool) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { break };
        if to_stderr {
            eprintln!("[rank {rank}] {line}");
        } else {
            println!("[rank {rank}] {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_counts_parse() {
        assert_eq!("all".parse::<GpuCount>(), Ok(GpuCount::All));
        assert_eq!("8".parse::<GpuCount>(), Ok(GpuCount::N(8)));
        assert!("0".parse::<GpuCount>().is_err());
        assert!("x".parse::<GpuCount>().is_err());
    }

    #[test]
    fn cpu_ranks_need_the_cpu_device_and_gpu_ranks_a_gpu() {
        // (the test process has no RANK / WORLD_SIZE set)
        if env::from_env().ok().flatten().is_some() {
            return;
        }
        let ranks = |n, procs| RankArgs { gpus: None, ranks: Some(n), rank_processes: procs };
        assert_eq!(plan(&ranks(2, false), DeviceChoice::Cpu).unwrap(), Plan::Threads(2));
        assert_eq!(plan(&ranks(3, true), DeviceChoice::Cpu).unwrap(), Plan::Spawn { n: 3, gpus: false });
        assert_eq!(plan(&ranks(1, false), DeviceChoice::Cpu).unwrap(), Plan::Single);
        assert_eq!(plan(&ranks(2, false), DeviceChoice::Auto).unwrap_err().exit_code(), 2);
        assert_eq!(plan(&ranks(0, false), DeviceChoice::Cpu).unwrap_err().exit_code(), 2);
        let gpus = RankArgs { gpus: Some(GpuCount::N(2)), ranks: None, rank_processes: false };
        assert_eq!(plan(&gpus, DeviceChoice::Cpu).unwrap_err().exit_code(), 2);
        if probe::device_count().map_or(true, |n| n < 2) {
            let e = plan(&gpus, DeviceChoice::Auto).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
        }
        assert_eq!(plan(&RankArgs::default(), DeviceChoice::Auto).unwrap(), Plan::Single);
    }
}
