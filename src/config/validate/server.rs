//! `[server]`, `[admin]`, `[service]` and `[access_log]`.

use std::net::SocketAddr;
use std::time::Duration;

use super::Problems;
use crate::config::description::{AccessLogFile, AdminFile, ServerFile, ServiceFile};
use crate::config::{
    AccessLog, AccessLogFormat, At, InspectSettings, Location, ServerSettings, ServiceSettings,
};
use crate::forwarded::TrustedProxies;

pub(super) fn server(p: &mut Problems, s: &ServerFile, now: i64) -> ServerSettings {
    let ServerFile {
        listen,
        listener,
        threads,
        work_stealing,
        shutdown_grace_seconds,
        shutdown_timeout_seconds,
        pid_file,
        upgrade_sock,
        upstream_keepalive_pool,
        read_buffer_bytes,
        trusted_proxies,
        proxy_protocol_timeout_ms,
        max_connections,
        header_timeout_ms,
        keepalive_timeout_seconds,
        max_header_bytes,
        max_headers,
        max_uri_bytes,
    } = s;
    let listeners = super::listener::listeners(p, listen, listener, now);
    let threads = p.within(threads, "server.threads", 1..=1024, 1);
    let grace = p.within(
        shutdown_grace_seconds,
        "server.shutdown_grace_seconds",
        0..=3600,
        0,
    );
    let drain = p.within(
        shutdown_timeout_seconds,
        "server.shutdown_timeout_seconds",
        0..=3600,
        0,
    );
    let pool = p.within(
        upstream_keepalive_pool,
        "server.upstream_keepalive_pool",
        0..=1_000_000,
        0,
    );
    let read_buffer = p.within(
        read_buffer_bytes,
        "server.read_buffer_bytes",
        1024..=1024 * 1024,
        4096,
    );
    let mut nets = Vec::new();
    for (i, c) in trusted_proxies.iter().enumerate() {
        match super::cidr(c.get_ref()) {
            Ok(n) => nets.push(n),
            Err(m) => p.at(c.at(), format!("server.trusted_proxies[{i}]"), m),
        }
    }
    // A PROXY protocol listener with nobody trusted reads every header and believes none: the
    // client address would always be the balancer's, which is never what the option is for.
    if nets.is_empty() {
        for (i, t) in listener.iter().enumerate() {
            let pp = &t.get_ref().proxy_protocol;
            if *pp.get_ref() {
                p.at(
                    pp.at(),
                    format!("server.listener[{i}].proxy_protocol"),
                    "needs [server] trusted_proxies: list the addresses of the balancers that \
                     send the header, or their client addresses are ignored",
                );
            }
        }
    }
    let pp_timeout = p.within(
        proxy_protocol_timeout_ms,
        "server.proxy_protocol_timeout_ms",
        1..=60_000,
        5_000,
    );
    let max_connections = p.within(
        max_connections,
        "server.max_connections",
        1..=1_000_000,
        10_000,
    );
    let header_timeout = p.within(
        header_timeout_ms,
        "server.header_timeout_ms",
        100..=3_600_000,
        60_000,
    );
    let keepalive = p.within(
        keepalive_timeout_seconds,
        "server.keepalive_timeout_seconds",
        1..=3600,
        60,
    );
    // Pingora refuses a head over 1 MiB or with more than 256 header lines on its own, with
    // an empty 400: stitch's limits stay within those.
    let max_header_bytes = p.within(
        max_header_bytes,
        "server.max_header_bytes",
        1024..=1024 * 1024,
        60 * 1024,
    );
    let max_headers = p.within(max_headers, "server.max_headers", 1..=256, 100);
    let max_uri_bytes = p.within(
        max_uri_bytes,
        "server.max_uri_bytes",
        64..=1024 * 1024,
        8 * 1024,
    );
    ServerSettings {
        listeners,
        threads: threads as usize,
        work_stealing: *work_stealing,
        shutdown_grace: Duration::from_secs(grace as u64),
        shutdown_timeout: Duration::from_secs(drain as u64),
        pid_file: pid_file.clone(),
        upgrade_sock: upgrade_sock.clone(),
        upstream_keepalive_pool: pool as usize,
        read_buffer_bytes: read_buffer as usize,
        trusted_proxies: TrustedProxies::new(nets),
        proxy_protocol_timeout: Duration::from_millis(pp_timeout as u64),
        max_connections: max_connections as usize,
        header_timeout: Duration::from_millis(header_timeout as u64),
        keepalive_timeout: Duration::from_secs(keepalive as u64),
        limits: crate::http1::Limits {
            max_header_bytes: max_header_bytes as usize,
            max_headers: max_headers as usize,
            max_uri_bytes: max_uri_bytes as usize,
        },
    }
}

pub(super) fn admin(p: &mut Problems, a: &AdminFile) -> (String, InspectSettings) {
    let AdminFile {
        listen,
        inspect_requests,
        dd_site,
    } = a;
    if listen.get_ref().parse::<SocketAddr>().is_err() {
        p.at(
            listen.at(),
            "admin.listen",
            format!(
                "`{}` is not an IP:port address (e.g. 127.0.0.1:9901)",
                listen.get_ref()
            ),
        );
    }
    let requests = p.within(inspect_requests, "admin.inspect_requests", 0..=100_000, 0);
    let dd_site = dd_site.as_ref().and_then(|s| {
        let v = s.get_ref().trim();
        let ok = !v.is_empty()
            && v.contains('.')
            && v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !ok {
            p.at(
                s.at(),
                "admin.dd_site",
                format!("`{v}` is not a Datadog site name (e.g. datadoghq.com, datadoghq.eu, us3.datadoghq.com)"),
            );
        }
        ok.then(|| v.to_string())
    });
    (
        listen.get_ref().clone(),
        InspectSettings {
            requests: requests as usize,
            dd_site,
        },
    )
}

pub(super) fn service(s: &ServiceFile) -> ServiceSettings {
    let ServiceFile { name, env, version } = s;
    ServiceSettings {
        name: name.clone(),
        env: env.clone(),
        version: version.clone(),
    }
}

pub(super) fn access_log(p: &mut Problems, a: &AccessLogFile) -> AccessLog {
    let AccessLogFile { enabled, format } = a;
    let format = match format.as_ref().map(At::get_ref).map(String::as_str) {
        None | Some("text") => AccessLogFormat::Text,
        Some("json") => AccessLogFormat::Json,
        Some(other) => {
            p.at(
                format.as_ref().map(At::at).unwrap_or(Location::Default),
                "access_log.format",
                format!("must be \"text\" or \"json\", got \"{other}\""),
            );
            AccessLogFormat::Text
        }
    };
    AccessLog {
        enabled: *enabled,
        format,
    }
}
