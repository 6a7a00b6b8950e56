//! Answers stitch writes itself (404, preflights, echo, errors), the CORS headers of responses,
//! and how an upstream failure becomes a status and a JSON body.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use super::{Ctx, Stitch};
use crate::cors::{self, CorsPolicy};
use crate::request_id::X_REQUEST_ID;

// Names stitch writes into its answers, with `'static` addresses for the patched insert.
static HSTS: HeaderName = http::header::STRICT_TRANSPORT_SECURITY;
static CONTENT_TYPE: HeaderName = http::header::CONTENT_TYPE;
static CONTENT_LENGTH: HeaderName = http::header::CONTENT_LENGTH;

/// Write a response stitch produces itself and mark it answered.
pub async fn respond(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    extra: Vec<(&'static str, HeaderValue)>,
) -> Result<()> {
    // stitch's own names: no case map to keep.
    let mut resp = ResponseHeader::build_no_case(status, Some(4 + extra.len()))?;
    if let Some(hsts) = &ctx.hsts {
        resp.insert_header_static(&HSTS, hsts.clone());
    }
    if let Some(ct) = content_type {
        resp.insert_header_static(&CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let length = match body.len() {
        0 => HeaderValue::from_static("0"),
        n => HeaderValue::from(n),
    };
    resp.insert_header_static(&CONTENT_LENGTH, length);
    for (k, v) in extra {
        resp.append_header(k, v)?;
    }
    if let Some(id) = &ctx.request_id {
        resp.insert_header_static(&X_REQUEST_ID, id.clone());
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

/// A plain listener's answer to every request: 308 to the same host and target over HTTPS
/// on `port` (left out when 443). A request without a host gets a 400.
pub(super) async fn redirect_to_https(
    session: &mut Session,
    ctx: &mut Ctx,
    port: u16,
) -> Result<()> {
    let req = session.req_header();
    let host = match super::request::request_host(req) {
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    if host.is_empty() {
        let body = error_body("bad_request", "no Host to redirect to", None);
        return respond_error(session, ctx, 400, body).await;
    }
    let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = match port {
        443 => format!("https://{host}{target}"),
        _ => format!("https://{host}:{port}{target}"),
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        let body = error_body("bad_request", "the Host cannot be redirected", None);
        return respond_error(session, ctx, 400, body).await;
    };
    let extra = vec![("location", location)];
    respond(session, ctx, 308, None, Vec::new(), extra).await
}

/// Answer with a JSON error body (see [`error_body`]) and no other header.
pub async fn respond_error(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    body: Vec<u8>,
) -> Result<()> {
    respond(
        session,
        ctx,
        status,
        Some("application/json"),
        body,
        Vec::new(),
    )
    .await
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
pub(super) fn cors_headers(
    policy: Option<&CorsPolicy>,
    origin: Option<&HeaderValue>,
) -> Vec<(&'static str, HeaderValue)> {
    match (policy, origin) {
        (Some(p), Some(o)) => cors::clean_response_headers(p, o)
            .into_iter()
            .flatten()
            .map(|(name, value)| (name.as_str(), value))
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
pub(super) fn edit_cors_headers(resp: &mut ResponseHeader, edit: impl FnOnce(&mut HeaderMap)) {
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
pub(super) fn classify(e: &pingora::Error) -> (&'static str, u16) {
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

/// Add the request id and the CORS headers of an allowed origin to an upstream's response,
/// without duplicating any the upstream already sent.
pub(super) fn decorate(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    if !ctx.route.is_some_and(|i| ctx.rt.route_keeps_header_case(i)) {
        resp.drop_header_case();
    }
    if let Some(hsts) = &ctx.hsts {
        resp.insert_header_static(&HSTS, hsts.clone());
    }
    if let Some(id) = &ctx.request_id {
        // The id stitch sent upstream and logged, even if the upstream answered with another.
        resp.insert_header_static(&X_REQUEST_ID, id.clone());
    }
    let Some(route) = ctx.route() else {
        return Ok(());
    };
    let (Some(policy), Some(origin)) = (&route.cors, &ctx.allowed_origin) else {
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
            resp.insert_header_static(name, value);
        }
        return Ok(());
    }
    if ctx.augment_preflight {
        edit_cors_headers(resp, |m| {
            cors::augment_preflight_response(policy, origin.as_bytes(), m)
        });
    } else {
        edit_cors_headers(resp, |m| {
            cors::decorate_response(policy, origin.as_bytes(), m)
        });
    }
    Ok(())
}

/// Answer a request Pingora could not proxy: the status and JSON body for what failed, with
/// the route's CORS headers so the page sees the real status. Returns the status written (0
/// when the client is gone).
pub(super) async fn failure(
    app: &Stitch,
    session: &mut Session,
    e: &pingora::Error,
    ctx: &mut Ctx,
) -> u16 {
    let rt = ctx.rt.clone();
    let route = ctx.route.and_then(|i| rt.routes.get(i));
    let route_name = route.map(|r| &*r.name);
    let cors_extra = cors_headers(
        route.and_then(|r| r.cors.as_ref()),
        ctx.allowed_origin.as_ref(),
    );
    if session
        .response_written()
        .is_some_and(|r| r.status.as_u16() >= 200)
    {
        // The response has begun: a status or a body written now would be spliced into it,
        // and a chunked one would end looking whole. Cutting the connection is the only
        // honest signal left; the client sees the body end short of its framing.
        if let ErrorSource::Upstream = e.esource() {
            let (kind, _) = classify(e);
            ctx.error_kind = Some(kind);
            ctx.error_message = Some(format!("upstream failed mid-response: {kind}"));
            if let Some(r) = route_name {
                app.metrics
                    .upstream_errors
                    .with_label_values(&[r, kind])
                    .inc();
            }
        }
        return 0;
    }
    let (code, body) = match e.esource() {
        _ if matches!(e.etype(), ErrorType::HTTPStatus(413)) => (
            413,
            error_body(
                "body_too_large",
                e.context.as_ref().map_or("", |c| c.as_str()),
                route_name,
            ),
        ),
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
                app.metrics
                    .upstream_errors
                    .with_label_values(&[r, kind])
                    .inc();
            }
            let error = if code == 504 {
                "upstream_timeout"
            } else {
                "upstream_unavailable"
            };
            (code, error_body(error, &message, route_name))
        }
        ErrorSource::Downstream => match e.etype() {
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => return 0,
            _ => (
                400,
                error_body("bad_request", "the request could not be read", route_name),
            ),
        },
        ErrorSource::Internal | ErrorSource::Unset => {
            ctx.error_kind = Some("internal");
            ctx.error_message = Some(e.to_string());
            (
                500,
                error_body(
                    "internal",
                    "stitch failed to handle the request",
                    route_name,
                ),
            )
        }
    };
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
        log::debug!("could not write the error response: {err}");
    }
    code
}
