//! Limits with clear answers (issue 14, item 2): request header size and count (431), target
//! length (414), body size per route (413), the header timeout (408, slowloris), the idle
//! keep-alive timeout, `server.max_connections` (503 beyond, the open ones untouched), and a
//! malformed first request refused with a body, counted and logged like every other request.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{base_config, Stitch, Upstream};

/// `[server]` settings added to the harness's own.
fn start(up: &Upstream, server: &str, route: &str) -> Stitch {
    start_with(up, server, route, "")
}

fn start_with(up: &Upstream, server: &str, route: &str, more: &str) -> Stitch {
    let base = base_config().replacen("[server]\n", &format!("[server]\n{server}"), 1);
    Stitch::start(&format!(
        "{base}[access_log]\nenabled = true\nformat = \"json\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n\
         [[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n{route}\n{more}",
        up.addr
    ))
}

/// An upstream that reads what it is sent and never answers, counting the bytes.
fn silent_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = got.clone();
    thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            let count = count.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (addr, got)
}

/// Send raw bytes on a fresh connection and read until the server closes it.
fn exchange(s: &Stitch, bytes: &[u8]) -> String {
    let mut c = TcpStream::connect(s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.write_all(bytes);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body(raw: &str) -> serde_json::Value {
    let b = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(b).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
}

/// Read one response with a `Content-Length` body off a kept-alive connection.
fn read_one(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if rest.len() >= len {
                return text;
            }
        }
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a whole response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// The value of one `stitch_requests_total` series.
fn requests(s: &Stitch, route: &str, class: &str) -> u64 {
    let series = format!("stitch_requests_total{{route=\"{route}\",status_class=\"{class}\"}}");
    s.metrics()
        .lines()
        .find(|l| l.starts_with(&series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Poll until stitch's stdout has an access log line with `status`, or fail at the deadline.
fn logged(s: &Stitch, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = s.stdout_lines.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["status"] == status).then_some(v)
        });
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line with status {status}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn oversized_heads_and_bodies_get_431_414_413_with_a_body() {
    let up = Upstream::start();
    // A chunked body declares no length: its head goes upstream before the body crosses the
    // limit, so that route's upstream never answers, and the client's 413 cannot race it.
    let (silent, _) = silent_upstream();
    let s = start_with(
        &up,
        "max_header_bytes = 2048\nmax_headers = 20\nmax_uri_bytes = 256\n",
        "max_body_bytes = 10\n",
        &format!(
            "[upstream.silent]\nservers = [\"{silent}\"]\n\n[[route]]\nname = \"chunked\"\n\
             path = \"/chunked\"\nupstream = \"silent\"\nmax_body_bytes = 10\n"
        ),
    );
    let keep = "GET /ok HTTP/1.1\r\nhost: h.test\r\n\r\n";
    let big_header = format!(
        "{keep}GET /a HTTP/1.1\r\nhost: h.test\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "v".repeat(3000)
    );
    let many = format!(
        "{keep}GET /a HTTP/1.1\r\nhost: h.test\r\n{}connection: close\r\n\r\n",
        (0..25)
            .map(|i| format!("x-h{i}: 1\r\n"))
            .collect::<String>()
    );
    let long_uri = format!(
        "{keep}GET /{} HTTP/1.1\r\nhost: h.test\r\nconnection: close\r\n\r\n",
        "a".repeat(300)
    );
    // Each limit both on a connection's first request (the front) and on a kept-alive
    // connection's second one (stitch's request filter).
    #[rustfmt::skip]
    let rows: &[(&str, String, u16, &str)] = &[
        ("header too large, first", big_header[keep.len()..].to_string(), 431, "header_too_large"),
        ("header too large, kept-alive", big_header.clone(), 431, "header_too_large"),
        ("too many headers, kept-alive", many.clone(), 431, "header_too_large"),
        ("target too long, first", long_uri[keep.len()..].to_string(), 414, "uri_too_long"),
        ("target too long, kept-alive", long_uri.clone(), 414, "uri_too_long"),
        ("declared body too large", "POST /a HTTP/1.1\r\nhost: h.test\r\ncontent-length: 11\r\n\r\n0123456789a".to_string(), 413, "body_too_large"),
        ("chunked body too large", "POST /chunked HTTP/1.1\r\nhost: h.test\r\ntransfer-encoding: chunked\r\n\r\n6\r\n012345\r\n6\r\n6789ab\r\n0\r\n\r\n".to_string(), 413, "body_too_large"),
    ];
    for (why, bytes, want, kind) in rows {
        let raw = exchange(&s, bytes.as_bytes());
        let last = raw.rfind("HTTP/1.1 ").map(|i| &raw[i..]).unwrap_or("");
        assert_eq!(status(last), *want, "{why}: {raw}");
        assert_eq!(body(last)["error"], *kind, "{why}: {raw}");
    }
    assert_eq!(requests(&s, "(none)", "4xx"), 5, "{}", s.metrics());
    assert_eq!(requests(&s, "app", "4xx"), 1, "{}", s.metrics());
    assert_eq!(requests(&s, "chunked", "4xx"), 1, "{}", s.metrics());
    assert_eq!(logged(&s, 413)["route"], "app");
    logged(&s, 431);
    logged(&s, 414);
    let n = up.requests().len();
    assert!(
        up.requests().iter().all(|r| r.path == "/ok"),
        "the upstream got a refused request: {:?}",
        up.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(n, 3, "one /ok per kept-alive row");
}

#[test]
fn a_client_trickling_its_head_is_cut_off_at_the_header_timeout() {
    let up = Upstream::start();
    let s = start(&up, "header_timeout_ms = 600\n", "");
    let mut c = TcpStream::connect(s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let t = Instant::now();
    let head =
        b"GET /slow HTTP/1.1\r\nhost: h.test\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // One byte every 100 ms: each read of Pingora's own would succeed well within its
    // per-read timeout, so only a deadline on the whole head stops this client.
    'send: for b in head {
        if c.write_all(&[*b]).is_err() {
            break;
        }
        let pause = Instant::now() + Duration::from_millis(100);
        while Instant::now() < pause {
            match c.read(&mut buf) {
                Ok(0) => break 'send,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.read_to_end(&mut out);
    let took = t.elapsed();
    let raw = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(status(&raw), 408, "{raw}");
    assert_eq!(body(&raw)["error"], "header_timeout");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(2500),
        "cut off after {took:?}, header_timeout_ms is 600"
    );
    assert!(up.requests().is_empty());
    assert_eq!(requests(&s, "(none)", "4xx"), 1);
    assert_eq!(logged(&s, 408)["error"], "header_timeout");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_at_the_keepalive_timeout() {
    let up = Upstream::start();
    let s = start(&up, "keepalive_timeout_seconds = 1\n", "");
    let mut c = TcpStream::connect(s.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /a HTTP/1.1\r\nhost: h.test\r\n\r\n")
        .unwrap();
    assert_eq!(status(&read_one(&mut c)), 200);
    let t = Instant::now();
    let mut buf = [0u8; 64];
    // Idle now: the next read ends when stitch closes the connection.
    let n = c.read(&mut buf).unwrap_or(0);
    let idle = t.elapsed();
    assert_eq!(n, 0, "stitch sent more on an idle connection");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "closed after {idle:?} idle, keepalive_timeout_seconds is 1"
    );
}

#[test]
fn beyond_max_connections_a_new_connection_gets_503_and_the_open_ones_go_on() {
    let up = Upstream::start();
    let s = start(&up, "max_connections = 2\n", "");
    let ask = |c: &mut TcpStream, path: &str| {
        write!(c, "GET {path} HTTP/1.1\r\nhost: h.test\r\n\r\n").unwrap();
        status(&read_one(c))
    };
    let mut a = TcpStream::connect(s.proxy).unwrap();
    let mut b = TcpStream::connect(s.proxy).unwrap();
    for c in [&mut a, &mut b] {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(ask(&mut a, "/a1"), 200);
    assert_eq!(ask(&mut b, "/b1"), 200);
    let refused = exchange(&s, b"GET /c HTTP/1.1\r\nhost: h.test\r\n\r\n");
    assert_eq!(status(&refused), 503, "{refused}");
    assert_eq!(body(&refused)["error"], "too_many_connections");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert_eq!(ask(&mut a, "/a2"), 200, "an open connection goes on");
    assert_eq!(ask(&mut b, "/b2"), 200, "an open connection goes on");
    drop(a);
    // The slot frees once stitch sees the close: poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = exchange(
            &s,
            b"GET /d HTTP/1.1\r\nhost: h.test\r\nconnection: close\r\n\r\n",
        );
        if status(&r) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot never came back: {r}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(requests(&s, "(none)", "5xx") >= 1);
}

#[test]
fn a_malformed_first_request_gets_a_400_with_a_body_counted_and_logged() {
    let up = Upstream::start();
    let s = start(&up, "", "");
    for (bytes, why) in [
        (
            &b"GET /a HTTP/1.1\r\nhost: h.test\r\nx-a: a\x00b\r\n\r\n"[..],
            "NUL in a value",
        ),
        (
            b"GET /a HTTP/1.1\r\nhost: h.test\r\nx-a: a\rb\r\n\r\n",
            "bare CR",
        ),
        (
            b"GET /a /b HTTP/1.1\r\nhost: h.test\r\n\r\n",
            "space in the target",
        ),
    ] {
        let raw = exchange(&s, bytes);
        assert_eq!(status(&raw), 400, "{why}: {raw}");
        assert_eq!(body(&raw)["error"], "bad_request", "{why}");
    }
    assert_eq!(requests(&s, "(none)", "4xx"), 3, "{}", s.metrics());
    assert_eq!(logged(&s, 400)["error"], "bad_request");
    assert!(up.requests().is_empty());
}
