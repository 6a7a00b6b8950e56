//! Configuration, as one pipeline: sources produce a [`Description`] (the TOML file, `file`,
//! and with `[kubernetes]` the cluster's objects, `kubernetes`, merged into it), `env` applies
//! the `DD_*` / `OTEL_*` overrides, and `validate` turns it into the [`Config`] stitch runs on,
//! reporting every problem with where it came from. Nothing here knows about Pingora;
//! `crate::runtime` compiles a `Config`.

pub mod description;
pub mod env;
pub mod file;
pub mod kubernetes;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use description::Description;
pub use validate::validate;

use crate::routing::HostMatch;

/// Where a configured value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A byte offset into the source text (TOML); turned into a line when reported.
    Offset(usize),
    /// A 1-based line of the source file.
    Line(usize),
    /// An environment variable that overrode the file.
    Env(&'static str),
    /// A default value: there is nothing to point at.
    Default,
    /// A Kubernetes object (an Ingress, an HTTPRoute) the value was made from.
    Object(ObjectRef),
}

/// A Kubernetes object, printed `kind/namespace/name` (`kind/name` when cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `ingress`, `httproute`, ...: the kind in lower case, as `kubectl` names it.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A value with its [`Location`]. TOML fills the location from the parser's spans.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    value: T,
    at: Location,
}

impl<T> At<T> {
    pub fn new(value: T, at: Location) -> At<T> {
        At { value, at }
    }

    /// A default value (no location).
    pub fn new_default(value: T) -> At<T> {
        At::new(value, Location::Default)
    }

    pub fn get_ref(&self) -> &T {
        &self.value
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    pub fn at(&self) -> Location {
        self.at.clone()
    }

    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: Default> Default for At<T> {
    fn default() -> At<T> {
        At::new_default(T::default())
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for At<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(d)?;
        let offset = spanned.span().start;
        Ok(At::new(spanned.into_inner(), Location::Offset(offset)))
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub at: Location,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// The line of a file-located error (0 for the others).
    pub fn line(&self) -> usize {
        match self.at {
            Location::Line(n) => n,
            _ => 0,
        }
    }
}

/// Every problem found in one configuration, printed one per line as `FILE:LINE: key: reason`
/// (`FILE: env VAR: key: reason` for an environment override).
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &e.at {
                Location::Line(n) => write!(f, "{file}:{n}: ")?,
                Location::Env(var) => write!(f, "{file}: env {var}: ")?,
                Location::Object(o) => write!(f, "{o}: ")?,
                Location::Offset(_) | Location::Default => write!(f, "{file}: ")?,
            }
            write!(f, "{}: {}", e.key, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated configuration stitch runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub admin_listen: String,
    /// The request inspector (`admin.inspect_requests`, `admin.dd_site`).
    pub inspect: InspectSettings,
    /// service/env/version, after the `DD_*` overrides.
    pub service: ServiceSettings,
    pub access_log: AccessLog,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// CORS policies by name, referenced by index from routes.
    pub cors: Vec<NamedCors>,
    /// Propagation profiles; index 0 is the default profile used by routes that name none.
    pub profiles: Vec<Profile>,
    /// Span export, after the `DD_*` / `OTEL_*` overrides.
    pub export: ExportSettings,
    /// The ingress controller mode (`[kubernetes]`), when on.
    pub kubernetes: Option<KubernetesSettings>,
}

/// `[kubernetes]`: take routes from the cluster's Ingresses and HTTPRoutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The IngressClass whose Ingresses stitch serves.
    pub ingress_class: String,
    /// The GatewayClass `controllerName` whose Gateways stitch serves.
    pub controller_name: String,
    /// Namespaces watched (empty: all).
    pub namespaces: Vec<String>,
    /// Where Ingress status addresses come from.
    pub publish: Publish,
    /// The leader-election Lease (`namespace`, `name`); only its holder writes status.
    pub lease_namespace: Option<String>,
    pub lease_name: String,
    pub lease_duration: Duration,
}

/// The address written into `status.loadBalancer` of the Ingresses stitch serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// None: status is left empty.
    Nothing,
    /// `namespace/name` of a Service whose `status.loadBalancer` is copied.
    Service { namespace: String, name: String },
    /// Fixed IPs or host names.
    Addresses(Vec<String>),
}

impl Config {
    /// Files other than the config itself whose content the config uses (`ca_file`s, the
    /// listeners' certificates and keys): a change to one of them is a change of configuration.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let certs = self
            .server
            .certificates()
            .flat_map(|c| [PathBuf::from(&c.cert.path), PathBuf::from(&c.key.path)]);
        self.ca_files()
            .map(|c| PathBuf::from(&c.path))
            .chain(certs)
            .collect()
    }

    /// Every `ca_file` the config uses (upstreams, then the OTLP exporter).
    pub fn ca_files(&self) -> impl Iterator<Item = &PemFile> {
        self.upstreams
            .iter()
            .filter_map(|u| u.ca.as_ref())
            .chain(self.export.otlp_ca.as_ref())
    }
}

/// A named CORS policy.
#[derive(Debug, Clone)]
pub struct NamedCors {
    pub name: String,
    pub policy: crate::cors::CorsPolicy,
}

/// A propagation profile: which formats are read and written, how, and the sampling rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub extract: Vec<crate::propagation::Format>,
    pub inject: Vec<crate::propagation::Format>,
    pub sampling: crate::sampling::SamplingPolicy,
    /// Baggage keys copied onto the edge span as `baggage.KEY` tags (`baggage_tags`).
    pub baggage_tags: Vec<String>,
    /// `tracestate_invalid`: what an invalid tracestate member does.
    pub tracestate_invalid: crate::propagation::TracestateInvalid,
    /// `extract_first`: the first format present decides alone, no merge.
    pub extract_first: bool,
    /// `extract_behavior` (`trust = "none"` is read as `restart`).
    pub extract_behavior: crate::propagation::ExtractBehavior,
}

impl Profile {
    /// Name of the profile routes use when they name none.
    pub const DEFAULT: &'static str = "default";

    /// The baggage keys a profile tags the edge span with unless it says otherwise: the RUM
    /// session, the link from an APM trace back to the session replay.
    pub fn default_baggage_tags() -> Vec<String> {
        vec!["session.id".to_string()]
    }

    /// An empty profile (no extract, no inject) passes trace headers through untouched.
    pub fn is_passthrough(&self) -> bool {
        self.extract.is_empty() && self.inject.is_empty()
    }

    /// How extraction reads a request on this profile.
    pub fn extract_options(&self) -> crate::propagation::ExtractOptions {
        crate::propagation::ExtractOptions {
            extract_first: self.extract_first,
            tracestate_invalid: self.tracestate_invalid,
        }
    }
}

/// Where edge spans go.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    pub datadog_agent_url: Option<String>,
    pub otlp_endpoint: Option<String>,
    /// CA certificates trusted for an `https://` OTLP endpoint (`export.otlp.ca_file`).
    pub otlp_ca: Option<PemFile>,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub request_timeout: Duration,
    /// Keep the query string in the span's URL.
    pub keep_query: bool,
}

/// The request inspector: how many requests it keeps (0: off) and the Datadog site its trace
/// links point to. Both apply live on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectSettings {
    pub requests: usize,
    pub dd_site: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// The proxy's listeners, in declaration order (`listen` strings first).
    pub listeners: Vec<Listener>,
    pub threads: usize,
    pub work_stealing: bool,
    pub shutdown_grace: Duration,
    pub shutdown_timeout: Duration,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub upstream_keepalive_pool: usize,
    pub read_buffer_bytes: usize,
    /// Whose forwarding headers (`X-Forwarded-For`, PROXY protocol) are believed.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// How long a `proxy_protocol` listener waits for a connection's header.
    pub proxy_protocol_timeout: Duration,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Request head limits (431, 414).
    pub limits: crate::http1::Limits,
}

impl ServerSettings {
    /// Every certificate of every TLS listener.
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| t.certificates.iter())
    }
}

/// One proxy listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `IP:port`.
    pub address: String,
    pub tls: Option<ListenerTls>,
    pub serve: ListenerBehaviour,
}

/// What a listener does with a request, beyond its transport: listeners that behave alike
/// share one Pingora service (one pool of worker threads).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerBehaviour {
    /// Offer `h2` by ALPN (TLS listeners).
    pub h2: bool,
    /// Accept cleartext HTTP/2 with prior knowledge beside HTTP/1.1 (plain listeners).
    pub h2c: bool,
    /// Answer every request with a 308 to `https://host:PORT/...` (443 is left out).
    pub redirect_to_https: Option<u16>,
    /// The `Strict-Transport-Security` value sent on every response (TLS listeners).
    pub hsts: Option<String>,
    /// Read a PROXY protocol header before anything else (before the TLS handshake on a TLS
    /// listener); a connection without one is closed.
    pub proxy_protocol: bool,
}

/// A TLS listener's certificates; SNI picks one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub certificates: Vec<Certificate>,
    /// Index of the certificate for clients without SNI or with an unknown name.
    pub default: usize,
}

/// A PEM file read when the config was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: String,
    pub pem: Arc<[u8]>,
}

/// A certificate chain and its key, checked to match, to be valid now, and to cover `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub cert: PemFile,
    pub key: PemFile,
    /// The server names it is chosen for: exact names and `*.example.com` wildcards, lower case.
    pub hosts: Vec<String>,
    /// `notAfter`, as Unix seconds.
    pub not_after: i64,
}

impl Certificate {
    /// The name the certificate is reported under (metrics, logs): its first host.
    pub fn name(&self) -> &str {
        self.hosts.first().map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    pub name: String,
    pub env: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLog {
    pub enabled: bool,
    pub format: AccessLogFormat,
}

/// A named pool of upstream servers, chosen round robin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// `host:port`; names are resolved when the runtime is built and every `resolve_interval`.
    pub servers: Vec<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub tls: bool,
    pub sni: String,
    pub verify_cert: bool,
    /// CA certificates trusted for this upstream (`ca_file`), instead of the system's.
    pub ca: Option<PemFile>,
    pub health_check: Option<Duration>,
    pub resolve_interval: Duration,
    pub protocol: UpstreamProtocol,
    /// Concurrent streams on one HTTP/2 connection (Pingora's default is 1).
    pub max_h2_streams: usize,
    /// Header names keep the case they had on the other hop (HTTP/1 only; HTTP/2 lowercases).
    pub preserve_header_case: bool,
    /// Kubernetes Services whose ready endpoints are the servers (instead of `servers`),
    /// kept current by the controller without recompiling.
    pub backends: Vec<ServiceBackend>,
}

/// One Service port behind a pool, with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceBackend {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
    /// Relative weight among the pool's backends (HTTPRoute `backendRefs[].weight`).
    pub weight: u32,
}

/// A Service port, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePort {
    Number(i32),
    Name(String),
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicePort::Number(n) => write!(f, "{n}"),
            ServicePort::Name(n) => f.write_str(n),
        }
    }
}

/// How stitch speaks to an upstream's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over TLS, offered by ALPN beside HTTP/1.1 (the server chooses).
    H2,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
}

/// Where a route sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// stitch answers itself with the request as it would go upstream.
    Echo,
    /// Index into [`Config::upstreams`].
    Pool(usize),
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: String,
    /// Match `path` exactly instead of as a prefix.
    pub exact: bool,
    pub target: Target,
    /// Index into [`Config::cors`].
    pub cors: Option<usize>,
    /// Index into [`Config::profiles`] (0: the default profile).
    pub propagation: usize,
    /// The forwarding headers written upstream.
    pub forwarded_headers: Vec<crate::forwarded::ForwardedHeader>,
    /// Keep or make an `X-Request-Id`.
    pub request_id: bool,
    /// Largest request body (413 beyond).
    pub max_body_bytes: Option<u64>,
}

/// The name of the built-in echo upstream.
pub const ECHO_UPSTREAM: &str = "builtin:echo";

/// A loaded configuration and the text it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file's text, for the content hash.
    pub text: String,
    /// What the cluster contributed, in a canonical text form, for the content hash (empty
    /// without `[kubernetes]`).
    pub cluster: String,
}

/// Read, parse, apply the process environment and validate a configuration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    file::load(path, &|k| std::env::var(k).ok())
}

/// Parse and validate configuration text, without environment overrides.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    file::parse(text, &|_| None)
}
