//! Reference linear head (spec 1.3 step 6, 1.4: input slicing only), in f64 loops; the `linear_fwd` /
//! `linear_bwd` composite of `backend::ops::linear` (GEMM + bias epilogue) is tested against it.
//!
//! Layouts: `x [rows, in_active]`, `y [rows, out]`; `w [out, in_stored]` row-major (PyTorch's
//! `nn.Linear.weight`), `bias [out]`. The active layer uses `w[:, :in_active]`.

/// Dimensions of one linear layer as run by one subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDims {
    pub rows: usize,
    pub in_active: usize,
    pub in_stored: usize,
    pub out: usize,
}

/// y = x w[:, :in]^T + bias.
pub fn linear_fwd(d: &LinearDims, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    for r in 0..d.rows {
        for o in 0..d.out {
            let dot: f64 =
                (0..d.in_active).map(|i| x[r * d.in_active + i] as f64 * w[o * d.in_stored + i] as f64).sum();
            y[r * d.out + o] = (dot + bias[o] as f64) as f32;
        }
    }
}

/// dx = dy w[:, :in] (overwritten); dw[:, :in] += dy^T x; dbias += column sums of dy.
pub fn linear_bwd(d: &LinearDims, x: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], dw: &mut [f32], dbias: &mut [f32]) {
    for r in 0..d.rows {
        for i in 0..d.in_active {
            dx[r * d.in_active + i] =
                (0..d.out).map(|o| dy[r * d.out + o] as f64 * w[o * d.in_stored + i] as f64).sum::<f64>() as f32;
        }
    }
    for o in 0..d.out {
        for i in 0..d.in_active {
            let s: f64 = (0..d.rows).map(|r| dy[r * d.out + o] as f64 * x[r * d.in_active + i] as f64).sum();
            dw[o * d.in_stored + i] += s as f32;
        }
        dbias[o] += (0..d.rows).map(|r| dy[r * d.out + o] as f64).sum::<f64>() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    /// The layer is affine, so central differences are exact up to f32 rounding of y (step 1e-2,
    /// tolerance 1e-3); the inactive input columns of dw keep their prior value.
    #[test]
    fn linear_backward_matches_finite_difference() {
        let d = LinearDims { rows: 3, in_active: 4, in_stored: 6, out: 5 };
        let x = random_vec(1, d.rows * d.in_active, -1.0, 1.0);
        let w = random_vec(2, d.out * d.in_stored, -1.0, 1.0);
        let bias = random_vec(3, d.out, -1.0, 1.0);
        let g = random_vec(4, d.rows * d.out, -1.0, 1.0);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; d.rows * d.out];
            linear_fwd(&d, x, w, b, &mut y);
            y.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
        };
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![7.0; w.len()];
        let mut db = vec![0.0; d.out];
        linear_bwd(&d, &x, &w, &g, &mut dx, &mut dw, &mut db);
        let h = 1e-2f32;
        let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for i in 0..x.len() {
            let want = fd(&|e| {
                let mut v = x.clone();
                v[i] += e;
                loss(&v, &w, &bias)
            });
            assert!((dx[i] as f64 - want).abs() < 1e-3, "dx[{i}]");
        }
        for k in 0..w.len() {
            let active = k % d.in_stored < d.in_active;
            let want = if active {
                7.0 + fd(&|e| {
                    let mut v = w.clone();
                    v[k] += e;
                    loss(&x, &v, &bias)
                })
            } else {
                7.0
            };
            assert!((dw[k] as f64 - want).abs() < 1e-3, "dw[{k}] {} want {want}", dw[k]);
        }
        for o in 0..d.out {
            let want = fd(&|e| {
                let mut v = bias.clone();
                v[o] += e;
                loss(&x, &w, &v)
            });
            assert!((db[o] as f64 - want).abs() < 1e-3, "db[{o}]");
        }
    }
}
