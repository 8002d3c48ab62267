//! A bump allocator over one backend allocation: parameters, gradients, optimizer state and
//! activations each live in one arena, sized before the training loop; activations are reset every
//! step, so the step allocates nothing.

use super::{Backend, DeviceMemory, Dtype, Tensor};
use crate::error::{Error, Result};

/// Offsets are rounded up to this many f32 elements (64 = 256 bytes), so every tensor suits
/// vectorised loads and cuBLAS's alignment preferences.
pub const ARENA_ALIGN_ELEMS: usize = 64;

pub struct Arena<M: DeviceMemory> {
    memory: M,
    used: usize,
    name: &'static str,
}

impl<M: DeviceMemory> Arena<M> {
    pub fn new<B: Backend<Memory = M>>(backend: &B, name: &'static str, capacity: usize) -> Result<Self> {
        Ok(Arena { memory: backend.alloc(capacity)?, used: 0, name })
    }

    pub fn capacity(&self) -> usize {
        self.memory.tensor().len()
    }

    pub fn used(&self) -> usize {
        self.used
    }

    /// The next `len` elements. Errors, naming the arena and the sizes, when it is full.
    pub fn alloc(&mut self, len: usize) -> Result<Tensor> {
        let start = self.used.div_ceil(ARENA_ALIGN_ELEMS) * ARENA_ALIGN_ELEMS;
        let t = self.memory.tensor().slice(start, len).map_err(|_| {
            Error::Other(format!(
                "arena '{}' is full: asked for {len} f32 at offset {start}, capacity {} (size the arena for the \
                 largest subnet, resolution and batch)",
                self.name,
                self.capacity()
            ))
        })?;
        self.used = start + len;
        Ok(t)
    }

    /// The next `len` elements of storage type `dtype` (a bf16 tensor takes half the f32 slots),
    /// aligned like [`Arena::alloc`].
    pub fn alloc_typed(&mut self, len: usize, dtype: Dtype) -> Result<Tensor> {
        let slots = (len * dtype.size()).div_ceil(4);
        self.alloc(slots)?.view_as(dtype).slice(0, len)
    }

    /// Forgets every tensor handed out; their handles must no longer be used.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Gives up the bump state and keeps the allocation (handles already cut from it stay valid as long
    /// as the returned memory lives).
    pub fn into_memory(self) -> M {
        self.memory
    }

    /// The whole backing allocation (e.g. for a fused optimizer kernel over all parameters).
    pub fn whole(&self) -> Tensor {
        self.memory.tensor()
    }
}

/// Memory that is never touched: an arena over it only counts, so running the same allocation code
/// against [`Arena::measuring`] sizes a real arena before it exists.
pub struct Unbacked;

/// A fake, 256-byte aligned base address and a length no plan reaches.
const UNBACKED_BASE: u64 = 1 << 40;
const UNBACKED_LEN: usize = 1 << 50;

impl DeviceMemory for Unbacked {
    fn tensor(&self) -> Tensor {
        // SAFETY: the handle is never dereferenced: measuring arenas hand out tensors only to be counted.
        unsafe { Tensor::from_raw(UNBACKED_BASE, UNBACKED_LEN) }
    }
}

impl Arena<Unbacked> {
    /// An arena that only counts what is allocated from it (see [`Unbacked`]).
    pub fn measuring(name: &'static str) -> Self {
        Arena { memory: Unbacked, used: 0, name }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    #[test]
    fn arena_aligns_bumps_resets_and_reports_overflow() {
        let cpu = CpuBackend::new();
        let mut arena = Arena::new(&cpu, "activations", 200).unwrap();
        let a = arena.alloc(10).unwrap();
        let b = arena.alloc(5).unwrap();
        assert_eq!(a.addr() % 4, 0);
        assert_eq!(
            b.addr() - a.addr(),
            4 * ARENA_ALIGN_ELEMS as u64,
            "second tensor starts at the next aligned offset"
        );
        let err = arena.alloc(150).unwrap_err().to_string();
        assert!(err.contains("activations") && err.contains("150"), "{err}");
        arena.reset();
        assert_eq!(arena.alloc(10).unwrap(), a, "reset hands out the same memory again");
    }
}
