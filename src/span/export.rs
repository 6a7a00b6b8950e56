//! The export pipeline: settings, metrics, the
//! never-blocking [`SpanSink`] the proxy holds, and the background [`Exporter`] that batches,
//! sends, retries and counts.

use super::http::{self, Endpoint};
use super::{datadog, otlp, EdgeSpan, ServiceInfo};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

/// Default Datadog Agent trace intake address.
pub const DEFAULT_AGENT_URL: &str = "http://127.0.0.1:8126";
/// Longest wait between two tries of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most one warning per exporter in this window (a dead agent must not flood the log).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Datadog Agent exporter settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatadogExport {
    /// Agent base URL (`http://host:port` or `unix:///path`); `/v0.4/traces` is appended.
    pub agent_url: String,
}

impl Default for DatadogExport {
    fn default() -> Self {
        DatadogExport {
            agent_url: DEFAULT_AGENT_URL.to_string(),
        }
    }
}

/// OTLP/HTTP exporter settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// Full URL of the traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces` or
    /// `https://collector.example/v1/traces`, used as is.
    pub endpoint: String,
    /// PEM CA certificates trusted for an `https://` endpoint instead of the system's.
    pub ca_pem: Option<Arc<[u8]>>,
}

/// How spans leave the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    pub datadog: Option<DatadogExport>,
    pub otlp: Option<OtlpExport>,
    /// Spans waiting per exporter; more are dropped (`queue_full`).
    pub queue_capacity: usize,
    /// Spans per request.
    pub batch_size: usize,
    /// Longest a span waits for its batch to fill.
    pub flush_interval: Duration,
    /// Further tries of a failed batch.
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time (at most 30 s).
    pub backoff: Duration,
    /// Deadline of one request, connect to last byte.
    pub request_timeout: Duration,
    /// On shutdown, time allowed to flush what is queued.
    pub shutdown_timeout: Duration,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            datadog: Some(DatadogExport::default()),
            otlp: None,
            queue_capacity: 4096,
            batch_size: 256,
            flush_interval: Duration::from_secs(1),
            max_retries: 3,
            backoff: Duration::from_millis(250),
            request_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// The export counters, labelled by `exporter` (`datadog`, `otlp`).
#[derive(Debug, Clone)]
pub struct ExportMetrics {
    /// `stitch_spans_exported_total{exporter}`
    pub exported: IntCounterVec,
    /// `stitch_spans_dropped_total{exporter,reason}`
    pub dropped: IntCounterVec,
    /// `stitch_export_batches_total{exporter,result}`
    pub batches: IntCounterVec,
    /// `stitch_export_connections_total{exporter}`
    pub connections: IntCounterVec,
}

impl ExportMetrics {
    /// The counters, not registered anywhere (tests, benches).
    pub fn new() -> prometheus::Result<ExportMetrics> {
        Ok(ExportMetrics {
            exported: IntCounterVec::new(
                Opts::new("stitch_spans_exported_total", "Edge spans accepted by an exporter's peer."),
                &["exporter"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "stitch_spans_dropped_total",
                    "Edge spans not exported: queue_full, retries_exhausted, rejected, encode_error, shutdown.",
                ),
                &["exporter", "reason"],
            )?,
            batches: IntCounterVec::new(
                Opts::new(
                    "stitch_export_batches_total",
                    "Export requests: ok, retry (failed, tried again), failed (failed, batch dropped).",
                ),
                &["exporter", "result"],
            )?,
            connections: IntCounterVec::new(
                Opts::new(
                    "stitch_export_connections_total",
                    "Connections opened to the agent or collector (kept open between batches while the peer allows).",
                ),
                &["exporter"],
            )?,
        })
    }

    /// Create the counters and register them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<ExportMetrics> {
        let m = ExportMetrics::new()?;
        registry.register(Box::new(m.exported.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        Ok(m)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Datadog,
    Otlp,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Datadog => "datadog",
            Kind::Otlp => "otlp",
        }
    }
}

/// Counters of one exporter, resolved once so the hot path does no label lookup.
#[derive(Clone)]
struct Counters {
    exported: IntCounter,
    queue_full: IntCounter,
    retries_exhausted: IntCounter,
    rejected: IntCounter,
    encode_error: IntCounter,
    shutdown: IntCounter,
    ok: IntCounter,
    retry: IntCounter,
    failed: IntCounter,
    connections: IntCounter,
}

impl Counters {
    fn new(m: &ExportMetrics, kind: Kind) -> Counters {
        let e = kind.label();
        let dropped = |reason| m.dropped.with_label_values(&[e, reason]);
        let batch = |result| m.batches.with_label_values(&[e, result]);
        Counters {
            exported: m.exported.with_label_values(&[e]),
            queue_full: dropped("queue_full"),
            retries_exhausted: dropped("retries_exhausted"),
            rejected: dropped("rejected"),
            encode_error: dropped("encode_error"),
            shutdown: dropped("shutdown"),
            ok: batch("ok"),
            retry: batch("retry"),
            failed: batch("failed"),
            connections: m.connections.with_label_values(&[e]),
        }
    }
}

struct SinkLane {
    kind: Kind,
    tx: mpsc::Sender<Arc<EdgeSpan>>,
    queue_full: IntCounter,
    shutdown: IntCounter,
    /// Wakes the worker once a full batch is waiting. The worker never waits on the channel
    /// itself, so an ordinary submit wakes no thread (no cross-thread wake-up per request).
    batch_ready: Arc<Notify>,
    batch_size: usize,
}

/// What the proxy holds: hands finished spans to the exporters without ever waiting.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct SpanSink {
    lanes: Option<Arc<[SinkLane]>>,
}

impl std::fmt::Debug for SpanSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanSink")
            .field("exporters", &self.lanes.as_ref().map_or(0, |l| l.len()))
            .finish()
    }
}

impl SpanSink {
    /// A sink that drops every span (no exporter configured).
    pub fn disabled() -> SpanSink {
        SpanSink { lanes: None }
    }

    /// Whether any exporter takes spans.
    pub fn is_enabled(&self) -> bool {
        self.lanes.as_ref().is_some_and(|l| !l.is_empty())
    }

    /// Queue `span` for every exporter that wants it (OTLP: kept traces only). Never blocks:
    /// a full queue drops the span for that exporter and counts `queue_full`.
    pub fn submit(&self, span: EdgeSpan) {
        let Some(lanes) = &self.lanes else { return };
        let span = Arc::new(span);
        for lane in lanes.iter() {
            if lane.kind == Kind::Otlp && span.sampling_priority <= 0 {
                continue;
            }
            match lane.tx.try_send(Arc::clone(&span)) {
                Ok(()) => {
                    if lane.tx.max_capacity() - lane.tx.capacity() == lane.batch_size {
                        lane.batch_ready.notify_one();
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => lane.queue_full.inc(),
                Err(mpsc::error::TrySendError::Closed(_)) => lane.shutdown.inc(),
            }
        }
    }

    /// Spans waiting in the queues, all exporters together.
    pub fn queued(&self) -> usize {
        self.lanes.as_ref().map_or(0, |lanes| {
            lanes
                .iter()
                .map(|l| l.tx.max_capacity() - l.tx.capacity())
                .sum()
        })
    }
}

/// Request headers besides `Host`, `Content-Length`, `Connection`.
type Headers = Vec<(&'static str, String)>;

struct Settings {
    batch_size: usize,
    flush_interval: Duration,
    max_retries: u32,
    backoff: Duration,
    request_timeout: Duration,
    shutdown_timeout: Duration,
}

struct Worker {
    kind: Kind,
    rx: mpsc::Receiver<Arc<EdgeSpan>>,
    batch_ready: Arc<Notify>,
    /// The agent or collector, over a kept-alive connection.
    client: http::Client,
    svc: Arc<ServiceInfo>,
    settings: Arc<Settings>,
    counters: Counters,
    last_warn: Option<Instant>,
}

/// The background side: run it with [`Exporter::run`] on a tokio runtime.
pub struct Exporter {
    workers: Vec<Worker>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<_> = self.workers.iter().map(|w| w.kind.label()).collect();
        f.debug_struct("Exporter")
            .field("exporters", &kinds)
            .finish()
    }
}

/// Build the sink and the exporter. An exporter whose URL does not parse is left out with a
/// warning (call [`ExportConfig::validate`] first to refuse such a config).
pub fn build(cfg: ExportConfig, svc: ServiceInfo, metrics: ExportMetrics) -> (SpanSink, Exporter) {
    let settings = Arc::new(Settings {
        batch_size: cfg.batch_size.max(1),
        flush_interval: cfg.flush_interval,
        max_retries: cfg.max_retries,
        backoff: cfg.backoff,
        request_timeout: cfg.request_timeout,
        shutdown_timeout: cfg.shutdown_timeout,
    });
    let svc = Arc::new(svc);
    let mut targets = Vec::new();
    if let Some(dd) = &cfg.datadog {
        match Endpoint::parse(&dd.agent_url) {
            Ok(ep) => targets.push((Kind::Datadog, ep.join(datadog::TRACES_PATH), None)),
            Err(e) => log::warn!(
                "span export to datadog disabled: agent_url {:?}: {e}",
                dd.agent_url
            ),
        }
    }
    if let Some(o) = &cfg.otlp {
        let ca = o
            .ca_pem
            .as_ref()
            .map(|pem| crate::tls::parse_certificates(pem));
        match (Endpoint::parse(&o.endpoint), ca) {
            (Ok(ep), None) => targets.push((Kind::Otlp, ep, None)),
            (Ok(ep), Some(Ok(certs))) => {
                targets.push((Kind::Otlp, ep, Some(Arc::new(certs.into_boxed_slice()))))
            }
            (Ok(_), Some(Err(e))) => {
                log::warn!("span export to otlp disabled: ca_file {e}")
            }
            (Err(e), _) => log::warn!(
                "span export to otlp disabled: endpoint {:?}: {e}",
                o.endpoint
            ),
        }
    }
    let mut lanes = Vec::new();
    let mut workers = Vec::new();
    for (kind, endpoint, ca) in targets {
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let counters = Counters::new(&metrics, kind);
        let batch_ready = Arc::new(Notify::new());
        lanes.push(SinkLane {
            kind,
            tx,
            queue_full: counters.queue_full.clone(),
            shutdown: counters.shutdown.clone(),
            batch_ready: Arc::clone(&batch_ready),
            batch_size: cfg.batch_size.max(1),
        });
        workers.push(Worker {
            kind,
            rx,
            batch_ready,
            client: http::Client::new(endpoint, ca),
            svc: Arc::clone(&svc),
            settings: Arc::clone(&settings),
            counters,
            last_warn: None,
        });
    }
    let sink = if lanes.is_empty() {
        SpanSink::disabled()
    } else {
        SpanSink {
            lanes: Some(lanes.into()),
        }
    };
    (sink, Exporter { workers })
}

impl Exporter {
    /// Whether there is nothing to run (no exporter configured).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Export until `shutdown` turns `true` (or its sender is dropped) or every [`SpanSink`]
    /// is gone; then flush what is queued within `shutdown_timeout` and return.
    pub fn run(self, shutdown: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let mut workers = self.workers.into_iter();
        let first = workers.next();
        let second = workers.next();
        let sd2 = shutdown.clone();
        async move {
            tokio::join!(run_opt(first, shutdown), run_opt(second, sd2));
        }
    }
}

async fn run_opt(w: Option<Worker>, shutdown: watch::Receiver<bool>) {
    if let Some(w) = w {
        w.run(shutdown).await;
    }
}

/// Resolves once shutdown is asked for (value `true`, or the sender gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

enum Sent {
    /// Answered: exported, or dropped and counted.
    Done,
    /// Shutdown came during a backoff; the batch was neither sent nor dropped.
    Interrupted,
}

impl Worker {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let batch_size = self.settings.batch_size;
        let interval = self.settings.flush_interval;
        let mut pending: Vec<Arc<EdgeSpan>> = Vec::with_capacity(batch_size);
        let mut next_flush = Instant::now() + interval;
        'serve: loop {
            // Take what is queued without waiting on the channel: the proxy's submits then
            // never wake this task; only a full batch or the flush timer does.
            let mut closed = false;
            while pending.len() < batch_size {
                match self.rx.try_recv() {
                    Ok(span) => pending.push(span),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let due = Instant::now() >= next_flush;
            if due {
                next_flush = Instant::now() + interval;
            }
            if pending.len() >= batch_size || (due && !pending.is_empty()) {
                match self.send_batch(&pending, Some(&mut shutdown)).await {
                    Sent::Done => pending.clear(),
                    Sent::Interrupted => break 'serve,
                }
                continue;
            }
            if closed {
                break;
            }
            tokio::select! {
                biased;
                () = stopping(&mut shutdown) => break 'serve,
                () = self.batch_ready.notified() => {}
                () = tokio::time::sleep_until(next_flush) => {}
            }
        }
        self.drain(pending).await;
    }

    /// Close the queue, then send what is left within the shutdown timeout.
    async fn drain(&mut self, mut pending: Vec<Arc<EdgeSpan>>) {
        self.rx.close();
        while let Ok(span) = self.rx.try_recv() {
            pending.push(span);
        }
        let deadline = self.settings.shutdown_timeout;
        let batch_size = self.settings.batch_size;
        let flushed = tokio::time::timeout(deadline, async {
            while !pending.is_empty() {
                let n = pending.len().min(batch_size);
                self.send_batch(&pending[..n], None).await;
                pending.drain(..n);
            }
        })
        .await;
        if flushed.is_err() && !pending.is_empty() {
            self.counters.shutdown.inc_by(pending.len() as u64);
            log::warn!(
                "span export to {}: {} spans not flushed within {:?}",
                self.kind.label(),
                pending.len(),
                deadline
            );
        }
    }

    fn encode(&self, spans: &[Arc<EdgeSpan>]) -> Result<(Vec<u8>, Headers), datadog::EncodeError> {
        let mut body = Vec::with_capacity(spans.len() * 512);
        match self.kind {
            Kind::Datadog => {
                datadog::encode_traces(spans, &self.svc, &mut body)?;
                Ok((body, datadog::headers(spans.len())))
            }
            Kind::Otlp => {
                otlp::encode_export_request(spans, &self.svc, &mut body);
                Ok((body, vec![("Content-Type", otlp::CONTENT_TYPE.to_string())]))
            }
        }
    }

    fn retryable(&self, status: u16) -> bool {
        match self.kind {
            Kind::Datadog => datadog::retryable(status),
            Kind::Otlp => otlp::retryable(status),
        }
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            self.last_warn = Some(now);
            log::warn!("span export to {}: {what}", self.kind.label());
        } else {
            log::debug!("span export to {}: {what}", self.kind.label());
        }
    }

    /// Send one batch, retrying with backoff. `shutdown`, when given, cuts a backoff short.
    async fn send_batch(
        &mut self,
        spans: &[Arc<EdgeSpan>],
        mut shutdown: Option<&mut watch::Receiver<bool>>,
    ) -> Sent {
        let n = spans.len() as u64;
        let Ok((body, headers)) = self.encode(spans) else {
            self.counters.encode_error.inc_by(n);
            self.warn(format_args!("{n} spans could not be encoded"));
            return Sent::Done;
        };
        let method = match self.kind {
            Kind::Datadog => "PUT",
            Kind::Otlp => "POST",
        };
        let mut attempt: u32 = 0;
        loop {
            let opened = self.client.connections_opened();
            let result = self
                .client
                .send(method, &headers, &body, self.settings.request_timeout)
                .await;
            self.counters
                .connections
                .inc_by(self.client.connections_opened() - opened);
            let retry = match result {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    self.counters.ok.inc();
                    self.counters.exported.inc_by(n);
                    return Sent::Done;
                }
                Ok(resp) if !self.retryable(resp.status) => {
                    self.counters.failed.inc();
                    self.counters.rejected.inc_by(n);
                    self.warn(format_args!("{n} spans rejected with HTTP {}", resp.status));
                    return Sent::Done;
                }
                Ok(resp) => format!("HTTP {}", resp.status),
                Err(e) => e.to_string(),
            };
            if attempt >= self.settings.max_retries {
                self.counters.failed.inc();
                self.counters.retries_exhausted.inc_by(n);
                self.warn(format_args!(
                    "{n} spans dropped after {} tries: {retry}",
                    attempt + 1
                ));
                return Sent::Done;
            }
            self.counters.retry.inc();
            log::debug!("span export to {}: {retry}; retrying", self.kind.label());
            let wait = backoff(self.settings.backoff, attempt);
            attempt += 1;
            match shutdown.as_deref_mut() {
                Some(sd) => {
                    tokio::select! {
                        biased;
                        () = stopping(sd) => return Sent::Interrupted,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => tokio::time::sleep(wait).await,
            }
        }
    }
}

/// `base * 2^attempt`, at most [`MAX_BACKOFF`].
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::fixture::minimal_span;

    fn both() -> ExportConfig {
        ExportConfig {
            datadog: Some(DatadogExport {
                agent_url: "http://agent.local:9126".into(),
            }),
            otlp: Some(OtlpExport {
                endpoint: "http://collector:4318/v1/traces".into(),
                ca_pem: None,
            }),
            ..ExportConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 0), b);
        assert_eq!(backoff(b, 3), Duration::from_millis(800));
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
    }

    #[test]
    fn metrics_register_once() {
        let r = Registry::new();
        ExportMetrics::register(&r).unwrap();
        assert!(
            ExportMetrics::register(&r).is_err(),
            "second registration refused"
        );
    }

    #[test]
    fn disabled_sink_takes_anything() {
        let sink = SpanSink::disabled();
        assert!(!sink.is_enabled());
        sink.submit(minimal_span());
        assert_eq!(sink.queued(), 0);
    }

    #[test]
    fn full_queue_counts_and_otlp_skips_dropped_traces() {
        let m = ExportMetrics::new().unwrap();
        let cfg = ExportConfig {
            queue_capacity: 2,
            ..both()
        };
        let (sink, _exporter) = build(cfg, ServiceInfo::default(), m.clone());
        let mut kept = minimal_span();
        kept.sampling_priority = 1;
        for _ in 0..5 {
            sink.submit(kept.clone());
        }
        sink.submit(minimal_span()); // priority 0: datadog only
        let dropped = |e: &str| m.dropped.with_label_values(&[e, "queue_full"]).get();
        assert_eq!(dropped("datadog"), 4);
        assert_eq!(dropped("otlp"), 3);
        assert_eq!(sink.queued(), 4);
    }

    #[test]
    fn bad_url_leaves_that_exporter_out() {
        let mut cfg = both();
        cfg.otlp = Some(OtlpExport {
            endpoint: "grpc://x".into(),
            ca_pem: None,
        });
        let (sink, exporter) = build(cfg, ServiceInfo::default(), ExportMetrics::new().unwrap());
        assert!(sink.is_enabled());
        assert_eq!(
            format!("{exporter:?}"),
            r#"Exporter { exporters: ["datadog"] }"#
        );
        let none = ExportConfig {
            datadog: None,
            ..ExportConfig::default()
        };
        let (sink, exporter) = build(none, ServiceInfo::default(), ExportMetrics::new().unwrap());
        assert!(!sink.is_enabled() && exporter.is_empty());
    }

    #[tokio::test]
    async fn shutdown_with_nothing_queued_returns_at_once() {
        let (sink, exporter) = build(
            both(),
            ServiceInfo::default(),
            ExportMetrics::new().unwrap(),
        );
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(exporter.run(rx));
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        sink.submit(minimal_span()); // after shutdown: counted, not queued
        assert_eq!(sink.queued(), 0);
    }
}
