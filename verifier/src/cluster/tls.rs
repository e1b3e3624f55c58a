//! rustls configurations for the CA service and its clients: TLS 1.3 only
//! (so keying-material export is unique per connection), ring as the only
//! provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsConfigError(String);

fn err(e: impl std::fmt::Display) -> TlsConfigError {
    TlsConfigError(e.to_string())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (leaf first) and its key, for either side.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER of the leaf's key.
    pub key_pkcs8: Vec<u8>,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

/// The CA service: its own certificate, and client certificates verified
/// against `root` when presented (joining nodes have none yet; every route
/// but discovery and join then requires one).
pub fn server_config(
    identity: &Identity,
    trusted: &[CertificateDer<'static>],
) -> Result<ServerConfig, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for root in trusted {
        roots.add(root.clone()).map_err(err)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(err)?;
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key())
        .map_err(err)
}

/// A plain TLS server (TLS 1.2 and 1.3, no client certificates, ALPN
/// `http/1.1`), for the admission webhook that kube-apiserver calls.
pub fn plain_server_config(identity: &Identity) -> Result<ServerConfig, TlsConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key())
        .map_err(err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client that trusts only `trusted` (the pinned root, and during a
/// rotation the new one), optionally presenting `identity`.
pub fn pinned_client_config(
    trusted: &[CertificateDer<'static>],
    identity: Option<&Identity>,
) -> Result<ClientConfig, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for root in trusted {
        roots.add(root.clone()).map_err(err)?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_root_certificates(roots);
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key())
            .map_err(err),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A client that accepts any server certificate. Used for exactly one
/// request: fetching the root, which is then accepted only if it matches
/// the pin in the join token. Handshake signatures are still checked.
pub fn unverified_client_config() -> Result<ClientConfig, TlsConfigError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
        .with_no_client_auth())
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
