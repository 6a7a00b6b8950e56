//! Builds the Pingora server from a validated [`Config`]: the proxy service on its listeners,
//! upstream pools with optional health checks, and the admin listener.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::lb::{health_check::TcpHealthCheck, LoadBalancer};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::signal::unix;

use crate::admin::{self, AdminState};
use crate::config::{Config, ServiceSettings};
use crate::metrics::Metrics;
use crate::proxy::{Pool, Stitch};
use crate::span::{DatadogExport, ExportConfig, ExportMetrics, Exporter, OtlpExport, ServiceInfo};

/// A running-to-be server and the addresses it will serve on.
pub struct Built {
    pub server: Server,
    pub drain: DrainOnTerm,
    pub proxy_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
}

/// SIGTERM: keep serving for the grace period (time for a load balancer to stop sending), then
/// wait until no request is in flight or the shutdown timeout passes, and only then let Pingora
/// stop its listeners. Pingora's own grace period is a fixed sleep; this ends as soon as the
/// drain is done, so a Kubernetes rollout or a test does not wait for nothing.
/// SIGINT: fast shutdown. SIGQUIT: ignored (stitch does not do socket-passing upgrades).
pub struct DrainOnTerm {
    pub inflight: Arc<AtomicUsize>,
    pub grace: Duration,
    pub timeout: Duration,
    /// Tells the span exporter to flush and stop.
    pub export_stop: tokio::sync::watch::Sender<bool>,
    /// Resolves when the exporter has flushed.
    pub export_done: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            unix::signal(unix::SignalKind::terminate()),
            unix::signal(unix::SignalKind::interrupt()),
        ) else {
            log::error!("cannot install signal handlers; SIGTERM will not drain");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        log::info!(
            "SIGTERM: serving {:?} more, then draining {} in-flight request(s) for up to {:?}",
            self.grace,
            self.inflight.load(Ordering::Relaxed),
            self.timeout
        );
        tokio::time::sleep(self.grace).await;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while self.inflight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tick.tick() => {}
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
        let left = self.inflight.load(Ordering::Relaxed);
        if left > 0 {
            log::warn!("shutdown timeout reached with {left} request(s) still in flight");
        }
        // Flush pending spans within what is left of the shutdown timeout (at least 1 s).
        let _ = self.export_stop.send(true);
        if let Some(done) = self.export_done.lock().await.take() {
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_secs(1));
            if tokio::time::timeout(left, done).await.is_err() {
                log::warn!("span export did not finish flushing within {left:?}");
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Give every `:0` listen address a concrete free port, so that the addresses stitch reports
/// are the ones it serves on. Pingora binds by address string, so the port is found by binding
/// it once here and handed over; a race with another process in between is possible but
/// reported clearly by Pingora's bind error.
fn resolve_listen(addrs: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    addrs
        .iter()
        .map(|a| {
            let sa: SocketAddr = a.parse()?;
            if sa.port() != 0 {
                return Ok(sa);
            }
            let probe = TcpListener::bind(sa)?;
            Ok(probe.local_addr()?)
        })
        .collect()
}

/// The exporter, its stop signal, and where it reports that the flush is done.
type ExportJob = (
    Exporter,
    tokio::sync::watch::Receiver<bool>,
    tokio::sync::oneshot::Sender<()>,
);

struct ExportService {
    exporter: Mutex<Option<ExportJob>>,
}

#[async_trait]
impl BackgroundService for ExportService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let job = self.exporter.lock().ok().and_then(|mut j| j.take());
        if let Some((exporter, stop, done)) = job {
            exporter.run(stop).await;
            let _ = done.send(());
        }
    }
}

/// `DD_SERVICE`, `DD_ENV` and `DD_VERSION` override the config's service settings.
pub fn service_with_env(s: &ServiceSettings) -> ServiceSettings {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    ServiceSettings {
        name: var("DD_SERVICE").unwrap_or_else(|| s.name.clone()),
        env: var("DD_ENV").or_else(|| s.env.clone()),
        version: var("DD_VERSION").or_else(|| s.version.clone()),
    }
}

struct AdminService {
    listener: Mutex<Option<TcpListener>>,
    state: Arc<AdminState>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let listener = self.listener.lock().ok().and_then(|mut l| l.take());
        if let Some(l) = listener {
            admin::serve(l, self.state.clone(), shutdown).await;
        }
    }
}

/// Build the server; nothing is served until `server.run_forever()`.
pub fn build(config: Config) -> anyhow::Result<Built> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let proxy_addrs = resolve_listen(&config.server.listen)?;

    let admin_listener = TcpListener::bind(config.admin_listen.as_str())
        .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;

    let mut conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        // The drain happens in `DrainOnTerm` before Pingora is told to stop; what remains is the
        // runtimes' exit (and the span exporter's final flush).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(2),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool,
        max_retries: 2,
        ..ServerConf::default()
    };
    // Pingora's defaults put these at shared paths under /tmp; make them per instance.
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    conf.pid_file = config
        .server
        .pid_file
        .clone()
        .unwrap_or_else(|| tmp.join(format!("stitch-{pid}.pid")).display().to_string());
    conf.upgrade_sock = config.server.upgrade_sock.clone().unwrap_or_else(|| {
        tmp.join(format!("stitch-{pid}-upgrade.sock"))
            .display()
            .to_string()
    });

    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut pools = Vec::new();
    for up in &config.upstreams {
        let mut lb = LoadBalancer::try_from_iter(up.servers.iter().map(|s| s.as_str()))
            .map_err(|e| anyhow::anyhow!("upstream {}: cannot resolve servers: {e}", up.name))?;
        let lb = if let Some(every) = up.health_check {
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.options.connection_timeout = Some(up.connect_timeout);
            lb.set_health_check(hc);
            lb.health_check_frequency = Some(every);
            let bg = background_service(&format!("health check {}", up.name), lb);
            let task = bg.task();
            server.add_service(bg);
            task
        } else {
            Arc::new(lb)
        };
        pools.push(Pool::new(up.clone(), lb));
    }

    let service = service_with_env(&config.service);
    let e = &config.export;
    let export_cfg = ExportConfig {
        datadog: e
            .datadog_agent_url
            .clone()
            .map(|agent_url| DatadogExport { agent_url }),
        otlp: e
            .otlp_endpoint
            .clone()
            .map(|endpoint| OtlpExport { endpoint }),
        queue_capacity: e.queue_capacity,
        batch_size: e.batch_size,
        flush_interval: e.flush_interval,
        max_retries: e.max_retries,
        backoff: e.retry_backoff,
        request_timeout: e.request_timeout,
        shutdown_timeout: config.server.shutdown_timeout.max(Duration::from_secs(1)),
    }
    .with_env_overrides();
    let export_metrics = ExportMetrics::register(&metrics.registry)
        .map_err(|e| anyhow::anyhow!("export metrics: {e}"))?;
    let svc = ServiceInfo {
        service: service.name.clone(),
        env: service.env.clone(),
        version: service.version.clone(),
    };
    let (sink, exporter) = crate::span::build(export_cfg, svc, export_metrics);
    let (export_stop, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let export_done = if exporter.is_empty() {
        None
    } else {
        server.add_service(background_service(
            "span export",
            ExportService {
                exporter: Mutex::new(Some((exporter, stop_rx, done_tx))),
            },
        ));
        Some(done_rx)
    };

    let app = Stitch::new(config.clone(), pools, metrics.clone(), sink, service);
    let drain = DrainOnTerm {
        inflight: app.inflight.clone(),
        grace: config.server.shutdown_grace,
        timeout: config.server.shutdown_timeout,
        export_stop,
        export_done: tokio::sync::Mutex::new(export_done),
    };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, app);
    for a in &proxy_addrs {
        let buffers = L4BufferSettings::default().read(config.server.read_buffer_bytes);
        proxy.add_listener(ListenerConfig::tcp(a.to_string()).l4_buffer(buffers));
    }
    server.add_service(proxy);

    let admin = AdminService {
        listener: Mutex::new(Some(admin_listener)),
        state: Arc::new(AdminState {
            metrics,
            proxy_listen: proxy_addrs.clone(),
        }),
    };
    server.add_service(background_service("admin", admin));

    Ok(Built {
        server,
        drain,
        proxy_addrs,
        admin_addr,
    })
}
