//! Datadog Agent trace intake v0.4: the msgpack encoding of edge spans and the request headers.
//!
//! The body is an array of traces, each trace an array of spans; every edge span is the root of
//! its own chunk (stitch only sees one span per trace), so every span carries the trace-level
//! tags (`_dd.p.*`, `_dd.origin`, `_sampling_priority_v1`, ...). Field order is fixed, so equal
//! spans give equal bytes. Integers use the smallest msgpack form, as dd-trace does.
//!
//! Span map, in order: `trace_id` (low 64 bits), `span_id`, `parent_id` (0 for a root), `name`,
//! `resource`, `service`, `type` (`web`), `start`, `duration`, `error` (0/1), `meta` (with the
//! profile's baggage tags as `baggage.KEY`, dd-trace's names), `metrics`,
//! and `span_links` when there are links (dd-trace-py's v0.4 shape: a list of maps with
//! `trace_id`, `trace_id_high` when non-zero, `span_id`, `attributes`, `tracestate`, and `flags`
//! with bit 31 set to say the sampling flag is known).
//!
//! Meta, in order (absent values are left out): `env`, `version`, `language`, `component`,
//! `span.kind`, `http.method`, `http.url`, `http.route`, `http.status_code`, `http.useragent`,
//! `http.client_ip` (the client address without its port), `http.request.headers.x-request-id`,
//! `stitch.upstream`, `stitch.preflight`, `error.type`, `error.message`,
//! `_dd.origin`, `_dd.p.dm`, `_dd.p.tid`, `_dd.parent_id`, `_dd.propagation_error`, then the
//! `_dd.p.*` tags in their order. Metrics: `_sampling_priority_v1`, `_dd.top_level` (1: the edge
//! span is where the stitch service is entered).

use super::{
    decision_maker, full_url, propagated_tags, split_host_port, trace_id_high, EdgeSpan,
    ServiceInfo, SpanLink, BAGGAGE_TAG_PREFIX, SPAN_NAME, TRACER_VERSION,
};
use std::borrow::Borrow;

/// The intake path, appended to the agent URL.
pub const TRACES_PATH: &str = "/v0.4/traces";

/// Content type of the body.
pub const CONTENT_TYPE: &str = "application/msgpack";

/// A value too large for msgpack (a string or list over 4 GiB): the batch cannot be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("span batch cannot be encoded as msgpack")]
pub struct EncodeError;

fn e<T>(_: T) -> EncodeError {
    EncodeError
}

fn len32(n: usize) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(e)
}

fn str_(out: &mut Vec<u8>, s: &str) -> Result<(), EncodeError> {
    rmp::encode::write_str(out, s).map_err(e)
}

fn uint(out: &mut Vec<u8>, v: u64) -> Result<(), EncodeError> {
    rmp::encode::write_uint(out, v).map(drop).map_err(e)
}

fn sint(out: &mut Vec<u8>, v: i64) -> Result<(), EncodeError> {
    rmp::encode::write_sint(out, v).map(drop).map_err(e)
}

fn map_len(out: &mut Vec<u8>, n: usize) -> Result<(), EncodeError> {
    rmp::encode::write_map_len(out, len32(n)?)
        .map(drop)
        .map_err(e)
}

fn array_len(out: &mut Vec<u8>, n: usize) -> Result<(), EncodeError> {
    rmp::encode::write_array_len(out, len32(n)?)
        .map(drop)
        .map_err(e)
}

/// Append the v0.4 body for `spans` (one trace per span) to `out`.
pub fn encode_traces<S: Borrow<EdgeSpan>>(
    spans: &[S],
    svc: &ServiceInfo,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    array_len(out, spans.len())?;
    for span in spans {
        array_len(out, 1)?;
        encode_span(span.borrow(), svc, out)?;
    }
    Ok(())
}

/// Append one span map to `out`.
pub fn encode_span(
    span: &EdgeSpan,
    svc: &ServiceInfo,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let has_links = !span.links.is_empty();
    map_len(out, 12 + usize::from(has_links))?;
    str_(out, "trace_id")?;
    uint(out, span.trace_id as u64)?;
    str_(out, "span_id")?;
    uint(out, span.span_id)?;
    str_(out, "parent_id")?;
    uint(out, span.parent_id)?;
    str_(out, "name")?;
    str_(out, SPAN_NAME)?;
    str_(out, "resource")?;
    str_(out, &span.resource)?;
    str_(out, "service")?;
    str_(out, &svc.service)?;
    str_(out, "type")?;
    str_(out, "web")?;
    str_(out, "start")?;
    sint(out, span.start_unix_nanos)?;
    str_(out, "duration")?;
    sint(out, span.duration_nanos)?;
    str_(out, "error")?;
    uint(out, u64::from(span.error.is_some()))?;
    str_(out, "meta")?;
    encode_meta(span, svc, out)?;
    str_(out, "metrics")?;
    map_len(out, 2)?;
    str_(out, "_sampling_priority_v1")?;
    rmp::encode::write_f64(out, f64::from(span.sampling_priority)).map_err(e)?;
    str_(out, "_dd.top_level")?;
    rmp::encode::write_f64(out, 1.0).map_err(e)?;
    if has_links {
        str_(out, "span_links")?;
        array_len(out, span.links.len())?;
        for link in &span.links {
            encode_link(link, out)?;
        }
    }
    Ok(())
}

fn encode_meta(span: &EdgeSpan, svc: &ServiceInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let url = full_url(span);
    let client_ip = span.client_addr.as_deref().map(|a| split_host_port(a).0);
    let status = (span.status != 0).then(|| span.status.to_string());
    let tid = trace_id_high(span.trace_id).map(|h| format!("{h:016x}"));
    let last_parent = span.last_parent_id.map(|p| format!("{p:016x}"));
    let (err_type, err_msg) = match &span.error {
        Some(err) => (Some(err.kind.as_str()), Some(err.message.as_str())),
        None => (None, None),
    };
    let fixed: [(&str, Option<&str>); 21] = [
        ("env", svc.env.as_deref()),
        ("version", svc.version.as_deref()),
        ("language", Some("rust")),
        ("component", Some("stitch")),
        ("span.kind", Some("server")),
        ("http.method", Some(span.method.as_str())),
        ("http.url", Some(&url)),
        ("http.route", Some(&span.route)),
        ("http.status_code", status.as_deref()),
        ("http.useragent", span.user_agent.as_deref()),
        ("http.client_ip", client_ip),
        // The name dd-trace gives a request header it is told to tag (DD_TRACE_HEADER_TAGS), so
        // one query finds the id on the edge span and on the backend's.
        (
            "http.request.headers.x-request-id",
            span.request_id.as_deref(),
        ),
        ("stitch.upstream", span.upstream.as_deref()),
        ("stitch.preflight", span.preflight.then_some("true")),
        ("error.type", err_type),
        ("error.message", err_msg),
        ("_dd.origin", span.origin.as_deref()),
        ("_dd.p.dm", decision_maker(span)),
        ("_dd.p.tid", tid.as_deref()),
        ("_dd.parent_id", last_parent.as_deref()),
        ("_dd.propagation_error", span.propagation_error.as_deref()),
    ];
    let present = fixed.iter().filter(|(_, v)| v.is_some()).count();
    map_len(
        out,
        present + propagated_tags(span).count() + span.baggage.len(),
    )?;
    for (k, v) in fixed {
        if let Some(v) = v {
            str_(out, k)?;
            str_(out, v)?;
        }
    }
    for (k, v) in propagated_tags(span) {
        str_(out, k)?;
        str_(out, v)?;
    }
    // dd-trace's baggage tags (`DD_TRACE_BAGGAGE_TAG_KEYS`): `baggage.` and the key.
    for (k, v) in &span.baggage {
        str_(out, &format!("{BAGGAGE_TAG_PREFIX}{k}"))?;
        str_(out, v)?;
    }
    Ok(())
}

fn encode_link(link: &SpanLink, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let high = trace_id_high(link.trace_id);
    let n = 2
        + usize::from(high.is_some())
        + usize::from(!link.attributes.is_empty())
        + usize::from(link.tracestate.is_some())
        + usize::from(link.sampled.is_some());
    map_len(out, n)?;
    str_(out, "trace_id")?;
    uint(out, link.trace_id as u64)?;
    if let Some(h) = high {
        str_(out, "trace_id_high")?;
        uint(out, h)?;
    }
    str_(out, "span_id")?;
    uint(out, link.span_id)?;
    if !link.attributes.is_empty() {
        str_(out, "attributes")?;
        map_len(out, link.attributes.len())?;
        for (k, v) in &link.attributes {
            str_(out, k)?;
            str_(out, v)?;
        }
    }
    if let Some(ts) = &link.tracestate {
        str_(out, "tracestate")?;
        str_(out, ts)?;
    }
    if let Some(sampled) = link.sampled {
        // Bit 31 marks "flags are set", so a 0 (not sampled) is told apart from unknown.
        str_(out, "flags")?;
        uint(out, u64::from(sampled) | (1 << 31))?;
    }
    Ok(())
}

/// The headers the Agent expects with a body of `trace_count` traces (besides
/// `Content-Length`). No `Datadog-Client-Computed-Stats`: the Agent computes the stats.
pub fn headers(trace_count: usize) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", CONTENT_TYPE.to_string()),
        ("X-Datadog-Trace-Count", trace_count.to_string()),
        ("Datadog-Meta-Lang", "rust".to_string()),
        // The minimum supported Rust version: the exact rustc is unknown without a build script.
        (
            "Datadog-Meta-Lang-Version",
            env!("CARGO_PKG_RUST_VERSION").to_string(),
        ),
        (
            "Datadog-Meta-Tracer-Version",
            format!("stitch {TRACER_VERSION}"),
        ),
        // `_dd.top_level` is set on every span we send.
        ("Datadog-Client-Computed-Top-Level", "yes".to_string()),
        // Ask for the real status (429 on overload) instead of a blanket 200.
        ("Datadog-Send-Real-Http-Status", "yes".to_string()),
    ]
}

/// Whether a failed answer from the Agent is worth another try.
pub fn retryable(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::fixture::{full_span, minimal_span};
    use serde_json::json;

    fn svc() -> ServiceInfo {
        ServiceInfo {
            service: "edge".into(),
            env: Some("prod".into()),
            version: Some("1.4.2".into()),
        }
    }

    fn s(out: &mut Vec<u8>, text: &str) {
        assert!(text.len() < 32, "fixstr only in this hand-written helper");
        out.push(0xa0 | text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }

    /// The minimal span, written byte by byte from the msgpack spec.
    #[test]
    fn golden_minimal_span_by_hand() {
        let mut want = vec![0x91, 0x91, 0x8c]; // [ [ {12 keys
        s(&mut want, "trace_id");
        want.push(0x07); // positive fixint 7
        s(&mut want, "span_id");
        want.push(0x09);
        s(&mut want, "parent_id");
        want.push(0x00);
        s(&mut want, "name");
        s(&mut want, "stitch.request");
        s(&mut want, "resource");
        s(&mut want, "OPTIONS r");
        s(&mut want, "service");
        s(&mut want, "stitch");
        s(&mut want, "type");
        s(&mut want, "web");
        s(&mut want, "start");
        want.extend_from_slice(&[0xcd, 0x03, 0xe8]); // uint16 1000
        s(&mut want, "duration");
        want.push(0x05);
        s(&mut want, "error");
        want.push(0x00);
        s(&mut want, "meta");
        want.push(0x88); // {8 keys
        for (k, v) in [
            ("language", "rust"),
            ("component", "stitch"),
            ("span.kind", "server"),
            ("http.method", "OPTIONS"),
            ("http.url", "/"),
            ("http.route", "r"),
            ("http.status_code", "204"),
            ("stitch.preflight", "true"),
        ] {
            s(&mut want, k);
            s(&mut want, v);
        }
        s(&mut want, "metrics");
        want.push(0x82); // {2 keys
        want.extend_from_slice(&[0xb5]); // fixstr 21
        want.extend_from_slice(b"_sampling_priority_v1");
        want.extend_from_slice(&[0xcb, 0, 0, 0, 0, 0, 0, 0, 0]); // float64 0.0
        s(&mut want, "_dd.top_level");
        want.extend_from_slice(&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]); // float64 1.0

        let mut got = Vec::new();
        encode_traces(&[minimal_span()], &ServiceInfo::default(), &mut got).unwrap();
        assert_eq!(got, want);
    }

    /// The full span: pinned bytes, and decoded once to check every field.
    #[test]
    fn golden_full_span() {
        let mut got = Vec::new();
        encode_traces(&[full_span()], &svc(), &mut got).unwrap();
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_FULL);

        let decoded: serde_json::Value = rmp_serde::from_slice(&got).unwrap();
        let want = json!([[{
            "trace_id": 7277407061855694839u64,
            "span_id": 67667974448284343u64,
            "parent_id": 1234567890123456789u64,
            "name": "stitch.request",
            "resource": "GET api",
            "service": "edge",
            "type": "web",
            "start": 1_700_000_000_123_456_789i64,
            "duration": 2_500_000,
            "error": 1,
            "meta": {
                "env": "prod",
                "version": "1.4.2",
                "language": "rust",
                "component": "stitch",
                "span.kind": "server",
                "http.method": "GET",
                "http.url": "https://shop.example:8443/api/users",
                "http.route": "api",
                "http.status_code": "502",
                "http.useragent": "Mozilla/5.0",
                "http.client_ip": "192.0.2.1",
                "stitch.upstream": "10.0.0.7:8080",
                "error.type": "http_502",
                "error.message": "bad gateway",
                "_dd.origin": "rum",
                "_dd.p.dm": "-1",
                "_dd.p.tid": "640cfd8d00000000",
                "_dd.parent_id": "0123456789abcdef",
                "_dd.p.usr.id": "dXNlcjE="
            },
            "metrics": {"_sampling_priority_v1": 1.0, "_dd.top_level": 1.0},
            "span_links": [{
                "trace_id": 11803532876627986230u64,
                "trace_id_high": 0x4bf92f3577b34da6u64,
                "span_id": 67667974448284343u64,
                "attributes": {"reason": "terminated_context"},
                "tracestate": "congo=t61rcWkgMzE",
                "flags": 2147483649u64
            }]
        }]]);
        assert_eq!(decoded, want);
    }

    const GOLDEN_FULL: &str = concat!(
        "91918da874726163655f6964cf64fe8b2a57d3eff7a77370616e5f6964cf00f067aa0ba902b7a9706172",
        "656e745f6964cf112210f47de98115a46e616d65ae7374697463682e72657175657374a87265736f7572",
        "6365a747455420617069a773657276696365a465646765a474797065a3776562a57374617274cf17979c",
        "fe3d85cd15a86475726174696f6ece002625a0a56572726f7201a46d657461de0013a3656e76a470726f",
        "64a776657273696f6ea5312e342e32a86c616e6775616765a472757374a9636f6d706f6e656e74a67374",
        "69746368a97370616e2e6b696e64a6736572766572ab687474702e6d6574686f64a3474554a868747470",
        "2e75726cd92368747470733a2f2f73686f702e6578616d706c653a383434332f6170692f7573657273aa",
        "687474702e726f757465a3617069b0687474702e7374617475735f636f6465a3353032ae687474702e75",
        "7365726167656e74ab4d6f7a696c6c612f352e30ae687474702e636c69656e745f6970a93139322e302e",
        "322e31af7374697463682e757073747265616dad31302e302e302e373a38303830aa6572726f722e7479",
        "7065a8687474705f353032ad6572726f722e6d657373616765ab6261642067617465776179aa5f64642e",
        "6f726967696ea372756da85f64642e702e646da22d31a95f64642e702e746964b0363430636664386430",
        "30303030303030ad5f64642e706172656e745f6964b030313233343536373839616263646566ac5f6464",
        "2e702e7573722e6964a864584e6c636a453da76d65747269637382b55f73616d706c696e675f7072696f",
        "726974795f7631cb3ff0000000000000ad5f64642e746f705f6c6576656ccb3ff0000000000000aa7370",
        "616e5f6c696e6b739186a874726163655f6964cfa3ce929d0e0e4736ad74726163655f69645f68696768",
        "cf4bf92f3577b34da6a77370616e5f6964cf00f067aa0ba902b7aa6174747269627574657381a6726561",
        "736f6eb27465726d696e617465645f636f6e74657874aa74726163657374617465b1636f6e676f3d7436",
        "317263576b674d7a45a5666c616773ce80000001",
    );

    #[test]
    fn every_span_is_its_own_trace() {
        let mut got = Vec::new();
        encode_traces(
            &[minimal_span(), minimal_span()],
            &ServiceInfo::default(),
            &mut got,
        )
        .unwrap();
        let decoded: serde_json::Value = rmp_serde::from_slice(&got).unwrap();
        let traces = decoded.as_array().unwrap();
        assert_eq!(traces.len(), 2);
        assert!(traces.iter().all(|t| t.as_array().unwrap().len() == 1));
        assert_eq!(headers(2)[1], ("X-Datadog-Trace-Count", "2".to_string()));
    }

    #[test]
    fn link_without_optional_fields() {
        let mut span = minimal_span();
        span.links = vec![SpanLink {
            trace_id: 3,
            span_id: 4,
            sampled: Some(false),
            tracestate: None,
            attributes: vec![],
        }];
        let mut got = Vec::new();
        encode_span(&span, &ServiceInfo::default(), &mut got).unwrap();
        let decoded: serde_json::Value = rmp_serde::from_slice(&got).unwrap();
        assert_eq!(
            decoded["span_links"],
            json!([{"trace_id": 3, "span_id": 4, "flags": 2147483648u64}])
        );
    }

    #[test]
    fn retry_policy() {
        for (status, want) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (413, false),
            (404, false),
        ] {
            assert_eq!(retryable(status), want, "{status}");
        }
    }
}
