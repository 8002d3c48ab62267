//! Loads every kernel module once at start-up and resolves every [`KernelFn`], so a missing symbol
//! fails when the device opens, not at step 3,000. Per module: the cubin built for the device's arch
//! (`sm_90a` only on a 9.0 device), else the build-time PTX when its arch is not newer than the
//! device, else NVRTC for `compute_XY`.

use super::error::CudaError;
use super::kernels::{KernelFn, MODULES, PTX_ARCH};
use super::nvrtc;
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// How one module got onto the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleSource {
    Cubin(String),
    Ptx(String),
    Nvrtc(String),
}

pub struct Registry {
    functions: Vec<CudaFunction>,
    pub sources: Vec<(&'static str, ModuleSource)>,
}

fn arch_number(arch: &str) -> u32 {
    arch.trim_start_matches("sm_")
        .trim_start_matches("compute_")
        .trim_end_matches(['a', 'f'])
        .parse()
        .unwrap_or(u32::MAX)
}

impl Registry {
    pub fn load(ctx: &Arc<CudaContext>, cc: (i32, i32)) -> Result<Self, CudaError> {
        let dev_arch = (cc.0 * 10 + cc.1) as u32;
        let mut modules = Vec::with_capacity(MODULES.len());
        let mut sources = Vec::new();
        for m in MODULES {
            let exact = m.cubins.iter().find(|(arch, _)| arch_number(arch) == dev_arch);
            let (ptx, source) = if let Some((arch, bin)) = exact {
                (Ptx::from_binary(bin.to_vec()), ModuleSource::Cubin(arch.to_string()))
            } else if let (Some(ptx), Some(parch)) = (m.ptx, PTX_ARCH) {
                if arch_number(parch) <= dev_arch {
                    (Ptx::from_src(ptx), ModuleSource::Ptx(parch.to_string()))
                } else {
                    Self::nvrtc(m.name, m.source, dev_arch)?
                }
            } else {
                Self::nvrtc(m.name, m.source, dev_arch)?
            };
            let module = ctx.load_module(ptx).map_err(|e| CudaError::ModuleLoad {
                module: m.name.to_string(),
                detail: format!("{e:?} (from {source:?})"),
            })?;
            modules.push(module);
            sources.push((m.name, source));
        }
        let mut functions = Vec::with_capacity(KernelFn::ALL.len());
        for k in KernelFn::ALL {
            let f = modules[k.module()].load_function(k.name()).map_err(|e| CudaError::ModuleLoad {
                module: MODULES[k.module()].name.to_string(),
                detail: format!("symbol {} missing: {e:?}", k.name()),
            })?;
            functions.push(f);
        }
        Ok(Registry { functions, sources })
    }

    fn nvrtc(name: &str, source: &str, dev_arch: u32) -> Result<(Ptx, ModuleSource), CudaError> {
        let arch = format!("compute_{dev_arch}");
        let compiled = nvrtc::compile(name, source, nvrtc::Target::Ptx(&arch))?;
        let text = String::from_utf8_lossy(&compiled.image).into_owned();
        Ok((Ptx::from_src(text), ModuleSource::Nvrtc(arch)))
    }

    pub fn function(&self, k: KernelFn) -> &CudaFunction {
        // KernelFn::ALL is in declaration order, so the discriminant indexes `functions`.
        &self.functions[k as usize]
    }
}
