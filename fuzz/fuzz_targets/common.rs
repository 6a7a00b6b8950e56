//! Turns fuzz bytes into a header map: each line is one header; its first byte picks the
//! name from the propagation headers, the rest is the value (invalid values are skipped).

use http::{HeaderMap, HeaderName, HeaderValue};

const NAMES: [&str; 14] = [
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-origin",
    "x-datadog-sampling-priority",
    "x-datadog-tags",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "baggage",
];

pub fn headers(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&first, value)) = line.split_first() else {
            continue;
        };
        let name = NAMES[usize::from(first) % NAMES.len()];
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.append(HeaderName::from_static(name), v);
        }
    }
    h
}
