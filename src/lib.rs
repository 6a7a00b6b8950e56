//! stitch: an edge proxy on Pingora that keeps Datadog RUM sessions linked to backend traces.
//!
//! The path of a configuration: `config` (sources, environment, validation) -> `runtime`
//! (compiled, swapped live on reload) -> `proxy` (the Pingora hooks, one runtime snapshot per
//! request) over the pure modules `routing`, `cors`, `edge`, `propagation` and `sampling`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod cors;
pub mod edge;
pub mod explain;
pub mod forwarded;
pub mod front;
pub mod http1;
pub mod inspect;
pub mod kubernetes;
pub mod metrics;
pub mod propagation;
pub mod proxy;
pub mod proxy_protocol;
pub mod request_id;
pub mod routing;
pub mod runtime;
pub mod sampling;
pub mod server;
pub mod span;
pub mod tls;
