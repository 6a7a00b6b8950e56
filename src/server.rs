//! Builds the Pingora server from a loaded configuration: the first runtime, the proxy service
//! on its listeners, the reload service, and the admin listener; and the signals that stop it
//! (SIGTERM drains, SIGINT stops at once, SIGQUIT hands the listeners to a new binary).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::signal::unix;

use crate::admin::{self, AdminState};
use crate::config::{ListenerBehaviour, Loaded};
use crate::front::Front;
use crate::inspect::Inspector;
use crate::kubernetes::{ClusterState, Controller};
use crate::metrics::Metrics;
use crate::proxy::accept::{self, Acceptor};
use crate::proxy::FrontReport;
use crate::proxy::{handshake, Stitch};
use crate::runtime::reload::{self, ClusterSource, Reloader, Sources};
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
    /// `http` or `https` for each of `proxy_addrs`.
    pub proxy_schemes: Vec<&'static str>,
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
    /// With `[kubernetes]`: asks the leader election to give the Lease up before the process
    /// exits (so another replica writes status at once, not a lease duration later).
    pub release_lease: Option<crate::kubernetes::leader::ReleaseHandle>,
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
        // The shutdown settings are those of the configuration served when the signal comes.
        let settings = |live: &Live| {
            let s = &live.snapshot().config.server;
            (s.shutdown_grace, s.shutdown_timeout)
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => {
                let (_, timeout) = settings(&self.live);
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
        let (grace, timeout) = settings(&self.live);
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
        if let Some(release) = &self.release_lease {
            release.release(Duration::from_secs(2)).await;
        }
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
fn resolve_listen<'a>(
    addrs: impl Iterator<Item = &'a str>,
    upgrade: bool,
) -> anyhow::Result<Vec<SocketAddr>> {
    addrs
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

/// Runs the Kubernetes controller on Pingora's background runtime.
struct ControllerService {
    job: Mutex<Option<Controller>>,
}

#[async_trait]
impl BackgroundService for ControllerService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let job = self.job.lock().ok().and_then(|mut j| j.take());
        if let Some(controller) = job {
            controller.run(shutdown).await;
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
    let hash = config_hash(&loaded);
    let config = loaded.config;
    let metrics = Arc::new(Metrics::new());
    let listeners = config.server.listeners.clone();
    let proxy_addrs = resolve_listen(listeners.iter().map(|l| l.address.as_str()), opts.upgrade)?;

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

    let cluster = config
        .kubernetes
        .as_ref()
        .map(|_| Arc::new(ClusterState::new(metrics.clone())));
    let feed = cluster.as_ref().map(|c| c.feed());
    let kubernetes = config.kubernetes.clone();
    let (rt, tasks) =
        compile(config, hash, 1, &metrics, None, feed.as_ref()).map_err(|e| anyhow::anyhow!(e))?;
    reload::record_initial(&metrics, &rt);
    let read_buffer = rt.config.server.read_buffer_bytes;
    let live = Arc::new(Live::new(rt));

    let inspector = Arc::new(Inspector::new(
        live.snapshot().config.inspect.requests,
        live.snapshot().config.inspect.dd_site.clone(),
    ));
    let app = Stitch::new(live.clone(), metrics.clone(), inspector.clone());
    let (release_lease, release_requests) = match &kubernetes {
        Some(_) => {
            let (handle, requests) = crate::kubernetes::leader::ReleaseHandle::new();
            (Some(handle), Some(requests))
        }
        None => (None, None),
    };
    let signals = Signals {
        live: live.clone(),
        inflight: app.inflight.clone(),
        draining: app.draining.clone(),
        release_lease,
    };
    // Every connection passes the front first (connection limit, first-head deadline and
    // framing rules, refusals with a body), after any PROXY protocol header was taken off.
    let report = Arc::new(FrontReport {
        live: live.clone(),
        metrics: metrics.clone(),
    });
    // Listeners that behave alike share one proxy service (one pool of worker threads);
    // h2c is a per-service option in Pingora, the redirect and HSTS are the app's, and the
    // PROXY protocol is read by a wrapper around the app (and a pre-TLS callback).
    let mut groups: Vec<(ListenerBehaviour, Vec<ListenerConfig>)> = Vec::new();
    for (l, addr) in listeners.iter().zip(&proxy_addrs) {
        let buffers = L4BufferSettings::default().read(read_buffer);
        let mut endpoint = ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers);
        if l.tls.is_some() {
            endpoint = endpoint.tls(handshake::settings(&live, &l.address, l.serve.h2)?);
        }
        match groups.iter_mut().find(|(b, _)| *b == l.serve) {
            Some((_, endpoints)) => endpoints.push(endpoint),
            None => groups.push((l.serve.clone(), vec![endpoint])),
        }
    }
    // One reader of PROXY protocol headers for every listener that expects them (made only
    // if one does: its metric's series appear with it).
    let mut acceptor: Option<Arc<Acceptor>> = None;
    for (i, (serve, endpoints)) in groups.into_iter().enumerate() {
        let name = format!("stitch proxy {i}");
        // The HTTP app with its options set before it is wrapped: the h2c preface is peeked
        // by the app itself, after the PROXY header has been read and taken off the stream.
        let mut http = pingora::proxy::http_proxy(&server.configuration, app.serving(&serve));
        let mut options = HttpServerOptions::default();
        options.h2c = serve.h2c;
        http.server_options = Some(options);
        let http = Front::new(http, report.clone());
        if serve.proxy_protocol {
            let acceptor = acceptor
                .get_or_insert_with(|| Arc::new(Acceptor::new(live.clone(), &metrics)))
                .clone();
            let mut proxy = accept::service(&name, http, acceptor);
            for e in endpoints {
                proxy.add_listener(e);
            }
            server.add_service(proxy);
        } else {
            let mut proxy = Service::new(name, http);
            for e in endpoints {
                proxy.add_listener(e);
            }
            server.add_service(proxy);
        }
    }

    let sources = Arc::new(Sources::new(
        opts.config_path.clone(),
        live,
        metrics.clone(),
        cluster.clone().map(|c| c as Arc<dyn ClusterSource>),
        inspector.clone(),
    ));
    let reloader_installed = Arc::new(AtomicBool::new(false));
    let reloader = Reloader {
        sources: sources.clone(),
        watch: opts.watch,
        installed: reloader_installed.clone(),
    };
    if let (Some(settings), Some(state)) = (kubernetes, cluster.clone()) {
        let controller = Controller {
            settings,
            sources,
            state,
            metrics: metrics.clone(),
            release_requests,
        };
        server.add_service(background_service(
            "kubernetes",
            ControllerService {
                job: Mutex::new(Some(controller)),
            },
        ));
    }
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
            proxy_listen: proxy_addrs
                .iter()
                .zip(&listeners)
                .map(|(a, l)| admin::Probed {
                    addr: *a,
                    tls: l.tls.is_some(),
                    proxy_protocol: l.serve.proxy_protocol,
                })
                .collect(),
            reloader_ready: reloader_installed,
            cluster_ready: cluster.map(|c| c.ready_flag()),
            inspector,
        }),
    };
    server.add_service(background_service("admin", admin));

    Ok(Built {
        server,
        signals,
        proxy_schemes: listeners
            .iter()
            .map(|l| if l.tls.is_some() { "https" } else { "http" })
            .collect(),
        proxy_addrs,
        admin_addr,
    })
}
