//! W3C Trace Context Level 2 end to end (issue 16): the `random-trace-id` flag (trace-flags bit
//! 0x02) through stitch to real backends, a Flask app traced by the OpenTelemetry Python SDK and
//! one under `ddtrace-run`. Each app answers with the headers it received and the headers its
//! tracer would send on an outgoing call, so one request shows what stitch hands over and what
//! each SDK does with the bit when it continues the trace.
//!
//! Needs the peers venv (`.ci/setup test`). One agent and one pair of apps serve every test in
//! this file; each test uses its own random trace ids.

mod common;
#[path = "common/peers.rs"]
mod peers;

use common::{base_config, get, Stitch};
use peers::{header_refs, shared, Peers, Seen};

/// stitch with `/dd` (datadog, tracecontext, baggage) and `/otel` (tracecontext, baggage), the
/// default extract order and sampling (rate 1.0: a trace stitch starts is kept).
fn stitch(peers: &Peers) -> Stitch {
    let config = format!(
        r#"{base}
[propagation.otel]
inject = ["tracecontext", "baggage"]

[upstream.dd]
servers = ["{dd}"]

[upstream.otel]
servers = ["{otel}"]

[[route]]
name = "dd"
path = "/dd"
upstream = "dd"

[[route]]
name = "otel"
path = "/otel"
upstream = "otel"
propagation = "otel"
"#,
        base = base_config(),
        dd = peers.dd.addr,
        otel = peers.otel.addr,
    );
    Stitch::start(&config)
}

fn call(stitch: &Stitch, path: &str, headers: &[(String, String)]) -> Seen {
    let url = stitch.url(path);
    let r = get(&url, &header_refs(headers)).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Seen::from_response(&r)
}

/// (trace id, parent id, flags) of a version-00 traceparent.
fn parts(tp: &str) -> (u128, u64, &str) {
    let f: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        (f.len(), f[0]),
        (4, "00"),
        "not a version-00 traceparent: {tp}"
    );
    (
        u128::from_str_radix(f[1], 16).unwrap(),
        u64::from_str_radix(f[2], 16).unwrap(),
        f[3],
    )
}

fn received(seen: &Seen) -> (u128, u64, &str) {
    parts(seen.header("traceparent").unwrap_or_else(|| {
        panic!(
            "no traceparent reached the {} app: {:?}",
            seen.app, seen.headers
        )
    }))
}

fn sent_on(seen: &Seen) -> (u128, u64, &str) {
    parts(seen.injected.get("traceparent").unwrap_or_else(|| {
        panic!(
            "the {} SDK injects no traceparent: {:?}",
            seen.app, seen.raw
        )
    }))
}

fn random_ids() -> (u128, u64) {
    (rand::random::<u128>().max(1), rand::random::<u64>().max(1))
}

/// A `-03` / `-02` / `-01` traceparent through stitch: the OpenTelemetry backend receives the
/// flag as sent (with stitch's edge span as the parent) and honours the sampled bit; the SDK
/// itself (1.36) keeps only the sampled bit on the spans it creates, so its outgoing
/// traceparent loses 0x02. dd-trace-py 4.16 keeps it.
#[test]
fn the_random_flag_reaches_the_backends_as_sent() {
    let peers = shared();
    let stitch = stitch(peers);
    for (flags, sampled, otel_out) in [("03", true, "01"), ("02", false, "00"), ("01", true, "01")]
    {
        let (trace, parent) = random_ids();
        let headers = vec![(
            "traceparent".to_string(),
            format!("00-{trace:032x}-{parent:016x}-{flags}"),
        )];

        let otel = call(&stitch, "/otel/random", &headers);
        let (t, edge_span, got) = received(&otel);
        assert_eq!(
            (t, got),
            (trace, flags),
            "stitch forwards the flags of the same trace id: {:?}",
            otel.headers
        );
        assert_ne!(edge_span, parent, "stitch's edge span is the new parent");
        assert_eq!(otel.trace_id, Some(trace), "{:?}", otel.raw);
        assert_eq!(
            otel.parent_id.filter(|_| sampled),
            Some(edge_span).filter(|_| sampled)
        );
        assert_eq!(
            (otel.sampled, otel.recording),
            (Some(sampled), Some(sampled)),
            "{:?}",
            otel.raw
        );
        let (t, _, out) = sent_on(&otel);
        assert_eq!(
            (t, out),
            (trace, otel_out),
            "OpenTelemetry Python SDK 1.36 writes only the sampled bit on the spans it starts (a Level 2 SDK would keep {flags})"
        );

        let dd = call(&stitch, "/dd/random", &headers);
        let (t, _, got) = received(&dd);
        assert_eq!((t, got), (trace, flags), "{:?}", dd.headers);
        let (t, _, out) = sent_on(&dd);
        assert_eq!(
            (t, out),
            (trace, flags),
            "dd-trace-py 4.16 keeps the flag it received: {:?}",
            dd.raw
        );
    }
}

/// A trace stitch starts has a random id (the low 64 bits are random), so it says so.
#[test]
fn a_trace_stitch_starts_carries_the_random_flag() {
    let peers = shared();
    let stitch = stitch(peers);
    let otel = call(&stitch, "/otel/new", &[]);
    let (trace, _, flags) = received(&otel);
    assert_eq!(
        flags, "03",
        "kept by the edge sampler, random id: {:?}",
        otel.headers
    );
    assert_eq!(otel.trace_id, Some(trace));
    assert_eq!((otel.sampled, otel.recording), (Some(true), Some(true)));

    let dd = call(&stitch, "/dd/new", &[]);
    let (trace, _, flags) = received(&dd);
    assert_eq!(flags, "03", "{:?}", dd.headers);
    assert_eq!(dd.trace_id, Some(trace), "{:?}", dd.raw);
    assert_eq!(sent_on(&dd).2, "03", "dd-trace-py keeps it downstream");
}
