//! The connection front: what stitch does with a client connection before Pingora's HTTP/1
//! parser sees it. It caps the open connections (`server.max_connections`: beyond it a new
//! connection gets a 503 and is closed, the open ones are untouched), gives the first request
//! head a total deadline (`server.header_timeout_ms`: a client trickling one byte a second is
//! cut off with a 408, where Pingora's per-read timeout would never fire), and refuses a first
//! head Pingora would refuse with an empty 400 or rewrite (a malformed request line is
//! percent-encoded by Pingora into another target) with a short JSON body saying why, counted
//! in `stitch_requests_total` and logged like every other request. Then it hands the bytes to
//! Pingora as the start of its parse buffer and Pingora serves the request.
//!
//! Only a connection's first head passes these checks: later requests of a kept-alive
//! connection (pipelined bytes included) meet stitch's own checks in `request_filter` and
//! Pingora's parser. But the front runs the keep-alive loop itself, the way Pingora's HTTP
//! app does (`pingora-core/src/apps/mod.rs`), with one difference: between two requests the
//! connection waits for the first byte of the next one holding nothing but its stream. Pingora
//! would start the next request at once and wait inside it, holding the request's whole state
//! (its future, about 12 KiB, and a 4 KiB head buffer) for as long as the client stays idle;
//! here those exist only while a request is being served. The wait keeps Pingora's rules: the
//! keep-alive timeout the last request set, the end of the service, and no wait at all when
//! the client has already sent the next request (pipelined bytes read with the last one).
//! HTTP/2 connections are Pingora's loop as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use futures::FutureExt;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the front enforces.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// The first head, request line and headers: 431 beyond.
    pub max_header_bytes: usize,
    /// The request target: 414 beyond.
    pub max_uri_bytes: usize,
}

/// Why the front refused a connection or its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    TooManyConnections,
    HeaderTimeout,
    HeaderTooLarge,
    UriTooLong,
    BadRequestLine,
    BadHeaderLine,
    /// `Content-Length` or `Transfer-Encoding` that do not frame the body one way only.
    BadFraming,
    /// `Host` missing (HTTP/1.1), doubled, or not the absolute-form target's authority.
    BadHost,
}

impl Early {
    pub fn status(self) -> u16 {
        match self {
            Early::TooManyConnections => 503,
            Early::HeaderTimeout => 408,
            Early::HeaderTooLarge => 431,
            Early::UriTooLong => 414,
            Early::BadRequestLine | Early::BadHeaderLine | Early::BadFraming | Early::BadHost => {
                400
            }
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Early::TooManyConnections => "too_many_connections",
            Early::HeaderTimeout => "header_timeout",
            Early::HeaderTooLarge => "header_too_large",
            Early::UriTooLong => "uri_too_long",
            Early::BadRequestLine | Early::BadHeaderLine | Early::BadFraming | Early::BadHost => {
                "bad_request"
            }
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Early::TooManyConnections => "stitch has reached server.max_connections; retry later",
            Early::HeaderTimeout => "the request header did not arrive in time",
            Early::HeaderTooLarge => "the request header is too large",
            Early::UriTooLong => "the request target is too long",
            Early::BadRequestLine => "malformed request line",
            Early::BadHeaderLine => "malformed header line",
            Early::BadFraming => {
                "Content-Length or Transfer-Encoding does not frame the body one way"
            }
            Early::BadHost => "Host is missing, doubled, or not the target's authority",
        }
    }

    /// The whole response: status line, a JSON body, and `Connection: close`.
    pub fn response(self) -> Vec<u8> {
        let body = format!(
            "{{\"error\":\"{}\",\"message\":\"{}\"}}\n",
            self.kind(),
            self.message()
        );
        let reason = match self.status() {
            503 => "Service Unavailable",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            414 => "URI Too Long",
            _ => "Bad Request",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status(),
            body.len()
        );
        if self == Early::TooManyConnections {
            out.push_str("retry-after: 1\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

/// Where a head ends in `buf`: after the first empty line (CRLF CRLF, or bare LFs, which
/// Pingora's parser also accepts). Empty lines before the request line are skipped, as RFC 9112
/// §2.2 allows.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let mut i = start;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Check a complete head (as [`head_end`] found it) against RFC 9112, strictly where Pingora
/// would otherwise rewrite it or refuse it without a word: the request line is
/// `method SP target SP HTTP/1.x` with a target the URI parser takes; each header line is a
/// token, a colon with nothing before it, and a value without control bytes (no obs-fold);
/// one `Content-Length` of digits; a `Transfer-Encoding` (not on HTTP/1.0) ending in a single
/// `chunked`; exactly one `Host` on HTTP/1.1, the authority of an absolute-form target.
pub fn check_head(head: &[u8], limits: &FrontLimits) -> Result<(), Early> {
    if head.len() > limits.max_header_bytes {
        return Err(Early::HeaderTooLarge);
    }
    let head = &head[head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0)..];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version), None) = (method, target, version, parts.next())
    else {
        return Err(Early::BadRequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Early::BadRequestLine);
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(Early::BadRequestLine);
    }
    if target.len() > limits.max_uri_bytes {
        return Err(Early::UriTooLong);
    }
    if target.is_empty()
        || !target.iter().all(|&b| (0x21..0x7f).contains(&b))
        || (target != b"*" && http::Uri::try_from(target).is_err())
    {
        return Err(Early::BadRequestLine);
    }
    let (mut lengths, mut codings, mut hosts) = (0, Vec::new(), Vec::new());
    for line in lines.filter(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Early::BadHeaderLine);
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(Early::BadHeaderLine);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Early::BadHeaderLine);
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if lengths > 1 || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Early::BadFraming);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.extend(value.split(|&b| b == b',').map(<[u8]>::trim_ascii));
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts.push(value);
        }
    }
    if !codings.is_empty() {
        let chunked = codings
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
            .count();
        let last_chunked = codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        if version == b"HTTP/1.0" || chunked != 1 || !last_chunked {
            return Err(Early::BadFraming);
        }
    }
    match (hosts.as_slice(), version) {
        ([], b"HTTP/1.0") => {}
        ([host], _) => {
            if let Some(authority) = absolute_authority(target) {
                if authority != *host {
                    return Err(Early::BadHost);
                }
            }
        }
        _ => return Err(Early::BadHost),
    }
    Ok(())
}

/// The authority of an absolute-form target (`http://host:port/path` gives `host:port`).
fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let start = target.windows(3).position(|w| w == b"://")? + 3;
    let rest = &target[start..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// What the front asks of the proxy, which owns the live configuration, the metrics and the
/// access log.
pub trait FrontHooks: Send + Sync {
    /// The limits in force now (they follow configuration reloads).
    fn limits(&self) -> FrontLimits;
    /// Count and log a refusal like any other request.
    fn refused(&self, why: Early, elapsed: Duration);
}

/// Holds one of the `server.max_connections` slots for as long as it lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let mut n = open.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match open.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Slot(open.clone())),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The front around Pingora's HTTP application `A`.
pub struct Front<A> {
    inner: Arc<A>,
    hooks: Arc<dyn FrontHooks>,
    /// Client connections open now.
    open: Arc<AtomicUsize>,
}

impl<A> Front<A> {
    pub fn new(inner: A, hooks: Arc<dyn FrontHooks>) -> Front<A> {
        Front {
            inner: Arc::new(inner),
            hooks,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn refuse(&self, stream: &mut Stream, why: Early, start: Instant) {
        // Counted and logged first: once the client has the answer, it may read the metrics.
        self.hooks.refused(why, start.elapsed());
        let _ = stream.write_all(&why.response()).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }
}

impl<A> Front<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Serve HTTP/1 requests until the connection closes: Pingora's keep-alive loop
    /// (`HttpServerApp for T` in `pingora-core/src/apps/mod.rs`), with the idle wait between two
    /// requests taken out of the request ([`next_request`]). `head` is what the front already
    /// read of the first request. A session only ever lives inside the request's own future,
    /// never in this one, which stays for the connection's life.
    async fn serve_http1(
        self: &Arc<Self>,
        stream: Stream,
        head: Option<BytesMut>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let first = self.first_session(stream, head, shutdown);
        let mut reused = self.inner.process_new_http(first, shutdown).await?;
        loop {
            let (mut stream, settings) = reused.consume();
            let mut next = None;
            if let Some(s) = &settings {
                if let (false, Some(keepalive)) = (s.has_pipelined_prefix(), s.keepalive_timeout())
                {
                    next = Some(next_request(&mut stream, keepalive, shutdown).await?);
                }
            }
            let session = next_session(stream, settings, next);
            reused = self.inner.process_new_http(session, shutdown).await?;
        }
    }

    /// A connection's first session, set up as Pingora sets one up: keep-alive 60 s (stitch's
    /// `early_request_filter` then sets its own), none once the service is stopping.
    fn first_session(
        &self,
        stream: Stream,
        head: Option<BytesMut>,
        shutdown: &ShutdownWatch,
    ) -> ServerSession {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        session.set_keepalive_reuses_remaining(
            self.inner
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        if let Some(head) = head {
            session.set_pipelined_prefix(head);
        }
        session
    }
}

/// The session of a kept-alive connection's next request: what the last one left
/// (`settings`: keep-alive, the user context, pipelined bytes), or the first byte
/// [`next_request`] waited for.
fn next_session(
    stream: Stream,
    settings: Option<HttpPersistentSettings>,
    first: Option<BytesMut>,
) -> ServerSession {
    let mut session = ServerSession::new_http1(stream);
    if let Some(s) = settings {
        s.apply_to_session(&mut session);
    }
    if let Some(first) = first {
        session.set_pipelined_prefix(first);
    }
    session
}

/// The first line of the HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The first read of a request head: 4 KiB, as Pingora's own (`INIT_HEADER_BUF_SIZE`).
const HEAD_BUFFER: usize = 4096;

/// Read until the first head is complete; `Ok(None)` when the client leaves first. The bytes go
/// straight into a heap buffer, which becomes Pingora's parse buffer: a read buffer on the
/// stack would stay in the connection's future, and so in memory, as long as the connection.
async fn read_head(stream: &mut Stream, max: usize) -> Result<Option<BytesMut>, Early> {
    let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(HEAD_BUFFER);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        if head_end(&buf).is_some() {
            return Ok(Some(buf));
        }
        if buf.len() > max {
            return Err(Early::HeaderTooLarge);
        }
    }
}

/// Wait between two requests of a kept-alive connection for the first byte of the next one, as
/// Pingora waits for a head (`HttpSession::read_request`): at most `keepalive` seconds (0: no
/// limit) and not past the end of the service. `None` closes the connection: the client left,
/// stayed idle too long, or the server is stopping. The byte, and what came with it, come back
/// in a buffer of the size Pingora would read a head into, to become the start of the next
/// session's.
async fn next_request(
    stream: &mut Stream,
    keepalive: u64,
    shutdown: &ShutdownWatch,
) -> Option<BytesMut> {
    let mut first = [0u8; 1];
    let mut stopping = shutdown.clone();
    let read = async {
        match keepalive {
            0 => stream.read(&mut first).await.ok(),
            s => tokio::time::timeout(Duration::from_secs(s), stream.read(&mut first))
                .await
                .ok()?
                .ok(),
        }
    };
    let n = tokio::select! {
        biased;
        n = read => n?,
        _ = stopping.wait_for(|stop| *stop) => return None,
    };
    if n == 0 {
        return None;
    }
    let mut head = BytesMut::with_capacity(HEAD_BUFFER);
    head.extend_from_slice(&first[..n]);
    // What else has come already (mostly the rest of the head, out of the read buffer the one
    // byte was read through), without waiting: Pingora then parses the head as it is instead
    // of parsing one byte and reading again. A read that would wait is dropped; the end of the
    // stream or an error here, Pingora's next read meets again.
    let _ = stream.read_buf(&mut head).now_or_never();
    Some(head)
}

#[async_trait]
impl<A> ServerApp for Front<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let start = Instant::now();
        let limits = self.hooks.limits();
        if !stream.as_any().is::<L4Stream>() {
            // A TLS stream (or a test double): the first head is Pingora's to read and check.
            // HTTP/2, chosen by ALPN, and anything but TLS are Pingora's loop as before.
            let http1 = stream.get_ssl_digest().is_some()
                && !matches!(
                    stream.selected_alpn_proto(),
                    Some(ALPN::H2 | ALPN::Custom(_))
                );
            if http1 {
                return self.serve_http1(stream, None, shutdown).await;
            }
            return self.inner.process_new(stream, shutdown).await;
        }
        let Some(_slot) = Slot::take(&self.open, limits.max_connections) else {
            self.refuse(&mut stream, Early::TooManyConnections, start)
                .await;
            return None;
        };
        let read = tokio::time::timeout(
            limits.header_timeout,
            read_head(&mut stream, limits.max_header_bytes),
        )
        .await;
        let buf = match read {
            Err(_) => {
                self.refuse(&mut stream, Early::HeaderTimeout, start).await;
                return None;
            }
            Ok(Err(why)) => {
                self.refuse(&mut stream, why, start).await;
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(buf))) => buf,
        };
        if buf.starts_with(H2_PREFACE_LINE) {
            // The HTTP/2 connection preface (h2c with prior knowledge) is not an HTTP/1 head:
            // Pingora's loop peeks at it again and reads the HTTP/2 framing that follows.
            let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
                return None; // checked above
            };
            l4.rewind(&buf);
            drop(buf); // the stream has its own copy; this one must not stay in the future
            return self.inner.process_new(l4, shutdown).await;
        }
        let end = head_end(&buf).unwrap_or(buf.len());
        if let Err(why) = check_head(&buf[..end], &limits) {
            self.refuse(&mut stream, why, start).await;
            return None;
        }
        self.serve_http1(stream, Some(buf), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrontLimits = FrontLimits {
        max_connections: 1,
        header_timeout: Duration::from_secs(1),
        max_header_bytes: 200,
        max_uri_bytes: 20,
    };

    #[rustfmt::skip]
    #[test]
    fn heads() {
        let rows: &[(&[u8], Result<(), Early>, &str)] = &[
            (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", Ok(()), "an ordinary head"),
            (b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n", Ok(()), "a leading empty line"),
            (b"GET /a HTTP/1.1\nHost: h\n\n", Ok(()), "bare LF line ends"),
            (b"GET /a?q=%20 HTTP/1.0\r\n\r\n", Ok(()), "an encoded space"),
            (b"GET /a /b HTTP/1.1\r\nHost: h\r\n\r\n", Err(Early::BadRequestLine), "a space in the target"),
            (b"GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", Err(Early::BadRequestLine), "a control byte in the target"),
            (b"GET /a\"b HTTP/1.1\r\nHost: h\r\n\r\n", Ok(()), "a quote is visible ASCII (the URI parser decides)"),
            (b"GET /a HTTP/2.0\r\nHost: h\r\n\r\n", Err(Early::BadRequestLine), "another version"),
            (b"G(T /a HTTP/1.1\r\n\r\n", Err(Early::BadRequestLine), "a method that is not a token"),
            (b"GET /aaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", Err(Early::UriTooLong), "a target over the limit"),
            (b"GET /a HTTP/1.1\r\nX Y: 1\r\n\r\n", Err(Early::BadHeaderLine), "a space in a name"),
            (b"GET /a HTTP/1.1\r\nX : 1\r\n\r\n", Err(Early::BadHeaderLine), "whitespace before the colon"),
            (b"GET /a HTTP/1.1\r\n: 1\r\n\r\n", Err(Early::BadHeaderLine), "an empty name"),
            (b"GET /a HTTP/1.1\r\nX: a\x00b\r\n\r\n", Err(Early::BadHeaderLine), "NUL in a value"),
            (b"GET /a HTTP/1.1\r\nX: a\rb\r\n\r\n", Err(Early::BadHeaderLine), "a bare CR in a value"),
            (b"GET /a HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Err(Early::BadHeaderLine), "obs-fold"),
            (b"GET /a HTTP/1.1\r\nHost: h\r\nX: a\tb\r\n\r\n", Ok(()), "a tab in a value"),
            (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", Ok(()), "one Content-Length"),
            (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", Err(Early::BadFraming), "two Content-Lengths"),
            (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n", Err(Early::BadFraming), "a Content-Length list"),
            (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n", Err(Early::BadFraming), "a signed Content-Length"),
            (b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Ok(()), "chunked last"),
            (b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Err(Early::BadFraming), "chunked not last"),
            (b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Err(Early::BadFraming), "chunked twice"),
            (b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(Early::BadFraming), "HTTP/1.0 with Transfer-Encoding"),
            (b"GET /a HTTP/1.1\r\n\r\n", Err(Early::BadHost), "HTTP/1.1 without Host"),
            (b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(Early::BadHost), "two Hosts"),
            (b"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n", Ok(()), "absolute-form, same Host"),
            (b"GET http://b/c HTTP/1.1\r\nHost: a\r\n\r\n", Err(Early::BadHost), "absolute-form, another Host"),
            (b"GET /a?q=<b> HTTP/1.1\r\nHost: h\r\n\r\n", Err(Early::BadRequestLine), "a target the URI parser refuses"),
        ];
        for (head, want, why) in rows {
            let end = head_end(head).unwrap_or(head.len());
            assert_eq!(check_head(&head[..end], &LIMITS), *want, "{why}");
        }
        let big = format!("GET /a HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(200));
        assert_eq!(check_head(big.as_bytes(), &LIMITS), Err(Early::HeaderTooLarge));
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[test]
    fn slots() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).unwrap();
        let _b = Slot::take(&open, 2).unwrap();
        assert!(Slot::take(&open, 2).is_none());
        drop(a);
        assert!(Slot::take(&open, 2).is_some());
    }

    #[test]
    fn responses_carry_a_body_and_close() {
        let r = String::from_utf8(Early::HeaderTimeout.response()).unwrap();
        assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
        assert!(r.contains("connection: close\r\n"));
        assert!(r.ends_with("\"error\":\"header_timeout\",\"message\":\"the request header did not arrive in time\"}\n"));
    }
}
