//! Building events (scalars, histograms, text, file version, session start) and writing them to an event
//! file: one TFRecord per event, each `append` one `write_all` + flush, so a reader (TensorBoard polls
//! the file while the run goes on) sees whole records, or a partial last one it retries later.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::proto::{
    event, summary_value, Event, HistogramProto, PluginData, SessionLog, Summary, SummaryMetadata, SummaryValue,
    TensorProto, DT_STRING, SESSION_START,
};
use super::record::frame_into;
use crate::error::{Error, Result};
use crate::util::atomic::write_atomic;

/// The version string TensorBoard expects in a file's first event.
pub const FILE_VERSION: &str = "brain.Event:2";

/// The file-version event that opens every event file.
pub fn file_version_event(wall_time: f64) -> Event {
    Event { wall_time, step: 0, what: Some(event::What::FileVersion(FILE_VERSION.to_string())) }
}

/// `SessionLog.START` at `step`: TensorBoard's loaders drop what they read earlier at steps >= `step`
/// (a resumed run's orphaned steps, if a reader saw them before they were removed from disk).
pub fn session_start_event(wall_time: f64, step: u64, msg: &str) -> Event {
    let log = SessionLog { status: SESSION_START, checkpoint_path: String::new(), msg: msg.to_string() };
    Event { wall_time, step: step as i64, what: Some(event::What::SessionLog(log)) }
}

/// One event carrying several summary values at one step.
pub fn summary_event(wall_time: f64, step: u64, values: Vec<SummaryValue>) -> Event {
    Event { wall_time, step: step as i64, what: Some(event::What::Summary(Summary { value: values })) }
}

/// A scalar (TensorBoard stores scalars as f32).
pub fn scalar(tag: &str, value: f64) -> SummaryValue {
    SummaryValue { tag: tag.to_string(), metadata: None, value: Some(summary_value::Value::SimpleValue(value as f32)) }
}

/// Markdown for TensorBoard's text dashboard.
pub fn text(tag: &str, markdown: &str) -> SummaryValue {
    let plugin = PluginData { plugin_name: "text".to_string(), content: Vec::new() };
    SummaryValue {
        tag: tag.to_string(),
        metadata: Some(SummaryMetadata { plugin_data: Some(plugin) }),
        value: Some(summary_value::Value::Tensor(TensorProto {
            dtype: DT_STRING,
            string_val: vec![markdown.as_bytes().to_vec()],
        })),
    }
}

/// A histogram of the finite `values` in `bins` equal-width buckets between their min and max (one
/// bucket when all are equal); `None` when there is no finite value.
pub fn histogram(tag: &str, values: &[f64], bins: usize) -> Option<SummaryValue> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    if finite.is_empty() {
        return None;
    }
    let n = if hi > lo { bins.max(1) } else { 1 };
    let width = (hi - lo) / n as f64;
    let mut bucket_limit: Vec<f64> = (1..=n).map(|i| lo + width * i as f64).collect();
    bucket_limit[n - 1] = hi;
    let mut bucket = vec![0.0; n];
    for &v in &finite {
        // Bucket i holds (limit[i-1], limit[i]]; the minimum goes to the first.
        let i = if width > 0.0 { ((v - lo) / width).ceil() as usize } else { 1 };
        bucket[i.clamp(1, n) - 1] += 1.0;
    }
    let histo = HistogramProto {
        min: lo,
        max: hi,
        num: finite.len() as f64,
        sum: finite.iter().sum(),
        sum_squares: finite.iter().map(|v| v * v).sum(),
        bucket_limit,
        bucket,
    };
    Some(SummaryValue { tag: tag.to_string(), metadata: None, value: Some(summary_value::Value::Histo(histo)) })
}

/// The framed bytes of `events`.
pub fn encode_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        frame_into(&e.bytes(), &mut out);
    }
    out
}

/// The host name for event file names (TensorBoard shows it nowhere; it keeps names from different
/// machines apart), reduced to characters safe in a file name.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String =
        raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

/// `events.out.tfevents.<unix seconds>.<host>.<pid>.0`: the name pattern TensorBoard and TensorFlow use;
/// TensorBoard loads every file whose name contains `tfevents`, in name order.
pub fn event_file_name(unix_secs: u64) -> String {
    format!("events.out.tfevents.{unix_secs:010}.{}.{}.0", host_name(), std::process::id())
}

/// Whether a file name is a TensorBoard event file.
pub fn is_event_file(name: &str) -> bool {
    name.contains("tfevents")
}

/// An event file open for appending.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    file: File,
}

impl EventFile {
    /// Writes `path` atomically with `content` (already framed records; a reader never sees a half-built
    /// file), then opens it for appending.
    pub fn create_with(path: &Path, content: &[u8]) -> Result<EventFile> {
        write_atomic(path, |w| w.write_all(content).map_err(|e| Error::io(path, e)))?;
        let file = OpenOptions::new().append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(EventFile { path: path.to_path_buf(), file })
    }

    /// Appends `events` in one write and flushes.
    pub fn append(&mut self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let bytes = encode_events(events);
        self.file.write_all(&bytes).and_then(|_| self.file.flush()).map_err(|e| Error::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn histo(v: &SummaryValue) -> &HistogramProto {
        match &v.value {
            Some(summary_value::Value::Histo(h)) => h,
            other => panic!("not a histogram: {other:?}"),
        }
    }

    #[test]
    fn histogram_buckets_count_every_value_once() {
        let values = [1.0, 2.0, 2.0, 3.0, 4.0, f64::NAN];
        let h = histogram("h", &values, 3).unwrap();
        let h = histo(&h);
        assert_eq!((h.min, h.max, h.num, h.sum, h.sum_squares), (1.0, 4.0, 5.0, 12.0, 34.0));
        assert_eq!(h.bucket_limit, vec![2.0, 3.0, 4.0]);
        // (-, 2] holds 1, 2, 2; (2, 3] holds 3; (3, 4] holds 4.
        assert_eq!(h.bucket, vec![3.0, 1.0, 1.0]);
        let one = histogram("h", &[5.0, 5.0], 30).unwrap();
        assert_eq!((histo(&one).bucket_limit.clone(), histo(&one).bucket.clone()), (vec![5.0], vec![2.0]));
        assert!(histogram("h", &[f64::NAN], 30).is_none());
    }

    #[test]
    fn a_zero_scalar_is_still_encoded() {
        let e = summary_event(1.5, 3, vec![scalar("x", 0.0)]);
        let back = Event::decode(e.bytes().as_slice()).unwrap();
        assert_eq!(back, e);
        let Some(event::What::Summary(s)) = back.what else { panic!("no summary") };
        assert_eq!(s.value[0].value, Some(summary_value::Value::SimpleValue(0.0)));
    }

    #[test]
    fn file_names_are_recognised() {
        let n = event_file_name(1_700_000_000);
        assert!(n.starts_with("events.out.tfevents.1700000000.") && is_event_file(&n), "{n}");
        assert!(!n.contains('/') && !n.contains(' '));
    }
}
