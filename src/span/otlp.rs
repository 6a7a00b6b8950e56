//! OTLP/HTTP protobuf: the `ExportTraceServiceRequest` of edge spans, built from the
//! `opentelemetry-proto` crate's generated message types (`trace/v1`, `resource/v1`,
//! `common/v1`) and encoded by `prost`.
//!
//! One request holds one `ResourceSpans` (the stitch service) with one `ScopeSpans` (scope
//! `stitch`) holding the batch. prost writes fields in field-number order and leaves proto3
//! defaults out, so equal spans give equal bytes (pinned by golden bytes below). Span kind is
//! SERVER; ids are the wire ids (trace id 16 bytes big-endian, span id 8, parent 8 or empty for
//! a root).
//!
//! Span attributes, in order (absent values left out), named by the OpenTelemetry HTTP semantic
//! conventions: `http.request.method`, `url.path`, `url.scheme`, `http.route`,
//! `http.response.status_code`, `server.address`, `server.port`, `client.address`,
//! `client.port`, `user_agent.original`, `http.request.header.x-request-id` (a string array, as
//! the conventions type header attributes), `network.peer.address`, `network.peer.port` (the
//! upstream), `network.protocol.version`, `error.type`; then stitch's and Datadog's own:
//! `stitch.preflight`, `sampling.priority` (read by the Datadog Agent's OTLP intake),
//! `_dd.origin`, `_dd.p.dm`, `_dd.parent_id`, `_dd.propagation_error`, the `_dd.p.*` tags and
//! the profile's baggage tags (`baggage.KEY`).
//! Resource attributes: `service.name`, `deployment.environment.name`, `service.version`,
//! `telemetry.sdk.name`, `telemetry.sdk.language`, `telemetry.sdk.version`. An error sets the
//! span status to ERROR with the error message.

use std::borrow::Borrow;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::{
    decision_maker, propagated_tags, split_host_port, EdgeSpan, ServiceInfo, SpanLink,
    BAGGAGE_TAG_PREFIX, SPAN_NAME, TRACER_VERSION,
};

/// The usual path of the traces endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// Content type of the body.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Span/link flags: bits 0-7 W3C trace flags, bit 8 "is_remote known", bit 9 "is remote".
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// An attribute value (`AnyValue` oneof: present even when it is the default).
enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    /// An array of strings (`ArrayValue`), as the semantic conventions type header attributes.
    Strs(&'a [&'a str]),
}

fn kv(k: &str, v: Value<'_>) -> KeyValue {
    let value = match v {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Bool(b) => any_value::Value::BoolValue(b),
        Value::Strs(list) => any_value::Value::ArrayValue(ArrayValue {
            values: list
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s.to_string())),
                })
                .collect(),
        }),
    };
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn address_attributes(out: &mut Vec<KeyValue>, addr: Option<&str>, name: &str, port_name: &str) {
    if let Some(addr) = addr {
        let (host, port) = split_host_port(addr);
        out.push(kv(name, Value::Str(host)));
        if let Some(p) = port {
            out.push(kv(port_name, Value::Int(i64::from(p))));
        }
    }
}

/// Append an `ExportTraceServiceRequest` for `spans` to `out`.
pub fn encode_export_request<S: Borrow<EdgeSpan>>(
    spans: &[S],
    svc: &ServiceInfo,
    out: &mut Vec<u8>,
) {
    encode_with_version(spans, svc, TRACER_VERSION, out)
}

/// [`encode_export_request`] with the stitch version given (golden tests pin it).
fn encode_with_version<S: Borrow<EdgeSpan>>(
    spans: &[S],
    svc: &ServiceInfo,
    version: &str,
    out: &mut Vec<u8>,
) {
    let req = export_request(spans, svc, version);
    out.reserve(req.encoded_len());
    // Encoding into a Vec cannot run out of room: it grows.
    let _ = req.encode(out);
}

/// The request message for `spans`.
fn export_request<S: Borrow<EdgeSpan>>(
    spans: &[S],
    svc: &ServiceInfo,
    version: &str,
) -> ExportTraceServiceRequest {
    let mut resource = vec![kv("service.name", Value::Str(&svc.service))];
    if let Some(env) = &svc.env {
        resource.push(kv("deployment.environment.name", Value::Str(env)));
    }
    if let Some(v) = &svc.version {
        resource.push(kv("service.version", Value::Str(v)));
    }
    resource.push(kv("telemetry.sdk.name", Value::Str("stitch")));
    resource.push(kv("telemetry.sdk.language", Value::Str("rust")));
    resource.push(kv("telemetry.sdk.version", Value::Str(version)));
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "stitch".to_string(),
                    version: version.to_string(),
                    ..Default::default()
                }),
                spans: spans.iter().map(|s| span_message(s.borrow())).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One `Span` message.
fn span_message(span: &EdgeSpan) -> Span {
    let mut attrs = Vec::with_capacity(24);
    let a = |attrs: &mut Vec<KeyValue>, k: &str, v: &str| attrs.push(kv(k, Value::Str(v)));
    a(&mut attrs, "http.request.method", span.method.as_str());
    a(&mut attrs, "url.path", &span.path);
    if let Some(scheme) = &span.scheme {
        a(&mut attrs, "url.scheme", scheme);
    }
    a(&mut attrs, "http.route", &span.route);
    if span.status != 0 {
        attrs.push(kv(
            "http.response.status_code",
            Value::Int(i64::from(span.status)),
        ));
    }
    address_attributes(
        &mut attrs,
        span.host.as_deref(),
        "server.address",
        "server.port",
    );
    address_attributes(
        &mut attrs,
        span.client_addr.as_deref(),
        "client.address",
        "client.port",
    );
    if let Some(ua) = &span.user_agent {
        a(&mut attrs, "user_agent.original", ua);
    }
    if let Some(id) = &span.request_id {
        attrs.push(kv(
            "http.request.header.x-request-id",
            Value::Strs(&[&**id]),
        ));
    }
    address_attributes(
        &mut attrs,
        span.upstream.as_deref(),
        "network.peer.address",
        "network.peer.port",
    );
    if let Some(v) = &span.http_version {
        a(&mut attrs, "network.protocol.version", v);
    }
    if let Some(err) = &span.error {
        a(&mut attrs, "error.type", &err.kind);
    }
    if span.preflight {
        attrs.push(kv("stitch.preflight", Value::Bool(true)));
    }
    attrs.push(kv(
        "sampling.priority",
        Value::Int(i64::from(span.sampling_priority)),
    ));
    if let Some(origin) = &span.origin {
        a(&mut attrs, "_dd.origin", origin);
    }
    if let Some(dm) = decision_maker(span) {
        a(&mut attrs, "_dd.p.dm", dm);
    }
    if let Some(p) = span.last_parent_id {
        a(&mut attrs, "_dd.parent_id", &format!("{p:016x}"));
    }
    if let Some(pe) = &span.propagation_error {
        a(&mut attrs, "_dd.propagation_error", pe);
    }
    for (k, v) in propagated_tags(span) {
        a(&mut attrs, k, v);
    }
    for (k, v) in &span.baggage {
        a(&mut attrs, &format!("{BAGGAGE_TAG_PREFIX}{k}"), v);
    }

    let mut flags = FLAG_HAS_IS_REMOTE;
    if span.sampling_priority > 0 {
        flags |= FLAG_SAMPLED;
    }
    if span.parent_id != 0 {
        flags |= FLAG_IS_REMOTE;
    }
    let start = span.start_unix_nanos.max(0) as u64;
    Span {
        trace_id: span.trace_id.to_be_bytes().to_vec(),
        span_id: span.span_id.to_be_bytes().to_vec(),
        parent_span_id: if span.parent_id != 0 {
            span.parent_id.to_be_bytes().to_vec()
        } else {
            Vec::new()
        },
        flags,
        name: SPAN_NAME.to_string(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(span.duration_nanos.max(0) as u64),
        attributes: attrs,
        links: span.links.iter().map(link_message).collect(),
        status: span.error.as_ref().map(|err| Status {
            message: err.message.clone(),
            code: StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

fn link_message(link: &SpanLink) -> Link {
    // Linked contexts come from incoming headers: remote.
    let mut flags = FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE;
    if link.sampled == Some(true) {
        flags |= FLAG_SAMPLED;
    }
    Link {
        trace_id: link.trace_id.to_be_bytes().to_vec(),
        span_id: link.span_id.to_be_bytes().to_vec(),
        trace_state: link.tracestate.clone().unwrap_or_default(),
        attributes: link
            .attributes
            .iter()
            .map(|(k, v)| kv(k, Value::Str(v)))
            .collect(),
        flags,
        ..Default::default()
    }
}

/// Whether a failed answer is worth another try (OTLP/HTTP spec: 429, 502, 503, 504; and 408).
pub fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504)
}

#[cfg(test)]
pub(crate) mod wire {
    //! A protobuf reader for tests: enough to walk a message field by field.

    #[derive(Debug, Clone, PartialEq)]
    pub enum F {
        Varint(u64),
        Fixed64(u64),
        Fixed32(u32),
        Bytes(Vec<u8>),
    }

    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// All (field number, value) pairs of a message, in wire order.
    pub fn fields(b: &[u8]) -> Vec<(u64, F)> {
        let mut i = 0;
        let mut out = Vec::new();
        while i < b.len() {
            let k = varint(b, &mut i);
            let v = match k & 7 {
                0 => F::Varint(varint(b, &mut i)),
                1 => {
                    let v = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
                    i += 8;
                    F::Fixed64(v)
                }
                2 => {
                    let n = varint(b, &mut i) as usize;
                    let v = b[i..i + n].to_vec();
                    i += n;
                    F::Bytes(v)
                }
                5 => {
                    let v = u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
                    i += 4;
                    F::Fixed32(v)
                }
                w => panic!("wire type {w}"),
            };
            out.push((k >> 3, v));
        }
        out
    }

    pub fn bytes(f: &F) -> &[u8] {
        match f {
            F::Bytes(b) => b,
            other => panic!("not bytes: {other:?}"),
        }
    }

    /// Decode a `KeyValue` into (key, rendered value): strings as is, ints as `i:N`,
    /// bools as `b:true`.
    pub fn key_value(b: &[u8]) -> (String, String) {
        let f = fields(b);
        let k = String::from_utf8(bytes(&f[0].1).to_vec()).unwrap();
        let any = fields(bytes(&f[1].1));
        let v = match &any[0] {
            (1, F::Bytes(s)) => String::from_utf8(s.clone()).unwrap(),
            (2, F::Varint(b)) => format!("b:{}", *b != 0),
            (3, F::Varint(i)) => format!("i:{}", *i as i64),
            other => panic!("value {other:?}"),
        };
        (k, v)
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{bytes, fields, key_value, F};
    use super::*;
    use crate::span::fixture::{full_span, minimal_span};

    fn svc() -> ServiceInfo {
        ServiceInfo {
            service: "edge".into(),
            env: Some("prod".into()),
            version: Some("1.4.2".into()),
        }
    }

    fn kvs(fs: &[(u64, F)], field: u64) -> Vec<(String, String)> {
        fs.iter()
            .filter(|(n, _)| *n == field)
            .map(|(_, f)| key_value(bytes(f)))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The minimal span's `Span` message, written byte by byte from the protobuf encoding rules.
    #[test]
    fn golden_minimal_span_by_hand() {
        let mut want: Vec<u8> = vec![];
        want.extend([0x0a, 16]); // 1: trace_id, 16 bytes
        want.extend([0; 15]);
        want.push(7);
        want.extend([0x12, 8, 0, 0, 0, 0, 0, 0, 0, 9]); // 2: span_id; no 4: root
        want.extend([0x2a, 14]); // 5: name
        want.extend(b"stitch.request");
        want.extend([0x30, 2]); // 6: kind SERVER
        want.push(0x39); // 7: start, fixed64 LE
        want.extend(1000u64.to_le_bytes());
        want.push(0x41); // 8: end
        want.extend(1005u64.to_le_bytes());
        // 9: attributes, KeyValue{1: key, 2: AnyValue{1: string | 2: bool | 3: int}}
        let kv_str = |want: &mut Vec<u8>, k: &str, v: &str| {
            want.extend([
                0x4a,
                (2 + k.len() + 2 + 2 + v.len()) as u8,
                0x0a,
                k.len() as u8,
            ]);
            want.extend(k.as_bytes());
            want.extend([0x12, (2 + v.len()) as u8, 0x0a, v.len() as u8]);
            want.extend(v.as_bytes());
        };
        kv_str(&mut want, "http.request.method", "OPTIONS");
        kv_str(&mut want, "url.path", "/");
        kv_str(&mut want, "http.route", "r");
        let k = "http.response.status_code";
        want.extend([0x4a, (2 + k.len() + 2 + 3) as u8, 0x0a, k.len() as u8]);
        want.extend(k.as_bytes());
        want.extend([0x12, 3, 0x18, 0xcc, 0x01]); // int 204 = varint cc 01
        let k = "stitch.preflight";
        want.extend([0x4a, (2 + k.len() + 4) as u8, 0x0a, k.len() as u8]);
        want.extend(k.as_bytes());
        want.extend([0x12, 2, 0x10, 1]); // bool true
        let k = "sampling.priority";
        want.extend([0x4a, (2 + k.len() + 4) as u8, 0x0a, k.len() as u8]);
        want.extend(k.as_bytes());
        want.extend([0x12, 2, 0x18, 0]); // int 0: present, it is a oneof
        want.push(0x85); // 16: flags, fixed32 (field 16 wire 5 = 0x85 0x01)
        want.push(0x01);
        want.extend(0x100u32.to_le_bytes()); // has_is_remote, not remote, not sampled

        let got = span_message(&minimal_span()).encode_to_vec();
        assert_eq!(got, want);
    }

    #[test]
    fn golden_full_request() {
        let mut got = Vec::new();
        encode_with_version(&[full_span()], &svc(), "9.9.9", &mut got);
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_FULL);

        // Walk it back field by field.
        let req = fields(&got);
        assert_eq!(req.len(), 1);
        let rs = fields(bytes(&req[0].1));
        let resource = fields(bytes(&rs[0].1));
        assert_eq!(
            kvs(&resource, 1),
            pairs(&[
                ("service.name", "edge"),
                ("deployment.environment.name", "prod"),
                ("service.version", "1.4.2"),
                ("telemetry.sdk.name", "stitch"),
                ("telemetry.sdk.language", "rust"),
                ("telemetry.sdk.version", "9.9.9"),
            ])
        );
        let ss = fields(bytes(&rs[1].1));
        let scope = fields(bytes(&ss[0].1));
        assert_eq!(
            scope,
            vec![
                (1, F::Bytes(b"stitch".to_vec())),
                (2, F::Bytes(b"9.9.9".to_vec()))
            ]
        );
        let span = fields(bytes(&ss[1].1));
        assert_eq!(
            bytes(&span[0].1),
            [0x64, 0x0c, 0xfd, 0x8d, 0, 0, 0, 0, 0x64, 0xfe, 0x8b, 0x2a, 0x57, 0xd3, 0xef, 0xf7]
        );
        assert_eq!(span[0].0, 1);
        assert_eq!(
            (span[1].0, bytes(&span[1].1)),
            (2, &0x00f067aa0ba902b7u64.to_be_bytes()[..])
        );
        assert_eq!(
            (span[2].0, bytes(&span[2].1)),
            (4, &1234567890123456789u64.to_be_bytes()[..])
        );
        assert_eq!(span[3], (5, F::Bytes(b"stitch.request".to_vec())));
        assert_eq!(span[4], (6, F::Varint(2)));
        assert_eq!(span[5], (7, F::Fixed64(1_700_000_000_123_456_789)));
        assert_eq!(span[6], (8, F::Fixed64(1_700_000_000_125_956_789)));
        assert_eq!(
            kvs(&span, 9),
            pairs(&[
                ("http.request.method", "GET"),
                ("url.path", "/api/users"),
                ("url.scheme", "https"),
                ("http.route", "api"),
                ("http.response.status_code", "i:502"),
                ("server.address", "shop.example"),
                ("server.port", "i:8443"),
                ("client.address", "192.0.2.1"),
                ("user_agent.original", "Mozilla/5.0"),
                ("network.peer.address", "10.0.0.7"),
                ("network.peer.port", "i:8080"),
                ("network.protocol.version", "1.1"),
                ("error.type", "http_502"),
                ("sampling.priority", "i:1"),
                ("_dd.origin", "rum"),
                ("_dd.p.dm", "-1"),
                ("_dd.parent_id", "0123456789abcdef"),
                ("_dd.p.usr.id", "dXNlcjE="),
            ])
        );
        let links: Vec<_> = span.iter().filter(|(n, _)| *n == 13).collect();
        assert_eq!(links.len(), 1);
        let link = fields(bytes(&links[0].1));
        assert_eq!(
            bytes(&link[0].1),
            0x4bf92f3577b34da6_a3ce929d0e0e4736u128.to_be_bytes()
        );
        assert_eq!(bytes(&link[1].1), 0x00f067aa0ba902b7u64.to_be_bytes());
        assert_eq!(link[2], (3, F::Bytes(b"congo=t61rcWkgMzE".to_vec())));
        assert_eq!(kvs(&link, 4), pairs(&[("reason", "terminated_context")]));
        assert_eq!(link[4], (6, F::Fixed32(0x301)));
        let status: Vec<_> = span.iter().filter(|(n, _)| *n == 15).collect();
        assert_eq!(
            fields(bytes(&status[0].1)),
            vec![(2, F::Bytes(b"bad gateway".to_vec())), (3, F::Varint(2))]
        );
        assert_eq!(span.last(), Some(&(16, F::Fixed32(0x301))));
    }

    const GOLDEN_FULL: &str = concat!(
        "0a8d070abf010a160a0c736572766963652e6e616d6512060a04656467650a250a1b6465706c6f796d65",
        "6e742e656e7669726f6e6d656e742e6e616d6512060a0470726f640a1a0a0f736572766963652e766572",
        "73696f6e12070a05312e342e320a1e0a1274656c656d657472792e73646b2e6e616d6512080a06737469",
        "7463680a200a1674656c656d657472792e73646b2e6c616e677561676512060a04727573740a200a1574",
        "656c656d657472792e73646b2e76657273696f6e12070a05392e392e3912c8050a0f0a06737469746368",
        "1205392e392e3912b4050a10640cfd8d0000000064fe8b2a57d3eff7120800f067aa0ba902b722081122",
        "10f47de981152a0e7374697463682e7265717565737430023915cd853dfe9c971741b5f2ab3dfe9c9717",
        "4a1c0a13687474702e726571756573742e6d6574686f6412050a034745544a180a0875726c2e70617468",
        "120c0a0a2f6170692f75736572734a150a0a75726c2e736368656d6512070a0568747470734a130a0a68",
        "7474702e726f75746512050a036170694a200a19687474702e726573706f6e73652e7374617475735f63",
        "6f6465120318f6034a200a0e7365727665722e61646472657373120e0a0c73686f702e6578616d706c65",
        "4a120a0b7365727665722e706f7274120318fb414a1d0a0e636c69656e742e61646472657373120b0a09",
        "3139322e302e322e314a240a13757365725f6167656e742e6f726967696e616c120d0a0b4d6f7a696c6c",
        "612f352e304a220a146e6574776f726b2e706565722e61646472657373120a0a0831302e302e302e374a",
        "180a116e6574776f726b2e706565722e706f7274120318903f4a210a186e6574776f726b2e70726f746f",
        "636f6c2e76657273696f6e12050a03312e314a180a0a6572726f722e74797065120a0a08687474705f35",
        "30324a170a1173616d706c696e672e7072696f72697479120218014a130a0a5f64642e6f726967696e12",
        "050a0372756d4a100a085f64642e702e646d12040a022d314a230a0d5f64642e706172656e745f696412",
        "120a10303132333435363738396162636465664a1a0a0c5f64642e702e7573722e6964120a0a0864584e",
        "6c636a453d6a540a104bf92f3577b34da6a3ce929d0e0e4736120800f067aa0ba902b71a11636f6e676f",
        "3d7436317263576b674d7a45221e0a06726561736f6e12140a127465726d696e617465645f636f6e7465",
        "787435010300007a0f120b62616420676174657761791802850101030000",
    );

    #[test]
    fn host_port_splitting() {
        for (input, want) in [
            ("a.example:80", ("a.example", Some(80))),
            ("a.example", ("a.example", None)),
            ("[::1]:8126", ("::1", Some(8126))),
            ("[::1]", ("::1", None)),
            ("::1", ("::1", None)),
            ("2001:db8::1", ("2001:db8::1", None)),
            ("h:notaport", ("h:notaport", None)),
            ("h:99999", ("h:99999", None)),
            ("[broken", ("[broken", None)),
        ] {
            assert_eq!(split_host_port(input), want, "{input}");
        }
    }

    #[test]
    fn batch_is_one_resource_one_scope() {
        let mut got = Vec::new();
        encode_export_request(
            &[minimal_span(), full_span(), minimal_span()],
            &svc(),
            &mut got,
        );
        let req = fields(&got);
        assert_eq!(req.len(), 1);
        let rs = fields(bytes(&req[0].1));
        let ss = fields(bytes(&rs[1].1));
        assert_eq!(ss.iter().filter(|(n, _)| *n == 2).count(), 3);
    }

    #[test]
    fn long_messages_get_multibyte_lengths() {
        let mut span = minimal_span();
        span.path = "/".repeat(300);
        let mut got = Vec::new();
        encode_export_request(&[span], &ServiceInfo::default(), &mut got);
        let req = fields(&got);
        let rs = fields(bytes(&req[0].1));
        let ss = fields(bytes(&rs[1].1));
        let span = fields(bytes(&ss[1].1));
        assert!(kvs(&span, 9).contains(&("url.path".to_string(), "/".repeat(300))));
    }
}
