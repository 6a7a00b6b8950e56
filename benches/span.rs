//! Encoding cost per edge span for each exporter (Datadog msgpack v0.4, OTLP protobuf), for a
//! single-span batch and a full batch of 256, and the cost of `SpanSink::submit`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use stitch::span::{
    build, datadog, otlp, DatadogExport, EdgeSpan, ExportConfig, ExportMetrics, ServiceInfo,
    SpanError, SpanLink,
};

/// A realistic RUM-originated span: 128-bit id, origin, tags, one link, an error.
fn span(i: u64) -> EdgeSpan {
    EdgeSpan {
        trace_id: 0x640cfd8d00000000_64fe8b2a57d3eff7 ^ u128::from(i),
        span_id: 0x00f067aa0ba902b7 ^ i,
        parent_id: 1234567890123456789,
        start_unix_nanos: 1_700_000_000_123_456_789,
        duration_nanos: 2_500_000,
        resource: "GET api".into(),
        route: "api".into(),
        method: http::Method::GET,
        path: "/api/users/42".into(),
        status: 502,
        upstream: Some("10.0.0.7:8080".into()),
        client_addr: Some("192.0.2.1".into()),
        user_agent: Some(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
                .into(),
        ),
        origin: Some("rum".into()),
        sampling_priority: 1,
        decision_maker: Some("-1".into()),
        tags: vec![("_dd.p.usr.id".into(), "dXNlcjE=".into())],
        last_parent_id: Some(0x0123456789abcdef),
        propagation_error: None,
        links: vec![SpanLink {
            trace_id: 0x4bf92f3577b34da6_a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            sampled: Some(true),
            tracestate: Some("congo=t61rcWkgMzE".into()),
            attributes: vec![("reason".into(), "terminated_context".into())],
        }],
        error: Some(SpanError {
            kind: "http_502".into(),
            message: "bad gateway".into(),
        }),
        preflight: false,
        http_version: Some("1.1".into()),
        scheme: Some("https".into()),
        host: Some("shop.example".into()),
        baggage: vec![(
            "session.id".into(),
            "d7a5c1e2-3f4b-4c5d-8e9f-0a1b2c3d4e5f".into(),
        )],
        request_id: Some("7f1c2b3a-9d0e-4f5a-8b6c-1d2e3f4a5b6c".into()),
    }
}

fn encoders(c: &mut Criterion) {
    let svc = ServiceInfo {
        service: "stitch".into(),
        env: Some("prod".into()),
        version: Some("1.0.0".into()),
    };
    for n in [1usize, 256] {
        let spans: Vec<EdgeSpan> = (0..n as u64).map(span).collect();
        let mut g = c.benchmark_group(format!("encode_batch_{n}"));
        g.throughput(Throughput::Elements(n as u64));
        let mut buf = Vec::with_capacity(n * 1024);
        g.bench_function("datadog_msgpack", |b| {
            b.iter(|| {
                buf.clear();
                datadog::encode_traces(black_box(&spans), &svc, &mut buf).unwrap();
                black_box(buf.len())
            })
        });
        g.bench_function("otlp_protobuf", |b| {
            b.iter(|| {
                buf.clear();
                otlp::encode_export_request(black_box(&spans), &svc, &mut buf);
                black_box(buf.len())
            })
        });
        g.finish();
    }
}

fn submit(c: &mut Criterion) {
    // No exporter task runs: the queue fills at once, so this is the cost of the drop path
    // (Arc allocation + try_send on a full channel + a counter increment).
    let cfg = ExportConfig {
        datadog: Some(DatadogExport::default()),
        queue_capacity: 1,
        ..ExportConfig::default()
    };
    let (sink, _exporter) = build(cfg, ServiceInfo::default(), ExportMetrics::new().unwrap());
    let s = span(1);
    c.bench_function("submit_queue_full", |b| {
        b.iter(|| sink.submit(black_box(s.clone())))
    });
}

criterion_group!(benches, encoders, submit);
criterion_main!(benches);
