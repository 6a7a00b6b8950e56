//! Test harness: start the real stitch binary on ephemeral ports, a small real HTTP upstream,
//! and helpers to talk to both. Readiness is awaited by polling with a deadline, never by sleeping
//! a fixed time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A running stitch process.
pub struct Stitch {
    pub child: Child,
    /// The first proxy listener.
    pub proxy: SocketAddr,
    /// Every proxy listener as stitch reported it (`http://ADDR` or `https://ADDR`), in order.
    pub listeners: Vec<String>,
    pub admin: SocketAddr,
    pub stdout_lines: Arc<Mutex<Vec<String>>>,
    pub stderr_lines: Arc<Mutex<Vec<String>>>,
    /// The configuration file stitch runs on (rewrite it and reload to change the config).
    pub config_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

pub fn stitch_bin() -> &'static str {
    env!("CARGO_BIN_EXE_stitch")
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pump(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
}

impl Stitch {
    /// Start stitch on `config` (TOML text). The config should listen on `127.0.0.1:0` for both
    /// the proxy and the admin listener; [`base_config`] gives such a header.
    pub fn start(config: &str) -> Stitch {
        Stitch::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Stitch {
        let s = Stitch::start_unready(config, env);
        s.wait_ready();
        s
    }

    /// Start stitch on `config` and return once its listeners are up, ready or not.
    pub fn start_unready(config: &str, env: &[(&str, &str)]) -> Stitch {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stitch.toml");
        std::fs::write(&path, config).unwrap();
        let mut s = Stitch::launch_unready(&path, &[], env);
        s._dir = Some(dir);
        s
    }

    /// Start stitch on an existing configuration file with extra arguments (`--no-watch`,
    /// `--upgrade`), and wait until it is ready.
    pub fn launch(path: &Path, args: &[&str], env: &[(&str, &str)]) -> Stitch {
        let s = Stitch::launch_unready(path, args, env);
        s.wait_ready();
        s
    }

    /// [`Stitch::launch`] without waiting for `/readyz`.
    pub fn launch_unready(path: &Path, args: &[&str], env: &[(&str, &str)]) -> Stitch {
        let mut cmd = Command::new(stitch_bin());
        cmd.args(args)
            .arg("--config")
            .arg(path)
            .env("RUST_LOG", "warn,stitch=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A developer's own agent settings must not redirect a test's stitch.
        for (k, _) in std::env::vars() {
            if k.starts_with("DD_") || k.starts_with("OTEL_") {
                cmd.env_remove(&k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn stitch");
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        pump(child.stdout.take().unwrap(), stdout_lines.clone(), None);
        pump(child.stderr.take().unwrap(), stderr_lines.clone(), Some(tx));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut proxy, mut admin) = (None, None);
        let mut listeners = Vec::new();
        // stitch reports every proxy listener before the admin one.
        while proxy.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("stitch: proxy listening on ") {
                        let a = url.split_once("://").map(|(_, a)| a).unwrap_or(url);
                        proxy.get_or_insert(a.parse::<SocketAddr>().unwrap());
                        listeners.push(url.to_string());
                    }
                    if let Some(a) = line.strip_prefix("stitch: admin listening on http://") {
                        admin = Some(a.parse::<SocketAddr>().unwrap());
                    }
                }
                Err(_) => panic!(
                    "stitch did not report its listeners; stderr:\n{}",
                    stderr_lines.lock().unwrap().join("\n")
                ),
            }
        }
        Stitch {
            child,
            proxy: proxy.unwrap(),
            listeners,
            admin: admin.unwrap(),
            stdout_lines,
            stderr_lines,
            config_path: path.to_path_buf(),
            _dir: None,
        }
    }

    /// Wait until `/readyz` answers 200 (30 s at most).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = get(&format!("http://{}/readyz", self.admin), &[]) {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "stitch never became ready; stderr:\n{}",
                self.stderr_lines.lock().unwrap().join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    pub fn metrics(&self) -> String {
        get(&format!("http://{}/metrics", self.admin), &[])
            .unwrap()
            .body
    }

    /// Send SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send a signal by name (`HUP`, `QUIT`, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// stitch's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// Wait for the process to exit, with a deadline.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Stitch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[server]` and `[admin]` sections on ephemeral loopback ports.
pub fn base_config() -> String {
    "[server]\nlisten = [\"127.0.0.1:0\"]\nthreads = 1\nshutdown_grace_seconds = 0\nshutdown_timeout_seconds = 5\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n".to_string()
}

/// A minimal HTTP response as seen by a test client.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), any status accepted.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    request_on(None, method, url, headers, body)
}

/// [`request`] from the local address `from`: every address of 127.0.0.0/8 is this machine, so
/// one test can be several clients (a balancer on 127.0.0.1, a browser on 127.0.0.2).
pub fn request_from(
    from: IpAddr,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    request_on(Some(from), method, url, headers, b"")
}

/// A TCP connection to `to` from the local address `from` (bound before connecting).
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let socket = match to {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(to).await?.into_std()?;
        stream.set_nonblocking(false)?;
        Ok(stream)
    })
}

fn request_on(
    from: Option<IpAddr>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = match from {
        None => TcpStream::connect(authority)?,
        Some(from) => connect_from(from, authority.parse().expect("IP:port authority"))?,
    };
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: {authority}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    request("GET", url, headers, b"")
}

pub fn parse_response(raw: &[u8], head_only: bool) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked && !head_only {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = i + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// A request the test upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Lowercase names in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.headers.iter().any(|(k, _)| k.starts_with(prefix))
    }
}

/// How the test upstream answers.
#[derive(Clone, Default)]
pub struct Behaviour {
    pub status: u16,
    /// Extra response headers (for CORS tests).
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering (a slow upstream).
    pub delay: Option<Duration>,
    pub body: Option<String>,
}

/// A real HTTP/1.1 upstream on an ephemeral port, one thread per connection, keep-alive aware.
/// [`Upstream::stop`] takes it down mid-test (a server that dies).
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Recorded>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    stopped: Arc<AtomicBool>,
    /// The open connections, to shut down on [`Upstream::stop`].
    conns: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        Upstream::with(Behaviour {
            status: 200,
            ..Default::default()
        })
    }

    pub fn with(b: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(b));
        let stopped = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (rec, beh, st, open) = (
            received.clone(),
            behaviour.clone(),
            stopped.clone(),
            conns.clone(),
        );
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                if st.load(Ordering::SeqCst) {
                    break; // the listener is dropped here: new connects are refused
                }
                if let Ok(clone) = stream.try_clone() {
                    open.lock().unwrap().push(clone);
                }
                let (rec, beh) = (rec.clone(), beh.clone());
                thread::spawn(move || serve_conn(stream, rec, beh));
            }
        });
        Upstream {
            addr,
            received,
            behaviour,
            stopped,
            conns,
            acceptor: Some(acceptor),
        }
    }

    /// Take the server down: its listener closes (connects are refused from the moment this
    /// returns) and its open connections are shut down.
    pub fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the blocked accept so the thread sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        assert!(
            TcpStream::connect(self.addr).is_err(),
            "{} still accepts connections",
            self.addr
        );
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }
}

/// One HTTP/1.1 request read off a connection.
pub struct RawRequest {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Read one request (head and `Content-Length` body) from `stream`. `buf` keeps the bytes read
/// past it for the next call on a keep-alive connection. `None` when the peer closes first.
pub fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawRequest> {
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf.drain(..len).collect();
    Some(RawRequest {
        method,
        target,
        headers,
        body,
    })
}

fn serve_conn(mut stream: TcpStream, rec: Arc<Mutex<Vec<Recorded>>>, beh: Arc<Mutex<Behaviour>>) {
    let mut buf = Vec::new();
    while let Some(RawRequest {
        method,
        target: path,
        headers,
        ..
    }) = read_request(&mut stream, &mut buf)
    {
        let close = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
        let b = beh.lock().unwrap().clone();
        let mut map = BTreeMap::new();
        for (k, v) in &headers {
            map.entry(k.clone())
                .or_insert_with(Vec::new)
                .push(v.clone());
        }
        rec.lock().unwrap().push(Recorded {
            method: method.clone(),
            path: path.clone(),
            headers,
        });
        if let Some(d) = b.delay {
            thread::sleep(d);
        }
        let body = b.body.clone().unwrap_or_else(|| {
            serde_json::json!({"method": method, "path": path, "headers": map}).to_string()
        });
        let mut resp = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            b.status,
            body.len()
        );
        for (k, v) in &b.headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        if stream.write_all(resp.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err()
        {
            return;
        }
        if close {
            return;
        }
    }
}

/// `stitch check` on a config text written to a temporary file: whether it was accepted, and
/// what it printed (stderr then stdout) with the file's path replaced by `FILE`.
pub fn stitch_check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stitch.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(stitch_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        printed.replace(&*path.to_string_lossy(), "FILE"),
    )
}

/// A TCP port nothing listens on (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The venv python with the real peers (created by `.ci/setup test`).
pub fn peers_python() -> PathBuf {
    if let Ok(p) = std::env::var("STITCH_PEERS_PYTHON") {
        return PathBuf::from(p);
    }
    let p = manifest_dir().join("target/peers-venv/bin/python");
    assert!(
        Path::new(&p).exists(),
        "{} is missing: run `.ci/setup test` to create the venv of real peers",
        p.display()
    );
    p
}

/// The value of one Prometheus sample: `name` with exactly these `labels` (any order).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let found: Vec<(&str, &str)> = rest
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        let same = found.len() == labels.len() && labels.iter().all(|l| found.contains(l));
        same.then(|| value.parse().ok()).flatten()
    })
}

/// An HTTP/1.1 client on one kept-alive connection that reconnects when the server closes it
/// (after a `Connection: close` answer, or an idle close before a request was written).
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<(TcpStream, Vec<u8>)>,
    /// Connections opened so far.
    pub connects: usize,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive {
            addr,
            conn: None,
            connects: 0,
        }
    }

    /// GET `path` with `headers`; the response must carry a `Content-Length` body.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some((s, Vec::new()));
            self.connects += 1;
        }
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n", self.addr);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let result = self.exchange(req.as_bytes());
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(&mut self, req: &[u8]) -> std::io::Result<Response> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let (stream, buf) = self.conn.as_mut().ok_or_else(|| bad("no connection"))?;
        stream.write_all(req)?;
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk)? {
                0 => return Err(bad("closed before a response")),
                n => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| bad("no content-length"))?;
        while buf.len() < end + 4 + len {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk)? {
                0 => return Err(bad("closed mid-body")),
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let raw: Vec<u8> = buf.drain(..end + 4 + len).collect();
        let close = head
            .lines()
            .any(|l| l.starts_with("connection:") && l.contains("close"));
        if close {
            self.conn = None;
        }
        parse_response(&raw, false)
    }
}
