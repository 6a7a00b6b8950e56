//! The edge span: one span per proxied request (or answered preflight), and its export to a
//! Datadog Agent (msgpack v0.4) and an OTLP/HTTP endpoint (protobuf), never on the request path.
//!
//! The proxy builds an [`EdgeSpan`] when a request ends and hands it to [`SpanSink::submit`],
//! which only does a `try_send` into a bounded queue per exporter: a full queue drops the span
//! and counts it. A background future ([`Exporter::run`]) batches spans by size and time,
//! encodes them ([`datadog`], [`otlp`]) and sends them over HTTP/1.1 with Pingora's own client
//! ([`http`]: `http://`, `https://` with the system's roots or a `ca_file`, and `unix://`).
//!
//! # What goes where
//!
//! * **Datadog** gets every span, kept or dropped (sampling priority `<= 0` included). This is
//!   what dd-trace-py 4.x does by default: client-side stats computation
//!   (`DD_TRACE_STATS_COMPUTATION_ENABLED`) is off unless the tracer runs in a GCP function, and
//!   with it off the tracer sends all traces and lets the Agent compute APM stats (hits,
//!   errors, latency) from all of them before the Agent itself drops the `priority <= 0`
//!   traces. Dropping them here would make the Agent's stats for the stitch service count only
//!   the kept requests. stitch therefore sends no `Datadog-Client-Computed-Stats` header.
//! * **OTLP** gets kept traces only (priority `> 0`); spans of dropped traces are not queued
//!   for it at all (not counted as drops: they are not meant to be exported).
//!
//! # Batching, retries, drops
//!
//! Each exporter has its own queue (`queue_capacity` spans) and its own task. A batch is sent
//! when it holds `batch_size` spans or `flush_interval` after its first span arrived. A failed
//! batch (connection error, timeout, HTTP 5xx/429/408 for Datadog; 429/502/503/504/408 for OTLP,
//! as the OTLP spec lists) is retried up to `max_retries` times with exponential backoff
//! starting at `backoff`; a batch is removed from the queue only once it was answered, so a
//! retried batch arrives once. Other 4xx answers drop the batch at once (`rejected`).
//! `stitch_spans_dropped_total{exporter,reason}` reasons: `queue_full`, `retries_exhausted`,
//! `rejected`, `encode_error`, `shutdown`. `stitch_export_batches_total{exporter,result}`
//! counts send attempts: `ok`, `retry` (failed, will be retried), `failed` (failed, dropped).
//! Each exporter keeps its connection to the agent or collector open between batches while the
//! peer allows (HTTP/1.1 keep-alive with a whole answer, by Content-Length or chunked); a kept
//! connection the peer closed meanwhile is replaced and the batch sent again at once.
//! `stitch_export_connections_total{exporter}` counts the connections opened.
//!
//! On shutdown the queues are closed (later submits count as `shutdown` drops), what is queued
//! is flushed within `shutdown_timeout`, and whatever is left then is counted as `shutdown`.

use std::borrow::Cow;
use std::sync::Arc;

pub mod datadog;
pub mod export;
pub mod http;
pub mod otlp;

pub use export::{
    build, DatadogExport, ExportConfig, ExportMetrics, Exporter, OtlpExport, SpanSink,
};

/// The operation name of every edge span.
pub const SPAN_NAME: &str = "stitch.request";

/// Prefix of the edge span's baggage tags, on both paths: dd-trace's name for them
/// (`BAGGAGE_TAG_PREFIX`, with `DD_TRACE_BAGGAGE_TAG_KEYS`) and OpenTelemetry's usual
/// `baggage.KEY` attribute.
pub const BAGGAGE_TAG_PREFIX: &str = "baggage.";

/// The version stitch reports as its tracer version.
pub const TRACER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Text taken from a request header for a span, held as the header's own value (a clone of
/// which counts a reference instead of copying), and always valid UTF-8: a value that is not
/// is replaced, once, by its lossy rendering.
#[derive(Clone, PartialEq, Eq)]
pub struct SpanText(::http::HeaderValue);

impl SpanText {
    pub fn new(v: &::http::HeaderValue) -> SpanText {
        if std::str::from_utf8(v.as_bytes()).is_ok() {
            return SpanText(v.clone());
        }
        let lossy = String::from_utf8_lossy(v.as_bytes());
        // The replacement character is obs-text, which a header value may hold.
        SpanText(
            ::http::HeaderValue::from_str(&lossy)
                .unwrap_or_else(|_| ::http::HeaderValue::from_static("")),
        )
    }
}

impl std::ops::Deref for SpanText {
    type Target = str;
    fn deref(&self) -> &str {
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }
}

impl std::fmt::Debug for SpanText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for SpanText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl From<&str> for SpanText {
    fn from(s: &str) -> SpanText {
        SpanText::new(
            &::http::HeaderValue::from_str(s)
                .unwrap_or_else(|_| ::http::HeaderValue::from_static("")),
        )
    }
}

/// One request as seen by the proxy: the span stitch reports for it.
///
/// Ids are the ones on the wire: `span_id` is the id injected upstream (so it is the parent of
/// the backend span), `parent_id` the incoming parent (0 for a root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSpan {
    /// Full 128-bit trace id (high half zero for 64-bit traces).
    pub trace_id: u128,
    pub span_id: u64,
    /// Incoming parent span id, 0 when stitch started the trace.
    pub parent_id: u64,
    pub start_unix_nanos: i64,
    pub duration_nanos: i64,
    /// `"METHOD route"` (shared: built once per route and method).
    pub resource: Arc<str>,
    /// Route name from the config.
    pub route: Arc<str>,
    pub method: ::http::Method,
    /// URL path, query already stripped by the caller unless configured otherwise.
    pub path: String,
    /// Response status sent to the client; 0 when no response was produced.
    pub status: u16,
    /// Upstream peer address (`host:port`).
    pub upstream: Option<Arc<str>>,
    /// Client address (IP, optionally with port).
    pub client_addr: Option<String>,
    pub user_agent: Option<SpanText>,
    /// `_dd.origin`, e.g. `rum`.
    pub origin: Option<String>,
    pub sampling_priority: i32,
    /// `_dd.p.dm` value, e.g. `-4`; wins over a `_dd.p.dm` entry in `tags`.
    pub decision_maker: Option<String>,
    /// `_dd.p.*` propagated tags, in the order to write them. `_dd.p.tid` here is ignored
    /// (it is derived from `trace_id`).
    pub tags: Vec<(String, String)>,
    /// `_dd.parent_id`: the last Datadog parent seen in tracestate.
    pub last_parent_id: Option<u64>,
    /// `_dd.propagation_error`.
    pub propagation_error: Option<String>,
    pub links: Vec<SpanLink>,
    pub error: Option<SpanError>,
    /// This span answered a CORS preflight.
    pub preflight: bool,
    /// `"1.1"`, `"2"`, ... (OTLP `network.protocol.version`).
    pub http_version: Option<Cow<'static, str>>,
    /// `"http"` or `"https"` as the client used it.
    pub scheme: Option<Cow<'static, str>>,
    /// Host the client asked for (`Host` / `:authority`), optionally with a port.
    pub host: Option<SpanText>,
    /// Baggage members the route's profile tags the span with (`baggage_tags`): key without
    /// the `baggage.` prefix the encoders add, value percent-decoded and bounded.
    pub baggage: Vec<(String, String)>,
    /// The request's `X-Request-Id`.
    pub request_id: Option<SpanText>,
}

/// A span link (from the merge step, e.g. `terminated_context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanLink {
    pub trace_id: u128,
    pub span_id: u64,
    /// The linked context's sampling decision, when known.
    pub sampled: Option<bool>,
    pub tracestate: Option<String>,
    pub attributes: Vec<(String, String)>,
}

/// Why the request failed (5xx, upstream connect failure, timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanError {
    /// Short type, e.g. `upstream_connect_error`, `upstream_timeout`, `http_502`.
    pub kind: String,
    pub message: String,
}

/// Who stitch is: `service`, `env`, `version` on every span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub service: String,
    pub env: Option<String>,
    pub version: Option<String>,
}

impl Default for ServiceInfo {
    fn default() -> Self {
        ServiceInfo {
            service: "stitch".to_string(),
            env: None,
            version: None,
        }
    }
}

/// `_dd.p.tid`: the high 64 bits of a 128-bit trace id as 16 lowercase hex, when non-zero.
pub(crate) fn trace_id_high(trace_id: u128) -> Option<u64> {
    let high = (trace_id >> 64) as u64;
    (high != 0).then_some(high)
}

/// The effective decision maker: the explicit one, else a `_dd.p.dm` tag.
pub(crate) fn decision_maker(span: &EdgeSpan) -> Option<&str> {
    span.decision_maker.as_deref().or_else(|| {
        span.tags
            .iter()
            .find(|(k, _)| k == "_dd.p.dm")
            .map(|(_, v)| v.as_str())
    })
}

/// The `_dd.p.*` tags to write: only `_dd.p.` keys, without `_dd.p.tid` / `_dd.p.dm` (written
/// from their own fields) and without repeated keys (first wins).
pub(crate) fn propagated_tags(span: &EdgeSpan) -> impl Iterator<Item = (&str, &str)> {
    span.tags.iter().enumerate().filter_map(move |(i, (k, v))| {
        let dup = span.tags.iter().take(i).any(|(prev, _)| prev == k);
        let wanted = k.starts_with("_dd.p.") && k != "_dd.p.tid" && k != "_dd.p.dm";
        (wanted && !dup).then_some((k.as_str(), v.as_str()))
    })
}

/// Split `host:port` / `[v6]:port`; a bare IPv6 address or a bad port stays whole.
pub(crate) fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (s, None);
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

/// The full URL when the host is known, else the path.
pub(crate) fn full_url(span: &EdgeSpan) -> String {
    match &span.host {
        Some(host) => format!(
            "{}://{}{}",
            span.scheme.as_deref().unwrap_or("http"),
            host,
            span.path
        ),
        None => span.path.clone(),
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// A span with every field set, ids from the spec's table (B, span `00f067aa0ba902b7`).
    pub fn full_span() -> EdgeSpan {
        EdgeSpan {
            trace_id: 0x640cfd8d00000000_64fe8b2a57d3eff7,
            span_id: 0x00f067aa0ba902b7,
            parent_id: 1234567890123456789,
            start_unix_nanos: 1_700_000_000_123_456_789,
            duration_nanos: 2_500_000,
            resource: "GET api".into(),
            route: "api".into(),
            method: ::http::Method::GET,
            path: "/api/users".into(),
            status: 502,
            upstream: Some("10.0.0.7:8080".into()),
            client_addr: Some("192.0.2.1".into()),
            user_agent: Some("Mozilla/5.0".into()),
            origin: Some("rum".into()),
            sampling_priority: 1,
            decision_maker: Some("-1".into()),
            tags: vec![
                ("_dd.p.usr.id".into(), "dXNlcjE=".into()),
                ("_dd.p.tid".into(), "ffffffffffffffff".into()),
            ],
            last_parent_id: Some(0x0123456789abcdef),
            propagation_error: None,
            links: vec![SpanLink {
                trace_id: 0x4bf92f3577b34da6_a3ce929d0e0e4736,
                span_id: 0x00f067aa0ba902b7,
                sampled: Some(true),
                tracestate: Some("congo=t61rcWkgMzE".into()),
                attributes: vec![("reason".into(), "terminated_context".into())],
            }],
            error: Some(SpanError {
                kind: "http_502".into(),
                message: "bad gateway".into(),
            }),
            preflight: false,
            http_version: Some("1.1".into()),
            scheme: Some("https".into()),
            host: Some("shop.example:8443".into()),
            baggage: vec![],
            request_id: None,
        }
    }

    /// The smallest span: a root, no optional field.
    pub fn minimal_span() -> EdgeSpan {
        EdgeSpan {
            trace_id: 7,
            span_id: 9,
            parent_id: 0,
            start_unix_nanos: 1000,
            duration_nanos: 5,
            resource: "OPTIONS r".into(),
            route: "r".into(),
            method: ::http::Method::OPTIONS,
            path: "/".into(),
            status: 204,
            upstream: None,
            client_addr: None,
            user_agent: None,
            origin: None,
            sampling_priority: 0,
            decision_maker: None,
            tags: vec![],
            last_parent_id: None,
            propagation_error: None,
            links: vec![],
            error: None,
            preflight: true,
            http_version: None,
            scheme: None,
            host: None,
            baggage: vec![],
            request_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_text_is_the_value_or_its_lossy_rendering() {
        let plain = ::http::HeaderValue::from_static("Mozilla/5.0 (X11)");
        assert_eq!(&*SpanText::new(&plain), "Mozilla/5.0 (X11)");
        let utf8 = ::http::HeaderValue::from_bytes("agent-\u{e9}".as_bytes()).unwrap();
        assert_eq!(&*SpanText::new(&utf8), "agent-\u{e9}");
        let latin1 = ::http::HeaderValue::from_bytes(b"agent-\xe9").unwrap();
        assert_eq!(&*SpanText::new(&latin1), "agent-\u{fffd}");
    }

    #[test]
    fn tags_skip_tid_dm_and_duplicates() {
        let mut s = fixture::minimal_span();
        s.tags = vec![
            ("_dd.p.a".into(), "1".into()),
            ("_dd.p.dm".into(), "-3".into()),
            ("_dd.p.tid".into(), "00000000000000ff".into()),
            ("_dd.p.a".into(), "2".into()),
            ("_dd.p.b".into(), "3".into()),
            ("env".into(), "not-a-propagated-tag".into()),
        ];
        let got: Vec<_> = propagated_tags(&s).collect();
        assert_eq!(got, vec![("_dd.p.a", "1"), ("_dd.p.b", "3")]);
        assert_eq!(
            decision_maker(&s),
            Some("-3"),
            "tag used when no explicit dm"
        );
        s.decision_maker = Some("-4".into());
        assert_eq!(decision_maker(&s), Some("-4"));
    }

    #[test]
    fn high_half_and_url() {
        assert_eq!(trace_id_high(5), None);
        assert_eq!(trace_id_high(1u128 << 64), Some(1));
        let s = fixture::full_span();
        assert_eq!(full_url(&s), "https://shop.example:8443/api/users");
        assert_eq!(full_url(&fixture::minimal_span()), "/");
    }
}
