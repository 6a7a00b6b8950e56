//! The HTTP/1.1 client of span export, on Pingora's own client (its connector, connection pool
//! and HTTP/1.1 session, already in the binary): a [`Client`] keeps its connection to the agent
//! or collector open between requests when the answer allows it (Pingora's keep-alive rules,
//! chunked answers included), one deadline covers the whole exchange, and the target is
//! `http://`, `https://` (OpenSSL, the system's roots or a `ca_file`) or `unix://` (the
//! Datadog Agent's `apm.socket`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;

/// Most of an answer's body kept (the rest is read and dropped).
const MAX_RESPONSE: usize = 1 << 20;

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
    /// TLS (`https://`).
    pub tls: bool,
    /// Request target, e.g. `/v0.4/traces`; empty when the URL had no path.
    pub path: String,
    /// `Host` header value.
    pub host_header: String,
}

/// Why a URL cannot be used for export.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("only http://, https:// and unix:// are supported")]
    Scheme,
    #[error("missing host")]
    NoHost,
    #[error("bad port")]
    Port,
    #[error("user info in the URL is not supported")]
    UserInfo,
    /// TLS checks the certificate against a host name; an IP address is never sent as SNI.
    #[error(
        "https:// needs a host name, not an IP address (the certificate is checked against it)"
    )]
    TlsIp,
}

impl Endpoint {
    /// Parse `http[s]://host[:port][/path]`, `http[s]://[v6][:port][/path]` or
    /// `unix:///socket/path`.
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
                tls: false,
                path: String::new(),
                host_header: "localhost".to_string(),
            });
        }
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => return Err(UrlError::Scheme),
        };
        let default_port = if tls { 443 } else { 80 };
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
                "" => default_port,
                t => t
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or(UrlError::Port)?,
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| UrlError::Port)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        if tls && host.parse::<std::net::IpAddr>().is_ok() {
            return Err(UrlError::TlsIp);
        }
        Ok(Endpoint {
            target: Target::Tcp {
                host: host.to_string(),
                port,
            },
            tls,
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
    /// The body (at most 1 MiB kept).
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("connect: {0}")]
    Connect(Box<pingora::Error>),
    #[error("{0}")]
    Exchange(Box<pingora::Error>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("malformed response: {0}")]
    BadResponse(&'static str),
}

/// Requests to one endpoint, over a connection kept in the connector's pool between them.
pub struct Client {
    ep: Endpoint,
    connector: Connector,
    /// CA certificates trusted instead of the system's (`ca_file`).
    ca: Option<Arc<Box<[X509]>>>,
    /// Connections opened so far (for `stitch_export_connections_total`).
    opened: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("ep", &self.ep)
            .field("opened", &self.opened)
            .finish()
    }
}

/// Where the exchange stopped, for the one retry on a fresh connection.
enum Failure {
    /// No byte of an answer arrived on a reused connection: the server had closed it while
    /// it was idle, so the request is sent again on a new one.
    Stale(SendError),
    Other(SendError),
}

impl Client {
    pub fn new(ep: Endpoint, ca: Option<Arc<Box<[X509]>>>) -> Client {
        Client {
            ep,
            connector: Connector::new(None),
            ca,
            opened: 0,
        }
    }

    /// How many connections this client has opened.
    pub fn connections_opened(&self) -> u64 {
        self.opened
    }

    /// Send one request and read the answer, all within `timeout`. A kept connection is used
    /// first; when the server had closed it (no answer at all), the request goes once more on a
    /// new connection. The connection goes back to the pool only if Pingora's keep-alive rules
    /// allow it (the answer was read whole and did not ask to close).
    pub async fn send(
        &mut self,
        method: &str,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, SendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let attempt = async {
            let peers = self.peers(timeout).await?;
            match self.exchange(&peers, method, headers, body).await {
                Ok(r) => Ok(r),
                Err(Failure::Stale(_)) => {
                    match self.exchange(&peers, method, headers, body).await {
                        Ok(r) => Ok(r),
                        Err(Failure::Stale(e) | Failure::Other(e)) => Err(e),
                    }
                }
                Err(Failure::Other(e)) => Err(e),
            }
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }

    /// The peers to try, in order: the endpoint's name resolved now (a moved agent is found
    /// again), every address it has, as a TCP connect would try them.
    async fn peers(&self, timeout: Duration) -> Result<Vec<HttpPeer>, SendError> {
        let mut peers = match &self.ep.target {
            Target::Unix { path } => {
                vec![HttpPeer::new_uds(path, false, String::new()).map_err(SendError::Connect)?]
            }
            Target::Tcp { host, port } => {
                let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, *port)],
                    Err(_) => tokio::net::lookup_host((host.as_str(), *port))
                        .await
                        .map_err(|e| SendError::Resolve(host.clone(), e))?
                        .collect(),
                };
                if addrs.is_empty() {
                    let none = std::io::Error::other("no address found");
                    return Err(SendError::Resolve(host.clone(), none));
                }
                let sni = if self.ep.tls {
                    host.clone()
                } else {
                    String::new()
                };
                addrs
                    .into_iter()
                    .map(|a| HttpPeer::new(a, self.ep.tls, sni.clone()))
                    .collect()
            }
        };
        for peer in &mut peers {
            peer.options.connection_timeout = Some(timeout);
            peer.options.ca = self.ca.clone();
        }
        Ok(peers)
    }

    /// A session with the first peer that answers the connect (from the pool when one is kept).
    async fn connect<'p>(
        &mut self,
        peers: &'p [HttpPeer],
    ) -> Result<(HttpSession, bool, &'p HttpPeer), SendError> {
        let mut last = None;
        for peer in peers {
            match self.connector.get_http_session(peer).await {
                Ok((session, reused)) => {
                    if !reused {
                        self.opened += 1;
                    }
                    return Ok((session, reused, peer));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(SendError::Connect(last.unwrap_or_else(|| {
            pingora::Error::explain(pingora::ErrorType::ConnectError, "no address to connect to")
        })))
    }

    async fn exchange(
        &mut self,
        peers: &[HttpPeer],
        method: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let (mut session, reused, peer) = self.connect(peers).await.map_err(Failure::Other)?;
        let before_answer = |e: Box<pingora::Error>| {
            if reused {
                Failure::Stale(SendError::Exchange(e))
            } else {
                Failure::Other(SendError::Exchange(e))
            }
        };
        let req = request_head(&self.ep, method, headers, body.len())
            .map_err(|e| Failure::Other(SendError::Exchange(e)))?;
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(before_answer)?;
        session.write_body(body).await.map_err(before_answer)?;
        session.finish_body().await.map_err(before_answer)?;
        session.read_response().await.map_err(before_answer)?;
        let status = session
            .get_status()
            .map(|s| s.as_u16())
            .ok_or(Failure::Other(SendError::BadResponse("no status")))?;
        let answer = read_body(&mut session)
            .await
            .map_err(|e| Failure::Other(SendError::Exchange(e)))?;
        self.connector
            .release_http_session(session, peer, None)
            .await;
        Ok(Response {
            status,
            body: answer,
        })
    }
}

fn request_head(
    ep: &Endpoint,
    method: &str,
    headers: &[(&str, String)],
    len: usize,
) -> pingora::Result<RequestHeader> {
    let mut req = RequestHeader::build(
        method,
        ep.request_target().as_bytes(),
        Some(4 + headers.len()),
    )?;
    req.insert_header(http::header::HOST, ep.host_header.as_str())?;
    req.insert_header(
        http::header::USER_AGENT,
        concat!("stitch/", env!("CARGO_PKG_VERSION")),
    )?;
    req.insert_header(http::header::CONTENT_LENGTH, len)?;
    for (k, v) in headers {
        req.append_header(k.to_string(), v.as_str())?;
    }
    Ok(req)
}

/// The answer's body, read to its end (so the connection can be reused), at most
/// [`MAX_RESPONSE`] bytes kept.
async fn read_body(session: &mut HttpSession) -> pingora::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_body_ref().await? {
        let room = MAX_RESPONSE.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_urls() {
        let tcp = |host: &str, port| Target::Tcp {
            host: host.into(),
            port,
        };
        #[rustfmt::skip]
        let rows = [
            ("http://127.0.0.1:8126", tcp("127.0.0.1", 8126), false, "", "127.0.0.1:8126"),
            ("http://agent", tcp("agent", 80), false, "", "agent"),
            ("http://[::1]:4318/v1/traces", tcp("::1", 4318), false, "/v1/traces", "[::1]:4318"),
            ("http://[::1]/x", tcp("::1", 80), false, "/x", "[::1]"),
            (" http://c:4318/a/b?q=1 ", tcp("c", 4318), false, "/a/b?q=1", "c:4318"),
            ("https://otlp.example/v1/traces", tcp("otlp.example", 443), true, "/v1/traces", "otlp.example"),
            ("https://localhost:4318", tcp("localhost", 4318), true, "", "localhost:4318"),
        ];
        for (url, target, tls, path, host_header) in rows {
            let ep = Endpoint::parse(url).unwrap();
            assert_eq!(
                (ep.target, ep.tls, ep.path.as_str(), ep.host_header.as_str()),
                (target, tls, path, host_header),
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
            ("ftp://agent:8126", UrlError::Scheme),
            ("agent:8126", UrlError::Scheme),
            ("http://:8126", UrlError::NoHost),
            ("http://agent:99999", UrlError::Port),
            ("http://agent:", UrlError::Port),
            ("http://[::1", UrlError::NoHost),
            ("http://[::1]x", UrlError::Port),
            ("http://u:p@agent", UrlError::UserInfo),
            ("https://127.0.0.1:4318", UrlError::TlsIp),
            ("https://[::1]/v1/traces", UrlError::TlsIp),
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

    /// A local server that answers every request with `answer` and counts its connections and
    /// requests; it closes a connection after `per_conn` answers, as a server dropping an idle
    /// keep-alive connection does.
    async fn counting_server(
        per_conn: usize,
        answer: &'static [u8],
    ) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
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
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
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
                        if sock.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    // dropped: the connection closes
                });
            }
        });
        (port, conns, reqs)
    }

    async fn send_n(port: u16, n: usize) -> Client {
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}/v0.4/traces")).unwrap();
        let mut client = Client::new(ep, None);
        for i in 1..=n {
            let r = client
                .send("PUT", &[], b"[]", Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status, 200, "request {i}");
        }
        client
    }

    #[tokio::test]
    async fn a_client_reuses_its_connection_and_survives_the_server_closing_it() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let (port, conns, reqs) = counting_server(3, ok).await;
        let client = send_n(port, 7).await;
        // 3 answers per connection; the 4th and 7th requests found theirs closed and went on a
        // new connection rather than failing.
        assert_eq!(reqs.load(Ordering::SeqCst), 7);
        assert_eq!(conns.load(Ordering::SeqCst), 3);
        assert_eq!(client.connections_opened(), 3);
    }

    /// When the connection may carry another request: a chunked answer read whole keeps it (the
    /// hand-written client closed it); `Connection: close` and HTTP/1.0 do not.
    #[tokio::test]
    async fn keep_alive_only_when_the_answer_allows_it() {
        let rows: [(&'static [u8], usize); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 1),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                1,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
                3,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", 3),
        ];
        for (answer, want) in rows {
            let (port, conns, _) = counting_server(100, answer).await;
            let client = send_n(port, 3).await;
            assert_eq!(
                (
                    conns.load(Ordering::SeqCst),
                    client.connections_opened() as usize
                ),
                (want, want),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}
