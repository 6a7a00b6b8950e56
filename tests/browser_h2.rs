//! A browser over HTTPS and HTTP/2 end to end: headless Chromium loads a page from
//! `https://app.test` through stitch, and the real `@datadog/browser-rum` SDK in it calls
//! `https://api.test/api` through the same stitch listener, cross-origin: Chromium's preflight
//! is answered at the edge, the traced call reaches the backend with the trace headers, and both
//! the page and the call go over h2 (Resource Timing's `nextHopProtocol`).
//!
//! Each name has its own certificate from a per-test CA (SNI picks it); Chromium maps both
//! names to 127.0.0.1 and trusts exactly those two keys for this run
//! (`--ignore-certificate-errors-spki-list`), so no system trust store is touched.
//!
//! Needs `.ci/setup test` (Debian's chromium, `npm ci` in tests/browser, the openssl CLI).

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/pki.rs"]
mod pki;

use std::time::Duration;

use browser::{browser_with_args, PageServer};
use common::{metric, Behaviour, Stitch, Upstream};
use pki::{Leaf, Pki};
use serde_json::json;

/// base64(SHA-256(SubjectPublicKeyInfo)) of a certificate: what Chromium's SPKI list takes.
fn spki_hash(leaf: &Leaf) -> String {
    let pem = std::fs::read(&leaf.cert).unwrap();
    let cert = openssl::x509::X509::from_pem(&pem).unwrap();
    let der = cert.public_key().unwrap().public_key_to_der().unwrap();
    openssl::base64::encode_block(&openssl::sha::sha256(&der))
}

#[test]
fn rum_page_over_https_calls_the_api_through_stitch_over_h2_with_its_trace() {
    let pki = Pki::new();
    let app = pki.leaf("app", "app.test", &["app.test"], 2);
    let api = pki.leaf("api", "api.test", &["api.test"], 2);
    let page = PageServer::start();
    // Timing-Allow-Origin lets the page read the cross-origin call's timing (its protocol).
    let backend = Upstream::with(Behaviour {
        status: 200,
        headers: vec![("timing-allow-origin".into(), "*".into())],
        ..Default::default()
    });
    let cert = |l: &Leaf| {
        format!(
            "{{ cert_file = {:?}, key_file = {:?} }}",
            l.cert.display().to_string(),
            l.key.display().to_string()
        )
    };
    let config = format!(
        "[server]\nthreads = 1\nshutdown_timeout_seconds = 1\n\n\
         [[server.listener]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [{}, {}] }}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream.pages]\nservers = [\"{}\"]\n\n\
         [upstream.api]\nservers = [\"{}\"]\n\n\
         [cors.web]\nallowed_origins = [\"~https://app\\\\.test:[0-9]+\"]\n\n\
         [[route]]\nname = \"pages\"\nhost = \"app.test\"\npath = \"/\"\nupstream = \"pages\"\n\n\
         [[route]]\nname = \"api\"\nhost = \"api.test\"\npath = \"/api\"\nupstream = \"api\"\ncors = \"web\"\n",
        cert(&app),
        cert(&api),
        page.addr,
        backend.addr,
    );
    let s = Stitch::start(&config);
    let port = s.proxy.port();
    let chromium = browser_with_args(&[
        "--host-resolver-rules=MAP app.test 127.0.0.1, MAP api.test 127.0.0.1".to_string(),
        format!(
            "--ignore-certificate-errors-spki-list={},{}",
            spki_hash(&app),
            spki_hash(&api)
        ),
    ]);
    let (site, api_origin) = (
        format!("https://app.test:{port}"),
        format!("https://api.test:{port}"),
    );
    let target = format!("{api_origin}/api/hello");
    let within = Duration::from_secs(30);
    let run = chromium.run(
        &format!("{site}/pages/rum.html"),
        "rumFetch",
        json!({
            "targets": [target],
            "traced_origin": api_origin,
            "propagator_types": ["datadog", "tracecontext"],
            "intake": format!("{site}/intake"),
            "recorded": format!("{site}/recorded"),
            "baggage": false,
            "timeout_ms": within.as_millis() as u64,
        }),
        within + Duration::from_secs(5),
    );
    let value = run.value().clone();
    let trace = &value["traces"][0];
    assert_eq!(value["page_protocol"], "h2", "the page over h2: {value}");
    assert_eq!(
        trace["fetch"]["status"],
        200,
        "{value}\n{}",
        run.diagnostics()
    );
    assert_eq!(trace["protocol"], "h2", "the traced call over h2: {value}");

    // The preflight (the tracing headers are not CORS-safelisted) was stitch's to answer.
    let m = s.metrics();
    let preflights = metric(
        &m,
        "stitch_cors_preflight_total",
        &[("route", "api"), ("result", "allowed")],
    );
    assert_eq!(preflights, Some(1.0), "{m}");
    let calls: Vec<_> = backend.requests();
    assert_eq!(
        calls.len(),
        1,
        "only the call reached the backend: {calls:?}"
    );

    // The backend's trace id is RUM's: the resource event at the intake and the headers the
    // backend received carry one trace.
    let event = page
        .wait_event(Duration::from_secs(10), |e| {
            e["type"] == "resource" && e["resource"]["url"] == target
        })
        .unwrap_or_else(|| panic!("no resource event at the intake: {:?}", page.events()));
    assert_eq!(
        event["resource"]["protocol"], "h2",
        "RUM saw h2 too: {event}"
    );
    let rum_trace: u64 = event["_dd"]["trace_id"].as_str().unwrap().parse().unwrap();
    let call = &calls[0];
    assert_eq!(
        call.header("x-datadog-trace-id"),
        Some(&*rum_trace.to_string())
    );
    let traceparent = call.header("traceparent").unwrap();
    assert!(
        traceparent.contains(&format!("{rum_trace:016x}-")),
        "{traceparent} carries RUM's trace {rum_trace:016x}"
    );
    assert_eq!(call.header("x-datadog-origin"), Some("rum"));
}
