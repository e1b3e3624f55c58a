//! The node side: join a cluster with a token, keep an identity in a
//! state directory, renew it.
//!
//! Joining never trusts on first use: the root is fetched over TLS with
//! verification off and accepted only if it hashes to the token's pin;
//! then a second connection, verified against that root alone and
//! requiring the CA's own name (`ca.<trust domain>`), carries the CSR and
//! the token proof bound to that connection. The node key is made here and
//! never leaves the node.
//!
//! State directory: `node.key` (PKCS#8, mode 0600), `node.crt` (leaf and
//! chain), `root.crt` (the pinned root), `node.json` (what `status` shows).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hyper::Method;
use marque_keys::SigningKey;
use marque_keys::node::{self, ClusterIdentity, JoinToken};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::CaClient;
use super::{ClusterError, tls, unix_now};

/// What a node knows about itself (`node.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// The CA's address (`host:port`).
    pub ca: String,
    /// The cluster's trust domain.
    pub trust_domain: String,
    /// The CA-assigned id.
    pub node_id: String,
    /// `worker` or `manager`.
    pub role: String,
    /// The segment.
    pub segment: String,
    /// The URI SAN.
    pub identity: String,
    /// SHA-256 of the root certificate's DER (hex).
    pub ca_pin: String,
    /// The current certificate's serial.
    pub serial: String,
    /// Its notBefore (Unix seconds, backdated by the CA).
    pub not_before: u64,
    /// Its notAfter (Unix seconds).
    pub not_after: u64,
    /// When this node received it (Unix seconds, local clock).
    #[serde(default)]
    pub issued_at: u64,
}

impl NodeInfo {
    /// When to renew: a point between 50% and 80% of the certificate's
    /// lifetime, fixed per certificate (derived from its serial) so that a
    /// fleet spreads its renewals and a restart does not move the time.
    pub fn renew_at(&self) -> u64 {
        // From when it was received: the CA backdates notBefore for skew.
        let start = self.issued_at.max(self.not_before);
        let life = self.not_after.saturating_sub(start);
        let spread = self
            .serial
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            % 301;
        start + life * (500 + spread) / 1000
    }
}

/// A node's state directory.
#[derive(Debug, Clone)]
pub struct NodeDir {
    path: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ClusterError {
    let path = path.to_owned();
    move |source| ClusterError::Io {
        path: path.clone(),
        source,
    }
}

impl NodeDir {
    /// The directory (created, mode 0700, when written).
    pub fn new(path: &Path) -> NodeDir {
        NodeDir {
            path: path.to_owned(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Where the node keeps its accepted trust bundle.
    pub fn trust_dir(&self) -> PathBuf {
        self.path.join("trust")
    }

    /// Reads `node.json`.
    pub fn info(&self) -> Result<NodeInfo, ClusterError> {
        let path = self.file("node.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClusterError::Protocol(format!(
                    "{} holds no node identity (no node.json): run `marque node join` first",
                    self.path.display()
                )));
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| ClusterError::Protocol(format!("{}: {e}", path.display())))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ClusterError> {
        let path = self.file(name);
        std::fs::read(&path).map_err(io(&path))
    }

    /// The pinned root certificate.
    pub fn root(&self) -> Result<CertificateDer<'static>, ClusterError> {
        self.cert("root.crt")
            .and_then(|r| r.ok_or_else(|| ClusterError::Protocol("no root.crt".into())))
    }

    fn cert(&self, name: &str) -> Result<Option<CertificateDer<'static>>, ClusterError> {
        let path = self.file(name);
        let pem = match std::fs::read(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let der = marque_keys::certificate::first_certificate(&pem)
            .map_err(|e| ClusterError::Protocol(format!("{name}: {e}")))?;
        Ok(Some(CertificateDer::from(der)))
    }

    /// The roots this node trusts: the pinned one and, during a root
    /// rotation, the new one the old one vouched for (`next-root.crt`).
    pub fn roots(&self) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
        let mut roots = vec![self.root()?];
        roots.extend(self.cert("next-root.crt")?);
        Ok(roots)
    }

    /// A client for the node's CA that trusts only `roots` (from
    /// [`NodeDir::roots`]) and presents the node certificate.
    pub fn ca_client(
        &self,
        info: &NodeInfo,
        roots: &[CertificateDer<'static>],
    ) -> Result<CaClient, ClusterError> {
        let config = tls::pinned_client_config(roots, Some(&self.identity()?))
            .map_err(|e| ClusterError::Protocol(e.to_string()))?;
        CaClient::new(&info.ca, config, &node::ca_server_name(&info.trust_domain))
    }

    /// The node's TLS client identity.
    pub fn identity(&self) -> Result<tls::Identity, ClusterError> {
        let chain = marque_keys::certificate::certificates_from_pem(&self.read("node.crt")?)?
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key =
            marque_keys::PrivateKeyFile::parse(&self.read("node.key")?)?.into_signing_key(None)?;
        Ok(tls::Identity {
            chain,
            key_pkcs8: key.pkcs8_der().to_vec(),
        })
    }

    /// Writes key, certificate, root and info, each atomically; the key
    /// first (mode 0600), `node.json` last.
    fn write(
        &self,
        key: &SigningKey,
        cert_pem: &str,
        root_pem: &str,
        next_root_pem: Option<&str>,
        info: &NodeInfo,
    ) -> Result<(), ClusterError> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(io(&self.path))?;
        let key_path = self.file("node.key");
        let write = |name: &str, bytes: &[u8]| {
            let path = self.file(name);
            crate::registry::layout::write_atomically(&self.path, &path, bytes).map_err(io(&path))
        };
        write("node.key.new", key.to_pkcs8_pem().as_bytes())?;
        std::fs::set_permissions(
            self.file("node.key.new"),
            std::fs::Permissions::from_mode(0o600),
        )
        .map_err(io(&key_path))?;
        std::fs::rename(self.file("node.key.new"), &key_path).map_err(io(&key_path))?;
        write("node.crt", cert_pem.as_bytes())?;
        write("root.crt", root_pem.as_bytes())?;
        match next_root_pem {
            Some(pem) => write("next-root.crt", pem.as_bytes())?,
            None => match std::fs::remove_file(self.file("next-root.crt")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(&self.file("next-root.crt"))(e));
                }
                _ => {}
            },
        }
        let info_json = serde_json::to_vec_pretty(info).unwrap_or_default();
        write("node.json", &info_json)
    }
}

fn leaf_info(
    cert_pem: &str,
    ca: &str,
    pin: &str,
) -> Result<(NodeInfo, ClusterIdentity), ClusterError> {
    let der = marque_keys::certificate::first_certificate(cert_pem.as_bytes())?;
    let (identity, cert) = super::cluster_certificate(&der)?;
    let uri = identity.uri();
    let ClusterIdentity::Node {
        trust_domain,
        segment,
        role,
        id,
    } = &identity
    else {
        return Err(ClusterError::Protocol(format!(
            "the CA issued {uri}, not a node identity"
        )));
    };
    let info = NodeInfo {
        ca: ca.to_owned(),
        trust_domain: trust_domain.clone(),
        node_id: id.clone(),
        role: role.as_str().to_owned(),
        segment: segment.clone(),
        identity: uri,
        ca_pin: pin.to_owned(),
        serial: cert.serial().to_owned(),
        not_before: cert.not_before(),
        not_after: cert.not_after(),
        issued_at: unix_now(),
    };
    Ok((info, identity))
}

/// Checks that the issued chain verifies against one of `roots` for
/// client authentication and certifies `key`.
fn check_issued(
    cert_pem: &str,
    roots: &[CertificateDer<'static>],
    key: &SigningKey,
) -> Result<(), ClusterError> {
    let chain = marque_keys::certificate::certificates_from_pem(cert_pem.as_bytes())?;
    let leaf = chain
        .first()
        .ok_or_else(|| ClusterError::Protocol("the CA sent no certificate".into()))?;
    let public = marque_keys::PublicKey::from_certificate_der(leaf)?;
    if public.key_id() != key.public_key().key_id() {
        return Err(ClusterError::Protocol(
            "the CA certified another key than this node's".into(),
        ));
    }
    let mut last = None;
    for root in roots {
        match marque_keys::certificate::verify_client_chain(
            &chain,
            root.as_ref(),
            SystemTime::now(),
        ) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(ClusterError::from)
        .unwrap_or_else(|| ClusterError::Protocol("no trusted root".into())))
}

/// The roots a node trusts after an answer from the CA: `(pinned root PEM,
/// next root PEM)`. A new root is accepted only when the old one vouched
/// for it (our new certificate chains to the old root through the cross
/// certificate, and to the new root directly); switching the pinned root is
/// accepted only to a root already trusted that way.
fn roots_after(
    answer: &serde_json::Value,
    trusted: &[CertificateDer<'static>],
    cert_pem: &str,
) -> Result<(String, Option<String>), ClusterError> {
    let pem_der = |pem: &str| marque_keys::certificate::first_certificate(pem.as_bytes());
    let root_pem = answer["root"]
        .as_str()
        .ok_or_else(|| ClusterError::Protocol("the CA sent no root".into()))?;
    let root_der = pem_der(root_pem)?;
    if !trusted.iter().any(|t| t.as_ref() == root_der.as_slice()) {
        return Err(ClusterError::Protocol(
            "the CA presented a root this node does not trust; refusing it".into(),
        ));
    }
    let Some(next_pem) = answer["next_root"].as_str() else {
        return Ok((root_pem.to_owned(), None));
    };
    let next_der = pem_der(next_pem)?;
    let leaf = pem_der(cert_pem)?;
    // Our new certificate must chain to the new root directly (it was
    // issued by the new key); it already chained to a trusted root through
    // the cross certificate (check_issued).
    marque_keys::certificate::verify_client_chain(&[leaf], &next_der, SystemTime::now()).map_err(
        |e| {
            ClusterError::Protocol(format!(
                "the CA's next root does not certify this node: {e}"
            ))
        },
    )?;
    Ok((root_pem.to_owned(), Some(next_pem.to_owned())))
}

/// Joins the cluster at `ca` with `token`, writing the new identity to
/// `dir`. Returns what `status` will show.
pub async fn join(ca: &str, token: &JoinToken, dir: &NodeDir) -> Result<NodeInfo, ClusterError> {
    // 1. The root, over unverified TLS, accepted only if it matches the pin.
    let discovery = CaClient::new(
        ca,
        tls::unverified_client_config().map_err(|e| ClusterError::Protocol(e.to_string()))?,
        "ca.invalid",
    )?;
    let answer = discovery
        .call(Method::GET, "/v1/root", |_| Ok(None))
        .await?;
    let root_pem = answer["root"]
        .as_str()
        .ok_or_else(|| ClusterError::Protocol("the CA sent no root".into()))?
        .to_owned();
    let root_ders = marque_keys::certificate::certificates_from_pem(root_pem.as_bytes())?;
    let [root_der] = &root_ders[..] else {
        return Err(ClusterError::Protocol(format!(
            "the CA sent {} root certificates; exactly one is expected",
            root_ders.len()
        )));
    };
    if !token.pins(root_der) {
        return Err(ClusterError::PinMismatch {
            addr: ca.to_owned(),
            pinned: token.pin_hex(),
            found: marque_keys::node::root_pin_hex(root_der),
        });
    }
    let root = CertificateDer::from(root_der.clone());
    let trust_domain = super::server::trust_domain_of(root_der)?;
    // 2. A connection verified against that root alone, to the CA's name.
    let pinned = CaClient::new(
        ca,
        tls::pinned_client_config(std::slice::from_ref(&root), None)
            .map_err(|e| ClusterError::Protocol(e.to_string()))?,
        &node::ca_server_name(&trust_domain),
    )?;
    // 3. The key is made here; the proof is bound to this connection.
    let key = SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)?;
    let csr = node::certificate_request(&key)?;
    let answer = pinned
        .call(Method::POST, "/v1/join", |exporter| {
            let message = node::join_message(token.id(), &csr, exporter);
            let proof = token.prove(&message)?;
            let b64 = base64::engine::general_purpose::STANDARD;
            Ok(Some(json!({
                "token_id": token.id(),
                "csr": b64.encode(&csr),
                "proof": b64.encode(proof),
            })))
        })
        .await?;
    finish(&answer, ca, &[root], &key, dir)
}

fn finish(
    answer: &serde_json::Value,
    ca: &str,
    trusted: &[CertificateDer<'static>],
    key: &SigningKey,
    dir: &NodeDir,
) -> Result<NodeInfo, ClusterError> {
    let cert_pem = answer["certificate"]
        .as_str()
        .ok_or_else(|| ClusterError::Protocol("the CA sent no certificate".into()))?;
    check_issued(cert_pem, trusted, key)?;
    let (root_pem, next_pem) = roots_after(answer, trusted, cert_pem)?;
    let pin = marque_keys::node::root_pin_hex(&marque_keys::certificate::first_certificate(
        root_pem.as_bytes(),
    )?);
    let (info, _) = leaf_info(cert_pem, ca, &pin)?;
    if let Some(server_time) = answer["server_time"].as_u64() {
        let skew = server_time.abs_diff(unix_now());
        if skew > 60 {
            tracing::warn!("this node's clock is {skew} s off the CA's; run NTP");
        }
    }
    dir.write(key, cert_pem, &root_pem, next_pem.as_deref(), &info)?;
    // The trust-bundle signers come over the channel pinned to the root;
    // the first bundle must be signed by them (later ones by the previous
    // bundle's signers).
    if let Some(signers) = answer.get("trust_signers").filter(|v| !v.is_null()) {
        let signers: crate::trust::Signers = serde_json::from_value(signers.clone())
            .map_err(|e| ClusterError::Protocol(format!("trust_signers: {e}")))?;
        crate::trust::Accepted::new(&dir.trust_dir())
            .pin(&signers, &info.segment)
            .map_err(|e| ClusterError::Protocol(e.to_string()))?;
    }
    Ok(info)
}

/// Renews the node's certificate with a fresh key, authenticated by the
/// current certificate.
pub async fn renew(dir: &NodeDir) -> Result<NodeInfo, ClusterError> {
    let info = dir.info()?;
    let now = unix_now();
    if now >= info.not_after {
        return Err(ClusterError::Protocol(format!(
            "the node certificate expired {} s ago; an expired certificate cannot renew: join again with a new token",
            now - info.not_after
        )));
    }
    let roots = dir.roots()?;
    let client = dir.ca_client(&info, &roots)?;
    let key = SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)?;
    let csr = node::certificate_request(&key)?;
    let answer = client
        .call(Method::POST, "/v1/renew", |_| {
            Ok(Some(json!({
                "csr": base64::engine::general_purpose::STANDARD.encode(&csr),
            })))
        })
        .await?;
    let renewed = finish(&answer, &info.ca, &roots, &key, dir)?;
    if renewed.node_id != info.node_id
        || renewed.role != info.role
        || renewed.segment != info.segment
    {
        return Err(ClusterError::Protocol(
            "the CA renewed this node under another identity".into(),
        ));
    }
    Ok(renewed)
}

/// Calls a CA route as this node (for listing nodes as a manager).
pub async fn call_as_node(
    dir: &NodeDir,
    method: Method,
    path: &str,
) -> Result<serde_json::Value, ClusterError> {
    let info = dir.info()?;
    dir.ca_client(&info, &dir.roots()?)?
        .call(method, path, |_| Ok(None))
        .await
}

/// How long until `info`'s renewal point (zero when due).
pub fn until_renewal(info: &NodeInfo) -> Duration {
    Duration::from_secs(info.renew_at().saturating_sub(unix_now()))
}

/// Keeps the node certificate renewed: sleeps until its renewal point (a
/// fixed point between 50% and 80% of its lifetime), renews with a fresh
/// key, and repeats. A failed renewal is retried with backoff (1 s doubling
/// to 5 min) while the certificate is still valid; once it has expired the
/// node must join again, and this returns the error.
pub async fn keep_renewed(
    dir: &NodeDir,
    mut on_renewed: impl FnMut(&NodeInfo),
) -> Result<(), ClusterError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let info = dir.info()?;
        tokio::time::sleep(until_renewal(&info)).await;
        match renew(dir).await {
            Ok(renewed) => {
                backoff = Duration::from_secs(1);
                on_renewed(&renewed);
            }
            Err(e) if unix_now() < info.not_after => {
                tracing::warn!("renewal failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
            Err(e) => return Err(e),
        }
    }
}
