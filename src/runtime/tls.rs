//! The certificates of the TLS listeners, parsed once per runtime. The listener's handshake
//! callback (`proxy::handshake`) reads the *current* runtime's store, so a reload that changes
//! a certificate file serves the new certificate to the next handshake, while connections
//! already open keep the one they were made with.

use std::collections::HashMap;
use std::sync::Arc;

use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

use super::Runtime;
use crate::config::{Config, ListenerTls};
use crate::metrics::Metrics;
use crate::tls::SniIndex;

/// A certificate chain and its key, ready to hand to a handshake.
pub struct ServedCertificate {
    /// Leaf first, then the intermediates.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// One TLS listener's certificates and how SNI picks among them.
pub struct CertificateSet {
    pub certificates: Vec<ServedCertificate>,
    index: SniIndex,
}

impl CertificateSet {
    /// Parse a validated listener's certificates.
    pub fn new(t: &ListenerTls) -> Result<CertificateSet, String> {
        let mut certificates = Vec::new();
        for c in &t.certificates {
            let chain = crate::tls::parse_certificates(&c.cert.pem)
                .map_err(|e| format!("{:?} {e}", c.cert.path))?;
            let key = crate::tls::parse_private_key(&c.key.pem)
                .map_err(|e| format!("{:?} {e}", c.key.path))?;
            certificates.push(ServedCertificate { chain, key });
        }
        let index = SniIndex::new(t.certificates.iter().map(|c| c.hosts.as_slice()), t.default);
        Ok(CertificateSet {
            certificates,
            index,
        })
    }

    /// The certificate for a ClientHello's server name.
    pub fn pick(&self, sni: Option<&str>) -> &ServedCertificate {
        &self.certificates[self.index.pick(sni)]
    }
}

/// Every TLS listener's certificates, by the listener's configured address.
pub type CertificateStore = HashMap<String, Arc<CertificateSet>>;

/// Parse the certificates of every TLS listener of `config`.
pub fn store(config: &Config) -> Result<CertificateStore, String> {
    let mut out = HashMap::new();
    for l in &config.server.listeners {
        if let Some(t) = &l.tls {
            let set = CertificateSet::new(t).map_err(|e| format!("listener {}: {e}", l.address))?;
            out.insert(l.address.clone(), Arc::new(set));
        }
    }
    Ok(out)
}

/// `stitch_tls_certificate_expiry_timestamp_seconds{listener,name}` for the runtime now
/// serving; the label sets of certificates `old` served and `new` does not are removed.
pub fn record_expiry(metrics: &Metrics, old: Option<&Runtime>, new: &Runtime) {
    let labels = |rt: &Runtime| -> Vec<(String, String, i64)> {
        rt.config
            .server
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref().map(|t| (l, t)))
            .flat_map(|(l, t)| {
                t.certificates
                    .iter()
                    .map(|c| (l.address.clone(), c.name().to_string(), c.not_after))
            })
            .collect()
    };
    let now = labels(new);
    if let Some(old) = old {
        for (listener, name, _) in labels(old) {
            if !now.iter().any(|(l, n, _)| *l == listener && *n == name) {
                let _ = metrics
                    .tls_certificate_expiry
                    .remove_label_values(&[&listener, &name]);
            }
        }
    }
    for (listener, name, not_after) in now {
        metrics
            .tls_certificate_expiry
            .with_label_values(&[&listener, &name])
            .set(not_after as f64);
    }
}
