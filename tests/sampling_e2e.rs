//! Sampling alignment end to end (issue 5, `injection = "all"`): stitch in front of real
//! backends, a Flask app under `ddtrace-run` and a Flask app with the OpenTelemetry SDK (default
//! ParentBased(AlwaysOn) sampler), both reporting to a real `ddapm-test-agent`. Each test reads
//! the decision twice: from what the backend's tracer says it decided (the app's JSON answer)
//! and from what reached the agent.
//!
//! Needs the peers venv (`.ci/setup test`). One agent and one pair of apps serve every test in
//! this file; each test runs its own stitch and its own random trace ids, so tests never read
//! each other's spans.

mod common;
#[path = "common/peers.rs"]
mod peers;

use common::{base_config, get, Stitch};
use peers::{header_refs, shared, OtlpSpan, Peers, Rum, Seen, DD_SERVICE, OTEL_SERVICE};

const ALLOWED_ORIGIN: &str = "http://localhost:3000";

/// stitch with the `rum` profile (`injection = "all"` plus `sampling`, the sampling keys) on
/// two routes: `/dd` to the dd-trace app (datadog, tracecontext, baggage) and `/otel` to the
/// OpenTelemetry app (tracecontext, baggage), both under the CORS policy allowing
/// `http://localhost:3000`.
fn stitch(peers: &Peers, sampling: &str) -> Stitch {
    let extract = r#"["datadog", "tracecontext", "b3multi", "b3", "baggage"]"#;
    let config = format!(
        r#"{base}
[propagation.rum]
extract = {extract}
inject = ["datadog", "tracecontext", "baggage"]
injection = "all"
{sampling}

[propagation.rum_otel]
extract = {extract}
inject = ["tracecontext", "baggage"]
injection = "all"
{sampling}

[cors.web]
allowed_origins = ["{ALLOWED_ORIGIN}"]

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
        dd = peers.dd.addr,
        otel = peers.otel.addr,
    );
    Stitch::start(&config)
}

const DEFAULT_SAMPLING: &str = r#"sample_rate = 1.0
missing_decision = "drop"
trust = "any"
max_incoming_priority = 2"#;

/// GET `path` through stitch and read the backend's answer.
fn call(stitch: &Stitch, path: &str, headers: &[(String, String)]) -> Seen {
    let url = stitch.url(path);
    let r = get(&url, &header_refs(headers)).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Seen::from_response(&r)
}

/// The dd-trace backend's server span (`flask.request`) as the agent received it.
fn dd_server_span(peers: &Peers, seen: &Seen) -> peers::DdSpan {
    let span_id = seen.span_id.expect("dd_app reported no span id");
    peers.agent.wait_dd(
        "the dd-trace backend's server span at the agent",
        seen.trace_id_low(),
        |spans| {
            spans
                .iter()
                .find(|s| s.service == DD_SERVICE && s.span_id == span_id)
                .cloned()
        },
    )
}

/// The OpenTelemetry backend's server span as the agent's OTLP receiver got it.
fn otel_server_span(peers: &Peers, seen: &Seen) -> OtlpSpan {
    let span_id = seen.span_id.expect("otel_app reported no span id");
    peers.agent.wait_otlp(
        "the OpenTelemetry backend's server span at the agent",
        seen.trace_id.expect("otel_app reported no trace id"),
        |spans| {
            spans
                .iter()
                .find(|s| s.service.as_deref() == Some(OTEL_SERVICE) && s.span_id == span_id)
                .cloned()
        },
    )
}

/// Prove the OpenTelemetry backend exported nothing for the trace it reported in `seen`: the
/// SDK said it was not recording (so no span processor ever saw the span), and a kept request
/// sent to the app afterwards (straight, so no stitch setting can drop it) has reached the
/// agent while the dropped trace still has no span there.
fn assert_otel_exported_nothing(peers: &Peers, seen: &Seen) {
    let trace_id = seen.trace_id.expect("otel_app reported no trace id");
    assert_eq!(
        seen.sampled,
        Some(false),
        "OTel span sampled: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.recording,
        Some(false),
        "OTel span recording: {:?}",
        seen.raw
    );
    let marker = Rum::random();
    let after = peers
        .otel
        .call("/marker", &header_refs(&marker.tracecontext(true)));
    assert_eq!(
        after.trace_id,
        Some(marker.trace_id_128()),
        "{:?}",
        after.raw
    );
    otel_server_span(peers, &after);
    let leaked = peers.agent.otlp_trace(trace_id);
    assert!(
        leaked.is_empty(),
        "the OpenTelemetry backend exported spans of dropped trace {trace_id:032x}: {leaked:#?}"
    );
}

fn traceparent_flags(seen: &Seen) -> &str {
    let tp = seen
        .header("traceparent")
        .unwrap_or_else(|| panic!("no traceparent reached the backend: {:?}", seen.headers));
    tp.rsplit('-').next().unwrap_or("")
}

/// The `s:` value of the `dd` member of the tracestate the backend received.
fn tracestate_priority(seen: &Seen) -> Option<String> {
    let ts = seen.header("tracestate")?;
    let dd = ts
        .split(',')
        .map(str::trim)
        .find_map(|m| m.strip_prefix("dd="))?;
    dd.split(';')
        .find_map(|kv| kv.strip_prefix("s:"))
        .map(str::to_string)
}

#[test]
fn peers_report_straight_to_the_test_agent() {
    // The harness itself, without stitch: each app's span reaches the agent, and each tracer
    // makes the decisions the other tests rely on.
    let peers = shared();

    let rum = Rum::random();
    let dd = peers.dd.call("/direct", &header_refs(&rum.datadog(true)));
    assert_eq!(dd.trace_id, Some(rum.trace_id_128()), "{:?}", dd.raw);
    assert_eq!(dd.parent_id, Some(rum.parent_id));
    assert_eq!(dd.sampling_priority, Some(1));
    let span = dd_server_span(peers, &dd);
    assert_eq!(span.parent_id, rum.parent_id);
    assert_eq!(span.priority(), Some(1.0));
    assert_eq!(span.meta.get("_dd.origin").map(String::as_str), Some("rum"));

    let dropped = Rum::random();
    let dd = peers
        .dd
        .call("/direct", &header_refs(&dropped.datadog(false)));
    assert_eq!(dd.sampling_priority, Some(0));
    assert_eq!(dd_server_span(peers, &dd).priority(), Some(0.0));

    let rum = Rum::random();
    let otel = peers
        .otel
        .call("/direct", &header_refs(&rum.tracecontext(true)));
    assert_eq!(otel.trace_id, Some(rum.trace_id_128()), "{:?}", otel.raw);
    assert_eq!((otel.sampled, otel.recording), (Some(true), Some(true)));
    let span = otel_server_span(peers, &otel);
    assert_eq!(span.parent_span_id, rum.parent_id);
    assert_eq!(span.kind, "SPAN_KIND_SERVER");

    let dropped = Rum::random();
    let otel = peers
        .otel
        .call("/direct", &header_refs(&dropped.tracecontext(false)));
    assert_eq!((otel.sampled, otel.recording), (Some(false), Some(false)));
}

#[test]
fn rum_kept_request_is_kept_on_both_backends_with_the_browsers_trace_id() {
    let peers = shared();
    let stitch = stitch(peers, DEFAULT_SAMPLING);

    // The datadog propagator only: the OpenTelemetry backend can learn the trace from stitch's
    // translation and nowhere else.
    let rum = Rum::random();
    let dd = call(&stitch, "/dd/kept", &rum.datadog(true));
    assert_eq!(dd.trace_id, Some(rum.trace_id_128()), "{:?}", dd.raw);
    assert_eq!(dd.sampling_priority, Some(1), "{:?}", dd.raw);
    assert_eq!(dd.origin.as_deref(), Some("rum"));
    assert_eq!(dd.header("x-datadog-sampling-priority"), Some("1"));
    assert_eq!(traceparent_flags(&dd), "01");
    let span = dd_server_span(peers, &dd);
    assert_eq!(span.trace_id, rum.trace_id);
    assert_eq!(span.trace_id_128(), rum.trace_id_128());
    assert_eq!(span.priority(), Some(1.0));
    assert_eq!(span.meta.get("_dd.origin").map(String::as_str), Some("rum"));

    let rum = Rum::random();
    let otel = call(&stitch, "/otel/kept", &rum.datadog(true));
    assert_eq!(otel.trace_id, Some(rum.trace_id_128()), "{:?}", otel.raw);
    assert_eq!(traceparent_flags(&otel), "01");
    assert_eq!((otel.sampled, otel.recording), (Some(true), Some(true)));
    assert_eq!(tracestate_priority(&otel).as_deref(), Some("1"));
    let span = otel_server_span(peers, &otel);
    assert_eq!(span.trace_id, rum.trace_id_128());
    assert_eq!(span.parent_span_id, otel.parent_id.unwrap_or(0));
}

#[test]
fn rum_dropped_request_stays_dropped_on_both_backends() {
    let peers = shared();
    let stitch = stitch(peers, DEFAULT_SAMPLING);

    // `traceContextInjection: 'all'`, not sampled: priority 0, flag 00, dd=s:0;o:rum.
    let rum = Rum::random();
    let dd = call(&stitch, "/dd/dropped", &rum.default_propagators(false));
    assert_eq!(dd.trace_id, Some(rum.trace_id_128()), "{:?}", dd.raw);
    assert_eq!(dd.sampling_priority, Some(0), "{:?}", dd.raw);
    assert_eq!(dd.header("x-datadog-sampling-priority"), Some("0"));
    assert_eq!(traceparent_flags(&dd), "00");
    assert_eq!(dd_server_span(peers, &dd).priority(), Some(0.0));

    let rum = Rum::random();
    let otel = call(&stitch, "/otel/dropped", &rum.default_propagators(false));
    assert_eq!(otel.trace_id, Some(rum.trace_id_128()), "{:?}", otel.raw);
    assert_eq!(traceparent_flags(&otel), "00");
    assert_eq!(tracestate_priority(&otel).as_deref(), Some("0"));
    assert_otel_exported_nothing(peers, &otel);
}

#[test]
fn browser_request_without_context_is_dropped_with_missing_decision_drop() {
    let peers = shared();
    let stitch = stitch(peers, DEFAULT_SAMPLING);
    let browser = vec![("origin".to_string(), ALLOWED_ORIGIN.to_string())];

    let dd = call(&stitch, "/dd/untraced", &browser);
    assert_eq!(dd.sampling_priority, Some(0), "{:?}", dd.raw);
    assert_eq!(dd.header("x-datadog-sampling-priority"), Some("0"));
    assert_eq!(traceparent_flags(&dd), "02");
    assert_eq!(dd_server_span(peers, &dd).priority(), Some(0.0));

    let otel = call(&stitch, "/otel/untraced", &browser);
    assert_eq!(traceparent_flags(&otel), "02");
    assert_otel_exported_nothing(peers, &otel);

    // Controls: without an allowed Origin the same empty request is server-to-server, and the
    // edge sampler (rate 1.0) keeps it.
    for headers in [
        vec![],
        vec![("origin".to_string(), "http://elsewhere.example".to_string())],
    ] {
        let dd = call(&stitch, "/dd/server", &headers);
        assert!(
            dd.sampling_priority.is_some_and(|p| p > 0),
            "{headers:?}: {:?}",
            dd.raw
        );
        assert!(dd_server_span(peers, &dd)
            .priority()
            .is_some_and(|p| p > 0.0));
        let otel = call(&stitch, "/otel/server", &headers);
        assert_eq!(traceparent_flags(&otel), "03", "{headers:?}");
        assert_eq!(otel.recording, Some(true));
        otel_server_span(peers, &otel);
    }
}

#[test]
fn claimed_user_keep_from_an_untrusted_client_restarts_the_trace() {
    let peers = shared();
    // 127.0.0.1 is outside the trusted range; the edge sampler drops everything it decides,
    // so a kept trace here could only come from the client's claim.
    let untrusted = stitch(
        peers,
        r#"sample_rate = 0.0
missing_decision = "drop"
trust = ["10.0.0.0/8"]
max_incoming_priority = 2"#,
    );
    let rum = Rum::random();
    let dd = call(&untrusted, "/dd/liar", &rum.datadog_priority(2));
    let restarted = dd.trace_id.expect("no trace id");
    assert_ne!(
        restarted,
        rum.trace_id_128(),
        "the untrusted context was continued"
    );
    assert_ne!(dd.parent_id, Some(rum.parent_id));
    assert!(dd.sampling_priority.is_some_and(|p| p <= 0), "{:?}", dd.raw);
    assert!(dd_server_span(peers, &dd)
        .priority()
        .is_some_and(|p| p <= 0.0));
    assert!(
        peers
            .agent
            .dd_trace(rum.trace_id)
            .iter()
            .all(|s| s.service != DD_SERVICE),
        "the dd-trace backend reported spans in the client's trace"
    );

    let rum = Rum::random();
    let otel = call(&untrusted, "/otel/liar", &rum.datadog_priority(2));
    assert_ne!(otel.trace_id, Some(rum.trace_id_128()), "{:?}", otel.raw);
    assert_eq!(traceparent_flags(&otel), "02");
    assert_otel_exported_nothing(peers, &otel);

    // Control: the same claim from a trusted address is honoured as sent.
    let trusted = stitch(
        peers,
        r#"sample_rate = 0.0
missing_decision = "drop"
trust = ["127.0.0.0/8"]
max_incoming_priority = 2"#,
    );
    let rum = Rum::random();
    let dd = call(&trusted, "/dd/honest", &rum.datadog_priority(2));
    assert_eq!(dd.trace_id, Some(rum.trace_id_128()), "{:?}", dd.raw);
    assert_eq!(dd.sampling_priority, Some(2));
    assert_eq!(dd_server_span(peers, &dd).priority(), Some(2.0));
    let otel = call(&trusted, "/otel/honest", &rum.datadog_priority(2));
    assert_eq!(otel.trace_id, Some(rum.trace_id_128()));
    assert_eq!(tracestate_priority(&otel).as_deref(), Some("2"));
    assert_eq!(otel.recording, Some(true));
}

#[test]
fn claimed_user_keep_is_capped_by_max_incoming_priority() {
    let peers = shared();
    let stitch = stitch(
        peers,
        r#"sample_rate = 1.0
missing_decision = "drop"
trust = "any"
max_incoming_priority = 1"#,
    );
    let rum = Rum::random();
    let dd = call(&stitch, "/dd/capped", &rum.datadog_priority(2));
    assert_eq!(dd.trace_id, Some(rum.trace_id_128()), "{:?}", dd.raw);
    assert_eq!(dd.header("x-datadog-sampling-priority"), Some("1"));
    assert_eq!(dd.sampling_priority, Some(1), "{:?}", dd.raw);
    assert_eq!(dd_server_span(peers, &dd).priority(), Some(1.0));

    let rum = Rum::random();
    let otel = call(&stitch, "/otel/capped", &rum.datadog_priority(2));
    assert_eq!(otel.trace_id, Some(rum.trace_id_128()), "{:?}", otel.raw);
    assert_eq!(traceparent_flags(&otel), "01");
    assert_eq!(tracestate_priority(&otel).as_deref(), Some("1"));
    assert_eq!(otel.recording, Some(true));
    otel_server_span(peers, &otel);
}
