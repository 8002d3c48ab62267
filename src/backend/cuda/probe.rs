//! What CUDA this machine has, found without panicking: the driver library and its CUDA version, the
//! GPUs, and whether cuBLAS, cuBLASLt and NVRTC load (with versions). `attnas info` prints it; GPU
//! tests use [`device_count`] to skip with one line.

use super::error::{guard, CudaError};
use super::nvrtc;
use cudarc::driver::result as drv;

/// CUDA version this build's bindings target (cudarc feature `cuda-13000`).
pub const BUILD_CUDA_VERSION: i32 = 13000;

fn fmt_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The driver's CUDA version (e.g. 13000), after checking that libcuda loads.
pub fn driver_version() -> Result<i32, CudaError> {
    guard("libcuda", || {
        // SAFETY: probing for the library; loads nothing else.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriverLibrary);
        }
        let mut v = 0;
        // SAFETY: out-pointer to a live local.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
            .result()
            .map_err(|e| CudaError::driver("cuDriverGetVersion", e))?;
        Ok(v)
    })
}

/// Number of visible GPUs; typed errors for no library, an old driver, or no device.
pub fn device_count() -> Result<usize, CudaError> {
    let v = driver_version()?;
    if v < BUILD_CUDA_VERSION {
        return Err(CudaError::DriverTooOld { found: fmt_version(v), needed: fmt_version(BUILD_CUDA_VERSION) });
    }
    guard("libcuda", || {
        if let Err(e) = drv::init() {
            return if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE {
                Err(CudaError::NoDevice)
            } else {
                Err(CudaError::driver("cuInit", e))
            };
        }
        let n = drv::device::get_count().map_err(|e| CudaError::driver("cuDeviceGetCount", e))?;
        Ok(n.max(0) as usize)
    })
}

#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
}

pub fn gpus() -> Result<Vec<GpuInfo>, CudaError> {
    let n = device_count()?;
    guard("libcuda", || {
        let mut out = Vec::new();
        for i in 0..n {
            let dev = drv::device::get(i as i32).map_err(|e| CudaError::driver("cuDeviceGet", e))?;
            let name = drv::device::get_name(dev).map_err(|e| CudaError::driver("cuDeviceGetName", e))?;
            use cudarc::driver::sys::CUdevice_attribute as A;
            // SAFETY: dev is a valid device handle from cuDeviceGet.
            let (major, minor, mem) = unsafe {
                (
                    drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0),
                    drv::device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).unwrap_or(0),
                    drv::device::total_mem(dev).unwrap_or(0),
                )
            };
            out.push(GpuInfo { ordinal: i, name, compute_capability: (major, minor), total_memory: mem });
        }
        Ok(out)
    })
}

/// Whether GPU `a` can read and write GPU `b`'s memory directly (peer access), and whether the link
/// carries native atomics (NVLink does, PCIe peer links usually do not: the driver API's best hint of
/// the link kind without NVML).
pub fn peer_access(a: usize, b: usize) -> Result<(bool, bool), CudaError> {
    guard("libcuda", || {
        let da = drv::device::get(a as i32).map_err(|e| CudaError::driver("cuDeviceGet", e))?;
        let db = drv::device::get(b as i32).map_err(|e| CudaError::driver("cuDeviceGet", e))?;
        use cudarc::driver::sys::CUdevice_P2PAttribute as P;
        let (mut access, mut atomics) = (0i32, 0i32);
        // SAFETY: valid device handles from cuDeviceGet; out-pointers to locals.
        unsafe {
            cudarc::driver::sys::cuDeviceGetP2PAttribute(
                &mut access,
                P::CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED,
                da,
                db,
            )
            .result()
            .map_err(|e| CudaError::driver("cuDeviceGetP2PAttribute", e))?;
            cudarc::driver::sys::cuDeviceGetP2PAttribute(
                &mut atomics,
                P::CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED,
                da,
                db,
            )
            .result()
            .map_err(|e| CudaError::driver("cuDeviceGetP2PAttribute", e))?;
        }
        Ok((access != 0, atomics != 0))
    })
}

/// One library the loader looked for.
#[derive(Debug, Clone)]
pub struct LibraryStatus {
    pub name: &'static str,
    /// `Ok(version)` when found, `Err(reason)` otherwise.
    pub status: Result<String, String>,
}

pub fn libraries() -> Vec<LibraryStatus> {
    let driver = match driver_version() {
        Ok(v) => Ok(format!("CUDA {}", fmt_version(v))),
        Err(e) => Err(e.to_string()),
    };
    let cublas = guard("libcublas", || {
        // SAFETY: presence probe, then a property query with out-pointers to locals.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(CudaError::MissingLibrary { lib: "libcublas".into(), hint: "install CUDA 13 cuBLAS".into() });
        }
        use cudarc::cublas::sys::libraryPropertyType as P;
        let (mut a, mut b, mut c) = (0, 0, 0);
        unsafe {
            cudarc::cublas::sys::cublasGetProperty(P::MAJOR_VERSION, &mut a);
            cudarc::cublas::sys::cublasGetProperty(P::MINOR_VERSION, &mut b);
            cudarc::cublas::sys::cublasGetProperty(P::PATCH_LEVEL, &mut c);
        }
        Ok(format!("{a}.{b}.{c}"))
    })
    .map_err(|e| e.to_string());
    let cublaslt = guard("libcublasLt", || {
        // SAFETY: presence probe only.
        if unsafe { cudarc::cublaslt::sys::is_culib_present() } {
            Ok("found".to_string())
        } else {
            Err(CudaError::MissingLibrary { lib: "libcublasLt".into(), hint: "install CUDA 13 cuBLAS".into() })
        }
    })
    .map_err(|e| e.to_string());
    let nvrtc = nvrtc::version().map(|(a, b)| format!("{a}.{b}")).map_err(|e| e.to_string());
    vec![
        LibraryStatus { name: "driver (libcuda)", status: driver },
        LibraryStatus { name: "cuBLAS", status: cublas },
        LibraryStatus { name: "cuBLASLt", status: cublaslt },
        LibraryStatus { name: "NVRTC", status: nvrtc },
    ]
}
