//! A route as requests use it: its policy, profile and metric handles, resolved once.

use std::sync::Arc;

use prometheus::IntCounter;

use crate::config::{Config, Profile, Route, Target};
use crate::cors::{CorsPolicy, PreflightDecision};
use crate::forwarded::ForwardedHeader;
use crate::metrics::{Metrics, RouteMetrics};
use crate::propagation::tracing_headers;
use crate::sampling::Source;

/// Methods whose span resource (`"METHOD route"`) is made once per route.
const COMMON_METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::PATCH,
    http::Method::DELETE,
    http::Method::HEAD,
    http::Method::OPTIONS,
];

/// Everything a route needs at request time.
pub struct RouteRuntime {
    /// The route's name, shared with every edge span of the route.
    pub name: Arc<str>,
    /// The span resource (`"METHOD route"`) for the common methods, made once.
    resources: Vec<(http::Method, Arc<str>)>,
    pub target: Target,
    pub metrics: RouteMetrics,
    pub profile: Profile,
    /// The route's CORS policy with the profile's tracing headers baked in.
    pub cors: Option<CorsPolicy>,
    /// `stitch_sampling_decisions_total` handles: `[source][keep, drop]`.
    pub decisions: [[IntCounter; 2]; 3],
    /// `stitch_cors_preflight_total` handles, in `PreflightDecision::RESULT_LABELS` order.
    pub preflights: [IntCounter; 4],
    /// The forwarding headers written upstream.
    pub forwarded_headers: Vec<ForwardedHeader>,
    /// Keep or make an `X-Request-Id`.
    pub request_id: bool,
    /// Largest request body (413 beyond).
    pub max_body_bytes: Option<u64>,
}

impl RouteRuntime {
    pub fn new(config: &Config, r: &Route, metrics: &Metrics) -> RouteRuntime {
        let profile = config.profiles[r.propagation].clone();
        let headers = tracing_headers(&profile.extract);
        let cors = r
            .cors
            .map(|i| config.cors[i].policy.with_tracing_headers(&headers));
        let name = r.name.as_str();
        let decisions = [Source::Incoming, Source::Edge, Source::Missing].map(|s| {
            ["keep", "drop"].map(|d| {
                metrics
                    .sampling_decisions
                    .with_label_values(&[name, s.label(), d])
            })
        });
        let preflights = PreflightDecision::RESULT_LABELS
            .map(|result| metrics.cors_preflight.with_label_values(&[name, result]));
        let resources = COMMON_METHODS
            .into_iter()
            .map(|m| {
                let resource = Arc::from(format!("{m} {name}"));
                (m, resource)
            })
            .collect();
        RouteRuntime {
            name: Arc::from(name),
            resources,
            target: r.target,
            metrics: metrics.route(name),
            profile,
            cors,
            decisions,
            preflights,
            forwarded_headers: r.forwarded_headers.clone(),
            request_id: r.request_id,
            max_body_bytes: r.max_body_bytes,
        }
    }

    /// The edge span's resource for a request with `method`.
    pub fn resource(&self, method: &http::Method) -> Arc<str> {
        match self.resources.iter().find(|(m, _)| m == method) {
            Some((_, r)) => r.clone(),
            None => Arc::from(format!("{method} {}", self.name)),
        }
    }
}
