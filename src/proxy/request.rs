//! The request phase: find the route, answer or forward a preflight, plan the trace context,
//! rewrite the trace headers, and pick the upstream server.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use super::inspect::{Capture, Recording};
use super::respond::{cors_headers, error_body, respond, respond_error};
use super::{echo, Ctx, Stitch};
use crate::config::Target;
use crate::cors::{self, PreflightDecision, PreflightMode};
use crate::edge::{self, HeaderEdit, TracePlan};
use crate::forwarded::{self, Hop};
use crate::http1;
use crate::inspect;
use crate::propagation::{Format, Outcome};
use crate::request_id;
use crate::routing::host_part;
use crate::runtime::{FormatCounters, RouteRuntime, Runtime};
use crate::sampling::Source;

/// Pingora's request header through [`HeaderEdit`]: its API keeps the case map in step.
impl HeaderEdit for RequestHeader {
    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.keys()
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
    fn insert(&mut self, name: &'static HeaderName, value: HeaderValue) {
        // The patched insert (vendor/PATCHES.md): a static name is neither parsed nor copied.
        self.insert_header_static(name, value);
    }
}

/// The whole request phase. `Ok(true)`: stitch answered the request itself.
pub(super) async fn handle(app: &Stitch, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let rt = ctx.rt.clone();
    ctx.scheme = scheme(session);
    ctx.client = peer_ip(session)
        .map(|peer| forwarded::resolve(peer, &session.req_header().headers, &rt.trusted_proxies));
    if let Some(refusal) = head_refusal(session, &rt) {
        let body = error_body(refusal.kind(), refusal.message(), None);
        refuse(session, ctx, refusal.status(), body).await?;
        return Ok(true);
    }
    let found = {
        let req = session.req_header();
        rt.router.find(request_host(req), req.uri.path())
    };
    let Some(idx) = found else {
        let req = session.req_header();
        let body = error_body(
            "no_route",
            &format!(
                "no route matches host \"{}\" and path \"{}\"",
                request_host(req),
                req.uri.path()
            ),
            None,
        );
        respond_error(session, ctx, 404, body).await?;
        return Ok(true);
    };
    ctx.route = Some(idx);
    let route = &rt.routes[idx];
    let client = ctx.client.map(|c| c.ip);
    if route.request_id {
        let (id, outcome) = request_id::decide(&session.req_header().headers);
        rt.request_ids[outcome.index()].inc();
        ctx.request_id = Some(id);
    }
    if let Some(max) = route.max_body_bytes {
        if http1::declared_body_exceeds(&session.req_header().headers, max) {
            let body = error_body("body_too_large", &body_message(max), Some(&route.name));
            refuse(session, ctx, 413, body).await?;
            return Ok(true);
        }
    }

    if let Some(policy) = &route.cors {
        let req = session.req_header();
        if let Some(o) = req.headers.get(http::header::ORIGIN) {
            if policy.allows_origin(o.as_bytes()) {
                ctx.allowed_origin = Some(o.clone());
            }
        }
        if cors::is_preflight(&req.method, &req.headers) {
            let decision = cors::answer_preflight(policy, &req.headers);
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
                        app.count_refused_header(h);
                    }
                    if ctx.inspect.on {
                        ctx.inspect.refused_headers = refused_headers;
                    }
                    if !route.profile.is_passthrough() {
                        ctx.trace = Some(plan(
                            app,
                            &rt,
                            route,
                            session.req_header(),
                            client,
                            ctx,
                            false,
                        ));
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
                    respond_error(session, ctx, 403, body).await?;
                    return Ok(true);
                }
                PreflightDecision::Forward => {
                    ctx.augment_preflight = policy.mode() == PreflightMode::Augment;
                }
            }
        }
    }

    if !route.profile.is_passthrough() {
        let count_sampling = !ctx.augment_preflight;
        ctx.trace = Some(plan(
            app,
            &rt,
            route,
            session.req_header(),
            client,
            ctx,
            count_sampling,
        ));
    }

    if route.target == Target::Echo {
        let mut req = session.req_header().clone();
        upstream_request(ctx, &mut req);
        let body = echo::body(&req, client);
        let extra = cors_headers(route.cors.as_ref(), ctx.allowed_origin.as_ref());
        respond(session, ctx, 200, Some("application/json"), body, extra).await?;
        return Ok(true);
    }
    Ok(false)
}

/// What [`http1::check`] refuses in an HTTP/1 request head: RFC 9112's framing and `Host`
/// rules that Pingora's parser leaves to the application, and the head size limits.
fn head_refusal(session: &Session, rt: &Runtime) -> Option<http1::Refusal> {
    let req = session.req_header();
    let head = session.as_downstream().as_http1()?.get_headers_raw_bytes();
    let limits = &rt.config.server.limits;
    http1::check(
        req.version,
        req.raw_path().len(),
        head.len(),
        &req.headers,
        limits,
    )
    .err()
}

fn body_message(max: u64) -> String {
    format!("the request body is larger than this route's max_body_bytes ({max})")
}

/// Answer a request stitch will not serve, and close the connection: its body, if any, is
/// left unread, so the connection cannot carry another request.
async fn refuse(session: &mut Session, ctx: &mut Ctx, status: u16, body: Vec<u8>) -> Result<()> {
    session.set_keepalive(None);
    respond_error(session, ctx, status, body).await
}

/// A chunk of the request body on its way upstream, counted against the route's
/// `max_body_bytes` (a chunked body declares no length up front): past it the request fails
/// with 413, or, when the upstream has already answered, the connection is cut.
pub(super) fn count_body(body: Option<&bytes::Bytes>, ctx: &mut Ctx) -> Result<()> {
    let Some(max) = ctx.route().and_then(|r| r.max_body_bytes) else {
        return Ok(());
    };
    ctx.body_bytes += body.map_or(0, |b| b.len() as u64);
    if ctx.body_bytes > max {
        return Err(pingora::Error::explain(
            ErrorType::HTTPStatus(413),
            body_message(max),
        ));
    }
    Ok(())
}

/// An absolute-form target (`GET http://host/path`) goes upstream in origin-form: RFC 9112
/// §3.2.1 has a client send only origin-form to an origin server, and legacy backends expect
/// it. Pingora keeps the target's bytes for the wire but its `uri` holds only the path (it has
/// already refused an authority that differs from `Host`); setting that `uri` drops the bytes.
pub(super) fn origin_form(req: &mut RequestHeader) {
    let absolute = !matches!(req.raw_path().first(), None | Some(b'/' | b'*' | b'?'));
    if absolute && req.method != http::Method::CONNECT {
        let path = req.uri.clone();
        req.set_uri(path);
    }
}

/// Extract, decide and count: the trace plan for a request on `route`.
fn plan(
    app: &Stitch,
    rt: &Runtime,
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
            Outcome::Valid { .. } => rt.formats.extracted[FormatCounters::index(*f)].inc(),
            Outcome::Invalid(reason) => app
                .metrics
                .propagation_invalid
                .with_label_values(&[f.name(), reason])
                .inc(),
        }
    }
    // tracestate_invalid = "discard_header": the header was malformed and treated as absent.
    if let Some(reason) = plan.extraction.tracestate_discarded {
        app.metrics
            .propagation_invalid
            .with_label_values(&[Format::TraceContext.name(), reason])
            .inc();
    }
    for kind in &plan.extraction.conflicts {
        app.metrics
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
            app.metrics
                .sampling_overridden
                .with_label_values(&[&route.name, reason])
                .inc();
        }
    }
    plan
}

/// The request head as it goes upstream (also what the echo shows): trace headers rewritten,
/// forwarding headers written, the request id set; the inspector, when on, keeps the trace
/// headers sent.
pub(super) fn upstream_request(ctx: &mut Ctx, req: &mut RequestHeader) {
    let scheme = ctx.scheme;
    // Field by field, so the inspector's capture can be written while the route is read.
    let Ctx {
        rt,
        route,
        trace,
        client,
        request_id,
        inspect,
        ..
    } = ctx;
    let Some(idx) = *route else {
        return;
    };
    if !rt.route_keeps_header_case(idx) {
        // Pingora writes the names it knows title-cased and the others lowercase.
        req.drop_header_case();
    }
    let Some(route) = rt.routes.get(idx) else {
        return;
    };
    if let Some(plan) = trace {
        rewrite(rt, route, req, plan, inspect);
    }
    if let (Some(client), false) = (&*client, route.forwarded_headers.is_empty()) {
        let host = match req.headers.get(http::header::HOST) {
            Some(h) => Some(h.clone()),
            None => req
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let hop = Hop {
            client,
            scheme,
            host,
        };
        let edits = forwarded::edits(&route.forwarded_headers, &hop, &req.headers);
        forwarded::apply(edits, req);
    }
    if let Some(id) = request_id {
        req.insert_header_static(&request_id::X_REQUEST_ID, id.clone());
    }
    // A pass-through route rewrites nothing: what it sends are the headers as they came.
    inspect.sent(req);
}

/// Rewrite the trace headers of a request going upstream and count the formats written; the
/// inspector, when on, keeps the headers written.
fn rewrite(
    rt: &Runtime,
    route: &RouteRuntime,
    req: &mut RequestHeader,
    plan: &TracePlan,
    capture: &mut Capture,
) {
    if capture.on {
        let mut rec = Recording {
            headers: req,
            written: inspect::HeaderText::with_room(),
        };
        edge::rewrite(plan, &route.profile.inject, &mut rec);
        capture.sent = Some(rec.written);
    } else {
        edge::rewrite(plan, &route.profile.inject, req);
    }
    for f in &route.profile.inject {
        if *f != Format::Baggage || plan.context.baggage.is_some() {
            rt.formats.injected[FormatCounters::index(*f)].inc();
        }
    }
}

/// The next healthy server of the route's pool, as a peer Pingora can connect to.
pub(super) fn upstream_peer(ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
    let (peer, label) = {
        let route = ctx
            .route()
            .ok_or_else(|| pingora::Error::explain(ErrorType::InternalError, "no route"))?;
        let pool = ctx.rt.pool(route).ok_or_else(|| {
            pingora::Error::explain(ErrorType::InternalError, "route has no upstream pool")
        })?;
        pool.select().ok_or_else(|| {
            let mut e = pingora::Error::explain(
                ErrorType::Custom("no_healthy_upstream"),
                format!("no healthy server in upstream \"{}\"", pool.cfg.name),
            );
            e.esource = ErrorSource::Upstream;
            e
        })?
    };
    ctx.upstream = Some(label);
    Ok(peer)
}

/// The host a request is for: the `Host` header, or the URI authority (HTTP/2).
pub(super) fn request_host(req: &RequestHeader) -> &str {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    host_part(raw)
}

/// The connection's peer: the socket's, or the one a PROXY protocol header gave.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// `"https"` when the client connection is TLS.
fn scheme(session: &Session) -> &'static str {
    match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        Some(_) => "https",
        None => "http",
    }
}
