//! The search space and everything computed from an architecture alone, with no weights: the space
//! description (`config`), architectures and their text forms (`arch`), the active blocks of a subnet
//! (`blocks`, the one place that turns an arch into layer shapes, used by both FLOPs and the supernet),
//! MACs and params (`flops`), the plain samplers and search operators (`sampler`), the FLOPs lookup
//! table (`table`) and the FLOPs-conditioned attentive sampler (`attentive`). Pure host code.

pub mod arch;
pub mod attentive;
pub mod blocks;
pub mod config;
pub mod flops;
pub mod sampler;
pub mod table;

pub use arch::Arch;
pub use blocks::{ActiveBlock, HeadShape, StoredBlock};
pub use config::{Gene, Space};

/// Round `v` to a multiple of `divisor` (nearest, halves up), at least 1, and never
/// more than 10 % below `v` (then one `divisor` is added). This is the MobileNet/AttentiveNAS rule for
/// the expanded (mid) and SE channel counts; with widths that are multiples of 8 it returns `v` itself.
pub fn make_divisible(v: usize, divisor: usize) -> usize {
    let rounded = ((v + divisor / 2) / divisor * divisor).max(1);
    if (rounded as f64) < 0.9 * v as f64 {
        rounded + divisor
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::make_divisible;

    #[test]
    fn make_divisible_matches_the_spec_examples() {
        // spec 1.2: se_mid = make_divisible(mid // 4, 8): mid 120 -> 32, 144 -> 40, 200 -> 48.
        assert_eq!(make_divisible(120 / 4, 8), 32);
        assert_eq!(make_divisible(144 / 4, 8), 40);
        assert_eq!(make_divisible(200 / 4, 8), 48);
        assert_eq!(make_divisible(96, 8), 96);
        assert_eq!(make_divisible(4, 8), 8);
        // round-down by more than 10 % is corrected upwards: 19 -> 16 < 17.1 -> 24.
        assert_eq!(make_divisible(19, 8), 24);
    }
}
