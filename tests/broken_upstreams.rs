//! Broken upstreams (issue 14, item 4): a reset in the middle of a response, a slow first byte,
//! a kept-alive connection the upstream closes between requests, and a pool with every server
//! down. Each upstream is a raw socket scripted by the test, counting the connections it accepts.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{base_config, dead_addr, get, request, Stitch};

/// A listener that hands each accepted connection, with its number (from 0), to `script` on a
/// thread of its own, and counts the connections.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Scripted {
    fn start(script: impl Fn(usize, TcpStream) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt, script) = (accepted.clone(), stop.clone(), Arc::new(script));
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let n = count.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                thread::spawn(move || script(n, stream));
            }
        });
        Scripted {
            addr,
            accepted,
            stop,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Read one request head and its `Content-Length` body, byte by byte so that nothing past it
/// is consumed. `None` when the connection ends first.
fn read_one(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(head.lines().next().unwrap_or_default().to_string())
}

fn config(servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{}[upstream.app]\nservers = [{}]\n{extra}\n[[route]]\nname = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        base_config(),
        list.join(", ")
    )
}

/// How a client saw a response end.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Complete by its framing (what the client received).
    Whole(String),
    /// The connection ended (FIN) before the framing said the response was complete.
    Truncated,
    /// The connection was reset.
    Reset,
    /// Nothing more within the deadline, the response still incomplete.
    Hung,
}

/// Read a response to its end and say how it ended. `seen_partial` is told once the head and
/// `partial` body bytes have arrived.
fn read_response(s: &mut TcpStream, partial: usize, seen_partial: mpsc::Sender<()>) -> Ending {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut told = false;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body = &buf[end + 4..];
            let complete = if let Some(cl) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                body.len() >= cl
            } else if head.contains("transfer-encoding: chunked") {
                body.ends_with(b"\r\n0\r\n\r\n") || body == b"0\r\n\r\n"
            } else {
                false // close-delimited: complete only at a clean close
            };
            if complete {
                return Ending::Whole(String::from_utf8_lossy(&buf).into_owned());
            }
            if !told && body.len() >= partial {
                told = true;
                let _ = seen_partial.send(());
            }
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) => {
                let close_delimited = buf
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|end| {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        !head.contains("content-length:") && !head.contains("transfer-encoding:")
                    })
                    .unwrap_or(false);
                return if close_delimited {
                    Ending::Whole(String::from_utf8_lossy(&buf).into_owned())
                } else {
                    Ending::Truncated
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ending::Reset,
            Err(_) => return Ending::Hung,
        }
    }
}

/// How the upstream ends its response.
#[derive(Clone, Copy, Debug)]
enum Break {
    /// RST after the head and part of a `Content-Length` body.
    ResetLength,
    /// RST after the head and one chunk of a chunked body.
    ResetChunked,
    /// RST in the middle of a close-delimited body (where a FIN would be its legitimate end).
    ResetCloseDelimited,
    /// FIN after the head and part of a `Content-Length` body.
    FinLength,
}

/// The client never takes a response cut short by the upstream for a whole one: the proxy ends
/// the client connection instead of completing the framing.
#[test]
fn a_response_cut_short_upstream_never_looks_whole() {
    // More than Pingora's 1460-byte client write buffer, which holds a Content-Length
    // response's first bytes until it fills: the client sees the partial body at once.
    const PARTIAL: usize = 4096;
    for brk in [
        Break::ResetLength,
        Break::ResetChunked,
        Break::ResetCloseDelimited,
        Break::FinLength,
    ] {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Arc::new(Mutex::new(go_rx));
        let up = Scripted::start(move |_, mut s| {
            // The request is a POST whose body is left unread: Linux answers a close with
            // unread bytes in the receive buffer with a RST rather than a FIN.
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap_or(0) == 0 {
                    return;
                }
                head.push(b[0]);
            }
            // Wait until the body is in the receive buffer, so the close below is a reset.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut peek = [0u8; 16];
            while s.peek(&mut peek).unwrap_or(0) < 16 && Instant::now() < deadline {
                thread::yield_now();
            }
            let data = vec![b'x'; PARTIAL];
            let start: Vec<u8> = match brk {
                Break::ResetLength | Break::FinLength => {
                    let mut v = b"HTTP/1.1 200 OK\r\ncontent-length: 10000\r\n\r\n".to_vec();
                    v.extend_from_slice(&data);
                    v
                }
                Break::ResetChunked => {
                    let mut v = format!(
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{PARTIAL:x}\r\n"
                    )
                    .into_bytes();
                    v.extend_from_slice(&data);
                    v.extend_from_slice(b"\r\n");
                    v
                }
                Break::ResetCloseDelimited => {
                    let mut v = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
                    v.extend_from_slice(&data);
                    v
                }
            };
            let _ = s.write_all(&start);
            let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            if let Break::FinLength = brk {
                // Read the body first: with nothing unread, the close is a FIN.
                let mut body = [0u8; 16];
                let _ = s.read_exact(&mut body);
                let _ = s.shutdown(Shutdown::Write);
            }
            drop(s);
        });
        let s = Stitch::start(&config(&[up.addr], ""));
        let mut c = TcpStream::connect(s.proxy).unwrap();
        c.write_all(
            b"POST /x HTTP/1.1\r\nHost: h.test\r\ncontent-length: 16\r\n\r\n0123456789abcdef",
        )
        .unwrap();
        let ending = read_response(&mut c, PARTIAL, go_tx);
        assert!(
            matches!(ending, Ending::Truncated | Ending::Reset),
            "{brk:?}: the client saw {ending:?}; stitch said:\n{}",
            s.stderr_lines.lock().unwrap().join("\n")
        );
    }
}

/// An upstream that accepts the request and never answers is a 504 at `read_timeout_ms`, on
/// one connection (a read timeout is not retried).
#[test]
fn a_slow_first_byte_is_a_504_at_the_read_timeout() {
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    let hold_rx = Arc::new(Mutex::new(hold_rx));
    let up = Scripted::start(move |_, mut s| {
        read_one(&mut s);
        // Hold the connection open, silent, until the test ends.
        let _ = hold_rx.lock().unwrap().recv();
    });
    let s = Stitch::start(&config(&[up.addr], "read_timeout_ms = 400\n"));
    let t = Instant::now();
    let r = get(&s.url("/slow"), &[]).unwrap();
    let took = t.elapsed();
    drop(hold_tx);
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1900),
        "answered after {took:?}, read_timeout_ms is 400"
    );
    assert_eq!(up.accepted(), 1, "a read timeout must not be retried");
}

/// What the killing upstream saw: `(connection, request line, answered)`.
type Log = Arc<Mutex<Vec<(usize, String, bool)>>>;

/// An upstream that answers the first request on each connection and closes the connection,
/// unanswered, on any later one: a kept-alive connection closed between requests, as stitch
/// sees it when it reuses the connection.
fn killing_upstream() -> (Scripted, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let up = Scripted::start(move |n, mut s| {
        let mut first = true;
        while let Some(line) = read_one(&mut s) {
            seen.lock().unwrap().push((n, line, first));
            if !first {
                return; // closed with the request unanswered
            }
            first = false;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    (up, log)
}

/// Send `method path` until one lands on a kept-alive upstream connection (the first ones may
/// find the pool empty and open a connection of their own), and return that response.
fn until_reused(s: &Stitch, log: &Log, method: &str, path: &str) -> common::Response {
    for i in 0..20 {
        let p = format!("{path}-{i}");
        let body: &[u8] = if method == "POST" { b"body" } else { b"" };
        let r = request(method, &s.url(&p), &[], body).unwrap();
        let line = format!("{method} {p} HTTP/1.1");
        let reused = log
            .lock()
            .unwrap()
            .iter()
            .any(|(_, l, first)| *l == line && !first);
        if reused {
            return r;
        }
        assert_eq!(
            r.status, 200,
            "{method} {p} on a fresh connection: {}",
            r.body
        );
    }
    panic!("{method} never reached a kept-alive upstream connection in 20 tries");
}

#[test]
fn a_closed_keepalive_connection_retries_get_once_and_never_post() {
    let (up, log) = killing_upstream();
    let s = Stitch::start(&config(&[up.addr], ""));
    assert_eq!(get(&s.url("/warm"), &[]).unwrap().status, 200);

    let r = until_reused(&s, &log, "GET", "/idempotent");
    assert_eq!(
        r.status, 200,
        "GET must be retried on a fresh connection: {}",
        r.body
    );
    let (line, times) = {
        let log = log.lock().unwrap();
        let line = log
            .iter()
            .rev()
            .find(|(_, _, first)| !first)
            .unwrap()
            .1
            .clone();
        let times: Vec<(usize, bool)> = log
            .iter()
            .filter(|(_, l, _)| *l == line)
            .map(|(c, _, f)| (*c, *f))
            .collect();
        (line, times)
    };
    assert_eq!(
        times.len(),
        2,
        "`{line}` reached the upstream {times:?}: once on the closed connection, once retried"
    );
    assert!(
        times[1].1,
        "the retry went out on a fresh connection: {times:?}"
    );

    let r = until_reused(&s, &log, "POST", "/not-idempotent");
    assert_eq!(r.status, 502, "a POST is not retried: {}", r.body);
    let log = log.lock().unwrap();
    let post = log
        .iter()
        .rev()
        .find(|(_, _, first)| !first)
        .unwrap()
        .1
        .clone();
    let n = log.iter().filter(|(_, l, _)| *l == post).count();
    assert_eq!(n, 1, "`{post}` reached the upstream {n} times");
}

/// Every server refusing connections: a 502 at once for each request, one connect attempt per
/// request (stitch does not retry a failed connect), counted by kind.
#[test]
fn all_servers_down_is_a_502_at_once() {
    let dead = [dead_addr(), dead_addr(), dead_addr()];
    let s = Stitch::start(&config(&dead, ""));
    for i in 0..6 {
        let t = Instant::now();
        let r = get(&s.url(&format!("/down-{i}")), &[]).unwrap();
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "took {:?}",
            t.elapsed()
        );
    }
    let m = s.metrics();
    let refused = m
        .lines()
        .find(|l| {
            l.starts_with("stitch_upstream_errors_total{") && l.contains("kind=\"connect_refused\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(refused, Some(6.0), "{m}");

    // Servers whose port accepts and drops every connection (an app crashed behind a live
    // listener): each request costs exactly one connection, never a storm of retries.
    let drops: Vec<Scripted> = (0..3).map(|_| Scripted::start(|_, s| drop(s))).collect();
    let addrs: Vec<SocketAddr> = drops.iter().map(|d| d.addr).collect();
    let s = Stitch::start(&config(&addrs, ""));
    for i in 0..6 {
        let r = get(&s.url(&format!("/drop-{i}")), &[]).unwrap();
        assert_eq!(r.status, 502, "{}", r.body);
    }
    let total: usize = drops.iter().map(Scripted::accepted).sum();
    assert_eq!(total, 6, "connections per request: {total} for 6 requests");
}

/// With a health check, a pool whose servers are all down answers 502 `no_healthy_upstream`
/// without trying to connect.
#[test]
fn all_servers_down_with_a_health_check_is_a_502_without_a_connect() {
    let dead = [dead_addr(), dead_addr()];
    let s = Stitch::start(&config(
        &dead,
        "health_check = { interval_ms = 100 }\nconnect_timeout_ms = 200\n",
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&s.url("/hc"), &[]).unwrap();
        assert_eq!(r.status, 502, "{}", r.body);
        if r.body.contains("no healthy server") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the health check never marked the servers down"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
