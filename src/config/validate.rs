//! Validation of the file structs into the internal [`Config`]: every problem is collected
//! (not just the first), each with its line, key path and reason.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::file::{FileConfig, TrustFile};
use super::{
    line_of, AccessLog, AccessLogFormat, Config, ConfigError, ExportSettings, NamedCors, Profile,
    Route, ServerSettings, ServiceSettings, Target, Upstream, ECHO_UPSTREAM,
};
use crate::cors::{CorsPolicy, CorsSpec, PreflightMode};
use crate::propagation::{Format, DEFAULT_EXTRACT, DEFAULT_INJECT};
use crate::routing::HostMatch;
use crate::sampling::{InjectionMode, MissingDecision, SamplingPolicy, Trust};

struct Errors<'a> {
    text: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn at(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        });
    }
}

fn ms(errs: &mut Errors<'_>, v: &Spanned<i64>, key: String) -> Duration {
    let n = *v.get_ref();
    if n <= 0 {
        errs.at(
            v.span(),
            key,
            format!("must be a positive number of milliseconds, got {n}"),
        );
        return Duration::from_millis(1);
    }
    Duration::from_millis(n as u64)
}

/// Is `s` a `host:port` we can hand to the resolver (an IP socket address or a DNS name)?
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("`{s}` is not host:port (the port is missing)"));
    };
    if port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!("`{s}` has an invalid port `{port}` (1-65535)"));
    }
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_host {
        return Err(format!("`{s}` does not name a valid host"));
    }
    Ok(())
}

/// Validate the parsed file; `text` is the source, for line numbers.
pub fn validate(text: &str, f: &FileConfig) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors {
        text,
        list: Vec::new(),
    };

    // [server]
    let s = &f.server;
    if s.listen.is_empty() {
        errs.at(
            0..0,
            "server.listen",
            "at least one listen address is required",
        );
    }
    let mut listen = Vec::new();
    for (i, a) in s.listen.iter().enumerate() {
        match a.get_ref().parse::<SocketAddr>() {
            Ok(_) => listen.push(a.get_ref().clone()),
            Err(_) => errs.at(
                a.span(),
                format!("server.listen[{i}]"),
                format!(
                    "`{}` is not an IP:port address (e.g. 0.0.0.0:8080)",
                    a.get_ref()
                ),
            ),
        }
    }
    let threads = *s.threads.get_ref();
    if !(1..=1024).contains(&threads) {
        errs.at(
            s.threads.span(),
            "server.threads",
            format!("must be between 1 and 1024, got {threads}"),
        );
    }
    let grace = *s.shutdown_grace_seconds.get_ref();
    if !(0..=3600).contains(&grace) {
        errs.at(
            s.shutdown_grace_seconds.span(),
            "server.shutdown_grace_seconds",
            format!("must be between 0 and 3600, got {grace}"),
        );
    }
    let drain = *s.shutdown_timeout_seconds.get_ref();
    if !(0..=3600).contains(&drain) {
        errs.at(
            s.shutdown_timeout_seconds.span(),
            "server.shutdown_timeout_seconds",
            format!("must be between 0 and 3600, got {drain}"),
        );
    }
    let pool = *s.upstream_keepalive_pool.get_ref();
    if !(0..=1_000_000).contains(&pool) {
        errs.at(
            s.upstream_keepalive_pool.span(),
            "server.upstream_keepalive_pool",
            format!("must be between 0 and 1000000, got {pool}"),
        );
    }

    let read_buffer = *s.read_buffer_bytes.get_ref();
    if !(1024..=1024 * 1024).contains(&read_buffer) {
        errs.at(
            s.read_buffer_bytes.span(),
            "server.read_buffer_bytes",
            format!("must be between 1024 and 1048576, got {read_buffer}"),
        );
    }

    // [admin]
    if f.admin.listen.get_ref().parse::<SocketAddr>().is_err() {
        errs.at(
            f.admin.listen.span(),
            "admin.listen",
            format!(
                "`{}` is not an IP:port address (e.g. 127.0.0.1:9901)",
                f.admin.listen.get_ref()
            ),
        );
    }

    // [access_log]
    let format = match f
        .access_log
        .format
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("text", _)) => AccessLogFormat::Text,
        Some(("json", _)) => AccessLogFormat::Json,
        Some((other, span)) => {
            errs.at(
                span,
                "access_log.format",
                format!("must be \"text\" or \"json\", got \"{other}\""),
            );
            AccessLogFormat::Text
        }
    };

    // [upstream.NAME]
    let mut upstreams = Vec::new();
    for (name, u) in &f.upstream {
        let key = format!("upstream.{name}");
        if name == ECHO_UPSTREAM || name.contains(':') {
            errs.at(
                u.span(),
                key.clone(),
                "an upstream name may not contain ':' (builtin:echo is reserved)",
            );
        }
        let u_ref = u.get_ref();
        let servers = u_ref.servers.get_ref();
        if servers.is_empty() {
            errs.at(
                u_ref.servers.span(),
                format!("{key}.servers"),
                "the server list is empty: give at least one host:port",
            );
        }
        let mut list = Vec::new();
        for (i, srv) in servers.iter().enumerate() {
            match check_host_port(srv.get_ref()) {
                Ok(()) => list.push(srv.get_ref().clone()),
                Err(m) => errs.at(srv.span(), format!("{key}.servers[{i}]"), m),
            }
        }
        let connect = ms(
            &mut errs,
            &u_ref.connect_timeout_ms,
            format!("{key}.connect_timeout_ms"),
        );
        let read = ms(
            &mut errs,
            &u_ref.read_timeout_ms,
            format!("{key}.read_timeout_ms"),
        );
        let write = ms(
            &mut errs,
            &u_ref.write_timeout_ms,
            format!("{key}.write_timeout_ms"),
        );
        let health_check = u_ref.health_check.as_ref().map(|h| {
            ms(
                &mut errs,
                &h.get_ref().interval_ms,
                format!("{key}.health_check.interval_ms"),
            )
        });
        if u_ref.tls && u_ref.verify_cert && u_ref.sni.as_deref() == Some("") {
            // Pingora sends no SNI then and skips certificate verification altogether.
            errs.at(
                u.span(),
                format!("{key}.sni"),
                "is empty, which turns certificate verification off: name the upstream's \
                 host, or set verify_cert = false",
            );
        }
        let ca = u_ref.ca_file.as_ref().and_then(|path| {
            let key = format!("{key}.ca_file");
            if !u_ref.tls {
                errs.at(path.span(), key, "needs tls = true");
                return None;
            }
            match load_ca_file(path.get_ref()) {
                Ok(certs) => Some(std::sync::Arc::new(certs)),
                Err(why) => {
                    errs.at(path.span(), key, why);
                    None
                }
            }
        });
        let sni = u_ref.sni.clone().unwrap_or_else(|| {
            list.first()
                .and_then(|s| s.rsplit_once(':').map(|(h, _)| h.to_string()))
                .unwrap_or_default()
        });
        upstreams.push(Upstream {
            name: name.clone(),
            servers: list,
            connect_timeout: connect,
            read_timeout: read,
            write_timeout: write,
            tls: u_ref.tls,
            sni,
            verify_cert: u_ref.verify_cert,
            ca,
            health_check,
        });
    }

    // [cors.NAME]
    let mut cors = Vec::new();
    for (name, c) in &f.cors {
        let key = format!("cors.{name}");
        let c_ref = c.get_ref();
        let preflight = match c_ref
            .preflight
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None | Some(("answer", _)) => PreflightMode::Answer,
            Some(("augment", _)) => PreflightMode::Augment,
            Some((other, span)) => {
                errs.at(
                    span,
                    format!("{key}.preflight"),
                    format!("must be \"answer\" or \"augment\", got \"{other}\""),
                );
                PreflightMode::Answer
            }
        };
        let max_age = match &c_ref.max_age {
            None => None,
            Some(v) if (0..=86_400).contains(v.get_ref()) => Some(*v.get_ref() as u32),
            Some(v) => {
                errs.at(
                    v.span(),
                    format!("{key}.max_age"),
                    format!("must be between 0 and 86400 seconds, got {}", v.get_ref()),
                );
                None
            }
        };
        let spec = CorsSpec {
            allowed_origins: c_ref.allowed_origins.get_ref().clone(),
            allow_methods: c_ref.allow_methods.clone(),
            allow_headers: c_ref.allow_headers.clone(),
            expose_headers: c_ref.expose_headers.clone(),
            allow_credentials: c_ref.allow_credentials,
            max_age,
            preflight,
        };
        match CorsPolicy::new(spec) {
            Ok(policy) => cors.push(NamedCors {
                name: name.clone(),
                policy,
            }),
            Err(problems) => {
                for p in problems {
                    errs.at(c_ref.allowed_origins.span(), key.clone(), p);
                }
            }
        }
    }

    // [propagation.NAME]; the default profile comes first.
    let mut profiles = vec![Profile {
        name: Profile::DEFAULT.to_string(),
        extract: DEFAULT_EXTRACT.to_vec(),
        inject: DEFAULT_INJECT.to_vec(),
        sampling: SamplingPolicy::default(),
    }];
    for (name, p) in &f.propagation {
        let key = format!("propagation.{name}");
        let p_ref = p.get_ref();
        let formats = |errs: &mut Errors<'_>,
                       list: &Option<Spanned<Vec<Spanned<String>>>>,
                       which: &str,
                       default: &[Format]|
         -> Vec<Format> {
            let Some(list) = list else {
                return default.to_vec();
            };
            let mut out = Vec::new();
            for (i, w) in list.get_ref().iter().enumerate() {
                match Format::parse(w.get_ref()) {
                    Some(fmt) if out.contains(&fmt) => errs.at(w.span(), format!("{key}.{which}[{i}]"), format!("\"{}\" is listed twice", w.get_ref())),
                    Some(fmt) => out.push(fmt),
                    None => errs.at(
                        w.span(),
                        format!("{key}.{which}[{i}]"),
                        format!("unknown format \"{}\" (use datadog, tracecontext, b3, b3multi, baggage)", w.get_ref()),
                    ),
                }
            }
            out
        };
        let extract = formats(&mut errs, &p_ref.extract, "extract", DEFAULT_EXTRACT);
        let inject = formats(&mut errs, &p_ref.inject, "inject", DEFAULT_INJECT);
        let mut sampling = SamplingPolicy::default();
        if let Some(v) = &p_ref.injection {
            match v.get_ref().as_str() {
                "sampled" => sampling.injection = InjectionMode::Sampled,
                "all" => sampling.injection = InjectionMode::All,
                other => errs.at(
                    v.span(),
                    format!("{key}.injection"),
                    format!("must be \"sampled\" or \"all\", got \"{other}\""),
                ),
            }
        }
        if let Some(v) = &p_ref.missing_decision {
            match v.get_ref().as_str() {
                "drop" => sampling.missing_decision = MissingDecision::Drop,
                "sample" => sampling.missing_decision = MissingDecision::Sample,
                other => errs.at(
                    v.span(),
                    format!("{key}.missing_decision"),
                    format!("must be \"drop\" or \"sample\", got \"{other}\""),
                ),
            }
        }
        if let Some(v) = &p_ref.sample_rate {
            sampling.sample_rate = *v.get_ref();
        }
        if let Some(v) = &p_ref.max_incoming_priority {
            sampling.max_incoming_priority =
                (*v.get_ref()).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        }
        if let Some(v) = &p_ref.trust {
            match v.get_ref() {
                TrustFile::Word(w) if w == "any" => sampling.trust = Trust::Any,
                TrustFile::Word(w) if w == "none" => sampling.trust = Trust::None,
                TrustFile::Word(w) => errs.at(
                    v.span(),
                    format!("{key}.trust"),
                    format!("must be \"any\", \"none\" or a list of CIDRs, got \"{w}\""),
                ),
                TrustFile::Cidrs(list) => {
                    let mut nets = Vec::new();
                    for (i, c) in list.iter().enumerate() {
                        match c
                            .parse::<ipnet::IpNet>()
                            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        {
                            Ok(n) => nets.push(n),
                            Err(_) => errs.at(
                                v.span(),
                                format!("{key}.trust[{i}]"),
                                format!("`{c}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address"),
                            ),
                        }
                    }
                    sampling.trust = Trust::Cidrs(nets);
                }
            }
        }
        if let Err(problems) = sampling.validate() {
            for m in problems {
                errs.at(p.span(), key.clone(), m);
            }
        }
        if name == Profile::DEFAULT {
            profiles[0] = Profile {
                name: name.clone(),
                extract,
                inject,
                sampling,
            };
        } else {
            profiles.push(Profile {
                name: name.clone(),
                extract,
                inject,
                sampling,
            });
        }
    }

    // [export]
    let e = &f.export;
    let url_ok = |errs: &mut Errors<'_>, v: &Spanned<String>, key: &str| -> Option<String> {
        let u = v.get_ref();
        match u.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
                Some(u.trim_end_matches('/').to_string())
            }
            _ => {
                errs.at(v.span(), key.to_string(), format!("`{u}` is not an http:// URL (TLS to the collector is not supported; use a local agent)"));
                None
            }
        }
    };
    let datadog_agent_url = match &e.datadog {
        Some(d) if d.get_ref().enabled => match &d.get_ref().agent_url {
            Some(v) => url_ok(&mut errs, v, "export.datadog.agent_url"),
            None => Some("http://127.0.0.1:8126".to_string()),
        },
        _ => None,
    };
    let otlp_endpoint = match &e.otlp {
        Some(o) if o.get_ref().enabled => match &o.get_ref().endpoint {
            Some(v) => url_ok(&mut errs, v, "export.otlp.endpoint"),
            None => Some("http://127.0.0.1:4318/v1/traces".to_string()),
        },
        _ => None,
    };
    let count = |errs: &mut Errors<'_>,
                 v: &Option<Spanned<i64>>,
                 key: &str,
                 default: i64,
                 max: i64|
     -> i64 {
        match v {
            None => default,
            Some(v) if (1..=max).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                errs.at(
                    v.span(),
                    key.to_string(),
                    format!("must be between 1 and {max}, got {}", v.get_ref()),
                );
                default
            }
        }
    };
    let export = ExportSettings {
        datadog_agent_url,
        otlp_endpoint,
        queue_capacity: count(
            &mut errs,
            &e.queue_capacity,
            "export.queue_capacity",
            4096,
            1_000_000,
        ) as usize,
        batch_size: count(&mut errs, &e.batch_size, "export.batch_size", 256, 100_000) as usize,
        flush_interval: Duration::from_millis(count(
            &mut errs,
            &e.flush_interval_ms,
            "export.flush_interval_ms",
            1000,
            600_000,
        ) as u64),
        max_retries: match &e.max_retries {
            None => 3,
            Some(v) if (0..=20).contains(v.get_ref()) => *v.get_ref() as u32,
            Some(v) => {
                errs.at(
                    v.span(),
                    "export.max_retries",
                    format!("must be between 0 and 20, got {}", v.get_ref()),
                );
                3
            }
        },
        retry_backoff: Duration::from_millis(count(
            &mut errs,
            &e.retry_backoff_ms,
            "export.retry_backoff_ms",
            200,
            60_000,
        ) as u64),
        request_timeout: Duration::from_millis(count(
            &mut errs,
            &e.request_timeout_ms,
            "export.request_timeout_ms",
            2000,
            60_000,
        ) as u64),
        keep_query: e.keep_query,
    };

    // [[route]]
    if f.route.is_empty() {
        errs.at(
            0..0,
            "route",
            "no [[route]] is configured: stitch would answer every request with 404",
        );
    }
    let mut routes = Vec::new();
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    for (i, r) in f.route.iter().enumerate() {
        let span = r.span();
        let r = r.get_ref();
        let key = format!("route[{i}]");
        let path = r.path.get_ref();
        if !path.starts_with('/') {
            errs.at(
                r.path.span(),
                format!("{key}.path"),
                format!("must start with '/', got \"{path}\""),
            );
        }
        let host = match &r.host {
            None => None,
            Some(h) => match HostMatch::parse(h.get_ref()) {
                Ok(m) => Some(m),
                Err(m) => {
                    errs.at(h.span(), format!("{key}.host"), m);
                    None
                }
            },
        };
        let name = match &r.name {
            Some(n) => n.get_ref().clone(),
            None => format!(
                "{}{}",
                r.host.as_ref().map(|h| h.get_ref().as_str()).unwrap_or(""),
                path
            ),
        };
        if !names.insert(name.clone()) {
            let at = r.name.as_ref().map(|n| n.span()).unwrap_or(span.clone());
            errs.at(
                at,
                format!("{key}.name"),
                format!("duplicate route name \"{name}\""),
            );
        }
        let match_key = (
            r.host.as_ref().map(|h| h.get_ref().to_ascii_lowercase()),
            path.clone(),
        );
        if !matches.insert(match_key) {
            errs.at(
                r.path.span(),
                format!("{key}.path"),
                format!(
                    "duplicate route: another route already matches host {} and path \"{path}\"",
                    r.host
                        .as_ref()
                        .map(|h| format!("\"{}\"", h.get_ref()))
                        .unwrap_or_else(|| "(any)".into())
                ),
            );
        }
        let up = r.upstream.get_ref();
        let target = if up == ECHO_UPSTREAM {
            Some(Target::Echo)
        } else if let Some(idx) = f.upstream.keys().position(|k| k == up) {
            Some(Target::Pool(idx))
        } else {
            errs.at(
                r.upstream.span(),
                format!("{key}.upstream"),
                format!("no upstream named \"{up}\" (define [upstream.{up}] or use \"{ECHO_UPSTREAM}\")"),
            );
            None
        };
        let mut cors_idx = None;
        if let Some(c) = &r.cors {
            cors_idx = cors.iter().position(|n| &n.name == c.get_ref());
            if !f.cors.contains_key(c.get_ref()) {
                errs.at(
                    c.span(),
                    format!("{key}.cors"),
                    format!(
                        "no CORS policy named \"{0}\" (define [cors.{0}])",
                        c.get_ref()
                    ),
                );
            }
        }
        let mut profile_idx = 0;
        if let Some(p) = &r.propagation {
            match profiles.iter().position(|n| &n.name == p.get_ref()) {
                Some(i) => profile_idx = i,
                None => errs.at(
                    p.span(),
                    format!("{key}.propagation"),
                    format!(
                        "no propagation profile named \"{0}\" (define [propagation.{0}])",
                        p.get_ref()
                    ),
                ),
            }
        }
        if let Some(target) = target {
            routes.push(Route {
                name,
                host,
                path: path.clone(),
                target,
                cors: cors_idx,
                propagation: profile_idx,
            });
        }
    }

    if !errs.list.is_empty() {
        errs.list.sort_by_key(|e| e.line);
        return Err(errs.list);
    }
    Ok(Config {
        server: ServerSettings {
            listen,
            threads: threads as usize,
            work_stealing: s.work_stealing,
            shutdown_grace: Duration::from_secs(grace as u64),
            shutdown_timeout: Duration::from_secs(drain as u64),
            pid_file: s.pid_file.clone(),
            upgrade_sock: s.upgrade_sock.clone(),
            upstream_keepalive_pool: pool as usize,
            read_buffer_bytes: read_buffer as usize,
        },
        admin_listen: f.admin.listen.get_ref().clone(),
        service: ServiceSettings {
            name: f.service.name.clone(),
            env: f.service.env.clone(),
            version: f.service.version.clone(),
        },
        access_log: AccessLog {
            enabled: f.access_log.enabled,
            format,
        },
        upstreams,
        routes,
        cors,
        profiles,
        export,
    })
}

/// The CA certificates of a PEM file (`upstream.NAME.ca_file`), read once at start-up.
fn load_ca_file(path: &str) -> Result<Box<[pingora::tls::x509::X509]>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let certs = pingora::tls::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{path:?} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs.into_boxed_slice())
}
