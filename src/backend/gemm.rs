//! The one GEMM contract of the crate, in row-major terms, and its mapping onto column-major BLAS.
//!
//! `C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C[m, n]`, every matrix row-major with its own
//! leading dimension (elements between consecutive rows), so a leading slice `W[:rows, :cols]` of a
//! stored `W[R, Cs]` is just `ld = Cs`. `Transpose::Yes` on A means A is stored as `[k, m]` (ld >= m);
//! on B, B is stored as `[n, k]` (ld >= k).
//!
//! ## Row-major onto column-major (explained once, here)
//! A row-major matrix `X[r, c]` with leading dimension `ld` occupies exactly the memory of the
//! column-major matrix `X^T[c, r]` with the same `ld`. So the row-major product `C = op(A) op(B)` is
//! the column-major product `C^T = op(B)^T op(A)^T`: call BLAS with the operands swapped (B first), the
//! transpose flags kept per operand, and `m` and `n` swapped:
//! `gemm_colmajor(transb, transa, n, m, k, alpha, B, ldb, A, lda, beta, C, ldc)`.
//! [`GemmSpec::col_major`] does this; the CPU reference and cuBLAS both consume its output.
//!
//! The supernet's 1x1 convs use three forms (X: [P, Cin] activations, W: [Cout_max, Cin_max] stored):
//! forward `Y = X W[:co, :ci]^T` (N, T), grad-input `dX = dY W[:co, :ci]` (N, N) and grad-weight
//! `dW[:co, :ci] += dY^T X` (T, N, beta = 1).

use crate::backend::cpu::{host_slice_mut, host_values, store_values};
use crate::backend::{Dtype, Tensor};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    No,
    Yes,
}

/// A row-major GEMM; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: Transpose,
    pub trans_b: Transpose,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub alpha: f32,
    pub beta: f32,
    /// Allow TF32 tensor cores (GPU only; the CPU path is always f32). Off by default.
    pub allow_tf32: bool,
}

/// The same GEMM in column-major BLAS terms (operands already swapped: `a` is the row-major B).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColMajorGemm {
    pub trans_a: Transpose,
    pub trans_b: Transpose,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub lda: usize,
    pub ldb: usize,
    pub beta: f32,
    pub ldc: usize,
    pub allow_tf32: bool,
    /// Storage of A and B (alike) and of C. f32/f32 is SGEMM; bf16 A and B with an f32 or bf16 C is
    /// cuBLAS GemmEx with f32 accumulation (`CUBLAS_COMPUTE_32F`), C rounded once at its store.
    pub ab_dtype: Dtype,
    pub c_dtype: Dtype,
}

impl GemmSpec {
    /// A plain GEMM with contiguous operands (`ld` = row length) and no transposes.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            m,
            n,
            k,
            trans_a: Transpose::No,
            trans_b: Transpose::No,
            lda: k,
            ldb: n,
            ldc: n,
            alpha: 1.0,
            beta: 0.0,
            allow_tf32: false,
        }
    }

    /// 1x1-conv forward `Y[P, co] = X[P, ci] W[:co, :ci]^T`: X contiguous with `c_in` channels, W the
    /// stored row-major `[co_stored, ci_stored]` weight (PyTorch's `[out, in, 1, 1]`), Y contiguous.
    pub fn pointwise_fwd(pixels: usize, c_in: usize, c_out: usize, c_in_stored: usize) -> Self {
        GemmSpec {
            trans_b: Transpose::Yes,
            lda: c_in,
            ldb: c_in_stored,
            ldc: c_out,
            ..GemmSpec::new(pixels, c_out, c_in)
        }
    }

    /// 1x1-conv grad-input `dX[P, ci] = dY[P, co] W[:co, :ci]` (overwrites dX).
    pub fn pointwise_bwd_input(pixels: usize, c_in: usize, c_out: usize, c_in_stored: usize) -> Self {
        GemmSpec { lda: c_out, ldb: c_in_stored, ldc: c_in, ..GemmSpec::new(pixels, c_in, c_out) }
    }

    /// 1x1-conv grad-weight `dW[:co, :ci] += dY^T X`, accumulated into the active slice of the stored
    /// `[co_stored, ci_stored]` gradient (the sandwich rule sums the subnets' gradients).
    pub fn pointwise_bwd_weight(pixels: usize, c_in: usize, c_out: usize, c_in_stored: usize) -> Self {
        GemmSpec {
            trans_a: Transpose::Yes,
            lda: c_out,
            ldb: c_in,
            ldc: c_in_stored,
            beta: 1.0,
            ..GemmSpec::new(c_out, c_in, pixels)
        }
    }

    /// Rows and columns of A and B as stored (after the transpose flag).
    pub fn stored_a(&self) -> (usize, usize) {
        match self.trans_a {
            Transpose::No => (self.m, self.k),
            Transpose::Yes => (self.k, self.m),
        }
    }

    pub fn stored_b(&self) -> (usize, usize) {
        match self.trans_b {
            Transpose::No => (self.k, self.n),
            Transpose::Yes => (self.n, self.k),
        }
    }

    /// Elements each operand must hold: `(rows - 1) * ld + cols`.
    pub fn required_lens(&self) -> (usize, usize, usize) {
        let need = |(r, c): (usize, usize), ld: usize| if r == 0 || c == 0 { 0 } else { (r - 1) * ld + c };
        (need(self.stored_a(), self.lda), need(self.stored_b(), self.ldb), need((self.m, self.n), self.ldc))
    }

    /// Checks leading dimensions and operand lengths; errors name the operand and both sizes.
    pub fn validate(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
        let (ar, ac) = self.stored_a();
        let (br, bc) = self.stored_b();
        for (name, ld, cols, rows) in
            [("A", self.lda, ac, ar), ("B", self.ldb, bc, br), ("C", self.ldc, self.n, self.m)]
        {
            if rows > 0 && ld < cols {
                return Err(Error::shape(format!("gemm {name} leading dimension"), format!(">= {cols}"), ld));
            }
        }
        let (na, nb, nc) = self.required_lens();
        for (name, need, have) in [("A", na, a_len), ("B", nb, b_len), ("C", nc, c_len)] {
            if have < need {
                return Err(Error::shape(
                    format!("gemm operand {name} ({}x{} op, m={} n={} k={})", self.m, self.n, self.m, self.n, self.k),
                    format!(">= {need} elements"),
                    format!("{have} elements"),
                ));
            }
        }
        Ok(())
    }

    /// The column-major call that computes this row-major GEMM (module docs).
    pub fn col_major(&self) -> ColMajorGemm {
        ColMajorGemm {
            trans_a: self.trans_b,
            trans_b: self.trans_a,
            m: self.n,
            n: self.m,
            k: self.k,
            alpha: self.alpha,
            lda: self.ldb,
            ldb: self.lda,
            beta: self.beta,
            ldc: self.ldc,
            allow_tf32: self.allow_tf32,
            ab_dtype: Dtype::F32,
            c_dtype: Dtype::F32,
        }
    }
}

impl ColMajorGemm {
    /// The same GEMM with A and B stored as `ab` and C as `c`.
    pub fn with_dtypes(self, ab: Dtype, c: Dtype) -> Self {
        ColMajorGemm { ab_dtype: ab, c_dtype: c, ..self }
    }

    /// [`ColMajorGemm::run_host`] over host tensors of any storage type (the CPU bf16 mode of the GEMM):
    /// A and B widened exactly, products accumulated in f32, and a bf16 C widened, updated and rounded
    /// once at the store. That is GemmEx with `CUBLAS_COMPUTE_32F` up to the order of the f32 sums.
    /// f32 operands take exactly the `run_host` path (no copies).
    ///
    /// # Safety
    /// `a`, `b`, `c` are live host tensors holding `required_lens()` elements (validated), and `c` does not
    /// overlap `a` or `b`.
    pub unsafe fn run_host_tensors(&self, a: Tensor, b: Tensor, c: Tensor) -> Result<()> {
        let (a, b) = (host_values(a), host_values(b));
        match c.dtype() {
            Dtype::F32 => self.run_host(&a, &b, host_slice_mut(c)),
            Dtype::Bf16 => {
                // the whole strided region is widened and stored back: elements outside the m x n tile
                // are bf16 already, so their round trip is exact
                let mut values = host_values(c).into_owned();
                self.run_host(&a, &b, &mut values);
                store_values(c, &values)?;
            }
        }
        Ok(())
    }

    /// The column-major GEMM on host memory: `C = alpha op(A) op(B) + beta C`, the contract cuBLAS
    /// implements; used by the CPU backend and by the emulated device in place of cuBLAS.
    /// `beta == 0` overwrites C without reading it (NaN in C does not propagate), as BLAS does.
    pub fn run_host(&self, a: &[f32], b: &[f32], c: &mut [f32]) {
        if self.m == 0 || self.n == 0 {
            return;
        }
        // Column-major X with leading dimension ld: X(i, j) at i + j * ld, so the row stride is 1 and
        // the column stride is ld; a transpose swaps the two.
        let (rsa, csa) = match self.trans_a {
            Transpose::No => (1, self.lda as isize),
            Transpose::Yes => (self.lda as isize, 1),
        };
        let (rsb, csb) = match self.trans_b {
            Transpose::No => (1, self.ldb as isize),
            Transpose::Yes => (self.ldb as isize, 1),
        };
        if self.beta == 0.0 {
            for j in 0..self.n {
                c[j * self.ldc..j * self.ldc + self.m].fill(0.0);
            }
        }
        if self.k == 0 {
            if self.beta != 0.0 && self.beta != 1.0 {
                for j in 0..self.n {
                    for v in &mut c[j * self.ldc..j * self.ldc + self.m] {
                        *v *= self.beta;
                    }
                }
            }
            return;
        }
        // SAFETY: `validate` (called by every backend before this) guarantees each operand holds
        // (rows-1)*ld + cols elements for the strides computed above, so every index matrixmultiply
        // forms is in bounds; c does not alias a or b (distinct slices).
        unsafe {
            matrixmultiply::sgemm(
                self.m,
                self.k,
                self.n,
                self.alpha,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                if self.beta == 0.0 { 0.0 } else { self.beta },
                c.as_mut_ptr(),
                1,
                self.ldc as isize,
            );
        }
    }

    /// Element counts each operand must hold in column-major terms.
    pub fn required_lens(&self) -> (usize, usize, usize) {
        let need =
            |rows: usize, cols: usize, ld: usize| if rows == 0 || cols == 0 { 0 } else { (cols - 1) * ld + rows };
        let (ar, ac) = match self.trans_a {
            Transpose::No => (self.m, self.k),
            Transpose::Yes => (self.k, self.m),
        };
        let (br, bc) = match self.trans_b {
            Transpose::No => (self.k, self.n),
            Transpose::Yes => (self.n, self.k),
        };
        (need(ar, ac, self.lda), need(br, bc, self.ldb), need(self.m, self.n, self.ldc))
    }
}
