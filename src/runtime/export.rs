//! The span exporter of a runtime: the sink requests hand spans to, and the stop signal of the
//! background exporter. Runtimes with the same export settings share one; when the last runtime
//! using it is gone (every request on it finished), dropping it tells the exporter to flush
//! what it holds and stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::Task;
use crate::config::{Config, ExportSettings, ServerSettings, ServiceSettings};
use crate::metrics::Metrics;
use crate::span::{DatadogExport, ExportConfig, OtlpExport, ServiceInfo, SpanSink};

/// A runtime's exporter.
pub struct ExportHandle {
    pub sink: SpanSink,
    settings: (ExportSettings, ServiceSettings, Duration),
    /// Dropping it (with the handle) stops the exporter; sending `true` does too.
    stop: watch::Sender<bool>,
    /// Resolves once the exporter has flushed and stopped.
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl ExportHandle {
    /// The sink, and the exporter task to run (none when no exporter is configured).
    pub fn new(
        config: &Config,
        metrics: &Arc<Metrics>,
    ) -> Result<(ExportHandle, Option<Task>), String> {
        let e = &config.export;
        let shutdown_timeout = config.server.shutdown_timeout.max(Duration::from_secs(1));
        let export_cfg = ExportConfig {
            datadog: e
                .datadog_agent_url
                .clone()
                .map(|agent_url| DatadogExport { agent_url }),
            otlp: e.otlp_endpoint.clone().map(|endpoint| OtlpExport {
                endpoint,
                ca_pem: e.otlp_ca.as_ref().map(|c| c.pem.clone()),
            }),
            queue_capacity: e.queue_capacity,
            batch_size: e.batch_size,
            flush_interval: e.flush_interval,
            max_retries: e.max_retries,
            backoff: e.retry_backoff,
            request_timeout: e.request_timeout,
            shutdown_timeout,
        };
        let svc = ServiceInfo {
            service: config.service.name.clone(),
            env: config.service.env.clone(),
            version: config.service.version.clone(),
        };
        let (sink, exporter) = crate::span::build(export_cfg, svc, metrics.export.clone());
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = oneshot::channel();
        let task: Option<Task> = if exporter.is_empty() {
            None
        } else {
            Some(Box::pin(async move {
                exporter.run(stop_rx).await;
                let _ = done_tx.send(());
            }))
        };
        let handle = ExportHandle {
            sink,
            settings: (e.clone(), config.service.clone(), shutdown_timeout),
            stop,
            done: Mutex::new(task.is_some().then_some(done_rx)),
        };
        Ok((handle, task))
    }

    /// Would a runtime with these settings export exactly like this one?
    pub fn same_settings(
        &self,
        e: &ExportSettings,
        s: &ServiceSettings,
        server: &ServerSettings,
    ) -> bool {
        let timeout = server.shutdown_timeout.max(Duration::from_secs(1));
        self.settings.0 == *e && self.settings.1 == *s && self.settings.2 == timeout
    }

    /// Ask the exporter to flush and stop, and wait for it at most `within`.
    pub async fn flush(&self, within: Duration) {
        let _ = self.stop.send(true);
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            if tokio::time::timeout(within, done).await.is_err() {
                log::warn!("span export did not finish flushing within {within:?}");
            }
        }
    }
}
