//! Small helpers shared by several layers (no dependency on the rest of the crate beyond its error type).

pub mod atomic;
pub mod clock;
pub mod npy;
