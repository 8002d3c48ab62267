//! Supernet training: the step of the sandwich rule with attentive sampling ([`step`]).

pub mod step;
pub mod validate;
