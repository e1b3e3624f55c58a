//! One JSON request to the CA on a fresh TLS connection (hyper HTTP/1.1
//! over tokio-rustls), with the connection's exported keying material
//! available to build the body, and a timeout on every step.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use super::ClusterError;

/// Largest response body read.
const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// A client for one CA address and TLS configuration.
#[derive(Clone)]
pub struct CaClient {
    addr: String,
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    timeout: Duration,
}

impl CaClient {
    /// A client for `addr` (`host:port`) expecting `server_name`.
    pub fn new(
        addr: &str,
        config: rustls::ClientConfig,
        server_name: &str,
    ) -> Result<CaClient, ClusterError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ClusterError::Protocol(format!("{server_name:?} is not a server name")))?;
        Ok(CaClient {
            addr: addr.to_owned(),
            config: Arc::new(config),
            server_name,
            timeout: Duration::from_secs(10),
        })
    }

    fn connect_err(&self, reason: impl std::fmt::Display) -> ClusterError {
        ClusterError::Connect {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends one request on a new connection. `body` is called with 32
    /// bytes exported from this connection's TLS session (label
    /// `marque_keys::node::TLS_EXPORTER_LABEL`). A non-2xx answer is
    /// [`ClusterError::Refused`] with the CA's reason.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: impl FnOnce(&[u8; 32]) -> Result<Option<serde_json::Value>, ClusterError>,
    ) -> Result<serde_json::Value, ClusterError> {
        tokio::time::timeout(self.timeout, self.call_inner(method, path, body))
            .await
            .map_err(|_| self.connect_err(format!("no answer within {:?}", self.timeout)))?
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: impl FnOnce(&[u8; 32]) -> Result<Option<serde_json::Value>, ClusterError>,
    ) -> Result<serde_json::Value, ClusterError> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| self.connect_err(e))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| self.connect_err(format!("TLS: {e}")))?;
        let mut exporter = [0u8; 32];
        tls.get_ref()
            .1
            .export_keying_material(&mut exporter, marque_keys::node::TLS_EXPORTER_LABEL, None)
            .map_err(|e| self.connect_err(format!("TLS exporter: {e}")))?;
        let json = body(&exporter)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.connect_err(e))?;
        let driver = tokio::spawn(conn);
        let bytes = match &json {
            Some(v) => serde_json::to_vec(v).unwrap_or_default(),
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClusterError::Protocol(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.connect_err(describe(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| self.connect_err(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            ClusterError::Protocol(format!(
                "the CA answered HTTP {status} with a body that is not JSON"
            ))
        })?;
        if !status.is_success() {
            return Err(ClusterError::Refused {
                status: status.as_u16(),
                message: value["error"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_owned(),
            });
        }
        Ok(value)
    }
}

/// An error and its sources, one line. A client certificate the CA
/// refuses shows up as a TLS alert on the first read; say so plainly.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let text = parts.join(": ");
    if text.contains("CertificateExpired") {
        format!("the CA refused this node's certificate because it has expired ({text})")
    } else if text.contains("alert") {
        format!("the CA refused the TLS client certificate ({text})")
    } else {
        text
    }
}

/// A client for the CA at `addr` as the admin whose files
/// (`admin.crt`, `admin.key`, `root.crt`, from `marque ca issue-admin`)
/// are in `dir`; the CA must present a certificate from that root.
pub fn admin_client(addr: &str, dir: &std::path::Path) -> Result<CaClient, ClusterError> {
    use rustls::pki_types::CertificateDer;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| ClusterError::Protocol(format!("{}: {e}", path.display())))
    };
    let root = marque_keys::certificate::first_certificate(&read("root.crt")?)?;
    let trust_domain = super::server::trust_domain_of(&root)?;
    let chain = marque_keys::certificate::certificates_from_pem(&read("admin.crt")?)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key = marque_keys::PrivateKeyFile::parse(&read("admin.key")?)?.into_signing_key(None)?;
    let identity = super::tls::Identity {
        chain,
        key_pkcs8: key.pkcs8_der().to_vec(),
    };
    let config = super::tls::pinned_client_config(&[CertificateDer::from(root)], Some(&identity))
        .map_err(|e| ClusterError::Protocol(e.to_string()))?;
    CaClient::new(
        addr,
        config,
        &marque_keys::node::ca_server_name(&trust_domain),
    )
}

/// Gives a signed trust bundle to the CA at `addr` as the admin in
/// `admin_dir`; the CA checks it as a node would and serves it to the
/// segment's nodes. `Ok(false)`: that bundle was already being served.
pub async fn publish_bundle(
    addr: &str,
    admin_dir: &std::path::Path,
    segment: &str,
    envelope: &[u8],
) -> Result<bool, ClusterError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(envelope);
    let answer = admin_client(addr, admin_dir)?
        .call(Method::PUT, &format!("/v1/trust/{segment}"), |_| {
            Ok(Some(serde_json::json!({ "envelope": b64 })))
        })
        .await?;
    Ok(answer["published"] == true)
}
