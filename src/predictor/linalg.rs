//! The little dense linear algebra the ridge predictor needs: the normal equations of a few hundred
//! features at most, solved by Cholesky (the matrix is symmetric positive definite once the ridge term
//! is added).

/// Solves `a x = b` for a symmetric positive-definite `a` (row-major, `d x d`). `None` when the
/// factorisation meets a non-positive pivot (`a` not positive definite).
pub fn cholesky_solve(a: &[f64], b: &[f64], d: usize) -> Option<Vec<f64>> {
    debug_assert_eq!(a.len(), d * d);
    debug_assert_eq!(b.len(), d);
    // Lower factor L with a = L L^T.
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let pivot = a[i * d + i] - dot;
                if !(pivot > 0.0 && pivot.is_finite()) {
                    return None;
                }
                l[i * d + i] = pivot.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - dot) / l[j * d + j];
            }
        }
    }
    // L y = b, then L^T x = y.
    let mut y = vec![0.0; d];
    for i in 0..d {
        let dot: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
        y[i] = (b[i] - dot) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let dot: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
        x[i] = (y[i] - dot) / l[i * d + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::cholesky_solve;

    #[test]
    fn solves_a_known_system() {
        // a = [[4, 2], [2, 3]], x = [1, -2] -> b = [0, -4].
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], &[0.0, -4.0], 2).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] + 2.0).abs() < 1e-12, "{x:?}");
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2).is_none());
    }
}
