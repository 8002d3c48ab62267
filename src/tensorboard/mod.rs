//! TensorBoard event files, written without TensorFlow or an unmaintained TensorBoard crate: the format is
//! small. An event file is a sequence of TFRecords (`record`: length, masked CRC32C, data, masked
//! CRC32C), each holding one `Event` protobuf (`proto`, derived with prost). The first event names the
//! file version; the others carry summaries (scalars, histograms, text) at a step, or a session start.
//! `writer` builds events and appends them to a file.
//!
//! What the training job logs and how a resumed run keeps one value per step is in
//! `crate::train::tensorboard`; this module knows nothing about training.

pub mod proto;
pub mod record;
pub mod writer;

pub use proto::Event;
pub use record::{masked_crc32c, read_records, Records};
pub use writer::{
    event_file_name, file_version_event, histogram, is_event_file, scalar, session_start_event, summary_event, text,
    EventFile,
};
