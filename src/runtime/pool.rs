//! Upstream pools: the servers of one `[upstream.NAME]`, resolved by stitch's own discovery
//! (names looked up again every `resolve_interval`, like Envoy's strict DNS), health-checked by
//! a task stitch runs per pool for as long as a runtime uses the pool, and each server's
//! [`HttpPeer`] built once. A pool of Kubernetes Services takes its servers from an
//! [`EndpointFeed`] instead, and is [refreshed](Pool::refresh) when the endpoints change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{ServiceBackend, Upstream, UpstreamProtocol};

/// The ready endpoints of Kubernetes Services, as the controller last saw them.
pub trait EndpointFeed: Send + Sync {
    fn endpoints(&self, backend: &ServiceBackend) -> Vec<SocketAddr>;
}

/// One server of a pool, ready to hand to Pingora.
#[derive(Clone)]
pub struct Server {
    pub peer: HttpPeer,
    /// The address as text, for spans and logs.
    pub label: Arc<str>,
}

/// A pool of upstream servers and how to reach them.
pub struct Pool {
    pub cfg: Upstream,
    lb: LoadBalancer<RoundRobin>,
    /// Each current server's prebuilt peer, sorted by address; discovery replaces it. (Kept
    /// beside the balancer rather than in `Backend::ext`: the balancer clones the chosen
    /// backend, and a non-empty extension map would be cloned and allocated per request.)
    servers: Arc<ArcSwap<Vec<(SocketAddr, Server)>>>,
    template: Arc<Template>,
}

impl Pool {
    /// Build the pool: resolve its servers now (an unresolvable name refuses the runtime) and
    /// prebuild each server's peer. A pool of Services reads its servers from `feed`.
    pub fn new(cfg: Upstream, feed: Option<&Arc<dyn EndpointFeed>>) -> Result<Pool, String> {
        let ca = match &cfg.ca {
            Some(c) => Some(Arc::new(
                crate::tls::parse_certificates(&c.pem)
                    .map_err(|e| format!("upstream {}: ca_file {:?} {e}", cfg.name, c.path))?
                    .into_boxed_slice(),
            )),
            None => None,
        };
        let template = Arc::new(Template {
            cfg: cfg.clone(),
            ca,
            group_key: settings_key(&cfg),
        });
        let servers = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let discovery: Box<dyn ServiceDiscovery + Send + Sync> = if cfg.backends.is_empty() {
            let mut known = HashMap::new();
            for s in &cfg.servers {
                let addrs = resolve_blocking(s)
                    .map_err(|e| format!("upstream {}: cannot resolve {s}: {e}", cfg.name))?;
                known.insert(s.clone(), addrs);
            }
            Box::new(Discovery {
                template: template.clone(),
                last: Mutex::new(known),
                looked_up: AtomicBool::new(false),
                servers: servers.clone(),
            })
        } else {
            let feed = feed.ok_or_else(|| {
                format!(
                    "upstream {}: a pool of Services needs [kubernetes]",
                    cfg.name
                )
            })?;
            Box::new(EndpointDiscovery {
                template: template.clone(),
                feed: feed.clone(),
                servers: servers.clone(),
            })
        };
        let mut lb = LoadBalancer::from_backends(Backends::new(discovery));
        if cfg.health_check.is_some() {
            let mut hc = TcpHealthCheck::new();
            hc.peer_template.options.connection_timeout = Some(cfg.connect_timeout);
            lb.set_health_check(hc);
        }
        // The first discovery answers from what was just resolved, without waiting.
        lb.update()
            .now_or_never()
            .ok_or_else(|| format!("upstream {}: discovery did not answer at once", cfg.name))?
            .map_err(|e| format!("upstream {}: {e}", cfg.name))?;
        Ok(Pool {
            cfg,
            lb,
            servers,
            template,
        })
    }

    /// The next healthy server, round robin: its peer, ready for Pingora, and its label.
    pub fn select(&self) -> Option<(Box<HttpPeer>, Arc<str>)> {
        let backend = self.lb.select(b"", 256)?;
        let addr = backend.addr.as_inet()?;
        let servers = self.servers.load();
        let server = match servers.binary_search_by(|(a, _)| a.cmp(addr)) {
            Ok(i) => &servers[i].1,
            // Discovery publishes the table just before the balancer takes the new set, so a
            // server it just removed can still be chosen once: build its peer.
            Err(_) => return Some(self.template.server(*addr).into_parts()),
        };
        Some((Box::new(server.peer.clone()), server.label.clone()))
    }

    /// Take the servers from the discovery again now (a pool of Services after its endpoints
    /// changed); a no-op when the set is the same.
    pub fn refresh(&self) {
        match self.lb.update().now_or_never() {
            Some(Ok(())) => {}
            Some(Err(e)) => log::warn!("upstream {}: {e}", self.cfg.name),
            None => log::warn!(
                "upstream {}: discovery did not answer at once",
                self.cfg.name
            ),
        }
    }

    /// The addresses the pool currently balances over.
    pub fn addresses(&self) -> Vec<String> {
        self.lb
            .backends()
            .get_backend()
            .iter()
            .map(|b| b.addr.to_string())
            .collect()
    }

    /// Keep the pool current while any runtime uses it: health checks every
    /// `health_check` interval, names resolved again every `resolve_interval`. Ends once the
    /// pool is dropped.
    pub fn maintain(pool: &Arc<Pool>) -> impl std::future::Future<Output = ()> + Send + 'static {
        let weak: Weak<Pool> = Arc::downgrade(pool);
        let health = pool.cfg.health_check;
        let resolve = pool.cfg.resolve_interval;
        let needs_resolve = pool
            .cfg
            .servers
            .iter()
            .any(|s| s.parse::<SocketAddr>().is_err());
        async move {
            let mut health_tick = health.map(tokio::time::interval);
            let mut resolve_tick =
                tokio::time::interval_at(tokio::time::Instant::now() + resolve, resolve);
            // A pool no longer used is noticed within this long even when it has no timers due.
            let mut alive_tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = async { health_tick.as_mut().unwrap().tick().await }, if health_tick.is_some() => {
                        let Some(pool) = weak.upgrade() else { return };
                        pool.lb.backends().run_health_check(true).await;
                    }
                    _ = resolve_tick.tick(), if needs_resolve => {
                        let Some(pool) = weak.upgrade() else { return };
                        if let Err(e) = pool.lb.update().await {
                            log::warn!("upstream {}: re-resolving servers failed: {e}", pool.cfg.name);
                        }
                    }
                    _ = alive_tick.tick() => {
                        if weak.strong_count() == 0 { return; }
                    }
                }
            }
        }
    }
}

impl Server {
    fn into_parts(self) -> (Box<HttpPeer>, Arc<str>) {
        (Box::new(self.peer), self.label)
    }
}

/// What every server's peer is built from.
struct Template {
    cfg: Upstream,
    ca: Option<Arc<Box<[X509]>>>,
    group_key: u64,
}

impl Template {
    fn server(&self, addr: SocketAddr) -> Server {
        let c = &self.cfg;
        let mut peer = HttpPeer::new(addr, c.tls, c.sni.clone());
        peer.options.connection_timeout = Some(c.connect_timeout);
        peer.options.read_timeout = Some(c.read_timeout);
        peer.options.write_timeout = Some(c.write_timeout);
        peer.options.verify_cert = c.verify_cert;
        peer.options.verify_hostname = c.verify_cert;
        peer.options.ca = self.ca.clone();
        match c.protocol {
            UpstreamProtocol::Http1 => peer.options.set_http_version(1, 1),
            // ALPN offers h2 then http/1.1; the server chooses.
            UpstreamProtocol::H2 => peer.options.set_http_version(2, 1),
            // No negotiation in cleartext: HTTP/2 with prior knowledge.
            UpstreamProtocol::H2c => peer.options.set_http_version(2, 2),
        }
        peer.options.max_h2_streams = c.max_h2_streams;
        // Pingora's connection pool key leaves out the CA: connections made under other TLS
        // settings must not be reused after a reload.
        peer.group_key = self.group_key;
        Server {
            peer,
            label: Arc::from(addr.to_string()),
        }
    }
}

/// A hash of the settings a kept upstream connection was made under.
fn settings_key(c: &Upstream) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.tls.hash(&mut h);
    c.sni.hash(&mut h);
    c.verify_cert.hash(&mut h);
    c.ca.as_ref().map(|ca| &ca.pem[..]).hash(&mut h);
    c.protocol.hash(&mut h);
    h.finish()
}

/// stitch's service discovery: each configured `host:port` resolved, the last good answer kept
/// when a lookup fails.
struct Discovery {
    template: Arc<Template>,
    last: Mutex<HashMap<String, Vec<SocketAddr>>>,
    /// False until the first discovery, which uses the addresses resolved at build time.
    looked_up: AtomicBool,
    /// Where the prebuilt peers of the discovered servers are published for `Pool::select`.
    servers: Arc<ArcSwap<Vec<(SocketAddr, Server)>>>,
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut fresh = Vec::new();
        let look_up = self.looked_up.swap(true, Ordering::Relaxed);
        for s in &self.template.cfg.servers {
            if !look_up || s.parse::<SocketAddr>().is_ok() {
                continue;
            }
            match tokio::net::lookup_host(s.as_str()).await {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if !addrs.is_empty() {
                        fresh.push((s.clone(), addrs));
                    }
                }
                Err(e) => log::warn!(
                    "upstream {}: cannot resolve {s} ({e}); keeping its last addresses",
                    self.template.cfg.name
                ),
            }
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        for (s, addrs) in fresh {
            last.insert(s, addrs);
        }
        let addrs: BTreeSet<SocketAddr> = last.values().flatten().copied().collect();
        drop(last);
        let weighted: Vec<(SocketAddr, usize)> = addrs.into_iter().map(|a| (a, 1)).collect();
        Ok((
            publish(&self.servers, &self.template, &weighted),
            HashMap::new(),
        ))
    }
}

/// Publish the prebuilt peers of `weighted` (sorted by address, each once) for
/// [`Pool::select`], keeping the peers of servers already known, and give the balancer its set.
fn publish(
    servers: &ArcSwap<Vec<(SocketAddr, Server)>>,
    template: &Template,
    weighted: &[(SocketAddr, usize)],
) -> BTreeSet<Backend> {
    let current = servers.load();
    let next: Vec<(SocketAddr, Server)> = weighted
        .iter()
        .map(|(a, _)| match current.binary_search_by(|(c, _)| c.cmp(a)) {
            Ok(i) => current[i].clone(),
            Err(_) => (*a, template.server(*a)),
        })
        .collect();
    servers.store(Arc::new(next));
    weighted
        .iter()
        .map(|&(a, weight)| Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(a),
            weight,
            ext: Default::default(),
        })
        .collect()
}

/// The servers of a pool of Kubernetes Services: each Service's ready endpoints, weighted so
/// that each Service gets its `weight`'s share of the requests whatever its endpoint count.
struct EndpointDiscovery {
    template: Arc<Template>,
    feed: Arc<dyn EndpointFeed>,
    /// Where the prebuilt peers of the discovered servers are published for `Pool::select`.
    servers: Arc<ArcSwap<Vec<(SocketAddr, Server)>>>,
}

#[async_trait]
impl ServiceDiscovery for EndpointDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let found: Vec<(u32, Vec<SocketAddr>)> = self
            .template
            .cfg
            .backends
            .iter()
            .map(|b| (b.weight, self.feed.endpoints(b)))
            .filter(|(w, e)| *w > 0 && !e.is_empty())
            .collect();
        let counts: Vec<(u32, usize)> = found.iter().map(|(w, e)| (*w, e.len())).collect();
        // An endpoint behind two of the Services gets both shares.
        let mut weights: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for (weight, addrs) in &found {
            let w = endpoint_weight(*weight, addrs.len(), &counts);
            for a in addrs {
                *weights.entry(*a).or_default() += w;
            }
        }
        let weighted: Vec<(SocketAddr, usize)> = weights.into_iter().collect();
        Ok((
            publish(&self.servers, &self.template, &weighted),
            HashMap::new(),
        ))
    }
}

/// Each of a Service's `n` endpoints gets `weight * L / n`, with `L` the least common multiple
/// of every Service's endpoint count, so the Services' shares are as their weights say. Round
/// robin repeats a backend as often as its weight, so the weights stay small: past 10,000 in
/// all they are the Service weights alone.
fn endpoint_weight(weight: u32, n: usize, all: &[(u32, usize)]) -> usize {
    if all.len() <= 1 {
        return 1;
    }
    let lcm = all
        .iter()
        .fold(1usize, |l, &(_, c)| (l / gcd(l, c)).saturating_mul(c));
    let total = all.iter().fold(0usize, |t, &(w, _)| {
        t.saturating_add((w as usize).saturating_mul(lcm))
    });
    if total > 10_000 {
        return weight as usize;
    }
    weight as usize * lcm / n
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn resolve_blocking(s: &str) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = s.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::other("no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Upstream;

    fn upstream(servers: &[&str]) -> Upstream {
        Upstream {
            name: "u".into(),
            servers: servers.iter().map(|s| s.to_string()).collect(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            tls: false,
            sni: String::new(),
            verify_cert: true,
            ca: None,
            health_check: None,
            resolve_interval: Duration::from_secs(30),
            backends: Vec::new(),
            protocol: UpstreamProtocol::Http1,
            max_h2_streams: 100,
            preserve_header_case: false,
        }
    }

    #[test]
    fn names_resolve_when_built_and_ips_need_no_lookup() {
        let pool = Pool::new(upstream(&["localhost:7001", "127.0.0.2:7002"]), None).unwrap();
        let addrs = pool.addresses();
        assert!(addrs.contains(&"127.0.0.2:7002".to_string()), "{addrs:?}");
        assert!(addrs.iter().any(|a| a.ends_with(":7001")), "{addrs:?}");
        let (peer, label) = pool.select().unwrap();
        assert!(addrs.contains(&label.to_string()), "{label}");
        assert_eq!(
            peer.group_key,
            settings_key(&pool.cfg),
            "peers carry the settings key"
        );
        assert!(Pool::new(upstream(&["no-such-host.invalid:80"]), None).is_err());
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_addresses() {
        let cfg = upstream(&["no-such-host.invalid:80"]);
        let last: SocketAddr = "10.1.2.3:80".parse().unwrap();
        let discovery = Discovery {
            template: Arc::new(Template {
                group_key: settings_key(&cfg),
                cfg,
                ca: None,
            }),
            last: Mutex::new(HashMap::from([(
                "no-such-host.invalid:80".to_string(),
                vec![last],
            )])),
            looked_up: AtomicBool::new(true),
            servers: Arc::new(ArcSwap::from_pointee(Vec::new())),
        };
        let (backends, _) = discovery.discover().await.unwrap();
        let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(addrs, vec!["10.1.2.3:80".to_string()]);
    }

    #[test]
    fn tls_settings_change_the_group_key() {
        let a = upstream(&["127.0.0.1:1"]);
        let mut b = a.clone();
        b.sni = "other".into();
        assert_ne!(settings_key(&a), settings_key(&b));
        let mut h2c = a.clone();
        h2c.protocol = UpstreamProtocol::H2c;
        assert_ne!(
            settings_key(&a),
            settings_key(&h2c),
            "a connection made for one protocol is not reused for another"
        );
        let mut c = a.clone();
        c.read_timeout = Duration::from_secs(9);
        assert_eq!(
            settings_key(&a),
            settings_key(&c),
            "timeouts do not split the pool"
        );
    }

    #[test]
    fn services_get_their_weights_share_whatever_their_endpoint_counts() {
        // (weight, endpoints) of each Service -> the weight of each of its endpoints.
        type Row = (&'static [(u32, usize)], &'static [usize], &'static str);
        #[rustfmt::skip]
        let rows: &[Row] = &[
            (&[(1, 3)],          &[1],      "one Service: plain round robin"),
            (&[(70, 1), (30, 1)], &[70, 30], "one endpoint each: the weights"),
            (&[(1, 2), (1, 3)],  &[3, 2],   "equal weights, 2 and 3 endpoints: 6 each"),
            (&[(3, 4), (1, 2)],  &[3, 2],   "3:1 over 4 and 2 endpoints: 12 and 4"),
            (&[(5000, 7), (5000, 3)], &[5000, 5000], "too many repeats: Service weights"),
        ];
        for (all, want, why) in rows {
            let got: Vec<usize> = all
                .iter()
                .map(|&(w, n)| endpoint_weight(w, n, all))
                .collect();
            assert_eq!(&got, want, "{why}");
        }
    }
}
