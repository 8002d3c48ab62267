//! `--device auto|cpu|cuda[:N]|emu`: which backend a job runs on. The default (`auto`) is the first GPU
//! when one is found, else the CPU (saying so on stderr). A job is a [`BackendJob`], run once for the
//! chosen backend type, so every command is written once, generic over the backend.

use std::str::FromStr;

use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::gpu::GpuDevice;
use crate::backend::cuda::CudaBackend;
use crate::backend::{Backend, SupernetOps};
#[cfg(not(feature = "emu"))]
use crate::error::Error;
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
    /// The SIMT emulator (builds with the `emu` feature only): the CUDA launch path on the CPU.
    Emu,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            "emu" => Ok(DeviceChoice::Emu),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceChoice::Cuda(i)),
                _ => Err(format!("unknown device '{s}'; use auto, cpu, cuda, cuda:N or emu")),
            },
        }
    }
}

/// A job that runs on any backend.
pub trait BackendJob {
    type Output;
    fn run<B: SupernetOps>(self, backend: &B) -> Result<Self::Output>;
}

/// Runs `job` on the chosen device.
pub fn run_on<J: BackendJob>(choice: DeviceChoice, job: J) -> Result<J::Output> {
    match choice {
        DeviceChoice::Cpu => run_cpu(job),
        DeviceChoice::Cuda(i) => {
            let b = CudaBackend::new(GpuDevice::open(i)?);
            eprintln!("device: {}", b.name());
            job.run(&b)
        }
        DeviceChoice::Auto => match GpuDevice::open(0) {
            Ok(d) => {
                let b = CudaBackend::new(d);
                eprintln!("device: {}", b.name());
                job.run(&b)
            }
            Err(e) => {
                eprintln!("device: no GPU ({e}); running on the CPU");
                run_cpu(job)
            }
        },
        DeviceChoice::Emu => run_emu(job),
    }
}

fn run_cpu<J: BackendJob>(job: J) -> Result<J::Output> {
    let b = CpuBackend::new();
    eprintln!("device: {}", b.name());
    job.run(&b)
}

#[cfg(feature = "emu")]
fn run_emu<J: BackendJob>(job: J) -> Result<J::Output> {
    let b = CudaBackend::new(crate::backend::cuda::emu::EmuDevice::new());
    eprintln!("device: {}", b.name());
    job.run(&b)
}

#[cfg(not(feature = "emu"))]
fn run_emu<J: BackendJob>(_job: J) -> Result<J::Output> {
    Err(Error::usage("--device emu needs a build with the SIMT emulator (cargo build --features emu)"))
}
