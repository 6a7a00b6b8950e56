//! A minimal HTTP/1.1 client for span export: a [`Client`] keeps its connection open between
//! requests (keep-alive) when the server's answer allows it, a deadline covers the whole
//! exchange, `http://` over TCP and `unix://` over a Unix socket (the Datadog Agent's
//! `apm.socket`). No TLS: both export targets are local agents or collectors; put a collector in
//! front for anything remote.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most of a response we read (the rest is left unread and the connection closed).
const MAX_RESPONSE: usize = 1 << 20;
const MAX_HEAD: usize = 16 << 10;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp { host: String, port: u16 },
    Unix { path: String },
}

/// A parsed export URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub target: Target,
    /// Request target, e.g. `/v0.4/traces`; empty when the URL had no path.
    pub path: String,
    /// `Host` header value.
    pub host_header: String,
}

/// Why a URL cannot be used for export.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("only http:// and unix:// are supported (no TLS)")]
    Scheme,
    #[error("missing host")]
    NoHost,
    #[error("bad port")]
    Port,
    #[error("user info in the URL is not supported")]
    UserInfo,
}

impl Endpoint {
    /// Parse `http://host[:port][/path]`, `http://[v6][:port][/path]` or `unix:///socket/path`.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(UrlError::NoHost);
            }
            return Ok(Endpoint {
                target: Target::Unix {
                    path: path.to_string(),
                },
                path: String::new(),
                host_header: "localhost".to_string(),
            });
        }
        let rest = url.strip_prefix("http://").ok_or(UrlError::Scheme)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, tail) = v6.split_once(']').ok_or(UrlError::NoHost)?;
            let port = match tail {
                "" => 80,
                t => t
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or(UrlError::Port)?,
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| UrlError::Port)?),
                None => (authority, 80),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        Ok(Endpoint {
            target: Target::Tcp {
                host: host.to_string(),
                port,
            },
            path: path.to_string(),
            host_header: authority.to_string(),
        })
    }

    /// This endpoint with `suffix` appended to its path (`/` between them, not doubled).
    pub fn join(&self, suffix: &str) -> Endpoint {
        let mut e = self.clone();
        e.path = format!("{}{}", self.path.trim_end_matches('/'), suffix);
        e
    }

    fn request_target(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The body as read (at most 1 MiB; not de-chunked).
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("malformed response: {0}")]
    BadResponse(&'static str),
    /// The connection closed before a single byte of the answer.
    #[error("connection closed without an answer")]
    Closed,
}

impl SendError {
    /// The failure a kept-alive connection shows when the server closed it while idle: the
    /// request never got an answer, so it is sent again on a new connection.
    fn is_stale_connection(&self) -> bool {
        match self {
            SendError::Closed => true,
            SendError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// Requests to one endpoint over a connection kept open while the server allows it.
#[derive(Debug)]
pub struct Client {
    ep: Endpoint,
    conn: Option<Conn>,
    /// Connections opened so far (for `stitch_export_connections_total`).
    opened: u64,
}

#[derive(Debug)]
enum Conn {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Conn {
    async fn open(ep: &Endpoint) -> Result<Conn, SendError> {
        match &ep.target {
            Target::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(SendError::Connect)?;
                stream.set_nodelay(true).ok();
                Ok(Conn::Tcp(stream))
            }
            #[cfg(unix)]
            Target::Unix { path } => tokio::net::UnixStream::connect(path)
                .await
                .map(Conn::Unix)
                .map_err(SendError::Connect),
            #[cfg(not(unix))]
            Target::Unix { .. } => Err(SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "unix sockets are not supported on this platform",
            ))),
        }
    }

    async fn exchange(&mut self, head: &[u8], body: &[u8]) -> Result<(Response, bool), SendError> {
        match self {
            Conn::Tcp(s) => over(s, head, body).await,
            #[cfg(unix)]
            Conn::Unix(s) => over(s, head, body).await,
        }
    }
}

impl Client {
    pub fn new(ep: Endpoint) -> Client {
        Client {
            ep,
            conn: None,
            opened: 0,
        }
    }

    /// How many connections this client has opened (attempts that connected).
    pub fn connections_opened(&self) -> u64 {
        self.opened
    }

    /// Whether a connection is being kept for the next request.
    pub fn has_connection(&self) -> bool {
        self.conn.is_some()
    }

    /// Send one request and read the answer, all within `timeout`. A kept connection is used
    /// first; when the server had closed it (no answer at all), the request goes once more on a
    /// new connection. The connection is kept afterwards only if the answer had a
    /// `Content-Length`, was read whole, and did not ask to close.
    pub async fn send(
        &mut self,
        method: &str,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, SendError> {
        let head = request_head(&self.ep, method, headers, body.len());
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(mut conn) = self.conn.take() {
            match tokio::time::timeout_at(deadline, conn.exchange(&head, body)).await {
                Err(_) => return Err(SendError::Timeout(timeout)),
                Ok(Ok((resp, keep))) => {
                    if keep {
                        self.conn = Some(conn);
                    }
                    return Ok(resp);
                }
                Ok(Err(e)) if e.is_stale_connection() => {}
                Ok(Err(e)) => return Err(e),
            }
        }
        let opened = &mut self.opened;
        let fresh = async {
            let mut conn = Conn::open(&self.ep).await?;
            *opened += 1;
            let (resp, keep) = conn.exchange(&head, body).await?;
            Ok::<_, SendError>((resp, keep.then_some(conn)))
        };
        match tokio::time::timeout_at(deadline, fresh).await {
            Err(_) => Err(SendError::Timeout(timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok((resp, conn))) => {
                self.conn = conn;
                Ok(resp)
            }
        }
    }
}

fn request_head(ep: &Endpoint, method: &str, headers: &[(&str, String)], len: usize) -> Vec<u8> {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: stitch/{}\r\nContent-Length: {len}\r\n",
        ep.request_target(),
        ep.host_header,
        super::TRACER_VERSION,
    );
    for (k, v) in headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

async fn over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    head: &[u8],
    body: &[u8],
) -> Result<(Response, bool), SendError> {
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    read_response(stream).await
}

/// Read one answer: the response and whether the connection may carry another request.
async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Response, bool), SendError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(SendError::BadResponse("head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(if buf.is_empty() {
                SendError::Closed
            } else {
                SendError::BadResponse("closed before a full response head")
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| SendError::BadResponse("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line).ok_or(SendError::BadResponse("bad status line"))?;
    let mut content_length = None;
    let mut close = !status_line.starts_with("HTTP/1.1 ");
    for (k, v) in lines.filter_map(|l| l.split_once(':')) {
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            content_length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("connection") {
            close |= v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            // Not de-chunked here: the end of the body is unknown, so the connection goes.
            close = true;
        }
    }
    let mut body = buf.split_off(head_end);
    let want = content_length.unwrap_or(MAX_RESPONSE).min(MAX_RESPONSE);
    // Read the body to Content-Length, else to EOF (and the connection is not kept).
    while body.len() < want {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let whole = content_length.is_some_and(|n| n <= MAX_RESPONSE && body.len() == n);
    body.truncate(want);
    Ok((Response { status, body }, whole && !close))
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn parses_urls() {
        let tcp = |host: &str, port| Target::Tcp {
            host: host.into(),
            port,
        };
        for (url, target, path, host_header) in [
            (
                "http://127.0.0.1:8126",
                tcp("127.0.0.1", 8126),
                "",
                "127.0.0.1:8126",
            ),
            ("http://agent", tcp("agent", 80), "", "agent"),
            (
                "http://[::1]:4318/v1/traces",
                tcp("::1", 4318),
                "/v1/traces",
                "[::1]:4318",
            ),
            ("http://[::1]/x", tcp("::1", 80), "/x", "[::1]"),
            (
                " http://c:4318/a/b?q=1 ",
                tcp("c", 4318),
                "/a/b?q=1",
                "c:4318",
            ),
        ] {
            let ep = Endpoint::parse(url).unwrap();
            assert_eq!(
                (ep.target, ep.path.as_str(), ep.host_header.as_str()),
                (target, path, host_header),
                "{url}"
            );
        }
        let unix = Endpoint::parse("unix:///var/run/datadog/apm.socket").unwrap();
        assert_eq!(
            unix.target,
            Target::Unix {
                path: "/var/run/datadog/apm.socket".into()
            }
        );
        for (url, err) in [
            ("https://agent:8126", UrlError::Scheme),
            ("agent:8126", UrlError::Scheme),
            ("http://:8126", UrlError::NoHost),
            ("http://agent:99999", UrlError::Port),
            ("http://agent:", UrlError::Port),
            ("http://[::1", UrlError::NoHost),
            ("http://[::1]x", UrlError::Port),
            ("http://u:p@agent", UrlError::UserInfo),
            ("unix://", UrlError::NoHost),
        ] {
            assert_eq!(Endpoint::parse(url), Err(err), "{url}");
        }
    }

    #[test]
    fn joins_paths() {
        let ep = Endpoint::parse("http://a:1/").unwrap().join("/v0.4/traces");
        assert_eq!(ep.path, "/v0.4/traces");
        let ep = Endpoint::parse("http://a:1/prefix")
            .unwrap()
            .join("/v0.4/traces");
        assert_eq!(ep.path, "/prefix/v0.4/traces");
        assert_eq!(Endpoint::parse("http://a").unwrap().request_target(), "/");
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line("HTTP/2 200"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line("garbage"), None);
    }

    #[tokio::test]
    async fn reads_head_and_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}extra";
        let (r, keep) = read_response(&mut &raw[..]).await.unwrap();
        // Bytes beyond Content-Length: the connection's state is unknown, so it is not kept.
        assert_eq!(
            (r.status, r.body.as_slice(), keep),
            (200, &b"{}"[..], false)
        );
        let raw = b"HTTP/1.1 500 Internal Server Error\r\n\r\nboom";
        let (r, keep) = read_response(&mut &raw[..]).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), keep),
            (500, &b"boom"[..], false)
        );
        let raw = b"HTTP/1.1 200 OK\r\nContent-Le";
        assert!(matches!(
            read_response(&mut &raw[..]).await,
            Err(SendError::BadResponse(_))
        ));
        assert!(matches!(
            read_response(&mut &b""[..]).await,
            Err(SendError::Closed)
        ));
    }

    /// When the connection may carry another request: only a whole body of known length, on
    /// HTTP/1.1, without `Connection: close`.
    #[tokio::test]
    async fn keep_alive_only_when_the_answer_allows_it() {
        let rows: [(&[u8], bool); 7] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", false),
        ];
        for (raw, want) in rows {
            let (_, keep) = read_response(&mut &raw[..]).await.unwrap();
            assert_eq!(keep, want, "{}", String::from_utf8_lossy(raw));
        }
    }

    /// A local server that answers every request with 200 and counts its connections; it
    /// closes a connection after `per_conn` answers, as a server dropping an idle keep-alive
    /// connection does.
    async fn counting_server(per_conn: usize) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), reqs.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    for _ in 0..per_conn {
                        // one request: head, then Content-Length bytes of body
                        let (head_end, len) = loop {
                            if let Some(i) = find(&buf, b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                                let len = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                                    .unwrap_or(0);
                                break (i + 4, len);
                            }
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        while buf.len() < head_end + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head_end + len);
                        r.fetch_add(1, Ordering::SeqCst);
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
                        if sock.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    // dropped: the connection closes
                });
            }
        });
        (port, conns, reqs)
    }

    #[tokio::test]
    async fn a_client_reuses_its_connection_and_survives_the_server_closing_it() {
        let (port, conns, reqs) = counting_server(3).await;
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}/v0.4/traces")).unwrap();
        let mut client = Client::new(ep);
        let t = Duration::from_secs(5);
        for i in 1..=7 {
            let r = client.send("PUT", &[], b"[]", t).await.unwrap();
            assert_eq!(r.status, 200, "request {i}");
        }
        // 3 answers per connection, and the 4th and 7th requests found theirs closed: each was
        // sent again on a new connection rather than failing.
        assert_eq!(reqs.load(Ordering::SeqCst), 7);
        assert_eq!(conns.load(Ordering::SeqCst), 3);
        assert_eq!(client.connections_opened(), 3);
        assert!(client.has_connection());
    }
}
