//! The elastic supernet (spec 1.2-1.5), written once against the op traits of `backend`: parameter
//! table with AttentiveNAS's state-dict names ([`params`]), typed views of the arenas ([`handles`]),
//! the activation plan ([`tape`]), forward ([`forward`]) and hand-written backward ([`backward`]), and
//! the owner of the memory ([`supernet`]).

pub mod backward;
pub mod forward;
pub mod handles;
pub mod params;
pub mod supernet;
pub mod tape;

pub use params::ParamTable;
pub use supernet::{activation_arena_len, arch_activation_arena_len, NamedTensor, Supernet};
pub use tape::{BnMode, ForwardOptions, Tape};
