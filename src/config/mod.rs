//! Configuration: the TOML file (`file`), its validation into the internal [`Config`]
//! (`validate`), and the error type that names file, line, key and reason.

pub mod file;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::validate;

use crate::routing::HostMatch;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Every problem found in one file, printed one per line as `FILE:LINE: key: reason`.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                e.line,
                e.key,
                e.message
            )?;
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
    pub service: ServiceSettings,
    pub access_log: AccessLog,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// CORS policies by name, referenced by index from routes.
    pub cors: Vec<NamedCors>,
    /// Propagation profiles; index 0 is the default profile used by routes that name none.
    pub profiles: Vec<Profile>,
    pub export: ExportSettings,
}

/// A named CORS policy.
#[derive(Debug, Clone)]
pub struct NamedCors {
    pub name: String,
    pub policy: crate::cors::CorsPolicy,
}

/// A propagation profile: which formats are read and written, and the sampling rules.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub extract: Vec<crate::propagation::Format>,
    pub inject: Vec<crate::propagation::Format>,
    pub sampling: crate::sampling::SamplingPolicy,
}

impl Profile {
    /// Name of the profile routes use when they name none.
    pub const DEFAULT: &'static str = "default";

    /// An empty profile (no extract, no inject) passes trace headers through untouched.
    pub fn is_passthrough(&self) -> bool {
        self.extract.is_empty() && self.inject.is_empty()
    }
}

/// Where edge spans go (the span exporter's settings before environment overrides).
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub datadog_agent_url: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    pub request_timeout: Duration,
    /// Keep the query string in the span's URL.
    pub keep_query: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<String>,
    pub threads: usize,
    pub work_stealing: bool,
    pub shutdown_grace: Duration,
    pub shutdown_timeout: Duration,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub upstream_keepalive_pool: usize,
    pub read_buffer_bytes: usize,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone, Copy)]
pub struct AccessLog {
    pub enabled: bool,
    pub format: AccessLogFormat,
}

/// A named pool of upstream servers, chosen round robin.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub servers: Vec<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub tls: bool,
    pub sni: String,
    pub verify_cert: bool,
    /// CA certificates trusted for this upstream (`ca_file`), instead of the system's.
    pub ca: Option<std::sync::Arc<Box<[pingora::tls::x509::X509]>>>,
    pub health_check: Option<Duration>,
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
    pub target: Target,
    /// Index into [`Config::cors`].
    pub cors: Option<usize>,
    /// Index into [`Config::profiles`] (0: the default profile).
    pub propagation: usize,
}

/// The name of the built-in echo upstream.
pub const ECHO_UPSTREAM: &str = "builtin:echo";

/// Read, parse and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: path.to_path_buf(),
        errors: vec![ConfigError {
            line: 0,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }],
    })?;
    parse(&text).map_err(|errors| ConfigErrors {
        file: path.to_path_buf(),
        errors,
    })
}

/// Parse and validate configuration text.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let file: file::FileConfig = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => return Err(vec![syntax_error(text, &e)]),
    };
    validate(text, &file)
}

/// Turn a serde/TOML error into a [`ConfigError`] with the line and the key path.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start).unwrap_or(0);
    let line = line_of(text, offset);
    ConfigError {
        line,
        key: key_path_at(text, offset),
        message: e.message().trim().replace('\n', " "),
    }
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Best-effort dotted key path at a byte offset: the nearest `[table]` header above it plus the
/// key on that line.
pub(crate) fn key_path_at(text: &str, offset: usize) -> String {
    let line_no = line_of(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let idx = line_no.saturating_sub(1).min(lines.len().saturating_sub(1));
    let mut table = String::new();
    for l in lines.iter().take(idx + 1).rev() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            break;
        }
    }
    let key = lines
        .get(idx)
        .map(|l| l.trim())
        .filter(|l| !l.starts_with('[') && l.contains('='))
        .and_then(|l| l.split('=').next())
        .map(|k| k.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".into(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}
