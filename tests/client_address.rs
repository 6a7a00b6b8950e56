//! The real client address through the proxy (issue 18): trusted proxies and `X-Forwarded-For`,
//! the forwarding headers the upstream gets, the address the access log and the `trust` rules
//! use, and a live reload of `[server] trusted_proxies`.
//!
//! Every 127.0.0.0/8 address is this machine, so the test is several parties at once: the
//! balancer stitch trusts connects from 127.0.0.1, a browser connecting directly from 127.0.0.2.

mod common;

use std::net::IpAddr;

use common::*;

const BALANCER: &str = "127.0.0.1";
const BROWSER: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// stitch trusting the balancer and an inner 10/8 network, in front of `up` on `/app`, the echo
/// on `/echo` (with RFC 7239 `Forwarded` too), a JSON access log, and two profiles whose `trust`
/// lists the documentation network 203.0.113.0/24 (`/clients`) or the balancer (`/balancer`).
fn config(up: &Upstream, trusted: &str) -> String {
    let base = base_config().replace(
        "[server]\n",
        &format!("[server]\ntrusted_proxies = {trusted}\n"),
    );
    format!(
        "{base}[access_log]\nenabled = true\nformat = \"json\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n\
         [propagation.clients]\ntrust = [\"203.0.113.0/24\"]\n\n\
         [propagation.balancer]\ntrust = [\"{BALANCER}\"]\n\n\
         [[route]]\nname = \"app\"\npath = \"/app\"\nupstream = \"app\"\n\n\
         [[route]]\nname = \"echo\"\npath = \"/echo\"\nupstream = \"builtin:echo\"\n\
         forwarded_headers = [\"x-forwarded-for\", \"x-forwarded-proto\", \"x-forwarded-host\", \"forwarded\"]\n\n\
         [[route]]\nname = \"clients\"\npath = \"/clients\"\nupstream = \"app\"\npropagation = \"clients\"\n\n\
         [[route]]\nname = \"balancer\"\npath = \"/balancer\"\nupstream = \"app\"\npropagation = \"balancer\"\n",
        up.addr
    )
}

/// The access log line of the request whose path is `path`.
fn log_line(s: &Stitch, path: &str) -> serde_json::Value {
    let lines = s.stdout_lines.lock().unwrap().clone();
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["path"] == path)
        .unwrap_or_else(|| panic!("no access log line for {path}: {lines:#?}"))
}

/// What the upstream and the access log saw for one request.
struct Seen {
    xff: Option<String>,
    proto: Option<String>,
    host: Option<String>,
    logged: String,
}

fn send(s: &Stitch, up: &Upstream, from: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let r = request_from(ip(from), "GET", &s.url(path), headers).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let got = up
        .requests()
        .into_iter()
        .find(|q| q.path == path)
        .unwrap_or_else(|| panic!("{path} did not reach the upstream"));
    // The log line is written once the response is done: poll for it briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let logged = loop {
        let lines = s.stdout_lines.lock().unwrap().clone();
        if lines
            .iter()
            .any(|l| l.contains(&format!("\"path\":\"{path}\"")))
        {
            break log_line(s, path)["client"].as_str().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line for {path}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Seen {
        xff: got.header("x-forwarded-for").map(str::to_string),
        proto: got.header("x-forwarded-proto").map(str::to_string),
        host: got.header("x-forwarded-host").map(str::to_string),
        logged,
    }
}

#[test]
fn the_upstream_and_the_log_see_the_real_client() {
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, &format!("[\"{BALANCER}\", \"10.0.0.0/8\"]")));

    // A browser straight to stitch: it is the client.
    let direct = send(&s, &up, BROWSER, "/app/direct", &[]);
    assert_eq!(direct.xff.as_deref(), Some(BROWSER));
    assert_eq!(direct.logged, BROWSER);
    assert_eq!(direct.proto.as_deref(), Some("http"));
    assert_eq!(
        direct.host,
        Some(s.proxy.to_string()),
        "X-Forwarded-Host is the Host"
    );

    // One trusted hop: the balancer names the client.
    let one = send(
        &s,
        &up,
        BALANCER,
        "/app/one",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
        ],
    );
    assert_eq!(one.xff.as_deref(), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(one.logged, "203.0.113.7");
    assert_eq!(
        one.proto.as_deref(),
        Some("https"),
        "the balancer terminated TLS"
    );
    assert_eq!(one.host.as_deref(), Some("shop.example"));

    // Two hops, the leftmost entry forged by the client: the walk stops at the first untrusted
    // hop, and the forged entry is not sent on.
    let two = send(
        &s,
        &up,
        BALANCER,
        "/app/two",
        &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")],
    );
    assert_eq!(two.xff.as_deref(), Some("203.0.113.7, 10.1.2.3, 127.0.0.1"));
    assert_eq!(two.logged, "203.0.113.7");

    // An untrusted peer forging every forwarding header: all replaced.
    let forged = send(
        &s,
        &up,
        BROWSER,
        "/app/forged",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
    );
    assert_eq!(forged.xff.as_deref(), Some(BROWSER));
    assert_eq!(forged.logged, BROWSER);
    assert_eq!(forged.proto.as_deref(), Some("http"));
    assert_eq!(forged.host, Some(s.proxy.to_string()));
}

#[test]
fn the_echo_shows_the_client_and_rfc_7239_forwarded() {
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, &format!("[\"{BALANCER}\"]")));
    let r = request_from(
        ip(BALANCER),
        "GET",
        &s.url("/echo/x"),
        &[
            ("x-forwarded-for", "2001:db8::7"),
            ("forwarded", "for=\"[2001:db8::7]\";proto=https"),
        ],
    )
    .unwrap();
    let echo = r.json();
    assert_eq!(echo["client"], "2001:db8::7");
    assert_eq!(echo["headers"]["x-forwarded-for"], "2001:db8::7, 127.0.0.1");
    let host = s.proxy.to_string();
    assert_eq!(
        echo["headers"]["forwarded"],
        format!("for=\"[2001:db8::7]\";proto=https, for=127.0.0.1;host=\"{host}\";proto=http")
    );
    // From an untrusted peer, the incoming Forwarded is replaced.
    let r = request_from(
        ip(BROWSER),
        "GET",
        &s.url("/echo/y"),
        &[("forwarded", "for=6.6.6.6")],
    )
    .unwrap();
    let echo = r.json();
    assert_eq!(echo["client"], BROWSER);
    assert_eq!(
        echo["headers"]["forwarded"],
        format!("for={BROWSER};host=\"{host}\";proto=http")
    );
}

/// The sampling `trust` rules apply to the client stitch found, not to the balancer.
#[test]
fn trust_rules_apply_to_the_real_client() {
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, &format!("[\"{BALANCER}\"]")));
    let trace = |path: &str, xff: &str| {
        request_from(
            ip(BALANCER),
            "GET",
            &s.url(path),
            &[
                ("x-forwarded-for", xff),
                ("x-datadog-trace-id", "4242"),
                ("x-datadog-parent-id", "77"),
                ("x-datadog-sampling-priority", "1"),
            ],
        )
        .unwrap();
        let got = up.requests().into_iter().find(|q| q.path == path).unwrap();
        got.header("x-datadog-trace-id").unwrap().to_string()
    };
    assert_eq!(
        trace("/clients/trusted", "203.0.113.7"),
        "4242",
        "a client inside the trust list: the context is continued"
    );
    assert_ne!(
        trace("/clients/outside", "198.51.100.9"),
        "4242",
        "a client outside it: restarted, although the balancer is trusted as a proxy"
    );
    assert_ne!(
        trace("/balancer/x", "198.51.100.9"),
        "4242",
        "trusting the balancer's address does not trust the clients behind it"
    );
}

/// `[server] trusted_proxies` is reloaded live: a SIGHUP after the edit makes stitch believe
/// the balancer on the next request, without a restart.
#[test]
fn trusted_proxies_reload_live() {
    let up = Upstream::start();
    let cfg = config(&up, "[]");
    let s = Stitch::start(&cfg);
    let before = send(
        &s,
        &up,
        BALANCER,
        "/app/before",
        &[("x-forwarded-for", "203.0.113.7")],
    );
    assert_eq!(
        before.logged, BALANCER,
        "no trusted proxy yet: the peer is the client"
    );
    assert_eq!(before.xff.as_deref(), Some(BALANCER));

    let trusted = cfg.replace(
        "trusted_proxies = []",
        &format!("trusted_proxies = [\"{BALANCER}\"]"),
    );
    std::fs::write(&s.config_path, trusted).unwrap();
    let reloads = |s: &Stitch| {
        metric(
            &s.metrics(),
            "stitch_config_reloads_total",
            &[("result", "success")],
        )
        .unwrap_or(0.0)
    };
    let n = reloads(&s);
    s.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reloads(&s) <= n {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload: {:?}",
            s.stderr_lines
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = send(
        &s,
        &up,
        BALANCER,
        "/app/after",
        &[("x-forwarded-for", "203.0.113.7")],
    );
    assert_eq!(after.logged, "203.0.113.7");
    assert_eq!(after.xff.as_deref(), Some("203.0.113.7, 127.0.0.1"));
    assert!(
        !s.stderr_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("after a restart")),
        "trusted_proxies must not need a restart"
    );
}

#[test]
fn stitch_check_refuses_a_bad_cidr_with_its_line() {
    let (ok, out) = stitch_check(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntrusted_proxies = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n  \"10.0.0.1/8\",\n]\n\n\
         [[route]]\npath = \"/\"\nupstream = \"builtin:echo\"\nforwarded_headers = [\"x-real-ip\"]\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "FILE:5: server.trusted_proxies[1]: `10.0.0.0/33` is not a CIDR",
        "FILE:6: server.trusted_proxies[2]: `10.0.0.1/8` has host bits set: write `10.0.0.0/8` for the network or `10.0.0.1` for the address",
        "FILE:12: route[0].forwarded_headers[0]: unknown header \"x-real-ip\"",
    ] {
        assert!(out.contains(want), "expected `{want}` in:\n{out}");
    }
}
