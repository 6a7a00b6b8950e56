//! Fuzz the baggage extractor and the edge span's baggage tags: they must never panic on any
//! header bytes, and the tags stay within their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let h = common::headers(data);
    let _ = stitch::propagation::baggage::extract(&h);
    let keys = ["session.id".to_string(), "user.id".to_string(), "k".to_string()];
    let tags = stitch::propagation::baggage::tags(data, &keys);
    assert!(tags.len() <= keys.len());
    assert!(tags
        .iter()
        .all(|(_, v)| v.len() <= stitch::propagation::baggage::MAX_TAG_VALUE));
});
