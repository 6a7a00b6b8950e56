//! The Pingora glue: each hook gathers inputs, calls the pure modules and applies the answer.

pub mod ctx;
pub mod echo;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

pub use ctx::Ctx;

use crate::config::{Config, Target, Upstream};
use crate::metrics::{Metrics, RouteMetrics};
use crate::routing::{normalize_host, Router};

/// A pool of upstream servers and how to reach them.
pub struct Pool {
    pub cfg: Upstream,
    pub lb: Arc<LoadBalancer<RoundRobin>>,
}

/// Everything a route needs at request time, resolved at start-up.
pub struct RouteRuntime {
    pub name: String,
    pub target: Target,
    pub metrics: RouteMetrics,
}

/// The proxy application.
pub struct Stitch {
    pub router: Router,
    pub routes: Vec<RouteRuntime>,
    pub pools: Vec<Pool>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// Requests in flight, for the graceful drain.
    pub inflight: Arc<AtomicUsize>,
}

impl Stitch {
    pub fn new(config: Arc<Config>, pools: Vec<Pool>, metrics: Arc<Metrics>) -> Stitch {
        let routes = config
            .routes
            .iter()
            .map(|r| RouteRuntime {
                name: r.name.clone(),
                target: r.target,
                metrics: metrics.route(&r.name),
            })
            .collect();
        Stitch {
            router: Router::new(&config.routes),
            routes,
            pools,
            metrics,
            config,
            inflight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Rewrite the headers of a request as they go upstream (also what the echo shows).
    fn rewrite_request(&self, _route: usize, _req: &mut RequestHeader, _ctx: &mut Ctx) {}
}

/// The host a request is for: the `Host` header, or the URI authority (HTTP/2).
fn request_host(req: &RequestHeader) -> String {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    normalize_host(raw)
}

/// Write a small JSON (or other) response and mark it answered.
pub async fn respond(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    for (k, v) in extra {
        resp.insert_header(k.to_string(), *v)?;
    }
    ctx.answered = status;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only || body.is_empty())
        .await?;
    if !head_only && !body.is_empty() {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// A JSON error body: `{"error": kind, "message": text, ...}`.
pub fn error_body(kind: &str, message: &str, route: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({ "error": kind, "message": message });
    if let Some(r) = route {
        v["route"] = serde_json::Value::String(r.to_string());
    }
    let mut out = serde_json::to_vec(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The metric label and status for an upstream failure.
fn classify(e: &pingora::Error) -> (&'static str, u16) {
    match e.etype() {
        ErrorType::ConnectTimedout => ("connect_timeout", 504),
        ErrorType::ReadTimedout => ("read_timeout", 504),
        ErrorType::WriteTimedout => ("write_timeout", 504),
        ErrorType::TLSHandshakeTimedout => ("tls_timeout", 504),
        ErrorType::ConnectRefused => ("connect_refused", 502),
        ErrorType::ConnectNoRoute => ("no_route_to_host", 502),
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError => {
            ("tls", 502)
        }
        ErrorType::ConnectError | ErrorType::SocketError | ErrorType::BindError => {
            ("connect_error", 502)
        }
        ErrorType::ConnectionClosed => ("connection_closed", 502),
        ErrorType::ReadError | ErrorType::WriteError => ("io_error", 502),
        ErrorType::InvalidHTTPHeader
        | ErrorType::H1Error
        | ErrorType::H2Error
        | ErrorType::InvalidH2 => ("bad_response", 502),
        ErrorType::Custom("no_healthy_upstream") => ("no_healthy_upstream", 502),
        _ => ("other", 502),
    }
}

#[async_trait]
impl ProxyHttp for Stitch {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(&self.inflight)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let (host, path) = {
            let req = session.req_header();
            (request_host(req), req.uri.path().to_string())
        };
        let Some(idx) = self.router.find(&host, &path) else {
            let body = error_body(
                "no_route",
                &format!("no route matches host \"{host}\" and path \"{path}\""),
                None,
            );
            respond(session, ctx, 404, "application/json", body, &[]).await?;
            return Ok(true);
        };
        ctx.route = Some(idx);
        if self.routes[idx].target == Target::Echo {
            let mut req = session.req_header().clone();
            self.rewrite_request(idx, &mut req, ctx);
            let body = echo::body(&req);
            respond(session, ctx, 200, "application/json", body, &[]).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .ok_or_else(|| pingora::Error::explain(ErrorType::InternalError, "no route"))?;
        let Target::Pool(p) = self.routes[route].target else {
            return Err(pingora::Error::explain(
                ErrorType::InternalError,
                "route has no upstream pool",
            ));
        };
        let pool = &self.pools[p];
        let backend = pool.lb.select(b"", 256).ok_or_else(|| {
            let mut e = pingora::Error::explain(
                ErrorType::Custom("no_healthy_upstream"),
                format!("no healthy server in upstream \"{}\"", pool.cfg.name),
            );
            e.esource = ErrorSource::Upstream;
            e
        })?;
        ctx.upstream = Some(backend.addr.to_string());
        let mut peer = HttpPeer::new(backend, pool.cfg.tls, pool.cfg.sni.clone());
        peer.options.connection_timeout = Some(pool.cfg.connect_timeout);
        peer.options.read_timeout = Some(pool.cfg.read_timeout);
        peer.options.write_timeout = Some(pool.cfg.write_timeout);
        peer.options.verify_cert = pool.cfg.verify_cert;
        peer.options.verify_hostname = pool.cfg.verify_cert;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(idx) = ctx.route {
            self.rewrite_request(idx, upstream_request, ctx);
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let route_name = ctx.route.map(|i| self.routes[i].name.as_str());
        let code = match e.esource() {
            ErrorSource::Upstream => {
                let (kind, code) = classify(e);
                ctx.error_kind = Some(kind);
                let upstream = ctx.upstream.clone().unwrap_or_default();
                let message = match kind {
                    "no_healthy_upstream" => e
                        .context
                        .as_ref()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default(),
                    _ if upstream.is_empty() => format!("upstream failed: {kind}"),
                    _ => format!("upstream {upstream} failed: {kind}"),
                };
                ctx.error_message = Some(message.clone());
                if let Some(r) = route_name {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[r, kind])
                        .inc();
                }
                let error = if code == 504 {
                    "upstream_timeout"
                } else {
                    "upstream_unavailable"
                };
                let body = error_body(error, &message, route_name);
                if let Err(err) = respond(session, ctx, code, "application/json", body, &[]).await {
                    log::debug!("could not write the error response: {err}");
                }
                code
            }
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => {
                    let body =
                        error_body("bad_request", "the request could not be read", route_name);
                    let _ = respond(session, ctx, 400, "application/json", body, &[]).await;
                    400
                }
            },
            ErrorSource::Internal | ErrorSource::Unset => {
                ctx.error_kind = Some("internal");
                ctx.error_message = Some(e.to_string());
                let body = error_body(
                    "internal",
                    "stitch failed to handle the request",
                    route_name,
                );
                let _ = respond(session, ctx, 500, "application/json", body, &[]).await;
                500
            }
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.answered);
        if let Some(idx) = ctx.route {
            self.routes[idx]
                .metrics
                .observe(status, ctx.start.elapsed().as_secs_f64());
        } else {
            self.metrics
                .requests
                .with_label_values(&["(none)", if status == 404 { "4xx" } else { "other" }])
                .inc();
        }
    }
}
