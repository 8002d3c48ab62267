//! Deployment: the inference forward and latency (issue 14).
//!
//! - [`fold`]: BatchNorm folded into the preceding conv's weights and a bias (a static subnet's tensors);
//! - [`model`]: a folded subnet on a device (weights in the ops' layouts, one allocation), and synthetic
//!   folded weights for timing;
//! - [`infer`]: the folded eval forward on any backend, layer by layer (conv + bias + activation fused);
//! - [`latency`]: timing (warm-up, median / p10 / p90; CUDA events on a GPU, wall clock elsewhere) of
//!   whole subnets and single layers with synthetic weights, and the identity a measurement records;
//! - [`latency_table`]: the layer keys of a space, the table file, its identity checks and the
//!   prediction (sum of entries, calibrated); [`table_build`]: building and checking tables;
//! - [`onnxrt`]: the same measurements of the exported ONNX graphs in onnxruntime.

pub mod fold;
pub mod infer;
pub mod latency;
pub mod latency_table;
pub mod model;
pub mod onnxrt;
pub mod table_build;
