//! Fuzz target: the packed-dataset header/index parser must return Ok or an error for any bytes, never
//! panic; and every record of an accepted layout must lie inside the input.
#![no_main]

use attnas::data::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(layout) = format::parse(data) {
        for e in &layout.entries {
            let start = layout.header.payload.offset + e.offset;
            let end = start + e.len as u64;
            assert!(end <= layout.header.payload.offset + layout.header.payload.len);
            assert!(end as usize <= data.len());
            assert!((e.label as usize) < layout.class_names.len());
        }
    }
});
