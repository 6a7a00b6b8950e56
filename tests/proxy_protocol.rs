//! The PROXY protocol from a real sender (issue 18), on the real binary: HAProxy (Debian's
//! package, installed by `.ci/setup test`) with `send-proxy` and `send-proxy-v2` in TCP mode in
//! front of `[[server.listener]]`s with `proxy_protocol = true`, plain and TLS; a connection
//! without a valid header, or whose header does not come within `proxy_protocol_timeout_ms`, is
//! closed.
//!
//! HAProxy listens on a Unix socket with `accept-proxy`: the test, as the client, tells it which
//! client address to claim, and HAProxy encodes that address its own way toward stitch. (A
//! Unix socket needs no port: HAProxy cannot report one it picked itself.)

mod common;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/pki.rs"]
mod pki;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

use common::{metric, parse_response, Response, Stitch};
use peers::{wait_for, PeerProcess};
use pki::{Leaf, Pki};

const ECHO: &str = "[[route]]\nname = \"echo\"\npath = \"/\"\nupstream = \"builtin:echo\"\n";

/// stitch on `listeners` (each a `[[server.listener]]` body without the header line), with
/// `server` lines added to `[server]`, the JSON access log, and `/` to the echo upstream.
fn start(server: &str, listeners: &[&str]) -> Stitch {
    let tables: String = listeners
        .iter()
        .map(|l| format!("[[server.listener]]\naddress = \"127.0.0.1:0\"\n{l}\n"))
        .collect();
    Stitch::start(&format!(
        "[server]\nthreads = 1\nshutdown_timeout_seconds = 1\n{server}\n\n{tables}\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[access_log]\nenabled = true\nformat = \"json\"\n\n{ECHO}"
    ))
}

/// The address of stitch's `i`th listener.
fn addr(s: &Stitch, i: usize) -> SocketAddr {
    s.listeners[i].split_once("://").unwrap().1.parse().unwrap()
}

/// `stitch_proxy_protocol_total{result}`.
fn total(s: &Stitch, result: &str) -> f64 {
    metric(
        &s.metrics(),
        "stitch_proxy_protocol_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// The counts a test's own connections added: the readiness probes that ran before it
/// (`/readyz` sends a `LOCAL` header to these listeners) are taken off.
struct Counts<'a> {
    stitch: &'a Stitch,
    before: Vec<(&'static str, f64)>,
}

impl Counts<'_> {
    fn new(stitch: &Stitch) -> Counts<'_> {
        let labels = ["proxied", "local", "untrusted", "invalid", "timeout"];
        let before = labels.iter().map(|l| (*l, total(stitch, l))).collect();
        Counts { stitch, before }
    }

    fn of(&self, result: &str) -> f64 {
        let before = self.before.iter().find(|(l, _)| *l == result).unwrap().1;
        total(self.stitch, result) - before
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

/// HAProxy in TCP mode: a Unix-socket frontend (that reads a PROXY header from the test when
/// `accept_proxy`), a backend that sends its own (`send`: `send-proxy` or `send-proxy-v2`) to
/// `to`. TCP mode passes TLS through untouched: stitch terminates it.
struct HaProxy {
    socket: PathBuf,
    _process: PeerProcess,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    fn start(send: &str, to: SocketAddr, accept_proxy: bool) -> HaProxy {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fe.sock");
        let cfg = dir.path().join("haproxy.cfg");
        let accept = if accept_proxy { " accept-proxy" } else { "" };
        std::fs::write(
            &cfg,
            format!(
                "global\n    maxconn 100\n\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
                 frontend fe\n    bind unix@{}{accept}\n    default_backend be\n\n\
                 backend be\n    server stitch {to} {send}\n",
                socket.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(haproxy_bin());
        cmd.arg("-db").arg("-f").arg(&cfg);
        let (process, _rx) = PeerProcess::spawn("haproxy", cmd);
        wait_for(
            "haproxy's socket",
            Duration::from_secs(30),
            || UnixStream::connect(&socket).ok(),
            || process.output(),
        );
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

/// Wait for the JSON access log line of `path` and return its `client`.
fn logged_client(s: &Stitch, path: &str) -> String {
    wait_for(
        &format!("the access log line of {path}"),
        Duration::from_secs(10),
        || {
            s.stdout_lines.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["path"] == path).then(|| v["client"].as_str().unwrap_or("").to_string())
            })
        },
        || s.stdout_lines.lock().unwrap().join("\n"),
    )
}

/// Read until the peer closes; what it sent before.
fn read_until_closed(s: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn haproxy_send_proxy_v1_gives_the_client_on_every_request_of_the_connection() {
    let stitch = start(
        "trusted_proxies = [\"127.0.0.1\"]",
        &["proxy_protocol = true"],
    );
    let count = Counts::new(&stitch);
    let haproxy = HaProxy::start("send-proxy", addr(&stitch, 0), true);
    let mut c = haproxy.connect("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443");
    let first = exchange(&mut c, "/one", false);
    assert_eq!(client_of(&first), "203.0.113.7", "{}", first.body);
    assert_eq!(first.json()["headers"]["x-forwarded-for"], "203.0.113.7");
    // The same connection again: the header is read once, the second request parses.
    let second = exchange(&mut c, "/two", true);
    assert_eq!(client_of(&second), "203.0.113.7", "{}", second.body);
    assert_eq!(logged_client(&stitch, "/two"), "203.0.113.7");
    assert_eq!(count.of("proxied"), 1.0);
}

#[test]
fn haproxy_send_proxy_v2_gives_an_ipv6_client() {
    let stitch = start(
        "trusted_proxies = [\"127.0.0.1\"]",
        &["proxy_protocol = true"],
    );
    let count = Counts::new(&stitch);
    let haproxy = HaProxy::start("send-proxy-v2", addr(&stitch, 0), true);
    let mut c = haproxy.connect("PROXY TCP6 2001:db8::7 2001:db8::1 5555 443");
    let r = exchange(&mut c, "/v2", true);
    assert_eq!(client_of(&r), "2001:db8::7", "{}", r.body);
    assert_eq!(logged_client(&stitch, "/v2"), "2001:db8::7");
    assert_eq!(count.of("proxied"), 1.0);
}

/// A sender that is not a trusted proxy: its header is read (the request still parses) and
/// its claim ignored.
#[test]
fn an_untrusted_senders_addresses_are_ignored() {
    let stitch = start(
        "trusted_proxies = [\"10.0.0.0/8\"]",
        &["proxy_protocol = true"],
    );
    let count = Counts::new(&stitch);
    let haproxy = HaProxy::start("send-proxy-v2", addr(&stitch, 0), true);
    let mut c = haproxy.connect("PROXY TCP4 203.0.113.7 192.0.2.1 5555 443");
    let r = exchange(&mut c, "/untrusted", true);
    assert_eq!(client_of(&r), "127.0.0.1", "{}", r.body);
    assert_eq!(count.of("untrusted"), 1.0);
    assert_eq!(count.of("proxied"), 0.0);
}

/// A connection without a valid header is closed without an answer; a listener without the
/// option beside it (another service) answers the same bytes.
#[test]
fn a_broken_header_closes_the_connection() {
    let stitch = start(
        "trusted_proxies = [\"127.0.0.1\"]",
        &["proxy_protocol = true", "proxy_protocol = false"],
    );
    let count = Counts::new(&stitch);
    let broken: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        b"PROXY TCP4 203.0.113.7\r\nGET / HTTP/1.1\r\nhost: x\r\n\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c",
    ];
    for bytes in broken {
        let mut s = TcpStream::connect(addr(&stitch, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(bytes).unwrap();
        let got = read_until_closed(&mut s);
        assert!(
            got.is_empty(),
            "{:?} got an answer: {}",
            bytes,
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(count.of("invalid"), 3.0);
    assert_eq!(count.of("proxied"), 0.0);
    // The plain listener is served without a header.
    let mut plain = TcpStream::connect(addr(&stitch, 1)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let r = exchange(&mut plain, "/plain", true);
    assert_eq!(r.status, 200);
    assert_eq!(client_of(&r), "127.0.0.1");
}

/// `proxy_protocol_timeout_ms`: a silent connection, and one that stops mid-header, are closed
/// once it has passed (here 300 ms, far under the 5 s default).
#[test]
fn a_connection_without_its_header_in_time_is_closed() {
    let stitch = start(
        "trusted_proxies = [\"127.0.0.1\"]\nproxy_protocol_timeout_ms = 300",
        &["proxy_protocol = true"],
    );
    let count = Counts::new(&stitch);
    for sent in [&b""[..], b"PROXY TCP4 203.0.113.7 "] {
        let mut s = TcpStream::connect(addr(&stitch, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(sent).unwrap();
        let started = Instant::now();
        let got = read_until_closed(&mut s);
        let waited = started.elapsed();
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "closed after {waited:?} with {sent:?}"
        );
    }
    assert_eq!(count.of("timeout"), 2.0);
    assert_eq!(count.of("invalid"), 0.0);
}

/// h2c after the header: the app peeks the HTTP/2 preface after the header was taken off.
/// HAProxy's Unix-socket frontend has no client address to tell, so it sends a header without
/// one (v1 `UNKNOWN`): the connection keeps its own. A h2c listener without the option beside
/// it takes prior-knowledge HTTP/2 directly.
#[test]
fn h2c_prior_knowledge_after_the_header() {
    let stitch = start(
        "trusted_proxies = [\"127.0.0.1\"]",
        &["h2c = true\nproxy_protocol = true", "h2c = true"],
    );
    let count = Counts::new(&stitch);
    let haproxy = HaProxy::start("send-proxy", addr(&stitch, 0), false);
    let curl = |args: &[&str], url: String| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--http2-prior-knowledge"])
            .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .expect("curl: run `.ci/setup test`");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let sock = haproxy.socket.display().to_string();
    let out = curl(&["--unix-socket", &sock], "http://shop.example/h2c".into());
    assert_eq!(out, "2 200", "through HAProxy");
    // At least curl's (the connection that waited for HAProxy's socket may be another).
    assert!(count.of("local") >= 1.0);
    let out = curl(&[], format!("http://{}/direct", addr(&stitch, 1)));
    assert_eq!(out, "2 200", "the h2c listener without the option");
    assert_eq!(count.of("invalid"), 0.0);
}

/// TLS: HAProxy in TCP mode sends its v2 header ahead of the client's TLS handshake, which
/// stitch terminates; the client's claimed address reaches the echo and the log, with
/// `X-Forwarded-Proto: https`. A TLS client straight to the listener (no header) is closed
/// before any handshake.
#[test]
fn tls_behind_haproxy_send_proxy_v2() {
    let pki = Pki::new();
    let leaf = pki.leaf("a", "a.test", &["a.test"], 2);
    let stitch = start(
        "trusted_proxies = [\"127.0.0.1\"]",
        &[&format!("proxy_protocol = true\n{}", tls(&leaf))],
    );
    let count = Counts::new(&stitch);
    assert!(stitch.listeners[0].starts_with("https://"));
    let haproxy = HaProxy::start("send-proxy-v2", addr(&stitch, 0), true);

    let c = haproxy.connect("PROXY TCP4 198.51.100.23 192.0.2.1 5555 443");
    let mut tls = connector(&pki.ca).connect("a.test", c).unwrap();
    let r = exchange(&mut tls, "/tls", true);
    assert_eq!(client_of(&r), "198.51.100.23", "{}", r.body);
    assert_eq!(
        r.json()["headers"]["x-forwarded-proto"],
        "https",
        "{}",
        r.body
    );
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "198.51.100.23");
    assert_eq!(logged_client(&stitch, "/tls"), "198.51.100.23");
    assert_eq!(count.of("proxied"), 1.0);

    let direct = TcpStream::connect(addr(&stitch, 0)).unwrap();
    direct
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let refused = connector(&pki.ca).connect("a.test", direct);
    assert!(refused.is_err(), "a handshake without a PROXY header");
    assert_eq!(count.of("invalid"), 1.0);
}

/// `tls = { certificates = [...] }` with `leaf`.
fn tls(leaf: &Leaf) -> String {
    format!(
        "tls = {{ certificates = [{{ cert_file = {:?}, key_file = {:?} }}] }}",
        leaf.cert.display().to_string(),
        leaf.key.display().to_string()
    )
}

/// A TLS client trusting the test CA, speaking HTTP/1.1.
fn connector(ca: &Path) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    b.set_alpn_protos(b"\x08http/1.1").unwrap();
    b.build()
}
