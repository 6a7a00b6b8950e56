//! The request inspector on the admin port (`/requests`, `/requests.json`), against the real
//! stitch binary and a real upstream: what it shows is checked against what was sent and what
//! the upstream received; secrets sent in cookies, credentials, other headers, the query and the
//! body never appear; filters select; a reload keeps the records and applies the new capacity;
//! and headless Chromium loads the page, filters it through its form and screenshots it.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::*;

const ORIGIN: &str = "https://app.example";

/// stitch with the inspector keeping `keep` requests (and `extra_admin` lines in `[admin]`):
/// route `api` (`/api`, CORS policy `web`) to `up`, route `echo` (`/echo`) on the built-in echo,
/// and nothing else (any other path is a 404).
fn config(up: &Upstream, keep: usize, extra_admin: &str) -> String {
    let base = base_config().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ninspect_requests = {keep}\n{extra_admin}"),
    );
    format!(
        "{base}[upstream.backend]\nservers = [\"{}\"]\n\n\
         [cors.web]\nallowed_origins = [\"{ORIGIN}\"]\nallow_headers = [\"x-app-header\"]\n\n\
         [[route]]\nname = \"api\"\npath = \"/api\"\nupstream = \"backend\"\ncors = \"web\"\n\n\
         [[route]]\nname = \"echo\"\npath = \"/echo\"\nupstream = \"builtin:echo\"\n",
        up.addr
    )
}

fn inspected(s: &Stitch, query: &str) -> Value {
    let r = get(&format!("http://{}/requests.json{query}", s.admin), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn requests(v: &Value) -> Vec<Value> {
    v["requests"].as_array().cloned().unwrap_or_default()
}

/// (name, value) pairs of a `headers_*` array.
fn pairs(v: &Value) -> BTreeSet<(String, String)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a header list: {v}"))
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn is_trace_header(name: &str) -> bool {
    name.starts_with("x-datadog-")
        || name.starts_with("x-b3-")
        || ["traceparent", "tracestate", "b3", "baggage"].contains(&name)
}

/// Five kinds of request: a traced GET carrying secrets, a preflight with a header the policy
/// leaves out, a preflight from a foreign origin, a path no route takes, and the echo.
fn send_traffic(s: &Stitch) {
    let r = request(
        "POST",
        &s.url("/api/users?token=SECRET-QUERY"),
        &[
            ("x-datadog-trace-id", "123"),
            ("x-datadog-parent-id", "456"),
            ("x-datadog-sampling-priority", "1"),
            ("origin", ORIGIN),
            ("cookie", "session=SECRET-COOKIE"),
            ("authorization", "Bearer SECRET-AUTH"),
            ("x-app-header", "SECRET-APP"),
            ("baggage", "session.id=SECRET-BAGGAGE,user.id=u1"),
        ],
        b"{\"password\":\"SECRET-BODY\"}",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let r = request(
        "OPTIONS",
        &s.url("/api/users"),
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "x-datadog-trace-id, x-unlisted",
            ),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    let r = request(
        "OPTIONS",
        &s.url("/api/users"),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(get(&s.url("/other"), &[]).unwrap().status, 404);
    let r = get(
        &s.url("/echo"),
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn json_shows_what_arrived_and_what_was_sent_and_nothing_else() {
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, 200, ""));
    send_traffic(&s);

    let v = inspected(&s, "");
    let all = requests(&v);
    let line = |r: &Value| {
        format!(
            "{} {} {} {}",
            r["method"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
            r["status"],
            r["cors"]["result"].as_str().unwrap()
        )
    };
    // Newest first, path without its query.
    assert_eq!(
        all.iter().map(line).collect::<Vec<_>>(),
        [
            "GET /echo 200 none",
            "GET /other 404 none",
            "OPTIONS /api/users 403 refused_origin",
            "OPTIONS /api/users 204 allowed_partial",
            "POST /api/users 200 allowed",
        ],
        "{v:#}"
    );
    let (echo, none, foreign, preflight, post) = (&all[0], &all[1], &all[2], &all[3], &all[4]);

    // The traced request: received trace and CORS headers only, baggage values masked.
    assert_eq!(post["route"], "api");
    assert_eq!(
        pairs(&post["headers_received"]),
        [
            ("x-datadog-trace-id", "123"),
            ("x-datadog-parent-id", "456"),
            ("x-datadog-sampling-priority", "1"),
            ("origin", ORIGIN),
            ("baggage", "session.id=…,user.id=…"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    );
    // Sent: exactly the trace headers the upstream received.
    let at_upstream: BTreeSet<(String, String)> = up
        .last()
        .headers
        .into_iter()
        .filter(|(k, _)| is_trace_header(k))
        .map(|(k, v)| {
            // The inspector keeps baggage keys, never values.
            let v = if k == "baggage" {
                assert_eq!(v, "session.id=SECRET-BAGGAGE,user.id=u1");
                "session.id=…,user.id=…".to_string()
            } else {
                v
            };
            (k, v)
        })
        .collect();
    assert!(!at_upstream.is_empty());
    assert_eq!(pairs(&post["headers_sent"]), at_upstream);
    let t = &post["trace"];
    assert_eq!(t["trace_id"], "123");
    assert_eq!(t["trace_id_hex"], format!("{:032x}", 123));
    assert_eq!(t["winner"], "datadog");
    assert_eq!(t["continued"], true);
    assert_eq!(t["parent_id"], "456");
    assert_eq!(t["sampling"]["decision"], "keep");
    assert_eq!(t["sampling"]["source"], "incoming");
    let span_id = t["span_id"].as_str().unwrap();
    assert_eq!(
        up.last().header("x-datadog-parent-id"),
        Some(span_id),
        "the edge span id shown is the parent the upstream got"
    );
    assert_eq!(
        t["span_id_hex"],
        format!("{:016x}", span_id.parse::<u64>().unwrap())
    );
    assert_eq!(t["datadog_url"], Value::Null, "no DD_SITE, no link");
    assert_eq!(post["client_address"], "127.0.0.1");
    let request_id = up.last().header("x-request-id").map(str::to_string);
    assert!(request_id.is_some(), "stitch sends a request id upstream");
    assert_eq!(post["request_id"].as_str(), request_id.as_deref());

    assert_eq!(preflight["preflight"], true);
    assert_eq!(preflight["cors"]["refused_headers"], json!(["x-unlisted"]));
    assert_eq!(
        preflight["headers_sent"],
        Value::Null,
        "answered at the edge"
    );
    assert_eq!(foreign["trace"], Value::Null);
    assert_eq!(none["route"], Value::Null);
    assert_eq!(none["trace"], Value::Null);
    let sent = pairs(&echo["headers_sent"]);
    assert!(
        sent.iter()
            .any(|(k, v)| k == "traceparent" && v.contains("0af7651916cd43dd8448eb211c80319c")),
        "{sent:?}"
    );

    // Nothing but trace and CORS headers is ever shown: not in the JSON, not on the page.
    let page = get(&format!("http://{}/requests", s.admin), &[]).unwrap();
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.starts_with("default-src 'none'")));
    for text in [v.to_string(), page.body.clone()] {
        assert!(!text.contains("SECRET"), "a secret was recorded:\n{text}");
    }
    assert!(page.body.contains("x-unlisted"));

    // Filters.
    let paths = |q: &str| -> Vec<String> {
        requests(&inspected(&s, q))
            .iter()
            .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["status"]))
            .collect()
    };
    assert_eq!(
        paths("?route=api"),
        ["OPTIONS 403", "OPTIONS 204", "POST 200"]
    );
    assert_eq!(paths("?route=api&status=2xx"), ["OPTIONS 204", "POST 200"]);
    assert_eq!(paths("?status=4xx"), ["GET 404", "OPTIONS 403"]);
    assert_eq!(paths("?status=404"), ["GET 404"]);
    assert_eq!(paths("?cors=refused_origin"), ["OPTIONS 403"]);
    assert_eq!(paths("?cors=allowed_partial"), ["OPTIONS 204"]);
    assert_eq!(paths("?sampling=incoming"), ["GET 200", "POST 200"]);
    assert_eq!(paths("?sampling=none"), ["GET 404", "OPTIONS 403"]);
    let bad = get(&format!("http://{}/requests.json?cors=maybe", s.admin), &[]).unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("allowed_partial"), "{}", bad.body);
}

/// Poll the inspector until `pred` holds, with a deadline.
fn wait_inspected(s: &Stitch, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = inspected(s, "");
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never happened; last answer {v:#}\nstderr:\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_reload_keeps_the_records_and_applies_capacity_and_site_live() {
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, 3, ""));
    for i in 1..=5 {
        let path = format!("/api/{i}");
        assert_eq!(get(&s.url(&path), &[]).unwrap().status, 200);
    }
    let paths = |v: &Value| -> Vec<String> {
        requests(v)
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };
    let v = inspected(&s, "");
    assert_eq!(v["capacity"], 3);
    assert_eq!(paths(&v), ["/api/5", "/api/4", "/api/3"]);

    std::fs::write(
        &s.config_path,
        config(&up, 2, "dd_site = \"datadoghq.eu\"\n"),
    )
    .unwrap();
    s.signal("HUP");
    let v = wait_inspected(&s, "capacity 2 applied", |v| v["capacity"] == 2);
    assert_eq!(paths(&v), ["/api/5", "/api/4"], "kept across the reload");
    let low = requests(&v)[0]["trace"]["trace_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        requests(&v)[0]["trace"]["datadog_url"],
        format!("https://app.datadoghq.eu/apm/trace/{low}")
    );

    std::fs::write(&s.config_path, config(&up, 0, "")).unwrap();
    s.signal("HUP");
    wait_inspected(&s, "inspector off", |v| v["capacity"] == 0);
    assert_eq!(get(&s.url("/api/6"), &[]).unwrap().status, 200);
    assert!(paths(&inspected(&s, "")).is_empty());
    let page = get(&format!("http://{}/requests", s.admin), &[]).unwrap();
    assert!(page.body.contains("The inspector is off"), "{}", page.body);
}

/// Where screenshots go: `target/inspector/`.
fn shot(name: &str) -> String {
    let dir = manifest_dir().join("target/inspector");
    std::fs::create_dir_all(&dir).unwrap();
    let p: PathBuf = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p.display().to_string()
}

#[test]
fn chromium_loads_filters_and_screenshots_the_page() {
    browser::warm_up();
    let up = Upstream::start();
    let s = Stitch::start(&config(&up, 200, ""));
    send_traffic(&s);
    let span_id = up.last().header("x-datadog-parent-id").unwrap().to_string();

    let (all_png, filtered_png) = (shot("requests.png"), shot("requests-api-2xx.png"));
    let url = format!("http://{}/requests", s.admin);
    let run = browser::browser().steps(
        &url,
        json!([
            {"texts": "#summary"},
            {"texts": "tr.req td.path"},
            {"texts": "tr.req td.status"},
            {"screenshot": all_png},
            {"select": ["select[name=route]", "api"]},
            {"select": ["select[name=status]", "2xx"]},
            {"click": "#filter button[type=submit]"},
            {"texts": "tr.req"},
            {"texts": "tr.req td.span"},
            {"texts": "pre.sent"},
            {"screenshot": filtered_png},
        ]),
        Duration::from_secs(30),
    );
    let v = run.value().as_array().unwrap().clone();
    let texts = |i: usize| -> Vec<String> {
        v[i].as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().trim().to_string())
            .collect()
    };
    assert!(
        texts(0)[0].starts_with("5 shown of 5 held"),
        "{:?}",
        texts(0)
    );
    assert_eq!(
        texts(1),
        ["/echo", "/other", "/api/users", "/api/users", "/api/users"]
    );
    assert_eq!(texts(2), ["200", "404", "403", "204", "200"]);
    assert!(
        v[6].as_str()
            .unwrap()
            .contains("/requests?route=api&status=2xx&cors=&sampling="),
        "{}",
        v[6]
    );
    let rows = texts(7);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert!(
        rows[0].contains("OPTIONS (preflight)") && rows[0].contains("refused headers: x-unlisted")
    );
    assert!(rows[1].contains("POST") && rows[1].contains("allowed") && rows[1].contains("datadog"));
    assert!(rows[1].contains("keep (1) incoming"), "{}", rows[1]);
    assert!(rows[1].contains("123"), "the trace id: {}", rows[1]);
    assert!(
        texts(8)[1].starts_with(&span_id),
        "the edge span shown is the parent the upstream got ({span_id}): {:?}",
        texts(8)
    );
    let sent = texts(9);
    assert_eq!(sent[0], "(not forwarded)");
    assert!(
        sent[1].contains(&format!("x-datadog-parent-id: {span_id}")),
        "{}",
        sent[1]
    );
    for png in [&all_png, &filtered_png] {
        let bytes = std::fs::read(png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{png}"
        );
    }
}

#[test]
fn a_pass_through_route_shows_the_trace_headers_it_forwarded_untouched() {
    let up = Upstream::start();
    let cfg = format!(
        "{}[upstream.backend]\nservers = [\"{}\"]\n\n[propagation.raw]\nextract = []\ninject = []\n\n\
         [[route]]\nname = \"raw\"\npath = \"/\"\nupstream = \"backend\"\npropagation = \"raw\"\n",
        base_config(),
        up.addr
    );
    let s = Stitch::start(&cfg);
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = get(&s.url("/x"), &[("traceparent", tp), ("x-b3-sampled", "1")]).unwrap();
    assert_eq!(r.status, 200);
    let v = inspected(&s, "");
    let rec = &requests(&v)[0];
    let want: BTreeSet<(String, String)> = [("traceparent", tp), ("x-b3-sampled", "1")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    assert_eq!(pairs(&rec["headers_sent"]), want, "{rec:#}");
    assert_eq!(
        rec["trace"],
        Value::Null,
        "no trace plan on a pass-through route"
    );
    assert_eq!(up.last().header("traceparent"), Some(tp));
}

#[test]
fn the_client_address_is_the_one_found_through_the_trusted_proxies() {
    let up = Upstream::start();
    let cfg = config(&up, 200, "").replace(
        "threads = 1\n",
        "threads = 1\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let s = Stitch::start(&cfg);
    let r = get(
        &s.url("/api/x"),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "ticket-4711"),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let rec = &requests(&inspected(&s, ""))[0];
    assert_eq!(rec["client_address"], "203.0.113.9", "{rec:#}");
    assert_eq!(rec["request_id"], "ticket-4711", "{rec:#}");
    let page = get(&format!("http://{}/requests", s.admin), &[]).unwrap();
    assert!(page.body.contains("client 203.0.113.9"), "{}", page.body);
    assert!(
        page.body.contains("request id ticket-4711"),
        "{}",
        page.body
    );
}
