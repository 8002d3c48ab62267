//! Deterministic per-sample random streams: the augmentation of sample `i` in epoch `e` depends only on
//! (seed, epoch, i), never on the thread that decodes it or the batch it lands in.

use rand::{RngExt, SeedableRng};

pub type SampleRng = rand::rngs::StdRng;

/// SplitMix64 finaliser: spreads nearby inputs (consecutive indices) over the whole 64-bit range.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream for one sample of one epoch.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> SampleRng {
    SampleRng::seed_from_u64(mix64(mix64(mix64(seed) ^ epoch) ^ index))
}

/// The random stream that orders one epoch.
pub fn epoch_rng(seed: u64, epoch: u64) -> SampleRng {
    SampleRng::seed_from_u64(mix64(mix64(seed ^ 0x005E_ED0F_E90C) ^ epoch))
}

/// One draw from N(mean, std) (Box-Muller; uses two uniforms).
pub fn normal(rng: &mut SampleRng, mean: f64, std: f64) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2: f64 = rng.random::<f64>();
    mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
