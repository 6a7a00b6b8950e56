//! Every Prometheus metric stitch exposes, registered once in one registry. Per-route handles
//! are resolved at start-up so the request path never looks up labels for them.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use crate::span::ExportMetrics;

/// Status classes in the order of [`RouteMetrics::requests`].
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The process-wide metrics.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub propagation_extracted: IntCounterVec,
    pub propagation_injected: IntCounterVec,
    pub propagation_invalid: IntCounterVec,
    pub propagation_conflicts: IntCounterVec,
    pub cors_preflight: IntCounterVec,
    pub cors_refused_header: IntCounterVec,
    pub sampling_decisions: IntCounterVec,
    pub sampling_overridden: IntCounterVec,
    pub export: ExportMetrics,
    pub config: ConfigMetrics,
}

/// The live configuration's metrics.
pub struct ConfigMetrics {
    /// `stitch_config_reloads_total{result="success|failure"}`
    pub reloads: IntCounterVec,
    /// `stitch_config_last_reload_successful`
    pub last_successful: IntGauge,
    /// `stitch_config_last_reload_success_timestamp_seconds`
    pub last_success_time: Gauge,
    /// `stitch_config_info{hash}`: 1 for the configuration being served.
    pub info: GaugeVec,
}

/// Kinds `stitch_upstream_errors_total` counts (see `proxy::respond::classify`).
pub const UPSTREAM_ERROR_KINDS: [&str; 12] = [
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "tls_timeout",
    "connect_refused",
    "no_route_to_host",
    "tls",
    "connect_error",
    "connection_closed",
    "io_error",
    "bad_response",
    "no_healthy_upstream",
];

/// Reasons `stitch_sampling_overridden_total` counts.
pub const OVERRIDE_REASONS: [&str; 3] = ["priority_capped", "untrusted_client", "untrusted_all"];

/// Handles for one route, resolved once.
pub struct RouteMetrics {
    requests: [IntCounter; 6],
    pub duration: Histogram,
}

/// The index of a status in [`STATUS_CLASSES`] (0 = no response was sent: `other`).
fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

impl RouteMetrics {
    /// Count one finished request with this status (0 = no response was sent).
    pub fn observe(&self, status: u16, seconds: f64) {
        self.requests[status_class(status)].inc();
        self.duration.observe(seconds);
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    c
}

impl Metrics {
    /// Create and register every metric. Panics only on a programming error (a malformed or
    /// doubly-registered metric), never on input.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = counter(
            &registry,
            "stitch_requests_total",
            "Requests handled, by route and response status class.",
            &["route", "status_class"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "stitch_request_duration_seconds",
                "Time from request start to the end of the response, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )
        .expect("duration histogram");
        registry
            .register(Box::new(duration.clone()))
            .expect("register duration histogram");
        Metrics {
            requests,
            duration,
            upstream_errors: counter(
                &registry,
                "stitch_upstream_errors_total",
                "Failures talking to an upstream, by route and kind.",
                &["route", "kind"],
            ),
            propagation_extracted: counter(
                &registry,
                "stitch_propagation_extracted_total",
                "Valid trace contexts read from requests, by format.",
                &["format"],
            ),
            propagation_injected: counter(
                &registry,
                "stitch_propagation_injected_total",
                "Trace contexts written to upstream requests, by format.",
                &["format"],
            ),
            propagation_invalid: counter(
                &registry,
                "stitch_propagation_invalid_total",
                "Malformed trace headers treated as absent, by format and reason.",
                &["format", "reason"],
            ),
            propagation_conflicts: counter(
                &registry,
                "stitch_propagation_conflicts_total",
                "Disagreements between formats on one request, by kind.",
                &["kind"],
            ),
            cors_preflight: counter(
                &registry,
                "stitch_cors_preflight_total",
                "CORS preflights, by route and result.",
                &["route", "result"],
            ),
            cors_refused_header: counter(
                &registry,
                "stitch_cors_refused_header_total",
                "Request headers a preflight asked for and stitch did not allow, by header.",
                &["header"],
            ),
            sampling_decisions: counter(
                &registry,
                "stitch_sampling_decisions_total",
                "Sampling decisions written upstream, by route, source and decision.",
                &["route", "source", "decision"],
            ),
            sampling_overridden: counter(
                &registry,
                "stitch_sampling_overridden_total",
                "Incoming sampling decisions stitch did not honour as sent, by route and reason.",
                &["route", "reason"],
            ),
            export: ExportMetrics::register(&registry)
                .unwrap_or_else(|e| panic!("export metrics: {e}")),
            config: ConfigMetrics::register(&registry),
            registry,
        }
    }

    /// Remove every label set of a route that no runtime serves any more.
    pub fn remove_route(&self, route: &str) {
        for c in STATUS_CLASSES {
            let _ = self.requests.remove_label_values(&[route, c]);
        }
        let _ = self.duration.remove_label_values(&[route]);
        for kind in UPSTREAM_ERROR_KINDS.iter().chain(&["other"]) {
            let _ = self.upstream_errors.remove_label_values(&[route, kind]);
        }
        for result in crate::cors::PreflightDecision::RESULT_LABELS {
            let _ = self.cors_preflight.remove_label_values(&[route, result]);
        }
        for source in ["incoming", "edge", "missing"] {
            for d in ["keep", "drop"] {
                let _ = self
                    .sampling_decisions
                    .remove_label_values(&[route, source, d]);
            }
        }
        for reason in OVERRIDE_REASONS {
            let _ = self
                .sampling_overridden
                .remove_label_values(&[route, reason]);
        }
    }

    /// Count a request that matched no route (refused before routing, or no route found),
    /// under `route="(none)"`.
    pub fn observe_unrouted(&self, status: u16) {
        self.requests
            .with_label_values(&["(none)", STATUS_CLASSES[status_class(status)]])
            .inc();
    }

    /// Resolve the handles of one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            requests: STATUS_CLASSES.map(|c| self.requests.with_label_values(&[route, c])),
            duration: self.duration.with_label_values(&[route]),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::warn!("metrics encoding failed: {e}");
        }
        out
    }
}

impl ConfigMetrics {
    fn register(registry: &Registry) -> ConfigMetrics {
        let reloads = counter(
            registry,
            "stitch_config_reloads_total",
            "Configuration reloads, by result (success, failure).",
            &["result"],
        );
        let last_successful = IntGauge::new(
            "stitch_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or failed (0).",
        )
        .expect("gauge");
        let last_success_time = Gauge::new(
            "stitch_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )
        .expect("gauge");
        let info = GaugeVec::new(
            Opts::new(
                "stitch_config_info",
                "The configuration being served (1), by content hash.",
            ),
            &["hash"],
        )
        .expect("gauge");
        for m in [
            Box::new(last_successful.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(last_success_time.clone()),
            Box::new(info.clone()),
        ] {
            registry.register(m).expect("register config metrics");
        }
        for r in ["success", "failure"] {
            reloads.with_label_values(&[r]);
        }
        last_successful.set(1);
        ConfigMetrics {
            reloads,
            last_successful,
            last_success_time,
            info,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
