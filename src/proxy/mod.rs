//! The Pingora glue: each hook is a few lines that gather inputs, call the pure modules
//! (`edge`, `cors`, `propagation`, `sampling`) through `request` and `respond`, and apply the
//! answer. Per-request state, with the request's runtime snapshot, lives in [`Ctx`].

pub mod accept;
pub mod ctx;
pub mod echo;
pub mod handshake;
mod inspect;
mod log;
mod request;
mod respond;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

pub use ctx::Ctx;
pub use respond::error_body;

use crate::config::ListenerBehaviour;
use crate::inspect::Inspector;
use crate::metrics::Metrics;
use crate::runtime::Live;

/// Distinct header names `stitch_cors_refused_header_total` keeps before folding into `other`.
const MAX_REFUSED_HEADER_LABELS: usize = 64;

/// The proxy application of one group of listeners that behave alike: the live runtime, what
/// outlives every runtime (shared by every group), and what these listeners do.
pub struct Stitch {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// The request inspector's ring buffer: outlives runtimes, so a reload keeps it.
    pub inspector: Arc<Inspector>,
    /// Requests in flight, for the graceful drain.
    pub inflight: Arc<AtomicUsize>,
    /// Set while the process hands over to a new one (upgrade): every response closes its
    /// connection, so keep-alive clients reconnect to the new process.
    pub draining: Arc<AtomicBool>,
    /// Header names already used as `stitch_cors_refused_header_total` labels. Clients choose
    /// these names, so the label set is capped; later names are counted as `other`.
    refused_labels: Arc<Mutex<HashSet<String>>>,
    /// The redirect to HTTPS (its port) of these listeners, if they redirect.
    redirect_to_https: Option<u16>,
    /// The `Strict-Transport-Security` value of these listeners.
    hsts: Option<HeaderValue>,
}

impl Stitch {
    pub fn new(live: Arc<Live>, metrics: Arc<Metrics>, inspector: Arc<Inspector>) -> Stitch {
        Stitch {
            live,
            metrics,
            inspector,
            inflight: Arc::new(AtomicUsize::new(0)),
            draining: Arc::new(AtomicBool::new(false)),
            refused_labels: Arc::new(Mutex::new(HashSet::new())),
            redirect_to_https: None,
            hsts: None,
        }
    }

    /// The application of listeners that behave as `serve` says, sharing this one's state.
    pub fn serving(&self, serve: &ListenerBehaviour) -> Stitch {
        Stitch {
            live: self.live.clone(),
            metrics: self.metrics.clone(),
            inspector: self.inspector.clone(),
            inflight: self.inflight.clone(),
            draining: self.draining.clone(),
            refused_labels: self.refused_labels.clone(),
            redirect_to_https: serve.redirect_to_https,
            hsts: serve
                .hsts
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok()),
        }
    }

    /// Count a header a preflight asked for and stitch left out, under a bounded label set.
    fn count_refused_header(&self, header: &str) {
        let known = match self.refused_labels.lock() {
            Ok(mut seen) => {
                seen.contains(header)
                    || (seen.len() < MAX_REFUSED_HEADER_LABELS && seen.insert(header.to_string()))
            }
            Err(_) => false,
        };
        let label = if known { header } else { "other" };
        self.metrics
            .cors_refused_header
            .with_label_values(&[label])
            .inc();
    }
}

/// What the connection front reports to: the live limits, the request counter and the access
/// log, so a request refused before Pingora parses it is counted and logged like any other.
pub struct FrontReport {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
}

impl crate::front::FrontHooks for FrontReport {
    fn limits(&self) -> crate::front::FrontLimits {
        let rt = self.live.snapshot();
        let s = &rt.config.server;
        crate::front::FrontLimits {
            max_connections: s.max_connections,
            header_timeout: s.header_timeout,
            max_header_bytes: s.limits.max_header_bytes,
            max_uri_bytes: s.limits.max_uri_bytes,
        }
    }

    fn refused(&self, why: crate::front::Early, elapsed: std::time::Duration) {
        self.metrics.observe_unrouted(why.status());
        let rt = self.live.snapshot();
        if rt.access_log.enabled {
            log::refused_line(&rt, why.status(), why.kind(), elapsed);
        }
    }
}

#[async_trait]
impl ProxyHttp for Stitch {
    type CTX = Ctx;

    /// Connection accepted, request not read yet: take the current runtime for this request.
    fn new_ctx(&self) -> Ctx {
        let mut ctx = Ctx::new(self.live.snapshot(), &self.inflight);
        ctx.hsts = self.hsts.clone();
        ctx.inspect.on = self.inspector.is_on();
        ctx
    }

    /// No downstream modules. Pingora's default adds its response-compression module (with
    /// compression off), which still costs a context allocation and a filter call on every
    /// request; stitch never compresses, so it is left out.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Request head read, before the modules: serve pipelined requests one after the other
    /// (RFC 9112 §9.3.2) rather than answering the first and dropping the rest, and bound the
    /// idle wait for this connection's next request.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let downstream = session.as_downstream_mut();
        downstream.set_pipelining_enabled(true);
        if downstream.get_keepalive().is_some() {
            downstream.set_keepalive(Some(ctx.rt.config.server.keepalive_timeout.as_secs()));
        }
        Ok(())
    }

    /// Request head read: the redirect to HTTPS, or route, CORS preflight, trace plan;
    /// stitch's own answers end here.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if self.draining.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        if let Some(port) = self.redirect_to_https {
            respond::redirect_to_https(session, ctx, port).await?;
            return Ok(true);
        }
        request::handle(self, session, ctx).await
    }

    /// A piece of the request body about to go upstream. An HTTP/2 client that learns the
    /// body's end only after its last data (curl -T -, streaming clients, HTTP/2 to origin)
    /// ends it with an empty DATA frame; Pingora 0.9 writes that empty piece to a chunked
    /// HTTP/1.1 upstream as a terminator and then writes the terminator again, which
    /// desynchronises the kept-alive connection (cloudflare/pingora#935). The empty last piece
    /// is dropped: the end of the body alone makes Pingora write the one terminator.
    /// The route's `max_body_bytes` is also counted here, as the body streams.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if end_of_stream && body.as_ref().is_some_and(|b| b.is_empty()) {
            *body = None;
        }
        request::count_body(body.as_ref(), ctx)
    }

    /// Before connecting: the next healthy server of the route's pool.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        request::upstream_peer(ctx)
    }

    /// Request head about to go upstream: trace headers rewritten, forwarding headers and the
    /// request id written.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        request::upstream_request(ctx, upstream_request);
        request::origin_form(upstream_request);
        Ok(())
    }

    /// Upstream response head about to go to the client: CORS headers and the request id added.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.note_grpc_status(&resp.headers);
        respond::decorate(resp, ctx)
    }

    /// Upstream trailers about to go to the client: a gRPC status noted for the span.
    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<Option<bytes::Bytes>> {
        ctx.note_grpc_status(trailers);
        Ok(None)
    }

    /// Proxying failed: stitch answers with the status and a JSON body saying why.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let code = respond::failure(self, session, e, ctx).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Request done: metrics, the inspector's record, the edge span and the access log line.
    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.answered);
        let elapsed = ctx.start.elapsed();
        match ctx.route() {
            Some(route) => route.metrics.observe(status, elapsed.as_secs_f64()),
            None => self.metrics.observe_unrouted(status),
        }
        if ctx.inspect.on {
            inspect::record(&self.inspector, session, ctx, status, elapsed);
        }
        log::finish(session, ctx, status, elapsed);
    }
}
