//! The end of a request: the edge span handed to the exporters (never awaited) and the access
//! log line carrying the trace ids for log/trace correlation.

use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use pingora::proxy::Session;

use super::Ctx;
use crate::config::AccessLogFormat;
use crate::forwarded;
use crate::inspect::rfc3339_millis;
use crate::propagation::{baggage, datadog, Format};
use crate::runtime::Runtime;
use crate::span::{EdgeSpan, SpanError, SpanLink, SpanText};

/// Record the span and the access log line of a finished request.
pub(super) fn finish(session: &Session, ctx: &mut Ctx, status: u16, elapsed: Duration) {
    let rt = ctx.rt.clone();
    let Some(idx) = ctx.route else {
        if rt.access_log.enabled {
            access_line(session, ctx, status, elapsed, None);
        }
        return;
    };
    let spans = &rt.export.sink;
    if spans.is_enabled() {
        if let Some(span) = edge_span(&rt, session, ctx, idx, status, elapsed) {
            spans.submit(span);
        }
    }
    if rt.access_log.enabled {
        access_line(session, ctx, status, elapsed, Some(idx));
    }
}

fn edge_span(
    rt: &Runtime,
    session: &Session,
    ctx: &mut Ctx,
    idx: usize,
    status: u16,
    elapsed: Duration,
) -> Option<EdgeSpan> {
    let plan = ctx.trace.as_mut()?;
    let route = &rt.routes[idx];
    let req = session.req_header();
    let path = if rt.keep_query {
        req.uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string()
    } else {
        req.uri.path().to_string()
    };
    let header = |name: http::header::HeaderName| req.headers.get(name).map(SpanText::new);
    let error = if let Some(kind) = ctx.error_kind {
        Some(SpanError {
            kind: kind.to_string(),
            message: ctx
                .error_message
                .clone()
                .unwrap_or_else(|| kind.to_string()),
        })
    } else if let Some((code, message)) = ctx.grpc_status.as_ref().filter(|(c, _)| *c != 0) {
        Some(SpanError {
            kind: format!("grpc_status_{code}"),
            message: format!("gRPC status {code} {}: {message}", grpc_code_name(*code)),
        })
    } else if status >= 500 {
        Some(SpanError {
            kind: format!("http_{status}"),
            message: format!("the upstream answered {status}"),
        })
    } else {
        None
    };
    let start = ctx
        .start_wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let c = &mut plan.context;
    // The Datadog headers went out without their tags (spec §1): the span says why, unless the
    // incoming context already had an error of its own.
    if c.propagation_error.is_none()
        && route.profile.inject.contains(&Format::Datadog)
        && datadog::tags_too_long(c)
    {
        c.propagation_error = Some("inject_max_size".to_owned());
    }
    Some(EdgeSpan {
        trace_id: c.trace_id,
        span_id: plan.span_id,
        parent_id: plan.parent_id,
        start_unix_nanos: start,
        duration_nanos: elapsed.as_nanos() as i64,
        resource: route.resource(&req.method),
        route: route.name.clone(),
        method: req.method.clone(),
        path,
        status,
        upstream: ctx.upstream.clone(),
        client_addr: ctx.client.map(|c| forwarded::ip_string(c.ip)),
        user_agent: header(http::header::USER_AGENT),
        // The request ends here: what the context holds moves into the span.
        origin: c.origin.take(),
        sampling_priority: plan.decision.priority,
        decision_maker: c.tag("_dd.p.dm").map(|s| s.to_string()),
        tags: std::mem::take(&mut c.tags),
        last_parent_id: c.last_parent_id,
        propagation_error: c.propagation_error.take(),
        links: std::mem::take(&mut c.links)
            .into_iter()
            .map(|l| SpanLink {
                trace_id: l.trace_id,
                span_id: l.span_id,
                sampled: l.sampled,
                tracestate: l.tracestate,
                attributes: l
                    .attributes
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
            .collect(),
        error,
        preflight: ctx.preflight_answered,
        http_version: Some(Cow::Borrowed(match req.version {
            http::Version::HTTP_09 => "0.9",
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        })),
        scheme: Some(Cow::Borrowed(ctx.scheme)),
        // HTTP/2 carries the host in `:authority`, which Pingora keeps in the URI.
        host: header(http::header::HOST)
            .or_else(|| req.uri.authority().map(|a| SpanText::from(a.as_str()))),
        baggage: match &c.baggage {
            Some(raw) => baggage::tags(raw.as_bytes(), &route.profile.baggage_tags),
            None => Vec::new(),
        },
        request_id: ctx.request_id.as_ref().map(SpanText::new),
    })
}

/// The canonical name of a gRPC status code (grpc/doc/statuscodes.md).
fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN_CODE")
}

/// `https` when the client's connection is TLS.
fn access_line(session: &Session, ctx: &Ctx, status: u16, elapsed: Duration, idx: Option<usize>) {
    let req = session.req_header();
    let rt = &ctx.rt;
    let route = idx.map(|i| &*rt.routes[i].name).unwrap_or("");
    let (trace_low, trace_hex, span) = match &ctx.trace {
        Some(p) => (
            (p.context.trace_id as u64).to_string(),
            format!("{:032x}", p.context.trace_id),
            p.span_id.to_string(),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let svc = &rt.service;
    let client = ctx
        .client
        .map(|c| forwarded::ip_string(c.ip))
        .unwrap_or_default();
    let request_id = ctx
        .request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let line = match rt.access_log.format {
        AccessLogFormat::Json => {
            let v = serde_json::json!({
                "time": rfc3339_millis(std::time::SystemTime::now()),
                "method": req.method.as_str(),
                "path": req.uri.path(),
                "route": route,
                "status": status,
                "duration_ms": elapsed.as_secs_f64() * 1000.0,
                "upstream": ctx.upstream.as_deref(),
                "client": client,
                "request_id": request_id,
                "dd.trace_id": trace_low,
                "trace_id": trace_hex,
                "dd.span_id": span,
                "dd.service": svc.name,
                "dd.env": svc.env,
                "dd.version": svc.version,
            });
            v.to_string()
        }
        AccessLogFormat::Text => format!(
            "{} {} {} route={} status={} duration_ms={:.3} client={} request_id={} dd.trace_id={} trace_id={} dd.span_id={} dd.service={} dd.env={} dd.version={}",
            rfc3339_millis(std::time::SystemTime::now()),
            req.method,
            req.uri.path(),
            route,
            status,
            elapsed.as_secs_f64() * 1000.0,
            client,
            request_id,
            trace_low,
            trace_hex,
            span,
            svc.name,
            svc.env.as_deref().unwrap_or(""),
            svc.version.as_deref().unwrap_or(""),
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// The access log line of a connection refused before a request could be parsed (by the
/// connection front): no method, path or route, the status and why.
pub(super) fn refused_line(rt: &Runtime, status: u16, error: &str, elapsed: Duration) {
    let svc = &rt.service;
    let line = match rt.access_log.format {
        AccessLogFormat::Json => serde_json::json!({
            "time": rfc3339_millis(std::time::SystemTime::now()),
            "method": "",
            "path": "",
            "route": "",
            "status": status,
            "duration_ms": elapsed.as_secs_f64() * 1000.0,
            "error": error,
            "dd.service": svc.name,
            "dd.env": svc.env,
            "dd.version": svc.version,
        })
        .to_string(),
        AccessLogFormat::Text => format!(
            "{} - - route= status={status} duration_ms={:.3} error={error} dd.service={} dd.env={} dd.version={}",
            rfc3339_millis(std::time::SystemTime::now()),
            elapsed.as_secs_f64() * 1000.0,
            svc.name,
            svc.env.as_deref().unwrap_or(""),
            svc.version.as_deref().unwrap_or(""),
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
