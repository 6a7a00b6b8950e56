//! HTTP/2 through stitch with real peers: gRPC (Python grpcio, `tests/peers/grpc_peer.py`)
//! over h2c and over TLS to upstreams spoken to in h2c and in h2 over TLS, with the trace
//! headers injected and the edge span carrying the gRPC status; `max_h2_streams`; and POST
//! bodies from HTTP/2 clients (curl) to an HTTP/1.1 upstream over a reused connection, the case
//! of cloudflare/pingora#935.

mod common;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/pki.rs"]
mod pki;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{manifest_dir, peers_python, Stitch};
use peers::{PeerProcess, TestAgent};
use pki::{Leaf, Pki};
use serde_json::Value;

fn addr_of(url: &str) -> SocketAddr {
    url.split_once("://").unwrap().1.parse().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// gRPC

/// A running `grpc_peer.py server`: cleartext, or TLS with `leaf`.
struct GrpcServer {
    /// Killed on drop.
    _process: PeerProcess,
    addr: SocketAddr,
}

impl GrpcServer {
    fn start(tls: Option<&Leaf>) -> GrpcServer {
        let peers = manifest_dir().join("tests/peers");
        let mut cmd = Command::new(peers_python());
        cmd.arg(peers.join("grpc_peer.py"))
            .arg("server")
            .current_dir(&peers);
        if let Some(l) = tls {
            cmd.arg(&l.cert).arg(&l.key);
        }
        let (mut process, rx) = PeerProcess::spawn("grpc_peer server", cmd);
        let addr = process.wait_line(&rx, "grpc_peer listening on ");
        let addr = addr.parse().unwrap();
        GrpcServer {
            _process: process,
            addr,
        }
    }
}

/// Run `grpc_peer.py MODE ARGS...` (the real grpcio client) and parse its JSON line.
fn grpc_client(mode: &str, args: &[String]) -> Value {
    let peers = manifest_dir().join("tests/peers");
    let out = Command::new(peers_python())
        .arg(peers.join("grpc_peer.py"))
        .arg(mode)
        .args(args)
        .current_dir(&peers)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("run grpc_peer.py");
    assert!(out.status.success(), "grpc client failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// What a gRPC client run must show: every call answered, the stream whole, the failure's
/// status passed through, and the trace headers stitch injected for trace `trace_id`.
fn assert_calls(v: &Value, trace_id: u64, incoming_parent: u64) {
    let unary = &v["unary"];
    assert_eq!(unary["request"], "hello", "{v}");
    let md = &unary["metadata"];
    assert_eq!(md["x-datadog-trace-id"], trace_id.to_string(), "{v}");
    let parent: u64 = md["x-datadog-parent-id"].as_str().unwrap().parse().unwrap();
    assert_ne!(
        parent, incoming_parent,
        "stitch's edge span is the parent: {v}"
    );
    assert_eq!(
        md["traceparent"],
        format!("00-{trace_id:032x}-{parent:016x}-01"),
        "{v}"
    );
    let stream = v["stream"].as_array().unwrap();
    assert_eq!(stream.len(), 3, "{v}");
    for (i, m) in stream.iter().enumerate() {
        assert_eq!(m["i"], i, "{v}");
        assert_eq!(m["metadata"]["x-datadog-trace-id"], trace_id.to_string());
    }
    assert_eq!(
        v["fail"]["code"], "NOT_FOUND",
        "trailers passed through: {v}"
    );
    assert_eq!(v["fail"]["details"], "no such thing", "{v}");
    let cut = &v["stream_fail"];
    assert_eq!(
        (&cut["code"], &cut["details"], &cut["received"]),
        (
            &"RESOURCE_EXHAUSTED".into(),
            &"stream cut".into(),
            &1.into()
        ),
        "{v}"
    );
}

#[test]
fn grpc_passes_through_over_h2c_and_tls_with_trace_headers_and_the_status_in_the_span() {
    let pki = Pki::new();
    let edge = pki.leaf("edge", "api.test", &["api.test"], 2);
    let upstream_cert = pki.leaf("upstream", "grpc.test", &["grpc.test"], 2);
    let plain = GrpcServer::start(None);
    let secure = GrpcServer::start(Some(&upstream_cert));
    let agent = TestAgent::start();
    let config = format!(
        "[server]\nthreads = 1\nshutdown_timeout_seconds = 1\n\n\
         [[server.listener]]\naddress = \"127.0.0.1:0\"\nh2c = true\n\n\
         [[server.listener]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [{{ cert_file = {:?}, key_file = {:?} }}] }}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [export]\nflush_interval_ms = 100\n\
         [export.datadog]\nagent_url = \"{}\"\n\
         [export.otlp]\nendpoint = \"{}\"\n\n\
         [upstream.plain]\nservers = [\"{}\"]\nprotocol = \"h2c\"\n\n\
         [upstream.secure]\nservers = [\"{}\"]\ntls = true\nsni = \"grpc.test\"\nca_file = {:?}\nprotocol = \"h2\"\n\n\
         [[route]]\nname = \"grpc-tls\"\nhost = \"api.test\"\npath = \"/\"\nupstream = \"secure\"\n\n\
         [[route]]\nname = \"grpc\"\npath = \"/\"\nupstream = \"plain\"\n",
        edge.cert.display().to_string(),
        edge.key.display().to_string(),
        agent.url(),
        agent.otlp_traces_endpoint(),
        plain.addr,
        secure.addr,
        pki.ca.display().to_string(),
    );
    let s = Stitch::start(&config);
    let (h2c, tls) = (addr_of(&s.listeners[0]), addr_of(&s.listeners[1]));
    let ids = |t: u64, p: u64| {
        vec![
            format!("x-datadog-trace-id={t}"),
            format!("x-datadog-parent-id={p}"),
            "x-datadog-sampling-priority=1".to_string(),
        ]
    };

    // Cleartext: client -h2c-> stitch -h2c-> server.
    let (t1, p1) = (0x1111_2222_3333_4444u64, 77);
    let v = grpc_client("client", &[vec![h2c.to_string()], ids(t1, p1)].concat());
    assert_calls(&v, t1, p1);
    // TLS: client -h2 (ALPN)-> stitch -h2 over TLS (ALPN, the test CA)-> server.
    let (t2, p2) = (0x5555_6666_7777_8888u64, 99);
    let tls_args = vec![
        tls.to_string(),
        pki.ca.display().to_string(),
        "api.test".to_string(),
    ];
    let v = grpc_client("client", &[tls_args, ids(t2, p2)].concat());
    assert_calls(&v, t2, p2);
    let m = s.metrics();
    for route in ["grpc", "grpc-tls"] {
        let served = common::metric(
            &m,
            "stitch_requests_total",
            &[("route", route), ("status_class", "2xx")],
        );
        assert_eq!(served, Some(4.0), "{route}: four calls\n{m}");
    }

    // The edge spans: the failing call marked with its gRPC code; https and HTTP/2 recorded.
    for (trace, scheme) in [(t1, "http"), (t2, "https")] {
        let spans = agent.wait_dd("four edge spans", trace, |spans| {
            (spans.iter().filter(|s| s.service == "stitch").count() == 4).then(|| spans.to_vec())
        });
        for span in spans.iter().filter(|s| s.service == "stitch") {
            let url = &span.meta["http.url"];
            assert!(url.starts_with(&format!("{scheme}://")), "{span:#?}");
            if url.ends_with("/stitch.test.Echo/Fail") {
                assert_eq!(span.error, 1, "{span:#?}");
                assert_eq!(span.meta["error.type"], "grpc_status_5", "{span:#?}");
                assert!(
                    span.meta["error.message"].contains("NOT_FOUND: no such thing"),
                    "{span:#?}"
                );
            } else if url.ends_with("/stitch.test.Echo/StreamFail") {
                assert_eq!(span.error, 1, "{span:#?}");
                assert_eq!(span.meta["error.type"], "grpc_status_8", "{span:#?}");
                assert!(
                    span.meta["error.message"].contains("RESOURCE_EXHAUSTED: stream cut"),
                    "{span:#?}"
                );
            } else {
                assert_eq!(span.error, 0, "{span:#?}");
            }
        }
        let otlp = agent.wait_otlp("four OTLP edge spans", trace as u128, |spans| {
            (spans.len() == 4).then(|| spans.to_vec())
        });
        for span in &otlp {
            assert_eq!(
                span.attr("url.scheme"),
                Some(&Value::from(scheme)),
                "{span:#?}"
            );
            assert_eq!(
                span.attr("network.protocol.version"),
                Some(&Value::from("2")),
                "{span:#?}"
            );
        }
    }
}

#[test]
fn max_h2_streams_multiplexes_concurrent_requests_on_one_upstream_connection() {
    let server = GrpcServer::start(None);
    let config = format!(
        "[server]\nthreads = 1\nshutdown_timeout_seconds = 1\n\n\
         [[server.listener]]\naddress = \"127.0.0.1:0\"\nh2c = true\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream.many]\nservers = [\"{0}\"]\nprotocol = \"h2c\"\n\n\
         [upstream.one]\nservers = [\"{0}\"]\nprotocol = \"h2c\"\nmax_h2_streams = 1\n\n\
         [[route]]\nname = \"one\"\nhost = \"one.test\"\npath = \"/\"\nupstream = \"one\"\n\n\
         [[route]]\nname = \"many\"\npath = \"/\"\nupstream = \"many\"\n",
        server.addr
    );
    let s = Stitch::start(&config);
    let target = s.proxy.to_string();
    let peers = |extra: &[&str]| -> BTreeSet<String> {
        let mut args = vec![target.clone(), "6".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let v = grpc_client("concurrent", &args);
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    // The default (100 streams): six overlapping calls share one upstream connection.
    let shared = peers(&[]);
    assert_eq!(shared.len(), 1, "{shared:?}");
    // One stream per connection (Pingora's own default): one connection per overlapping call.
    let separate = peers(&["one.test"]);
    assert_eq!(separate.len(), 6, "{separate:?}");
}

// ---------------------------------------------------------------------------------------------
// POST bodies from HTTP/2 clients to an HTTP/1.1 upstream (cloudflare/pingora#935)

/// A request a strict HTTP/1.1 upstream read: how its body was framed, its bytes, and the
/// connection it came on.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    chunked: bool,
    body: Vec<u8>,
}

/// An HTTP/1.1 upstream that parses bodies strictly (Content-Length or chunked, trailers
/// included) and refuses anything after them that is not a request line, so a chunk
/// terminator written twice shows up as a bad request on the reused connection.
struct StrictUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl StrictUpstream {
    fn start() -> StrictUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (seen.clone(), errors.clone());
        thread::spawn(move || {
            for (conn, stream) in listener.incoming().map_while(Result::ok).enumerate() {
                let (s, e) = (s.clone(), e.clone());
                thread::spawn(move || {
                    if let Err(why) = serve_strict(conn, stream, &s) {
                        e.lock().unwrap().push(format!("connection {conn}: {why}"));
                    }
                });
            }
        });
        StrictUpstream { addr, seen, errors }
    }
}

fn serve_strict(conn: usize, stream: TcpStream, seen: &Mutex<Vec<Seen>>) -> Result<(), String> {
    let mut out = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, _target, version) = (parts.next(), parts.next(), parts.next());
        if !matches!(method, Some("POST" | "GET" | "PUT")) || version != Some("HTTP/1.1") {
            out.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .ok();
            return Err(format!("not a request line: {line:?}"));
        }
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut h = String::new();
            r.read_line(&mut h).map_err(|e| e.to_string())?;
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().map_err(|e| e.to_string())?);
            }
            if h.starts_with("transfer-encoding:") && h.ends_with("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| e.to_string())?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
                    .map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
                if n == 0 {
                    // Trailers, then the empty line.
                    loop {
                        let mut t = String::new();
                        r.read_line(&mut t).map_err(|e| e.to_string())?;
                        if t == "\r\n" {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                if &chunk[n..] != b"\r\n" {
                    return Err("chunk not followed by CRLF".into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body = vec![0; n];
            r.read_exact(&mut body).map_err(|e| e.to_string())?;
        }
        let answer = format!("{{\"len\":{}}}", body.len());
        seen.lock().unwrap().push(Seen {
            conn,
            chunked,
            body,
        });
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        out.write_all(resp.as_bytes()).map_err(|e| e.to_string())?;
    }
}

/// A body of `n` bytes that differs at every position (so a shifted or repeated byte shows).
fn body_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn h2_post_bodies_fixed_and_chunked_reach_an_http1_upstream_intact_over_a_reused_connection() {
    let pki = Pki::new();
    let edge = pki.leaf("edge", "api.test", &["api.test"], 2);
    let up = StrictUpstream::start();
    let config = format!(
        "[server]\nthreads = 1\nshutdown_timeout_seconds = 1\n\n\
         [[server.listener]]\naddress = \"127.0.0.1:0\"\nh2c = true\n\n\
         [[server.listener]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [{{ cert_file = {:?}, key_file = {:?} }}] }}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream.legacy]\nservers = [\"{}\"]\n\n\
         [[route]]\nname = \"legacy\"\npath = \"/\"\nupstream = \"legacy\"\n",
        edge.cert.display().to_string(),
        edge.key.display().to_string(),
        up.addr
    );
    let s = Stitch::start(&config);
    let (h2c, tls) = (addr_of(&s.listeners[0]), addr_of(&s.listeners[1]));
    let dir = tempfile::tempdir().unwrap();
    let sizes = [1usize, 100, 16_385, 100_000, 1 << 20];
    let mut expected = Vec::new();
    for (round, size) in sizes.iter().enumerate() {
        let file = dir.path().join(format!("body-{size}"));
        let body = body_of(*size);
        std::fs::write(&file, &body).unwrap();
        // `--data-binary @file` sends a content-length; `-T -` sends none over h2, so stitch
        // frames the body chunked for the HTTP/1.1 upstream.
        for (chunked, base) in [(false, h2c), (true, h2c), (false, tls), (true, tls)] {
            let mut cmd = Command::new("curl");
            cmd.args([
                "-sS",
                "--max-time",
                "20",
                "-o",
                "-",
                "-w",
                " %{http_version}",
            ]);
            if base == tls {
                cmd.arg("--http2")
                    .arg("--cacert")
                    .arg(&pki.ca)
                    .arg("--resolve")
                    .arg(format!("api.test:{}:127.0.0.1", tls.port()));
            } else {
                cmd.arg("--http2-prior-knowledge");
            }
            if chunked {
                // Streamed from stdin: curl learns the end only at EOF and ends the request
                // with an empty DATA frame carrying END_STREAM, the trigger of pingora#935.
                cmd.args(["-T", "-"]);
            } else {
                cmd.arg("--data-binary").arg(format!("@{}", file.display()));
            }
            cmd.arg("-X").arg("POST");
            let url = if base == tls {
                format!("https://api.test:{}/post/{round}", tls.port())
            } else {
                format!("http://{base}/post/{round}")
            };
            let stdin = match chunked {
                true => Stdio::from(std::fs::File::open(&file).unwrap()),
                false => Stdio::null(),
            };
            let out = cmd.arg(&url).stdin(stdin).output().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{{\"len\":{size}}} 2"),
                "{size} bytes, chunked {chunked}, {url}: {}\nupstream errors: {:?}",
                text(&out),
                up.errors.lock().unwrap()
            );
            expected.push((chunked, body.clone()));
        }
    }
    let seen = up.seen.lock().unwrap().clone();
    assert!(
        up.errors.lock().unwrap().is_empty(),
        "{:?}",
        up.errors.lock().unwrap()
    );
    assert_eq!(seen.len(), expected.len());
    for (i, (s, (chunked, body))) in seen.iter().zip(&expected).enumerate() {
        assert_eq!(s.chunked, *chunked, "request {i}: framing");
        assert!(
            s.body == *body,
            "request {i}: {} bytes arrived, {} sent",
            s.body.len(),
            body.len()
        );
    }
    // The upstream connection was kept and reused from one request to the next.
    let conns: BTreeSet<usize> = seen.iter().map(|s| s.conn).collect();
    assert!(
        conns.len() < seen.len() / 2,
        "{} requests on {} connections",
        seen.len(),
        conns.len()
    );
}
