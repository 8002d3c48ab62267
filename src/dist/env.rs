//! The launch environment: which rank this process is, how many there are, and where rank 0 listens.
//!
//! Read, in order:
//! - torchrun (and attnas's own `--gpus` / `--ranks N --rank-processes` launcher): `RANK`, `WORLD_SIZE`,
//!   `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`;
//! - SLURM (`srun`, recognised by `SLURM_STEP_ID`, so a batch script's own process is not taken for a
//!   rank): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_NTASKS_PER_NODE`, and `MASTER_ADDR`
//!   defaulting to the first host of `SLURM_JOB_NODELIST`.
//!
//! The rendezvous port rule: `ATTNAS_RDZV_PORT` when set, else `MASTER_PORT + 1`. Never `MASTER_PORT`
//! itself: under torchrun the elastic agent already hosts its own store there
//! (`TORCHELASTIC_USE_AGENT_STORE`), so binding it fails with "address in use". Under SLURM without
//! `MASTER_PORT`, the port is `20000 + SLURM_JOB_ID % 20000` (the same on every node of the job).

use super::tcp::Endpoint;
use crate::error::{Error, Result};

/// This process's place in a multi-process job, from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world: usize,
    /// Rank on this node: the GPU this rank drives (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    pub local_world: Option<usize>,
    pub endpoint: Endpoint,
    /// `torchrun`, `SLURM` or `attnas`: for messages.
    pub launcher: &'static str,
}

/// A source of environment variables (the process environment, or a map in tests).
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Vars for std::collections::HashMap<&str, &str> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).map(|v| v.to_string()).filter(|v| !v.trim().is_empty())
    }
}

fn number(vars: &dyn Vars, name: &str, hint: &str) -> Result<Option<usize>> {
    match vars.get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| Error::usage(format!("{name}={v} is not a non-negative integer ({hint})"))),
    }
}

/// The job's place from `vars`; `None` for a single-process run (no launcher variables, or a world of 1).
pub fn from_vars(vars: &dyn Vars) -> Result<Option<LaunchEnv>> {
    let torch = vars.get("RANK").is_some() || vars.get("WORLD_SIZE").is_some();
    let slurm = !torch && vars.get("SLURM_STEP_ID").is_some() && vars.get("SLURM_PROCID").is_some();
    let (rank, world, local_rank, local_world, launcher) = if torch {
        let rank = number(vars, "RANK", "the global rank, 0..WORLD_SIZE-1")?;
        let world = number(vars, "WORLD_SIZE", "the number of ranks")?;
        let (Some(rank), Some(world)) = (rank, world) else {
            let missing = if rank.is_none() { "RANK" } else { "WORLD_SIZE" };
            return Err(Error::usage(format!(
                "{missing} is not set but {} is: set both (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and \
                 MASTER_PORT for every worker)",
                if missing == "RANK" { "WORLD_SIZE" } else { "RANK" }
            )));
        };
        let local_rank = number(vars, "LOCAL_RANK", "the rank on this node")?.unwrap_or(0);
        let local_world = number(vars, "LOCAL_WORLD_SIZE", "the ranks on this node")?;
        let launcher = if vars.get(super::launch::LAUNCHER_ENV).is_some() { "attnas" } else { "torchrun" };
        (rank, world, local_rank, local_world, launcher)
    } else if slurm {
        let rank = number(vars, "SLURM_PROCID", "the task's rank")?.unwrap_or(0);
        let world = number(vars, "SLURM_NTASKS", "the number of tasks")?.unwrap_or(1);
        let local_rank = number(vars, "SLURM_LOCALID", "the task's rank on its node")?.unwrap_or(0);
        let local_world = vars.get("SLURM_NTASKS_PER_NODE").and_then(|v| {
            // "4" or "4(x2)": the count before any repetition marker
            v.split(['(', ',']).next().and_then(|n| n.trim().parse().ok())
        });
        (rank, world, local_rank, local_world, "SLURM")
    } else {
        return Ok(None);
    };
    let (rank_var, world_var) = if slurm { ("SLURM_PROCID", "SLURM_NTASKS") } else { ("RANK", "WORLD_SIZE") };
    if world == 0 {
        return Err(Error::usage(format!("{world_var}=0: a job has at least one rank")));
    }
    if rank >= world {
        return Err(Error::usage(format!(
            "{rank_var}={rank} >= {world_var}={world}: ranks are 0..{}; check the launcher's rank and world size",
            world - 1
        )));
    }
    if let Some(lw) = local_world {
        if local_rank >= lw.max(1) {
            return Err(Error::usage(format!(
                "LOCAL_RANK={local_rank} >= LOCAL_WORLD_SIZE={lw}: local ranks are 0..{}",
                lw.max(1) - 1
            )));
        }
    }
    if world == 1 {
        return Ok(None);
    }
    let endpoint = endpoint(vars, slurm)?;
    Ok(Some(LaunchEnv { rank, world, local_rank, local_world, endpoint, launcher }))
}

/// The process environment's place (see [`from_vars`]).
pub fn from_env() -> Result<Option<LaunchEnv>> {
    from_vars(&ProcessEnv)
}

fn endpoint(vars: &dyn Vars, slurm: bool) -> Result<Endpoint> {
    let (host, origin) =
        match vars.get("MASTER_ADDR") {
            Some(h) => (h, "MASTER_ADDR".to_string()),
            None if slurm => match vars.get("SLURM_JOB_NODELIST").and_then(|l| expand_nodelist(&l).into_iter().next()) {
                Some(h) => (h, "SLURM_JOB_NODELIST (first host)".to_string()),
                None => return Err(Error::usage(
                    "MASTER_ADDR is not set and SLURM_JOB_NODELIST names no host: export MASTER_ADDR=<rank 0's host>",
                )),
            },
            None => {
                return Err(Error::usage(
                    "MASTER_ADDR is not set: set it to rank 0's host name or address on every rank (torchrun sets it)",
                ))
            }
        };
    let port_of = |name: &str| -> Result<Option<u16>> {
        match vars.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(Some)
                .ok_or_else(|| Error::usage(format!("{name}={v} is not a TCP port (1..65535)"))),
        }
    };
    let port = match (port_of("ATTNAS_RDZV_PORT")?, port_of("MASTER_PORT")?) {
        (Some(p), _) => p,
        (None, Some(mp)) => mp.checked_add(1).ok_or_else(|| {
            Error::usage("MASTER_PORT=65535 leaves no port above it for the attnas rendezvous: set ATTNAS_RDZV_PORT")
        })?,
        (None, None) if slurm => match number(vars, "SLURM_JOB_ID", "the job id")? {
            Some(id) => (20000 + id % 20000) as u16,
            None => return Err(Error::usage("set MASTER_PORT or ATTNAS_RDZV_PORT (the same on every rank)")),
        },
        (None, None) => {
            return Err(Error::usage(
                "MASTER_PORT is not set: set MASTER_PORT (attnas listens on MASTER_PORT+1) or ATTNAS_RDZV_PORT, the \
                 same on every rank",
            ))
        }
    };
    Ok(Endpoint { host, port, origin })
}

/// Expands a SLURM node list (`node[01-03,07],gpu5`) into host names (`node01 node02 node03 node07 gpu5`).
pub fn expand_nodelist(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    // split at commas outside brackets
    let (mut parts, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in list.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    for p in parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()) {
        let Some(open) = p.find('[') else {
            out.push(p);
            continue;
        };
        let prefix = &p[..open];
        let close = p[open..].find(']').map_or(p.len(), |c| open + c);
        let suffix = p.get(close + 1..).unwrap_or("");
        for range in p[open + 1..close].split(',') {
            match range.split_once('-') {
                Some((a, b)) => {
                    let width = a.len();
                    if let (Ok(lo), Ok(hi)) = (a.parse::<u64>(), b.parse::<u64>()) {
                        for n in lo..=hi {
                            out.push(format!("{prefix}{n:0width$}{suffix}"));
                        }
                    }
                }
                None => out.push(format!("{prefix}{range}{suffix}")),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn torchrun_variables_give_the_rank_and_the_port_above_master_port() {
        let v = vars(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "64"),
            ("LOCAL_RANK", "5"),
            ("LOCAL_WORLD_SIZE", "8"),
            ("MASTER_ADDR", "node01"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        let e = from_vars(&v).unwrap().unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.local_world), (5, 64, 5, Some(8)));
        assert_eq!(e.endpoint, Endpoint { host: "node01".into(), port: 29501, origin: "MASTER_ADDR".into() });
        assert_eq!(e.launcher, "torchrun");
        let mut v2 = v.clone();
        v2.insert("ATTNAS_RDZV_PORT", "40000");
        assert_eq!(from_vars(&v2).unwrap().unwrap().endpoint.port, 40000);
    }

    #[test]
    fn slurm_variables_and_the_first_host_of_the_node_list() {
        let v = vars(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "9"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "8(x2)"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
            ("SLURM_JOB_ID", "123456"),
        ]);
        let e = from_vars(&v).unwrap().unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.local_world), (9, 16, 1, Some(8)));
        assert_eq!((e.endpoint.host.as_str(), e.endpoint.port), ("gpu07", (20000 + 123456 % 20000) as u16));
        // the batch script's own process (no job step) is not a rank
        let mut batch = v.clone();
        batch.remove("SLURM_STEP_ID");
        assert_eq!(from_vars(&batch).unwrap(), None);
    }

    #[test]
    fn no_launcher_or_a_world_of_one_is_a_single_process() {
        assert_eq!(from_vars(&vars(&[])).unwrap(), None);
        assert_eq!(from_vars(&vars(&[("RANK", "0"), ("WORLD_SIZE", "1")])).unwrap(), None);
    }

    #[test]
    fn bad_launch_variables_are_one_line_usage_errors_naming_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("RANK", "4"), ("WORLD_SIZE", "4"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")],
                "RANK=4 >= WORLD_SIZE=4",
            ),
            (&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")], "MASTER_ADDR is not set"),
            (&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")], "MASTER_PORT is not set"),
            (&[("WORLD_SIZE", "2")], "RANK is not set"),
            (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=x is not"),
            (
                &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")],
                "MASTER_PORT=99999",
            ),
            (&[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "3"), ("LOCAL_WORLD_SIZE", "2")], "LOCAL_RANK=3"),
        ];
        for (pairs, want) in cases {
            let v: HashMap<&str, &str> = pairs.iter().copied().collect();
            let e = from_vars(&v).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(want) && !msg.contains('\n'), "{pairs:?}: {msg}");
        }
    }

    #[test]
    fn node_lists_expand_with_ranges_padding_and_plain_names() {
        assert_eq!(expand_nodelist("node[01-03,07],gpu5"), ["node01", "node02", "node03", "node07", "gpu5"]);
        assert_eq!(expand_nodelist("a1"), ["a1"]);
        assert_eq!(expand_nodelist("r[8-10]x"), ["r8x", "r9x", "r10x"]);
        assert!(expand_nodelist("").is_empty());
    }
}
