//! The PROXY protocol at accept time, for listeners that expect it.
//!
//! Pingora 0.9.1 does not read the PROXY protocol: a plain listener hands the first bytes
//! straight to the HTTP parser, and its one pre-HTTP hook, `PreTlsProcess`
//! (`pingora-core/src/listeners/mod.rs`), is called only on TLS listeners, before the handshake.
//! So stitch reads the header itself, from Pingora's L4 stream, before anything else does:
//! - on a plain listener, [`ProxyProtocol`] wraps the HTTP proxy app (a `ServerApp`) and reads
//!   the header when the connection is handed to it;
//! - on a TLS listener, [`Acceptor`] is the `PreTlsProcess` callback of the listeners' service.
//!
//! Both read the bytes as they come until [`crate::proxy_protocol::parse`] has a whole header,
//! put back what followed it (`rewind`), and close the connection when the header is missing,
//! broken, or not complete within `[server] proxy_protocol_timeout_ms` (5 s by default, read
//! from the runtime serving when the connection comes, so a reload changes it). When the connection's own peer is a
//! trusted proxy (`[server] trusted_proxies`, from the runtime serving at accept time), the
//! header's source becomes the connection's peer address (a new socket digest, which Pingora's
//! HTTP session reports as the client address), so the request path sees it as it sees any
//! peer: the `X-Forwarded-For` walk starts from it. From an untrusted peer the header is read
//! and its addresses ignored. `LOCAL` headers (a balancer's health check) and unknown
//! addresses keep the connection's own.
//!
//! `stitch_proxy_protocol_total{result}`: `proxied`, `local`, `untrusted`, `invalid`, `timeout`.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use prometheus::IntCounter;
use tokio::io::AsyncReadExt;

use crate::metrics::Metrics;
use crate::proxy_protocol::{self, Header, Parsed};
use crate::runtime::Live;

/// What happened to one connection's header, as the metric's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The header's source is the connection's peer now.
    Proxied,
    /// `LOCAL`, `UNKNOWN`, `UNSPEC` or `UNIX`: the connection's own addresses stay.
    Local,
    /// The sender is not a trusted proxy: its header's addresses were ignored.
    Untrusted,
    /// No valid header: the connection was closed.
    Invalid,
    /// The header did not arrive in time: the connection was closed.
    Timeout,
}

impl Outcome {
    pub const LABELS: [&'static str; 5] = ["proxied", "local", "untrusted", "invalid", "timeout"];
}

/// Reads the header of each connection of the listeners it serves.
pub struct Acceptor {
    live: Arc<Live>,
    counters: [IntCounter; 5],
}

impl Acceptor {
    pub fn new(live: Arc<Live>, metrics: &Metrics) -> Acceptor {
        Acceptor {
            live,
            counters: Outcome::LABELS.map(|l| metrics.proxy_protocol.with_label_values(&[l])),
        }
    }

    /// Read the header off `stream` and apply it. An error closes the connection.
    pub async fn accept(&self, stream: &mut L4Stream) -> Result<Outcome, proxy_protocol::Error> {
        let wait = self.live.snapshot().config.server.proxy_protocol_timeout;
        let read = tokio::time::timeout(wait, read_header(stream)).await;
        let outcome = match read {
            Err(_) => Err((Outcome::Timeout, proxy_protocol::Error::Missing)),
            Ok(Err(e)) => Err((Outcome::Invalid, e)),
            Ok(Ok(header)) => Ok(self.apply(stream, &header)),
        };
        match outcome {
            Ok(o) => {
                self.counters[o as usize].inc();
                Ok(o)
            }
            Err((o, e)) => {
                self.counters[o as usize].inc();
                log::debug!("closing a connection without a valid PROXY header: {o:?}, {e}");
                Err(e)
            }
        }
    }

    /// Make the header's source the connection's peer, if the sender is trusted.
    fn apply(&self, stream: &mut L4Stream, header: &Header) -> Outcome {
        let Some(a) = header.addresses else {
            return Outcome::Local;
        };
        let sender = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|p| p.as_inet()).map(|p| p.ip()));
        let rt = self.live.snapshot();
        if !sender.is_some_and(|ip| rt.trusted_proxies.contains(ip.to_canonical())) {
            return Outcome::Untrusted;
        }
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        let _ = digest.peer_addr.set(Some(a.source.into()));
        let _ = digest.local_addr.set(Some(a.destination.into()));
        stream.set_socket_digest(digest);
        Outcome::Proxied
    }
}

/// Read until the bytes hold a whole header; what follows it is put back for HTTP. The bytes go
/// straight into a heap buffer: a read buffer on the stack would stay in the connection's
/// future, and so in memory, for as long as the connection.
async fn read_header(stream: &mut L4Stream) -> Result<Header, proxy_protocol::Error> {
    let mut buf = Vec::with_capacity(256);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(256);
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|_| proxy_protocol::Error::Missing)?;
        if n == 0 {
            return Err(proxy_protocol::Error::Missing);
        }
        if let Parsed::Header(h) = proxy_protocol::parse(&buf)? {
            stream.rewind(&buf[h.len..]);
            return Ok(h);
        }
    }
}

#[async_trait]
impl PreTlsProcess for Acceptor {
    /// A TLS listener's connection, before the handshake.
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.accept(stream)
            .await
            .map(|_| ())
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::HandshakeError, e.to_string()))
    }
}

/// A `ServerApp` (stitch's HTTP proxy) behind the PROXY protocol.
pub struct ProxyProtocol<A> {
    inner: Arc<A>,
    acceptor: Arc<Acceptor>,
}

impl<A> ProxyProtocol<A> {
    pub fn new(inner: A, acceptor: Arc<Acceptor>) -> ProxyProtocol<A> {
        ProxyProtocol {
            inner: Arc::new(inner),
            acceptor,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ProxyProtocol<A> {
    /// A new connection: its header first (on a plain listener; a TLS listener's was read before
    /// the handshake), then the wrapped app for as long as it keeps the connection. Pingora's
    /// HTTP app loops keep-alive itself and hands nothing back; an app that did hand the
    /// connection back is called again here rather than by Pingora, which would call this
    /// method again and read a second header off a connection that has one.
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.as_any().is::<L4Stream>() {
            let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
            self.acceptor.accept(&mut l4).await.ok()?;
            stream = l4;
        }
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(s) = next {
            next = self.inner.process_new(s, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// A proxy service whose listeners all expect a PROXY protocol header: plain ones through
/// [`ProxyProtocol`], TLS ones through the pre-TLS callback. Add the listeners to it as to the
/// service `pingora::proxy::http_proxy_service_with_name` makes.
pub fn service<A: ServerApp + Send + Sync + 'static>(
    name: &str,
    app: A,
    acceptor: Arc<Acceptor>,
) -> pingora::services::listening::Service<ProxyProtocol<A>> {
    let mut service = pingora::services::listening::Service::new(
        name.to_string(),
        ProxyProtocol::new(app, acceptor.clone()),
    );
    service.endpoints().set_pre_tls_callback(acceptor);
    service
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Hands the connection back twice, then keeps it: what an app that reuses connections
    /// through Pingora's loop does.
    struct Reuser {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl ServerApp for Reuser {
        async fn process_new(self: &Arc<Self>, s: Stream, _: &ShutdownWatch) -> Option<Stream> {
            (self.calls.fetch_add(1, Ordering::SeqCst) < 2).then_some(s)
        }
    }

    #[tokio::test]
    async fn the_header_is_read_once_however_often_the_app_hands_the_connection_back() {
        let text = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[[route]]\npath = \"/\"\nupstream = \"builtin:echo\"\n";
        let metrics = Metrics::new();
        let config = crate::config::parse(text).unwrap();
        let (rt, _) = crate::runtime::compile(
            config,
            String::new(),
            1,
            &Arc::new(Metrics::new()),
            None,
            None,
        )
        .unwrap();
        let acceptor = Arc::new(Acceptor::new(Arc::new(Live::new(rt)), &metrics));
        let app = Arc::new(ProxyProtocol::new(
            Reuser {
                calls: AtomicUsize::new(0),
            },
            acceptor,
        ));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client
            .write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\nrest")
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
        let mut l4 = L4Stream::from(tcp);
        l4.set_socket_digest(digest);
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        assert!(app.process_new(Box::new(l4), &shutdown).await.is_none());
        assert_eq!(
            app.inner.calls.load(Ordering::SeqCst),
            3,
            "the app got the connection 3 times"
        );
        let proxied = metrics.proxy_protocol.with_label_values(&["proxied"]).get();
        assert_eq!(proxied, 1, "one header read");
        assert_eq!(
            metrics.proxy_protocol.with_label_values(&["invalid"]).get(),
            0
        );
    }
}
