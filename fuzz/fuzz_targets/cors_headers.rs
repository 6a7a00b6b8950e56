//! Fuzz the CORS header parsers: the config's `allow_headers`/`expose_headers` lists and, on
//! the wire, `Access-Control-Request-Headers`, the upstream's `Access-Control-Allow-Headers`,
//! `Vary` and `Access-Control-Expose-Headers` as the preflight answer, the augment merge and
//! the response decoration read them. Lines of the input: 0 the config's `allow_headers`
//! (comma-separated), 1 its `expose_headers`, 2 the `Origin`, then header lines whose first
//! byte picks the name. Never a panic; a refused header name is bounded; the decorated response
//! carries exactly one `Access-Control-Allow-Origin`.
#![no_main]

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use libfuzzer_sys::fuzz_target;
use stitch::cors::{self, CorsPolicy, CorsSpec, PreflightDecision, PreflightMode};

const WIRE: [HeaderName; 6] = [
    ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_ALLOW_HEADERS,
    VARY,
    ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_ALLOW_CREDENTIALS,
];

fn list(line: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(line)
        .split(',')
        .map(str::to_string)
        .filter(|s| !s.is_empty())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let (allow, expose, origin) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let mut wire = HeaderMap::new();
    for line in lines {
        if let Some((&first, value)) = line.split_first() {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                wire.append(WIRE[usize::from(first) % WIRE.len()].clone(), v);
            }
        }
    }
    for (mode, credentials) in [(PreflightMode::Answer, false), (PreflightMode::Augment, true)] {
        let spec = CorsSpec {
            allowed_origins: vec!["https://app.example.com".into(), "~https?://[a-z0-9.-]+".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: list(allow),
            expose_headers: list(expose),
            allow_credentials: credentials,
            max_age: Some(600),
            preflight: mode,
        };
        let Ok(policy) = CorsPolicy::new(spec) else {
            return;
        };
        let policy = policy.with_tracing_headers(&["traceparent", "x-datadog-trace-id"]);
        let mut req = HeaderMap::new();
        if let Ok(o) = HeaderValue::from_bytes(origin) {
            req.insert(ORIGIN, o);
        }
        req.insert(ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        for v in wire.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            req.append(ACCESS_CONTROL_REQUEST_HEADERS, v.clone());
        }
        let _ = cors::is_preflight(&http::Method::OPTIONS, &req);
        if let PreflightDecision::Allow { refused_headers, .. } =
            cors::answer_preflight(&policy, &req)
        {
            for h in &refused_headers {
                assert!(h.len() <= 64, "unbounded refused header label {h:?}");
            }
        }
        let mut resp = wire.clone();
        cors::augment_preflight_response(&policy, origin, &mut resp);
        let mut resp = wire.clone();
        cors::decorate_response(&policy, origin, &mut resp);
        if policy.allows_origin(origin) && HeaderValue::from_bytes(origin).is_ok() {
            assert_eq!(resp.get_all(ACCESS_CONTROL_ALLOW_ORIGIN).iter().count(), 1);
        }
    }
});
