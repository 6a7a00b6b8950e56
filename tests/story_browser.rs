//! The whole story (issue 6) as a user sees it: headless Chromium loads a page with the real
//! `@datadog/browser-rum` SDK (its intake a local recorder), and the page calls a dd-trace
//! backend and an OpenTelemetry backend through stitch. The RUM resource event, stitch's edge
//! span (at a real `ddapm-test-agent`, on the Datadog and the OTLP path) and each backend's span
//! carry one trace id; the edge span is the child of the RUM span and the parent of the
//! backend's.
//!
//! Needs `.ci/setup test` (the peers venv, Debian's chromium, `npm ci` in tests/browser).

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/peers.rs"]
mod peers;

use std::time::Duration;

use browser::{rum_fetch_all, warm_up, PageServer, RumTrace};
use common::{base_config, Response, Stitch};
use peers::{shared, Peers, Seen, DD_SERVICE, OTEL_SERVICE};

const SERVICE: &str = "stitch-story";

/// stitch exporting to the test agent on both paths; `/dd` goes to the dd-trace app with the
/// default profile, `/otel` to the OpenTelemetry app injecting tracecontext only; CORS allows
/// exactly the page's origin.
fn stitch(peers: &Peers, page_origin: &str) -> Stitch {
    let config = format!(
        r#"{base}
[service]
name = "{SERVICE}"
env = "story"

[export]
flush_interval_ms = 50

[export.datadog]
agent_url = "{agent}"

[export.otlp]
endpoint = "{otlp}"

[propagation.otel]
extract = ["datadog", "tracecontext", "b3multi", "b3", "baggage"]
inject = ["tracecontext", "baggage"]

[cors.web]
allowed_origins = ["{page_origin}"]

[upstream.dd]
servers = ["{dd}"]

[upstream.otel]
servers = ["{otel}"]

[[route]]
name = "dd"
path = "/dd"
upstream = "dd"
cors = "web"

[[route]]
name = "otel"
path = "/otel"
upstream = "otel"
propagation = "otel"
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

/// What the backend reported, read from the body the page received.
fn seen(trace: &RumTrace) -> Seen {
    assert_eq!(
        trace.fetch["ok"],
        true,
        "the SDK's fetch failed in the browser: {}\n{}",
        trace.fetch,
        trace.run.diagnostics()
    );
    Seen::from_response(&Response {
        status: trace.fetch["status"].as_u64().unwrap_or(0) as u16,
        headers: Vec::new(),
        body: trace.fetch["body"].as_str().unwrap_or("").to_string(),
    })
}

fn dec(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|e| panic!("not a decimal id ({e}): {s}"))
}

#[test]
fn a_rum_resource_is_the_root_of_the_edge_span_and_both_backend_spans() {
    warm_up();
    let peers = shared();
    let page = PageServer::start();
    let s = stitch(peers, &page.origin());
    let targets = [s.url("/dd/story"), s.url("/otel/story")];
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    // The SDK's default propagators.
    let traces = rum_fetch_all(
        &page,
        &format!("http://{}", s.proxy),
        &targets,
        &["tracecontext", "datadog"],
        true,
        Duration::from_secs(30),
    );

    for (trace, backend) in traces.iter().zip(["dd", "otel"]) {
        let trace_id = dec(&trace.trace_id());
        let rum_span = dec(&trace.span_id());
        let seen = seen(trace);
        assert_eq!(seen.app, backend);
        assert_eq!(
            seen.trace_id,
            Some(u128::from(trace_id)),
            "the {backend} backend continued the RUM trace: {:?}",
            seen.raw
        );
        assert!(
            seen.header("baggage")
                .is_some_and(|b| b.contains(&format!("session.id={}", trace.session_id))),
            "the RUM session reached the {backend} backend in baggage: {:?}",
            seen.headers
        );
        let edge = seen
            .parent_id
            .unwrap_or_else(|| panic!("the {backend} span has no parent: {:?}", seen.raw));
        assert_ne!(edge, 0);
        assert_ne!(
            edge, rum_span,
            "stitch passed the browser's span id through"
        );

        // The edge span on the Datadog path: child of the RUM span.
        let dd = peers.agent.wait_dd(
            "stitch's edge span at the Datadog intake",
            trace_id,
            |spans| spans.iter().find(|x| x.span_id == edge).cloned(),
        );
        assert_eq!(dd.service, SERVICE);
        assert_eq!(
            dd.parent_id, rum_span,
            "the edge span's parent is the RUM span"
        );
        assert_eq!(dd.meta.get("_dd.origin").map(String::as_str), Some("rum"));
        // From the APM trace back to the session: the RUM SDK's baggage `session.id`, as
        // dd-trace names its baggage tags (the default profile's `baggage_tags`).
        assert_eq!(
            dd.meta.get("baggage.session.id"),
            Some(&trace.session_id),
            "the edge span names the RUM session: {:?}",
            dd.meta
        );
        // The same span on the OTLP path.
        let otlp = peers.agent.wait_otlp(
            "stitch's edge span at the OTLP receiver",
            u128::from(trace_id),
            |spans| spans.iter().find(|x| x.span_id == edge).cloned(),
        );
        assert_eq!(otlp.parent_span_id, rum_span);
        assert_eq!(otlp.service.as_deref(), Some(SERVICE));
        assert_eq!(
            otlp.attr("baggage.session.id").and_then(|v| v.as_str()),
            Some(trace.session_id.as_str()),
            "{otlp:#?}"
        );

        // The backend's own span, in the same trace, under the edge span.
        let backend_id = seen.span_id.expect("the backend reported no span id");
        if backend == "dd" {
            let span = peers
                .agent
                .wait_dd("the dd-trace backend's span", trace_id, |spans| {
                    spans
                        .iter()
                        .find(|x| x.service == DD_SERVICE && x.span_id == backend_id)
                        .cloned()
                });
            assert_eq!(
                span.parent_id, edge,
                "dd-trace span's parent is the edge span"
            );
        } else {
            let span = peers.agent.wait_otlp(
                "the OpenTelemetry backend's span",
                u128::from(trace_id),
                |spans| {
                    spans
                        .iter()
                        .find(|x| {
                            x.service.as_deref() == Some(OTEL_SERVICE) && x.span_id == backend_id
                        })
                        .cloned()
                },
            );
            assert_eq!(
                span.parent_span_id, edge,
                "OTel span's parent is the edge span"
            );
        }
    }
    // One RUM session across both calls.
    let session = &traces[0].session_id;
    assert!(!session.is_empty());
    assert_eq!(&traces[1].session_id, session);
}
