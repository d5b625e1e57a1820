//! TLS for `rediss://` nodes: the rustls crypto provider and trust anchors.
//!
//! redis-rs does the TLS handshake with rustls, built here without a default crypto
//! provider feature, so the process needs one installed before the first handshake —
//! otherwise rustls panics inside the connect. [`ensure_crypto_provider`] installs
//! *ring* once; if the application installed a provider of its own first, that one
//! stays (installing is first-come, first-served).
//!
//! Certificate verification is always on: against the platform's trust store by
//! default, or against a CA file given with `?ca=/path/ca.pem` on the URL or
//! [`crate::LockerBuilder::ca_cert`]. Turning it off takes
//! [`crate::LockerBuilder::danger_accept_invalid_certs`], on purpose a long name.

use std::path::Path;
use std::sync::Once;

/// Installs the *ring* crypto provider as the process default, once. Harmless when
/// another provider is already installed.
pub(crate) fn ensure_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means a provider is already installed (by the application): keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Reads a PEM file of CA certificates and checks that it holds at least one
/// certificate, so a wrong path or a key file is reported when the locker is built,
/// not as a handshake failure later.
///
/// # Errors
///
/// A message naming the path and what is wrong with it (never the file's contents).
pub(crate) fn read_ca_pem(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read CA certificate file {}: {e}", path.display()))?;
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        if cert.is_err() {
            return Err(format!(
                "CA certificate file {} is not valid PEM",
                path.display()
            ));
        }
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "CA certificate file {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// Whether a redis-rs error comes from the TLS layer refusing the peer (unknown CA,
/// wrong host name, expired certificate …): a configuration problem, not an outage.
pub(crate) fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(_)
            );
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_certificate_error(inner)
        {
            return true;
        }
        current = err.source();
    }
    // Some transports flatten the cause into text.
    let text = e.to_string();
    text.contains("invalid peer certificate") || text.contains("UnknownIssuer")
}
