//! The foundation through the real binary: routing, errors a user can read, the echo upstream,
//! admin endpoints and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn two_upstreams() -> (Upstream, Upstream, Stitch) {
    let a = Upstream::start();
    let b = Upstream::start();
    let cfg = format!(
        "{}[upstream.a]\nservers = [\"{}\"]\n\n[upstream.b]\nservers = [\"{}\"]\n\n\
         [[route]]\nname = \"root\"\npath = \"/\"\nupstream = \"a\"\n\n\
         [[route]]\nname = \"api\"\npath = \"/api\"\nupstream = \"b\"\n\n\
         [[route]]\nname = \"api-v2\"\npath = \"/api/v2\"\nupstream = \"a\"\n\n\
         [[route]]\nname = \"hosted\"\nhost = \"*.example.com\"\npath = \"/h\"\nupstream = \"b\"\n",
        base_config(),
        a.addr,
        b.addr
    );
    let s = Stitch::start(&cfg);
    (a, b, s)
}

#[test]
fn routes_by_longest_prefix_and_host() {
    let (a, b, s) = two_upstreams();
    let r = get(&s.url("/api/users"), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(b.last().path, "/api/users");
    get(&s.url("/api/v2/x"), &[]).unwrap();
    assert_eq!(a.last().path, "/api/v2/x");
    get(&s.url("/apix"), &[]).unwrap();
    assert_eq!(a.last().path, "/apix", "/api must not match /apix");
    let before = b.requests().len();
    get(&s.url("/h/1"), &[("host", "app.example.com")]).unwrap();
    assert_eq!(
        b.requests().len(),
        before + 1,
        "host route took the request"
    );
    get(&s.url("/h/2"), &[("host", "example.org")]).unwrap();
    assert_eq!(a.last().path, "/h/2", "other hosts fall to the root route");
}

#[test]
fn no_route_is_a_404_with_a_json_body() {
    let up = Upstream::start();
    let cfg = format!(
        "{}[upstream.a]\nservers = [\"{}\"]\n\n[[route]]\nname = \"only\"\nhost = \"api.example.com\"\npath = \"/\"\nupstream = \"a\"\n",
        base_config(),
        up.addr
    );
    let s = Stitch::start(&cfg);
    let r = get(&s.url("/x"), &[("host", "other.example.com")]).unwrap();
    assert_eq!(r.status, 404);
    let j = r.json();
    assert_eq!(j["error"], "no_route");
    assert!(j["message"].as_str().unwrap().contains("other.example.com"));
    assert!(up.requests().is_empty());
}

#[test]
fn dead_upstream_is_a_502_with_a_json_body() {
    let dead = dead_addr();
    let cfg = format!(
        "{}[upstream.gone]\nservers = [\"{dead}\"]\n\n[[route]]\nname = \"gone\"\npath = \"/\"\nupstream = \"gone\"\n",
        base_config()
    );
    let s = Stitch::start(&cfg);
    let r = get(&s.url("/x"), &[]).unwrap();
    assert_eq!(r.status, 502, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"], "upstream_unavailable");
    assert_eq!(j["route"], "gone");
    assert!(
        j["message"].as_str().unwrap().contains("connect_refused"),
        "{}",
        r.body
    );
    let m = s.metrics();
    assert!(
        m.contains("stitch_upstream_errors_total{kind=\"connect_refused\",route=\"gone\"}"),
        "{m}"
    );
    assert!(
        m.contains("stitch_requests_total{route=\"gone\",status_class=\"5xx\"} 1"),
        "{m}"
    );
}

#[test]
fn slow_upstream_is_a_504() {
    let up = Upstream::with(Behaviour {
        status: 200,
        delay: Some(Duration::from_secs(3)),
        ..Default::default()
    });
    let cfg = format!(
        "{}[upstream.slow]\nservers = [\"{}\"]\nread_timeout_ms = 300\n\n[[route]]\nname = \"slow\"\npath = \"/\"\nupstream = \"slow\"\n",
        base_config(),
        up.addr
    );
    let s = Stitch::start(&cfg);
    let t = Instant::now();
    let r = get(&s.url("/x"), &[]).unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the timeout, not the upstream, ended it"
    );
}

#[test]
fn echo_shows_the_request_as_sent_upstream() {
    let cfg = format!(
        "{}[[route]]\nname = \"echo\"\npath = \"/\"\nupstream = \"builtin:echo\"\n",
        base_config()
    );
    let s = Stitch::start(&cfg);
    let r = get(&s.url("/hello?x=1"), &[("x-custom", "yes")]).unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/hello?x=1");
    assert_eq!(j["headers"]["x-custom"], "yes");
}

#[test]
fn metrics_count_requests_and_readyz_answers() {
    let (_a, _b, s) = two_upstreams();
    for _ in 0..3 {
        assert_eq!(get(&s.url("/api/x"), &[]).unwrap().status, 200);
    }
    let m = s.metrics();
    assert!(
        m.contains("stitch_requests_total{route=\"api\",status_class=\"2xx\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("stitch_request_duration_seconds_count{route=\"api\"} 3"),
        "{m}"
    );
    let ready = get(&format!("http://{}/readyz", s.admin), &[]).unwrap();
    assert_eq!(ready.status, 200);
    let health = get(&format!("http://{}/healthz", s.admin), &[]).unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(
        get(&format!("http://{}/nope", s.admin), &[])
            .unwrap()
            .status,
        404
    );
}

#[test]
fn sigterm_drains_an_in_flight_request_then_exits() {
    let up = Upstream::with(Behaviour {
        status: 200,
        delay: Some(Duration::from_millis(700)),
        ..Default::default()
    });
    let cfg = format!(
        "{}[upstream.a]\nservers = [\"{}\"]\n\n[[route]]\nname = \"a\"\npath = \"/\"\nupstream = \"a\"\n",
        base_config(),
        up.addr
    );
    let mut s = Stitch::start(&cfg);
    let url = s.url("/slow");
    let inflight = std::thread::spawn(move || get(&url, &[]));
    // Wait until the request has reached the upstream, then terminate.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "request never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    s.terminate();
    let r = inflight
        .join()
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(r.status, 200, "the in-flight request was drained, not cut");
    let st = s.wait_exit(Duration::from_secs(15));
    assert!(st.is_some(), "stitch did not exit after SIGTERM");
}
