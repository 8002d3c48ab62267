//! Reference bias + activation over row-major `[rows, cols]` matrices (the spec of `kernels/bias.cu`):
//! the epilogue of the SE 1x1 convs and of the linear head, whose GEMMs produce `pre` without bias,
//! and of the BN-folded convs of the inference forward (`crate::deploy`: conv + bias + swish).
//! `bias` is stored at the layer's max width; the first `cols` entries are active.
//!
//! - forward: `out[r, j] = act(pre[r, j] + bias[j])`, act one of identity, ReLU, hard-sigmoid, swish
//!   (swish evaluated in f64 like `activation::swish_fwd`; rows split over rayon threads, which cannot
//!   change a result since every element is computed on its own);
//! - backward: `dpre[r, j] = dout[r, j] * act'(pre[r, j] + bias[j])` and `dbias[j] += sum_r dpre[r, j]`;
//! - `bias_grad_accumulate`: `dbias[j] += sum_r dout[r, j]` alone (identity act, no dpre needed);
//! - `bias_add_inplace`: `y[r, j] += bias[j]` (identity epilogue in place on the GEMM output).

use rayon::prelude::*;

use super::activation::{hard_sigmoid, hard_sigmoid_grad, relu, relu_grad, swish, swish_grad};

/// The activation after a bias add. The discriminant is the kernels' `act` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasAct {
    Identity = 0,
    Relu = 1,
    HardSigmoid = 2,
    /// z * sigmoid(z): the trunk activation after a BN-folded conv.
    Swish = 3,
}

impl BiasAct {
    pub fn apply(self, z: f32) -> f32 {
        match self {
            BiasAct::Identity => z,
            BiasAct::Relu => relu(z),
            BiasAct::HardSigmoid => hard_sigmoid(z),
            BiasAct::Swish => swish(z),
        }
    }

    pub fn grad(self, z: f32) -> f32 {
        match self {
            BiasAct::Identity => 1.0,
            BiasAct::Relu => relu_grad(z),
            BiasAct::HardSigmoid => hard_sigmoid_grad(z),
            BiasAct::Swish => swish_grad(z),
        }
    }
}

/// Rows per rayon task of the forward (a few thousand elements: enough work to pay for a task).
const ROWS_PER_TASK: usize = 64;

pub fn bias_act_fwd(pre: &[f32], bias: &[f32], cols: usize, act: BiasAct, out: &mut [f32]) {
    if cols == 0 {
        return;
    }
    let chunk = cols * ROWS_PER_TASK;
    out.par_chunks_mut(chunk).zip(pre.par_chunks(chunk)).for_each(|(o_rows, p_rows)| {
        for (o_row, p_row) in o_rows.chunks_exact_mut(cols).zip(p_rows.chunks_exact(cols)) {
            for ((o, &p), &b) in o_row.iter_mut().zip(p_row).zip(bias) {
                *o = act.apply(p + b);
            }
        }
    });
}

/// Column sums in f64, added to `dbias[..cols]`.
fn accumulate_column_sums(m: &[f32], cols: usize, dbias: &mut [f32]) {
    for (j, db) in dbias.iter_mut().enumerate().take(cols) {
        let s: f64 = m.chunks_exact(cols).map(|row| row[j] as f64).sum();
        *db += s as f32;
    }
}

pub fn bias_act_bwd(
    pre: &[f32],
    bias: &[f32],
    dout: &[f32],
    cols: usize,
    act: BiasAct,
    dpre: &mut [f32],
    dbias: &mut [f32],
) {
    for ((d_row, p_row), g_row) in dpre.chunks_exact_mut(cols).zip(pre.chunks_exact(cols)).zip(dout.chunks_exact(cols))
    {
        for (((d, &p), &g), &b) in d_row.iter_mut().zip(p_row).zip(g_row).zip(bias) {
            *d = g * act.grad(p + b);
        }
    }
    accumulate_column_sums(dpre, cols, dbias);
}

pub fn bias_grad_accumulate(dout: &[f32], cols: usize, dbias: &mut [f32]) {
    accumulate_column_sums(dout, cols, dbias);
}

pub fn bias_add_inplace(y: &mut [f32], bias: &[f32], cols: usize) {
    for row in y.chunks_exact_mut(cols) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random_vec;

    /// Gradients of L = sum(w * act(pre + bias)) by central differences (step 1e-3; inputs kept 0.05
    /// away from the kinks of ReLU (0) and hard-sigmoid (+-3) so no difference straddles one; the
    /// functions are piecewise linear, so the tolerance 1e-3 covers only f32 rounding).
    #[test]
    fn backward_matches_finite_difference() {
        let (rows, cols) = (3, 4);
        let w = random_vec(1, rows * cols, -1.0, 1.0);
        let bias = vec![0.0f32, 0.0, 0.0, 0.0, 99.0]; // stored wider than cols: tail must be ignored
        let pre: Vec<f32> = random_vec(2, rows * cols, -4.0, 4.0)
            .into_iter()
            .map(|v| if (v.abs() - 3.0).abs() < 0.05 || v.abs() < 0.05 { v + 0.1 } else { v })
            .collect();
        for act in [BiasAct::Identity, BiasAct::Relu, BiasAct::HardSigmoid, BiasAct::Swish] {
            let mut dpre = vec![0.0; pre.len()];
            let mut dbias = vec![1.0f32; 5];
            bias_act_bwd(&pre, &bias, &w, cols, act, &mut dpre, &mut dbias);
            let loss = |p: &[f32]| {
                let mut o = vec![0.0; p.len()];
                bias_act_fwd(p, &bias, cols, act, &mut o);
                o.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
            };
            let h = 1e-3f32;
            for i in 0..pre.len() {
                let (mut a, mut b) = (pre.clone(), pre.clone());
                a[i] += h;
                b[i] -= h;
                let fd = (loss(&a) - loss(&b)) / (2.0 * h as f64);
                assert!((fd - dpre[i] as f64).abs() < 1e-3, "{act:?} dpre[{i}] {} fd {fd}", dpre[i]);
            }
            for j in 0..cols {
                let want: f64 = (0..rows).map(|r| dpre[r * cols + j] as f64).sum::<f64>() + 1.0;
                assert!((dbias[j] as f64 - want).abs() < 1e-5, "{act:?} dbias[{j}]");
            }
            assert_eq!(dbias[4], 1.0, "inactive bias gradient touched");
        }
    }
}
