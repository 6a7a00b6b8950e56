//! Fuzz the baggage extractor: it must never panic on any header bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let h = common::headers(data);
    let _ = stitch::propagation::baggage::extract(&h);
});
