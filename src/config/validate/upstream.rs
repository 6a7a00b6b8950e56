//! `[upstream.NAME]`: server pools.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::Problems;
use crate::config::description::UpstreamFile;
use crate::config::{At, PemFile, Upstream, UpstreamProtocol, ECHO_UPSTREAM};

pub(super) fn upstreams(
    p: &mut Problems,
    pools: &BTreeMap<String, At<UpstreamFile>>,
) -> Vec<Upstream> {
    pools.iter().map(|(name, u)| upstream(p, name, u)).collect()
}

fn upstream(p: &mut Problems, name: &str, u: &At<UpstreamFile>) -> Upstream {
    let key = format!("upstream.{name}");
    // Pools made from Kubernetes Services are named `k8s:...`, out of the file's reach.
    let from_cluster = u.get_ref().from_cluster;
    if name == ECHO_UPSTREAM || (name.contains(':') && !from_cluster) {
        p.at(
            u.at(),
            key.clone(),
            "an upstream name may not contain ':' (builtin:echo is reserved)",
        );
    }
    let UpstreamFile {
        servers,
        connect_timeout_ms,
        read_timeout_ms,
        write_timeout_ms,
        tls,
        sni,
        verify_cert,
        ca_file,
        health_check,
        resolve_interval_ms,
        backends,
        from_cluster: _,
        protocol,
        max_h2_streams,
        preserve_header_case,
    } = u.get_ref();
    if servers.get_ref().is_empty() && !from_cluster {
        p.at(
            servers.at(),
            format!("{key}.servers"),
            "the server list is empty: give at least one host:port",
        );
    }
    let mut list = Vec::new();
    for (i, srv) in servers.get_ref().iter().enumerate() {
        match check_host_port(srv.get_ref()) {
            Ok(()) => list.push(srv.get_ref().clone()),
            Err(m) => p.at(srv.at(), format!("{key}.servers[{i}]"), m),
        }
    }
    let connect_timeout = p.ms(connect_timeout_ms, format!("{key}.connect_timeout_ms"));
    let read_timeout = p.ms(read_timeout_ms, format!("{key}.read_timeout_ms"));
    let write_timeout = p.ms(write_timeout_ms, format!("{key}.write_timeout_ms"));
    let resolve_interval = p.ms(resolve_interval_ms, format!("{key}.resolve_interval_ms"));
    let health_check = health_check.as_ref().map(|h| {
        p.ms(
            &h.get_ref().interval_ms,
            format!("{key}.health_check.interval_ms"),
        )
    });
    if *tls && *verify_cert && sni.as_deref() == Some("") {
        // Pingora sends no SNI then and skips certificate verification altogether.
        p.at(
            u.at(),
            format!("{key}.sni"),
            "is empty, which turns certificate verification off: name the upstream's \
             host, or set verify_cert = false",
        );
    }
    let ca = ca_file.as_ref().and_then(|path| {
        let key = format!("{key}.ca_file");
        if !tls {
            p.at(path.at(), key, "needs tls = true");
            return None;
        }
        match read_ca_file(path.get_ref()) {
            Ok(pem) => Some(PemFile {
                path: path.get_ref().clone(),
                pem,
            }),
            Err(why) => {
                p.at(path.at(), key, why);
                None
            }
        }
    });
    let protocol = upstream_protocol(p, &key, protocol.as_ref(), *tls);
    let max_h2_streams = p.within(
        max_h2_streams,
        &format!("{key}.max_h2_streams"),
        1..=10_000,
        1,
    ) as usize;
    let sni = sni.clone().unwrap_or_else(|| {
        list.first()
            .and_then(|s| s.rsplit_once(':').map(|(h, _)| h.to_string()))
            .unwrap_or_default()
    });
    Upstream {
        name: name.to_string(),
        servers: list,
        connect_timeout,
        read_timeout,
        write_timeout,
        tls: *tls,
        sni,
        verify_cert: *verify_cert,
        ca,
        health_check,
        resolve_interval,
        backends: backends.clone(),
        protocol,
        max_h2_streams,
        preserve_header_case: *preserve_header_case,
    }
}

/// `protocol`: `h2` needs TLS (it is chosen by ALPN), `h2c` needs a cleartext connection.
fn upstream_protocol(
    p: &mut Problems,
    key: &str,
    protocol: Option<&At<String>>,
    tls: bool,
) -> UpstreamProtocol {
    let Some(v) = protocol else {
        return UpstreamProtocol::Http1;
    };
    let key = format!("{key}.protocol");
    match (v.get_ref().as_str(), tls) {
        ("http1", _) => UpstreamProtocol::Http1,
        ("h2", true) => UpstreamProtocol::H2,
        ("h2c", false) => UpstreamProtocol::H2c,
        ("h2", false) => {
            p.at(
                v.at(),
                key,
                "\"h2\" is HTTP/2 over TLS (tls = true); cleartext HTTP/2 is \"h2c\"",
            );
            UpstreamProtocol::Http1
        }
        ("h2c", true) => {
            p.at(
                v.at(),
                key,
                "\"h2c\" is cleartext HTTP/2; over TLS it is \"h2\"",
            );
            UpstreamProtocol::Http1
        }
        (other, _) => {
            p.at(
                v.at(),
                key,
                format!("must be \"http1\", \"h2\" or \"h2c\", got \"{other}\""),
            );
            UpstreamProtocol::Http1
        }
    }
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

/// The bytes of a PEM file of CA certificates, checked to parse and hold a certificate.
pub(super) fn read_ca_file(path: &str) -> Result<Arc<[u8]>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    crate::tls::parse_certificates(&pem).map_err(|why| format!("{path:?} {why}"))?;
    Ok(Arc::from(pem))
}
