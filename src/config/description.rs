//! The configuration as a source describes it, before validation: plain structs with defaults,
//! each value carrying its [`Location`](super::Location). The TOML file deserializes straight
//! into them (`deny_unknown_fields`, so a misspelt key is refused); other sources build them.
//!
//! Nothing here is trusted yet; `super::validate` turns a description into a [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::At;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Description {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub service: ServiceFile,
    #[serde(default)]
    pub export: ExportFile,
    #[serde(default)]
    pub access_log: AccessLogFile,
    #[serde(default)]
    pub upstream: BTreeMap<String, At<UpstreamFile>>,
    #[serde(default)]
    pub cors: BTreeMap<String, At<CorsFile>>,
    #[serde(default)]
    pub propagation: BTreeMap<String, At<PropagationFile>>,
    #[serde(default)]
    pub route: Vec<At<RouteFile>>,
    pub kubernetes: Option<At<KubernetesFile>>,
}

/// `[kubernetes]`: the ingress controller mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesFile {
    #[serde(default = "default_ingress_class")]
    pub ingress_class: At<String>,
    #[serde(default = "default_controller_name")]
    pub controller_name: At<String>,
    #[serde(default)]
    pub namespaces: Vec<At<String>>,
    pub publish_service: Option<At<String>>,
    pub publish_address: Option<At<Vec<String>>>,
    pub lease_namespace: Option<At<String>>,
    #[serde(default = "default_lease_name")]
    pub lease_name: At<String>,
    #[serde(default = "default_lease_seconds")]
    pub lease_duration_seconds: At<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Plain HTTP/1.1 listeners by address (the short form of `[[server.listener]]`).
    pub listen: Option<Vec<At<String>>>,
    /// Listeners with their own settings (TLS, HTTP/2, redirect, HSTS).
    #[serde(default)]
    pub listener: Vec<At<ListenerFile>>,
    #[serde(default = "default_threads")]
    pub threads: At<i64>,
    #[serde(default = "default_true")]
    pub work_stealing: bool,
    /// Seconds between SIGTERM and the start of the drain (time for a load balancer to stop
    /// sending new connections).
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: At<i64>,
    /// Seconds allowed for in-flight requests to finish after the grace period.
    #[serde(default = "default_drain")]
    pub shutdown_timeout_seconds: At<i64>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    #[serde(default = "default_keepalive_pool")]
    pub upstream_keepalive_pool: At<i64>,
    /// Bytes of read buffer per client connection (Pingora's default is 64 KiB).
    #[serde(default = "default_read_buffer")]
    pub read_buffer_bytes: At<i64>,
    /// CIDRs (or addresses) of the proxies and balancers whose `X-Forwarded-For` and PROXY
    /// protocol headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<At<String>>,
    /// Milliseconds a `proxy_protocol` listener's connection has to send its whole PROXY
    /// protocol header before it is closed.
    #[serde(default = "default_proxy_protocol_timeout")]
    pub proxy_protocol_timeout_ms: At<i64>,
    /// Client connections open at once; beyond it a new one gets a 503 and is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: At<i64>,
    /// Milliseconds a new connection has to send its whole first request head (408 after).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: At<i64>,
    /// Seconds a kept-alive client connection may wait idle for its next request.
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout_seconds: At<i64>,
    /// Bytes of a request head, request line and headers (431 beyond).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: At<i64>,
    /// Header lines in a request (431 beyond).
    #[serde(default = "default_max_headers")]
    pub max_headers: At<i64>,
    /// Bytes of a request target (414 beyond).
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: At<i64>,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: None,
            listener: Vec::new(),
            threads: default_threads(),
            work_stealing: true,
            shutdown_grace_seconds: default_grace(),
            shutdown_timeout_seconds: default_drain(),
            pid_file: None,
            upgrade_sock: None,
            upstream_keepalive_pool: default_keepalive_pool(),
            read_buffer_bytes: default_read_buffer(),
            trusted_proxies: Vec::new(),
            proxy_protocol_timeout_ms: default_proxy_protocol_timeout(),
            max_connections: default_max_connections(),
            header_timeout_ms: default_header_timeout(),
            keepalive_timeout_seconds: default_keepalive_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_bytes: default_max_uri_bytes(),
        }
    }
}

/// `[[server.listener]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub address: At<String>,
    /// Not `At<..>`: written as `[[server.listener.tls.certificates]]` the table is implicit
    /// and has no span.
    pub tls: Option<TlsFile>,
    /// Offer HTTP/2 by ALPN on a TLS listener.
    #[serde(default = "default_true")]
    pub h2: bool,
    /// Accept HTTP/2 with prior knowledge (cleartext) beside HTTP/1.1.
    #[serde(default)]
    pub h2c: At<bool>,
    /// Answer every request with a 308 to the same URL over HTTPS.
    #[serde(default)]
    pub redirect_to_https: At<bool>,
    /// The port the redirect names (default: the first TLS listener's).
    pub https_port: Option<At<i64>>,
    /// `Strict-Transport-Security` on every response of a TLS listener.
    pub hsts: Option<At<HstsFile>>,
    /// Every connection starts with a PROXY protocol (v1 or v2) header; one without is closed.
    #[serde(default)]
    pub proxy_protocol: At<bool>,
}

/// `tls = { certificates = [...] }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub certificates: Vec<At<CertificateFile>>,
}

/// One certificate chain and its key, chosen by SNI.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFile {
    /// PEM: the certificate, then its intermediates.
    pub cert_file: At<String>,
    /// PEM: the private key.
    pub key_file: At<String>,
    /// The server names it is chosen for (default: its subjectAltName DNS names).
    pub hosts: Option<At<Vec<At<String>>>>,
    /// Used for clients that send no SNI or a name no certificate has.
    #[serde(default)]
    pub default: At<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsFile {
    #[serde(default = "default_hsts_max_age")]
    pub max_age_seconds: At<i64>,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_listen")]
    pub listen: At<String>,
    /// Requests the inspector keeps (`/requests`); 0 turns it off.
    #[serde(default = "default_inspect_requests")]
    pub inspect_requests: At<i64>,
    /// The Datadog site (`datadoghq.com`, `datadoghq.eu`, ...), for links to traces.
    pub dd_site: Option<At<String>>,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: default_admin_listen(),
            inspect_requests: default_inspect_requests(),
            dd_site: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    #[serde(default = "default_service")]
    pub name: String,
    pub env: Option<String>,
    pub version: Option<String>,
}

impl Default for ServiceFile {
    fn default() -> Self {
        ServiceFile {
            name: default_service(),
            env: None,
            version: None,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    pub datadog: Option<At<DatadogExportFile>>,
    pub otlp: Option<At<OtlpExportFile>>,
    pub queue_capacity: Option<At<i64>>,
    pub batch_size: Option<At<i64>>,
    pub flush_interval_ms: Option<At<i64>>,
    pub max_retries: Option<At<i64>>,
    pub retry_backoff_ms: Option<At<i64>>,
    pub request_timeout_ms: Option<At<i64>>,
    #[serde(default)]
    pub keep_query: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogExportFile {
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub agent_url: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExportFile {
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub endpoint: Option<At<String>>,
    /// PEM file of the CA certificates to trust for an `https://` endpoint.
    pub ca_file: Option<At<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub format: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub servers: At<Vec<At<String>>>,
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: At<i64>,
    #[serde(default = "default_rw_ms")]
    pub read_timeout_ms: At<i64>,
    #[serde(default = "default_rw_ms")]
    pub write_timeout_ms: At<i64>,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<String>,
    #[serde(default = "default_true")]
    pub verify_cert: bool,
    /// PEM file of the CA certificates to trust for this upstream instead of the system's.
    pub ca_file: Option<At<String>>,
    pub health_check: Option<At<HealthCheckFile>>,
    /// How often server names are resolved again (like Envoy's strict DNS).
    #[serde(default = "default_resolve_ms")]
    pub resolve_interval_ms: At<i64>,
    /// `http1`, `h2` (over TLS, by ALPN) or `h2c` (cleartext, prior knowledge).
    pub protocol: Option<At<String>>,
    /// Concurrent requests on one HTTP/2 connection to a server.
    #[serde(default = "default_h2_streams")]
    pub max_h2_streams: At<i64>,
    /// Send header names to the servers in the case the client wrote them (and pass theirs back
    /// the same way) rather than lowercase.
    #[serde(default)]
    pub preserve_header_case: bool,
    /// Kubernetes Services instead of `servers` (pools made from the cluster; not a TOML key).
    #[serde(skip)]
    pub backends: Vec<crate::config::ServiceBackend>,
    /// Made from the cluster (`backends` may then be empty: no backend reference resolved).
    #[serde(skip)]
    pub from_cluster: bool,
}

impl UpstreamFile {
    /// A pool of Kubernetes Services, with the default timeouts.
    pub fn services(backends: Vec<crate::config::ServiceBackend>) -> UpstreamFile {
        UpstreamFile {
            servers: At::new_default(Vec::new()),
            connect_timeout_ms: default_connect_ms(),
            read_timeout_ms: default_rw_ms(),
            write_timeout_ms: default_rw_ms(),
            tls: false,
            sni: None,
            verify_cert: true,
            ca_file: None,
            health_check: None,
            resolve_interval_ms: default_resolve_ms(),
            protocol: None,
            max_h2_streams: default_h2_streams(),
            preserve_header_case: false,
            backends,
            from_cluster: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    #[serde(default = "default_hc_interval")]
    pub interval_ms: At<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Option<At<String>>,
    pub host: Option<At<String>>,
    #[serde(default = "default_path")]
    pub path: At<String>,
    pub upstream: At<String>,
    pub cors: Option<At<String>>,
    pub propagation: Option<At<String>>,
    /// Match `path` exactly (Ingress `Exact`, HTTPRoute `Exact`; not a TOML key).
    #[serde(skip)]
    pub exact: bool,
    /// `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`, `forwarded`.
    pub forwarded_headers: Option<At<Vec<At<String>>>>,
    /// Keep or make an `X-Request-Id` (on by default).
    #[serde(default = "default_true")]
    pub request_id: bool,
    /// Largest request body, in bytes (413 beyond); none by default.
    pub max_body_bytes: Option<At<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    pub allowed_origins: At<Vec<String>>,
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    pub max_age: Option<At<i64>>,
    pub preflight: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropagationFile {
    pub extract: Option<At<Vec<At<String>>>>,
    pub inject: Option<At<Vec<At<String>>>>,
    pub injection: Option<At<String>>,
    pub sample_rate: Option<At<f64>>,
    pub missing_decision: Option<At<String>>,
    pub trust: Option<At<TrustFile>>,
    pub max_incoming_priority: Option<At<i64>>,
    /// Baggage keys copied onto the edge span as tags.
    pub baggage_tags: Option<At<Vec<At<String>>>>,
    /// `"drop_member"` or `"discard_header"`.
    pub tracestate_invalid: Option<At<String>>,
    pub extract_first: Option<At<bool>>,
    /// `"continue"`, `"restart"` or `"ignore"`.
    pub extract_behavior: Option<At<String>>,
}

/// `trust = "any" | "none" | ["10.0.0.0/8", ...]` (`"none"` is the older spelling of
/// `extract_behavior = "restart"`)
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TrustFile {
    Word(String),
    Cidrs(Vec<String>),
}

/// The listener when the file names none.
pub fn default_listen() -> At<String> {
    At::new_default("0.0.0.0:8080".to_string())
}
fn default_hsts_max_age() -> At<i64> {
    At::new_default(31_536_000)
}
fn default_threads() -> At<i64> {
    At::new_default(2)
}
fn default_true() -> bool {
    true
}
fn default_grace() -> At<i64> {
    At::new_default(0)
}
fn default_drain() -> At<i64> {
    At::new_default(10)
}
fn default_keepalive_pool() -> At<i64> {
    At::new_default(128)
}
/// 4 KiB: tokio zero-fills this buffer, so each client connection holds all of it in memory.
/// Pingora reads request heads into its own buffer (4 KiB at first) and bypasses a read buffer
/// no larger than that, so a bigger one costs memory without saving work; but between two
/// requests the front reads one byte of the next (`front::next_request`), and the rest of the
/// head then comes out of this buffer without another system call.
fn default_read_buffer() -> At<i64> {
    At::new_default(4 * 1024)
}
/// 5 s, HAProxy's and Envoy's default for the same wait.
fn default_proxy_protocol_timeout() -> At<i64> {
    At::new_default(5_000)
}
/// The request limits follow nginx (60 s to send a request head, 8 KiB request target) and
/// Envoy (60 KiB of headers, 100 header lines); 60 s idle keep-alive is Pingora's and close to
/// nginx's 75 s; 10,000 connections hold about 300 MiB at stitch's measured 31 KiB each.
fn default_max_connections() -> At<i64> {
    At::new_default(10_000)
}
fn default_header_timeout() -> At<i64> {
    At::new_default(60_000)
}
fn default_keepalive_timeout() -> At<i64> {
    At::new_default(60)
}
fn default_max_header_bytes() -> At<i64> {
    At::new_default(60 * 1024)
}
fn default_max_headers() -> At<i64> {
    At::new_default(100)
}
fn default_max_uri_bytes() -> At<i64> {
    At::new_default(8 * 1024)
}
fn default_admin_listen() -> At<String> {
    At::new_default("127.0.0.1:9901".to_string())
}
fn default_inspect_requests() -> At<i64> {
    At::new_default(200)
}
fn default_service() -> String {
    "stitch".to_string()
}
fn default_connect_ms() -> At<i64> {
    At::new_default(1_000)
}
fn default_rw_ms() -> At<i64> {
    At::new_default(30_000)
}
fn default_resolve_ms() -> At<i64> {
    At::new_default(30_000)
}
fn default_h2_streams() -> At<i64> {
    At::new_default(100)
}
fn default_hc_interval() -> At<i64> {
    At::new_default(5_000)
}
fn default_ingress_class() -> At<String> {
    At::new_default("stitch".to_string())
}
fn default_controller_name() -> At<String> {
    At::new_default("stitch.dev/gateway-controller".to_string())
}
fn default_lease_name() -> At<String> {
    At::new_default("stitch-controller".to_string())
}
fn default_lease_seconds() -> At<i64> {
    At::new_default(15)
}
fn default_path() -> At<String> {
    At::new_default("/".to_string())
}
fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
