//! `attnas info`: version, how the kernels were built, which CUDA libraries the loader finds, each
//! GPU, and the CPU threads. Without CUDA it says so in one plain line and succeeds.

use crate::backend::cuda::{self, probe, CudaError};
use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Also print the ptxas register/shared-memory/spill report of every kernel (nvcc builds only).
    #[arg(long)]
    pub ptxas: bool,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    println!(
        "attnas {} (opt-level {}, debug assertions {})",
        env!("CARGO_PKG_VERSION"),
        crate::build_info::BUILD_OPT_LEVEL,
        crate::build_info::BUILD_DEBUG_ASSERTIONS
    );
    println!("kernels: {}", cuda::build_summary());
    let modules: Vec<&str> = cuda::kernels::MODULES.iter().map(|m| m.name).collect();
    println!("kernel modules ({}): {}; entry points: {}", modules.len(), modules.join(", "), cuda::KernelFn::ALL.len());
    println!("cpu threads: {}", rayon::current_num_threads());
    match probe::gpus() {
        Err(CudaError::NoDriverLibrary) => {
            println!("no GPU found: no CUDA driver on this machine (the CPU backend will be used)");
        }
        Err(e) => println!("no GPU found: {e}"),
        Ok(gpus) if gpus.is_empty() => println!("no GPU found: the driver reports no devices"),
        Ok(gpus) => {
            println!("CUDA libraries:");
            for lib in probe::libraries() {
                match lib.status {
                    Ok(v) => println!("  {:<17} {v}", lib.name),
                    Err(e) => println!("  {:<17} not found ({e})", lib.name),
                }
            }
            for g in &gpus {
                println!(
                    "gpu {}: {} (compute capability {}.{}, {:.1} GiB)",
                    g.ordinal,
                    g.name,
                    g.compute_capability.0,
                    g.compute_capability.1,
                    g.total_memory as f64 / (1u64 << 30) as f64
                );
            }
            if gpus.len() > 1 {
                println!("peer access (P2P; `atomics` = native atomics over the link, as NVLink gives):");
                for a in 0..gpus.len() {
                    let row: Vec<String> = (0..gpus.len())
                        .map(|b| match (a == b, probe::peer_access(a, b)) {
                            (true, _) => "-".to_string(),
                            (false, Ok((true, true))) => format!("{b}:atomics"),
                            (false, Ok((true, false))) => format!("{b}:yes"),
                            (false, Ok((false, _))) => format!("{b}:no"),
                            (false, Err(_)) => format!("{b}:?"),
                        })
                        .collect();
                    println!("  gpu {a} -> {}", row.join(" "));
                }
            }
        }
    }
    match crate::dist::nccl::library_status() {
        Ok(v) => println!("NCCL: {v} (multi-GPU ranks: --gpus N, torchrun, srun)"),
        Err(why) => println!("NCCL: {why}"),
    }
    if args.ptxas {
        if cuda::kernels::PTXAS_REPORT.is_empty() {
            println!("ptxas report: none (built without nvcc)");
        } else {
            println!("ptxas report (per kernel: registers, shared memory, spills):");
            for line in cuda::kernels::PTXAS_REPORT.lines().filter(|l| !l.trim().is_empty()) {
                println!("  {}", line.trim_start_matches("ptxas info    : "));
            }
        }
    }
    Ok(())
}
