//! Device collectives over NCCL, through cudarc's `nccl` module (loaded at run time like the driver, so
//! a CPU-only build and machine never need the library), and the watchdog that keeps a dead or hung
//! rank from hanging the others.
//!
//! Bootstrap: the host transport ([`super::tcp`]) is already up; rank 0 calls `ncclGetUniqueId`, the id
//! goes to every rank over it, then each rank calls `ncclCommInitRank` with its own GPU current. A rank
//! that dies during that call would leave the others inside it forever, so a timer ends the process
//! with a message if the init does not return within the collective timeout.
//!
//! Overlap: the communicator has its own stream. An all-reduce records an event on the compute stream,
//! makes the communicator's stream wait for it and queues `ncclAllReduce` there (the backward keeps
//! running); [`DeviceCollectives::join`] records an event after the last one and makes the compute stream
//! wait, so the optimizer reads averaged gradients and nothing blocks the host.
//!
//! Watchdog: a thread polls `ncclCommGetAsyncError` every half second and watches the event after the
//! latest collective; an NCCL error (a peer's process died, the network failed) or a collective not done
//! within the collective timeout aborts the communicator (`ncclCommAbort`, which unblocks the GPU),
//! tells the other ranks over the host transport, prints one line naming this rank and the last good
//! checkpoint, and ends the process (exit code 1) if the main thread has not done so within 10 s.
//!
//! The library: cudarc looks for `libnccl.so` (not the `libnccl.so.2` that the `nvidia-nccl-cu13` wheel
//! and Debian's `libnccl2` install). [`library_dir_fix`] finds a `libnccl.so.2` and links it as
//! `libnccl.so` in a private folder; the launcher puts that folder on its workers' `LD_LIBRARY_PATH`,
//! and a rank started by torchrun or srun re-executes itself once with it ([`reexec_with_nccl`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::result as drv;
use cudarc::driver::sys as dsys;
use cudarc::nccl::result as nccl;
use cudarc::nccl::sys as nsys;

use super::tcp::TcpRank;
use super::{DeviceCollectives, HostCollectives, LastCheckpoint, RankContext, ReduceOp, Timeouts};
use crate::backend::cuda::error::guard;
use crate::backend::DeviceHandle;
use crate::error::{Error, Result};

/// What `attnas info` says about NCCL: the version, or why there is none (one line, with the fix).
pub fn library_status() -> std::result::Result<String, String> {
    let found = guard("libnccl", || {
        // SAFETY: probes for the library by name; loads nothing else.
        if !unsafe { nsys::is_culib_present() } {
            return Err(crate::backend::cuda::CudaError::MissingLibrary { lib: "libnccl".into(), hint: String::new() });
        }
        nccl::get_nccl_version().map_err(|e| crate::backend::cuda::CudaError::Driver {
            what: "ncclGetVersion".into(),
            detail: format!("{:?}", e.0),
        })
    });
    match found {
        Ok(v) => Ok(format!("NCCL {}.{}.{}", v / 10000, (v / 100) % 100, v % 100)),
        Err(_) => Err(match find_libnccl_so2() {
            Some(p) => format!(
                "libnccl.so not on the library path; found {} (attnas links it itself for --gpus, torchrun and srun \
                 ranks; or add a libnccl.so symlink beside it and put that folder on LD_LIBRARY_PATH)",
                p.display()
            ),
            None => "not found: install the nvidia-nccl-cu13 wheel (scripts/setup-cuda-wheels.sh nccl) or the \
                     system's libnccl2, needed for multi-GPU runs only"
                .to_string(),
        }),
    }
}

/// Folders where a `libnccl.so.2` may be: `LD_LIBRARY_PATH`, this checkout's `.nccl-wheel`, Python
/// site-packages (`nvidia/nccl/lib`), the system library folders.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Ok(d) = std::env::var("NCCL_WHEEL_DIR") {
        dirs.push(Path::new(&d).join("nvidia/nccl/lib"));
    }
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().take(4) {
            dirs.push(up.join(".nccl-wheel/nvidia/nccl/lib"));
        }
    }
    let mut roots: Vec<PathBuf> = vec!["/usr/local/lib".into(), "/usr/lib".into()];
    if let Ok(v) = std::env::var("VIRTUAL_ENV") {
        roots.push(Path::new(&v).join("lib"));
    }
    if let Ok(h) = std::env::var("HOME") {
        roots.push(Path::new(&h).join(".local/lib"));
    }
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("python3") {
                    for site in ["site-packages", "dist-packages"] {
                        dirs.push(e.path().join(site).join("nvidia/nccl/lib"));
                    }
                }
            }
        }
    }
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/cuda/lib64"].map(PathBuf::from));
    dirs
}

/// The first `libnccl.so.2` in [`candidate_dirs`].
pub fn find_libnccl_so2() -> Option<PathBuf> {
    candidate_dirs().into_iter().map(|d| d.join("libnccl.so.2")).find(|p| p.is_file())
}

/// When cudarc cannot load NCCL but a `libnccl.so.2` exists: a private folder holding `libnccl.so`
/// (a symlink to it), to put first on `LD_LIBRARY_PATH`. `None` when no fix is needed or possible.
pub fn library_dir_fix() -> Option<PathBuf> {
    // SAFETY: probes for the library by name.
    if unsafe { nsys::is_culib_present() } {
        return None;
    }
    let so2 = find_libnccl_so2()?;
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("attnas-nccl-{uid}"));
    std::fs::create_dir_all(&dir).ok()?;
    let link = dir.join("libnccl.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&so2, &link).ok()?;
    Some(dir)
}

/// `LD_LIBRARY_PATH` with `dir` first.
pub fn library_path_with(dir: &Path) -> String {
    match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", dir.display()),
        _ => dir.display().to_string(),
    }
}

/// For a GPU rank started by torchrun or srun: if NCCL is only loadable through [`library_dir_fix`],
/// re-executes this process (same pid, arguments and environment) with that folder on
/// `LD_LIBRARY_PATH`, once. Returns normally when nothing needs doing or the re-exec is not possible.
pub fn reexec_with_nccl() {
    if std::env::var_os("ATTNAS_NCCL_REEXEC").is_some() {
        return;
    }
    let Some(dir) = library_dir_fix() else { return };
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("LD_LIBRARY_PATH", library_path_with(&dir))
            .env("ATTNAS_NCCL_REEXEC", "1"),
    );
    eprintln!("note: could not re-execute with NCCL's folder on LD_LIBRARY_PATH ({err}); continuing");
}

/// Raw driver and NCCL handles, owned by one [`NcclComm`].
struct Handles {
    comm: nsys::ncclComm_t,
    context: dsys::CUcontext,
    stream: dsys::CUstream,
    /// Recorded on the compute stream before each collective (the communicator's stream waits for it).
    ready: dsys::CUevent,
    /// Recorded on the communicator's stream after each collective (join and the watchdog read it).
    done: dsys::CUevent,
}

// SAFETY: NCCL communicators, CUDA streams and events may be used from any thread once the context is
// current there; `ncclCommAbort` and `ncclCommGetAsyncError` are documented as safe to call from another
// thread while a collective is in flight. Everything else is called from the rank's main thread.
unsafe impl Send for Handles {}
// SAFETY: see above.
unsafe impl Sync for Handles {}

/// One rank's NCCL communicator on its GPU.
pub struct NcclComm {
    h: Handles,
    rank: usize,
    world: usize,
    ordinal: usize,
    version: i32,
    /// When the latest collective was launched (the watchdog's hang clock).
    last_launch: Mutex<Option<Instant>>,
    aborted: AtomicBool,
}

fn nccl_err(what: &str, e: nccl::NcclError) -> Error {
    Error::Other(format!("{what}: NCCL error {:?}", e.0))
}

fn drv_err(what: &str, e: cudarc::driver::DriverError) -> Error {
    Error::Other(format!("{what}: CUDA error {:?}", e.0))
}

impl NcclComm {
    /// Creates this rank's communicator over `host` (a collective: every rank calls it), on the GPU of
    /// `device` (its context is made current on this thread).
    pub fn init(host: &dyn HostCollectives, device: &DeviceHandle, timeouts: Timeouts) -> Result<NcclComm> {
        let version = guard("libnccl", || {
            // SAFETY: probes for the library by name.
            if !unsafe { nsys::is_culib_present() } {
                return Err(crate::backend::cuda::CudaError::MissingLibrary {
                    lib: "libnccl".into(),
                    hint: String::new(),
                });
            }
            nccl::get_nccl_version().map_err(|e| crate::backend::cuda::CudaError::Driver {
                what: "ncclGetVersion".into(),
                detail: format!("{:?}", e.0),
            })
        })
        .map_err(|_| {
            Error::usage(format!(
                "NCCL is needed for several GPU ranks: {}",
                library_status().err().unwrap_or_default()
            ))
        })?;
        let context = device.context as dsys::CUcontext;
        // SAFETY: the context handle comes from the live backend of this rank.
        unsafe { dsys::cuCtxSetCurrent(context) }.result().map_err(|e| drv_err("cuCtxSetCurrent", e))?;
        let mine: Vec<u8> = if host.rank() == 0 {
            let id = guard("libnccl", || {
                nccl::get_uniqueid().map_err(|e| crate::backend::cuda::CudaError::Driver {
                    what: "ncclGetUniqueId".into(),
                    detail: format!("{:?}", e.0),
                })
            })?;
            id.internal.iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        let id_bytes = host.broadcast_bytes(0, &mine)?;
        if id_bytes.len() != 128 {
            return Err(Error::Other(format!("NCCL unique id of {} bytes from rank 0 (expected 128)", id_bytes.len())));
        }
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, s) in internal.iter_mut().zip(&id_bytes) {
            *d = *s as std::ffi::c_char;
        }
        let id = nsys::ncclUniqueId { internal };
        let (rank, world) = (host.rank(), host.world_size());
        // A peer that dies inside ncclCommInitRank leaves us there: a timer ends the process instead.
        let init_done = Arc::new(AtomicBool::new(false));
        {
            let done = init_done.clone();
            let limit = timeouts.collective;
            std::thread::spawn(move || {
                let t = Instant::now();
                while t.elapsed() < limit {
                    if done.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                if !done.load(Ordering::Acquire) {
                    eprintln!(
                        "error: rank {rank}: ncclCommInitRank did not return within {:.0} s (a rank died during \
                         start-up?); stopping",
                        limit.as_secs_f64()
                    );
                    std::process::exit(1);
                }
            });
        }
        let mut comm: nsys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id came from rank 0's ncclGetUniqueId; the rank and
        // world were checked by the transport; the GPU's context is current on this thread.
        let r = guard("libnccl", || {
            unsafe { nccl::comm_init_rank(&mut comm, world as i32, id, rank as i32) }.map_err(|e| {
                crate::backend::cuda::CudaError::Driver {
                    what: "ncclCommInitRank".into(),
                    detail: format!("{:?}", e.0),
                }
            })
        });
        init_done.store(true, Ordering::Release);
        r?;
        let stream =
            drv::stream::create(drv::stream::StreamKind::NonBlocking).map_err(|e| drv_err("cuStreamCreate", e))?;
        let flags = dsys::CUevent_flags::CU_EVENT_DISABLE_TIMING;
        let ready = drv::event::create(flags).map_err(|e| drv_err("cuEventCreate", e))?;
        let done = drv::event::create(flags).map_err(|e| drv_err("cuEventCreate", e))?;
        Ok(NcclComm {
            h: Handles { comm, context, stream, ready, done },
            rank,
            world,
            ordinal: device.ordinal,
            version,
            last_launch: Mutex::new(None),
            aborted: AtomicBool::new(false),
        })
    }

    fn check(&self, what: &str, r: std::result::Result<nccl::NcclStatus, nccl::NcclError>) -> Result<()> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(Error::Other(format!("{what}: the NCCL communicator was aborted")));
        }
        r.map(|_| ()).map_err(|e| nccl_err(what, e))
    }

    /// Orders the communicator's stream after the work queued so far on `stream`.
    fn after(&self, stream: u64) -> Result<()> {
        // SAFETY: both the event and the streams are live handles of this context.
        unsafe {
            drv::event::record(self.h.ready, stream as dsys::CUstream).map_err(|e| drv_err("cuEventRecord", e))?;
            drv::stream::wait_event(self.h.stream, self.h.ready, dsys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)
                .map_err(|e| drv_err("cuStreamWaitEvent", e))
        }
    }

    fn launched(&self) -> Result<()> {
        // SAFETY: live event and stream of this context.
        unsafe { drv::event::record(self.h.done, self.h.stream) }.map_err(|e| drv_err("cuEventRecord", e))?;
        if let Ok(mut l) = self.last_launch.lock() {
            *l = Some(Instant::now());
        }
        Ok(())
    }

    /// Aborts the communicator (unblocks the GPU); later calls return errors.
    pub fn abort(&self) {
        if !self.aborted.swap(true, Ordering::AcqRel) {
            // SAFETY: the communicator is live; abort is safe while collectives are in flight.
            let _ = unsafe { nccl::comm_abort(self.h.comm) };
        }
    }

    /// The communicator's asynchronous error, if any (a peer died, the network failed).
    fn async_error(&self) -> Option<String> {
        let mut e = nsys::ncclResult_t::ncclSuccess;
        // SAFETY: live communicator, valid out-pointer.
        let r = unsafe { nsys::ncclCommGetAsyncError(self.h.comm, &mut e) };
        match (r, e) {
            (nsys::ncclResult_t::ncclSuccess, nsys::ncclResult_t::ncclSuccess | nsys::ncclResult_t::ncclInProgress) => {
                None
            }
            (nsys::ncclResult_t::ncclSuccess, err) => Some(format!("NCCL reported {err:?}")),
            (call, _) => Some(format!("ncclCommGetAsyncError failed: {call:?}")),
        }
    }

    /// Seconds the latest collective has been in flight, `None` when it is done (or none was launched).
    fn in_flight_for(&self) -> Option<Duration> {
        let since = (*self.last_launch.lock().ok()?)?;
        // SAFETY: the context is current on the calling thread (the watchdog binds it); live event.
        match unsafe { drv::event::query(self.h.done) } {
            Ok(()) => None,
            Err(_) => Some(since.elapsed()),
        }
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: live handles owned by this struct, released once. Abort rather than destroy: destroy
        // waits for peers, which may be gone.
        unsafe {
            if !self.aborted.swap(true, Ordering::AcqRel) {
                let _ = nccl::comm_abort(self.h.comm);
            }
            let _ = drv::event::destroy(self.h.ready);
            let _ = drv::event::destroy(self.h.done);
            let _ = drv::stream::destroy(self.h.stream);
        }
    }
}

impl DeviceCollectives for NcclComm {
    fn all_reduce_f32_async(&self, addr: u64, len: usize, op: ReduceOp, stream: u64) -> Result<()> {
        self.after(stream)?;
        let op = match op {
            ReduceOp::Sum => nsys::ncclRedOp_t::ncclSum,
            ReduceOp::Mean => nsys::ncclRedOp_t::ncclAvg,
        };
        // SAFETY: `addr` is a live device tensor of `len` f32 on this rank's GPU (the caller's Tensor),
        // reduced in place (NCCL allows send == recv); the communicator and its stream are live.
        let r = unsafe {
            nccl::all_reduce(
                addr as *const std::ffi::c_void,
                addr as *mut std::ffi::c_void,
                len,
                nsys::ncclDataType_t::ncclFloat32,
                op,
                self.h.comm,
                self.h.stream as nsys::cudaStream_t,
            )
        };
        self.check("ncclAllReduce", r)?;
        self.launched()
    }

    fn broadcast_f32_async(&self, addr: u64, len: usize, root: usize, stream: u64) -> Result<()> {
        self.after(stream)?;
        // SAFETY: as for the all-reduce: a live device tensor, in place, live communicator and stream.
        let r = unsafe {
            nccl::broadcast(
                addr as *const std::ffi::c_void,
                addr as *mut std::ffi::c_void,
                len,
                nsys::ncclDataType_t::ncclFloat32,
                root as i32,
                self.h.comm,
                self.h.stream as nsys::cudaStream_t,
            )
        };
        self.check("ncclBroadcast", r)?;
        self.launched()
    }

    fn join(&self, stream: u64) -> Result<()> {
        // SAFETY: live event and streams of this context; `done` follows the latest collective.
        unsafe {
            drv::event::record(self.h.done, self.h.stream).map_err(|e| drv_err("cuEventRecord", e))?;
            drv::stream::wait_event(
                stream as dsys::CUstream,
                self.h.done,
                dsys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
            .map_err(|e| drv_err("cuStreamWaitEvent", e))
        }
    }

    fn describe(&self) -> String {
        let v = self.version;
        format!(
            "NCCL {}.{}.{}: rank {} of {} on cuda:{}",
            v / 10000,
            (v / 100) % 100,
            v % 100,
            self.rank,
            self.world,
            self.ordinal
        )
    }
}

/// GPU ranks: host collectives over [`TcpRank`], device collectives over NCCL once attached, and the
/// watchdog.
pub struct NcclRanks {
    host: Arc<TcpRank>,
    comm: OnceLock<Arc<NcclComm>>,
    last_ckpt: Arc<LastCheckpoint>,
    timeouts: Timeouts,
    stop_watchdog: Arc<AtomicBool>,
}

impl NcclRanks {
    pub fn new(host: TcpRank, timeouts: Timeouts) -> NcclRanks {
        NcclRanks {
            host: Arc::new(host),
            comm: OnceLock::new(),
            last_ckpt: Arc::new(LastCheckpoint::default()),
            timeouts,
            stop_watchdog: Arc::new(AtomicBool::new(false)),
        }
    }

    fn start_watchdog(&self, comm: Arc<NcclComm>) {
        let (host, last, stop, limit) =
            (self.host.clone(), self.last_ckpt.clone(), self.stop_watchdog.clone(), self.timeouts.collective);
        std::thread::spawn(move || {
            // SAFETY: the context outlives the communicator, which this thread holds.
            if unsafe { dsys::cuCtxSetCurrent(comm.h.context) }.result().is_err() {
                return;
            }
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(500));
                let why = match (comm.async_error(), comm.in_flight_for()) {
                    (Some(e), _) => format!("{e} (a peer rank died or the network failed)"),
                    (None, Some(t)) if t > limit => format!(
                        "an NCCL collective has not finished in {:.0} s (a peer rank is dead or hung; \
                         ATTNAS_DIST_TIMEOUT sets the limit)",
                        t.as_secs_f64()
                    ),
                    _ => continue,
                };
                if stop.load(Ordering::Acquire) {
                    return;
                }
                comm.abort();
                host.abort(&why);
                eprintln!("error: rank {}: {why}; stopping. {}", comm.rank, last.sentence());
                std::thread::sleep(Duration::from_secs(10));
                std::process::exit(1);
            }
        });
    }
}

impl Drop for NcclRanks {
    fn drop(&mut self) {
        self.stop_watchdog.store(true, Ordering::Release);
    }
}

impl RankContext for NcclRanks {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn world_size(&self) -> usize {
        self.host.world_size()
    }
}

impl HostCollectives for NcclRanks {
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.host.all_gather_bytes(mine)
    }
    fn barrier(&self) -> Result<()> {
        self.host.barrier()
    }
    fn abort(&self, reason: &str) {
        if let Some(c) = self.comm.get() {
            c.abort();
        }
        self.host.abort(reason);
    }
    fn device(&self) -> Option<&dyn DeviceCollectives> {
        self.comm.get().map(|c| c.as_ref() as &dyn DeviceCollectives)
    }
    fn attach_device(&self, device: &DeviceHandle) -> Result<()> {
        if self.comm.get().is_some() {
            return Ok(());
        }
        let comm = Arc::new(NcclComm::init(self.host.as_ref(), device, self.timeouts)?);
        self.start_watchdog(comm.clone());
        let _ = self.comm.set(comm);
        Ok(())
    }
    fn note_checkpoint(&self, path: &str) {
        self.last_ckpt.set(path);
        self.host.note_checkpoint(path);
    }
}
