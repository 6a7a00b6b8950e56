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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    #[serde(default = "default_listen")]
    pub listen: Vec<At<String>>,
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
            listen: default_listen(),
            threads: default_threads(),
            work_stealing: true,
            shutdown_grace_seconds: default_grace(),
            shutdown_timeout_seconds: default_drain(),
            pid_file: None,
            upgrade_sock: None,
            upstream_keepalive_pool: default_keepalive_pool(),
            read_buffer_bytes: default_read_buffer(),
            max_connections: default_max_connections(),
            header_timeout_ms: default_header_timeout(),
            keepalive_timeout_seconds: default_keepalive_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_uri_bytes: default_max_uri_bytes(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_listen")]
    pub listen: At<String>,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: default_admin_listen(),
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
}

/// `trust = "any" | "none" | ["10.0.0.0/8", ...]`
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TrustFile {
    Word(String),
    Cidrs(Vec<String>),
}

fn default_listen() -> Vec<At<String>> {
    vec![At::new_default("0.0.0.0:8080".to_string())]
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
/// 4 KiB: tokio zero-fills this buffer, so each client connection holds all of it in memory;
/// Pingora reads request heads into its own buffer (4 KiB at first) and bypasses a read buffer
/// no larger than that, so a bigger one costs memory without saving work.
fn default_read_buffer() -> At<i64> {
    At::new_default(4 * 1024)
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
fn default_hc_interval() -> At<i64> {
    At::new_default(5_000)
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
