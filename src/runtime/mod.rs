//! The compiled runtime: everything a request reads, built once from a [`Config`] and swapped
//! whole on reload. A request takes the current snapshot once (into its `Ctx`) and uses only
//! that for its whole life, so a reload mid-request never mixes two configurations.
//!
//! `compile` turns a `Config` into a [`Runtime`]; [`Live`] holds the current one in an
//! `ArcSwap`; `reload` re-reads the source on SIGHUP or a file change and swaps.

mod export;
pub mod pool;
pub mod reload;
mod route;
pub mod tls;

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntCounter;

pub use export::ExportHandle;
pub use pool::{EndpointFeed, Pool};
pub use route::RouteRuntime;

use crate::config::{AccessLog, Config, ServiceSettings, Target};
use crate::forwarded::TrustedProxies;
use crate::metrics::Metrics;
use crate::propagation::Format;
use crate::request_id::Outcome;
use crate::routing::Router;

/// One compiled configuration.
pub struct Runtime {
    /// 1 for the runtime stitch started with, one more per successful reload.
    pub generation: u64,
    /// Content hash of the configuration (text and referenced files), as hex.
    pub hash: String,
    pub config: Arc<Config>,
    pub router: Router,
    /// Routes in declaration order (the router answers with these indexes).
    pub routes: Vec<RouteRuntime>,
    /// Pools in `config.upstreams` order.
    pub pools: Vec<Arc<Pool>>,
    pub access_log: AccessLog,
    /// Keep the query string in the span's URL.
    pub keep_query: bool,
    pub service: ServiceSettings,
    pub export: Arc<ExportHandle>,
    pub formats: FormatCounters,
    /// The TLS listeners' certificates, read by each new handshake.
    pub certificates: tls::CertificateStore,
    /// Whose `X-Forwarded-For` is believed (`[server] trusted_proxies`, reloadable).
    pub trusted_proxies: TrustedProxies,
    /// `stitch_request_ids_total` handles, in `request_id::Outcome::LABELS` order.
    pub request_ids: [IntCounter; 3],
}

impl Runtime {
    /// Whether some pool wants header names in their original case
    /// (`upstream.NAME.preserve_header_case`).
    pub fn keeps_header_case(&self) -> bool {
        self.config.upstreams.iter().any(|u| u.preserve_header_case)
    }

    /// Whether the servers of route `route` get (and give back) header names in their
    /// original case; not for stitch's own answers.
    pub fn route_keeps_header_case(&self, route: usize) -> bool {
        match self.routes.get(route).map(|r| r.target) {
            Some(Target::Pool(pool)) => self.config.upstreams[pool].preserve_header_case,
            _ => false,
        }
    }
}

/// `stitch_propagation_{extracted,injected}_total` handles by format.
#[derive(Clone)]
pub struct FormatCounters {
    pub extracted: [IntCounter; 5],
    pub injected: [IntCounter; 5],
}

impl FormatCounters {
    fn new(m: &Metrics) -> FormatCounters {
        FormatCounters {
            extracted: Format::ALL.map(|f| m.propagation_extracted.with_label_values(&[f.name()])),
            injected: Format::ALL.map(|f| m.propagation_injected.with_label_values(&[f.name()])),
        }
    }

    /// The index of a format in the counter arrays.
    pub fn index(f: Format) -> usize {
        Format::ALL.iter().position(|x| *x == f).unwrap_or(0)
    }
}

/// A task a runtime needs running (pool upkeep, span export), started by whoever installs it.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// Compile `config` into a runtime. Pools and the exporter whose settings did not change are
/// taken over from `previous` (their connections, health and queues continue); new ones come
/// with the tasks that keep them running. Pools of Kubernetes Services read `feed`.
pub fn compile(
    config: Config,
    hash: String,
    generation: u64,
    metrics: &Arc<Metrics>,
    previous: Option<&Runtime>,
    feed: Option<&Arc<dyn EndpointFeed>>,
) -> Result<(Runtime, Vec<Task>), String> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut pools = Vec::new();
    for up in &config.upstreams {
        let kept = previous.and_then(|p| p.pools.iter().find(|pool| pool.cfg == *up).cloned());
        let pool = match kept {
            Some(pool) => pool,
            None => {
                let pool = Arc::new(Pool::new(up.clone(), feed)?);
                tasks.push(Box::pin(Pool::maintain(&pool)));
                pool
            }
        };
        pools.push(pool);
    }
    let export = match previous {
        Some(p)
            if p.export
                .same_settings(&config.export, &config.service, &config.server) =>
        {
            p.export.clone()
        }
        _ => {
            let (handle, task) = ExportHandle::new(&config, metrics)?;
            if let Some(task) = task {
                tasks.push(task);
            }
            Arc::new(handle)
        }
    };
    let certificates = tls::store(&config)?;
    let routes = config
        .routes
        .iter()
        .map(|r| RouteRuntime::new(&config, r, metrics))
        .collect();
    let router = Router::new(
        config
            .routes
            .iter()
            .map(|r| (r.host.as_ref(), r.path.as_str(), r.exact)),
    );
    Ok((
        Runtime {
            generation,
            hash,
            router,
            routes,
            pools,
            access_log: config.access_log,
            keep_query: config.export.keep_query,
            service: config.service.clone(),
            export,
            formats: FormatCounters::new(metrics),
            certificates,
            trusted_proxies: config.server.trusted_proxies.clone(),
            request_ids: Outcome::LABELS.map(|o| metrics.request_ids.with_label_values(&[o])),
            config: Arc::new(config),
        },
        tasks,
    ))
}

impl Runtime {
    /// The pool a route sends to, if it has one.
    pub fn pool(&self, route: &RouteRuntime) -> Option<&Arc<Pool>> {
        match route.target {
            Target::Pool(i) => self.pools.get(i),
            Target::Echo => None,
        }
    }
}

/// The runtime currently serving, swapped whole on reload.
pub struct Live {
    current: ArcSwap<Runtime>,
}

impl Live {
    pub fn new(rt: Runtime) -> Live {
        pingora::http::set_preserve_header_case(rt.keeps_header_case());
        Live {
            current: ArcSwap::from_pointee(rt),
        }
    }

    /// The current runtime; the caller keeps it for the whole request.
    pub fn snapshot(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Install `rt`; requests already running keep the runtime they took.
    ///
    /// Pingora's HTTP/1 reader keeps header-name case only while some pool asks for it. Turned
    /// on before the swap and off after it, so that no request whose runtime wants the case is
    /// read without it.
    pub fn swap(&self, rt: Runtime) -> Arc<Runtime> {
        let keep = rt.keeps_header_case();
        if keep {
            pingora::http::set_preserve_header_case(true);
        }
        let old = self.current.swap(Arc::new(rt));
        if !keep {
            pingora::http::set_preserve_header_case(false);
        }
        old
    }
}

/// FNV-1a over `parts`, as 16 hex digits: the configuration's content hash (stable across
/// processes and builds, so replicas on one config show one `stitch_config_info{hash}`).
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that moving bytes between parts changes the hash.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The content hash of a loaded configuration: its text, every file it references, and what
/// the cluster contributed.
pub fn config_hash(loaded: &crate::config::Loaded) -> String {
    let crate::config::Loaded {
        config,
        text,
        cluster,
    } = loaded;
    let mut parts: Vec<&[u8]> = vec![text.as_bytes()];
    if !cluster.is_empty() {
        parts.push(cluster.as_bytes());
    }
    for ca in config.ca_files() {
        parts.push(&ca.pem);
    }
    for c in config.server.certificates() {
        parts.push(&c.cert.pem);
        parts.push(&c.key.pem);
    }
    content_hash(parts)
}
