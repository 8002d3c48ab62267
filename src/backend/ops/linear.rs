//! The linear head (spec 1.3 step 6, 1.4: the input is sliced, the 1000 outputs are not), composed of
//! the GEMM wrapper and the bias epilogue, written once for every backend that has both. Reference of
//! the whole layer: `backend::cpu::linear`.
//!
//! Layouts: `x [rows, in_active]`, `y`, `dy [rows, out]`; `w [out, in_stored]` row-major (PyTorch's
//! `nn.Linear.weight`) of which `w[:, :in_active]` is used via the leading dimension (no copy);
//! `bias [out]`. Forward and grad-input overwrite `y`/`dx`; `dw[:, :in_active]` and `dbias` are
//! accumulated (+=) and the inactive columns of `dw` are left untouched.

use super::bias::BiasOps;
use super::gemm::GemmOps;
use crate::backend::{GemmSpec, Tensor, Transpose};
use crate::error::{Error, Result};

/// One linear layer as run by one subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub rows: usize,
    pub in_active: usize,
    pub in_stored: usize,
    pub out: usize,
}

impl LinearShape {
    fn check(&self) -> Result<()> {
        if self.in_active > self.in_stored {
            return Err(Error::shape("linear in_active", format!("<= in_stored {}", self.in_stored), self.in_active));
        }
        Ok(())
    }

    fn gemm(&self, m: usize, n: usize, k: usize) -> GemmSpec {
        GemmSpec::new(m, n, k)
    }
}

/// The weight and bias of the layer (or their gradients).
#[derive(Clone, Copy, Debug)]
pub struct LinearParams {
    pub w: Tensor,
    pub bias: Tensor,
}

pub trait LinearOps: GemmOps + BiasOps {
    /// y = x w[:, :in]^T + bias.
    fn linear_fwd(&self, s: &LinearShape, x: Tensor, p: LinearParams, y: Tensor) -> Result<()> {
        s.check()?;
        p.w.require("linear w [out, in_stored]", s.out * s.in_stored)?;
        p.bias.require("linear bias [out]", s.out)?;
        // y[rows, out] = x[rows, in] . (w[out, :in])^T
        let mut g = s.gemm(s.rows, s.out, s.in_active);
        g.trans_b = Transpose::Yes;
        g.ldb = s.in_stored;
        self.gemm(&g, x, p.w, y)?;
        self.bias_add_inplace(s.rows, s.out, y, p.bias)
    }

    /// dx = dy w[:, :in] (overwritten); dw[:, :in] += dy^T x; dbias += column sums of dy.
    fn linear_bwd(
        &self,
        s: &LinearShape,
        x: Tensor,
        p: LinearParams,
        dy: Tensor,
        dx: Tensor,
        grads: LinearParams,
    ) -> Result<()> {
        s.check()?;
        p.w.require("linear w [out, in_stored]", s.out * s.in_stored)?;
        grads.w.require("linear dw [out, in_stored]", s.out * s.in_stored)?;
        // dx[rows, in] = dy[rows, out] . w[out, :in]
        let mut g = s.gemm(s.rows, s.in_active, s.out);
        g.ldb = s.in_stored;
        self.gemm(&g, dy, p.w, dx)?;
        // dw[out, :in] += dy^T[out, rows] . x[rows, in]
        let mut g = s.gemm(s.out, s.in_active, s.rows);
        g.trans_a = Transpose::Yes;
        g.lda = s.out;
        g.ldc = s.in_stored;
        g.beta = 1.0;
        self.gemm(&g, dy, x, grads.w)?;
        self.bias_grad_accumulate(s.rows, s.out, dy, grads.bias)
    }
}

impl<T: GemmOps + BiasOps> LinearOps for T {}
