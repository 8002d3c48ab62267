//! Rank agreement and the held-out split used to judge an accuracy predictor. Kendall's tau is what the
//! AttentiveNAS paper reports for its predictor (spec 4.5): the predictor is meant to rank subnets, not to
//! predict their accuracy, so the pairwise order is the quantity that matters.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Kendall's tau-b of two equally long score lists: (concordant - discordant) pairs over the geometric
/// mean of the untied pair counts of each list, in [-1, 1]. `None` when there are fewer than two
/// points, a NaN, or one list is constant (the statistic is undefined). O(n^2): held-out sets are at most
/// a few thousand pairs.
pub fn kendall_tau(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len();
    if n != b.len() || n < 2 || a.iter().chain(b).any(|v| v.is_nan()) {
        return None;
    }
    let (mut concordant, mut discordant, mut tied_a, mut tied_b) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in i + 1..n {
            let da = a[i].partial_cmp(&a[j])?;
            let db = b[i].partial_cmp(&b[j])?;
            use std::cmp::Ordering::Equal;
            match (da == Equal, db == Equal) {
                (true, true) => {
                    tied_a += 1;
                    tied_b += 1;
                }
                (true, false) => tied_a += 1,
                (false, true) => tied_b += 1,
                (false, false) if da == db => concordant += 1,
                (false, false) => discordant += 1,
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as u64;
    let denom = ((pairs - tied_a) as f64 * (pairs - tied_b) as f64).sqrt();
    if denom == 0.0 {
        return None;
    }
    Some((concordant as f64 - discordant as f64) / denom)
}

/// A seeded split of `0..n` into (fit, held-out) indices, the last `round(n * fraction)` of a shuffle held
/// out, each part in ascending order. `fraction` 0 holds nothing out.
pub fn holdout_split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0x0050_5245_4449_4354));
    let held_n = ((n as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let mut held = idx.split_off(n - held_n.min(n));
    idx.sort_unstable();
    held.sort_unstable();
    (idx, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_of_hand_made_orders() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(kendall_tau(&a, &[10.0, 20.0, 30.0, 40.0]), Some(1.0));
        assert_eq!(kendall_tau(&a, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        // One swapped pair of 6: (5 - 1) / 6.
        let t = kendall_tau(&a, &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((t - 4.0 / 6.0).abs() < 1e-12, "{t}");
        // tau-b with a tie in b: C = 5, D = 0, ties_b = 1 -> 5 / sqrt(6 * 5).
        let t = kendall_tau(&a, &[1.0, 2.0, 2.0, 3.0]).unwrap();
        assert!((t - 5.0 / 30f64.sqrt()).abs() < 1e-12, "{t}");
        assert_eq!(kendall_tau(&a, &[1.0; 4]), None);
        assert_eq!(kendall_tau(&[1.0], &[1.0]), None);
    }

    #[test]
    fn split_is_seeded_and_complete() {
        let (fit, held) = holdout_split(10, 0.3, 7);
        assert_eq!((fit.len(), held.len()), (7, 3));
        let mut all: Vec<usize> = fit.iter().chain(&held).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(holdout_split(10, 0.3, 7), (fit, held));
        assert_eq!(holdout_split(4, 0.0, 1).1.len(), 0);
    }
}
