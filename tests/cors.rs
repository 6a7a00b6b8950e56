//! CORS at the edge over HTTP, one test per row of the decision: allowed preflight, refused
//! origin, refused header, augment mode, and an upstream that sets its own CORS headers.

mod common;

use common::*;

const ORIGIN: &str = "https://app.example.com";

fn stitch_with(up: &Upstream, policy_extra: &str) -> Stitch {
    let cfg = format!(
        "{}[upstream.app]\nservers = [\"{}\"]\n\n\
         [cors.web]\nallowed_origins = [\"{ORIGIN}\", \"https://*.example.org\"]\nallow_headers = [\"x-app\"]\nexpose_headers = [\"x-request-id\"]\nmax_age = 600\n{policy_extra}\n\n\
         [[route]]\nname = \"api\"\npath = \"/\"\nupstream = \"app\"\ncors = \"web\"\n",
        base_config(),
        up.addr
    );
    Stitch::start(&cfg)
}

fn preflight(s: &Stitch, origin: &str, headers: &str) -> Response {
    request(
        "OPTIONS",
        &s.url("/api/orders"),
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", headers),
        ],
        b"",
    )
    .unwrap()
}

#[test]
fn allowed_preflight_is_answered_at_the_edge_with_the_tracing_headers() {
    let up = Upstream::start();
    let s = stitch_with(&up, "");
    let r = preflight(
        &s,
        ORIGIN,
        "x-datadog-trace-id,x-datadog-parent-id,traceparent,tracestate,x-app",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "x-datadog-trace-id",
        "x-datadog-parent-id",
        "x-datadog-origin",
        "x-datadog-sampling-priority",
        "x-datadog-tags",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "baggage",
        "x-app",
    ] {
        assert!(
            allowed.split(',').any(|a| a.trim() == h),
            "{h} missing from {allowed}"
        );
    }
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let vary = r.header("vary").unwrap().to_ascii_lowercase();
    for v in [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    ] {
        assert!(vary.contains(v), "vary {vary}");
    }
    assert!(
        up.requests().is_empty(),
        "a preflight answered at the edge never reaches the upstream"
    );
    let m = s.metrics();
    assert!(
        m.contains("stitch_cors_preflight_total{result=\"allowed\",route=\"api\"} 1"),
        "{m}"
    );
    // Subdomain wildcard.
    let r = preflight(&s, "https://shop.example.org", "traceparent");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://shop.example.org")
    );
}

#[test]
fn preflight_from_an_origin_not_allowed_is_refused_without_cors_headers() {
    let up = Upstream::start();
    let s = stitch_with(&up, "");
    for origin in [
        "https://evil-example.com",
        "https://app.example.com.evil.net",
        "http://app.example.com",
        "https://example.org",
        "null",
    ] {
        let r = preflight(&s, origin, "traceparent");
        assert_eq!(r.status, 403, "{origin}");
        assert!(
            !r.headers
                .iter()
                .any(|(k, _)| k.starts_with("access-control-")),
            "{origin}: {:?}",
            r.headers
        );
    }
    assert!(up.requests().is_empty());
    assert!(s
        .metrics()
        .contains("stitch_cors_preflight_total{result=\"refused_origin\",route=\"api\"} 5"));
}

#[test]
fn a_header_neither_app_nor_tracing_is_left_out_and_counted() {
    let up = Upstream::start();
    let s = stitch_with(&up, "");
    let r = preflight(&s, ORIGIN, "traceparent, x-secret-debug");
    assert_eq!(r.status, 204);
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(!allowed.contains("x-secret-debug"), "{allowed}");
    assert!(allowed.contains("traceparent"));
    let m = s.metrics();
    assert!(
        m.contains("stitch_cors_refused_header_total{header=\"x-secret-debug\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stitch_cors_preflight_total{result=\"allowed_partial\",route=\"api\"} 1"),
        "{m}"
    );
}

#[test]
fn augment_mode_forwards_the_preflight_and_adds_the_tracing_headers() {
    let up = Upstream::with(Behaviour {
        status: 204,
        body: Some(String::new()),
        headers: vec![
            ("access-control-allow-origin".into(), ORIGIN.into()),
            ("access-control-allow-methods".into(), "GET, POST".into()),
            (
                "access-control-allow-headers".into(),
                "content-type, x-app".into(),
            ),
        ],
        ..Default::default()
    });
    let s = stitch_with(&up, "preflight = \"augment\"");
    let r = preflight(&s, ORIGIN, "traceparent, x-datadog-trace-id, content-type");
    assert_eq!(r.status, 204);
    assert_eq!(
        up.requests().len(),
        1,
        "the upstream owns its CORS and saw the preflight"
    );
    assert_eq!(up.last().method, "OPTIONS");
    assert_eq!(r.header_all("access-control-allow-origin"), vec![ORIGIN]);
    let allowed: Vec<String> = r
        .header_all("access-control-allow-headers")
        .join(",")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in [
        "content-type",
        "x-app",
        "traceparent",
        "x-datadog-trace-id",
        "tracestate",
    ] {
        assert_eq!(
            allowed.iter().filter(|a| *a == h).count(),
            1,
            "{h} once in {allowed:?}"
        );
    }
}

#[test]
fn actual_responses_carry_each_cors_header_once_even_when_the_upstream_set_them() {
    let up = Upstream::with(Behaviour {
        status: 200,
        headers: vec![
            ("access-control-allow-origin".into(), "*".into()),
            ("access-control-allow-origin".into(), ORIGIN.into()),
            ("vary".into(), "Accept-Encoding".into()),
            ("x-request-id".into(), "abc".into()),
        ],
        ..Default::default()
    });
    let s = stitch_with(&up, "");
    let r = get(
        &s.url("/api/orders"),
        &[("origin", ORIGIN), ("x-datadog-trace-id", "42")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header_all("access-control-allow-origin"),
        vec![ORIGIN],
        "{:?}",
        r.headers
    );
    let vary = r.header_all("vary").join(",").to_ascii_lowercase();
    assert_eq!(vary.matches("origin").count(), 1, "{vary}");
    assert!(vary.contains("accept-encoding"));
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase()
        .contains("x-request-id"));
    // An origin not allowed gets no CORS decoration from stitch.
    let r = get(
        &s.url("/api/orders"),
        &[("origin", "https://evil.example.net")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        !r.header_all("access-control-allow-origin")
            .contains(&"https://evil.example.net"),
        "{:?}",
        r.headers
    );
}

#[test]
fn credentials_are_sent_with_the_echoed_origin_never_a_star() {
    let up = Upstream::start();
    let s = stitch_with(&up, "allow_credentials = true");
    let r = get(&s.url("/x"), &[("origin", ORIGIN)]).unwrap();
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = preflight(&s, ORIGIN, "traceparent");
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

/// Responses stitch writes itself carry the route's CORS headers too: without them a browser
/// hides a 502 from the page, and the echo route could not be called cross-origin.
#[test]
fn stitchs_own_responses_carry_the_cors_headers() {
    let cfg = format!(
        "{}[upstream.gone]\nservers = [\"{}\"]\n\n\
         [cors.web]\nallowed_origins = [\"{ORIGIN}\"]\nexpose_headers = [\"x-request-id\"]\nallow_credentials = true\n\n\
         [[route]]\nname = \"down\"\npath = \"/down\"\nupstream = \"gone\"\ncors = \"web\"\n\n\
         [[route]]\nname = \"echo\"\npath = \"/echo\"\nupstream = \"builtin:echo\"\ncors = \"web\"\n",
        base_config(),
        dead_addr()
    );
    let s = Stitch::start(&cfg);
    for (path, status) in [("/down/x", 502), ("/echo/x", 200)] {
        let r = get(&s.url(path), &[("origin", ORIGIN)]).unwrap();
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert_eq!(
            r.header_all("access-control-allow-origin"),
            vec![ORIGIN],
            "{path}"
        );
        assert_eq!(
            r.header("access-control-allow-credentials"),
            Some("true"),
            "{path}"
        );
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("x-request-id"),
            "{path}"
        );
        assert_eq!(r.header("vary"), Some("Origin"), "{path}");
        // an origin the policy does not allow gets none of them
        let r = get(&s.url(path), &[("origin", "https://evil.example.net")]).unwrap();
        assert!(
            !r.headers
                .iter()
                .any(|(k, _)| k.starts_with("access-control-")),
            "{path}: {:?}",
            r.headers
        );
    }
}

#[test]
fn stitch_check_refuses_a_star_with_credentials() {
    let (ok, out) = stitch_check(
        "[cors.web]\nallowed_origins = [\"*\"]\nallow_credentials = true\n\n[[route]]\npath = \"/\"\nupstream = \"builtin:echo\"\ncors = \"web\"\n",
    );
    assert!(!ok);
    assert!(out.contains(":2: cors.web:"), "{out}");
    assert!(out.contains("credentials"), "{out}");
}

#[test]
fn refused_header_labels_are_capped_against_clients_that_invent_names() {
    let up = Upstream::start();
    let s = stitch_with(&up, "");
    for i in 0..80 {
        let r = preflight(&s, ORIGIN, &format!("traceparent, x-made-up-{i}"));
        assert_eq!(r.status, 204);
    }
    let m = s.metrics();
    let series = m
        .lines()
        .filter(|l| l.starts_with("stitch_cors_refused_header_total{"))
        .count();
    assert_eq!(series, 65, "64 names and `other`:\n{m}");
    assert!(
        m.contains("stitch_cors_refused_header_total{header=\"other\"} 16"),
        "{m}"
    );
    assert!(
        m.contains("stitch_cors_refused_header_total{header=\"x-made-up-0\"} 1"),
        "{m}"
    );
}
