//! The edge span end to end (issue 6): stitch exports its span to a real `ddapm-test-agent` on
//! both paths at once (Datadog v0.4 and OTLP/HTTP) while real backends (a Flask app under
//! `ddtrace-run`, a Flask app with the OpenTelemetry SDK) report theirs to the same agent. The
//! browser's RUM span sits on top, stitch's edge span under it, the backend's span under that,
//! with one trace id everywhere.
//!
//! Needs the peers venv (`.ci/setup test`). One agent and one pair of apps serve every test in
//! this file; each test runs its own stitch and its own random trace ids.

mod common;
#[path = "common/peers.rs"]
mod peers;

use common::{base_config, get, Stitch};
use peers::{header_refs, shared, DdSpan, OtlpSpan, Peers, Rum, Seen, DD_SERVICE, OTEL_SERVICE};

const SERVICE: &str = "stitch-e2e";
const ENV: &str = "e2e";
const SPAN_NAME: &str = "stitch.request";

/// stitch exporting to the test agent on both paths, with a RUM profile on `/dd` (to the
/// dd-trace app) and `/otel` (to the OpenTelemetry app).
fn stitch(peers: &Peers) -> Stitch {
    let config = format!(
        r#"{base}
[service]
name = "{SERVICE}"
env = "{ENV}"

[export]
flush_interval_ms = 50

[export.datadog]
agent_url = "{agent}"

[export.otlp]
endpoint = "{otlp}"

[propagation.rum]
extract = ["datadog", "tracecontext", "b3multi", "b3", "baggage"]
inject = ["datadog", "tracecontext", "baggage"]
injection = "all"

[propagation.rum_otel]
extract = ["datadog", "tracecontext", "b3multi", "b3", "baggage"]
inject = ["tracecontext", "baggage"]
injection = "all"

[cors.web]
allowed_origins = ["http://localhost:3000"]

[upstream.dd]
servers = ["{dd}"]

[upstream.otel]
servers = ["{otel}"]

[[route]]
name = "dd"
path = "/dd"
upstream = "dd"
propagation = "rum"
cors = "web"

[[route]]
name = "otel"
path = "/otel"
upstream = "otel"
propagation = "rum_otel"
cors = "web"
"#,
        base = base_config(),
        agent = peers.agent.url(),
        otlp = peers.agent.otlp_traces_endpoint(),
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

/// The span stitch injected upstream: the parent the backend's tracer reports.
fn edge_span_id(seen: &Seen) -> u64 {
    let id = seen.parent_id.unwrap_or_else(|| {
        panic!(
            "the {} backend's span has no parent: {:?}",
            seen.app, seen.raw
        )
    });
    assert_ne!(id, 0);
    id
}

/// The edge span with id `span_id` in a trace, as the Datadog intake got it.
fn dd_edge_span(peers: &Peers, trace_id_low: u64, span_id: u64) -> DdSpan {
    peers.agent.wait_dd(
        "stitch's edge span at the Datadog intake",
        trace_id_low,
        |spans| spans.iter().find(|s| s.span_id == span_id).cloned(),
    )
}

/// The edge span with id `span_id` in a trace, as the OTLP receiver got it.
fn otlp_edge_span(peers: &Peers, trace_id: u128, span_id: u64) -> OtlpSpan {
    peers.agent.wait_otlp(
        "stitch's edge span at the OTLP receiver",
        trace_id,
        |spans| spans.iter().find(|s| s.span_id == span_id).cloned(),
    )
}

/// What both paths must agree on, and what the edge span must say about the RUM request.
fn assert_edge_span(rum: &Rum, edge_id: u64, dd: &DdSpan, otlp: &OtlpSpan, path: &str) {
    // Datadog v0.4: low 64 bits, no `_dd.p.tid` for a 64-bit RUM id.
    assert_eq!(dd.trace_id, rum.trace_id, "v0.4 trace id");
    assert_eq!(
        dd.trace_id_128(),
        rum.trace_id_128(),
        "v0.4 128-bit trace id"
    );
    assert_eq!(dd.span_id, edge_id);
    assert_eq!(
        dd.parent_id, rum.parent_id,
        "the edge span's parent is the RUM span"
    );
    assert_eq!(dd.name, SPAN_NAME);
    assert_eq!(dd.service, SERVICE);
    assert_eq!(dd.priority(), Some(1.0), "{dd:#?}");
    assert_eq!(dd.meta.get("_dd.origin").map(String::as_str), Some("rum"));
    assert_eq!(dd.error, 0);

    // OTLP: the same ids, 16-byte trace id with a zero high half.
    assert_eq!(otlp.trace_id >> 64, 0, "OTLP trace id high half");
    assert_eq!(otlp.trace_id, rum.trace_id_128(), "OTLP trace id");
    assert_eq!(otlp.span_id, dd.span_id, "span id on both paths");
    assert_eq!(otlp.parent_span_id, dd.parent_id, "parent id on both paths");
    assert_eq!(otlp.service.as_deref(), Some(SERVICE));
    assert_eq!(otlp.kind, "SPAN_KIND_SERVER");
    let attr = |k: &str| otlp.attr(k).cloned().unwrap_or_default();
    assert_eq!(attr("http.request.method"), "GET", "{otlp:#?}");
    assert_eq!(attr("url.path"), path, "{otlp:#?}");
    assert_eq!(attr("http.response.status_code"), 200, "{otlp:#?}");
    // Same start and duration on both paths.
    assert_eq!(otlp.start_ns, dd.start as u64, "start on both paths");
    assert_eq!(
        otlp.end_ns - otlp.start_ns,
        dd.duration as u64,
        "duration on both paths"
    );
}

#[test]
fn edge_span_is_the_parent_of_the_dd_trace_backend_span_on_both_paths() {
    let peers = shared();
    let stitch = stitch(peers);
    let rum = Rum::random();
    let seen = call(&stitch, "/dd/edge", &rum.default_propagators(true));
    assert_eq!(seen.trace_id, Some(rum.trace_id_128()), "{:?}", seen.raw);
    let edge = edge_span_id(&seen);
    assert_ne!(
        edge, rum.parent_id,
        "stitch passed the browser's span id through"
    );
    assert_eq!(
        seen.header("x-datadog-parent-id"),
        Some(edge.to_string().as_str())
    );

    let dd = dd_edge_span(peers, rum.trace_id, edge);
    let otlp = otlp_edge_span(peers, rum.trace_id_128(), edge);
    assert_edge_span(&rum, edge, &dd, &otlp, "/dd/edge");

    // The dd-trace backend's server span, in the same trace, under the edge span.
    let backend_id = seen.span_id.expect("dd_app reported no span id");
    let backend = peers
        .agent
        .wait_dd("the dd-trace backend's span", rum.trace_id, |spans| {
            spans
                .iter()
                .find(|s| s.service == DD_SERVICE && s.span_id == backend_id)
                .cloned()
        });
    assert_eq!(
        backend.parent_id, edge,
        "dd-trace span's parent is the edge span"
    );
    assert_eq!(backend.trace_id_128(), rum.trace_id_128());
    assert_eq!(backend.priority(), Some(1.0));
}

#[test]
fn edge_span_is_the_parent_of_the_otel_backend_span_on_both_paths() {
    let peers = shared();
    let stitch = stitch(peers);
    let rum = Rum::random();
    let seen = call(&stitch, "/otel/edge", &rum.default_propagators(true));
    assert_eq!(seen.trace_id, Some(rum.trace_id_128()), "{:?}", seen.raw);
    assert_eq!(seen.recording, Some(true), "{:?}", seen.raw);
    let edge = edge_span_id(&seen);
    assert_ne!(
        edge, rum.parent_id,
        "stitch passed the browser's span id through"
    );

    let dd = dd_edge_span(peers, rum.trace_id, edge);
    let otlp = otlp_edge_span(peers, rum.trace_id_128(), edge);
    assert_edge_span(&rum, edge, &dd, &otlp, "/otel/edge");

    // The OpenTelemetry backend's server span, in the same trace, under the edge span.
    let backend_id = seen.span_id.expect("otel_app reported no span id");
    let backend = peers.agent.wait_otlp(
        "the OpenTelemetry backend's span",
        rum.trace_id_128(),
        |spans| {
            spans
                .iter()
                .find(|s| s.service.as_deref() == Some(OTEL_SERVICE) && s.span_id == backend_id)
                .cloned()
        },
    );
    assert_eq!(
        backend.parent_span_id, edge,
        "OTel span's parent is the edge span"
    );
    assert_eq!(backend.trace_id, otlp.trace_id);
}

#[test]
fn dropped_rum_request_edge_span_goes_to_the_agent_like_dd_trace_but_never_over_otlp() {
    let peers = shared();
    let stitch = stitch(peers);
    let dropped = Rum::random();
    let seen = call(&stitch, "/dd/dropped", &dropped.default_propagators(false));
    assert_eq!(
        seen.trace_id,
        Some(dropped.trace_id_128()),
        "{:?}",
        seen.raw
    );
    assert_eq!(seen.sampling_priority, Some(0), "{:?}", seen.raw);
    let edge = edge_span_id(&seen);

    // Datadog intake: like dd-trace (whose dropped span arrives too, priority 0), stitch sends
    // the span of a dropped trace so the Agent's stats count it; the Agent drops it after.
    let backend_id = seen.span_id.expect("dd_app reported no span id");
    let (edge_span, backend) = peers.agent.wait_dd(
        "both spans of the dropped trace",
        dropped.trace_id,
        |spans| {
            let edge = spans.iter().find(|s| s.span_id == edge)?;
            let backend = spans.iter().find(|s| s.span_id == backend_id)?;
            Some((edge.clone(), backend.clone()))
        },
    );
    assert_eq!(backend.priority(), Some(0.0), "dd-trace's own dropped span");
    assert_eq!(edge_span.priority(), Some(0.0), "{edge_span:#?}");
    assert_eq!(edge_span.parent_id, dropped.parent_id);
    assert_eq!(backend.parent_id, edge);

    // OTLP: kept traces only. A kept request after it goes through the same exporter queue;
    // once its edge span is at the agent, the dropped one would have been too.
    let kept = Rum::random();
    let after = call(&stitch, "/dd/kept", &kept.default_propagators(true));
    otlp_edge_span(peers, kept.trace_id_128(), edge_span_id(&after));
    let leaked = peers.agent.otlp_trace(dropped.trace_id_128());
    assert!(
        leaked.is_empty(),
        "spans of dropped trace {:032x} (edge span {edge:016x}) went over OTLP: {leaked:#?}",
        dropped.trace_id_128()
    );
}
