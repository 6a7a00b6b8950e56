//! A minimal HTTP/1.1 client for span export: one request per connection
//! (`Connection: close`), a deadline over the whole exchange, `http://` over TCP and `unix://`
//! over a Unix socket (the Datadog Agent's `apm.socket`). No TLS: both export targets are local
//! agents or collectors; put a collector in front for anything remote.

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
}

/// Send one request and read the answer, all within `timeout`.
pub async fn send(
    ep: &Endpoint,
    method: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, SendError> {
    match tokio::time::timeout(timeout, exchange(ep, method, headers, body)).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Timeout(timeout)),
    }
}

async fn exchange(
    ep: &Endpoint,
    method: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<Response, SendError> {
    let head = request_head(ep, method, headers, body.len());
    match &ep.target {
        Target::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(SendError::Connect)?;
            stream.set_nodelay(true).ok();
            over(stream, &head, body).await
        }
        #[cfg(unix)]
        Target::Unix { path } => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(SendError::Connect)?;
            over(stream, &head, body).await
        }
        #[cfg(not(unix))]
        Target::Unix { .. } => Err(SendError::Connect(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "unix sockets are not supported on this platform",
        ))),
    }
}

fn request_head(ep: &Endpoint, method: &str, headers: &[(&str, String)], len: usize) -> Vec<u8> {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: stitch/{}\r\nConnection: close\r\nContent-Length: {len}\r\n",
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
    mut stream: S,
    head: &[u8],
    body: &[u8],
) -> Result<Response, SendError> {
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    read_response(&mut stream).await
}

async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Response, SendError> {
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
            return Err(SendError::BadResponse("closed before a full response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| SendError::BadResponse("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(parse_status_line)
        .ok_or(SendError::BadResponse("bad status line"))?;
    let content_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut body = buf.split_off(head_end);
    let want = content_length.unwrap_or(MAX_RESPONSE).min(MAX_RESPONSE);
    // Read the body (to Content-Length, else to EOF: we asked for `Connection: close`).
    while body.len() < want {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(want);
    Ok(Response { status, body })
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
        let r = read_response(&mut &raw[..]).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let raw = b"HTTP/1.1 500 Internal Server Error\r\n\r\nboom";
        let r = read_response(&mut &raw[..]).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (500, &b"boom"[..]));
        let raw = b"HTTP/1.1 200 OK\r\nContent-Le";
        assert!(read_response(&mut &raw[..]).await.is_err());
    }
}
