//! The ingress controller mode (`[kubernetes]`): watches the cluster's Ingresses, IngressClasses,
//! Services, EndpointSlices, Gateways, GatewayClasses, HTTPRoutes and TLS Secrets, keeps them in a
//! [`Cluster`], and rebuilds the runtime from the file and those objects through
//! [`Sources::rebuild`], exactly as a file reload does. EndpointSlice changes only refresh the
//! pools of Services (nothing is recompiled). The leader ([`leader`]) writes status
//! ([`status`]); every replica serves.
//!
//! Faults: a watch that fails is retried with backoff (kube-runtime's watcher), which also
//! lists again after a `410 Gone`; until then the last objects seen keep serving. `/readyz`
//! waits for the first complete list of every kind, and stays ready after it.

pub mod leader;
pub mod status;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Notify};

use crate::config::kubernetes::{key_of, Cluster, Key, Verdict};
use crate::config::{KubernetesSettings, ServiceBackend};
use crate::metrics::Metrics;
use crate::runtime::reload::{ClusterSource, Sources, Trigger};
use crate::runtime::EndpointFeed;

/// How long the controller waits for more changes before it rebuilds (a burst of watch events,
/// a relist, is one rebuild).
const SETTLE: Duration = Duration::from_millis(50);
/// The longest a steady stream of changes delays a rebuild.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// The controller's view of the cluster, shared with the rebuild and the pools.
pub struct ClusterState {
    objects: Arc<RwLock<Cluster>>,
    /// Every watch has listed once.
    synced: AtomicBool,
    /// The first runtime with the cluster's objects has been built (what `/readyz` waits for).
    ready: Arc<AtomicBool>,
    /// Watches still to list for the first time.
    unsynced: AtomicUsize,
    verdicts: Mutex<Vec<Verdict>>,
    /// Woken when verdicts or objects change (the status writer waits on it).
    pub changed: Notify,
    metrics: Arc<Metrics>,
}

impl ClusterState {
    pub fn new(metrics: Arc<Metrics>) -> ClusterState {
        ClusterState {
            objects: Arc::default(),
            synced: AtomicBool::new(false),
            ready: Arc::new(AtomicBool::new(false)),
            unsynced: AtomicUsize::new(0),
            verdicts: Mutex::new(Vec::new()),
            changed: Notify::new(),
            metrics,
        }
    }

    /// True once a runtime was built from every kind's first list (and from then on).
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// The objects as last seen.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Cluster> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cluster> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The verdicts of the last rebuild.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Pools of Services read the controller's EndpointSlices through this.
struct Feed(Arc<RwLock<Cluster>>);

impl EndpointFeed for Feed {
    fn endpoints(&self, b: &ServiceBackend) -> Vec<SocketAddr> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .endpoints(b)
    }
}

impl ClusterSource for ClusterState {
    fn objects(&self) -> Option<Cluster> {
        self.synced
            .load(Ordering::Acquire)
            .then(|| self.read().clone())
    }

    fn feed(&self) -> Arc<dyn EndpointFeed> {
        Arc::new(Feed(self.objects.clone()))
    }

    fn verdicts(&self, verdicts: Vec<Verdict>) {
        let k = &self.metrics.kubernetes;
        k.refused.reset();
        for v in &verdicts {
            if let Err(r) = &v.accepted {
                k.refused
                    .with_label_values(&[v.object.kind, r.reason])
                    .inc();
            } else if let (Err(r), "ingress") = (&v.resolved, v.object.kind) {
                // An Ingress whose TLS is refused (its routes serve).
                k.refused
                    .with_label_values(&[v.object.kind, r.reason])
                    .inc();
            }
        }
        *self.verdicts.lock().unwrap_or_else(|p| p.into_inner()) = verdicts;
        self.changed.notify_waiters();
        self.changed.notify_one();
    }
}

/// A kind the controller watches, and where its objects live in a [`Cluster`].
trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The metric label (and what `kubectl` calls it).
    const KIND: &'static str;
    const NAMESPACED: bool;
    /// A change of this kind only moves endpoints: pools refresh, nothing is recompiled.
    const ENDPOINTS_ONLY: bool = false;
    fn store(c: &mut Cluster) -> &mut BTreeMap<Key, Arc<Self>>;
    /// The API of this kind in a namespace (or all of them).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// How the watch selects objects (all of them unless said otherwise).
    fn selection() -> watcher::Config {
        watcher::Config::default()
    }
}

macro_rules! watched {
    ($t:ty, $kind:literal, namespaced, $field:ident $(, $endpoints:literal)?) => {
        impl Watched for $t {
            const KIND: &'static str = $kind;
            const NAMESPACED: bool = true;
            $(const ENDPOINTS_ONLY: bool = $endpoints;)?
            fn store(c: &mut Cluster) -> &mut BTreeMap<Key, Arc<Self>> {
                &mut c.$field
            }
            fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
                match namespace {
                    Some(ns) => Api::namespaced(client, ns),
                    None => Api::all(client),
                }
            }
        }
    };
    ($t:ty, $kind:literal, cluster, $field:ident) => {
        impl Watched for $t {
            const KIND: &'static str = $kind;
            const NAMESPACED: bool = false;
            fn store(c: &mut Cluster) -> &mut BTreeMap<Key, Arc<Self>> {
                &mut c.$field
            }
            fn api(client: Client, _: Option<&str>) -> Api<Self> {
                Api::all(client)
            }
        }
    };
}

watched!(Ingress, "ingress", namespaced, ingresses);
watched!(IngressClass, "ingressclass", cluster, ingress_classes);
watched!(Service, "service", namespaced, services);
watched!(
    EndpointSlice,
    "endpointslice",
    namespaced,
    endpoint_slices,
    true
);
watched!(Gateway, "gateway", namespaced, gateways);
watched!(GatewayClass, "gatewayclass", cluster, gateway_classes);
watched!(HttpRoute, "httproute", namespaced, http_routes);

/// Only TLS Secrets are watched (a field selector on `type`): the others are none of stitch's
/// business, and their contents never reach its memory.
impl Watched for Secret {
    const KIND: &'static str = "secret";
    const NAMESPACED: bool = true;
    fn store(c: &mut Cluster) -> &mut BTreeMap<Key, Arc<Self>> {
        &mut c.secrets
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    fn selection() -> watcher::Config {
        watcher::Config::default().fields(&format!(
            "type={}",
            crate::config::kubernetes::TLS_SECRET_TYPE
        ))
    }
}

/// What a watch tells the controller loop.
#[derive(Debug, Clone, Copy)]
struct Changed {
    endpoints_only: bool,
}

/// The controller: watches, rebuilds, refreshes pools; with the leader election and the status
/// writer beside it.
pub struct Controller {
    pub settings: KubernetesSettings,
    pub sources: Arc<Sources>,
    pub state: Arc<ClusterState>,
    pub metrics: Arc<Metrics>,
    /// Requests to give the Lease up (SIGTERM), for the election.
    pub release_requests: Option<leader::ReleaseRequests>,
}

impl Controller {
    /// Run until `shutdown`. The client comes from `KUBECONFIG` (or `~/.kube/config`), else the
    /// pod's service account.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let client = loop {
            match Client::try_default().await {
                Ok(c) => break c,
                Err(e) => {
                    log::error!("kubernetes: cannot make a client ({e}); retrying in 5s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Changed>();
        let scopes: Vec<Option<String>> = if self.settings.namespaces.is_empty() {
            vec![None]
        } else {
            self.settings.namespaces.iter().cloned().map(Some).collect()
        };
        let mut watches = Vec::new();
        self.spawn::<Ingress>(&client, &scopes, &tx, &mut watches);
        self.spawn::<IngressClass>(&client, &scopes, &tx, &mut watches);
        self.spawn::<Service>(&client, &scopes, &tx, &mut watches);
        self.spawn::<EndpointSlice>(&client, &scopes, &tx, &mut watches);
        self.spawn::<Gateway>(&client, &scopes, &tx, &mut watches);
        self.spawn::<GatewayClass>(&client, &scopes, &tx, &mut watches);
        self.spawn::<HttpRoute>(&client, &scopes, &tx, &mut watches);
        self.spawn::<Secret>(&client, &scopes, &tx, &mut watches);
        let identity = leader::identity();
        let election = leader::Election {
            client: client.clone(),
            namespace: self
                .settings
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            name: self.settings.lease_name.clone(),
            identity: identity.clone(),
            duration: self.settings.lease_duration,
            metrics: self.metrics.clone(),
        };
        let leading = Arc::new(AtomicBool::new(false));
        let writer = status::Writer {
            client: client.clone(),
            live: self.sources.live.clone(),
            state: self.state.clone(),
            identity,
            metrics: self.metrics.clone(),
        };
        watches.push(tokio::spawn(election.run(
            leading.clone(),
            self.state.clone(),
            self.release_requests,
        )));
        watches.push(tokio::spawn(writer.run(leading)));
        loop {
            let first = tokio::select! {
                c = rx.recv() => c,
                _ = shutdown.changed() => None,
            };
            let Some(first) = first else { break };
            // Take the whole burst before acting on it (but act at least every MAX_SETTLE
            // while changes keep coming).
            let mut endpoints_only = first.endpoints_only;
            let deadline = tokio::time::Instant::now() + MAX_SETTLE;
            while let Ok(Some(c)) = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + SETTLE),
                rx.recv(),
            )
            .await
            {
                endpoints_only &= c.endpoints_only;
            }
            if !self.state.synced.load(Ordering::Acquire) {
                continue;
            }
            if endpoints_only {
                for pool in &self.sources.live.snapshot().pools {
                    if !pool.cfg.backends.is_empty() {
                        pool.refresh();
                    }
                }
                self.state.changed.notify_one();
                continue;
            }
            let sources = self.sources.clone();
            match tokio::task::spawn_blocking(move || sources.rebuild(Trigger::Cluster)).await {
                Ok((_, tasks)) => {
                    for t in tasks {
                        tokio::spawn(t);
                    }
                }
                Err(e) => log::error!("kubernetes: rebuild task failed: {e}"),
            }
            self.state.ready.store(true, Ordering::Release);
            // Endpoints may have moved under pools the rebuild kept.
            for pool in &self.sources.live.snapshot().pools {
                if !pool.cfg.backends.is_empty() {
                    pool.refresh();
                }
            }
        }
        for w in watches {
            w.abort();
        }
    }

    /// Start one watch of `K` per scope (one for a cluster-scoped kind).
    fn spawn<K: Watched>(
        &self,
        client: &Client,
        scopes: &[Option<String>],
        tx: &mpsc::UnboundedSender<Changed>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) {
        let scopes: Vec<Option<String>> = if K::NAMESPACED {
            scopes.to_vec()
        } else {
            vec![None]
        };
        for scope in scopes {
            let api = K::api(client.clone(), scope.as_deref());
            self.state.unsynced.fetch_add(1, Ordering::AcqRel);
            tasks.push(tokio::spawn(watch(
                api,
                scope,
                self.state.clone(),
                self.metrics.clone(),
                tx.clone(),
            )));
        }
    }
}

/// Keep the objects of `K` in `scope` (a namespace, or all) current in the state: a list (on
/// start and after a `410 Gone`) replaces them, watch events apply one by one.
async fn watch<K: Watched>(
    api: Api<K>,
    scope: Option<String>,
    state: Arc<ClusterState>,
    metrics: Arc<Metrics>,
    tx: mpsc::UnboundedSender<Changed>,
) {
    let m = &metrics.kubernetes;
    let mut stream = watcher(api, K::selection()).default_backoff().boxed();
    let mut listing: Option<BTreeMap<Key, Arc<K>>> = None;
    let mut listed_once = false;
    let changed = Changed {
        endpoints_only: K::ENDPOINTS_ONLY,
    };
    while let Some(event) = stream.next().await {
        let mut changed = changed;
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                m.watch_errors.with_label_values(&[K::KIND]).inc();
                let missing = matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404);
                if missing && !listed_once {
                    // The kind is not served (Gateway API CRDs not installed): nothing to route.
                    log::warn!(
                        "kubernetes: {} is not served by the API server; treating it as empty",
                        K::KIND
                    );
                    listed_once = true;
                    first_sync(&state);
                    let _ = tx.send(Changed {
                        endpoints_only: false,
                    });
                } else if missing {
                    // Still not served: said once above, retried with backoff.
                    log::debug!("kubernetes: {} is still not served", K::KIND);
                } else {
                    log::warn!("kubernetes: watching {}: {e}", K::KIND);
                }
                continue;
            }
        };
        match event {
            watcher::Event::Init => {
                m.lists.with_label_values(&[K::KIND]).inc();
                listing = Some(BTreeMap::new());
                continue;
            }
            watcher::Event::InitApply(obj) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(key_of(obj.meta()), Arc::new(obj));
                }
                continue;
            }
            watcher::Event::InitDone => {
                let listed = listing.take().unwrap_or_default();
                let mut c = state.write();
                let store = K::store(&mut c);
                match &scope {
                    Some(ns) => store.retain(|k, _| &k.0 != ns),
                    None => store.clear(),
                }
                store.extend(listed);
                m.objects
                    .with_label_values(&[K::KIND])
                    .set(store.len() as i64);
                drop(c);
                if !listed_once {
                    listed_once = true;
                    first_sync(&state);
                    // The first runtime with the cluster is built whatever kind listed last.
                    changed.endpoints_only = false;
                }
            }
            watcher::Event::Apply(obj) => {
                let mut c = state.write();
                let store = K::store(&mut c);
                store.insert(key_of(obj.meta()), Arc::new(obj));
                m.objects
                    .with_label_values(&[K::KIND])
                    .set(store.len() as i64);
            }
            watcher::Event::Delete(obj) => {
                let mut c = state.write();
                let store = K::store(&mut c);
                store.remove(&key_of(obj.meta()));
                m.objects
                    .with_label_values(&[K::KIND])
                    .set(store.len() as i64);
            }
        }
        m.last_sync.set(crate::runtime::reload::unix_now());
        let _ = tx.send(changed);
    }
}

/// One more watch has listed; the last one makes the state synced.
fn first_sync(state: &ClusterState) {
    if state.unsynced.fetch_sub(1, Ordering::AcqRel) == 1 {
        state.synced.store(true, Ordering::Release);
        state.metrics.kubernetes.synced.set(1);
        log::info!("kubernetes: every kind listed; serving the cluster's routes");
    }
}
