//! Accuracy-vs-FLOPs bookkeeping of the search (spec 6.2): FLOPs buckets, the best subnet per bucket
//! (the dict the evolution draws its parents from) and the non-dominated front that the search reports.
//!
//! A point is (MFLOPs, top-1): fewer FLOPs and higher accuracy are better. `a` dominates `b` when it is
//! no worse in both and strictly better in one. Points that tie exactly (same MFLOPs and top-1) do not
//! dominate each other; the front keeps the first of them only, so it lists each trade-off once.

use std::collections::BTreeMap;

use crate::space::attentive::flops_bin;

/// One (MFLOPs, top-1) point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub mflops: f64,
    pub top1: f64,
}

/// True when `a` is at least as good as `b` in both objectives and strictly better in one.
pub fn dominates(a: Point, b: Point) -> bool {
    a.mflops <= b.mflops && a.top1 >= b.top1 && (a.mflops < b.mflops || a.top1 > b.top1)
}

/// Indices of the non-dominated points, by ascending MFLOPs. Of exact ties the lowest index is kept;
/// points with a NaN coordinate are never on the front.
pub fn pareto_front(points: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> =
        (0..points.len()).filter(|&i| !points[i].mflops.is_nan() && !points[i].top1.is_nan()).collect();
    // Cheapest first; within equal MFLOPs the most accurate first, then the lowest index.
    order.sort_by(|&a, &b| {
        let (pa, pb) = (points[a], points[b]);
        pa.mflops.total_cmp(&pb.mflops).then(pb.top1.total_cmp(&pa.top1)).then(a.cmp(&b))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        // Every earlier point costs no more; this one survives only if it is strictly more accurate.
        if points[i].top1 > best {
            best = points[i].top1;
            front.push(i);
        }
    }
    front
}

/// The bucket of a FLOPs value: round(MFLOPs / width), ties to even as Python's `round` (spec 6.2 uses
/// 10-MFLOP buckets). The bucket's MFLOPs label is `index * width`.
pub fn bucket_of(mflops: f64, width: f64) -> i64 {
    flops_bin(mflops, width)
}

/// For each bucket, the index of its most accurate point; the first one seen wins a tie, as a dict that is
/// only replaced on a strict improvement.
pub fn best_per_bucket(points: &[Point], width: f64) -> BTreeMap<i64, usize> {
    let mut best: BTreeMap<i64, usize> = BTreeMap::new();
    for (i, p) in points.iter().enumerate() {
        if p.top1.is_nan() {
            continue;
        }
        let bucket = bucket_of(p.mflops, width);
        match best.get(&bucket) {
            Some(&j) if points[j].top1 >= p.top1 => {}
            _ => {
                best.insert(bucket, i);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(f64, f64)]) -> Vec<Point> {
        v.iter().map(|&(mflops, top1)| Point { mflops, top1 }).collect()
    }

    #[test]
    fn dominated_points_are_removed() {
        // 1 is dominated by 0 (more FLOPs, less accurate); 3 by 2 (same FLOPs, less accurate);
        // 4 by 2 (same accuracy, more FLOPs).
        let p = pts(&[(1.0, 50.0), (2.0, 40.0), (3.0, 70.0), (3.0, 60.0), (4.0, 70.0), (5.0, 80.0)]);
        assert_eq!(pareto_front(&p), vec![0, 2, 5]);
        for &i in &pareto_front(&p) {
            assert!(p.iter().all(|&q| !dominates(q, p[i])));
        }
    }

    #[test]
    fn exact_ties_keep_the_first_and_nan_is_dropped() {
        let p = pts(&[(2.0, 60.0), (1.0, f64::NAN), (2.0, 60.0), (1.5, 55.0)]);
        assert!(!dominates(p[0], p[2]) && !dominates(p[2], p[0]));
        assert_eq!(pareto_front(&p), vec![3, 0]);
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn buckets_round_half_to_even_and_keep_the_first_best() {
        assert_eq!((bucket_of(204.9, 10.0), bucket_of(205.0, 10.0), bucket_of(215.0, 10.0)), (20, 20, 22));
        let p = pts(&[(201.0, 60.0), (199.0, 61.0), (203.0, 61.0), (250.0, 10.0)]);
        let best = best_per_bucket(&p, 10.0);
        assert_eq!(best.into_iter().collect::<Vec<_>>(), vec![(20, 1), (25, 3)]);
    }
}
