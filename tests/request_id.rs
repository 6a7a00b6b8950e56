//! `X-Request-Id` through the proxy (issue 18): kept when valid, generated when missing,
//! replaced when oversized or invisible, sent upstream and back to the client, written to the
//! access log and onto the edge span (checked at a real `ddapm-test-agent`); off per route.

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::time::{Duration, Instant};

use common::*;

fn config(up: &Upstream, extra: &str) -> String {
    format!(
        "{}{extra}[access_log]\nenabled = true\nformat = \"json\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n\
         [upstream.gone]\nservers = [\"{}\"]\n\n\
         [[route]]\nname = \"app\"\npath = \"/app\"\nupstream = \"app\"\n\n\
         [[route]]\nname = \"plain\"\npath = \"/plain\"\nupstream = \"app\"\nrequest_id = false\n\n\
         [[route]]\nname = \"down\"\npath = \"/down\"\nupstream = \"gone\"\n\n\
         [[route]]\nname = \"echo\"\npath = \"/echo\"\nupstream = \"builtin:echo\"\n",
        base_config(),
        up.addr,
        dead_addr()
    )
}

/// The `request_id` of the access log line for `path`, waiting for it (it is written once the
/// response is done).
fn logged_id(s: &Stitch, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = s.stdout_lines.lock().unwrap().clone();
        let found = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["path"] == path);
        if let Some(v) = found {
            return v["request_id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line for {path}: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn ids(s: &Stitch, outcome: &str) -> f64 {
    metric(
        &s.metrics(),
        "stitch_request_ids_total",
        &[("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

#[test]
fn kept_generated_replaced_and_seen_everywhere() {
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, ""));

    // Kept: the client's id goes upstream, comes back, and is logged.
    let r = get(&s.url("/app/kept"), &[("x-request-id", "ticket-4711")]).unwrap();
    assert_eq!(r.header_all("x-request-id"), ["ticket-4711"]);
    assert_eq!(up.last().header("x-request-id"), Some("ticket-4711"));
    assert_eq!(logged_id(&s, "/app/kept"), "ticket-4711");

    // Generated: a UUID, the same one upstream, in the response and in the log.
    let r = get(&s.url("/app/new"), &[]).unwrap();
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(is_uuid_v4(&id), "{id}");
    assert_eq!(up.last().header("x-request-id"), Some(id.as_str()));
    assert_eq!(logged_id(&s, "/app/new"), id);
    let again = get(&s.url("/app/new2"), &[]).unwrap();
    assert_ne!(
        again.header("x-request-id"),
        Some(id.as_str()),
        "one id per request"
    );

    // Oversized (201 characters) or with a space: replaced by a fresh id.
    let long = "a".repeat(201);
    for (path, bad) in [("/app/long", long.as_str()), ("/app/space", "a b")] {
        let r = get(&s.url(path), &[("x-request-id", bad)]).unwrap();
        let id = r.header("x-request-id").unwrap();
        assert!(is_uuid_v4(id), "{path}: {id}");
        let sent = up.last();
        assert_eq!(sent.header("x-request-id"), Some(id), "{path}");
        assert_eq!(
            sent.headers
                .iter()
                .filter(|(k, _)| k == "x-request-id")
                .count(),
            1,
            "{path}: the client's value is not sent on"
        );
    }
    // 200 characters is still kept.
    let edge = "b".repeat(200);
    let r = get(&s.url("/app/edge"), &[("x-request-id", &edge)]).unwrap();
    assert_eq!(r.header("x-request-id"), Some(edge.as_str()));

    assert_eq!(ids(&s, "kept"), 2.0);
    assert_eq!(ids(&s, "generated"), 2.0);
    assert_eq!(ids(&s, "replaced"), 2.0);
}

#[test]
fn stitchs_own_answers_carry_the_id_and_an_upstream_id_is_replaced() {
    let up = Upstream::with(Behaviour {
        status: 200,
        headers: vec![("x-request-id".into(), "upstream-made".into())],
        ..Default::default()
    });
    let s = Stitch::start(&config(&up, ""));
    let r = get(&s.url("/app/x"), &[("x-request-id", "mine")]).unwrap();
    assert_eq!(
        r.header_all("x-request-id"),
        ["mine"],
        "the id stitch logged"
    );
    let r = get(&s.url("/down/x"), &[("x-request-id", "t-502")]).unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-request-id"), Some("t-502"));
    let r = get(&s.url("/echo/x"), &[("x-request-id", "t-echo")]).unwrap();
    assert_eq!(r.header("x-request-id"), Some("t-echo"));
    assert_eq!(r.json()["headers"]["x-request-id"], "t-echo");
}

#[test]
fn off_per_route() {
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, ""));
    let r = get(&s.url("/plain/a"), &[]).unwrap();
    assert_eq!(r.header("x-request-id"), None);
    assert_eq!(up.last().header("x-request-id"), None, "none generated");
    assert_eq!(logged_id(&s, "/plain/a"), "");
    // A client's id passes through untouched, even one stitch would replace.
    let long = "c".repeat(300);
    get(&s.url("/plain/b"), &[("x-request-id", &long)]).unwrap();
    assert_eq!(up.last().header("x-request-id"), Some(long.as_str()));
    assert_eq!(
        ids(&s, "generated") + ids(&s, "kept") + ids(&s, "replaced"),
        0.0
    );
}

/// The id and the client address stitch found are on the edge span the Datadog Agent gets.
#[test]
fn the_edge_span_carries_the_id_and_the_client() {
    let agent = peers::TestAgent::start();
    let up = Upstream::start();
    let extra = format!(
        "[export]\nflush_interval_ms = 50\n\n[export.datadog]\nagent_url = \"{}\"\n\n",
        agent.url()
    );
    let cfg = config(&up, &extra).replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let s = Stitch::start(&cfg);
    let trace_id: u64 = 0x5eed_0000_0000_0000 | u64::from(std::process::id());
    let r = get(
        &s.url("/app/span"),
        &[
            ("x-request-id", "ticket-span-1"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-datadog-trace-id", &trace_id.to_string()),
            ("x-datadog-parent-id", "5"),
            ("x-datadog-sampling-priority", "1"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let span = agent.wait_dd("stitch's edge span", trace_id, |spans| {
        spans.iter().find(|s| s.name == "stitch.request").cloned()
    });
    let meta = |k: &str| span.meta.get(k).map(String::as_str);
    assert_eq!(
        meta("http.request.headers.x-request-id"),
        Some("ticket-span-1"),
        "{span:#?}"
    );
    assert_eq!(meta("http.client_ip"), Some("203.0.113.7"), "{span:#?}");
}
