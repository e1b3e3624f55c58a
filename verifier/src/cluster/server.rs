//! `marque ca serve`: the cluster CA as a tokio + rustls HTTP/1.1 service.
//!
//! Routes (JSON in and out; errors are `{"error": "…"}`):
//!
//! | route | who |
//! |---|---|
//! | `GET /v1/root` | anyone (discovery: the public root, pinned by tokens) |
//! | `POST /v1/join` | anyone with a token proof bound to this connection |
//! | `POST /v1/renew` | a node, by its current (or just-issued) certificate |
//! | `GET /v1/nodes` | a manager or an admin |
//! | `DELETE /v1/nodes/ID` | an admin |
//! | `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/ID` | an admin |
//! | `PUT /v1/trust/SEGMENT` (a trust bundle) | an admin |
//! | `GET /v1/trust` (the bundle for the caller's segment) | a node |
//!
//! Who is calling is decided on every request from the verified client
//! certificate (its URI SAN, trust domain, serial and the CA's records),
//! never from a header.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use marque_keys::certificate::CaCertificate;
use marque_keys::node::{self, ClusterIdentity, JoinToken, Role};
use rustls::pki_types::CertificateDer;
use serde_json::json;

use super::state::{NodeRecord, StateDir, TokenRecord};
use super::{ClusterError, tls, unix_now};

/// Largest request body read.
const MAX_REQUEST_BYTES: usize = 64 << 10;
/// Largest request body read on the trust-bundle route (a base64 bundle).
const MAX_BUNDLE_REQUEST_BYTES: usize = 8 << 20;
/// Failed join attempts allowed per client address per window.
const MAX_FAILURES: u32 = 5;
/// The rate limiter's window.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Lifetime of the service's own TLS certificate (re-issued at start).
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// The CA: what it signs with, what it remembers, and its policies.
pub struct Authority {
    trust_domain: String,
    issuer: CaCertificate,
    issuer_chain_pem: String,
    root_der: CertificateDer<'static>,
    root_pem: String,
    rotation: Option<Rotation>,
    trust_signers: Option<crate::trust::Signers>,
    state: StateDir,
    node_lifetime: Duration,
    failures: Arc<Mutex<HashMap<IpAddr, (u32, Instant)>>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// A root rotation in progress: the new root (which now issues) and its
/// cross-signature by the current root.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new root, PEM.
    pub next_root_pem: String,
    /// The new root's certificate issued by the current root, PEM.
    pub cross_pem: String,
}

/// The trust domain a cluster root names in its `spiffe://TD` URI SAN.
pub fn trust_domain_of(root_der: &[u8]) -> Result<String, ClusterError> {
    let cert = marque_keys::certificate::SignerCertificate::from_der(root_der.to_vec())?;
    cert.identities()
        .iter()
        .find_map(|u| u.strip_prefix("spiffe://"))
        .filter(|td| node::valid_name(td, true))
        .map(str::to_owned)
        .ok_or_else(|| {
            ClusterError::Protocol(
                "the root certificate names no trust domain as spiffe://TRUST-DOMAIN (make it with `marque ca init --trust-domain`)"
                    .to_owned(),
            )
        })
}

fn first_der(pem: &str) -> Result<CertificateDer<'static>, ClusterError> {
    Ok(CertificateDer::from(
        marque_keys::certificate::first_certificate(pem.as_bytes())?,
    ))
}

/// Makes a join token for `role` in `segment` and records its verifier.
/// Works on the state directory directly, with or without a running
/// service.
pub fn create_token(
    state: &StateDir,
    root_pem: &str,
    role: Role,
    segment: &str,
    ttl: Duration,
    uses: u32,
) -> Result<JoinToken, ClusterError> {
    if !node::valid_name(segment, false) {
        return Err(ClusterError::Protocol(format!(
            "segment {segment:?} must be 1-63 characters of [a-z0-9-]"
        )));
    }
    if uses == 0 {
        return Err(ClusterError::Protocol("--uses must be at least 1".into()));
    }
    let root = first_der(root_pem)?;
    // A token for a root that names no trust domain could never join.
    trust_domain_of(&root)?;
    let token = JoinToken::generate(&root)?;
    let now = unix_now();
    let record = TokenRecord {
        id: token.id().to_owned(),
        verifier: token.verifier()?.to_hex(),
        role: role.as_str().to_owned(),
        segment: segment.to_owned(),
        expires_at: now.saturating_add(ttl.as_secs()),
        uses_left: uses,
        created_at: now,
        revoked: false,
    };
    state.update(|s| {
        s.prune(now);
        s.tokens.push(record);
    })?;
    Ok(token)
}

/// Revokes the token `id`. `Ok(false)` when there is no such token.
pub fn revoke_token(state: &StateDir, id: &str) -> Result<bool, ClusterError> {
    Ok(state.update(|s| match s.token_mut(id) {
        Some(t) => {
            t.revoked = true;
            true
        }
        None => false,
    })?)
}

/// Puts node `id` on the denylist: it can no longer renew or call
/// anything. `Ok(false)` when there is no such node.
pub fn remove_node(state: &StateDir, id: &str) -> Result<bool, ClusterError> {
    let now = unix_now();
    Ok(state.update(|s| match s.node_mut(id) {
        Some(n) => {
            n.removed_at.get_or_insert(now);
            true
        }
        None => false,
    })?)
}

impl Authority {
    /// A CA for the root in `root_pem` issuing with `issuer` (the root
    /// itself, or an intermediate whose PEM is `issuer_chain_pem`). During
    /// a root rotation `issuer` is the new root, `issuer_chain_pem` its
    /// cross-signed certificate, and `rotation` says so.
    pub fn new(
        issuer: CaCertificate,
        issuer_chain_pem: String,
        root_pem: String,
        rotation: Option<Rotation>,
        state: StateDir,
        node_lifetime: Duration,
    ) -> Result<Authority, ClusterError> {
        let root_der = first_der(&root_pem)?;
        let trust_domain = trust_domain_of(&root_der)?;
        if let Some(r) = &rotation
            && trust_domain_of(&first_der(&r.next_root_pem)?)? != trust_domain
        {
            return Err(ClusterError::Protocol(
                "the next root is for another trust domain".into(),
            ));
        }
        Ok(Authority {
            trust_domain,
            issuer,
            issuer_chain_pem,
            root_der,
            root_pem,
            rotation,
            trust_signers: None,
            state,
            node_lifetime,
            failures: Arc::default(),
        })
    }

    /// Hands `signers` (the trust-bundle signing keys and threshold) to
    /// every node that joins or renews, over the channel pinned to the
    /// cluster root.
    pub fn with_trust_signers(mut self, signers: crate::trust::Signers) -> Authority {
        self.trust_signers = Some(signers);
        self
    }

    /// The cluster's trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Keeps `previous`'s memory of failed joins (a reload must not give
    /// a brute-forcer a fresh allowance).
    pub fn with_failures_of(mut self, previous: &Authority) -> Authority {
        self.failures = Arc::clone(&previous.failures);
        self
    }

    /// Whether a root rotation is in progress.
    pub fn rotating(&self) -> bool {
        self.rotation.is_some()
    }

    /// The certificate chain PEM for a leaf: the leaf, then the issuer's
    /// chain (intermediates or the cross-signed new root; not the root).
    fn chain(&self, leaf_pem: &str) -> String {
        format!("{leaf_pem}{}", self.issuer_chain_pem)
    }

    /// Every root client certificates may chain to.
    fn trusted_roots(&self) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
        let mut roots = vec![self.root_der.clone()];
        if let Some(r) = &self.rotation {
            roots.push(first_der(&r.next_root_pem)?);
        }
        Ok(roots)
    }

    /// The roots part of discovery, join and renewal answers.
    fn roots_json(&self) -> serde_json::Value {
        let mut v = json!({
            "root": self.root_pem,
            "trust_domain": self.trust_domain,
            "time": unix_now(),
        });
        if let Some(r) = &self.rotation {
            v["next_root"] = r.next_root_pem.clone().into();
            v["cross"] = r.cross_pem.clone().into();
        }
        if let Some(t) = &self.trust_signers {
            v["trust_signers"] = serde_json::to_value(t).unwrap_or_default();
        }
        v
    }

    /// A fresh key and certificate for the service itself
    /// (`spiffe://TD/ca`, DNS `ca.TD`, serverAuth).
    fn server_identity(&self) -> Result<tls::Identity, ClusterError> {
        let key = marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)?;
        let csr = node::certificate_request(&key)?;
        let issued = node::issue(
            &self.issuer,
            &csr,
            &ClusterIdentity::Ca {
                trust_domain: self.trust_domain.clone(),
            },
            SystemTime::now(),
            SERVER_CERT_LIFETIME,
        )?;
        let chain = marque_keys::certificate::certificates_from_pem(
            self.chain(&issued.cert_pem).as_bytes(),
        )?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
        Ok(tls::Identity {
            chain,
            key_pkcs8: key.pkcs8_der().to_vec(),
        })
    }

    fn blocked(&self, ip: IpAddr) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.get(&ip) {
            Some((n, since)) if since.elapsed() < FAILURE_WINDOW => *n >= MAX_FAILURES,
            Some(_) => {
                f.remove(&ip);
                false
            }
            None => false,
        }
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > 100_000 {
            f.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = f.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// What the TLS layer established about a connection.
struct Conn {
    ip: IpAddr,
    exporter: [u8; 32],
    /// The verified client certificate's identity and serial, if any.
    peer: Option<(ClusterIdentity, String)>,
}

/// Serves `authority` on `listener` until the task is dropped.
pub async fn serve(
    authority: Arc<Authority>,
    listener: tokio::net::TcpListener,
) -> Result<(), ClusterError> {
    let (_keep, updates) = tokio::sync::watch::channel(authority);
    serve_reloadable(updates, listener).await
}

fn acceptor_for(authority: &Authority) -> Result<tokio_rustls::TlsAcceptor, ClusterError> {
    let config = tls::server_config(&authority.server_identity()?, &authority.trusted_roots()?)
        .map_err(|e| ClusterError::Protocol(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the authority in `updates` on `listener`, switching to each new
/// one sent (after a root rotation step or new trust-bundle signers) for
/// the connections accepted from then on; connections in flight finish
/// with the one they started with. A new authority whose TLS configuration
/// cannot be built is refused and the current one kept.
pub async fn serve_reloadable(
    mut updates: tokio::sync::watch::Receiver<Arc<Authority>>,
    listener: tokio::net::TcpListener,
) -> Result<(), ClusterError> {
    let mut authority = Arc::clone(&updates.borrow_and_update());
    let mut acceptor = acceptor_for(&authority)?;
    loop {
        let (tcp, addr) = super::accept(&listener, "CA").await;
        if updates.has_changed().unwrap_or(false) {
            let next = Arc::clone(&updates.borrow_and_update());
            match acceptor_for(&next) {
                Ok(a) => {
                    (authority, acceptor) = (next, a);
                    tracing::info!("serving the reloaded CA configuration");
                }
                Err(e) => tracing::error!(
                    "the reloaded CA configuration is unusable ({e}); keeping the current one"
                ),
            }
        }
        let (acceptor, authority) = (acceptor.clone(), Arc::clone(&authority));
        tokio::spawn(async move {
            let connection = async {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::info!(%addr, "TLS handshake refused: {e}");
                        return;
                    }
                };
                let conn = match connection_info(&tls, addr.ip(), &authority) {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::warn!(%addr, "{e}");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| {
                    let (authority, conn) = (Arc::clone(&authority), Arc::clone(&conn));
                    async move { Ok::<_, Infallible>(route(req, conn, authority).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%addr, "connection ended: {e}");
                }
            };
            // No connection may hold the service for long.
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
        });
    }
}

fn connection_info(
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ip: IpAddr,
    authority: &Authority,
) -> Result<Conn, ClusterError> {
    let session = tls.get_ref().1;
    let mut exporter = [0u8; 32];
    session
        .export_keying_material(&mut exporter, node::TLS_EXPORTER_LABEL, None)
        .map_err(|e| ClusterError::Protocol(format!("TLS exporter: {e}")))?;
    let peer = match session.peer_certificates().and_then(|c| c.first()) {
        // The chain was verified against the root by rustls; read who it is.
        Some(leaf) => Some(peer_identity(leaf, authority)?),
        None => None,
    };
    Ok(Conn { ip, exporter, peer })
}

fn peer_identity(
    leaf: &CertificateDer<'_>,
    authority: &Authority,
) -> Result<(ClusterIdentity, String), ClusterError> {
    let (identity, cert) = super::cluster_certificate(leaf)?;
    if identity.trust_domain() != authority.trust_domain {
        return Err(ClusterError::Protocol(format!(
            "client certificate is for trust domain {}, not {}",
            identity.trust_domain(),
            authority.trust_domain
        )));
    }
    Ok((identity, cert.serial().to_owned()))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal: status and reason.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal(status, reason.into())
    }
}

impl From<ClusterError> for Refusal {
    fn from(e: ClusterError) -> Refusal {
        tracing::error!("{e}");
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<super::state::StateError> for Refusal {
    fn from(e: super::state::StateError) -> Refusal {
        ClusterError::from(e).into()
    }
}

async fn route(
    req: Request<hyper::body::Incoming>,
    conn: Arc<Conn>,
    authority: Arc<Authority>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let limit = if path.starts_with("/v1/trust/") {
        MAX_BUNDLE_REQUEST_BYTES
    } else {
        MAX_REQUEST_BYTES
    };
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "error": "request body too large" }),
            );
        }
    };
    // Signing, file locks and fsync block: keep them off the async
    // threads, so one slow disk write does not stall every connection.
    tokio::task::spawn_blocking(move || decide(method, path, body, &conn, &authority))
        .await
        .unwrap_or_else(|_| {
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "internal error" }),
            )
        })
}

fn decide(
    method: Method,
    path: String,
    body: Bytes,
    conn: &Conn,
    authority: &Authority,
) -> Response<Full<Bytes>> {
    let result = match (method, path.as_str()) {
        (Method::GET, "/v1/root") => Ok(authority.roots_json()),
        (Method::GET, "/v1/trust") => {
            authorize(conn, authority, Access::Node).and_then(|node| serve_bundle(node, authority))
        }
        (Method::PUT, p) if p.starts_with("/v1/trust/") => {
            authorize(conn, authority, Access::Admin)
                .and_then(|_| publish_bundle(&p["/v1/trust/".len()..], &body, authority))
        }
        (Method::POST, "/v1/join") => join(&body, conn, authority),
        (Method::POST, "/v1/renew") => renew(&body, conn, authority),
        (Method::GET, "/v1/nodes") => {
            authorize(conn, authority, Access::Manager).and_then(|_| list_nodes(authority))
        }
        (Method::GET, "/v1/tokens") => {
            authorize(conn, authority, Access::Admin).and_then(|_| list_tokens(authority))
        }
        (Method::POST, "/v1/tokens") => authorize(conn, authority, Access::Admin)
            .and_then(|_| admin_create_token(&body, authority)),
        (Method::DELETE, p) if p.starts_with("/v1/nodes/") => {
            authorize(conn, authority, Access::Admin).and_then(|_| {
                let id = &p["/v1/nodes/".len()..];
                match remove_node(&authority.state, id)? {
                    true => Ok(json!({ "removed": id })),
                    false => Err(Refusal::new(StatusCode::NOT_FOUND, format!("no node {id}"))),
                }
            })
        }
        (Method::DELETE, p) if p.starts_with("/v1/tokens/") => {
            authorize(conn, authority, Access::Admin).and_then(|_| {
                let id = &p["/v1/tokens/".len()..];
                match revoke_token(&authority.state, id)? {
                    true => Ok(json!({ "revoked": id })),
                    false => Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        format!("no token {id}"),
                    )),
                }
            })
        }
        _ => Err(Refusal::new(StatusCode::NOT_FOUND, "no such route")),
    };
    match result {
        Ok(v) => reply(StatusCode::OK, v),
        Err(Refusal(status, reason)) => {
            tracing::info!(ip = %conn.ip, %path, %status, "refused: {reason}");
            reply(status, json!({ "error": reason }))
        }
    }
}

/// Where the CA keeps the newest bundle of a segment: an
/// [`crate::trust::Accepted`] directory, so the CA applies the same checks
/// as a node (threshold, rollback, expiry, segment) before serving it.
fn segment_trust(authority: &Authority, segment: &str) -> crate::trust::Accepted {
    crate::trust::Accepted::new(&authority.state.path().join("trust").join(segment))
}

fn publish_bundle(
    segment: &str,
    body: &[u8],
    authority: &Authority,
) -> Result<serde_json::Value, Refusal> {
    if !node::valid_name(segment, false) {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "bad segment name"));
    }
    let Some(signers) = &authority.trust_signers else {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "this CA has no trust-bundle signers (marque ca trust-signers), so nodes could not verify a bundle",
        ));
    };
    let request: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("bad request: {e}")))?;
    let envelope = request["envelope"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "no base64 envelope"))?;
    let trust = segment_trust(authority, segment);
    let bad = |e: crate::trust::TrustError| Refusal::new(StatusCode::CONFLICT, e.to_string());
    trust.pin(signers, segment).map_err(bad)?;
    match trust.accept(&envelope, unix_now()).map_err(bad)? {
        Some(b) => Ok(json!({ "segment": segment, "version": b.version, "published": true })),
        None => Ok(json!({ "segment": segment, "published": false })),
    }
}

fn serve_bundle(
    node: Option<NodeRecord>,
    authority: &Authority,
) -> Result<serde_json::Value, Refusal> {
    let Some(node) = node else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "only nodes have a segment",
        ));
    };
    let trust = segment_trust(authority, &node.segment);
    let Some(bundle) = trust.current().map_err(|e| {
        tracing::error!(segment = %node.segment, "the stored trust bundle is unusable: {e}");
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored trust bundle is unusable",
        )
    })?
    else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "no trust bundle has been published for segment {}",
                node.segment
            ),
        ));
    };
    let bytes = std::fs::read(trust.bundle_path())
        .map_err(|e| Refusal::from(ClusterError::Protocol(format!("trust bundle: {e}"))))?;
    Ok(json!({
        "segment": node.segment,
        "version": bundle.version,
        "envelope": base64::engine::general_purpose::STANDARD.encode(bytes),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A current node (any role).
    Node,
    /// A manager node or an admin.
    Manager,
    /// An admin.
    Admin,
}

/// Decides from the verified certificate alone (and the CA's records)
/// whether the caller may use a route; returns the caller's node record
/// when it is a node.
fn authorize(
    conn: &Conn,
    authority: &Authority,
    access: Access,
) -> Result<Option<NodeRecord>, Refusal> {
    let Some((identity, serial)) = &conn.peer else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "this route needs a client certificate from this CA",
        ));
    };
    match identity {
        ClusterIdentity::Admin { .. } => Ok(None),
        ClusterIdentity::Ca { .. } => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the CA's own certificate is not a client identity",
        )),
        ClusterIdentity::Node { id, role, .. } => {
            if access == Access::Admin || (access == Access::Manager && *role != Role::Manager) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("a {role} certificate may not call this route"),
                ));
            }
            let record = check_node(authority, id, serial)?;
            Ok(Some(record))
        }
    }
}

/// A node may act only if it is known, not removed, and presents its
/// current or just-issued certificate; using the just-issued one retires
/// the previous (so a cloned credential is detected).
fn check_node(authority: &Authority, id: &str, serial: &str) -> Result<NodeRecord, Refusal> {
    authority.state.update(|s| {
        let Some(n) = s.node_mut(id) else {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("node {id} is unknown to this CA"),
            ));
        };
        if n.removed_at.is_some() {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("node {id} was removed from the cluster"),
            ));
        }
        if n.new_serial.as_deref() == Some(serial) {
            n.current_serial = serial.to_owned();
            n.new_serial = None;
        } else if n.current_serial != serial {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "node {id} presented certificate serial {serial}, which is neither its current nor its newly issued one (a copied or superseded credential)"
                ),
            ));
        }
        Ok(n.clone())
    })?
}

fn field<'a>(v: &'a serde_json::Value, name: &str) -> Result<&'a str, Refusal> {
    v[name]
        .as_str()
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, format!("missing field {name}")))
}

fn b64(v: &serde_json::Value, name: &str) -> Result<Vec<u8>, Refusal> {
    base64::engine::general_purpose::STANDARD
        .decode(field(v, name)?)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, format!("{name} is not base64")))
}

fn parse_body(body: &[u8]) -> Result<serde_json::Value, Refusal> {
    serde_json::from_slice(body)
        .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "the body is not JSON"))
}

/// A random node id: 26 characters of `[a-z2-7]` (130 bits, base32).
fn new_node_id() -> Result<String, ClusterError> {
    use ring::rand::SecureRandom as _;
    let mut raw = [0u8; 17];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| marque_keys::Error::Crypto)?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut out = String::with_capacity(26);
    for b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    Ok(out)
}

fn join(body: &[u8], conn: &Conn, authority: &Authority) -> Result<serde_json::Value, Refusal> {
    if authority.blocked(conn.ip) {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed join attempts from {}; wait a minute",
                conn.ip
            ),
        ));
    }
    let req = parse_body(body)?;
    let token_id = field(&req, "token_id")?.to_owned();
    let csr = b64(&req, "csr")?;
    let proof = b64(&req, "proof")?;
    let now = unix_now();
    // The use is consumed before anything else is checked, and stays
    // consumed whatever happens next.
    let grant = authority.state.update(|s| {
        let Some(t) = s.token_mut(&token_id) else {
            return Err("unknown join token".to_owned());
        };
        if t.uses_left == 0 {
            return Err(format!("join token {token_id} has already been used"));
        }
        t.uses_left -= 1;
        if t.revoked {
            return Err(format!("join token {token_id} was revoked"));
        }
        if now > t.expires_at {
            return Err(format!("join token {token_id} has expired"));
        }
        let verifier = t
            .verifier()
            .ok_or_else(|| "the token record is corrupt".to_owned())?;
        let message = node::join_message(&token_id, &csr, &conn.exporter);
        if !verifier.verify(&message, &proof) {
            return Err(format!(
                "the proof for join token {token_id} does not verify (wrong secret, or a request replayed from another connection)"
            ));
        }
        Ok((t.role.clone(), t.segment.clone()))
    })?;
    let (role, segment) = grant.map_err(|reason| {
        authority.record_failure(conn.ip);
        Refusal::new(StatusCode::FORBIDDEN, reason)
    })?;
    let role: Role = role
        .parse()
        .map_err(|_| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt token role"))?;
    let node_id = new_node_id()?;
    let (identity, issued, not_after) = issue_node(authority, &csr, &segment, role, &node_id)?;
    authority.state.update(|s| {
        s.nodes.push(NodeRecord {
            id: node_id.clone(),
            role: role.as_str().to_owned(),
            segment: segment.clone(),
            token: token_id.clone(),
            current_serial: issued.serial.clone(),
            new_serial: None,
            not_after,
            joined_at: now,
            removed_at: None,
        })
    })?;
    tracing::info!(%node_id, %role, %segment, token = %token_id, "node joined");
    let mut answer = authority.roots_json();
    answer["node_id"] = node_id.into();
    answer["identity"] = identity.uri().into();
    answer["certificate"] = authority.chain(&issued.cert_pem).into();
    answer["not_after"] = not_after.into();
    answer["server_time"] = now.into();
    Ok(answer)
}

/// A node certificate for `csr`: the identity, what was issued, and its
/// notAfter in Unix seconds.
fn issue_node(
    authority: &Authority,
    csr: &[u8],
    segment: &str,
    role: Role,
    id: &str,
) -> Result<(ClusterIdentity, node::Issued, u64), Refusal> {
    let identity = ClusterIdentity::Node {
        trust_domain: authority.trust_domain.clone(),
        segment: segment.to_owned(),
        role,
        id: id.to_owned(),
    };
    let issued = node::issue(
        &authority.issuer,
        csr,
        &identity,
        SystemTime::now(),
        authority.node_lifetime,
    )
    .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let not_after = crate::verify::unix_seconds(issued.not_after);
    Ok((identity, issued, not_after))
}

fn renew(body: &[u8], conn: &Conn, authority: &Authority) -> Result<serde_json::Value, Refusal> {
    let Some(record) = authorize(conn, authority, Access::Node)? else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "only nodes renew; admins get certificates from the CA operator",
        ));
    };
    let req = parse_body(body)?;
    let csr = b64(&req, "csr")?;
    let role: Role = record
        .role
        .parse()
        .map_err(|_| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt node role"))?;
    // Role and segment come from the CA's record, never from the request.
    let (identity, issued, not_after) =
        issue_node(authority, &csr, &record.segment, role, &record.id)?;
    let recorded = authority.state.update(|s| match s.node_mut(&record.id) {
        Some(n) if n.removed_at.is_none() => {
            n.new_serial = Some(issued.serial.clone());
            n.not_after = not_after;
            true
        }
        _ => false,
    })?;
    if !recorded {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("node {} was removed from the cluster", record.id),
        ));
    }
    tracing::info!(node_id = %record.id, "node renewed");
    let mut answer = authority.roots_json();
    answer["node_id"] = record.id.clone().into();
    answer["identity"] = identity.uri().into();
    answer["certificate"] = authority.chain(&issued.cert_pem).into();
    answer["not_after"] = not_after.into();
    answer["server_time"] = unix_now().into();
    Ok(answer)
}

fn list_nodes(authority: &Authority) -> Result<serde_json::Value, Refusal> {
    let state = authority.state.read()?;
    Ok(json!({ "nodes": state.nodes }))
}

fn list_tokens(authority: &Authority) -> Result<serde_json::Value, Refusal> {
    let state = authority.state.read()?;
    let tokens: Vec<serde_json::Value> = state
        .tokens
        .iter()
        .map(|t| {
            json!({ "id": t.id, "role": t.role, "segment": t.segment, "expires_at": t.expires_at,
                    "uses_left": t.uses_left, "revoked": t.revoked })
        })
        .collect();
    Ok(json!({ "tokens": tokens }))
}

fn admin_create_token(body: &[u8], authority: &Authority) -> Result<serde_json::Value, Refusal> {
    let req = parse_body(body)?;
    let role: Role = field(&req, "role")?
        .parse()
        .map_err(|e: marque_keys::Error| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let segment = field(&req, "segment")?;
    let ttl = Duration::from_secs(req["ttl_seconds"].as_u64().unwrap_or(3600));
    let uses = u32::try_from(req["uses"].as_u64().unwrap_or(1)).unwrap_or(u32::MAX);
    let token = create_token(
        &authority.state,
        &authority.root_pem,
        role,
        segment,
        ttl,
        uses,
    )
    .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(json!({ "token": token.to_string(), "id": token.id() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_random_base32() {
        let a = new_node_id().unwrap();
        let b = new_node_id().unwrap();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(node::valid_name(&a, false));
    }
}
