//! PEM certificates and keys over the TLS library Pingora is built with (OpenSSL), shared by
//! config validation (to refuse a bad file with its line) and the runtime (to use it), and the
//! pure rules of server names: which names a certificate covers, and which certificate SNI picks.

use std::collections::HashMap;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

/// The certificates of a PEM file; an error says why there are none usable.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<X509>, String> {
    let certs = X509::stack_from_pem(pem).map_err(|e| format!("is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_string());
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8 or the traditional RSA/EC forms, unencrypted).
pub fn parse_private_key(pem: &[u8]) -> Result<PKey<Private>, String> {
    PKey::private_key_from_pem(pem)
        .map_err(|e| format!("is not an unencrypted PEM private key: {e}"))
}

/// What validation needs to know about a certificate chain and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// The leaf's subjectAltName DNS names, lower case.
    pub dns_names: Vec<String>,
    /// The leaf's validity, as Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The same dates as OpenSSL prints them (`Jan  1 00:00:00 2030 GMT`).
    pub not_before_text: String,
    pub not_after_text: String,
}

/// Parse a chain (leaf first) and its key, and check that the key is the leaf's.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<ChainInfo, PairError> {
    let chain = parse_certificates(cert_pem).map_err(PairError::Cert)?;
    let key = parse_private_key(key_pem).map_err(PairError::Key)?;
    let leaf = &chain[0];
    let public = leaf
        .public_key()
        .map_err(|e| PairError::Cert(format!("has no readable public key: {e}")))?;
    if !public.public_eq(&key) {
        return Err(PairError::Mismatch);
    }
    let dns_names = leaf
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(|d| d.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    Ok(ChainInfo {
        dns_names,
        not_before: unix_time(leaf.not_before()).map_err(PairError::Cert)?,
        not_after: unix_time(leaf.not_after()).map_err(PairError::Cert)?,
        not_before_text: leaf.not_before().to_string(),
        not_after_text: leaf.not_after().to_string(),
    })
}

/// Why a certificate/key pair is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairError {
    /// The certificate file (why).
    Cert(String),
    /// The key file (why).
    Key(String),
    /// The key is not the certificate's.
    Mismatch,
}

fn unix_time(t: &Asn1TimeRef) -> Result<i64, String> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let d = epoch
        .diff(t)
        .map_err(|e| format!("has an unreadable validity date: {e}"))?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Is `host` a server name a certificate may be chosen for: a DNS name, or `*.` and a DNS name
/// of at least two labels (a wildcard covers exactly one label, never the apex)?
pub fn valid_host(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let labels: Vec<&str> = name.split('.').collect();
    let dns = !name.is_empty()
        && name.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    dns && (!host.starts_with("*.") || labels.len() >= 2)
}

/// Does a certificate whose subjectAltName holds `names` cover `host` (a name or a wildcard)?
/// RFC 6125: a wildcard name covers one left-most label; a wildcard host is covered only by
/// the same wildcard.
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    names.iter().any(|n| {
        if *n == host {
            return true;
        }
        match (n.strip_prefix("*."), host.split_once('.')) {
            (Some(parent), Some((first, rest))) => first != "*" && rest == parent,
            _ => false,
        }
    })
}

/// Which certificate of a listener SNI picks: an exact name first, then a wildcard for the
/// name's parent, then the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniIndex {
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, usize>,
    default: usize,
}

impl SniIndex {
    /// `hosts[i]` are the names certificate `i` is chosen for; the first certificate to name a
    /// host keeps it.
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a [String]>, default: usize) -> SniIndex {
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for (i, names) in hosts.into_iter().enumerate() {
            for h in names {
                match h.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(h.clone()).or_insert(i),
                };
            }
        }
        SniIndex {
            exact,
            wildcard,
            default,
        }
    }

    /// The certificate for a ClientHello's server name (None: the client sent none).
    pub fn pick(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else {
            return self.default;
        };
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(i) = self.exact.get(&name) {
            return *i;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    #[rustfmt::skip]
    fn covers_follows_rfc_6125() {
        let table: &[(&[&str], &str, bool, &str)] = &[
            (&["api.example.com"], "api.example.com", true, "exact"),
            (&["api.example.com"], "API.example.com", true, "case-insensitive"),
            (&["api.example.com"], "www.example.com", false, "another name"),
            (&["*.example.com"], "api.example.com", true, "wildcard, one label"),
            (&["*.example.com"], "a.b.example.com", false, "wildcard covers one label only"),
            (&["*.example.com"], "example.com", false, "wildcard never covers the apex"),
            (&["*.example.com"], "*.example.com", true, "the same wildcard"),
            (&["api.example.com"], "*.example.com", false, "a name does not cover a wildcard"),
            (&[], "example.com", false, "no names"),
        ];
        for (cert, host, want, why) in table {
            assert_eq!(covers(&names(cert), host), *want, "{cert:?} {host}: {why}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn valid_host_accepts_names_and_one_label_wildcards() {
        let table: &[(&str, bool, &str)] = &[
            ("localhost", true, "one label"),
            ("api.example.com", true, "a name"),
            ("*.example.com", true, "a wildcard"),
            ("*.com", false, "a wildcard needs two labels under it"),
            ("a.*.example.com", false, "a wildcard only on the left"),
            ("*", false, "a bare star"),
            ("", false, "empty"),
            ("-a.example.com", false, "a label starting with '-'"),
            ("a_b.example.com", false, "an underscore"),
            ("127.0.0.1:443", false, "a port"),
        ];
        for (host, want, why) in table {
            assert_eq!(valid_host(host), *want, "{host}: {why}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn sni_picks_exact_then_wildcard_then_default() {
        let hosts = [names(&["a.example.com"]), names(&["*.example.com", "b.example.com"]), names(&["other.test"])];
        let idx = SniIndex::new(hosts.iter().map(Vec::as_slice), 2);
        let table: &[(Option<&str>, usize, &str)] = &[
            (Some("a.example.com"), 0, "exact beats the wildcard"),
            (Some("A.EXAMPLE.COM."), 0, "case and a trailing dot ignored"),
            (Some("b.example.com"), 1, "exact on the second"),
            (Some("c.example.com"), 1, "wildcard"),
            (Some("x.c.example.com"), 2, "wildcard is one label: default"),
            (Some("example.com"), 2, "apex: default"),
            (Some("unknown.test"), 2, "unknown: default"),
            (None, 2, "no SNI: default"),
        ];
        for (sni, want, why) in table {
            assert_eq!(idx.pick(*sni), *want, "{sni:?}: {why}");
        }
    }
}
