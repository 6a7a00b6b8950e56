//! Per-request state carried across the Pingora hooks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Counts a request as in flight for as long as it lives (graceful shutdown waits on it).
pub struct InflightGuard(Arc<AtomicUsize>);

impl InflightGuard {
    pub fn new(counter: &Arc<AtomicUsize>) -> InflightGuard {
        counter.fetch_add(1, Ordering::Relaxed);
        InflightGuard(counter.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one request has gathered so far.
pub struct Ctx {
    /// Index of the matched route.
    pub route: Option<usize>,
    pub start: Instant,
    pub start_wall: SystemTime,
    /// The upstream server chosen for the request (`ip:port`).
    pub upstream: Option<String>,
    /// Why the upstream part failed, as a metric label.
    pub error_kind: Option<&'static str>,
    /// Human-readable error for the span and the log.
    pub error_message: Option<String>,
    /// The status stitch answered itself (echo, 404, preflight, errors); 0 if none.
    pub answered: u16,
    _inflight: InflightGuard,
}

impl Ctx {
    pub fn new(inflight: &Arc<AtomicUsize>) -> Ctx {
        Ctx {
            _inflight: InflightGuard::new(inflight),
            route: None,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            upstream: None,
            error_kind: None,
            error_message: None,
            answered: 0,
        }
    }
}
