//! What the request inspector needs from a request, gathered along the hooks only while it is
//! on, and the [`Record`] made from it when the request ends.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::Ctx;
use crate::edge::HeaderEdit;
use crate::inspect::{self, CorsResult, HeaderText, Inspector, Record, TraceSummary};

/// Per-request capture for the inspector (empty, and never filled, while it is off).
#[derive(Debug, Default)]
pub struct Capture {
    /// The inspector was on when the request started.
    pub on: bool,
    /// Trace headers as sent upstream (or shown by the echo), once rewritten.
    pub sent: Option<HeaderText>,
    /// Header names a preflight asked for and stitch left out.
    pub refused_headers: Vec<String>,
}

impl Capture {
    /// Keep the trace headers of a request about to go upstream untouched (a pass-through
    /// route), unless the rewrite already recorded what it wrote.
    pub fn sent(&mut self, req: &RequestHeader) {
        if self.on && self.sent.is_none() {
            self.sent = Some(inspect::recorded_headers(&req.headers, true));
        }
    }
}

/// The trace-header rewrite's target, recording each header it writes: after the rewrite
/// those are the only trace headers left, so no second pass over the request is needed.
pub(super) struct Recording<'a, H: HeaderEdit> {
    pub headers: &'a mut H,
    pub written: HeaderText,
}

impl<H: HeaderEdit> HeaderEdit for Recording<'_, H> {
    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.names()
    }
    fn remove(&mut self, name: &HeaderName) {
        self.headers.remove(name);
    }
    fn insert(&mut self, name: &'static HeaderName, value: HeaderValue) {
        self.written.push(name.as_str(), value.as_bytes());
        self.headers.insert(name, value);
    }
}

/// Hand the finished request to the inspector. Runs before the edge span takes its tags.
pub(super) fn record(
    inspector: &Inspector,
    session: &Session,
    ctx: &mut Ctx,
    status: u16,
    elapsed: Duration,
) {
    let req = session.req_header();
    let route = ctx.route();
    let has_policy = route.is_some_and(|r| r.cors.is_some());
    let cors = if !has_policy || !req.headers.contains_key(http::header::ORIGIN) {
        CorsResult::None
    } else if !ctx.inspect.refused_headers.is_empty() {
        CorsResult::AllowedPartial
    } else if ctx.allowed_origin.is_some() {
        CorsResult::Allowed
    } else {
        CorsResult::RefusedOrigin
    };
    let route = route.map(|r| r.name.clone());
    let record = Record {
        start: ctx.start_wall,
        duration: elapsed,
        route,
        method: req.method.clone(),
        path: req.uri.path().into(),
        status,
        // The client found through the trusted proxies, and the request id sent upstream.
        client: ctx.client.map(|c| c.ip),
        request_id: ctx
            .request_id
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
        preflight: ctx.preflight_answered,
        cors,
        refused_headers: std::mem::take(&mut ctx.inspect.refused_headers),
        received: inspect::recorded_headers(&req.headers, false),
        sent: ctx.inspect.sent.take(),
        trace: ctx.trace.as_mut().map(TraceSummary::take),
    };
    inspector.push(record);
}
