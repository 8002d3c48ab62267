//! The subset of TensorBoard's protobuf messages an event file written here holds, as `prost` message
//! structs (no protoc, no build step; the same approach as `eval::onnx::proto`). Field numbers and types
//! are those of TensorBoard's `compat/proto/event.proto`, `summary.proto` and `tensor.proto` (all proto3):
//! each tag below is the number those files give the field. Checked against the descriptors of the
//! `tensorboard` Python package (2.20) that the read-back test uses.
//!
//! Only what attnas writes is declared: the file version, scalars (`simple_value`), histograms
//! (`HistogramProto`), text (a string `TensorProto` tagged for the text plugin) and `SessionLog.START`,
//! which tells TensorBoard's loaders that a run (re)started at a step.

use prost::Message;

/// `Event` (event.proto: wall_time 1, step 2, oneof what { file_version 3, summary 5, session_log 7 }).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "event::What", tags = "3, 5, 7")]
    pub what: Option<event::What>,
}

pub mod event {
    /// The `what` oneof of `Event`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// "brain.Event:2" in the first record of a file.
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
    }
}

/// `SessionLog` (status 1, checkpoint_path 2, msg 3).
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(string, tag = "2")]
    pub checkpoint_path: String,
    #[prost(string, tag = "3")]
    pub msg: String,
}

/// `SessionLog.SessionStatus.START`: TensorBoard's loaders drop events at or after this event's step
/// that were read earlier (a restarted run's orphans).
pub const SESSION_START: i32 = 1;

/// `Summary` (value 1).
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `Summary.Value` (tag 1, metadata 9, oneof value { simple_value 2, histo 5, tensor 8 }).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    #[prost(oneof = "summary_value::Value", tags = "2, 5, 8")]
    pub value: Option<summary_value::Value>,
}

pub mod summary_value {
    /// The `value` oneof of `Summary.Value`. A oneof member is encoded even when zero, so a scalar of
    /// 0.0 is still a scalar.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "5")]
        Histo(super::HistogramProto),
        #[prost(message, tag = "8")]
        Tensor(super::TensorProto),
    }
}

/// `SummaryMetadata` (plugin_data 1).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `SummaryMetadata.PluginData` (plugin_name 1, content 2).
#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `HistogramProto` (min 1, max 2, num 3, sum 4, sum_squares 5, bucket_limit 6, bucket 7; the repeated
/// doubles are packed, as proto3 writes them). Bucket i counts the values in
/// (bucket_limit[i-1], bucket_limit[i]]; the first bucket starts at `min`.
#[derive(Clone, PartialEq, Message)]
pub struct HistogramProto {
    #[prost(double, tag = "1")]
    pub min: f64,
    #[prost(double, tag = "2")]
    pub max: f64,
    #[prost(double, tag = "3")]
    pub num: f64,
    #[prost(double, tag = "4")]
    pub sum: f64,
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `TensorProto`, only what a scalar string needs (dtype 1, string_val 8; no shape = a scalar).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `DataType.DT_STRING`.
pub const DT_STRING: i32 = 7;

impl Event {
    /// The encoded message (the payload of one TFRecord).
    pub fn bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}
