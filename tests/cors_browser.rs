//! CORS at the edge proven in a real browser: headless Chromium loads a page from one origin and
//! calls stitch at another, with hand-written tracing headers and with the real
//! `@datadog/browser-rum` SDK; the upstream and a local RUM intake record what arrived.
//!
//! Needs `.ci/setup test` (Debian's chromium, `npm ci` in tests/browser).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use serde_json::{json, Value};

use browser::{browser, rum_fetch, warm_up, PageRun, PageServer, RumTrace};
use common::*;

/// How long a page job may take; every wait inside it is a poll on a condition.
const JOB: Duration = Duration::from_secs(20);

/// stitch in front of `upstream` on route `api` (path `/`), with CORS policy `web` allowing
/// exactly `origins` and the app header `x-app-header`.
fn stitch_for(origins: &[String], upstream: &Upstream) -> Stitch {
    stitch_with(origins, upstream, "")
}

/// [`stitch_for`] with extra lines in the `[cors.web]` policy.
fn stitch_with(origins: &[String], upstream: &Upstream, policy_extra: &str) -> Stitch {
    let list = origins
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = format!(
        "{}[upstream.backend]\nservers = [\"{}\"]\n\n\
         [cors.web]\nallowed_origins = [{list}]\nallow_headers = [\"x-app-header\"]\n\
         allow_credentials = false\nmax_age = 600\n{policy_extra}\n\
         [[route]]\nname = \"api\"\npath = \"/\"\nupstream = \"backend\"\ncors = \"web\"\n",
        base_config(),
        upstream.addr
    );
    Stitch::start(&cfg)
}

/// Requests the upstream received for `path` (any method).
fn received(up: &Upstream, path: &str) -> Vec<Recorded> {
    up.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn preflights_at(up: &Upstream) -> Vec<Recorded> {
    up.requests()
        .into_iter()
        .filter(|r| r.method == "OPTIONS")
        .collect()
}

/// `00-<32 hex trace>-<16 hex parent>-<2 hex flags>` split into its parts.
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[3].len() == 2,
        "not a version-00 traceparent: {value}"
    );
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

fn hex_u64(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("not hex ({e}): {s}"))
}

fn fetch_results(run: &PageRun) -> Vec<Value> {
    run.value().as_array().expect("an array of results").clone()
}

/// Whether the browser said in the console that CORS blocked a request.
fn cors_blocked(run: &PageRun) -> bool {
    run.console().iter().any(|l| l.contains("CORS policy"))
}

// The trace a hand-written page sends: a 128-bit id written consistently in every format.
const TRACE_HI: &str = "6a1b2c3d00000000";
const TRACE_LO: &str = "1f2e3d4c5b6a7988";
const PARENT: &str = "00f067aa0ba902b7";

fn tracing_headers() -> Value {
    let (lo, parent) = (hex_u64(TRACE_LO), hex_u64(PARENT));
    json!({
        "x-datadog-trace-id": lo.to_string(),
        "x-datadog-parent-id": parent.to_string(),
        "x-datadog-origin": "rum",
        "x-datadog-sampling-priority": "1",
        "x-datadog-tags": format!("_dd.p.tid={TRACE_HI}"),
        "traceparent": format!("00-{TRACE_HI}{TRACE_LO}-{PARENT}-01"),
        "tracestate": "dd=s:1;o:rum",
        "b3": format!("{TRACE_HI}{TRACE_LO}-{PARENT}-1"),
        "x-b3-traceid": format!("{TRACE_HI}{TRACE_LO}"),
        "x-b3-spanid": PARENT,
        "x-b3-sampled": "1",
        "baggage": "user.id=browser-test",
        "x-app-header": "yes",
    })
}

#[test]
fn fetch_with_tracing_headers_crosses_origins_and_carries_the_trace() {
    warm_up();
    let up = Upstream::start();
    let page = PageServer::start();
    let s = stitch_for(&[page.origin()], &up);
    let traced = s.url("/api/traced");
    let refused = s.url("/api/refused-header");
    let mut unknown = tracing_headers();
    unknown["x-not-allowed"] = json!("1");
    let run = browser().run(
        &page.url("/pages/plain.html"),
        "fetchAll",
        json!({ "requests": [
            { "url": traced, "headers": tracing_headers() },
            { "url": refused, "headers": unknown },
        ]}),
        JOB,
    );
    let results = fetch_results(&run);

    // Every tracing header and the app's own header pass the preflight.
    let ok = &results[0];
    assert_eq!(
        ok["ok"],
        true,
        "the traced fetch failed in the browser: {ok}\n{}",
        run.diagnostics()
    );
    assert_eq!(ok["status"], 200, "{ok}");
    let echoed: Value = serde_json::from_str(ok["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        echoed["path"], "/api/traced",
        "the page read the upstream's body"
    );

    let got = received(&up, "/api/traced");
    assert_eq!(got.len(), 1, "one actual request upstream: {got:?}");
    let r = &got[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.header("x-app-header"), Some("yes"));
    assert_eq!(
        r.header("x-datadog-trace-id"),
        Some(hex_u64(TRACE_LO).to_string().as_str()),
        "datadog trace id upstream: {r:?}"
    );
    let tp = r
        .header("traceparent")
        .unwrap_or_else(|| panic!("no traceparent upstream: {r:?}"));
    let (trace, parent, _) = traceparent(tp);
    assert_eq!(
        trace,
        format!("{TRACE_HI}{TRACE_LO}"),
        "the 128-bit trace id"
    );
    let dd_parent = r
        .header("x-datadog-parent-id")
        .unwrap_or_else(|| panic!("no x-datadog-parent-id upstream: {r:?}"));
    assert_eq!(
        hex_u64(&parent).to_string(),
        dd_parent,
        "datadog and tracecontext name the same parent upstream"
    );
    assert_ne!(hex_u64(&parent), 0);
    assert!(
        r.header("baggage")
            .is_some_and(|b| b.contains("user.id=browser-test")),
        "baggage upstream: {r:?}"
    );

    // A header that is neither the app's nor a tracing header is not allowed: the browser
    // refuses to send the request at all.
    let bad = &results[1];
    assert_eq!(bad["ok"], false, "x-not-allowed must be refused: {bad}");
    assert!(
        bad["error"].as_str().unwrap().starts_with("TypeError"),
        "{bad}"
    );
    assert!(
        run.console()
            .iter()
            .any(|l| l.contains("CORS policy") && l.contains("x-not-allowed")),
        "the browser names the refused header: {}",
        run.diagnostics()
    );
    assert!(received(&up, "/api/refused-header").is_empty());
    // "Which header broke the link" is one query away.
    let m = s.metrics();
    assert!(
        m.contains("stitch_cors_refused_header_total{header=\"x-not-allowed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stitch_cors_preflight_total{result=\"allowed\",route=\"api\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stitch_cors_preflight_total{result=\"allowed_partial\",route=\"api\"} 1"),
        "{m}"
    );

    // stitch answered both preflights itself.
    assert!(
        preflights_at(&up).is_empty(),
        "preflights reached the upstream: {:?}",
        preflights_at(&up)
    );
}

#[test]
fn an_origin_not_allowed_is_refused_in_the_browser_and_never_reaches_the_upstream() {
    warm_up();
    let up = Upstream::start();
    let allowed = PageServer::start();
    let other = PageServer::start();
    let s = stitch_for(&[allowed.origin()], &up);
    let headers = json!({ "traceparent": format!("00-{TRACE_HI}{TRACE_LO}-{PARENT}-01") });

    let refused = browser().run(
        &other.url("/pages/plain.html"),
        "fetchAll",
        json!({ "requests": [{ "url": s.url("/api/from-other"), "headers": headers }] }),
        JOB,
    );
    let r = &fetch_results(&refused)[0];
    assert_eq!(r["ok"], false, "a foreign origin got through: {r}");
    assert!(r["error"].as_str().unwrap().starts_with("TypeError"), "{r}");
    assert!(cors_blocked(&refused), "{}", refused.diagnostics());
    assert!(
        s.metrics()
            .contains("stitch_cors_preflight_total{result=\"refused_origin\",route=\"api\"} 1"),
        "{}",
        s.metrics()
    );

    // Control: the same request from the allowed origin works, so the refusal is the origin's.
    let control = browser().run(
        &allowed.url("/pages/plain.html"),
        "fetchAll",
        json!({ "requests": [{ "url": s.url("/api/from-allowed"), "headers": headers }] }),
        JOB,
    );
    let c = &fetch_results(&control)[0];
    assert_eq!(c["ok"], true, "{c}\n{}", control.diagnostics());
    assert_eq!(received(&up, "/api/from-allowed").len(), 1);

    let foreign: Vec<Recorded> = up
        .requests()
        .into_iter()
        .filter(|q| q.path == "/api/from-other" || q.header("origin") == Some(&other.origin()))
        .collect();
    assert!(
        foreign.is_empty(),
        "the upstream saw the foreign origin: {foreign:?}"
    );
    assert!(preflights_at(&up).is_empty(), "{:?}", preflights_at(&up));
}

#[test]
fn an_upstream_with_its_own_cors_headers_does_not_double_them() {
    warm_up();
    let page = PageServer::start();
    let up = Upstream::with(Behaviour {
        status: 200,
        headers: vec![
            ("access-control-allow-origin".into(), page.origin()),
            ("vary".into(), "Origin".into()),
        ],
        ..Default::default()
    });
    let s = stitch_for(&[page.origin()], &up);
    let run = browser().run(
        &page.url("/pages/plain.html"),
        "fetchAll",
        json!({ "requests": [{ "url": s.url("/api/own-cors"), "headers": tracing_headers() }] }),
        JOB,
    );
    let r = &fetch_results(&run)[0];
    // Chromium rejects a response whose Access-Control-Allow-Origin has two values.
    assert_eq!(r["ok"], true, "{r}\n{}", run.diagnostics());
    assert_eq!(r["status"], 200);
    assert_eq!(received(&up, "/api/own-cors").len(), 1);
}

#[test]
fn augment_mode_adds_the_tracing_headers_to_the_upstreams_own_preflight() {
    warm_up();
    let page = PageServer::start();
    // The upstream owns its CORS and knows nothing of tracing headers.
    let up = Upstream::with(Behaviour {
        status: 200,
        headers: vec![
            ("access-control-allow-origin".into(), page.origin()),
            ("access-control-allow-methods".into(), "GET, POST".into()),
            ("access-control-allow-headers".into(), "x-app-header".into()),
            ("vary".into(), "Origin".into()),
        ],
        ..Default::default()
    });
    let s = stitch_with(&[page.origin()], &up, "preflight = \"augment\"\n");
    let run = browser().run(
        &page.url("/pages/plain.html"),
        "fetchAll",
        json!({ "requests": [{ "url": s.url("/api/augment"), "headers": tracing_headers() }] }),
        JOB,
    );
    let r = &fetch_results(&run)[0];
    assert_eq!(r["ok"], true, "{r}\n{}", run.diagnostics());
    let got = received(&up, "/api/augment");
    let methods: Vec<&str> = got.iter().map(|q| q.method.as_str()).collect();
    assert_eq!(
        methods,
        ["OPTIONS", "GET"],
        "the upstream answered the preflight"
    );
    assert_eq!(
        got[1].header("x-datadog-trace-id"),
        Some(hex_u64(TRACE_LO).to_string().as_str())
    );
}

/// The real RUM SDK on a page of its own origin traces one fetch through stitch to a real
/// upstream. Returns what the SDK did and the upstream's record of the fetch.
fn rum_through_stitch(propagators: &[&str], baggage: bool) -> (RumTrace, Recorded) {
    warm_up();
    let up = Upstream::start();
    let page = PageServer::start();
    let s = stitch_for(&[page.origin()], &up);
    let target = s.url("/api/rum");
    let stitch_origin = format!("http://{}", s.proxy);
    let rum = rum_fetch(&page, &stitch_origin, &target, propagators, baggage, JOB);
    assert_eq!(
        rum.fetch["ok"],
        true,
        "the SDK's fetch failed: {}\n{}",
        rum.fetch,
        rum.run.diagnostics()
    );
    assert_eq!(rum.fetch["status"], 200);
    assert_eq!(
        rum.page_event["_dd"]["trace_id"], rum.intake_event["_dd"]["trace_id"],
        "the intake got the event the SDK built"
    );
    let got = received(&up, "/api/rum");
    assert_eq!(got.len(), 1, "one traced request upstream: {got:?}");
    assert!(preflights_at(&up).is_empty(), "{:?}", preflights_at(&up));
    (rum, got[0].clone())
}

#[test]
fn rum_sdk_datadog_propagator_links_its_resource_to_the_upstream_trace() {
    let (rum, upstream) = rum_through_stitch(&["datadog"], true);
    let trace_id = rum.trace_id();
    assert_eq!(
        upstream.header("x-datadog-trace-id"),
        Some(trace_id.as_str()),
        "the upstream continues the RUM trace: {upstream:?}"
    );
    assert_eq!(upstream.header("x-datadog-origin"), Some("rum"));
    // stitch also injects tracecontext for the same trace.
    let tp = upstream
        .header("traceparent")
        .unwrap_or_else(|| panic!("stitch injected no traceparent: {upstream:?}"));
    let (trace, _, _) = traceparent(tp);
    assert_eq!(hex_u64(&trace[16..]).to_string(), trace_id, "{tp}");
    // propagateTraceBaggage: the SDK's baggage crossed the preflight and reached the upstream.
    assert!(!rum.session_id.is_empty());
    assert!(
        upstream
            .header("baggage")
            .is_some_and(|b| b.contains(&format!("session.id={}", rum.session_id))),
        "baggage upstream: {upstream:?}"
    );
}

#[test]
fn rum_sdk_tracecontext_propagator_links_its_resource_to_the_upstream_trace() {
    let (rum, upstream) = rum_through_stitch(&["tracecontext"], false);
    let trace_id = rum.trace_id();
    let tp = upstream
        .header("traceparent")
        .unwrap_or_else(|| panic!("no traceparent upstream: {upstream:?}"));
    let (trace, _, _) = traceparent(tp);
    assert_eq!(
        hex_u64(&trace[16..]).to_string(),
        trace_id,
        "the traceparent's low 64 bits are the RUM trace id: {tp}"
    );
    // stitch also injects datadog headers for the same trace.
    assert_eq!(
        upstream.header("x-datadog-trace-id"),
        Some(trace_id.as_str()),
        "{upstream:?}"
    );
}
