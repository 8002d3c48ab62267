//! After training: the evolutionary accuracy-vs-FLOPs search over a trained supernet (spec 6.2).
//!
//! - `evolution`: the search itself (populations, mutation, crossover, per-bucket bests), generic over
//!   how a subnet is scored;
//! - `pareto`: FLOPs buckets and the non-dominated front;
//! - `data`: the calibration and held-out images, decoded once;
//! - `state`: the resumable state file and the identity check that refuses another search's state;
//! - `report`, `plot`: the result files (CSV, JSON, SVG);
//! - `job`: `attnas search` on one device (load, decode, evolve, write).
//!
//! The accuracy predictor it can filter children with is `crate::predictor`.

pub mod data;
pub mod evolution;
pub mod job;
pub mod pareto;
pub mod plot;
pub mod report;
pub mod state;

pub use evolution::{Candidate, Evaluated, EvolutionSettings, Origin, SearchProgress};
pub use job::{SearchJob, SearchSummary};
