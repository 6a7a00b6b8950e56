//! stitch: an edge proxy on Pingora that keeps Datadog RUM sessions linked to backend traces.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod cors;
pub mod edge;
pub mod explain;
pub mod metrics;
pub mod propagation;
pub mod proxy;
pub mod routing;
pub mod sampling;
pub mod server;
pub mod span;
