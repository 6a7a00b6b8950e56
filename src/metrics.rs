//! Every Prometheus metric stitch exposes, registered once in one registry. Per-route handles
//! are resolved at start-up so the request path never looks up labels for them.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// `stitch_request_ids_total{outcome}`: `kept`, `generated`, `replaced`.
    pub request_ids: IntCounterVec,
    /// `stitch_proxy_protocol_total{result}` (see `proxy::accept::Outcome`).
    pub proxy_protocol: IntCounterVec,
    pub export: ExportMetrics,
    pub config: ConfigMetrics,
    /// `stitch_tls_certificate_expiry_timestamp_seconds{listener,name}`
    pub tls_certificate_expiry: GaugeVec,
    pub kubernetes: KubernetesMetrics,
}

/// The ingress controller's metrics (`stitch_kubernetes_*`).
pub struct KubernetesMetrics {
    /// `stitch_kubernetes_objects{kind}`: objects of each watched kind seen.
    pub objects: IntGaugeVec,
    /// `stitch_kubernetes_refused{kind,reason}`: objects stitch is responsible for and refused.
    pub refused: IntGaugeVec,
    /// `stitch_kubernetes_last_sync_timestamp_seconds`: the last list or watch event applied.
    pub last_sync: Gauge,
    /// `stitch_kubernetes_synced`: every kind has been listed (1 from then on).
    pub synced: IntGauge,
    /// `stitch_kubernetes_lists_total{kind}`: full lists (the first, and after a 410 Gone).
    pub lists: IntCounterVec,
    /// `stitch_kubernetes_watch_errors_total{kind}`
    pub watch_errors: IntCounterVec,
    /// `stitch_kubernetes_leader`: this replica holds the Lease and writes status.
    pub leader: IntGauge,
    /// `stitch_kubernetes_status_writes_total{kind}`: status patches and Events written.
    pub status_writes: IntCounterVec,
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
pub const OVERRIDE_REASONS: [&str; 3] = ["priority_capped", "untrusted_client", "restart"];

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

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric {name} registered twice: {e}"));
    g
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
            request_ids: counter(
                &registry,
                "stitch_request_ids_total",
                "X-Request-Id values, by outcome: kept (the client's), generated (none sent), replaced (invalid or oversized).",
                &["outcome"],
            ),
            proxy_protocol: counter(
                &registry,
                "stitch_proxy_protocol_total",
                "PROXY protocol headers on listeners that expect one, by result: proxied, local, untrusted (addresses ignored), invalid and timeout (connection closed).",
                &["result"],
            ),
            export: ExportMetrics::register(&registry)
                .unwrap_or_else(|e| panic!("export metrics: {e}")),
            config: ConfigMetrics::register(&registry),
            kubernetes: KubernetesMetrics::register(&registry),
            tls_certificate_expiry: gauge(
                &registry,
                "stitch_tls_certificate_expiry_timestamp_seconds",
                "When each served TLS certificate expires (notAfter, Unix seconds), by listener \
                 and certificate name.",
                &["listener", "name"],
            ),
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

impl KubernetesMetrics {
    fn register(registry: &Registry) -> KubernetesMetrics {
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("register gauge");
            g
        };
        let objects = gauges(
            "stitch_kubernetes_objects",
            "Objects of each watched kind, as last seen.",
            &["kind"],
        );
        let refused = gauges(
            "stitch_kubernetes_refused",
            "Ingresses and HTTPRoutes of stitch's that it refused, by kind and reason.",
            &["kind", "reason"],
        );
        let last_sync = Gauge::new(
            "stitch_kubernetes_last_sync_timestamp_seconds",
            "Unix time of the last list or watch event from the API server.",
        )
        .expect("gauge");
        let synced = IntGauge::new(
            "stitch_kubernetes_synced",
            "Whether every watched kind has been listed (1 from then on).",
        )
        .expect("gauge");
        let leader = IntGauge::new(
            "stitch_kubernetes_leader",
            "Whether this replica holds the leader-election Lease and writes status.",
        )
        .expect("gauge");
        for g in [
            Box::new(last_sync.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(synced.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(g).expect("register kubernetes metrics");
        }
        KubernetesMetrics {
            objects,
            refused,
            last_sync,
            synced,
            lists: counter(
                registry,
                "stitch_kubernetes_lists_total",
                "Full lists of a kind: the first, and each after a watch expired (410 Gone).",
                &["kind"],
            ),
            watch_errors: counter(
                registry,
                "stitch_kubernetes_watch_errors_total",
                "Failed lists and watches, by kind (each is retried with backoff).",
                &["kind"],
            ),
            leader,
            status_writes: counter(
                registry,
                "stitch_kubernetes_status_writes_total",
                "Status patches and Events written, by kind (ingress, httproute, event).",
                &["kind"],
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_route_leaves_no_series() {
        let m = Metrics::new();
        let _handles = m.route("gone");
        m.remove_route("gone");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("route=\"gone\""), "{text}");
    }
}
