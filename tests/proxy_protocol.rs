//! The PROXY protocol from a real sender (issue 18): HAProxy (Debian's package, installed by
//! `.ci/setup test`) with `send-proxy` and `send-proxy-v2` in front of stitch's proxy app
//! behind [`stitch::proxy::accept::ProxyProtocol`], the way a `proxy_protocol = true` listener
//! serves it; a connection without a valid header is closed.
//!
//! The listener option itself belongs to `[[server.listener]]` (edge TLS, not merged yet), so
//! this test runs the app in process: a tokio listener on port 0 hands each connection to the
//! wrapped app exactly as Pingora's accept loop does, with the socket digest Pingora sets.
//! HAProxy listens on a Unix socket with `accept-proxy`: the test, as the client, tells it which
//! client address to claim, and HAProxy encodes that address its own way toward stitch.

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::configuration::ServerConf;

use stitch::metrics::Metrics;
use stitch::proxy::accept::{Acceptor, ProxyProtocol};
use stitch::proxy::Stitch;
use stitch::runtime::{compile, Live};

use common::{metric, parse_response, Response};
use peers::PeerProcess;

/// stitch's proxy app on an echo route, behind the PROXY protocol, on a port-0 listener.
struct Edge {
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    _rt: tokio::runtime::Runtime,
}

impl Edge {
    fn start(trusted_proxies: &str) -> Edge {
        let text = format!(
            "[server]\ntrusted_proxies = {trusted_proxies}\n\n\
             [[route]]\nname = \"echo\"\npath = \"/\"\nupstream = \"builtin:echo\"\n"
        );
        let config = stitch::config::parse(&text).expect("config");
        let metrics = Arc::new(Metrics::new());
        let (runtime, _tasks) = compile(config, "test".into(), 1, &metrics, None, None).unwrap();
        let live = Arc::new(Live::new(runtime));
        let conf = Arc::new(ServerConf::default());
        let http = pingora::proxy::http_proxy(&conf, Stitch::new(live.clone(), metrics.clone()));
        let acceptor = Arc::new(Acceptor::new(live, &metrics));
        let app = Arc::new(ProxyProtocol::new(http, acceptor));

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        rt.spawn(async move {
            let _stop = _stop;
            while let Ok((tcp, _)) = listener.accept().await {
                // What Pingora's listener does with an accepted socket.
                let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
                let mut l4 = L4Stream::from(tcp);
                l4.set_socket_digest(digest);
                let stream: Stream = Box::new(l4);
                let (app, shutdown) = (app.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let _ = app.process_new(stream, &shutdown).await;
                });
            }
        });
        Edge {
            addr,
            metrics,
            _rt: rt,
        }
    }

    fn count(&self, result: &str) -> f64 {
        let text = String::from_utf8(self.metrics.render()).unwrap();
        metric(&text, "stitch_proxy_protocol_total", &[("result", result)]).unwrap_or(0.0)
    }
}

fn haproxy_bin() -> PathBuf {
    let on_path = Command::new("haproxy").arg("-v").output().is_ok();
    if on_path {
        return PathBuf::from("haproxy");
    }
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    assert!(
        sbin.exists(),
        "haproxy is missing: run `.ci/setup test` to install Debian's package"
    );
    sbin
}

/// HAProxy in TCP mode: a Unix-socket frontend that accepts a PROXY header from the test, a
/// backend that sends its own (`send`: `send-proxy` or `send-proxy-v2`) to `to`.
struct HaProxy {
    socket: PathBuf,
    _process: PeerProcess,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    fn start(send: &str, to: std::net::SocketAddr) -> HaProxy {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fe.sock");
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n    maxconn 100\n\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
                 frontend fe\n    bind unix@{} accept-proxy\n    default_backend be\n\n\
                 backend be\n    server stitch {to} {send}\n",
                socket.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(haproxy_bin());
        cmd.arg("-db").arg("-f").arg(&cfg);
        let (process, _rx) = PeerProcess::spawn("haproxy", cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {}:\n{}",
                socket.display(),
                process.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        HaProxy {
            socket,
            _process: process,
            _dir: dir,
        }
    }

    /// A connection through HAProxy from the client `claimed` (a v1 `PROXY ...` line).
    fn connect(&self, claimed: &str) -> UnixStream {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(format!("{claimed}\r\n").as_bytes()).unwrap();
        s
    }
}

/// One request on `s` and its response (read by `Content-Length`, the connection kept).
fn exchange(s: &mut impl ReadWrite, path: &str, close: bool) -> Response {
    let conn = if close { "close" } else { "keep-alive" };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: shop.example\r\nconnection: {conn}\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {raw:?}");
        raw.push(byte[0]);
    }
    let head = parse_response(&raw, true).unwrap();
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    raw.extend_from_slice(&body);
    parse_response(&raw, false).unwrap()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn client_of(r: &Response) -> String {
    r.json()["client"].as_str().unwrap_or("").to_string()
}

#[test]
fn haproxy_send_proxy_v1_gives_the_client_on_every_request_of_the_connection() {
    let edge = Edge::start("[\"127.0.0.1\"]");
    let haproxy = HaProxy::start("send-proxy", edge.addr);
    let mut c = haproxy.connect("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443");
    let first = exchange(&mut c, "/one", false);
    assert_eq!(client_of(&first), "203.0.113.7", "{}", first.body);
    assert_eq!(first.json()["headers"]["x-forwarded-for"], "203.0.113.7");
    // The same connection again: the header is read once, the second request parses.
    let second = exchange(&mut c, "/two", true);
    assert_eq!(client_of(&second), "203.0.113.7", "{}", second.body);
    assert_eq!(edge.count("proxied"), 1.0);
}

#[test]
fn haproxy_send_proxy_v2_gives_an_ipv6_client() {
    let edge = Edge::start("[\"127.0.0.1\"]");
    let haproxy = HaProxy::start("send-proxy-v2", edge.addr);
    let mut c = haproxy.connect("PROXY TCP6 2001:db8::7 2001:db8::1 5555 443");
    let r = exchange(&mut c, "/v2", true);
    assert_eq!(client_of(&r), "2001:db8::7", "{}", r.body);
    assert_eq!(edge.count("proxied"), 1.0);
}

/// A sender that is not a trusted proxy: its header is read (the request still parses) and
/// its claim ignored.
#[test]
fn an_untrusted_senders_addresses_are_ignored() {
    let edge = Edge::start("[\"10.0.0.0/8\"]");
    let haproxy = HaProxy::start("send-proxy-v2", edge.addr);
    let mut c = haproxy.connect("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443");
    let r = exchange(&mut c, "/untrusted", true);
    assert_eq!(client_of(&r), "127.0.0.1", "{}", r.body);
    assert_eq!(edge.count("untrusted"), 1.0);
    assert_eq!(edge.count("proxied"), 0.0);
}

/// A connection without a valid header is closed without an answer.
#[test]
fn a_broken_header_closes_the_connection() {
    let edge = Edge::start("[\"127.0.0.1\"]");
    let broken: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        b"PROXY TCP4 203.0.113.7\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c",
    ];
    for bytes in broken {
        let mut s = std::net::TcpStream::connect(edge.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(bytes).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(
            got.is_empty(),
            "{:?} got an answer: {}",
            bytes,
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(edge.count("invalid"), 3.0);
    assert_eq!(edge.count("proxied"), 0.0);
}
