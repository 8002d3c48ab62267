//! Reference dropout and per-sample drop-connect (the spec of `kernels/regularize.cu`; spec 3.4).
//!
//! Masks are not stored: they are derived from `(seed, index)` by a counter-based hash (SplitMix64's
//! finaliser over `seed + (index + 1) * golden`), implemented bit-identically in
//! `kernels/regularize.cu`, so forward and backward (and CPU and GPU) agree exactly without a mask
//! buffer. The top 24 bits give `u` in [0, 1) exactly representable in f32; an element (dropout) or a
//! sample (drop-connect) is kept iff `u < keep`, and kept values are multiplied by `scale = 1 / keep`
//! (computed once in f32 by the caller's op, passed to both sides).

/// SplitMix64 increment (the golden ratio in 64-bit fixed point).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The counter-based hash: a well-mixed 64-bit value for (seed, index).
pub fn mask_hash(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) with 24 bits, exact in f32.
pub fn mask_uniform(seed: u64, index: u64) -> f32 {
    (mask_hash(seed, index) >> 40) as f32 * (1.0 / 16_777_216.0)
}

/// The multiplier element `index` gets: `scale` if kept, else 0.
pub fn mask_factor(seed: u64, index: u64, keep: f32, scale: f32) -> f32 {
    if mask_uniform(seed, index) < keep {
        scale
    } else {
        0.0
    }
}

/// Dropout forward and backward are the same map (y = x * factor(i)); `x` is the input (forward) or the
/// upstream gradient (backward).
pub fn dropout(seed: u64, keep: f32, scale: f32, x: &[f32], y: &mut [f32]) {
    for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
        *o = v * mask_factor(seed, i as u64, keep, scale);
    }
}

/// Drop-connect: one mask draw per sample (index = sample number), applied to its `per_sample`
/// contiguous elements. Forward and backward are the same map.
pub fn drop_connect(seed: u64, keep: f32, scale: f32, per_sample: usize, x: &[f32], y: &mut [f32]) {
    if per_sample == 0 {
        return;
    }
    for (b, (out, inp)) in y.chunks_exact_mut(per_sample).zip(x.chunks_exact(per_sample)).enumerate() {
        let f = mask_factor(seed, b as u64, keep, scale);
        for (o, &v) in out.iter_mut().zip(inp) {
            *o = v * f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 reference values for seed 0 (the published sequence of `splitmix64` starting from
    /// state 0: the first outputs are 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F).
    #[test]
    fn hash_matches_published_splitmix64_sequence() {
        assert_eq!(mask_hash(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(mask_hash(0, 1), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(mask_hash(0, 2), 0x06C4_5D18_8009_454F);
    }

    /// The keep fraction over 100k draws is within 4 standard deviations of `keep`, and the mean of
    /// the output equals the mean of the input in expectation (inverted-dropout scaling).
    #[test]
    fn dropout_keeps_the_expected_fraction() {
        let n = 100_000;
        let keep = 0.8f32;
        let x = vec![1.0f32; n];
        let mut y = vec![0.0f32; n];
        dropout(42, keep, 1.0 / keep, &x, &mut y);
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        let sd = (0.8 * 0.2 / n as f64).sqrt();
        assert!((kept - 0.8).abs() < 4.0 * sd, "kept fraction {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || v == 1.25));
    }

    /// Drop-connect zeroes or scales whole samples, and different seeds give different masks.
    #[test]
    fn drop_connect_is_per_sample() {
        let (n, per) = (64, 10);
        let x: Vec<f32> = (0..n * per).map(|i| i as f32 + 1.0).collect();
        let mut y = vec![0.0f32; x.len()];
        drop_connect(7, 0.5, 2.0, per, &x, &mut y);
        let mut dropped = 0;
        for b in 0..n {
            let s = &y[b * per..(b + 1) * per];
            let all_zero = s.iter().all(|&v| v == 0.0);
            let all_scaled = s.iter().zip(&x[b * per..]).all(|(&o, &i)| o == 2.0 * i);
            assert!(all_zero || all_scaled, "sample {b} mixed");
            dropped += all_zero as usize;
        }
        assert!(dropped > 10 && dropped < 54, "dropped {dropped} of 64 at keep 0.5");
        let mut y2 = vec![0.0f32; x.len()];
        drop_connect(8, 0.5, 2.0, per, &x, &mut y2);
        assert_ne!(y, y2);
    }
}
