//! Per-request propagation cost: extract with every format present, then strip and inject
//! the default three formats; also counts heap allocations per request (stats_alloc).

use std::alloc::System;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use stitch::propagation::{
    extract, inject, new_span_id, strip, Format, TraceContext, DEFAULT_EXTRACT, DEFAULT_INJECT,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A request carrying all four trace-context formats (same 128-bit trace) plus baggage.
fn full_request() -> HeaderMap {
    let pairs = [
        ("x-datadog-trace-id", "7277407061855694839"),
        ("x-datadog-parent-id", "67667974448284343"),
        ("x-datadog-sampling-priority", "2"),
        ("x-datadog-origin", "rum"),
        ("x-datadog-tags", "_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4"),
        (
            "traceparent",
            "00-640cfd8d0000000064fe8b2a57d3eff7-00f067aa0ba902b7-01",
        ),
        (
            "tracestate",
            "dd=s:2;o:rum;p:00f067aa0ba902b7;t.dm:-4,congo=t61rcWkgMzE",
        ),
        ("x-b3-traceid", "640cfd8d0000000064fe8b2a57d3eff7"),
        ("x-b3-spanid", "00f067aa0ba902b7"),
        ("x-b3-flags", "1"),
        ("b3", "640cfd8d0000000064fe8b2a57d3eff7-00f067aa0ba902b7-d"),
        (
            "baggage",
            "session.id=d7a5c1e2-3f4b-4c5d-8e9f-0a1b2c3d4e5f,user.id=42",
        ),
        ("host", "api.example.com"),
        ("accept", "*/*"),
    ];
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// The RUM default shape (datadog + tracecontext, 64-bit).
fn rum_request() -> HeaderMap {
    let pairs = [
        ("x-datadog-trace-id", "6255592339373587297"),
        ("x-datadog-parent-id", "3245567862311265982"),
        ("x-datadog-sampling-priority", "1"),
        ("x-datadog-origin", "rum"),
        (
            "traceparent",
            "00-000000000000000056d05416d0047b61-2d0a92c6677ca6be-01",
        ),
        ("tracestate", "dd=s:1;o:rum"),
        ("host", "api.example.com"),
    ];
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// The per-request path: extract, new edge span, strip, inject.
fn per_request(h: &mut HeaderMap, inject_formats: &[Format]) -> Option<TraceContext> {
    let ext = extract(h, DEFAULT_EXTRACT);
    let span = new_span_id();
    strip(h);
    let ctx = ext.context?;
    inject(&ctx, span, inject_formats, h);
    Some(ctx)
}

fn count_allocations(name: &str, template: &HeaderMap, formats: &[Format]) {
    let mut total = 0;
    let rounds = 100;
    for _ in 0..rounds {
        let mut h = template.clone();
        let region = Region::new(GLOBAL);
        let ctx = per_request(&mut h, formats);
        let stats = region.change();
        drop(black_box(ctx));
        total += stats.allocations + stats.reallocations;
    }
    println!(
        "allocations per request ({name}): {}",
        total as f64 / rounds as f64
    );
}

fn bench(c: &mut Criterion) {
    let full = full_request();
    let rum = rum_request();
    count_allocations(
        "all formats in, datadog+tracecontext+baggage out",
        &full,
        DEFAULT_INJECT,
    );
    count_allocations(
        "RUM datadog+tracecontext in, default out",
        &rum,
        DEFAULT_INJECT,
    );
    c.bench_function("extract all formats + inject 3", |b| {
        b.iter_batched_ref(
            || full.clone(),
            |h| black_box(per_request(h, DEFAULT_INJECT)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("extract RUM shape + inject 3", |b| {
        b.iter_batched_ref(
            || rum.clone(),
            |h| black_box(per_request(h, DEFAULT_INJECT)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("extract only, all formats", |b| {
        b.iter(|| black_box(extract(black_box(&full), DEFAULT_EXTRACT)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
