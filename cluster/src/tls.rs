//! Mutual TLS between the members of a cluster: the service, the scheduler
//! and the executors.
//!
//! Ballista's traffic carries plans (whose data keys are sealed, see
//! [`crate::seal`]), but also shuffle partitions and results: decrypted
//! rows below the noise. Every connection between members is therefore
//! TLS 1.2 or 1.3 (rustls over *ring*) in which *both* sides show a
//! certificate issued by the service's cluster authority, a CA whose key
//! the service keeps wrapped by its master key. A peer without such a
//! certificate (a stranger on the network, an executor that was never
//! enrolled) completes no handshake, so it can neither submit a job, poll
//! for tasks, nor fetch a shuffle file.
//!
//! Certificates name their member in the subject's common name and are all
//! issued for the one server name [`SERVER_NAME`]: a member is trusted for
//! holding an identity from this authority, wherever it runs, so
//! identities survive a move to another host. What an identity lets an
//! executor *read* is still decided per query by sealing (a revoked
//! executor keeps its certificate until it expires, and opens nothing).

use std::io::{Read as _, Write as _};

use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::EndpointOverrideFn;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, ServerTlsConfig};

use crate::ClusterError;

/// The server name every member's certificate is issued for, and every
/// client checks.
pub const SERVER_NAME: &str = "unseen-cluster";

/// The common name of the authority's own certificate.
const AUTHORITY_NAME: &str = "Unseen cluster authority";

/// Years a member's identity is valid, from the start of the year it was
/// issued in; enrolling again issues a new one.
const MEMBER_YEARS: i32 = 2;

/// Years the authority's certificate is valid.
const AUTHORITY_YEARS: i32 = 20;

/// How long a handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// rustls over *ring*, the crypto library of the rest of the project.
/// (rustls marks it deprecated because its key exchange is not
/// post-quantum; that needs aws-lc-rs, a second crypto library built from
/// C, which the project does not take on.)
#[allow(deprecated)]
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes *ring* the process's rustls provider, for the servers (tonic's)
/// that take the process default. Harmless when one is installed.
pub fn install_ring_provider() {
    let _ = Arc::unwrap_or_clone(ring_provider()).install_default();
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(format!("{what}: {e}"))
}

/// The year now, in UTC (for certificates' validity, to the year).
fn this_year() -> i32 {
    time::OffsetDateTime::now_utc().year()
}

/// The cluster authority: the CA that issues every member's identity. The
/// service keeps its key (wrapped by the master key); it never leaves the
/// service.
pub struct ClusterAuthority {
    certificate_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterAuthority(..)")
    }
}

impl ClusterAuthority {
    /// The parameters the authority's certificate is made from, whenever it
    /// is: issuing needs only its name, key identifier method and key
    /// usages, which these fix, so an authority read back from its key
    /// issues certificates that chain to the one first written.
    fn params(year: i32) -> Result<CertificateParams, ClusterError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_error("authority", e))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, AUTHORITY_NAME);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(year, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + AUTHORITY_YEARS, 1, 1);
        Ok(params)
    }

    /// A new authority with a fresh ECDSA P-256 key.
    pub fn generate() -> Result<ClusterAuthority, ClusterError> {
        let key = KeyPair::generate().map_err(|e| tls_error("a new authority key", e))?;
        let certificate = ClusterAuthority::params(this_year())?
            .self_signed(&key)
            .map_err(|e| tls_error("the authority's certificate", e))?;
        Ok(ClusterAuthority {
            certificate_pem: certificate.pem(),
            issuer: certificate,
            key,
        })
    }

    /// The authority written as [`ClusterAuthority::certificate_pem`] and
    /// [`ClusterAuthority::key_pem`].
    pub fn from_pem(
        certificate_pem: &str,
        key_pem: &str,
    ) -> Result<ClusterAuthority, ClusterError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| tls_error("the authority's key", e))?;
        let issuer = ClusterAuthority::params(this_year())?
            .self_signed(&key)
            .map_err(|e| tls_error("the authority's certificate", e))?;
        Ok(ClusterAuthority {
            certificate_pem: certificate_pem.to_string(),
            issuer,
            key,
        })
    }

    /// The authority's certificate, which every member trusts.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The authority's private key (PKCS#8 PEM), for the service to keep
    /// wrapped.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A new identity for member `member` (`service`, `scheduler`, or an
    /// executor's name), with a key of its own.
    pub fn issue(&self, member: &str) -> Result<Identity, ClusterError> {
        let key = KeyPair::generate().map_err(|e| tls_error("a new member key", e))?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|e| tls_error("a member certificate", e))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, member);
        params.distinguished_name = name;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let year = this_year();
        params.not_before = rcgen::date_time_ymd(year, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + MEMBER_YEARS, 1, 1);
        let certificate = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|e| tls_error("a member certificate", e))?;
        Ok(Identity {
            authority: self.certificate_pem.clone(),
            certificate: certificate.pem(),
            key: key.serialize_pem(),
            probe: Arc::default(),
        })
    }
}

/// What a member shows and trusts: its certificate and key, and the
/// authority's certificate. Its key never appears in `Debug` output.
#[derive(Clone)]
pub struct Identity {
    authority: String,
    certificate: String,
    key: String,
    /// The client settings of [`Identity::get`], made on its first call
    /// (the service probes the scheduler before every query).
    probe: Arc<std::sync::OnceLock<Arc<rustls::ClientConfig>>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity(..)")
    }
}

impl Identity {
    /// The member's certificate (PEM), which the ledger names by its hash.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate
    }

    /// The identity as PEM: the member's certificate, then the authority's,
    /// then the member's key (what [`Identity::from_pem`] reads).
    pub fn to_pem(&self) -> String {
        format!("{}{}{}", self.certificate, self.authority, self.key)
    }

    /// Reads an identity written by [`Identity::to_pem`]: exactly two
    /// certificates (the member's, then the authority's) and one private
    /// key, each checked to parse.
    pub fn from_pem(text: &str) -> Result<Identity, ClusterError> {
        let bad = |reason: &str| ClusterError::BadIdentity(reason.to_string());
        let mut certificates = Vec::new();
        let mut key = None;
        for (label, block) in pem_blocks(text) {
            if label == "CERTIFICATE" {
                certificates.push(block);
            } else if label.ends_with("PRIVATE KEY") {
                key = Some(block);
            }
        }
        let [certificate, authority] = <[String; 2]>::try_from(certificates)
            .map_err(|_| bad("it does not hold exactly two certificates"))?;
        let identity = Identity {
            authority,
            certificate,
            key: key.ok_or_else(|| bad("it holds no private key"))?,
            probe: Arc::default(),
        };
        identity.chain().map_err(|e| bad(&e.to_string()))?;
        identity.private_key().map_err(|e| bad(&e.to_string()))?;
        identity.roots().map_err(|e| bad(&e.to_string()))?;
        Ok(identity)
    }

    /// This identity, trusting `other`'s authority instead of its own: a
    /// stranger that knows the cluster's (public) authority certificate.
    #[cfg(test)]
    pub(crate) fn trusting(self, other: &Identity) -> Identity {
        Identity {
            authority: other.authority.clone(),
            probe: Arc::default(),
            ..self
        }
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
        CertificateDer::pem_slice_iter(self.certificate.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error("the member's certificate", e))
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, ClusterError> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .map_err(|e| tls_error("the member's key", e))
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, ClusterError> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(self.authority.as_bytes()) {
            let certificate =
                certificate.map_err(|e| tls_error("the authority's certificate", e))?;
            roots
                .add(certificate)
                .map_err(|e| tls_error("the authority's certificate", e))?;
        }
        Ok(Arc::new(roots))
    }

    /// What accepts a member's connection: this identity shown, and the
    /// peer's required and checked against the authority.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, ClusterError> {
        let provider = ring_provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| tls_error("the peer check", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain()?, self.private_key()?)
            .map_err(|e| tls_error("the member's certificate and key", e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// tonic's server settings for this identity (the executors' Flight
    /// servers): peers must show an identity from the authority.
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.certificate,
                &self.key,
            ))
            .client_ca_root(Certificate::from_pem(&self.authority))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// tonic's client settings for this identity.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.authority))
            .identity(tonic::transport::Identity::from_pem(
                &self.certificate,
                &self.key,
            ))
            .domain_name(SERVER_NAME)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// What Ballista calls on every gRPC endpoint it makes (to the
    /// scheduler, to an executor's Flight server): the same address over
    /// `https` with this identity. Ballista writes some addresses as
    /// `http://` whatever its TLS setting (an executor's to its
    /// scheduler), so the scheme is set here rather than trusted.
    pub fn endpoint_override(&self) -> EndpointOverrideFn {
        let tls = self.client_tls();
        Arc::new(move |endpoint: Endpoint| {
            let authority = endpoint
                .uri()
                .authority()
                .ok_or("a cluster endpoint without an address")?
                .to_string();
            let config = ballista_core::utils::GrpcClientConfig::default();
            let secured = ballista_core::utils::create_grpc_client_endpoint(
                format!("https://{authority}"),
                Some(&config),
            )?;
            Ok(secured.tls_config(tls.clone())?)
        })
    }

    /// The client settings [`Identity::get`] connects with.
    fn probe_config(&self) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
        if let Some(config) = self.probe.get() {
            return Ok(Arc::clone(config));
        }
        let config = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS versions", e))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain()?, self.private_key()?)
            .map_err(|e| tls_error("the member's certificate and key", e))?;
        Ok(Arc::clone(self.probe.get_or_init(|| Arc::new(config))))
    }

    /// A blocking HTTPS `GET` of `path` from the member at `address`
    /// (`HOST:PORT`), over this identity, within `timeout`: the status
    /// code and at most `limit` bytes of the body. For the scheduler's
    /// `/readyz`, asked from synchronous code.
    pub fn get(
        &self,
        address: &str,
        path: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<(u16, String), ClusterError> {
        let unreachable = |e: &dyn std::fmt::Display| ClusterError::Unreachable {
            address: address.to_string(),
            reason: e.to_string(),
        };
        let config = self.probe_config()?;
        let target: SocketAddr = address
            .to_socket_addrs()
            .map_err(|e| unreachable(&e))?
            .next()
            .ok_or_else(|| unreachable(&"the name has no address"))?;
        let socket = TcpStream::connect_timeout(&target, timeout).map_err(|e| unreachable(&e))?;
        socket
            .set_read_timeout(Some(timeout))
            .and_then(|()| socket.set_write_timeout(Some(timeout)))
            .map_err(|e| unreachable(&e))?;
        let connection = rustls::ClientConnection::new(
            config,
            ServerName::try_from(SERVER_NAME).map_err(|e| tls_error("the server name", e))?,
        )
        .map_err(|e| tls_error("a TLS connection", e))?;
        let mut stream = rustls::StreamOwned::new(connection, socket);
        // HTTP/1.0: the server closes the connection after its answer, so
        // the answer is whatever arrives before the end.
        // The handshake happens on the first write or read: a TLS error
        // there means one side refused the other's identity.
        let failed = |e: std::io::Error| match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => ClusterError::IdentityRefused {
                address: address.to_string(),
                reason: tls.to_string(),
            },
            None => unreachable(&e),
        };
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {SERVER_NAME}\r\n\r\n")
            .and_then(|()| stream.flush())
            .map_err(failed)?;
        let mut answer = Vec::new();
        let read = std::io::Read::by_ref(&mut stream)
            .take((limit + 4096) as u64)
            .read_to_end(&mut answer);
        if let Err(e) = read
            && answer.is_empty()
        {
            return Err(failed(e));
        }
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| unreachable(&"the answer is not HTTP"))?;
        Ok((status, body.chars().take(limit).collect()))
    }
}

/// Serves `listener` with TLS for `acceptor`, passing each connection
/// whose peer showed an identity from the authority on to `backend` (a
/// server on loopback that speaks no TLS: Ballista's scheduler). Runs
/// until the listener fails. A peer refused is logged with its address
/// and the reason, never with anything it sent.
pub async fn serve_front(
    listener: tokio::net::TcpListener,
    backend: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Result<(), ClusterError> {
    loop {
        let (socket, peer) = listener
            .accept()
            .await
            .map_err(|e| ClusterError::Process(format!("the TLS listener failed: {e}")))?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await;
            let mut secured = match handshake {
                Ok(Ok(secured)) => secured,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, reason = %e, "refused a connection that showed no identity from this cluster's authority");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "refused a connection whose TLS handshake did not end in time");
                    return;
                }
            };
            let Ok(mut inner) = tokio::net::TcpStream::connect(backend).await else {
                tracing::warn!(%backend, "the scheduler behind the TLS front does not answer");
                return;
            };
            let _ = inner.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut secured, &mut inner).await;
        });
    }
}

/// The PEM blocks of `text`, each with its label and its whole text
/// (`-----BEGIN LABEL-----` to `-----END LABEL-----`, with a newline).
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some((label, block)) = open.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line == format!("-----END {label}-----") {
                blocks.extend(open.take());
            }
        } else if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        {
            open = Some((label.to_string(), format!("{line}\n")));
        }
    }
    blocks
}
