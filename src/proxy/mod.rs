//! The Pingora glue: each hook gathers inputs, calls the pure modules (`edge`, `cors`,
//! `propagation`, `sampling`) and applies the answer. Per-request state lives in [`Ctx`].

pub mod ctx;
pub mod echo;
mod log;

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};
use prometheus::IntCounter;

pub use ctx::Ctx;

use crate::config::{Config, Profile, ServiceSettings, Target, Upstream};
use crate::cors::{self, CorsPolicy, PreflightDecision, PreflightMode};
use crate::edge::{self, TracePlan};
use crate::metrics::{Metrics, RouteMetrics};
use crate::propagation::{self, Format, Outcome};
use crate::routing::{host_part, Router};
use crate::sampling::Source;
use crate::span::SpanSink;

/// A pool of upstream servers and how to reach them.
pub struct Pool {
    pub cfg: Upstream,
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    /// Each server's address as text, for spans and logs, made once rather than per request.
    labels: Vec<(pingora::protocols::l4::socket::SocketAddr, Arc<str>)>,
}

impl Pool {
    pub fn new(cfg: Upstream, lb: Arc<LoadBalancer<RoundRobin>>) -> Pool {
        let labels = lb
            .backends()
            .get_backend()
            .iter()
            .map(|b| (b.addr.clone(), Arc::from(b.addr.to_string())))
            .collect();
        Pool { cfg, lb, labels }
    }

    /// The text of a server's address.
    fn label(&self, addr: &pingora::protocols::l4::socket::SocketAddr) -> Arc<str> {
        match self.labels.iter().find(|(a, _)| a == addr) {
            Some((_, label)) => label.clone(),
            None => Arc::from(addr.to_string()),
        }
    }
}

/// Everything a route needs at request time, resolved at start-up.
pub struct RouteRuntime {
    /// The route's name, shared with every edge span of the route.
    pub name: Arc<str>,
    /// The span resource (`"METHOD route"`) for the common methods, made once.
    resources: Vec<(http::Method, Arc<str>)>,
    pub target: Target,
    pub metrics: RouteMetrics,
    pub profile: Profile,
    /// The route's CORS policy with the profile's tracing headers baked in.
    pub cors: Option<CorsPolicy>,
    /// `stitch_sampling_decisions_total` handles: `[source][keep, drop]`.
    decisions: [[IntCounter; 2]; 3],
    /// `stitch_cors_preflight_total` handles, in `PreflightDecision::RESULT_LABELS` order.
    preflights: [IntCounter; 4],
}

impl RouteRuntime {
    /// The edge span's resource for a request with `method`.
    pub fn resource(&self, method: &http::Method) -> Arc<str> {
        match self.resources.iter().find(|(m, _)| m == method) {
            Some((_, r)) => r.clone(),
            None => Arc::from(format!("{method} {}", self.name)),
        }
    }
}

/// `stitch_propagation_{extracted,injected}_total` handles by format.
struct FormatCounters {
    extracted: [IntCounter; 5],
    injected: [IntCounter; 5],
}

fn format_index(f: Format) -> usize {
    Format::ALL.iter().position(|x| *x == f).unwrap_or(0)
}

/// The lowercase tracing header names a route's browsers may send: those of the formats the
/// profile extracts (every known format on a pass-through route).
pub fn tracing_headers(profile: &Profile) -> Vec<&'static str> {
    let formats: &[Format] = if profile.extract.is_empty() {
        &Format::ALL
    } else {
        &profile.extract
    };
    let mut out: Vec<&'static str> = Vec::new();
    for f in formats {
        for h in f.request_headers() {
            if !out.contains(h) {
                out.push(h);
            }
        }
    }
    out
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
    pub spans: SpanSink,
    /// service/env/version after `DD_*` overrides, for logs.
    pub service: ServiceSettings,
    formats: FormatCounters,
    /// Header names already used as `stitch_cors_refused_header_total` labels. Clients choose
    /// these names, so the label set is capped; later names are counted as `other`.
    refused_labels: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Distinct header names `stitch_cors_refused_header_total` keeps before folding into `other`.
const MAX_REFUSED_HEADER_LABELS: usize = 64;

impl Stitch {
    pub fn new(
        config: Arc<Config>,
        pools: Vec<Pool>,
        metrics: Arc<Metrics>,
        spans: SpanSink,
        service: ServiceSettings,
    ) -> Stitch {
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let profile = config.profiles[r.propagation].clone();
                let headers = tracing_headers(&profile);
                let cors = r
                    .cors
                    .map(|i| config.cors[i].policy.with_tracing_headers(&headers));
                let decisions = [Source::Incoming, Source::Edge, Source::Missing].map(|s| {
                    ["keep", "drop"].map(|d| {
                        metrics.sampling_decisions.with_label_values(&[
                            r.name.as_str(),
                            s.label(),
                            d,
                        ])
                    })
                });
                let preflights = PreflightDecision::RESULT_LABELS.map(|result| {
                    metrics
                        .cors_preflight
                        .with_label_values(&[r.name.as_str(), result])
                });
                let resources = [
                    http::Method::GET,
                    http::Method::POST,
                    http::Method::PUT,
                    http::Method::PATCH,
                    http::Method::DELETE,
                    http::Method::HEAD,
                    http::Method::OPTIONS,
                ]
                .into_iter()
                .map(|m| {
                    let resource = Arc::from(format!("{m} {}", r.name));
                    (m, resource)
                })
                .collect();
                RouteRuntime {
                    preflights,
                    resources,
                    name: Arc::from(r.name.as_str()),
                    target: r.target,
                    metrics: metrics.route(&r.name),
                    profile,
                    cors,
                    decisions,
                }
            })
            .collect();
        let formats = FormatCounters {
            extracted: Format::ALL
                .map(|f| metrics.propagation_extracted.with_label_values(&[f.name()])),
            injected: Format::ALL
                .map(|f| metrics.propagation_injected.with_label_values(&[f.name()])),
        };
        Stitch {
            router: Router::new(&config.routes),
            routes,
            pools,
            metrics,
            config,
            inflight: Arc::new(AtomicUsize::new(0)),
            spans,
            service,
            formats,
            refused_labels: std::sync::Mutex::new(std::collections::HashSet::new()),
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

    /// Extract, decide and count: the trace plan for a request on `route`.
    fn plan(
        &self,
        route: &RouteRuntime,
        req: &RequestHeader,
        client: Option<IpAddr>,
        ctx: &Ctx,
        count_sampling: bool,
    ) -> TracePlan {
        let plan = edge::plan(
            &route.profile,
            &req.headers,
            client,
            ctx.allowed_origin.is_some(),
        );
        for (f, outcome) in &plan.extraction.outcomes {
            match outcome {
                Outcome::Absent => {}
                Outcome::Valid { .. } => self.formats.extracted[format_index(*f)].inc(),
                Outcome::Invalid(reason) => self
                    .metrics
                    .propagation_invalid
                    .with_label_values(&[f.name(), reason])
                    .inc(),
            }
        }
        for kind in &plan.extraction.conflicts {
            self.metrics
                .propagation_conflicts
                .with_label_values(&[kind])
                .inc();
        }
        if count_sampling {
            let d = &plan.decision;
            let s = match d.source {
                Source::Incoming => 0,
                Source::Edge => 1,
                Source::Missing => 2,
            };
            route.decisions[s][usize::from(!d.keep())].inc();
            if let Some(reason) = d.overridden {
                self.metrics
                    .sampling_overridden
                    .with_label_values(&[&route.name, reason])
                    .inc();
            }
        }
        plan
    }

    /// Rewrite the trace headers of a request as it goes upstream (also what the echo shows):
    /// write the profile's inject formats and remove every other propagation header stitch
    /// knows.
    fn rewrite_request(&self, route: &RouteRuntime, req: &mut RequestHeader, plan: &TracePlan) {
        // Pingora keeps a case map beside its HeaderMap, so `propagation::strip` cannot edit
        // it; the edit goes through Pingora's API. A header stitch writes replaces the incoming
        // one in place (one insert rather than a remove and an append, and the maps do not
        // grow); the others present are removed first. The names are `'static` so Pingora does
        // not copy them into its case map. (Inserting while the injector hands the values over,
        // then removing, measured 1.7% more instructions per full-route request.)
        let mut written: [Option<(&'static str, HeaderValue)>; 16] = Default::default();
        let mut overflow: Vec<(&'static str, HeaderValue)> = Vec::new();
        let mut n = 0;
        propagation::inject_each(
            &plan.context,
            plan.span_id,
            &route.profile.inject,
            |name, value| {
                let name: &'static str = name.as_str();
                match written.get_mut(n) {
                    Some(slot) => *slot = Some((name, value)),
                    None => overflow.push((name, value)),
                }
                n += 1;
            },
        );
        let writes = || written.iter().flatten().chain(overflow.iter());
        let mut stale: [Option<HeaderName>; 16] = Default::default();
        let mut stale_overflow = Vec::new();
        let mut m = 0;
        for k in req.headers.keys() {
            let k_str = k.as_str();
            if propagation::is_propagation_name(k_str) && !writes().any(|(w, _)| *w == k_str) {
                match stale.get_mut(m) {
                    Some(slot) => *slot = Some(k.clone()),
                    None => stale_overflow.push(k.clone()),
                }
                m += 1;
            }
        }
        for name in stale.into_iter().flatten().chain(stale_overflow) {
            req.remove_header(&name);
        }
        for (name, value) in written.into_iter().flatten().chain(overflow) {
            let _ = req.insert_header(name, value);
        }
        for f in &route.profile.inject {
            if *f != Format::Baggage || plan.context.baggage.is_some() {
                self.formats.injected[format_index(*f)].inc();
            }
        }
    }
}

/// The host a request is for: the `Host` header, or the URI authority (HTTP/2).
fn request_host(req: &RequestHeader) -> &str {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    host_part(raw)
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Write a response stitch produces itself and mark it answered.
pub async fn respond(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: Option<&str>,
    body: Vec<u8>,
    extra: Vec<(&'static str, HeaderValue)>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3 + extra.len()))?;
    if let Some(ct) = content_type {
        resp.insert_header(http::header::CONTENT_TYPE, ct)?;
    }
    let length = match body.len() {
        0 => HeaderValue::from_static("0"),
        n => HeaderValue::from(n),
    };
    resp.insert_header(http::header::CONTENT_LENGTH, length)?;
    for (k, v) in extra {
        // A `'static` name spares Pingora a copy of it in its case map.
        resp.append_header(k, v)?;
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

/// A JSON error body: `{"error": kind, "message": text, "route": ...}`.
pub fn error_body(kind: &str, message: &str, route: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({ "error": kind, "message": message });
    if let Some(r) = route {
        v["route"] = serde_json::Value::String(r.to_string());
    }
    let mut out = serde_json::to_vec(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The CORS headers of an actual response to an allowed origin, for responses stitch writes
/// (which carry no CORS header of their own).
fn cors_headers(
    policy: Option<&CorsPolicy>,
    origin: Option<&HeaderValue>,
) -> Vec<(&'static str, HeaderValue)> {
    match (policy, origin) {
        (Some(p), Some(o)) => cors::clean_response_headers(p, o)
            .into_iter()
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

/// Headers a CORS decoration may touch; only these are synchronised back.
const CORS_RESPONSE_HEADERS: [HeaderName; 7] = [
    http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
    http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
    http::header::ACCESS_CONTROL_ALLOW_HEADERS,
    http::header::ACCESS_CONTROL_ALLOW_METHODS,
    http::header::ACCESS_CONTROL_MAX_AGE,
    http::header::VARY,
];

/// Apply a header-map edit to a Pingora response (whose map is not directly mutable), syncing
/// back the CORS headers the edit may have changed.
fn edit_cors_headers(resp: &mut ResponseHeader, edit: impl FnOnce(&mut HeaderMap)) {
    let mut map = HeaderMap::with_capacity(8);
    for name in &CORS_RESPONSE_HEADERS {
        for v in resp.headers.get_all(name) {
            map.append(name.clone(), v.clone());
        }
    }
    let before = map.clone();
    edit(&mut map);
    for name in &CORS_RESPONSE_HEADERS {
        let changed = !before.get_all(name).iter().eq(map.get_all(name).iter());
        if changed {
            resp.remove_header(name);
            for v in map.get_all(name) {
                let _ = resp.append_header(name.clone(), v.clone());
            }
        }
    }
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

    /// No downstream modules. Pingora's default adds its response-compression module (with
    /// compression off), which still costs a context allocation and a filter call on every
    /// request; stitch never compresses, so it is left out.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let found = {
            let req = session.req_header();
            self.router.find(request_host(req), req.uri.path())
        };
        let Some(idx) = found else {
            let req = session.req_header();
            let (host, path) = (request_host(req).to_string(), req.uri.path().to_string());
            let body = error_body(
                "no_route",
                &format!("no route matches host \"{host}\" and path \"{path}\""),
                None,
            );
            respond(
                session,
                ctx,
                404,
                Some("application/json"),
                body,
                Vec::new(),
            )
            .await?;
            return Ok(true);
        };
        ctx.route = Some(idx);
        let route = &self.routes[idx];
        let client = client_ip(session);

        if let Some(policy) = &route.cors {
            let req = session.req_header();
            if let Some(o) = req.headers.get(http::header::ORIGIN) {
                if policy.allows_origin(o.as_bytes()) {
                    ctx.allowed_origin = Some(o.clone());
                }
            }
            if cors::is_preflight(&req.method, &req.headers) {
                let decision = cors::answer_preflight(policy, &req.headers, &[]);
                let label = decision.result_label();
                if let Some(i) = PreflightDecision::RESULT_LABELS
                    .iter()
                    .position(|l| *l == label)
                {
                    route.preflights[i].inc();
                }
                match decision {
                    PreflightDecision::Allow {
                        headers,
                        refused_headers,
                    } => {
                        for h in &refused_headers {
                            self.count_refused_header(h);
                        }
                        if !route.profile.is_passthrough() {
                            ctx.trace =
                                Some(self.plan(route, session.req_header(), client, ctx, false));
                        }
                        ctx.preflight_answered = true;
                        respond(session, ctx, 204, None, Vec::new(), headers).await?;
                        return Ok(true);
                    }
                    PreflightDecision::RefuseOrigin => {
                        let body = error_body(
                            "cors_origin_refused",
                            "this origin is not allowed by the route's CORS policy",
                            Some(&route.name),
                        );
                        respond(
                            session,
                            ctx,
                            403,
                            Some("application/json"),
                            body,
                            Vec::new(),
                        )
                        .await?;
                        return Ok(true);
                    }
                    PreflightDecision::Forward => {
                        ctx.augment_preflight = policy.mode() == PreflightMode::Augment;
                    }
                }
            }
        }

        if !route.profile.is_passthrough() {
            ctx.trace = Some(self.plan(
                route,
                session.req_header(),
                client,
                ctx,
                !ctx.augment_preflight,
            ));
        }

        if route.target == Target::Echo {
            let mut req = session.req_header().clone();
            if let Some(plan) = &ctx.trace {
                self.rewrite_request(route, &mut req, plan);
            }
            let body = echo::body(&req);
            let extra = cors_headers(route.cors.as_ref(), ctx.allowed_origin.as_ref());
            respond(session, ctx, 200, Some("application/json"), body, extra).await?;
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
        ctx.upstream = Some(pool.label(&backend.addr));
        let mut peer = HttpPeer::new(backend, pool.cfg.tls, pool.cfg.sni.clone());
        peer.options.connection_timeout = Some(pool.cfg.connect_timeout);
        peer.options.read_timeout = Some(pool.cfg.read_timeout);
        peer.options.write_timeout = Some(pool.cfg.write_timeout);
        peer.options.verify_cert = pool.cfg.verify_cert;
        peer.options.verify_hostname = pool.cfg.verify_cert;
        peer.options.ca = pool.cfg.ca.clone();
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(idx), Some(plan)) = (ctx.route, &ctx.trace) {
            self.rewrite_request(&self.routes[idx], upstream_request, plan);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(idx) = ctx.route else { return Ok(()) };
        let (Some(policy), Some(origin)) = (&self.routes[idx].cors, &ctx.allowed_origin) else {
            return Ok(());
        };
        if !ctx.augment_preflight
            && !CORS_RESPONSE_HEADERS
                .iter()
                .any(|n| resp.headers.contains_key(n))
        {
            // The usual case: the upstream set no CORS header and no Vary, so the decoration
            // is a few ready-made values written straight in.
            for (name, value) in cors::clean_response_headers(policy, origin)
                .into_iter()
                .flatten()
            {
                resp.insert_header(name, value)?;
            }
            return Ok(());
        }
        if ctx.augment_preflight {
            edit_cors_headers(resp, |m| {
                cors::augment_preflight_response(policy, origin.as_bytes(), &[], m)
            });
        } else {
            edit_cors_headers(resp, |m| {
                cors::decorate_response(policy, origin.as_bytes(), m)
            });
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let route = ctx.route.map(|i| &self.routes[i]);
        let route_name = route.map(|r| &*r.name);
        let cors_extra = cors_headers(
            route.and_then(|r| r.cors.as_ref()),
            ctx.allowed_origin.as_ref(),
        );
        let code = match e.esource() {
            ErrorSource::Upstream => {
                let (kind, code) = classify(e);
                ctx.error_kind = Some(kind);
                let upstream = ctx.upstream.as_deref().unwrap_or_default();
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
                if let Err(err) = respond(
                    session,
                    ctx,
                    code,
                    Some("application/json"),
                    body,
                    cors_extra,
                )
                .await
                {
                    ::log::debug!("could not write the error response: {err}");
                }
                code
            }
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => {
                    let body =
                        error_body("bad_request", "the request could not be read", route_name);
                    let _ = respond(
                        session,
                        ctx,
                        400,
                        Some("application/json"),
                        body,
                        cors_extra,
                    )
                    .await;
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
                let _ = respond(
                    session,
                    ctx,
                    500,
                    Some("application/json"),
                    body,
                    cors_extra,
                )
                .await;
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
        let elapsed = ctx.start.elapsed();
        match ctx.route {
            Some(idx) => self.routes[idx]
                .metrics
                .observe(status, elapsed.as_secs_f64()),
            None => self
                .metrics
                .requests
                .with_label_values(&["(none)", if status == 404 { "4xx" } else { "other" }])
                .inc(),
        }
        log::finish(self, session, ctx, status, elapsed);
    }
}
