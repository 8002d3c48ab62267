//! Fuzz target: the packed-dataset header/index parser must return Ok or an error for any bytes, never
//! panic; and every record of an accepted layout must lie inside the input (`format::layout_violation`,
//! which tests/data_format.rs also runs on this target's seed corpus).
#![no_main]

use attnas::data::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(v) = format::layout_violation(data) {
        panic!("accepted layout breaks the reader's promise: {v}");
    }
});
