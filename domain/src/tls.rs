//! TLS for `unseen serve`: a certificate chain and its key from PEM files,
//! served with rustls (ring) over HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{path}: {reason}; give a PEM file (`-----BEGIN CERTIFICATE-----`, or a PKCS#8, PKCS#1 or SEC1 private key)"
    )]
    Pem { path: String, reason: String },
    #[error("the certificate and the key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What accepts a server's TLS connections.
#[derive(Clone)]
pub struct Tls(pub tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

/// rustls over *ring*, as the cluster's members use it too.
pub use unseen_cluster::tls::ring_provider;

/// An acceptor for connections with the certificate chain in `cert` and
/// its private key in `key` (both PEM).
pub fn acceptor(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let pem = |path: &Path, reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = ring_provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // HTTP/2 for clients that offer it, HTTP/1.1 for the rest.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}
