//! Fuzz the b3 extractor: it must never panic on any header bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let h = common::headers(data);
    let _ = stitch::propagation::b3::extract_single(&h);
    let _ = stitch::propagation::b3::extract_multi(&h);
});
