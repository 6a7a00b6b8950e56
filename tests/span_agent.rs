//! Span export against real peers: the `ddapm-test-agent` (Datadog v0.4 intake and OTLP/HTTP),
//! plus local fault servers (agent down, agent that never answers, agent that fails then
//! recovers) and graceful shutdown.
//!
//! The agent comes from `$CARGO_MANIFEST_DIR/target/peers-venv` (made by `.ci/setup test`);
//! `DDAPM_TEST_AGENT` may name another `ddapm-test-agent` executable.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stitch::span::{
    build, DatadogExport, EdgeSpan, ExportConfig, ExportMetrics, OtlpExport, ServiceInfo,
    SpanError, SpanLink, SpanSink,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

// ---------------------------------------------------------------- harness

fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().unwrap().port()
}

/// Poll `check` until it returns `Some`, or fail after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct TestAgent {
    child: Child,
    port: u16,
    otlp_port: u16,
}

impl TestAgent {
    fn start() -> TestAgent {
        let exe = std::env::var("DDAPM_TEST_AGENT").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/peers-venv/bin/ddapm-test-agent"
            )
            .into()
        });
        assert!(
            std::path::Path::new(&exe).exists(),
            "{exe} missing: run `.ci/setup test` (pip install ddapm-test-agent into target/peers-venv)"
        );
        let (port, otlp_port, grpc_port) = (free_port(), free_port(), free_port());
        let log = std::fs::File::create(format!(
            "{}/ddapm-test-agent-{port}.log",
            env!("CARGO_TARGET_TMPDIR")
        ))
        .unwrap();
        let child = Command::new(&exe)
            .args([
                "--host=127.0.0.1",
                &format!("--port={port}"),
                &format!("--otlp-http-port={otlp_port}"),
                &format!("--otlp-grpc-port={grpc_port}"),
            ])
            // `--enabled-checks` fails to parse in the agent's CLI (argparse `type=List[str]`);
            // the environment variable works.
            .env(
                "ENABLED_CHECKS",
                "trace_count_header,meta_tracer_version_header,trace_content_length",
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start ddapm-test-agent");
        let mut agent = TestAgent {
            child,
            port,
            otlp_port,
        };
        eventually(
            "ddapm-test-agent to listen",
            Duration::from_secs(60),
            || {
                if let Ok(Some(status)) = agent.child.try_wait() {
                    panic!("ddapm-test-agent exited: {status}");
                }
                let up = |url: String| {
                    ureq::get(&url)
                        .timeout(Duration::from_secs(1))
                        .call()
                        .is_ok()
                };
                (up(format!("http://127.0.0.1:{port}/info"))
                    && up(format!("http://127.0.0.1:{otlp_port}/test/session/traces")))
                .then_some(())
            },
        );
        agent
    }

    fn get(&self, port: u16, path: &str) -> Value {
        ureq::get(&format!("http://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(5))
            .call()
            .expect("query test agent")
            .into_json()
            .expect("json")
    }

    fn datadog_spans(&self) -> Vec<Value> {
        let traces = self.get(self.port, "/test/session/traces");
        traces
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t.as_array().unwrap().clone())
            .collect()
    }

    fn otlp_spans(&self) -> Vec<(Value, Value)> {
        let reqs = self.get(self.otlp_port, "/test/session/traces");
        let mut out = Vec::new();
        for req in reqs.as_array().unwrap() {
            for rs in req["resource_spans"].as_array().unwrap() {
                for ss in rs["scope_spans"].as_array().unwrap() {
                    for span in ss["spans"].as_array().unwrap() {
                        out.push((rs["resource"].clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The exporter running on its own runtime; `stop` asks for shutdown and waits for the end.
struct Running {
    rt: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn start(cfg: ExportConfig, svc: ServiceInfo, m: &ExportMetrics) -> (SpanSink, Running) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (sink, exporter) = build(cfg, svc, m.clone());
        let (stop, rx) = watch::channel(false);
        let task = rt.spawn(exporter.run(rx));
        (
            sink,
            Running {
                rt,
                stop,
                task: Some(task),
            },
        )
    }

    /// Signal shutdown; returns how long the exporter took to finish.
    fn stop(&mut self, limit: Duration) -> Duration {
        let t0 = Instant::now();
        self.stop.send(true).ok();
        let task = self.task.take().unwrap();
        self.rt
            .block_on(async { tokio::time::timeout(limit, task).await })
            .expect("exporter did not finish in time")
            .unwrap();
        t0.elapsed()
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn span(trace_id: u128, span_id: u64, priority: i32) -> EdgeSpan {
    EdgeSpan {
        trace_id,
        span_id,
        parent_id: 0,
        start_unix_nanos: now_nanos(),
        duration_nanos: 1_000_000,
        resource: "GET api".into(),
        route: "api".into(),
        method: http::Method::GET,
        path: "/api".into(),
        status: 200,
        upstream: None,
        client_addr: None,
        user_agent: None,
        origin: None,
        sampling_priority: priority,
        decision_maker: None,
        tags: vec![],
        last_parent_id: None,
        propagation_error: None,
        links: vec![],
        error: None,
        preflight: false,
        http_version: None,
        scheme: None,
        host: None,
        baggage: vec![],
        request_id: None,
    }
}

/// Export to both of the test agent's intakes: Datadog v0.4 and OTLP/HTTP.
fn both_intakes(agent: &TestAgent) -> ExportConfig {
    ExportConfig {
        datadog: Some(DatadogExport {
            agent_url: format!("http://127.0.0.1:{}", agent.port),
        }),
        otlp: Some(OtlpExport {
            endpoint: format!("http://127.0.0.1:{}/v1/traces", agent.otlp_port),
            ca_pem: None,
        }),
        ..ExportConfig::default()
    }
}

fn quick(cfg: ExportConfig) -> ExportConfig {
    ExportConfig {
        flush_interval: Duration::from_millis(50),
        backoff: Duration::from_millis(20),
        request_timeout: Duration::from_millis(500),
        ..cfg
    }
}

fn counter(v: &prometheus::IntCounterVec, labels: &[&str]) -> u64 {
    v.with_label_values(labels).get()
}

fn b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => panic!("not base64: {s}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in chunk.iter().enumerate() {
            n |= u32::from(*d) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// OTLP attributes as a map of key to rendered value (`"s"` strings, ints as `i:N`).
fn otlp_attrs(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .map(|l| l.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            let v = &kv["value"];
            let rendered = if let Some(s) = v.get("string_value") {
                s.as_str().unwrap().to_string()
            } else if let Some(i) = v.get("int_value") {
                format!("i:{}", i.as_str().unwrap())
            } else if let Some(b) = v.get("bool_value") {
                format!("b:{}", b.as_bool().unwrap())
            } else if let Some(a) = v.get("array_value") {
                let items: Vec<&str> = a["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["string_value"].as_str().unwrap())
                    .collect();
                format!("a:[{}]", items.join(","))
            } else {
                panic!("unexpected value {v}")
            };
            (kv["key"].as_str().unwrap().to_string(), rendered)
        })
        .collect()
}

// ---------------------------------------------------------------- the real agent

fn full_span() -> EdgeSpan {
    EdgeSpan {
        parent_id: 1234567890123456789,
        resource: "POST checkout".into(),
        route: "checkout".into(),
        method: http::Method::POST,
        path: "/api/checkout".into(),
        status: 502,
        upstream: Some("127.0.0.1:9001".into()),
        client_addr: Some("192.0.2.7:51000".into()),
        user_agent: Some("Mozilla/5.0 (X11)".into()),
        origin: Some("rum".into()),
        decision_maker: Some("-4".into()),
        tags: vec![("_dd.p.usr.id".into(), "dXNlcjE=".into())],
        last_parent_id: Some(0x0123456789abcdef),
        propagation_error: Some("extract_max_size".into()),
        links: vec![SpanLink {
            trace_id: 0x4bf92f3577b34da6_a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            sampled: Some(true),
            tracestate: Some("congo=t61rcWkgMzE".into()),
            attributes: vec![
                ("reason".into(), "terminated_context".into()),
                ("context_headers".into(), "tracecontext".into()),
            ],
        }],
        error: Some(SpanError {
            kind: "http_502".into(),
            message: "upstream answered 502".into(),
        }),
        http_version: Some("1.1".into()),
        scheme: Some("http".into()),
        host: Some("shop.example:8080".into()),
        baggage: vec![("session.id".into(), "f2b8c1d0-rum".into())],
        request_id: Some("ticket-4711".into()),
        ..span(0x640cfd8d00000000_64fe8b2a57d3eff7, 0x0a0b0c0d0e0f1011, 2)
    }
}

/// Batches after the first reuse the connection to the real test agent (both of its intakes):
/// stitch does not open a TCP connection per batch.
#[test]
fn batches_share_one_kept_alive_connection_per_intake() {
    let agent = TestAgent::start();
    let m = ExportMetrics::new().unwrap();
    let cfg = quick(both_intakes(&agent));
    let svc = ServiceInfo {
        service: "stitch-edge".into(),
        env: None,
        version: None,
    };
    let (sink, mut run) = Running::start(cfg, svc, &m);
    // One span at a time, each waited for at both intakes, so every span is its own batch.
    for i in 1..=4u64 {
        sink.submit(span(0x5000 + u128::from(i), 0x6000 + i, 1));
        let want = i as usize;
        eventually(
            &format!("{want} spans at both intakes"),
            Duration::from_secs(30),
            || {
                (agent.datadog_spans().len() >= want && agent.otlp_spans().len() >= want)
                    .then_some(())
            },
        );
    }
    run.stop(Duration::from_secs(10));
    for e in ["datadog", "otlp"] {
        assert_eq!(counter(&m.batches, &[e, "ok"]), 4, "{e} batches");
        assert_eq!(
            counter(&m.connections, &[e]),
            1,
            "{e}: one connection for 4 batches"
        );
    }
}

#[test]
fn every_field_arrives_on_both_paths_with_identical_ids() {
    let agent = TestAgent::start();
    let m = ExportMetrics::new().unwrap();
    let cfg = quick(both_intakes(&agent));
    let svc = ServiceInfo {
        service: "stitch-edge".into(),
        env: Some("test".into()),
        version: Some("2.0.1".into()),
    };
    let (sink, mut run) = Running::start(cfg, svc, &m);

    let full = full_span();
    let dropped = span(0x1111, 0x2222, 0); // priority 0: Datadog only
    let mut preflight = span(0x3333, 0x4444, 1);
    preflight.method = http::Method::OPTIONS;
    preflight.resource = "OPTIONS api".into();
    preflight.status = 204;
    preflight.preflight = true;
    sink.submit(full.clone());
    sink.submit(dropped.clone());
    sink.submit(preflight.clone());

    let dd = eventually(
        "3 spans at the Datadog intake",
        Duration::from_secs(30),
        || {
            let s = agent.datadog_spans();
            (s.len() >= 3).then_some(s)
        },
    );
    let ot = eventually(
        "2 spans at the OTLP intake",
        Duration::from_secs(30),
        || {
            let s = agent.otlp_spans();
            (s.len() >= 2).then_some(s)
        },
    );
    assert_eq!(dd.len(), 3, "each span once: {dd:#?}");
    assert_eq!(ot.len(), 2, "kept traces only: {ot:#?}");
    run.stop(Duration::from_secs(10));
    assert_eq!(counter(&m.exported, &["datadog"]), 3);
    assert_eq!(counter(&m.exported, &["otlp"]), 2);
    for e in ["datadog", "otlp"] {
        for reason in [
            "rejected",
            "retries_exhausted",
            "queue_full",
            "shutdown",
            "encode_error",
        ] {
            assert_eq!(counter(&m.dropped, &[e, reason]), 0, "{e} {reason}");
        }
    }

    // Datadog: the full span, field by field.
    let by_id = |id: u64| {
        dd.iter()
            .find(|s| s["span_id"] == json!(id))
            .unwrap()
            .clone()
    };
    let d = by_id(full.span_id);
    assert_eq!(d["trace_id"], json!(full.trace_id as u64));
    assert_eq!(d["parent_id"], json!(full.parent_id));
    assert_eq!(d["name"], "stitch.request");
    assert_eq!(d["resource"], "POST checkout");
    assert_eq!(d["service"], "stitch-edge");
    assert_eq!(d["type"], "web");
    assert_eq!(d["start"], json!(full.start_unix_nanos));
    assert_eq!(d["duration"], json!(full.duration_nanos));
    assert_eq!(d["error"], 1);
    let meta = d["meta"].clone();
    for (k, v) in [
        ("env", "test"),
        ("version", "2.0.1"),
        ("span.kind", "server"),
        ("component", "stitch"),
        ("http.method", "POST"),
        ("http.url", "http://shop.example:8080/api/checkout"),
        ("http.route", "checkout"),
        ("http.status_code", "502"),
        ("http.useragent", "Mozilla/5.0 (X11)"),
        ("http.client_ip", "192.0.2.7"),
        ("http.request.headers.x-request-id", "ticket-4711"),
        ("stitch.upstream", "127.0.0.1:9001"),
        ("error.type", "http_502"),
        ("error.message", "upstream answered 502"),
        ("_dd.origin", "rum"),
        ("_dd.p.dm", "-4"),
        ("_dd.p.tid", "640cfd8d00000000"),
        ("_dd.parent_id", "0123456789abcdef"),
        ("_dd.propagation_error", "extract_max_size"),
        ("_dd.p.usr.id", "dXNlcjE="),
        ("baggage.session.id", "f2b8c1d0-rum"),
    ] {
        assert_eq!(meta[k], json!(v), "meta {k}: {meta}");
    }
    assert_eq!(d["metrics"]["_sampling_priority_v1"], json!(2.0));
    assert_eq!(d["metrics"]["_dd.top_level"], json!(1.0));
    assert_eq!(
        d["span_links"],
        json!([{
            "trace_id": 0xa3ce929d0e0e4736u64,
            "trace_id_high": 0x4bf92f3577b34da6u64,
            "span_id": 0x00f067aa0ba902b7u64,
            "attributes": {"reason": "terminated_context", "context_headers": "tracecontext"},
            "tracestate": "congo=t61rcWkgMzE",
            "flags": 0x8000_0001u64
        }])
    );
    // The dropped trace reaches the Agent (for its stats) with its priority.
    let d0 = by_id(dropped.span_id);
    assert_eq!(d0["metrics"]["_sampling_priority_v1"], json!(0.0));
    assert_eq!(d0["parent_id"], json!(0));
    assert!(
        d0["meta"].get("_dd.p.tid").is_none(),
        "64-bit trace: no tid"
    );
    let dp = by_id(preflight.span_id);
    assert_eq!(dp["meta"]["stitch.preflight"], "true");
    assert_eq!(dp["resource"], "OPTIONS api");

    // OTLP: the same span, same ids.
    let (resource, o) = ot
        .iter()
        .find(|(_, s)| b64(s["span_id"].as_str().unwrap()) == full.span_id.to_be_bytes())
        .unwrap()
        .clone();
    assert_eq!(
        b64(o["trace_id"].as_str().unwrap()),
        full.trace_id.to_be_bytes()
    );
    assert_eq!(
        b64(o["parent_span_id"].as_str().unwrap()),
        full.parent_id.to_be_bytes()
    );
    // Same ids as the Datadog span: low half + tid, span id, parent.
    let dd_trace =
        (u128::from(u64::from_str_radix(meta["_dd.p.tid"].as_str().unwrap(), 16).unwrap()) << 64)
            | u128::from(d["trace_id"].as_u64().unwrap());
    assert_eq!(b64(o["trace_id"].as_str().unwrap()), dd_trace.to_be_bytes());
    assert_eq!(
        b64(o["span_id"].as_str().unwrap()),
        d["span_id"].as_u64().unwrap().to_be_bytes()
    );
    assert_eq!(o["name"], "stitch.request");
    assert_eq!(o["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        o["start_time_unix_nano"],
        json!(full.start_unix_nanos.to_string())
    );
    assert_eq!(
        o["end_time_unix_nano"],
        json!((full.start_unix_nanos + full.duration_nanos).to_string())
    );
    assert_eq!(
        o["status"],
        json!({"message": "upstream answered 502", "code": "STATUS_CODE_ERROR"})
    );
    let attrs = otlp_attrs(&o["attributes"]);
    for (k, v) in [
        ("http.request.method", "POST"),
        ("url.path", "/api/checkout"),
        ("url.scheme", "http"),
        ("http.route", "checkout"),
        ("http.response.status_code", "i:502"),
        ("server.address", "shop.example"),
        ("server.port", "i:8080"),
        ("client.address", "192.0.2.7"),
        ("client.port", "i:51000"),
        ("user_agent.original", "Mozilla/5.0 (X11)"),
        ("http.request.header.x-request-id", "a:[ticket-4711]"),
        ("network.peer.address", "127.0.0.1"),
        ("network.peer.port", "i:9001"),
        ("network.protocol.version", "1.1"),
        ("error.type", "http_502"),
        ("sampling.priority", "i:2"),
        ("_dd.origin", "rum"),
        ("_dd.p.dm", "-4"),
        ("_dd.parent_id", "0123456789abcdef"),
        ("_dd.propagation_error", "extract_max_size"),
        ("_dd.p.usr.id", "dXNlcjE="),
        ("baggage.session.id", "f2b8c1d0-rum"),
    ] {
        assert_eq!(
            attrs.get(k).map(String::as_str),
            Some(v),
            "attribute {k}: {attrs:?}"
        );
    }
    let res = otlp_attrs(&resource["attributes"]);
    assert_eq!(res["service.name"], "stitch-edge");
    assert_eq!(res["deployment.environment.name"], "test");
    assert_eq!(res["service.version"], "2.0.1");
    let links = o["links"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(
        b64(links[0]["trace_id"].as_str().unwrap()),
        0x4bf92f3577b34da6_a3ce929d0e0e4736u128.to_be_bytes()
    );
    assert_eq!(
        b64(links[0]["span_id"].as_str().unwrap()),
        0x00f067aa0ba902b7u64.to_be_bytes()
    );
    assert_eq!(links[0]["trace_state"], "congo=t61rcWkgMzE");
    assert_eq!(
        otlp_attrs(&links[0]["attributes"])["reason"],
        "terminated_context"
    );
    let (_, op) = ot
        .iter()
        .find(|(_, s)| b64(s["span_id"].as_str().unwrap()) == preflight.span_id.to_be_bytes())
        .unwrap();
    assert_eq!(otlp_attrs(&op["attributes"])["stitch.preflight"], "b:true");
    assert!(op.get("parent_span_id").is_none(), "root: no parent");
}

// ---------------------------------------------------------------- faults

/// A local intake we control: answers `fail_first` requests with `fail_status`, then 200, and
/// keeps the bodies it accepted.
struct Intake {
    port: u16,
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
    requests: Arc<Mutex<u32>>,
}

impl Intake {
    fn start(rt: &tokio::runtime::Runtime, fail_first: u32, fail_status: u16) -> Intake {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0u32));
        let (acc, reqs) = (accepted.clone(), requests.clone());
        rt.spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (acc, reqs) = (acc.clone(), reqs.clone());
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut conn).await else { return };
                    let n = {
                        let mut r = reqs.lock().unwrap();
                        *r += 1;
                        *r
                    };
                    let status = if n <= fail_first { fail_status } else { 200 };
                    if status == 200 {
                        acc.lock().unwrap().push(body);
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                    );
                    conn.write_all(resp.as_bytes()).await.ok();
                });
            }
        });
        Intake {
            port,
            accepted,
            requests,
        }
    }
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + len].to_vec())
}

/// Span ids in a v0.4 msgpack body.
fn datadog_span_ids(body: &[u8]) -> Vec<u64> {
    let traces: Value = rmp_serde::from_slice(body).unwrap();
    traces
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t.as_array()
                .unwrap()
                .iter()
                .map(|s| s["span_id"].as_u64().unwrap())
        })
        .collect()
}

/// Span ids in an OTLP ExportTraceServiceRequest body (a small protobuf walk).
fn otlp_span_ids(body: &[u8]) -> Vec<u64> {
    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    fn children(b: &[u8], field: u64) -> Vec<&[u8]> {
        let (mut i, mut out) = (0, Vec::new());
        while i < b.len() {
            let key = varint(b, &mut i);
            match key & 7 {
                0 => {
                    varint(b, &mut i);
                }
                1 => i += 8,
                5 => i += 4,
                2 => {
                    let n = varint(b, &mut i) as usize;
                    if key >> 3 == field {
                        out.push(&b[i..i + n]);
                    }
                    i += n;
                }
                w => panic!("wire type {w}"),
            }
        }
        out
    }
    let mut ids = Vec::new();
    for rs in children(body, 1) {
        for ss in children(rs, 2) {
            for span in children(ss, 2) {
                let id = children(span, 2)[0];
                ids.push(u64::from_be_bytes(id.try_into().unwrap()));
            }
        }
    }
    ids
}

#[test]
fn failing_then_recovering_agent_gets_each_span_once() {
    for (exporter, fail_status) in [("datadog", 500u16), ("otlp", 503)] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let intake = Intake::start(&rt, 2, fail_status);
        let url = format!("http://127.0.0.1:{}", intake.port);
        let cfg = quick(ExportConfig {
            datadog: (exporter == "datadog").then(|| DatadogExport {
                agent_url: url.clone(),
            }),
            otlp: (exporter == "otlp").then(|| OtlpExport {
                endpoint: format!("{url}/v1/traces"),
                ca_pem: None,
            }),
            max_retries: 5,
            batch_size: 100,
            ..ExportConfig::default()
        });
        let m = ExportMetrics::new().unwrap();
        let (sink, mut run) = Running::start(cfg, ServiceInfo::default(), &m);
        let ids: Vec<u64> = (1..=10).collect();
        for id in &ids {
            sink.submit(span(u128::from(*id) << 64 | 7, *id, 1));
        }
        eventually("the batch to be accepted", Duration::from_secs(20), || {
            (counter(&m.exported, &[exporter]) == 10).then_some(())
        });
        run.stop(Duration::from_secs(10));
        let mut got: Vec<u64> = intake
            .accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| match exporter {
                "datadog" => datadog_span_ids(b),
                _ => otlp_span_ids(b),
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, ids, "{exporter}: every span exactly once");
        assert_eq!(
            *intake.requests.lock().unwrap(),
            3,
            "{exporter}: 2 failures + 1 success"
        );
        assert_eq!(counter(&m.batches, &[exporter, "retry"]), 2);
        assert_eq!(counter(&m.batches, &[exporter, "ok"]), 1);
        assert_eq!(counter(&m.batches, &[exporter, "failed"]), 0);
    }
}

#[test]
fn agent_down_costs_submit_nothing_and_drops_are_counted() {
    let port = free_port(); // nothing listens there
    let cfg = quick(ExportConfig {
        datadog: Some(DatadogExport {
            agent_url: format!("http://127.0.0.1:{port}"),
        }),
        otlp: Some(OtlpExport {
            endpoint: format!("http://127.0.0.1:{port}/v1/traces"),
            ca_pem: None,
        }),
        queue_capacity: 64,
        batch_size: 16,
        max_retries: 1,
        ..ExportConfig::default()
    });
    let m = ExportMetrics::new().unwrap();
    let (sink, mut run) = Running::start(cfg, ServiceInfo::default(), &m);
    let n = 20_000u64;
    let t0 = Instant::now();
    for i in 0..n {
        sink.submit(span(u128::from(i + 1), i + 1, 1));
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "20k submits took {took:?}");
    assert!(sink.queued() <= 2 * 64, "queues bounded: {}", sink.queued());
    // Every span is accounted for: dropped as queue_full, or tried and dropped.
    for e in ["datadog", "otlp"] {
        eventually("all drops counted", Duration::from_secs(20), || {
            let full = counter(&m.dropped, &[e, "queue_full"]);
            let exhausted = counter(&m.dropped, &[e, "retries_exhausted"]);
            (full + exhausted == n).then_some(())
        });
        assert!(counter(&m.dropped, &[e, "queue_full"]) > 0);
        assert!(counter(&m.batches, &[e, "failed"]) >= 1);
        assert_eq!(counter(&m.exported, &[e]), 0);
    }
    run.stop(Duration::from_secs(10));
}

#[test]
fn agent_that_never_answers_keeps_queue_bounded() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(0usize));
    let held2 = held.clone();
    rt.spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c); // accept, never read, never answer
            *held2.lock().unwrap() = conns.len();
        }
    });
    let cfg = ExportConfig {
        datadog: Some(DatadogExport {
            agent_url: format!("http://127.0.0.1:{port}"),
        }),
        otlp: None,
        queue_capacity: 100,
        batch_size: 10,
        flush_interval: Duration::from_millis(20),
        max_retries: 1,
        backoff: Duration::from_millis(10),
        request_timeout: Duration::from_millis(200),
        shutdown_timeout: Duration::from_millis(300),
    };
    let m = ExportMetrics::new().unwrap();
    let (sink, mut run) = Running::start(cfg, ServiceInfo::default(), &m);
    let mut slowest = Duration::ZERO;
    for round in 0..5u64 {
        let t0 = Instant::now();
        for i in 0..1_000 {
            sink.submit(span(1, round * 1_000 + i + 1, 1));
        }
        slowest = slowest.max(t0.elapsed());
        assert!(sink.queued() <= 100, "queue bounded: {}", sink.queued());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "1000 submits took {slowest:?}"
    );
    assert!(counter(&m.dropped, &["datadog", "queue_full"]) >= 5_000 - 100 - 10);
    // The hanging requests time out and are given up on: the exporter is not stuck.
    eventually(
        "a timed-out batch to be dropped",
        Duration::from_secs(20),
        || (counter(&m.dropped, &["datadog", "retries_exhausted"]) >= 10).then_some(()),
    );
    assert!(
        *held.lock().unwrap() >= 2,
        "the exporter really connected (and retried)"
    );
    // Shutdown with a hanging agent still ends within the shutdown timeout (+ slack).
    let took = run.stop(Duration::from_secs(10));
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let accounted = counter(&m.dropped, &["datadog", "queue_full"])
        + counter(&m.dropped, &["datadog", "retries_exhausted"])
        + counter(&m.dropped, &["datadog", "shutdown"]);
    assert_eq!(accounted, 5_000, "every span counted once");
}

#[test]
fn shutdown_flushes_what_is_queued() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let intake = Intake::start(&rt, 0, 500);
    let cfg = ExportConfig {
        datadog: Some(DatadogExport {
            agent_url: format!("http://127.0.0.1:{}", intake.port),
        }),
        otlp: None,
        batch_size: 4,
        flush_interval: Duration::from_secs(3600), // only shutdown can flush the tail
        ..ExportConfig::default()
    };
    let m = ExportMetrics::new().unwrap();
    let (sink, mut run) = Running::start(cfg, ServiceInfo::default(), &m);
    for i in 1..=10u64 {
        sink.submit(span(9, i, 1));
    }
    // Two full batches go at once; the last 2 spans wait for the (hour-long) timer.
    eventually("two full batches", Duration::from_secs(20), || {
        (counter(&m.exported, &["datadog"]) == 8).then_some(())
    });
    run.stop(Duration::from_secs(10));
    assert_eq!(counter(&m.exported, &["datadog"]), 10);
    let mut got: Vec<u64> = intake
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| datadog_span_ids(b))
        .collect();
    got.sort_unstable();
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    sink.submit(span(9, 11, 1));
    assert_eq!(
        counter(&m.dropped, &["datadog", "shutdown"]),
        1,
        "submit after shutdown counted"
    );
}
