//! The configuration file as written: serde structs with defaults and `deny_unknown_fields`.
//!
//! Nothing here is trusted yet; `super::validate` turns these into the internal [`super::Config`]
//! and reports every problem with its line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
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
    pub upstream: BTreeMap<String, Spanned<UpstreamFile>>,
    #[serde(default)]
    pub cors: BTreeMap<String, Spanned<CorsFile>>,
    #[serde(default)]
    pub propagation: BTreeMap<String, Spanned<PropagationFile>>,
    #[serde(default)]
    pub route: Vec<Spanned<RouteFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    #[serde(default = "default_listen")]
    pub listen: Vec<Spanned<String>>,
    #[serde(default = "default_threads")]
    pub threads: Spanned<i64>,
    #[serde(default = "default_true")]
    pub work_stealing: bool,
    /// Seconds between SIGTERM and the start of the drain (time for a load balancer to stop
    /// sending new connections).
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: Spanned<i64>,
    /// Seconds allowed for in-flight requests to finish after the grace period.
    #[serde(default = "default_drain")]
    pub shutdown_timeout_seconds: Spanned<i64>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    #[serde(default = "default_keepalive_pool")]
    pub upstream_keepalive_pool: Spanned<i64>,
    /// Bytes of read buffer per client connection (Pingora's default is 64 KiB).
    #[serde(default = "default_read_buffer")]
    pub read_buffer_bytes: Spanned<i64>,
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    #[serde(default = "default_admin_listen")]
    pub listen: Spanned<String>,
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
    pub datadog: Option<Spanned<DatadogExportFile>>,
    pub otlp: Option<Spanned<OtlpExportFile>>,
    pub queue_capacity: Option<Spanned<i64>>,
    pub batch_size: Option<Spanned<i64>>,
    pub flush_interval_ms: Option<Spanned<i64>>,
    pub max_retries: Option<Spanned<i64>>,
    pub retry_backoff_ms: Option<Spanned<i64>>,
    pub request_timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pub keep_query: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogExportFile {
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub agent_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExportFile {
    #[serde(default = "default_true")]
    pub enabled: bool,
    pub endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub servers: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: Spanned<i64>,
    #[serde(default = "default_rw_ms")]
    pub read_timeout_ms: Spanned<i64>,
    #[serde(default = "default_rw_ms")]
    pub write_timeout_ms: Spanned<i64>,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<String>,
    #[serde(default = "default_true")]
    pub verify_cert: bool,
    /// PEM file of the CA certificates to trust for this upstream instead of the system's.
    pub ca_file: Option<Spanned<String>>,
    pub health_check: Option<Spanned<HealthCheckFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    #[serde(default = "default_hc_interval")]
    pub interval_ms: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    #[serde(default = "default_path")]
    pub path: Spanned<String>,
    pub upstream: Spanned<String>,
    pub cors: Option<Spanned<String>>,
    pub propagation: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    pub allowed_origins: Spanned<Vec<String>>,
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    pub max_age: Option<Spanned<i64>>,
    pub preflight: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropagationFile {
    pub extract: Option<Spanned<Vec<Spanned<String>>>>,
    pub inject: Option<Spanned<Vec<Spanned<String>>>>,
    pub injection: Option<Spanned<String>>,
    pub sample_rate: Option<Spanned<f64>>,
    pub missing_decision: Option<Spanned<String>>,
    pub trust: Option<Spanned<TrustFile>>,
    pub max_incoming_priority: Option<Spanned<i64>>,
}

/// `trust = "any" | "none" | ["10.0.0.0/8", ...]`
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TrustFile {
    Word(String),
    Cidrs(Vec<String>),
}

fn default_listen() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "0.0.0.0:8080".to_string())]
}
fn default_threads() -> Spanned<i64> {
    Spanned::new(0..0, 2)
}
fn default_true() -> bool {
    true
}
fn default_grace() -> Spanned<i64> {
    Spanned::new(0..0, 0)
}
fn default_drain() -> Spanned<i64> {
    Spanned::new(0..0, 10)
}
fn default_keepalive_pool() -> Spanned<i64> {
    Spanned::new(0..0, 128)
}
/// 4 KiB: tokio zero-fills this buffer, so each client connection holds all of it in memory;
/// Pingora reads request heads into its own buffer (4 KiB at first) and bypasses a read buffer
/// no larger than that, so a bigger one costs memory without saving work.
fn default_read_buffer() -> Spanned<i64> {
    Spanned::new(0..0, 4 * 1024)
}
fn default_admin_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".to_string())
}
fn default_service() -> String {
    "stitch".to_string()
}
fn default_connect_ms() -> Spanned<i64> {
    Spanned::new(0..0, 1_000)
}
fn default_rw_ms() -> Spanned<i64> {
    Spanned::new(0..0, 30_000)
}
fn default_hc_interval() -> Spanned<i64> {
    Spanned::new(0..0, 5_000)
}
fn default_path() -> Spanned<String> {
    Spanned::new(0..0, "/".to_string())
}
fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
