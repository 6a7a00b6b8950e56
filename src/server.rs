//! Builds the Pingora server from a loaded configuration: the first runtime, the proxy service
//! on its listeners, the reload service, and the admin listener; and the signals that stop it
//! (SIGTERM drains, SIGINT stops at once, SIGQUIT hands the listeners to a new binary).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::signal::unix;

use crate::admin::{self, AdminState};
use crate::config::Loaded;
use crate::front::Front;
use crate::metrics::Metrics;
use crate::proxy::{FrontReport, Stitch};
use crate::runtime::reload::{self, Reloader};
use crate::runtime::{compile, config_hash, Live, Task};

/// How stitch was started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The configuration file, re-read on reload.
    pub config_path: PathBuf,
    /// Reload when the configuration's directory changes (SIGHUP always reloads).
    pub watch: bool,
    /// Take the listening sockets over from a running stitch (which gets SIGQUIT).
    pub upgrade: bool,
}

/// A running-to-be server and the addresses it will serve on.
pub struct Built {
    pub server: Server,
    pub signals: Signals,
    pub proxy_addrs: Vec<SocketAddr>,
    /// The admin address (None while an upgrade waits for the old process to release it).
    pub admin_addr: Option<SocketAddr>,
}

/// The process signals:
/// - SIGTERM: keep serving for the grace period (time for a load balancer to stop sending),
///   wait until no request is in flight or the shutdown timeout passes, flush the spans, stop.
///   Pingora's own grace period is a fixed sleep; this ends as soon as the drain is done.
/// - SIGINT: stop at once.
/// - SIGQUIT: binary upgrade. A new `stitch --upgrade` waits for the listening sockets; this
///   process hands them over (Pingora's socket passing), answers with `Connection: close` so
///   keep-alive clients reconnect to the new process, keeps serving a few seconds while both
///   accept, then stops accepting and lets what is in flight finish.
pub struct Signals {
    pub live: Arc<Live>,
    pub inflight: Arc<AtomicUsize>,
    pub draining: Arc<AtomicBool>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            unix::signal(unix::SignalKind::terminate()),
            unix::signal(unix::SignalKind::interrupt()),
            unix::signal(unix::SignalKind::quit()),
        ) else {
            log::error!("cannot install signal handlers; SIGTERM will not drain");
            return std::future::pending().await;
        };
        let rt = self.live.snapshot();
        let (grace, timeout) = (
            rt.config.server.shutdown_grace,
            rt.config.server.shutdown_timeout,
        );
        drop(rt);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => {
                log::info!("SIGQUIT: handing the listeners to the new process");
                self.draining.store(true, Ordering::Relaxed);
                let (live, inflight) = (self.live.clone(), self.inflight.clone());
                // Pingora keeps accepting for its close timeout (5 s) after the hand-over, then
                // stops; in-flight requests then have the grace period. The spans are flushed
                // once the last one is done.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(UPGRADE_ACCEPT_SECONDS)).await;
                    wait_idle(&inflight, timeout).await;
                    live.snapshot().export.flush(timeout.max(Duration::from_secs(1))).await;
                });
                return ShutdownSignal::GracefulUpgrade;
            }
        }
        log::info!(
            "SIGTERM: serving {:?} more, then draining {} in-flight request(s) for up to {:?}",
            grace,
            self.inflight.load(Ordering::Relaxed),
            timeout
        );
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::select! {
            _ = wait_idle(&self.inflight, timeout) => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        let left = self.inflight.load(Ordering::Relaxed);
        if left > 0 {
            log::warn!("shutdown timeout reached with {left} request(s) still in flight");
        }
        // Flush pending spans within what is left of the shutdown timeout (at least 1 s).
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        self.live.snapshot().export.flush(left).await;
        // Nothing is in flight any more: Pingora need not wait for anything.
        ShutdownSignal::FastShutdown
    }
}

/// Pingora's close timeout: how long the old process keeps accepting after handing its
/// listeners over (`CLOSE_TIMEOUT` in pingora-core).
const UPGRADE_ACCEPT_SECONDS: u64 = 5;

/// Wait until no request is in flight, at most `timeout`.
async fn wait_idle(inflight: &AtomicUsize, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while inflight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tick.tick().await;
    }
}

/// Give every `:0` listen address a concrete free port, so that the addresses stitch reports
/// are the ones it serves on. Pingora binds by address string, so the port is found by binding
/// it once here and handed over; a race with another process in between is possible but
/// reported clearly by Pingora's bind error.
fn resolve_listen(addrs: &[String], upgrade: bool) -> anyhow::Result<Vec<SocketAddr>> {
    addrs
        .iter()
        .map(|a| {
            let sa: SocketAddr = a.parse()?;
            if sa.port() != 0 {
                return Ok(sa);
            }
            if upgrade {
                anyhow::bail!("listen address {a}: an upgrade takes sockets over by address, so the port must be fixed (not 0)");
            }
            let probe = TcpListener::bind(sa)?;
            Ok(probe.local_addr()?)
        })
        .collect()
}

/// The upgrade socket both the old and the new process find: one per configuration file.
fn default_upgrade_sock(config_path: &Path) -> String {
    let canonical =
        std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let hash = crate::runtime::content_hash([canonical.as_os_str().as_encoded_bytes()]);
    std::env::temp_dir()
        .join(format!("stitch-{hash}-upgrade.sock"))
        .display()
        .to_string()
}

/// Runs the reloader (and the first runtime's tasks) on Pingora's background runtime.
struct ReloadService {
    job: Mutex<Option<(Reloader, Vec<Task>)>>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let job = self.job.lock().ok().and_then(|mut j| j.take());
        if let Some((reloader, tasks)) = job {
            reloader.run(tasks, shutdown).await;
        }
    }
}

struct AdminService {
    listener: Mutex<Option<TcpListener>>,
    /// Bound later: an upgrade waits for the old process to release the address.
    retry_addr: Option<String>,
    state: Arc<AdminState>,
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut listener = self.listener.lock().ok().and_then(|mut l| l.take());
        if let (None, Some(addr)) = (&listener, &self.retry_addr) {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if *shutdown.borrow() {
                    return;
                }
                if let Ok(l) = TcpListener::bind(addr.as_str()) {
                    eprintln!("stitch: admin listening on http://{}", addr);
                    listener = Some(l);
                    break;
                }
            }
        }
        if let Some(l) = listener {
            admin::serve(l, self.state.clone(), shutdown).await;
        }
    }
}

/// Build the server; nothing is served until `server.run()`.
pub fn build(loaded: Loaded, opts: &RunOptions) -> anyhow::Result<Built> {
    let Loaded { config, text } = loaded;
    let metrics = Arc::new(Metrics::new());
    let proxy_addrs = resolve_listen(&config.server.listen, opts.upgrade)?;

    let (admin_listener, retry_addr) = match TcpListener::bind(config.admin_listen.as_str()) {
        Ok(l) => (Some(l), None),
        Err(e) if opts.upgrade && e.kind() == std::io::ErrorKind::AddrInUse => {
            (None, Some(config.admin_listen.clone()))
        }
        Err(e) => anyhow::bail!("admin listener {}: {e}", config.admin_listen),
    };
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;

    let s = &config.server;
    let mut conf = ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        // SIGTERM drains in `Signals` and then asks for a fast stop; this grace period is only
        // used after an upgrade hand-over, for the requests still in flight.
        grace_period_seconds: Some(s.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(2),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool,
        max_retries: 2,
        ..ServerConf::default()
    };
    // Pingora's defaults put these at shared paths under /tmp; make them per instance (the
    // upgrade socket per configuration file, so an upgrade finds it).
    let pid = std::process::id();
    conf.pid_file = s.pid_file.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("stitch-{pid}.pid"))
            .display()
            .to_string()
    });
    conf.upgrade_sock = s
        .upgrade_sock
        .clone()
        .unwrap_or_else(|| default_upgrade_sock(&opts.config_path));

    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let hash = config_hash(&text, &config);
    let (rt, tasks) = compile(config, hash, 1, &metrics, None).map_err(|e| anyhow::anyhow!(e))?;
    reload::record_initial(&metrics, &rt);
    let read_buffer = rt.config.server.read_buffer_bytes;
    let live = Arc::new(Live::new(rt));

    let app = Stitch::new(live.clone(), metrics.clone());
    let signals = Signals {
        live: live.clone(),
        inflight: app.inflight.clone(),
        draining: app.draining.clone(),
    };
    let report = Arc::new(FrontReport {
        live: live.clone(),
        metrics: metrics.clone(),
    });
    let http = pingora::proxy::http_proxy(&server.configuration, app);
    let mut proxy = Service::new("stitch proxy".to_string(), Front::new(http, report));
    for a in &proxy_addrs {
        let buffers = L4BufferSettings::default().read(read_buffer);
        proxy.add_listener(ListenerConfig::tcp(a.to_string()).l4_buffer(buffers));
    }
    server.add_service(proxy);

    let reloader = Reloader {
        path: opts.config_path.clone(),
        live,
        metrics: metrics.clone(),
        watch: opts.watch,
    };
    server.add_service(background_service(
        "runtime",
        ReloadService {
            job: Mutex::new(Some((reloader, tasks))),
        },
    ));

    let admin = AdminService {
        listener: Mutex::new(admin_listener),
        retry_addr,
        state: Arc::new(AdminState {
            metrics,
            proxy_listen: proxy_addrs.clone(),
        }),
    };
    server.add_service(background_service("admin", admin));

    Ok(Built {
        server,
        signals,
        proxy_addrs,
        admin_addr,
    })
}
