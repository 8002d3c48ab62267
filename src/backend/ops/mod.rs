//! The supernet's ops, one file per family (dfdx style: everything about an op in one place). Each
//! file holds the family's trait, its CPU impl (calling the reference functions in `backend::cpu`)
//! and its CUDA impl (the launchers for `kernels/<family>.cu`, written over `KernelDevice`).
//!
//! Conventions: NHWC, f32 storage unless an op says it takes bf16 too (backend::dtype); every op validates lengths and returns `Error::Shape` before touching
//! memory; outputs must not overlap inputs unless the op says so; active sizes and stored strides
//! are run-time arguments, so one compiled kernel serves every subnet.

pub mod activation;
pub mod batchnorm;
pub mod bias;
pub mod cast;
pub mod depthwise;
pub mod fill;
pub mod gemm;
pub mod input;
pub mod linear;
pub mod loss;
pub mod optimizer;
pub mod pool;
pub mod regularize;
pub mod resize;
pub mod se;
pub mod stem_conv;

pub use activation::ActivationOps;
pub use batchnorm::BatchNormOps;
pub use bias::BiasOps;
pub use cast::CastOps;
pub use depthwise::DepthwiseOps;
pub use fill::FillOps;
pub use gemm::GemmOps;
pub use input::InputOps;
pub use linear::LinearOps;
pub use loss::LossOps;
pub use optimizer::OptimizerOps;
pub use pool::PoolOps;
pub use regularize::RegularizeOps;
pub use resize::ResizeOps;
pub use se::{ChannelScaleOps, SqueezeExciteOps};
pub use stem_conv::StemConvOps;

/// Every op the supernet needs; `nn/` is generic over this.
pub trait SupernetOps:
    ActivationOps
    + BatchNormOps
    + BiasOps
    + CastOps
    + ChannelScaleOps
    + DepthwiseOps
    + FillOps
    + GemmOps
    + InputOps
    + LinearOps
    + LossOps
    + OptimizerOps
    + PoolOps
    + RegularizeOps
    + ResizeOps
    + SqueezeExciteOps
    + StemConvOps
{
}

impl<
        T: ActivationOps
            + BatchNormOps
            + BiasOps
            + CastOps
            + ChannelScaleOps
            + DepthwiseOps
            + FillOps
            + GemmOps
            + InputOps
            + LinearOps
            + LossOps
            + OptimizerOps
            + PoolOps
            + RegularizeOps
            + ResizeOps
            + SqueezeExciteOps
            + StemConvOps,
    > SupernetOps for T
{
}
