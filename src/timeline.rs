//! NVTX ranges: what nsys and ncu show on the timeline above the kernels (docs/profiling.md).
//!
//! [`range`] opens a named range on the calling thread and closes it when the guard drops; ranges nest
//! (`nvtxRangePush` / `nvtxRangePop`). They come through the `nvtx` crate, which compiles NVTX3's
//! header-only C: it builds without CUDA and, with no profiler attached, each range is one string
//! copy and a call that returns at once (no injection library is loaded), so the ranges stay on in
//! release builds. The training step opens about 15 per subnet-step; see docs/profiling.md for the tree.
//!
//! Per-op ranges (one per kernel launch and GEMM, named by the kernel's C symbol) are off by default:
//! they add a range per launch (hundreds per step) and are meant for a profile that attributes kernels
//! to ops. [`set_op_ranges`] turns them on (`--nvtx-ops`, or `ATTNAS_NVTX_OPS=1` in the environment).
//!
//! Tests read the ranges back with [`record`]: a thread-local log of pushes and pops, so a test can check
//! the tree a step opens without a profiler. Recording costs one thread-local read per range when off.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

static OP_RANGES: AtomicBool = AtomicBool::new(false);

/// The environment variable that turns per-op ranges on for a whole run (read by [`op_ranges_from_env`]).
pub const OP_RANGES_ENV: &str = "ATTNAS_NVTX_OPS";

thread_local! {
    static RECORDER: RefCell<Option<Vec<Event>>> = const { RefCell::new(None) };
}

/// One recorded range event (see [`record`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Push(String),
    Pop,
}

/// An open range; dropping it closes the range.
#[must_use = "a range closes when this guard drops"]
pub struct Range {
    open: bool,
}

impl Drop for Range {
    fn drop(&mut self) {
        if self.open {
            nvtx::range_pop!();
            note(Event::Pop);
        }
    }
}

fn note(event: Event) {
    RECORDER.with(|r| {
        if let Some(log) = r.borrow_mut().as_mut() {
            log.push(event);
        }
    });
}

/// Opens range `name` on this thread until the guard drops.
pub fn range(name: &str) -> Range {
    nvtx::range_push!("{}", name);
    note(Event::Push(name.to_string()));
    Range { open: true }
}

/// Opens range `name N` (a step number, a rank) until the guard drops.
pub fn range_n(name: &str, n: u64) -> Range {
    let label = format!("{name} {n}");
    nvtx::range_push!("{}", label);
    note(Event::Push(label));
    Range { open: true }
}

/// A per-op range (a kernel launch or a GEMM): open only while per-op ranges are on.
pub fn op_range(name: &str) -> Range {
    if OP_RANGES.load(Ordering::Relaxed) {
        range(name)
    } else {
        Range { open: false }
    }
}

/// Turns per-op ranges on or off for the whole process.
pub fn set_op_ranges(on: bool) {
    OP_RANGES.store(on, Ordering::Relaxed);
}

/// Whether per-op ranges are on.
pub fn op_ranges() -> bool {
    OP_RANGES.load(Ordering::Relaxed)
}

/// Turns per-op ranges on when `ATTNAS_NVTX_OPS` is set to anything but `0` or empty (launched ranks
/// inherit it, so `--nvtx-ops` reaches every rank process).
pub fn op_ranges_from_env() {
    if std::env::var(OP_RANGES_ENV).is_ok_and(|v| !v.is_empty() && v != "0") {
        set_op_ranges(true);
    }
}

/// Records this thread's range events while `f` runs and returns them with `f`'s result.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<Event>) {
    let outer = RECORDER.with(|r| r.borrow_mut().replace(Vec::new()));
    let out = f();
    let events = RECORDER.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer)).unwrap_or_default();
    (out, events)
}

/// The recorded events as an indented tree, one range per line (`"step 3"`, `"  max forward"`, ...);
/// a log with ranges left open ends with an `(unclosed: N)` line.
pub fn tree(events: &[Event]) -> Vec<String> {
    let mut depth = 0usize;
    let mut lines = Vec::new();
    for e in events {
        match e {
            Event::Push(name) => {
                lines.push(format!("{}{name}", "  ".repeat(depth)));
                depth += 1;
            }
            Event::Pop => depth = depth.saturating_sub(1),
        }
    }
    if depth > 0 {
        lines.push(format!("(unclosed: {depth})"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_nest_and_close_in_order() {
        let ((), events) = record(|| {
            let _step = range_n("step", 3);
            {
                let _f = range("max forward");
                let _op = op_range("depthwise_fwd_f32"); // off: not recorded
            }
            let _o = range("optimizer");
        });
        assert_eq!(tree(&events), ["step 3", "  max forward", "  optimizer"]);
        assert_eq!(events.iter().filter(|e| **e == Event::Pop).count(), 3, "{events:?}");
    }

    #[test]
    fn recording_is_per_thread_and_restores_the_outer_log() {
        let ((inner, other), outer) = record(|| {
            let _a = range("outer");
            let other = std::thread::spawn(|| record(|| drop(range("elsewhere"))).1).join().unwrap();
            let ((), inner) = record(|| drop(range("inner")));
            (inner, other)
        });
        assert_eq!(tree(&inner), ["inner"]);
        assert_eq!(tree(&other), ["elsewhere"]);
        assert_eq!(tree(&outer), ["outer"], "the nested recording took its own events");
    }

    #[test]
    fn an_unclosed_range_is_flagged() {
        let (guard, events) = record(|| range("left open"));
        assert_eq!(tree(&events), ["left open", "(unclosed: 1)"]);
        drop(guard);
    }
}
