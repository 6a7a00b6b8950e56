//! Per-request state carried across the Pingora hooks, with the runtime snapshot the request
//! took when it started.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderValue;

use super::inspect::Capture;
use crate::edge::TracePlan;
use crate::forwarded::Client;
use crate::runtime::{RouteRuntime, Runtime};

/// Counts a request as in flight for as long as it lives (graceful shutdown waits on it).
pub struct InflightGuard(Arc<AtomicUsize>);

impl InflightGuard {
    pub fn new(counter: &Arc<AtomicUsize>) -> InflightGuard {
        counter.fetch_add(1, Ordering::Relaxed);
        InflightGuard(counter.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one request has gathered so far.
pub struct Ctx {
    /// The runtime this request uses from start to end, whatever reloads happen meanwhile.
    pub rt: Arc<Runtime>,
    /// Index of the matched route in `rt.routes`.
    pub route: Option<usize>,
    pub start: Instant,
    pub start_wall: SystemTime,
    /// The upstream server chosen for the request (`ip:port`).
    pub upstream: Option<Arc<str>>,
    /// Why the request failed, as a short label (metrics, span error type).
    pub error_kind: Option<&'static str>,
    /// Human-readable error for the span and the log.
    pub error_message: Option<String>,
    /// The status stitch answered itself (echo, 404, preflight, errors); 0 if none.
    pub answered: u16,
    /// The request's `Origin`, when the route's CORS policy allows it.
    pub allowed_origin: Option<HeaderValue>,
    /// A preflight forwarded upstream (`preflight = "augment"`).
    pub augment_preflight: bool,
    /// A preflight stitch answered itself.
    pub preflight_answered: bool,
    /// The trace plan (absent on pass-through routes).
    pub trace: Option<TracePlan>,
    /// What the request inspector records, gathered only while it is on.
    pub inspect: Capture,
    /// The listener's `Strict-Transport-Security` value, sent on every response.
    pub hsts: Option<HeaderValue>,
    /// A gRPC response's `grpc-status` and `grpc-message` (from its trailers, or its headers
    /// for a trailers-only answer).
    pub grpc_status: Option<(u32, String)>,
    /// The client, found through the trusted proxies (absent when the peer is unknown).
    pub client: Option<Client>,
    /// `"https"` on a TLS listener, else `"http"`.
    pub scheme: &'static str,
    /// The request's `X-Request-Id` (absent on routes with `request_id = false`).
    pub request_id: Option<HeaderValue>,
    /// Request body bytes sent upstream so far (for `max_body_bytes`).
    pub body_bytes: u64,
    _inflight: InflightGuard,
}

impl Ctx {
    pub fn new(rt: Arc<Runtime>, inflight: &Arc<AtomicUsize>) -> Ctx {
        Ctx {
            _inflight: InflightGuard::new(inflight),
            rt,
            route: None,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            upstream: None,
            error_kind: None,
            error_message: None,
            answered: 0,
            allowed_origin: None,
            augment_preflight: false,
            preflight_answered: false,
            trace: None,
            inspect: Capture::default(),
            hsts: None,
            grpc_status: None,
            client: None,
            scheme: "http",
            request_id: None,
            body_bytes: 0,
        }
    }

    /// Note a gRPC status carried by response headers or trailers.
    pub fn note_grpc_status(&mut self, headers: &http::HeaderMap) {
        let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
        else {
            return;
        };
        let message = headers
            .get("grpc-message")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        self.grpc_status = Some((code, message));
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&RouteRuntime> {
        self.route.and_then(|i| self.rt.routes.get(i))
    }
}
