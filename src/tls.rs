//! PEM certificates over the TLS library Pingora is built with (OpenSSL), shared by config
//! validation (to refuse a bad file with its line) and the runtime (to use it).

use pingora::tls::x509::X509;

/// The certificates of a PEM file; an error says why there are none usable.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<X509>, String> {
    let certs = X509::stack_from_pem(pem).map_err(|e| format!("is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_string());
    }
    Ok(certs)
}
