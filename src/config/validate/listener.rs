//! `server.listen` and `[[server.listener]]`: addresses, TLS certificates (read and checked
//! here: readable, key matching, valid now, names covered), HTTP/2, redirect and HSTS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::Problems;
use crate::config::description::{
    default_listen, CertificateFile, HstsFile, ListenerFile, TlsFile,
};
use crate::config::{At, Certificate, Listener, ListenerBehaviour, ListenerTls, Location, PemFile};
use crate::tls::{self, PairError};

/// The longest HSTS max-age accepted (two years, what the preload list asks for at most).
const HSTS_MAX_AGE_LIMIT: i64 = 63_072_000;
/// The shortest max-age the HSTS preload list accepts (one year).
const HSTS_PRELOAD_MIN: i64 = 31_536_000;

/// Every listener: the `listen` strings (plain HTTP/1.1) first, then the tables. With neither,
/// the default `0.0.0.0:8080`.
pub(super) fn listeners(
    p: &mut Problems,
    listen: &Option<Vec<At<String>>>,
    tables: &[At<ListenerFile>],
    now: i64,
) -> Vec<Listener> {
    let default = [default_listen()];
    let strings: &[At<String>] = match listen {
        Some(l) => l,
        None if tables.is_empty() => &default,
        None => &[],
    };
    if strings.is_empty() && tables.is_empty() {
        p.at(
            Location::Default,
            "server.listen",
            "at least one listen address is required",
        );
    }
    let mut out = Vec::new();
    let mut seen: HashMap<SocketAddr, String> = HashMap::new();
    let mut check_address = |p: &mut Problems, a: &At<String>, key: String| {
        let Ok(sa) = a.get_ref().parse::<SocketAddr>() else {
            p.at(
                a.at(),
                key,
                format!(
                    "`{}` is not an IP:port address (e.g. 0.0.0.0:8080)",
                    a.get_ref()
                ),
            );
            return false;
        };
        if sa.port() != 0 {
            if let Some(first) = seen.insert(sa, key.clone()) {
                p.at(a.at(), key, format!("`{sa}` is already {first}"));
                return false;
            }
        }
        true
    };
    for (i, a) in strings.iter().enumerate() {
        if check_address(p, a, format!("server.listen[{i}]")) {
            out.push(Listener {
                address: a.get_ref().clone(),
                tls: None,
                serve: plain_behaviour(),
            });
        }
    }
    // The port redirects name by default: the first TLS listener's.
    let https_port = tables
        .iter()
        .find(|t| t.get_ref().tls.is_some())
        .and_then(|t| t.get_ref().address.get_ref().parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|p| *p != 0)
        .unwrap_or(443);
    for (i, t) in tables.iter().enumerate() {
        let key = format!("server.listener[{i}]");
        let ok = check_address(p, &t.get_ref().address, format!("{key}.address"));
        let l = listener(p, &key, t, https_port, now);
        if ok {
            out.push(l);
        }
    }
    out
}

/// What a `listen` string's listener does.
fn plain_behaviour() -> ListenerBehaviour {
    ListenerBehaviour {
        h2: false,
        h2c: false,
        redirect_to_https: None,
        hsts: None,
        proxy_protocol: false,
    }
}

fn listener(
    p: &mut Problems,
    key: &str,
    t: &At<ListenerFile>,
    default_https_port: u16,
    now: i64,
) -> Listener {
    let ListenerFile {
        address,
        tls,
        h2,
        h2c,
        redirect_to_https,
        https_port,
        hsts,
        proxy_protocol,
    } = t.get_ref();
    let is_tls = tls.is_some();
    if is_tls && *h2c.get_ref() {
        p.at(
            h2c.at(),
            format!("{key}.h2c"),
            "is for plain listeners; a TLS listener offers HTTP/2 by ALPN (h2 = true)",
        );
    }
    if is_tls && *redirect_to_https.get_ref() {
        p.at(
            redirect_to_https.at(),
            format!("{key}.redirect_to_https"),
            "is for plain listeners; this one already speaks TLS",
        );
    }
    let port = match https_port {
        Some(v) if !*redirect_to_https.get_ref() => {
            p.at(
                v.at(),
                format!("{key}.https_port"),
                "needs redirect_to_https = true",
            );
            default_https_port
        }
        Some(v) => p.within(v, &format!("{key}.https_port"), 1..=65535, 443) as u16,
        None => default_https_port,
    };
    if hsts.is_some() && !is_tls {
        p.at(
            hsts.as_ref().map(At::at).unwrap_or(Location::Default),
            format!("{key}.hsts"),
            "needs tls: browsers ignore Strict-Transport-Security over plain HTTP",
        );
    }
    let hsts = hsts.as_ref().map(|h| hsts_value(p, key, h));
    let tls = tls
        .as_ref()
        .and_then(|tls| listener_tls(p, &format!("{key}.tls"), tls, t.at(), now));
    Listener {
        address: address.get_ref().clone(),
        tls,
        serve: ListenerBehaviour {
            h2: is_tls && *h2,
            h2c: *h2c.get_ref() && !is_tls,
            redirect_to_https: redirect_to_https.get_ref().then_some(port),
            hsts,
            proxy_protocol: *proxy_protocol.get_ref(),
        },
    }
}

/// The `Strict-Transport-Security` header value.
fn hsts_value(p: &mut Problems, key: &str, h: &At<HstsFile>) -> String {
    let HstsFile {
        max_age_seconds,
        include_subdomains,
        preload,
    } = h.get_ref();
    let age = p.within(
        max_age_seconds,
        &format!("{key}.hsts.max_age_seconds"),
        0..=HSTS_MAX_AGE_LIMIT,
        0,
    );
    if *preload && (!include_subdomains || age < HSTS_PRELOAD_MIN) {
        p.at(
            h.at(),
            format!("{key}.hsts.preload"),
            format!(
                "the preload list needs include_subdomains = true and max_age_seconds of at \
                 least {HSTS_PRELOAD_MIN}"
            ),
        );
    }
    let mut v = format!("max-age={age}");
    if *include_subdomains {
        v.push_str("; includeSubDomains");
    }
    if *preload {
        v.push_str("; preload");
    }
    v
}

fn listener_tls(
    p: &mut Problems,
    key: &str,
    t: &TlsFile,
    listener_at: Location,
    now: i64,
) -> Option<ListenerTls> {
    let TlsFile { certificates } = t;
    if certificates.is_empty() {
        p.at(
            listener_at,
            format!("{key}.certificates"),
            "is empty: give at least one { cert_file, key_file }",
        );
        return None;
    }
    let mut certs = Vec::new();
    let mut default = None;
    let mut claimed: HashMap<String, usize> = HashMap::new();
    let before = p.list.len();
    for (j, c) in certificates.iter().enumerate() {
        let key = format!("{key}.certificates[{j}]");
        let Some(cert) = certificate(p, &key, c, now) else {
            continue;
        };
        for h in &cert.hosts {
            if let Some(first) = claimed.insert(h.clone(), j) {
                p.at(
                    c.at(),
                    format!("{key}.hosts"),
                    format!("`{h}` is already served by certificates[{first}]"),
                );
            }
        }
        if *c.get_ref().default.get_ref() {
            if default.is_some() {
                p.at(
                    c.get_ref().default.at(),
                    format!("{key}.default"),
                    "only one certificate of a listener can be the default",
                );
            }
            default = Some(certs.len());
        }
        certs.push(cert);
    }
    if p.list.len() > before {
        return None;
    }
    Some(ListenerTls {
        certificates: certs,
        default: default.unwrap_or(0),
    })
}

/// Read and check one certificate/key pair.
fn certificate(
    p: &mut Problems,
    key: &str,
    c: &At<CertificateFile>,
    now: i64,
) -> Option<Certificate> {
    let CertificateFile {
        cert_file,
        key_file,
        hosts,
        default: _,
    } = c.get_ref();
    let cert = read(p, &format!("{key}.cert_file"), cert_file);
    let pkey = read(p, &format!("{key}.key_file"), key_file);
    let (cert, pkey) = (cert?, pkey?);
    let info = match tls::check_pair(&cert.pem, &pkey.pem) {
        Ok(info) => info,
        Err(PairError::Cert(why)) => {
            let msg = format!("{:?} {why}", cert.path);
            p.at(cert_file.at(), format!("{key}.cert_file"), msg);
            return None;
        }
        Err(PairError::Key(why)) => {
            let msg = format!("{:?} {why}", pkey.path);
            p.at(key_file.at(), format!("{key}.key_file"), msg);
            return None;
        }
        Err(PairError::Mismatch) => {
            let msg = format!("{:?} is not the private key of {:?}", pkey.path, cert.path);
            p.at(key_file.at(), format!("{key}.key_file"), msg);
            return None;
        }
    };
    if info.not_after <= now {
        let msg = format!("{:?} expired on {}", cert.path, info.not_after_text);
        p.at(cert_file.at(), format!("{key}.cert_file"), msg);
    }
    if info.not_before > now {
        let msg = format!(
            "{:?} is not valid before {}",
            cert.path, info.not_before_text
        );
        p.at(cert_file.at(), format!("{key}.cert_file"), msg);
    }
    let names: Vec<String> = match hosts {
        None => {
            if info.dns_names.is_empty() {
                p.at(
                    cert_file.at(),
                    format!("{key}.cert_file"),
                    format!(
                        "{:?} names no DNS host in its subjectAltName: give `hosts`",
                        cert.path
                    ),
                );
            }
            info.dns_names.clone()
        }
        Some(list) => {
            if list.get_ref().is_empty() {
                p.at(
                    list.at(),
                    format!("{key}.hosts"),
                    "is empty: leave it out to use the certificate's names",
                );
            }
            let mut out = Vec::new();
            for (k, h) in list.get_ref().iter().enumerate() {
                let host = h.get_ref().to_ascii_lowercase();
                let hkey = format!("{key}.hosts[{k}]");
                if !tls::valid_host(&host) {
                    p.at(
                        h.at(),
                        hkey,
                        format!("`{host}` is not a host name or a `*.` wildcard"),
                    );
                } else if !tls::covers(&info.dns_names, &host) {
                    p.at(
                        h.at(),
                        hkey,
                        format!(
                            "`{host}` is not among the names of {:?} ({})",
                            cert.path,
                            info.dns_names.join(", ")
                        ),
                    );
                } else {
                    out.push(host);
                }
            }
            out
        }
    };
    Some(Certificate {
        cert,
        key: pkey,
        hosts: names,
        not_after: info.not_after,
    })
}

fn read(p: &mut Problems, key: &str, path: &At<String>) -> Option<PemFile> {
    match std::fs::read(path.get_ref()) {
        Ok(pem) => Some(PemFile {
            path: path.get_ref().clone(),
            pem: Arc::from(pem),
        }),
        Err(e) => {
            p.at(
                path.at(),
                key,
                format!("cannot read {:?}: {e}", path.get_ref()),
            );
            None
        }
    }
}
