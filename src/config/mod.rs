//! Configuration, as one pipeline: a source produces a [`Description`] (today the TOML file,
//! `file`; later Kubernetes objects), `env` applies the `DD_*` / `OTEL_*` overrides to it, and
//! `validate` turns it into the [`Config`] stitch runs on, reporting every problem with where
//! it came from. Nothing here knows about Pingora; `crate::runtime` compiles a `Config`.

pub mod description;
pub mod env;
pub mod file;
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
}

impl Config {
    /// Files other than the config itself whose content the config uses (`ca_file`s): a
    /// change to one of them is a change of configuration.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        self.upstreams
            .iter()
            .filter_map(|u| u.ca.as_ref().map(|c| PathBuf::from(&c.path)))
            .collect()
    }
}

/// A named CORS policy.
#[derive(Debug, Clone)]
pub struct NamedCors {
    pub name: String,
    pub policy: crate::cors::CorsPolicy,
}

/// A propagation profile: which formats are read and written, and the sampling rules.
#[derive(Debug, Clone, PartialEq)]
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

/// Where edge spans go.
#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
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
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Request head limits (431, 414).
    pub limits: crate::http1::Limits,
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

/// A PEM file of CA certificates, read once when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: String,
    pub pem: Arc<[u8]>,
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
    pub ca: Option<CaFile>,
    pub health_check: Option<Duration>,
    pub resolve_interval: Duration,
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
}

/// Read, parse, apply the process environment and validate a configuration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    file::load(path, &|k| std::env::var(k).ok())
}

/// Parse and validate configuration text, without environment overrides.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    file::parse(text, &|_| None)
}
