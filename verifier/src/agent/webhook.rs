//! The Kubernetes validating admission webhook: AdmissionReview v1 over
//! TLS, deciding every container image of a Pod or pod template through
//! the same [`Enforcer`] as the proxy.
//!
//! - Tags are resolved to digests by the registry and the decision is on
//!   the digest; a warning says which digest a tag was admitted as (pin it,
//!   or pull through the proxy, so the node runs what was admitted).
//! - An image in an audit scope that fails the policy is allowed with a
//!   warning; any denied image denies the object, with every reason.
//! - Malformed reviews are answered `400`, which kube-apiserver treats as a
//!   webhook failure (`failurePolicy: Fail` denies).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::Enforcer;
use super::admission::{self, MAX_REVIEW_BYTES};
use crate::ImageRef;
use crate::cluster::tls::Identity;

/// Lifetime of a generated webhook certificate.
const GENERATED_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// Decides one AdmissionReview body; the HTTP status and the JSON answer.
pub async fn review(enforcer: &Enforcer, body: &[u8]) -> (StatusCode, serde_json::Value) {
    let review = match admission::parse(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": e.to_string() }),
            );
        }
    };
    let mut images: Vec<&str> = review.images.iter().map(|c| c.image.as_str()).collect();
    images.sort_unstable();
    images.dedup();
    let verdicts = futures_util::future::join_all(images.iter().map(|image| async move {
        match ImageRef::parse(image) {
            Ok(r @ ImageRef::Registry(_)) => Ok(enforcer.decide(&r, "admission").await),
            Ok(ImageRef::Layout(_)) => Err(format!("{image}: not a registry image")),
            Err(e) => Err(format!("{image}: {e}")),
        }
    }))
    .await;
    let mut denied = Vec::new();
    let mut warnings = Vec::new();
    for (image, verdict) in images.iter().zip(verdicts) {
        match verdict {
            Err(why) => denied.push(why),
            Ok(v) if !v.allowed => denied.push(v.summary()),
            Ok(v) => {
                if !v.satisfied {
                    warnings.push(format!("marque audit: {}", v.summary()));
                }
                if !image.contains('@')
                    && let Some(d) = &v.digest
                {
                    warnings.push(format!("{image} is referenced by tag; admitted as {d}"));
                }
            }
        }
    }
    let target = match (&review.namespace, &review.name) {
        (Some(ns), Some(n)) => format!("{} {ns}/{n}", review.kind),
        (None, Some(n)) => format!("{} {n}", review.kind),
        _ => review.kind.clone(),
    };
    let answer = if denied.is_empty() {
        admission::response(&review.uid, true, None, &warnings)
    } else {
        let message = format!(
            "marque denied {target}: {} image(s) failed the trust policy: {}",
            denied.len(),
            denied.join(" | ")
        );
        admission::response(&review.uid, false, Some(&message), &warnings)
    };
    (StatusCode::OK, answer)
}

/// Serves the webhook on `listener` with `tls` until `shutdown`, then
/// finishes the reviews in flight. Every path accepts `POST` of an
/// AdmissionReview (conventionally `/validate`); `GET /healthz` answers
/// `ok`.
pub async fn serve(
    enforcer: Arc<Enforcer>,
    tls: rustls::ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: crate::cluster::Shutdown,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    crate::cluster::serve_until(listener, "webhook", shutdown, move |tcp, addr, stop| {
        let (acceptor, enforcer) = (acceptor.clone(), Arc::clone(&enforcer));
        let connection = async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(%addr, "webhook TLS handshake failed: {e}");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let enforcer = Arc::clone(&enforcer);
                async move { Ok::<_, Infallible>(handle(&enforcer, req).await) }
            });
            if let Err(e) = crate::cluster::serve_http1(TokioIo::new(tls), service, stop).await {
                tracing::debug!(%addr, "webhook connection ended: {e}");
            }
        };
        // kube-apiserver keeps connections alive; none may hold a task
        // forever.
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(300), connection).await;
        }
    })
    .await;
}

async fn handle(enforcer: &Enforcer, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: serde_json::Value| {
        let mut r = Response::new(Full::new(Bytes::from(
            serde_json::to_vec(&body).unwrap_or_default(),
        )));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => {
            return Response::new(Full::new(Bytes::from_static(b"ok")));
        }
        (&Method::POST, _) => {}
        _ => {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({ "error": "POST an AdmissionReview" }),
            );
        }
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({ "error": "AdmissionReview too large" }),
            );
        }
    };
    let (status, answer) = review(enforcer, &body).await;
    reply(status, answer)
}

/// The webhook's certificate files in `dir`: `tls.crt` (chain), `tls.key`,
/// and `ca.crt` (the `caBundle` for the webhook configuration).
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    /// Leaf then issuer, PEM.
    pub cert: PathBuf,
    /// PKCS#8 PEM.
    pub key: PathBuf,
    /// The issuing CA, PEM (generated certificates only).
    pub ca: PathBuf,
}

impl CertificateFiles {
    /// The files under `dir`.
    pub fn in_dir(dir: &Path) -> CertificateFiles {
        CertificateFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            ca: dir.join("ca.crt"),
        }
    }

    /// Loads the identity from the files.
    pub fn load(&self) -> Result<Identity, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let chain = marque_keys::certificate::certificates_from_pem(&read(&self.cert)?)
            .map_err(|e| format!("{}: {e}", self.cert.display()))?
            .into_iter()
            .map(rustls::pki_types::CertificateDer::from)
            .collect();
        let key = marque_keys::PrivateKeyFile::parse(&read(&self.key)?)
            .and_then(|k| k.into_signing_key(None))
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        Ok(Identity {
            chain,
            key_pkcs8: key.pkcs8_der().to_vec(),
        })
    }

    /// Generates a CA and a server certificate for `names` (valid a year)
    /// into the files; the CA's key is discarded.
    pub fn generate(&self, names: &[String]) -> Result<(), String> {
        let now = SystemTime::now();
        let ca = marque_keys::certificate::new_root(
            "marque admission webhook CA",
            now,
            GENERATED_LIFETIME,
            0,
        )
        .map_err(|e| e.to_string())?;
        let key = marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)
            .map_err(|e| e.to_string())?;
        let cert = marque_keys::certificate::issue_server(
            &ca,
            key.public_key(),
            names,
            now,
            GENERATED_LIFETIME,
        )
        .map_err(|e| e.to_string())?;
        let dir = self.cert.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |p: &Path, bytes: &[u8]| {
            crate::registry::layout::write_atomically(dir, p, bytes)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        write(&self.key, key.to_pkcs8_pem().as_bytes())?;
        write(&self.cert, format!("{cert}{}", ca.cert_pem).as_bytes())?;
        write(&self.ca, ca.cert_pem.as_bytes())?;
        Ok(())
    }
}
