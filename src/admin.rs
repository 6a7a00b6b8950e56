//! The admin listener: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (config
//! loaded, the reloader listening for SIGHUP and changes, every proxy listener accepting, and
//! with `[kubernetes]` the cluster's objects listed once), and the request inspector's
//! `/requests` (HTML) and `/requests.json`. A deliberately small HTTP/1.1 server: one request
//! per connection, answered and closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::inspect::{page, Filter, Inspector};
use crate::metrics::Metrics;

/// What the admin endpoints need to answer.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// The proxy's listen addresses, as bound, and how each is probed.
    pub proxy_listen: Vec<Probed>,
    /// True once the reloader listens for SIGHUP and watches the config.
    pub reloader_ready: Arc<AtomicBool>,
    /// With `[kubernetes]`: true once the cluster's objects were listed and served (stays true
    /// when the API server goes away later).
    pub cluster_ready: Option<Arc<AtomicBool>>,
    /// The request inspector's ring buffer.
    pub inspector: Arc<Inspector>,
}

/// The inspector page runs no script and loads nothing: the browser is told so.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'";

/// Serve admin requests on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            log::error!("admin listener unusable: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let state = state.clone();
                    tokio::spawn(async move { handle(stream, &state).await });
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
            }
        }
    }
}

async fn handle(mut stream: TcpStream, state: &AdminState) {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut extra = "";
    let (status, ctype, body): (&str, &str, Vec<u8>) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain", b"ok\n".to_vec()),
        ("GET", "/readyz") => {
            let down = not_accepting(&state.proxy_listen).await;
            let unsynced = state
                .cluster_ready
                .as_ref()
                .is_some_and(|r| !r.load(Ordering::Acquire));
            if !state.reloader_ready.load(Ordering::Acquire) {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    b"not ready: the configuration reloader is starting\n".to_vec(),
                )
            } else if unsynced {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    b"not ready: the Kubernetes objects have not been listed yet\n".to_vec(),
                )
            } else if down.is_empty() {
                ("200 OK", "text/plain", b"ready\n".to_vec())
            } else {
                let list: Vec<String> = down.iter().map(|a| a.to_string()).collect();
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!(
                        "not ready: proxy listener not accepting on {}\n",
                        list.join(", ")
                    )
                    .into_bytes(),
                )
            }
        }
        ("GET" | "HEAD", "/requests" | "/requests.json") => match Filter::parse(query) {
            Ok(filter) if path == "/requests" => {
                extra = PAGE_CSP;
                (
                    "200 OK",
                    "text/html; charset=utf-8",
                    page::html_body(&state.inspector, &filter),
                )
            }
            Ok(filter) => (
                "200 OK",
                "application/json",
                page::json_body(&state.inspector, &filter),
            ),
            Err(why) => (
                "400 Bad Request",
                "text/plain; charset=utf-8",
                format!("{why}\n").into_bytes(),
            ),
        },
        (_, "/metrics" | "/healthz" | "/readyz" | "/requests" | "/requests.json") => (
            "405 Method Not Allowed",
            "text/plain",
            b"use GET\n".to_vec(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            b"not found: the admin listener serves /metrics, /healthz, /readyz, /requests and /requests.json\n"
                .to_vec(),
        ),
    };
    let mut header = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if !extra.is_empty() {
        header.push_str("content-security-policy: ");
        header.push_str(extra);
        header.push_str("\r\ncache-control: no-store\r\n");
    }
    header.push_str("\r\n");
    let _ = stream.write_all(header.as_bytes()).await;
    if method != "HEAD" {
        let _ = stream.write_all(&body).await;
    }
    let _ = stream.shutdown().await;
}

/// The listeners that do not accept a TCP connection right now.
/// A proxy listener as the readiness probe sees it.
#[derive(Debug, Clone, Copy)]
pub struct Probed {
    pub addr: SocketAddr,
    /// Probe with a TLS handshake.
    pub tls: bool,
    /// Send a PROXY protocol `LOCAL` header first, as a balancer's health check does: without
    /// one the listener closes the connection (and counts it as invalid).
    pub proxy_protocol: bool,
}

async fn not_accepting(listeners: &[Probed]) -> Vec<SocketAddr> {
    let mut down = Vec::new();
    for l in listeners {
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(1), accepts(l)).await,
            Ok(true)
        );
        if !ok {
            down.push(l.addr);
        }
    }
    down
}

/// A PROXY protocol v2 header with the `LOCAL` command and no addresses.
const PROXY_V2_LOCAL: [u8; 16] = *b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// Does the listener accept a connection (and, for TLS, complete a handshake)? A bare TCP
/// connect to a TLS listener would make Pingora log a failed handshake on every probe.
async fn accepts(l: &Probed) -> bool {
    let Ok(mut tcp) = TcpStream::connect(loopback_for(l.addr)).await else {
        return false;
    };
    if l.proxy_protocol && tcp.write_all(&PROXY_V2_LOCAL).await.is_err() {
        return false;
    }
    if !l.tls {
        return true;
    }
    handshake(tcp).await.is_ok()
}

async fn handshake(tcp: TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use pingora::tls::tokio_ssl::SslStream;
    let mut b = SslConnector::builder(SslMethod::tls())?;
    // Only that the handshake completes: the probe trusts nothing and sends no name.
    b.set_verify(SslVerifyMode::NONE);
    let ssl = b
        .build()
        .configure()?
        .use_server_name_indication(false)
        .verify_hostname(false)
        .into_ssl("readyz")?;
    let mut stream = SslStream::new(ssl, tcp)?;
    std::pin::Pin::new(&mut stream).connect().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// A wildcard listen address is checked through loopback.
fn loopback_for(a: SocketAddr) -> SocketAddr {
    let mut t = a;
    if a.ip().is_unspecified() {
        t.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    t
}
