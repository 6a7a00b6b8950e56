//! TLS listeners: the acceptor settings (TLS 1.2 and 1.3, Mozilla "intermediate" ciphers, ALPN)
//! and Pingora's certificate callback, which picks the certificate by SNI from the *current*
//! runtime on every handshake, so reloaded certificates serve the next connection.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{TlsAccept, ALPN};
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::ssl::{NameType, SslVersion};

use crate::runtime::tls::{CertificateSet, ServedCertificate};
use crate::runtime::Live;

/// Pingora's certificate callback for one listener.
pub struct CertificateCallback {
    live: Arc<Live>,
    /// The listener's address as configured: its key in the runtime's certificate store.
    listener: String,
    /// The certificates the listener started with, used while a reload that removed this
    /// listener (or its TLS) waits for a restart.
    initial: Arc<CertificateSet>,
}

#[async_trait]
impl TlsAccept for CertificateCallback {
    /// Mid-handshake, after the ClientHello: install the certificate SNI asks for.
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let rt = self.live.snapshot();
        let set = rt.certificates.get(&self.listener).unwrap_or(&self.initial);
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_owned);
        if let Err(e) = install(ssl, set.pick(sni.as_deref())) {
            log::warn!(
                "listener {}: cannot use the certificate for {sni:?}: {e}",
                self.listener
            );
        }
    }
}

fn install(ssl: &mut TlsRef, cert: &ServedCertificate) -> Result<(), String> {
    let (leaf, intermediates) = cert.chain.split_first().ok_or("empty chain")?;
    ext::ssl_use_certificate(ssl, leaf).map_err(|e| e.to_string())?;
    for c in intermediates {
        ext::ssl_add_chain_cert(ssl, c).map_err(|e| e.to_string())?;
    }
    ext::ssl_use_private_key(ssl, &cert.key).map_err(|e| e.to_string())
}

/// The TLS settings of one listener: Mozilla intermediate (TLS 1.2 and 1.3), ALPN `h2,
/// http/1.1` when `h2`, and certificates from the live runtime.
pub fn settings(live: &Arc<Live>, listener: &str, h2: bool) -> anyhow::Result<TlsSettings> {
    let initial = live
        .snapshot()
        .certificates
        .get(listener)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("listener {listener}: no certificates"))?;
    let callback = CertificateCallback {
        live: live.clone(),
        listener: listener.to_string(),
        initial,
    };
    let mut tls = TlsSettings::with_callbacks(Box::new(callback))?;
    tls.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    tls.set_alpn(if h2 { ALPN::H2H1 } else { ALPN::H1 });
    Ok(tls)
}
