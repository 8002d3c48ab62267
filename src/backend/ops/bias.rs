//! Bias + activation epilogue for the GEMMs that carry a bias (SE 1x1 convs, linear head).
//! Reference: `backend::cpu::bias`; kernels: `kernels/bias.cu`.
//!
//! Layouts: `pre`, `out`, `dout`, `dpre` are row-major `[rows, cols]` contiguous; `bias` and `dbias`
//! are stored at the layer's max width (>= `cols`), the first `cols` entries used. Forward and
//! backward overwrite `out`/`dpre`; `dbias[..cols]` is accumulated (+=), its tail left untouched.

pub use crate::backend::cpu::bias::BiasAct;
use crate::backend::cpu::{bias as reference, check_disjoint, check_len, host_slice, host_slice_mut, CpuBackend};
use crate::backend::cuda::{CudaBackend, KernelArg, KernelDevice, KernelFn, LaunchDims};
use crate::backend::{Backend, Tensor};
use crate::error::{Error, Result};

/// Threads per block of the per-column backward kernels.
const COLUMN_THREADS: u32 = 128;

/// A `[rows, cols]` matrix and its activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiasActSpec {
    pub rows: usize,
    pub cols: usize,
    pub act: BiasAct,
}

pub trait BiasOps: Backend {
    /// out = act(pre + bias[..cols]) row by row.
    fn bias_act_fwd(&self, s: &BiasActSpec, pre: Tensor, bias: Tensor, out: Tensor) -> Result<()>;
    /// dpre = dout * act'(pre + bias); dbias[..cols] += column sums of dpre.
    fn bias_act_bwd(
        &self,
        s: &BiasActSpec,
        pre: Tensor,
        bias: Tensor,
        dout: Tensor,
        dpre: Tensor,
        dbias: Tensor,
    ) -> Result<()>;
    /// dbias[..cols] += column sums of dout (the bias gradient of an identity epilogue).
    fn bias_grad_accumulate(&self, rows: usize, cols: usize, dout: Tensor, dbias: Tensor) -> Result<()>;
    /// y[r, ..cols] += bias[..cols] in place (the linear head's epilogue on the GEMM output).
    fn bias_add_inplace(&self, rows: usize, cols: usize, y: Tensor, bias: Tensor) -> Result<()>;
}

fn check_add_inplace(rows: usize, cols: usize, y: Tensor, bias: Tensor) -> Result<()> {
    check_len("bias_add_inplace y", y, rows * cols)?;
    check_cols("bias_add_inplace bias", cols, bias)?;
    check_disjoint("bias_add_inplace (y vs bias)", y, bias)
}

fn check_cols(what: &str, cols: usize, bias: Tensor) -> Result<()> {
    i32::try_from(cols).map_err(|_| Error::shape(format!("{what} cols (kernel int)"), "< 2^31", cols))?;
    bias.require(what, cols)
}

fn check_fwd(s: &BiasActSpec, pre: Tensor, bias: Tensor, out: Tensor) -> Result<()> {
    check_len("bias_act_fwd pre", pre, s.rows * s.cols)?;
    check_len("bias_act_fwd out", out, s.rows * s.cols)?;
    check_cols("bias_act_fwd bias", s.cols, bias)?;
    check_disjoint("bias_act_fwd (out vs pre)", pre, out)?;
    check_disjoint("bias_act_fwd (out vs bias)", bias, out)
}

fn check_bwd(s: &BiasActSpec, pre: Tensor, bias: Tensor, dout: Tensor, dpre: Tensor, dbias: Tensor) -> Result<()> {
    for (what, t) in [("pre", pre), ("dout", dout), ("dpre", dpre)] {
        check_len(&format!("bias_act_bwd {what}"), t, s.rows * s.cols)?;
    }
    check_cols("bias_act_bwd bias", s.cols, bias)?;
    check_cols("bias_act_bwd dbias", s.cols, dbias)?;
    for (what, t) in [("pre", pre), ("dout", dout), ("bias", bias), ("dbias", dbias)] {
        check_disjoint(&format!("bias_act_bwd (dpre vs {what})"), dpre, t)?;
    }
    for (what, t) in [("pre", pre), ("dout", dout), ("bias", bias)] {
        check_disjoint(&format!("bias_act_bwd (dbias vs {what})"), dbias, t)?;
    }
    Ok(())
}

fn check_grad(rows: usize, cols: usize, dout: Tensor, dbias: Tensor) -> Result<()> {
    check_len("bias_grad_accumulate dout", dout, rows * cols)?;
    check_cols("bias_grad_accumulate dbias", cols, dbias)?;
    check_disjoint("bias_grad_accumulate (dbias vs dout)", dout, dbias)
}

impl BiasOps for CpuBackend {
    fn bias_act_fwd(&self, s: &BiasActSpec, pre: Tensor, bias: Tensor, out: Tensor) -> Result<()> {
        check_fwd(s, pre, bias, out)?;
        // SAFETY: live host tensors; out checked disjoint from both inputs.
        unsafe {
            reference::bias_act_fwd(host_slice(pre), &host_slice(bias)[..s.cols], s.cols, s.act, host_slice_mut(out))
        };
        Ok(())
    }

    fn bias_act_bwd(
        &self,
        s: &BiasActSpec,
        pre: Tensor,
        bias: Tensor,
        dout: Tensor,
        dpre: Tensor,
        dbias: Tensor,
    ) -> Result<()> {
        check_bwd(s, pre, bias, dout, dpre, dbias)?;
        if s.cols == 0 {
            return Ok(());
        }
        // SAFETY: live host tensors; dpre and dbias checked disjoint from each other and the inputs.
        unsafe {
            reference::bias_act_bwd(
                host_slice(pre),
                &host_slice(bias)[..s.cols],
                host_slice(dout),
                s.cols,
                s.act,
                host_slice_mut(dpre),
                &mut host_slice_mut(dbias)[..s.cols],
            )
        };
        Ok(())
    }

    fn bias_grad_accumulate(&self, rows: usize, cols: usize, dout: Tensor, dbias: Tensor) -> Result<()> {
        check_grad(rows, cols, dout, dbias)?;
        if cols == 0 {
            return Ok(());
        }
        // SAFETY: live host tensors; dbias checked disjoint from dout.
        unsafe { reference::bias_grad_accumulate(host_slice(dout), cols, &mut host_slice_mut(dbias)[..cols]) };
        Ok(())
    }

    fn bias_add_inplace(&self, rows: usize, cols: usize, y: Tensor, bias: Tensor) -> Result<()> {
        check_add_inplace(rows, cols, y, bias)?;
        if cols == 0 {
            return Ok(());
        }
        // SAFETY: live host tensors; y checked disjoint from bias.
        unsafe { reference::bias_add_inplace(host_slice_mut(y), &host_slice(bias)[..cols], cols) };
        Ok(())
    }
}

fn per_column(cols: usize) -> LaunchDims {
    LaunchDims::linear(cols, COLUMN_THREADS, u32::MAX)
}

impl<D: KernelDevice> BiasOps for CudaBackend<D> {
    fn bias_act_fwd(&self, s: &BiasActSpec, pre: Tensor, bias: Tensor, out: Tensor) -> Result<()> {
        check_fwd(s, pre, bias, out)?;
        if s.rows * s.cols == 0 {
            return Ok(());
        }
        // SAFETY (argument order): bias_act_fwd_f32(float* out, const float* pre, const float* bias,
        // long long rows, int cols, int act).
        self.launch(
            KernelFn::BiasActFwdF32,
            Self::elementwise(s.rows * s.cols),
            &[
                out.into(),
                pre.into(),
                bias.into(),
                KernelArg::I64(s.rows as i64),
                KernelArg::I32(s.cols as i32),
                KernelArg::I32(s.act as i32),
            ],
        )
    }

    fn bias_act_bwd(
        &self,
        s: &BiasActSpec,
        pre: Tensor,
        bias: Tensor,
        dout: Tensor,
        dpre: Tensor,
        dbias: Tensor,
    ) -> Result<()> {
        check_bwd(s, pre, bias, dout, dpre, dbias)?;
        if s.cols == 0 {
            return Ok(());
        }
        // SAFETY (argument order): bias_act_bwd_f32(float* dpre, float* dbias, const float* pre,
        // const float* bias, const float* dout, long long rows, int cols, int act).
        self.launch(
            KernelFn::BiasActBwdF32,
            per_column(s.cols),
            &[
                dpre.into(),
                dbias.into(),
                pre.into(),
                bias.into(),
                dout.into(),
                KernelArg::I64(s.rows as i64),
                KernelArg::I32(s.cols as i32),
                KernelArg::I32(s.act as i32),
            ],
        )
    }

    fn bias_grad_accumulate(&self, rows: usize, cols: usize, dout: Tensor, dbias: Tensor) -> Result<()> {
        check_grad(rows, cols, dout, dbias)?;
        if cols == 0 {
            return Ok(());
        }
        // SAFETY (argument order): bias_grad_accumulate_f32(float* dbias, const float* dout, long long rows,
        // int cols).
        self.launch(
            KernelFn::BiasGradAccumulateF32,
            per_column(cols),
            &[dbias.into(), dout.into(), KernelArg::I64(rows as i64), KernelArg::I32(cols as i32)],
        )
    }

    fn bias_add_inplace(&self, rows: usize, cols: usize, y: Tensor, bias: Tensor) -> Result<()> {
        check_add_inplace(rows, cols, y, bias)?;
        if rows * cols == 0 {
            return Ok(());
        }
        // SAFETY (argument order): bias_add_inplace_f32(float* y, const float* bias, long long rows, int cols).
        self.launch(
            KernelFn::BiasAddInplaceF32,
            Self::elementwise(rows * cols),
            &[y.into(), bias.into(), KernelArg::I64(rows as i64), KernelArg::I32(cols as i32)],
        )
    }
}
