//! Validation of the file structs into the internal [`Config`]: every problem is collected
//! (not just the first), each with its line, key path and reason.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::file::FileConfig;
use super::{
    line_of, AccessLog, AccessLogFormat, Config, ConfigError, Route, ServerSettings,
    ServiceSettings, Target, Upstream, ECHO_UPSTREAM,
};
use crate::routing::HostMatch;

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
            health_check,
        });
    }

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
        if let Some(c) = &r.cors {
            if !f.cors.contains_key(c.get_ref()) {
                errs.at(
                    c.span(),
                    format!("{key}.cors"),
                    format!(
                        "no CORS policy named \"{}\" (define [cors.{}])",
                        c.get_ref(),
                        c.get_ref()
                    ),
                );
            }
        }
        if let Some(p) = &r.propagation {
            if !f.propagation.contains_key(p.get_ref()) {
                errs.at(
                    p.span(),
                    format!("{key}.propagation"),
                    format!(
                        "no propagation profile named \"{}\" (define [propagation.{}])",
                        p.get_ref(),
                        p.get_ref()
                    ),
                );
            }
        }
        if let Some(target) = target {
            routes.push(Route {
                name,
                host,
                path: path.clone(),
                target,
                cors: r.cors.as_ref().map(|c| c.get_ref().clone()),
                propagation: r.propagation.as_ref().map(|p| p.get_ref().clone()),
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
    })
}
