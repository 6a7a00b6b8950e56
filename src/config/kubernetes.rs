//! The Kubernetes source: the cluster's Ingresses and HTTPRoutes (with the IngressClasses,
//! Gateways, GatewayClasses and Services they refer to) become routes, pools and CORS policies
//! merged into the file's [`Description`], each located at its object (`ingress/ns/name`).
//!
//! Pure code over the objects as the API server serves them: the controller (`crate::kubernetes`)
//! keeps a [`Cluster`] current and calls [`merge`]; nothing here talks to the API server.
//!
//! An object that cannot be served (an unknown annotation value, a path stitch cannot match, a
//! route another object already serves) is refused alone, with a [`Refusal`] for its status;
//! the others keep serving.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesFiltersCors,
    HttpRouteRulesFiltersType, HttpRouteRulesMatchesPathType,
};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::description::{CorsFile, Description, RouteFile, UpstreamFile};
use super::{
    At, Certificate, ConfigError, Location, ObjectRef, PemFile, ServiceBackend, ServicePort,
};
use crate::routing::HostMatch;

/// Annotation naming a `[cors.NAME]` policy of the TOML config.
pub const CORS_ANNOTATION: &str = "stitch.dev/cors-policy";
/// Annotation naming a `[propagation.NAME]` profile of the TOML config.
pub const PROPAGATION_ANNOTATION: &str = "stitch.dev/propagation-profile";
/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Pools made from Services are named `k8s:...`: a TOML upstream name cannot hold a ':'.
pub const POOL_PREFIX: &str = "k8s:";

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// The objects the controller watches, as last seen.
#[derive(Default, Clone)]
pub struct Cluster {
    pub ingresses: BTreeMap<Key, Arc<Ingress>>,
    pub ingress_classes: BTreeMap<Key, Arc<IngressClass>>,
    pub services: BTreeMap<Key, Arc<Service>>,
    pub endpoint_slices: BTreeMap<Key, Arc<EndpointSlice>>,
    pub gateways: BTreeMap<Key, Arc<Gateway>>,
    pub gateway_classes: BTreeMap<Key, Arc<GatewayClass>>,
    pub http_routes: BTreeMap<Key, Arc<HttpRoute>>,
    /// TLS Secrets (`type: kubernetes.io/tls`), for the `spec.tls` of Ingresses.
    pub secrets: BTreeMap<Key, Arc<Secret>>,
}

/// The key of an object's metadata.
pub fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Why an object is not served (or a reference not resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// CamelCase, as Gateway API condition reasons are (also the metric's `reason` label).
    pub reason: &'static str,
    pub message: String,
}

fn refusal(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

/// What became of one object stitch is responsible for.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub object: ObjectRef,
    pub generation: Option<i64>,
    /// Served, or refused with the reason.
    pub accepted: Result<(), Refusal>,
    /// HTTPRoute: whether every backend reference resolved (`ResolvedRefs`).
    pub resolved: Result<(), Refusal>,
    /// HTTPRoute: the parent references that name stitch's Gateways.
    pub parents: Vec<HttpRouteParentRefs>,
}

/// What one object adds to the description.
#[derive(Debug)]
struct Contribution {
    object: ObjectRef,
    routes: Vec<RouteFile>,
    /// Pools by name (several objects may share one).
    pools: BTreeMap<String, Vec<ServiceBackend>>,
    cors: Vec<(String, CorsFile)>,
}

/// The names the TOML config declares, which annotations may refer to.
struct Names {
    cors: BTreeSet<String>,
    profiles: BTreeSet<String>,
}

/// Merge the cluster's objects into `desc` (the file's description, `[kubernetes]` present),
/// validate, and refuse each object whose contribution does not validate, until what is left
/// validates. Errors located in the file are returned as they are: the file is wrong.
/// Returns the validated config, a verdict per object stitch is responsible for, and the
/// canonical text of what the cluster contributed (for the content hash).
pub fn merge(
    mut desc: Description,
    cluster: &Cluster,
) -> Result<(super::Config, Vec<Verdict>, String), Vec<ConfigError>> {
    let Some(settings) = desc.kubernetes.as_ref().map(|k| k.get_ref()) else {
        return super::validate(&desc).map(|c| (c, Vec::new(), String::new()));
    };
    let ingress_class = settings.ingress_class.get_ref().clone();
    let controller = settings.controller_name.get_ref().clone();
    let names = Names {
        cors: desc.cors.keys().cloned().collect(),
        profiles: desc
            .propagation
            .keys()
            .cloned()
            .chain([super::Profile::DEFAULT.to_string()])
            .collect(),
    };
    let mut verdicts = Vec::new();
    let mut contributions = Vec::new();
    for (key, ing) in &cluster.ingresses {
        if !ingress_is_ours(ing, cluster, &ingress_class) {
            continue;
        }
        let object = object("ingress", key);
        let (accepted, c) = match ingress(&object, ing, &names) {
            Ok(c) => (Ok(()), Some(c)),
            Err(r) => (Err(r), None),
        };
        verdicts.push(Verdict {
            object,
            generation: ing.metadata.generation,
            accepted,
            resolved: Ok(()),
            parents: Vec::new(),
        });
        contributions.extend(c);
    }
    for (key, route) in &cluster.http_routes {
        let parents = our_parents(route, cluster, &controller);
        if parents.is_empty() {
            continue;
        }
        let object = object("httproute", key);
        let (accepted, resolved, c) = http_route(&object, route, cluster, &names);
        verdicts.push(Verdict {
            object,
            generation: route.metadata.generation,
            accepted: accepted.clone(),
            resolved,
            parents,
        });
        if accepted.is_ok() {
            contributions.extend(c);
        }
    }
    let file_routes = desc.route.len();
    let file_cors: BTreeSet<String> = desc.cors.keys().cloned().collect();
    loop {
        desc.route.truncate(file_routes);
        desc.cors.retain(|k, _| file_cors.contains(k));
        desc.upstream.retain(|k, _| !k.starts_with(POOL_PREFIX));
        for c in &contributions {
            let at = Location::Object(c.object.clone());
            desc.route.extend(
                c.routes
                    .iter()
                    .map(|r| At::new(clone_route(r, &at), at.clone())),
            );
            for (name, backends) in &c.pools {
                desc.upstream.entry(name.clone()).or_insert_with(|| {
                    At::new(UpstreamFile::services(backends.clone()), at.clone())
                });
            }
            for (name, cors) in &c.cors {
                desc.cors
                    .insert(name.clone(), At::new(clone_cors(cors, &at), at.clone()));
            }
        }
        let errors = match super::validate(&desc) {
            Ok(mut config) => {
                let digest = format!("{contributions:?}");
                let served: BTreeSet<&ObjectRef> =
                    contributions.iter().map(|c| &c.object).collect();
                ingress_certificates(&mut config, cluster, &served, &mut verdicts, unix_now());
                return Ok((config, verdicts, digest));
            }
            Err(errors) => errors,
        };
        let mut refused: BTreeMap<ObjectRef, Vec<String>> = BTreeMap::new();
        for e in &errors {
            match &e.at {
                Location::Object(o) => refused
                    .entry(o.clone())
                    .or_default()
                    .push(format!("{}: {}", e.key, e.message)),
                // The file is wrong: report its own problems (the objects' are noise then).
                _ => {
                    let own = errors.into_iter();
                    return Err(own
                        .filter(|e| !matches!(e.at, Location::Object(_)))
                        .collect());
                }
            }
        }
        contributions.retain(|c| !refused.contains_key(&c.object));
        for v in &mut verdicts {
            if let Some(why) = refused.get(&v.object) {
                v.accepted = Err(refusal("Invalid", why.join("; ")));
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The Secret type `spec.tls` Secrets must have.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The `spec.tls` of the served Ingresses: each entry's Secret, checked like a certificate file
/// of the config (parses, key matches, valid now, covers its hosts), becomes a certificate of
/// every TLS listener, chosen by SNI for the entry's `hosts` (the certificate's DNS names when
/// it gives none). The PEM stays in memory. The file's certificates keep their hosts: a host
/// they (or another Secret) already serve is a conflict. An entry that cannot be served is left
/// out and reported on the Ingress's `resolved` verdict (a Warning Event); its routes keep
/// serving, and so does everything else.
fn ingress_certificates(
    config: &mut super::Config,
    cluster: &Cluster,
    served: &BTreeSet<&ObjectRef>,
    verdicts: &mut [Verdict],
    now: i64,
) {
    // host -> who serves it: "" for the file, else the Secret.
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    for c in config.server.certificates() {
        for h in &c.hosts {
            claimed.insert(h.clone(), String::new());
        }
    }
    let has_tls_listener = config.server.listeners.iter().any(|l| l.tls.is_some());
    let mut added: Vec<Certificate> = Vec::new();
    for v in verdicts.iter_mut() {
        if v.object.kind != "ingress" || !served.contains(&v.object) {
            continue;
        }
        let key = (v.object.namespace.clone(), v.object.name.clone());
        let Some(ing) = cluster.ingresses.get(&key) else {
            continue;
        };
        let tls = ing
            .spec
            .as_ref()
            .and_then(|s| s.tls.clone())
            .unwrap_or_default();
        let mut problems: Vec<Refusal> = Vec::new();
        for (i, t) in tls.iter().enumerate() {
            if !has_tls_listener {
                problems.push(refusal(
                    "NoTLSListener",
                    format!("spec.tls[{i}]: stitch has no TLS listener to serve it on"),
                ));
                break;
            }
            match tls_entry(&key.0, t, cluster, now, &claimed) {
                Ok(cert) => {
                    let source = cert.cert.path.clone();
                    let fresh = cert.hosts.iter().any(|h| !claimed.contains_key(h));
                    for h in &cert.hosts {
                        claimed.entry(h.clone()).or_insert_with(|| source.clone());
                    }
                    if fresh {
                        added.push(cert);
                    }
                }
                Err(r) => problems.push(Refusal {
                    reason: r.reason,
                    message: format!("spec.tls[{i}]: {}", r.message),
                }),
            }
        }
        if let Some(first) = problems.first() {
            v.resolved = Err(refusal(
                first.reason,
                problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
    }
    if added.is_empty() {
        return;
    }
    for l in &mut config.server.listeners {
        if let Some(t) = &mut l.tls {
            t.certificates.extend(added.iter().cloned());
        }
    }
}

/// One `spec.tls` entry as a certificate, or why it cannot be served.
fn tls_entry(
    ns: &str,
    t: &k8s_openapi::api::networking::v1::IngressTLS,
    cluster: &Cluster,
    now: i64,
    claimed: &BTreeMap<String, String>,
) -> Result<Certificate, Refusal> {
    let Some(name) = &t.secret_name else {
        return Err(refusal(
            "InvalidTLSSecret",
            "gives no secretName (stitch has no default certificate to use for it)",
        ));
    };
    let source = format!("secret/{ns}/{name}");
    let Some(secret) = cluster.secrets.get(&(ns.to_string(), name.clone())) else {
        return Err(refusal(
            "TLSSecretNotFound",
            format!("{source} does not exist (or is not of type {TLS_SECRET_TYPE})"),
        ));
    };
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(refusal(
            "InvalidTLSSecret",
            format!("{source} is not of type {TLS_SECRET_TYPE}"),
        ));
    }
    let data = secret.data.clone().unwrap_or_default();
    let field = |k: &str| -> Result<Arc<[u8]>, Refusal> {
        data.get(k)
            .filter(|b| !b.0.is_empty())
            .map(|b| Arc::from(b.0.as_slice()))
            .ok_or_else(|| refusal("InvalidTLSSecret", format!("{source} has no `{k}`")))
    };
    let (cert, key) = (field("tls.crt")?, field("tls.key")?);
    let bad = |m: String| refusal("InvalidTLSSecret", format!("{source}: {m}"));
    let info = crate::tls::check_pair(&cert, &key).map_err(|e| match e {
        crate::tls::PairError::Cert(why) => bad(format!("tls.crt {why}")),
        crate::tls::PairError::Key(why) => bad(format!("tls.key {why}")),
        crate::tls::PairError::Mismatch => bad("tls.key is not the key of tls.crt".into()),
    })?;
    if info.not_after <= now {
        return Err(bad(format!("tls.crt expired on {}", info.not_after_text)));
    }
    if info.not_before > now {
        return Err(bad(format!(
            "tls.crt is not valid before {}",
            info.not_before_text
        )));
    }
    let hosts: Vec<String> = match t.hosts.as_deref() {
        Some(h) if !h.is_empty() => h.iter().map(|h| h.to_ascii_lowercase()).collect(),
        _ => info.dns_names.clone(),
    };
    if hosts.is_empty() {
        return Err(bad(
            "tls.crt names no DNS host and the entry gives no hosts".into(),
        ));
    }
    for h in &hosts {
        if !crate::tls::valid_host(h) {
            return Err(refusal(
                "UnsupportedValue",
                format!("`{h}` is not a host name or a `*.` wildcard"),
            ));
        }
        if !crate::tls::covers(&info.dns_names, h) {
            return Err(bad(format!(
                "tls.crt does not cover `{h}` ({})",
                info.dns_names.join(", ")
            )));
        }
        match claimed.get(h) {
            Some(by) if by.is_empty() => {
                return Err(refusal(
                    "CertificateConflict",
                    format!("`{h}` is already served by a certificate of the config file"),
                ))
            }
            Some(by) if *by != source => {
                return Err(refusal(
                    "CertificateConflict",
                    format!("`{h}` is already served by {by}"),
                ))
            }
            _ => {}
        }
    }
    Ok(Certificate {
        cert: PemFile {
            path: source.clone(),
            pem: cert,
        },
        key: PemFile {
            path: format!("{source} tls.key"),
            pem: key,
        },
        hosts,
        not_after: info.not_after,
    })
}

fn object(kind: &'static str, key: &Key) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: key.0.clone(),
        name: key.1.clone(),
    }
}

/// A copy of `r` with every value located at its object.
fn clone_route(r: &RouteFile, at: &Location) -> RouteFile {
    let here = |v: &At<String>| At::new(v.get_ref().clone(), at.clone());
    RouteFile {
        name: r.name.as_ref().map(here),
        host: r.host.as_ref().map(here),
        path: here(&r.path),
        upstream: here(&r.upstream),
        cors: r.cors.as_ref().map(here),
        propagation: r.propagation.as_ref().map(here),
        exact: r.exact,
        forwarded_headers: r.forwarded_headers.clone(),
        request_id: r.request_id,
        max_body_bytes: r
            .max_body_bytes
            .as_ref()
            .map(|v| At::new(*v.get_ref(), at.clone())),
    }
}

/// A copy of `c` with every value located at its object.
fn clone_cors(c: &CorsFile, at: &Location) -> CorsFile {
    CorsFile {
        allowed_origins: At::new(c.allowed_origins.get_ref().clone(), at.clone()),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        allow_credentials: c.allow_credentials,
        max_age: c
            .max_age
            .as_ref()
            .map(|m| At::new(*m.get_ref(), at.clone())),
        preflight: c
            .preflight
            .as_ref()
            .map(|p| At::new(p.get_ref().clone(), at.clone())),
    }
}

/// Is this Ingress stitch's: its class, the old class annotation, or no class while stitch's
/// IngressClass is the cluster's default?
fn ingress_is_ours(ing: &Ingress, cluster: &Cluster, class: &str) -> bool {
    let named = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotated = annotation(&ing.metadata, "kubernetes.io/ingress.class");
    match (named, annotated) {
        (Some(n), _) => n == class,
        (None, Some(a)) => a == class,
        (None, None) => cluster
            .ingress_classes
            .get(&(String::new(), class.to_string()))
            .and_then(|c| annotation(&c.metadata, "ingressclass.kubernetes.io/is-default-class"))
            .is_some_and(|v| v == "true"),
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, name: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(name).map(String::as_str)
}

/// The `stitch.dev/*` annotations, strictly: only the known ones, naming what the TOML declares.
fn annotations(
    meta: &ObjectMeta,
    names: &Names,
) -> Result<(Option<String>, Option<String>), Refusal> {
    let mut cors = None;
    let mut profile = None;
    for (k, v) in meta.annotations.iter().flatten() {
        if k == CORS_ANNOTATION {
            if !names.cors.contains(v) {
                return Err(refusal(
                    "UnknownCorsPolicy",
                    format!("annotation {k}: no CORS policy named \"{v}\" in the config (define [cors.{v}])"),
                ));
            }
            cors = Some(v.clone());
        } else if k == PROPAGATION_ANNOTATION {
            if !names.profiles.contains(v) {
                return Err(refusal(
                    "UnknownPropagationProfile",
                    format!("annotation {k}: no propagation profile named \"{v}\" in the config (define [propagation.{v}])"),
                ));
            }
            profile = Some(v.clone());
        } else if k.starts_with("stitch.dev/") {
            return Err(refusal(
                "UnknownAnnotation",
                format!("annotation {k}: stitch knows only {CORS_ANNOTATION} and {PROPAGATION_ANNOTATION}"),
            ));
        }
    }
    Ok((cors, profile))
}

fn pool_name(backends: &[ServiceBackend]) -> String {
    let parts: Vec<String> = backends
        .iter()
        .map(|b| {
            let w = if backends.len() > 1 {
                format!("*{}", b.weight)
            } else {
                String::new()
            };
            format!("{}/{}/{}{w}", b.namespace, b.service, b.port)
        })
        .collect();
    format!("{POOL_PREFIX}{}", parts.join("+"))
}

/// An Ingress's rules and default backend as routes.
fn ingress(object: &ObjectRef, ing: &Ingress, names: &Names) -> Result<Contribution, Refusal> {
    let (cors, profile) = annotations(&ing.metadata, names)?;
    let ns = &object.namespace;
    let mut c = Contribution {
        object: object.clone(),
        routes: Vec::new(),
        pools: BTreeMap::new(),
        cors: Vec::new(),
    };
    let spec = ing.spec.clone().unwrap_or_default();
    let add = |c: &mut Contribution,
               name: String,
               host: Option<&String>,
               path: String,
               exact: bool,
               backend: &IngressBackend|
     -> Result<(), Refusal> {
        let b = ingress_backend(ns, backend)?;
        let pool = pool_name(std::slice::from_ref(&b));
        c.pools.insert(pool.clone(), vec![b]);
        let at = |v: String| At::new_default(v);
        c.routes.push(RouteFile {
            name: Some(at(name)),
            host: host.cloned().map(at),
            path: at(path),
            upstream: at(pool),
            cors: cors.clone().map(at),
            propagation: profile.clone().map(at),
            exact,
            forwarded_headers: None,
            request_id: true,
            max_body_bytes: None,
        });
        Ok(())
    };
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        if let Some(h) = &rule.host {
            HostMatch::parse(h)
                .map_err(|m| refusal("UnsupportedValue", format!("spec.rules[{i}].host: {m}")))?;
        }
        for (j, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let path = p.path.clone().unwrap_or_else(|| "/".into());
            let exact = match p.path_type.as_str() {
                "Exact" => true,
                // ImplementationSpecific: stitch's own matching, which is Prefix's.
                "Prefix" | "ImplementationSpecific" => false,
                other => {
                    return Err(refusal(
                        "UnsupportedValue",
                        format!("spec.rules[{i}].http.paths[{j}].pathType: `{other}` is not Exact, Prefix or ImplementationSpecific"),
                    ))
                }
            };
            if !path.starts_with('/') {
                return Err(refusal(
                    "UnsupportedValue",
                    format!(
                        "spec.rules[{i}].http.paths[{j}].path: `{path}` does not start with '/'"
                    ),
                ));
            }
            // Prefix matching is per path element, and a trailing '/' is ignored (`/foo/`
            // matches `/foo`).
            let path = if exact || path == "/" {
                path
            } else {
                path.trim_end_matches('/').to_string()
            };
            add(
                &mut c,
                format!("{object}/{i}/{j}"),
                rule.host.as_ref(),
                path,
                exact,
                &p.backend,
            )?;
        }
    }
    if let Some(b) = &spec.default_backend {
        add(
            &mut c,
            format!("{object}/default"),
            None,
            "/".into(),
            false,
            b,
        )?;
    }
    Ok(c)
}

fn ingress_backend(ns: &str, b: &IngressBackend) -> Result<ServiceBackend, Refusal> {
    let Some(s) = &b.service else {
        return Err(refusal(
            "UnsupportedValue",
            "a resource backend: stitch sends only to Services",
        ));
    };
    let port = match s.port.as_ref().map(|p| (&p.number, &p.name)) {
        Some((Some(n), _)) => ServicePort::Number(*n),
        Some((None, Some(name))) => ServicePort::Name(name.clone()),
        _ => {
            return Err(refusal(
                "UnsupportedValue",
                format!("the backend Service {} names no port", s.name),
            ))
        }
    };
    Ok(ServiceBackend {
        namespace: ns.to_string(),
        service: s.name.clone(),
        port,
        weight: 1,
    })
}

/// The parent references of an HTTPRoute that name a Gateway of stitch's GatewayClass.
fn our_parents(route: &HttpRoute, cluster: &Cluster, controller: &str) -> Vec<HttpRouteParentRefs> {
    let ns = route.metadata.namespace.clone().unwrap_or_default();
    route
        .spec
        .parent_refs
        .iter()
        .flatten()
        .filter(|p| {
            let group_ok = p
                .group
                .as_deref()
                .is_none_or(|g| g == "gateway.networking.k8s.io");
            let kind_ok = p.kind.as_deref().is_none_or(|k| k == "Gateway");
            let gw_ns = p.namespace.clone().unwrap_or_else(|| ns.clone());
            group_ok
                && kind_ok
                && cluster
                    .gateways
                    .get(&(gw_ns, p.name.clone()))
                    .and_then(|gw| {
                        cluster
                            .gateway_classes
                            .get(&(String::new(), gw.spec.gateway_class_name.clone()))
                    })
                    .is_some_and(|class| class.spec.controller_name == controller)
        })
        .cloned()
        .collect()
}

/// An HTTPRoute's rules as routes: `(Accepted, ResolvedRefs, contribution)`.
fn http_route(
    object: &ObjectRef,
    route: &HttpRoute,
    cluster: &Cluster,
    names: &Names,
) -> (
    Result<(), Refusal>,
    Result<(), Refusal>,
    Option<Contribution>,
) {
    let (cors_annotation, profile) = match annotations(&route.metadata, names) {
        Ok(x) => x,
        Err(r) => return (Err(r), Ok(()), None),
    };
    let mut c = Contribution {
        object: object.clone(),
        routes: Vec::new(),
        pools: BTreeMap::new(),
        cors: Vec::new(),
    };
    let mut resolved = Ok(());
    let hosts: Vec<Option<String>> = match &route.spec.hostnames {
        Some(h) if !h.is_empty() => h.iter().cloned().map(Some).collect(),
        _ => vec![None],
    };
    for h in hosts.iter().flatten() {
        if let Err(m) = HostMatch::parse(h) {
            return (
                Err(refusal("UnsupportedValue", format!("spec.hostnames: {m}"))),
                Ok(()),
                None,
            );
        }
    }
    for (i, rule) in route.spec.rules.iter().flatten().enumerate() {
        let cors = match rule_cors(rule, i, object, cors_annotation.as_ref()) {
            Ok(Some((name, file))) => {
                c.cors.push((name.clone(), file));
                Some(name)
            }
            Ok(None) => cors_annotation.clone(),
            Err(r) => return (Err(r), Ok(()), None),
        };
        let (backends, unresolved) = rule_backends(rule, i, &object.namespace, cluster);
        if let (Some(r), Ok(())) = (unresolved, &resolved) {
            resolved = Err(r);
        }
        let pool = pool_name(&backends);
        c.pools.insert(pool.clone(), backends);
        let default_match = [Default::default()];
        let matches = match &rule.matches {
            Some(m) if !m.is_empty() => m.as_slice(),
            _ => &default_match[..],
        };
        for (j, m) in matches.iter().enumerate() {
            if m.headers.as_ref().is_some_and(|h| !h.is_empty())
                || m.query_params.as_ref().is_some_and(|q| !q.is_empty())
                || m.method.is_some()
            {
                return (
                    Err(refusal(
                        "UnsupportedValue",
                        format!("spec.rules[{i}].matches[{j}]: stitch matches on host and path only (no headers, query parameters or method)"),
                    )),
                    resolved,
                    None,
                );
            }
            let (kind, value) = m
                .path
                .as_ref()
                .map(|p| (p.r#type.clone(), p.value.clone()))
                .unwrap_or_default();
            let value = value.unwrap_or_else(|| "/".into());
            let exact = match kind {
                Some(HttpRouteRulesMatchesPathType::Exact) => true,
                None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => false,
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                    return (
                        Err(refusal(
                            "UnsupportedValue",
                            format!(
                            "spec.rules[{i}].matches[{j}].path: RegularExpression is not supported"
                        ),
                        )),
                        resolved,
                        None,
                    )
                }
            };
            let path = if exact || value == "/" {
                value
            } else {
                value.trim_end_matches('/').to_string()
            };
            for (k, host) in hosts.iter().enumerate() {
                let at = |v: String| At::new_default(v);
                c.routes.push(RouteFile {
                    name: Some(at(format!("{object}/{i}/{j}/{k}"))),
                    host: host.clone().map(at),
                    path: at(path.clone()),
                    upstream: at(pool.clone()),
                    cors: cors.clone().map(at),
                    propagation: profile.clone().map(at),
                    exact,
                    forwarded_headers: None,
                    request_id: true,
                    max_body_bytes: None,
                });
            }
        }
    }
    (Ok(()), resolved, Some(c))
}

/// A rule's `CORS` filter as a policy named after the rule; other filters are refused.
fn rule_cors(
    rule: &HttpRouteRules,
    i: usize,
    object: &ObjectRef,
    annotated: Option<&String>,
) -> Result<Option<(String, CorsFile)>, Refusal> {
    let mut found: Option<&HttpRouteRulesFiltersCors> = None;
    for (j, f) in rule.filters.iter().flatten().enumerate() {
        match (&f.r#type, &f.cors) {
            (HttpRouteRulesFiltersType::Cors, Some(c)) => found = Some(c),
            (t, _) => {
                return Err(refusal(
                    "UnsupportedValue",
                    format!(
                    "spec.rules[{i}].filters[{j}]: stitch supports only the CORS filter, not {t:?}"
                ),
                ))
            }
        }
    }
    let Some(c) = found else { return Ok(None) };
    if let Some(a) = annotated {
        return Err(refusal(
            "UnsupportedValue",
            format!("spec.rules[{i}]: a CORS filter and the {CORS_ANNOTATION} annotation ({a}) both apply"),
        ));
    }
    let at = |v| At::new_default(v);
    let file = CorsFile {
        allowed_origins: at(c.allow_origins.clone().unwrap_or_default()),
        allow_methods: cors_methods(c.allow_methods.as_deref()),
        allow_headers: c.allow_headers.clone().unwrap_or_default(),
        expose_headers: c.expose_headers.clone().unwrap_or_default(),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        // GEP-1767: maxAge defaults to 5 seconds.
        max_age: Some(At::new_default(i64::from(c.max_age.unwrap_or(5)))),
        preflight: None,
    };
    Ok(Some((format!("{object}/{i}"), file)))
}

/// GEP-1767's `allowMethods`: none means only the CORS-safelisted methods, `*` every method.
fn cors_methods(given: Option<&[String]>) -> Vec<String> {
    let words: &[&str] = match given {
        None | Some([]) => &["GET", "HEAD", "POST"],
        Some(m) if m.iter().any(|m| m == "*") => &[
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
        ],
        Some(m) => return m.to_vec(),
    };
    words.iter().map(|w| w.to_string()).collect()
}

/// A rule's backend references as weighted Service backends, and the first reference that did
/// not resolve (the rule keeps the others).
fn rule_backends(
    rule: &HttpRouteRules,
    i: usize,
    ns: &str,
    cluster: &Cluster,
) -> (Vec<ServiceBackend>, Option<Refusal>) {
    let mut backends = Vec::new();
    let mut unresolved = None;
    for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}].backendRefs[{j}]");
        let group = b.group.as_deref().unwrap_or("");
        let kind = b.kind.as_deref().unwrap_or("Service");
        let target_ns = b.namespace.clone().unwrap_or_else(|| ns.to_string());
        let problem = if !group.is_empty() || kind != "Service" {
            Some(refusal(
                "InvalidKind",
                format!("{at}: {kind}.{group} is not a Service"),
            ))
        } else if target_ns != ns {
            // ReferenceGrants are not read: a reference into another namespace is not allowed.
            Some(refusal(
                "RefNotPermitted",
                format!(
                    "{at}: Service {target_ns}/{} is in another namespace",
                    b.name
                ),
            ))
        } else if !cluster
            .services
            .contains_key(&(target_ns.clone(), b.name.clone()))
        {
            Some(refusal(
                "BackendNotFound",
                format!("{at}: Service {target_ns}/{} does not exist", b.name),
            ))
        } else if b.port.is_none() {
            Some(refusal("UnsupportedValue", format!("{at}: no port")))
        } else {
            None
        };
        if let Some(p) = problem {
            unresolved.get_or_insert(p);
            continue;
        }
        let weight = b.weight.unwrap_or(1).max(0) as u32;
        if weight == 0 {
            continue;
        }
        backends.push(ServiceBackend {
            namespace: target_ns,
            service: b.name.clone(),
            port: ServicePort::Number(b.port.unwrap_or_default()),
            weight,
        });
    }
    (backends, unresolved)
}

impl Cluster {
    /// The ready endpoints of a Service port: the addresses of its EndpointSlices' endpoints
    /// whose `ready` condition is not false, on the slice's port of the same name.
    pub fn endpoints(&self, b: &ServiceBackend) -> Vec<SocketAddr> {
        let Some(svc) = self.services.get(&(b.namespace.clone(), b.service.clone())) else {
            return Vec::new();
        };
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
        let port_name = ports.into_iter().flatten().find(|p| match &b.port {
            ServicePort::Number(n) => p.port == *n,
            ServicePort::Name(n) => p.name.as_deref() == Some(n.as_str()),
        });
        let Some(port_name) = port_name.map(|p| p.name.clone().unwrap_or_default()) else {
            return Vec::new();
        };
        let mut out = BTreeSet::new();
        for ((ns, _), slice) in &self.endpoint_slices {
            let of_service = ns == &b.namespace
                && annotation_or_label(&slice.metadata, SERVICE_NAME_LABEL) == Some(&b.service);
            if !of_service {
                continue;
            }
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for e in &slice.endpoints {
                if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        out.insert(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

fn annotation_or_label<'a>(meta: &'a ObjectMeta, name: &str) -> Option<&'a String> {
    meta.labels.as_ref()?.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = "[kubernetes]\n[cors.app]\nallowed_origins = [\"https://app.example.com\"]\n\
                        [propagation.w3c]\nextract = [\"tracecontext\"]\ninject = [\"tracecontext\"]\n";

    fn desc(text: &str) -> Description {
        toml::from_str(text).unwrap()
    }

    fn ingress(
        name: &str,
        spec: serde_json::Value,
        annotations: serde_json::Value,
    ) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"namespace": "default", "name": name, "generation": 1,
                             "annotations": annotations},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn service(name: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"namespace": "default", "name": name},
                "spec": {"ports": ports},
            }))
            .unwrap(),
        )
    }

    fn key(name: &str) -> Key {
        ("default".into(), name.into())
    }

    fn backend(svc: &str, port: serde_json::Value) -> serde_json::Value {
        json!({"service": {"name": svc, "port": port}})
    }

    /// `(route name, host, path, exact, pool)` of every route from the cluster.
    fn routes(c: &super::super::Config) -> Vec<(String, Option<String>, String, bool, String)> {
        c.routes
            .iter()
            .map(|r| {
                let pool = match r.target {
                    super::super::Target::Pool(i) => c.upstreams[i].name.clone(),
                    super::super::Target::Echo => "echo".into(),
                };
                let host = r.host.as_ref().map(|h| format!("{h:?}"));
                (r.name.clone(), host, r.path.clone(), r.exact, pool)
            })
            .collect()
    }

    #[test]
    fn ingress_rules_become_routes_with_the_path_types_mapped() {
        let mut c = Cluster::default();
        let spec = json!({
            "ingressClassName": "stitch",
            "defaultBackend": backend("web", json!({"number": 80})),
            "rules": [{"host": "*.example.com", "http": {"paths": [
                {"path": "/exact", "pathType": "Exact", "backend": backend("api", json!({"name": "http"}))},
                {"path": "/prefix/", "pathType": "Prefix", "backend": backend("api", json!({"name": "http"}))},
                {"path": "/impl", "pathType": "ImplementationSpecific", "backend": backend("web", json!({"number": 80}))},
            ]}}],
        });
        c.ingresses
            .insert(key("shop"), ingress("shop", spec, json!({})));
        let (config, verdicts, digest) = merge(desc(FILE), &c).unwrap();
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].accepted, Ok(()));
        assert!(!digest.is_empty());
        let wild = Some(format!("{:?}", HostMatch::parse("*.example.com").unwrap()));
        assert_eq!(
            routes(&config),
            vec![
                (
                    "ingress/default/shop/0/0".into(),
                    wild.clone(),
                    "/exact".into(),
                    true,
                    "k8s:default/api/http".into()
                ),
                (
                    "ingress/default/shop/0/1".into(),
                    wild.clone(),
                    "/prefix".into(),
                    false,
                    "k8s:default/api/http".into()
                ),
                (
                    "ingress/default/shop/0/2".into(),
                    wild,
                    "/impl".into(),
                    false,
                    "k8s:default/web/80".into()
                ),
                (
                    "ingress/default/shop/default".into(),
                    None,
                    "/".into(),
                    false,
                    "k8s:default/web/80".into()
                ),
            ]
        );
    }

    #[test]
    fn an_unknown_annotation_value_refuses_that_ingress_only() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, Option<&str>)] = &[
            (CORS_ANNOTATION, "app", None),
            (CORS_ANNOTATION, "nope", Some("UnknownCorsPolicy")),
            (PROPAGATION_ANNOTATION, "w3c", None),
            (PROPAGATION_ANNOTATION, "default", None),
            (PROPAGATION_ANNOTATION, "nope", Some("UnknownPropagationProfile")),
            ("stitch.dev/configuration-snippet", "x", Some("UnknownAnnotation")),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/", None),
        ];
        for (annotation, value, refused) in rows {
            let mut c = Cluster::default();
            let spec = |p: &str| {
                json!({"ingressClassName": "stitch", "rules": [{"http": {"paths": [
                {"path": p, "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))}]}}]})
            };
            c.ingresses.insert(
                key("a"),
                ingress("a", spec("/a"), json!({ *annotation: value })),
            );
            c.ingresses
                .insert(key("b"), ingress("b", spec("/b"), json!({})));
            let (config, verdicts, _) = merge(desc(FILE), &c).unwrap();
            let got = verdicts[0].accepted.as_ref().err().map(|r| r.reason);
            assert_eq!(got, *refused, "{annotation}={value}");
            assert_eq!(verdicts[1].accepted, Ok(()), "the other Ingress is served");
            assert_eq!(config.routes.len(), if refused.is_some() { 1 } else { 2 });
        }
    }

    #[test]
    fn a_route_that_does_not_validate_refuses_its_object_and_keeps_the_file() {
        let mut c = Cluster::default();
        let spec = json!({"ingressClassName": "stitch", "rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))}]}}]});
        c.ingresses
            .insert(key("first"), ingress("first", spec.clone(), json!({})));
        c.ingresses
            .insert(key("second"), ingress("second", spec, json!({})));
        let text = format!("{FILE}[[route]]\npath = \"/\"\nupstream = \"builtin:echo\"\n");
        let (config, verdicts, _) = merge(desc(&text), &c).unwrap();
        assert_eq!(verdicts[0].accepted, Ok(()));
        let refused = verdicts[1].accepted.clone().unwrap_err();
        assert_eq!(refused.reason, "Invalid");
        assert!(
            refused.message.contains("duplicate route"),
            "{}",
            refused.message
        );
        assert_eq!(
            config.routes.len(),
            2,
            "the file's route and the first Ingress"
        );
        // A mistake in the file itself is the file's: nothing is served from it.
        let bad = format!("{FILE}[[route]]\npath = \"/\"\nupstream = \"missing\"\n");
        let errors = merge(desc(&bad), &c).unwrap_err();
        assert!(errors.iter().all(|e| !matches!(e.at, Location::Object(_))));
    }

    #[test]
    fn the_files_catch_all_route_does_not_shadow_an_ingress_host() {
        let mut c = Cluster::default();
        let spec = json!({"ingressClassName": "stitch", "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))}]}}]});
        c.ingresses
            .insert(key("shop"), ingress("shop", spec, json!({})));
        let text = format!(
            "{FILE}[[route]]\nname = \"echo\"\npath = \"/\"\nupstream = \"builtin:echo\"\n"
        );
        let (config, _, _) = merge(desc(&text), &c).unwrap();
        let router = crate::routing::Router::new(
            config
                .routes
                .iter()
                .map(|r| (r.host.as_ref(), r.path.as_str(), r.exact)),
        );
        let name = |host| {
            config.routes[router.find(host, "/x").unwrap()]
                .name
                .as_str()
        };
        assert_eq!(name("shop.example.com"), "ingress/default/shop/0/0");
        assert_eq!(name("other.example.com"), "echo");
    }

    #[test]
    fn only_ingresses_of_stitchs_class_are_served() {
        let paths = json!([{"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))}]);
        #[rustfmt::skip]
        let rows: &[(serde_json::Value, serde_json::Value, bool, bool)] = &[
            // (spec, annotations, stitch's IngressClass is the default, served)
            (json!({"ingressClassName": "stitch"}), json!({}), false, true),
            (json!({"ingressClassName": "nginx"}), json!({}), true, false),
            (json!({}), json!({"kubernetes.io/ingress.class": "stitch"}), false, true),
            (json!({}), json!({}), false, false),
            (json!({}), json!({}), true, true),
        ];
        for (i, (spec, annotations, default, served)) in rows.iter().enumerate() {
            let mut c = Cluster::default();
            let mut spec = spec.clone();
            spec["rules"] = json!([{"http": {"paths": paths}}]);
            c.ingresses
                .insert(key("a"), ingress("a", spec, annotations.clone()));
            let class: IngressClass = serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": "stitch", "annotations":
                    {"ingressclass.kubernetes.io/is-default-class": default.to_string()}},
                "spec": {"controller": "stitch.dev/ingress-controller"},
            }))
            .unwrap();
            c.ingress_classes
                .insert((String::new(), "stitch".into()), Arc::new(class));
            let (config, verdicts, _) = merge(desc(FILE), &c).unwrap();
            assert_eq!(
                verdicts.len() == 1 && config.routes.len() == 1,
                *served,
                "row {i}"
            );
        }
    }

    #[test]
    fn endpoints_are_the_ready_addresses_on_the_named_port() {
        let mut c = Cluster::default();
        c.services.insert(
            key("api"),
            service(
                "api",
                json!([{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]),
            ),
        );
        let slice = |name: &str, port: i32, endpoints: serde_json::Value| -> Arc<EndpointSlice> {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"namespace": "default", "name": name,
                                 "labels": {SERVICE_NAME_LABEL: "api"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": port}, {"name": "admin", "port": 9901}],
                    "endpoints": endpoints,
                }))
                .unwrap(),
            )
        };
        c.endpoint_slices.insert(
            key("api-1"),
            slice(
                "api-1",
                8080,
                json!([
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.3"]},
                ]),
            ),
        );
        c.endpoint_slices.insert(
            key("api-2"),
            slice("api-2", 8081, json!([{"addresses": ["10.0.0.4"]}])),
        );
        let b = |port: ServicePort| ServiceBackend {
            namespace: "default".into(),
            service: "api".into(),
            port,
            weight: 1,
        };
        let addrs = |v: Vec<SocketAddr>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(
            addrs(c.endpoints(&b(ServicePort::Number(80)))),
            ["10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.4:8081"]
        );
        assert_eq!(
            addrs(c.endpoints(&b(ServicePort::Name("admin".into())))),
            ["10.0.0.1:9901", "10.0.0.3:9901", "10.0.0.4:9901"]
        );
        assert!(
            c.endpoints(&b(ServicePort::Number(81))).is_empty(),
            "no such port"
        );
    }

    fn gateway_cluster() -> Cluster {
        let mut c = Cluster::default();
        let class: GatewayClass = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "stitch"},
            "spec": {"controllerName": "stitch.dev/gateway-controller"},
        }))
        .unwrap();
        c.gateway_classes
            .insert((String::new(), "stitch".into()), Arc::new(class));
        let gw: Gateway = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": "default", "name": "same-namespace"},
            "spec": {"gatewayClassName": "stitch", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        }))
        .unwrap();
        c.gateways.insert(key("same-namespace"), Arc::new(gw));
        for s in ["infra-backend-v1", "infra-backend-v2"] {
            c.services
                .insert(key(s), service(s, json!([{"port": 8080}])));
        }
        c
    }

    fn http_route(name: &str, parent: &str, rules: serde_json::Value) -> Arc<HttpRoute> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"namespace": "default", "name": name, "generation": 3},
                "spec": {"parentRefs": [{"name": parent}], "hostnames": ["example.com"], "rules": rules},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn http_routes_of_stitchs_gateways_become_routes_with_weights_and_cors() {
        let mut c = gateway_cluster();
        c.http_routes.insert(key("weighted"), http_route("weighted", "same-namespace", json!([{
            "matches": [{"path": {"type": "Exact", "value": "/exact"}}],
            "filters": [{"type": "CORS", "cors": {"allowOrigins": ["https://app.example.com"], "maxAge": 60}}],
            "backendRefs": [
                {"name": "infra-backend-v1", "port": 8080, "weight": 70},
                {"name": "infra-backend-v2", "port": 8080, "weight": 30},
                {"name": "infra-backend-v3", "port": 8080, "weight": 0},
            ],
        }])));
        c.http_routes.insert(
            key("elsewhere"),
            http_route("elsewhere", "other-gateway", json!([])),
        );
        let (config, verdicts, _) = merge(desc(FILE), &c).unwrap();
        assert_eq!(
            verdicts.len(),
            1,
            "a route of another Gateway is not stitch's"
        );
        let v = &verdicts[0];
        assert_eq!((v.accepted.clone(), v.generation), (Ok(()), Some(3)));
        assert_eq!(v.resolved.clone().unwrap_err().reason, "BackendNotFound");
        let r = &config.routes[0];
        assert_eq!((r.path.as_str(), r.exact), ("/exact", true));
        let super::super::Target::Pool(i) = r.target else {
            panic!("echo")
        };
        let weights: Vec<(String, u32)> = config.upstreams[i]
            .backends
            .iter()
            .map(|b| (b.service.clone(), b.weight))
            .collect();
        assert_eq!(
            weights,
            [
                ("infra-backend-v1".into(), 70),
                ("infra-backend-v2".into(), 30)
            ]
        );
        let cors = &config.cors[r.cors.expect("the CORS filter's policy")];
        assert_eq!(cors.name, "httproute/default/weighted/0");
    }

    #[test]
    fn http_route_references_and_matches_stitch_cannot_serve_are_reported() {
        #[rustfmt::skip]
        let rows: &[(serde_json::Value, Option<&str>, Option<&str>)] = &[
            // (rule, Accepted=False reason, ResolvedRefs=False reason)
            (json!({"backendRefs": [{"name": "infra-backend-v1", "port": 8080}]}), None, None),
            (json!({"backendRefs": [{"name": "infra-backend-v1", "namespace": "other", "port": 8080}]}), None, Some("RefNotPermitted")),
            (json!({"backendRefs": [{"name": "x", "kind": "Bucket", "group": "storage.example.com"}]}), None, Some("InvalidKind")),
            (json!({"matches": [{"headers": [{"name": "version", "value": "two"}]}]}), Some("UnsupportedValue"), None),
            (json!({"matches": [{"path": {"type": "RegularExpression", "value": "/.*"}}]}), Some("UnsupportedValue"), None),
            (json!({"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}]}), Some("UnsupportedValue"), None),
        ];
        for (rule, accepted, resolved) in rows {
            let mut c = gateway_cluster();
            c.http_routes
                .insert(key("r"), http_route("r", "same-namespace", json!([rule])));
            let (_, verdicts, _) = merge(desc(FILE), &c).unwrap();
            let v = &verdicts[0];
            assert_eq!(
                v.accepted.as_ref().err().map(|r| r.reason),
                *accepted,
                "{rule}"
            );
            assert_eq!(
                v.resolved.as_ref().err().map(|r| r.reason),
                *resolved,
                "{rule}"
            );
        }
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::X509;
    use serde_json::json;

    const DAY: i64 = 86_400;

    /// A self-signed certificate for `names`, valid from `from` to `to` (Unix seconds), and
    /// its key: PEM.
    fn cert(names: &[&str], from: i64, to: i64) -> (Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(from).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(to).unwrap()).unwrap();
        let mut san = SubjectAlternativeName::new();
        for n in names {
            san.dns(n);
        }
        let san = san.build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (
            b.build().to_pem().unwrap(),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
    }

    fn b64(bytes: &[u8]) -> String {
        openssl::base64::encode_block(bytes)
    }

    fn cluster_with(name: &str, type_: &str, data: serde_json::Value) -> Cluster {
        let mut c = Cluster::default();
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"namespace": "default", "name": name},
            "type": type_, "data": data,
        }))
        .unwrap();
        c.secrets
            .insert(("default".into(), name.into()), Arc::new(secret));
        c
    }

    fn entry(hosts: &[&str], secret: &str) -> k8s_openapi::api::networking::v1::IngressTLS {
        serde_json::from_value(json!({"hosts": hosts, "secretName": secret})).unwrap()
    }

    fn refused(r: Result<Certificate, Refusal>) -> Refusal {
        r.map(|c| c.hosts).unwrap_err()
    }

    #[test]
    fn a_tls_secret_becomes_a_certificate_for_its_hosts_or_says_why_not() {
        let now = 1_800_000_000;
        let none = BTreeMap::new();
        let (crt, key) = cert(&["*.example.com", "example.com"], now - DAY, now + DAY);
        let good = cluster_with(
            "web",
            TLS_SECRET_TYPE,
            json!({"tls.crt": b64(&crt), "tls.key": b64(&key)}),
        );
        // No hosts: the certificate's names; hosts given: those, if the certificate covers them.
        let c = tls_entry("default", &entry(&[], "web"), &good, now, &none).unwrap();
        assert_eq!(c.hosts, ["*.example.com", "example.com"]);
        assert_eq!(&*c.cert.pem, &crt[..]);
        assert_eq!(c.cert.path, "secret/default/web");
        let c = tls_entry(
            "default",
            &entry(&["A.Example.com"], "web"),
            &good,
            now,
            &none,
        );
        assert_eq!(c.unwrap().hosts, ["a.example.com"]);
        let r = refused(tls_entry(
            "default",
            &entry(&["a.other.org"], "web"),
            &good,
            now,
            &none,
        ));
        assert_eq!(r.reason, "InvalidTLSSecret");
        assert!(r.message.contains("does not cover `a.other.org`"), "{r:?}");
        // Missing, in another namespace, of another type, incomplete, expired, not yet valid.
        let r = refused(tls_entry("default", &entry(&[], "nope"), &good, now, &none));
        assert_eq!(r.reason, "TLSSecretNotFound");
        let r = refused(tls_entry("other", &entry(&[], "web"), &good, now, &none));
        assert_eq!(r.reason, "TLSSecretNotFound");
        let opaque = cluster_with(
            "web",
            "Opaque",
            json!({"tls.crt": b64(&crt), "tls.key": b64(&key)}),
        );
        let r = refused(tls_entry(
            "default",
            &entry(&[], "web"),
            &opaque,
            now,
            &none,
        ));
        assert_eq!(r.reason, "InvalidTLSSecret");
        let no_key = cluster_with("web", TLS_SECRET_TYPE, json!({"tls.crt": b64(&crt)}));
        let r = refused(tls_entry(
            "default",
            &entry(&[], "web"),
            &no_key,
            now,
            &none,
        ));
        assert!(r.message.contains("has no `tls.key`"), "{r:?}");
        let r = refused(tls_entry(
            "default",
            &entry(&[], "web"),
            &good,
            now + 2 * DAY,
            &none,
        ));
        assert!(r.message.contains("expired"), "{r:?}");
        let r = refused(tls_entry(
            "default",
            &entry(&[], "web"),
            &good,
            now - 2 * DAY,
            &none,
        ));
        assert!(r.message.contains("not valid before"), "{r:?}");
        // A host the file serves is a conflict; one this same Secret serves is not.
        let file: BTreeMap<String, String> = [("example.com".to_string(), String::new())].into();
        let r = refused(tls_entry("default", &entry(&[], "web"), &good, now, &file));
        assert_eq!(r.reason, "CertificateConflict");
        let same: BTreeMap<String, String> =
            [("example.com".to_string(), "secret/default/web".to_string())].into();
        assert!(tls_entry("default", &entry(&[], "web"), &good, now, &same).is_ok());
    }

    #[test]
    fn ingress_tls_without_a_tls_listener_is_refused_and_its_routes_serve() {
        let mut c = cluster_with("web", TLS_SECRET_TYPE, json!({}));
        let ing: Ingress = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"ingressClassName": "stitch",
                     "tls": [{"hosts": ["web.example.com"], "secretName": "web"}],
                     "rules": [{"host": "web.example.com", "http": {"paths": [{"path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
        }))
        .unwrap();
        c.ingresses
            .insert(("default".into(), "web".into()), Arc::new(ing));
        let desc: Description = toml::from_str("[kubernetes]\n").unwrap();
        let (config, verdicts, _) = merge(desc, &c).unwrap();
        assert_eq!(config.routes.len(), 1, "the Ingress's route serves");
        assert_eq!(verdicts[0].accepted, Ok(()));
        assert_eq!(
            verdicts[0].resolved.as_ref().unwrap_err().reason,
            "NoTLSListener"
        );
    }
}
