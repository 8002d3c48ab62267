//! `attnas bench allreduce`: the bandwidth of the gradient all-reduce between ranks, at the size of the
//! supernet's gradient arena and at the bucket size, as nccl-tests report it: algorithm bandwidth
//! `algBW = bytes / time` and bus bandwidth `busBW = algBW * 2 (n - 1) / n` (what each rank's link
//! carries in a ring all-reduce, comparable to the link's peak: H100 NVLink 4 is 450 GB/s per direction).
//! On GPU ranks the buffers are device memory reduced by NCCL; on CPU ranks (`--ranks N`) the host path
//! the test vehicle uses (not a performance path).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::device::{run_on, BackendJob, DeviceChoice};
use crate::backend::{DeviceMemory, SupernetOps};
use crate::dist::launch::{plan, run_ranked, RankArgs};
use crate::dist::sync::{agree_at_start, all_reduce_tensor};
use crate::dist::{DeviceCollectives, Ranks, ReduceOp};
use crate::error::{Error, Result};
use crate::nn::ParamTable;
use crate::space::Space;

#[derive(Args, Debug)]
pub struct BenchAllreduceArgs {
    /// The space whose gradient arena sets the large size (built-in name or YAML file).
    #[arg(long, default_value = "attentivenas")]
    pub space: String,
    /// The bucket size (MiB), the small size measured.
    #[arg(long, default_value_t = crate::dist::buckets::DEFAULT_BUCKET_MB)]
    pub bucket_mb: f64,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub ranks: RankArgs,
}

/// One measured size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AllreduceRow {
    pub what: String,
    pub bytes: usize,
    pub time_us: f64,
    pub alg_gb_s: f64,
    pub bus_gb_s: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AllreduceResult {
    pub device: String,
    pub ranks: usize,
    pub collectives: String,
    pub rows: Vec<AllreduceRow>,
}

/// nccl-tests' bus bandwidth of an all-reduce over `n` ranks from its algorithm bandwidth.
pub fn bus_bandwidth(alg: f64, n: usize) -> f64 {
    if n <= 1 {
        return alg;
    }
    alg * 2.0 * (n as f64 - 1.0) / n as f64
}

struct Job<'a>(&'a BenchAllreduceArgs, Ranks, usize);

impl BackendJob for Job<'_> {
    type Output = AllreduceResult;
    fn run<B: SupernetOps>(self, b: &B) -> Result<AllreduceResult> {
        let (a, ranks, arena_len) = (self.0, self.1, self.2);
        agree_at_start(ranks.as_ref(), b, &[("bench", format!("allreduce {arena_len} {}", a.bucket_mb))])?;
        let bucket_len = ((a.bucket_mb * (1u64 << 20) as f64) as usize / 4).clamp(1, arena_len.max(1));
        // one GPU alone: a communicator of world size 1, so the NCCL path is exercised (a local copy)
        let solo = match (ranks.world_size(), b.device_handle()) {
            (1, Some(h)) => {
                Some((crate::dist::nccl::NcclComm::init(&crate::dist::SingleRank, &h, Default::default())?, h))
            }
            _ => None,
        };
        let reduce = |t: crate::backend::Tensor| -> Result<()> {
            match &solo {
                Some((comm, h)) => {
                    comm.all_reduce_f32_async(t.addr(), t.len(), ReduceOp::Mean, h.stream)?;
                    comm.join(h.stream)
                }
                None => all_reduce_tensor(ranks.as_ref(), b, t, ReduceOp::Mean),
            }
        };
        if ranks.world_size() == 1 && solo.is_none() {
            let collectives = "one rank on the CPU: nothing to reduce (use --ranks N or --gpus N)".to_string();
            return Ok(AllreduceResult { device: b.name(), ranks: 1, collectives, rows: Vec::new() });
        }
        let mem = b.alloc(arena_len.max(bucket_len))?;
        b.upload(mem.tensor(), &vec![1.0; mem.tensor().len()])?;
        let mut rows = Vec::new();
        for (what, len) in [("gradient arena", arena_len), ("bucket", bucket_len)] {
            let t = mem.tensor().slice(0, len)?;
            let mut time = 0.0;
            for i in 0..a.warmup + a.iters {
                ranks.barrier()?;
                b.synchronize()?;
                let start = Instant::now();
                reduce(t)?;
                b.synchronize()?;
                if i >= a.warmup {
                    time += start.elapsed().as_secs_f64();
                }
            }
            let per = time / a.iters.max(1) as f64;
            let alg = (len * 4) as f64 / per.max(1e-12) / 1e9;
            rows.push(AllreduceRow {
                what: what.to_string(),
                bytes: len * 4,
                time_us: per * 1e6,
                alg_gb_s: alg,
                bus_gb_s: bus_bandwidth(alg, ranks.world_size()),
            });
        }
        // the values stay 1.0 under a mean: a wrong reduction shows here
        let host = b.download(mem.tensor().slice(0, 16.min(arena_len))?)?;
        if host.iter().any(|&v| (v - 1.0).abs() > 1e-6) {
            return Err(Error::Other(format!("all-reduce mean of ones gave {host:?}")));
        }
        let collectives = match (ranks.device(), &solo) {
            (_, Some((comm, _))) => comm.describe(),
            (Some(d), _) => d.describe(),
            (None, _) => "host (CPU ranks, the test vehicle)".to_string(),
        };
        Ok(AllreduceResult { device: b.name(), ranks: ranks.world_size(), collectives, rows })
    }
}

pub fn run(a: &BenchAllreduceArgs) -> Result<()> {
    if a.iters == 0 || !(a.bucket_mb.is_finite() && a.bucket_mb > 0.0) {
        return Err(Error::usage("bench allreduce: --iters and --bucket-mb must be positive"));
    }
    let space = Space::resolve(&a.space)?;
    let arena_len = ParamTable::new(&space)?.params_len;
    let outcome =
        run_ranked(plan(&a.ranks, a.device)?, a.device, &|ranks, device| run_on(device, Job(a, ranks, arena_len)))?;
    let Some(r) = outcome.leader() else { return Ok(()) };
    println!("bench allreduce: {} rank(s) on {}; {}", r.ranks, r.device, r.collectives);
    println!("  {:<16} {:>12} {:>12} {:>12} {:>12}", "size", "bytes", "time (us)", "algBW GB/s", "busBW GB/s");
    for row in &r.rows {
        println!(
            "  {:<16} {:>12} {:>12.1} {:>12.2} {:>12.2}",
            row.what, row.bytes, row.time_us, row.alg_gb_s, row.bus_gb_s
        );
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(p, text).map_err(|e| Error::io(p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bus_bandwidth;

    #[test]
    fn bus_bandwidth_is_nccl_tests_all_reduce_factor() {
        assert_eq!(bus_bandwidth(100.0, 1), 100.0);
        assert_eq!(bus_bandwidth(100.0, 2), 100.0);
        assert_eq!(bus_bandwidth(100.0, 8), 175.0);
    }
}
