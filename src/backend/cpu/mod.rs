//! The CPU backend: the reference implementation of every op (plain loops; the spec of each op) over
//! host memory. The op functions take slices and are tested on their own; [`CpuBackend`] turns tensor
//! handles into slices in one place ([`HostMemory::slices`]).

pub mod activation;
pub mod batchnorm;
pub mod bias;
pub mod depthwise;
pub mod input;
pub mod linear;
pub mod loss;
pub mod optimizer;
pub mod pool;
pub mod regularize;
pub mod resize;
pub mod se;
pub mod stem_conv;

use super::{Backend, DeviceMemory, Dtype, Tensor};
use crate::error::{Error, Result};
use half::bf16;
use std::borrow::Cow;

/// Host memory for the CPU backend and the emulated device: a boxed f32 slice.
pub struct HostMemory {
    data: Box<[f32]>,
}

impl HostMemory {
    pub fn zeroed(len: usize) -> Self {
        HostMemory { data: vec![0.0f32; len].into_boxed_slice() }
    }

    /// Like [`HostMemory::zeroed`], but an allocation the system refuses is an error naming the size
    /// (instead of aborting the process).
    pub fn try_zeroed(len: usize) -> Result<Self> {
        let mut v: Vec<f32> = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            Error::Other(format!(
                "out of host memory: cannot allocate {len} f32 ({:.2} GiB)",
                len as f64 * 4.0 / (1u64 << 30) as f64
            ))
        })?;
        v.resize(len, 0.0);
        Ok(HostMemory { data: v.into_boxed_slice() })
    }
}

impl DeviceMemory for HostMemory {
    fn tensor(&self) -> Tensor {
        // SAFETY: the handle points at `data`, which lives as long as this HostMemory.
        unsafe { Tensor::from_raw(self.data.as_ptr() as u64, self.data.len()) }
    }
}

/// A read-only view of a host f32 tensor.
///
/// # Safety
/// `t` must have been cut from a live [`HostMemory`] and no `&mut` view of it may exist meanwhile.
///
/// # Panics
/// If `t` is not stored as f32 (a bug in the op that called this: it must dispatch on the dtype first).
pub unsafe fn host_slice<'a>(t: Tensor) -> &'a [f32] {
    assert_eq!(t.dtype(), Dtype::F32, "host_slice on a {} tensor", t.dtype());
    if t.is_empty() {
        return &[];
    }
    std::slice::from_raw_parts(t.addr() as *const f32, t.len())
}

/// A mutable view of a host f32 tensor.
///
/// # Safety
/// As [`host_slice`], and no other view of the same elements may exist meanwhile.
///
/// # Panics
/// As [`host_slice`].
#[allow(clippy::mut_from_ref)]
pub unsafe fn host_slice_mut<'a>(t: Tensor) -> &'a mut [f32] {
    assert_eq!(t.dtype(), Dtype::F32, "host_slice_mut on a {} tensor", t.dtype());
    if t.is_empty() {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(t.addr() as *mut f32, t.len())
}

/// The bytes of a host tensor of any dtype (`t.bytes()` of them).
///
/// # Safety
/// As [`host_slice`].
pub unsafe fn host_bytes<'a>(t: Tensor) -> &'a [u8] {
    if t.is_empty() {
        return &[];
    }
    std::slice::from_raw_parts(t.addr() as *const u8, t.bytes())
}

/// The bytes of a host tensor of any dtype, mutable.
///
/// # Safety
/// As [`host_slice_mut`].
#[allow(clippy::mut_from_ref)]
pub unsafe fn host_bytes_mut<'a>(t: Tensor) -> &'a mut [u8] {
    if t.is_empty() {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(t.addr() as *mut u8, t.bytes())
}

/// A read-only view of a host bf16 tensor.
///
/// # Safety
/// As [`host_slice`]; `t` must be stored as bf16 (checked).
unsafe fn host_bf16<'a>(t: Tensor) -> &'a [bf16] {
    assert_eq!(t.dtype(), Dtype::Bf16, "host_bf16 on a {} tensor", t.dtype());
    if t.is_empty() {
        return &[];
    }
    std::slice::from_raw_parts(t.addr() as *const bf16, t.len())
}

/// A mutable view of a host bf16 tensor.
///
/// # Safety
/// As [`host_slice_mut`]; `t` must be stored as bf16 (checked).
#[allow(clippy::mut_from_ref)]
unsafe fn host_bf16_mut<'a>(t: Tensor) -> &'a mut [bf16] {
    assert_eq!(t.dtype(), Dtype::Bf16, "host_bf16_mut on a {} tensor", t.dtype());
    if t.is_empty() {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(t.addr() as *mut bf16, t.len())
}

/// The CPU bf16 mode's load: a host tensor's values as f32, borrowed for f32 and widened (exactly) for
/// bf16, so a reference op written over f32 slices serves both storage types.
///
/// # Safety
/// As [`host_slice`].
pub unsafe fn host_values<'a>(t: Tensor) -> Cow<'a, [f32]> {
    match t.dtype() {
        Dtype::F32 => Cow::Borrowed(host_slice(t)),
        Dtype::Bf16 => Cow::Owned(host_bf16(t).iter().map(|v| v.to_f32()).collect()),
    }
}

/// The CPU bf16 mode's store: writes f32 results into a host tensor of any dtype, rounding to nearest
/// even once where it is bf16 (where the kernels round: at each op's output). `values.len()` must be
/// `t.len()` (checked).
///
/// # Safety
/// As [`host_slice_mut`].
pub unsafe fn store_values(t: Tensor, values: &[f32]) -> Result<()> {
    check_len("store", t, values.len())?;
    match t.dtype() {
        Dtype::F32 => host_slice_mut(t).copy_from_slice(values),
        Dtype::Bf16 => {
            for (o, &v) in host_bf16_mut(t).iter_mut().zip(values) {
                *o = bf16::from_f32(v);
            }
        }
    }
    Ok(())
}

/// Runs `f` on an f32 output buffer for `t` and stores it per `t`'s dtype: `t` itself when it is f32
/// (no copy), else a temporary rounded into `t` once at the end (the CPU bf16 mode's output point).
///
/// # Safety
/// As [`host_slice_mut`].
pub unsafe fn write_values(t: Tensor, f: impl FnOnce(&mut [f32])) -> Result<()> {
    match t.dtype() {
        Dtype::F32 => {
            f(host_slice_mut(t));
            Ok(())
        }
        Dtype::Bf16 => {
            let mut out = vec![0.0f32; t.len()];
            f(&mut out);
            store_values(t, &out)
        }
    }
}

/// Like [`write_values`], but `f` sees the tensor's current values (widened for bf16): for outputs that
/// are updated in place (`+=`).
///
/// # Safety
/// As [`host_slice_mut`].
pub unsafe fn update_values(t: Tensor, f: impl FnOnce(&mut [f32])) -> Result<()> {
    match t.dtype() {
        Dtype::F32 => {
            f(host_slice_mut(t));
            Ok(())
        }
        Dtype::Bf16 => {
            let mut values = host_values(t).into_owned();
            f(&mut values);
            store_values(t, &values)
        }
    }
}

/// Errors unless every tensor in `ts` has the dtype of the first; `op` names the op.
pub fn check_same_dtype(op: &str, ts: &[(&str, Tensor)]) -> Result<()> {
    let Some(&(first_name, first)) = ts.first() else { return Ok(()) };
    for &(name, t) in &ts[1..] {
        if t.dtype() != first.dtype() {
            return Err(Error::shape(
                format!("{op} {name}"),
                format!("{} elements, like {first_name}", first.dtype()),
                format!("{} elements", t.dtype()),
            ));
        }
    }
    Ok(())
}

/// Errors unless every tensor in `ts` is stored as f32 (parameters, statistics, gradients); `op` names
/// the op.
pub fn check_f32(op: &str, ts: &[(&str, Tensor)]) -> Result<()> {
    for &(name, t) in ts {
        t.require_dtype(&format!("{op} {name}"), Dtype::F32)?;
    }
    Ok(())
}

/// Errors unless `dst` holds at least `bytes` bytes: the destination of a byte upload.
/// [`Backend::copy`]'s operands: one storage type, one length, no overlap.
pub fn check_copy(src: Tensor, dst: Tensor) -> Result<()> {
    check_len("copy destination", dst, src.len())?;
    check_same_dtype("copy", &[("src", src), ("dst", dst)])?;
    check_disjoint("copy", src, dst)
}

pub fn check_byte_capacity(dst: Tensor, bytes: usize) -> Result<()> {
    if dst.bytes() < bytes {
        return Err(Error::shape(
            "byte upload destination",
            format!("room for {bytes} bytes ({} f32 words)", bytes.div_ceil(4)),
            format!("{} elements ({} bytes)", dst.len(), dst.bytes()),
        ));
    }
    Ok(())
}

/// Errors unless the two tensors are disjoint (an op's output may not alias its input).
pub fn check_disjoint(what: &str, a: Tensor, b: Tensor) -> Result<()> {
    let (a0, a1) = (a.addr(), a.addr() + a.bytes() as u64);
    let (b0, b1) = (b.addr(), b.addr() + b.bytes() as u64);
    if a.is_empty() || b.is_empty() || a1 <= b0 || b1 <= a0 {
        Ok(())
    } else {
        Err(Error::Other(format!("{what}: output overlaps an input; pass separate buffers")))
    }
}

/// Operand checks of a two-stage grad-weight op (`<op>(x, dy, dw, workspace)`, the depthwise and stem
/// convs): exact lengths for x, dy and dw, at least `workspace_len` scratch, and dw and the workspace
/// disjoint from everything they do not alias by contract.
pub fn check_wgrad_operands(
    op: &str,
    (x, x_len): (Tensor, usize),
    (dy, dy_len): (Tensor, usize),
    (dw, dw_len): (Tensor, usize),
    (workspace, workspace_len): (Tensor, usize),
) -> Result<()> {
    check_len(&format!("{op} x"), x, x_len)?;
    check_len(&format!("{op} dy"), dy, dy_len)?;
    check_len(&format!("{op} dw"), dw, dw_len)?;
    workspace.require(&format!("{op} workspace"), workspace_len)?;
    for (what, t) in [("x", x), ("dy", dy), ("workspace", workspace)] {
        check_disjoint(&format!("{op} (dw vs {what})"), t, dw)?;
    }
    check_disjoint(&format!("{op} (workspace vs x)"), x, workspace)?;
    check_disjoint(&format!("{op} (workspace vs dy)"), dy, workspace)
}

/// Errors unless `got == expected` elements.
pub fn check_len(what: &str, t: Tensor, expected: usize) -> Result<()> {
    if t.len() != expected {
        return Err(Error::shape(what, format!("{expected} elements"), format!("{} elements", t.len())));
    }
    Ok(())
}

#[derive(Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

impl Backend for CpuBackend {
    type Memory = HostMemory;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> Result<HostMemory> {
        HostMemory::try_zeroed(len)
    }

    fn upload(&self, dst: Tensor, src: &[f32]) -> Result<()> {
        check_len("upload destination", dst, src.len())?;
        // SAFETY: dst is a live host tensor (contract of Tensor) and src is a distinct Rust slice.
        unsafe { store_values(dst, src) }
    }

    fn upload_bytes(&self, dst: Tensor, src: &[u8]) -> Result<()> {
        check_byte_capacity(dst, src.len())?;
        // SAFETY: dst is a live host tensor of dst.bytes() bytes (contract of Tensor), at least
        // src.len() (checked); src is a distinct Rust slice.
        let bytes = unsafe { host_bytes_mut(dst) };
        bytes[..src.len()].copy_from_slice(src);
        Ok(())
    }

    fn copy(&self, src: Tensor, dst: Tensor) -> Result<()> {
        check_copy(src, dst)?;
        // SAFETY: live host tensors of the same byte length, checked disjoint.
        unsafe { host_bytes_mut(dst).copy_from_slice(host_bytes(src)) };
        Ok(())
    }

    fn download(&self, src: Tensor) -> Result<Vec<f32>> {
        // SAFETY: src is a live host tensor.
        Ok(unsafe { host_values(src) }.into_owned())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
