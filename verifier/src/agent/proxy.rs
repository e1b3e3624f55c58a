//! The verifying registry proxy: a read-only OCI distribution endpoint on
//! a local port that Docker, containerd (as a mirror), skopeo or podman
//! pull through.
//!
//! - **Manifests** are fetched from the upstream registry in full (at most
//!   the manifest limit), hashed, and decided on *by the digest of those
//!   exact bytes*; only then are the same bytes served. A pull by tag is
//!   therefore verified by the digest actually served, never by the tag.
//!   The platform manifests of an allowed index are allowed with it (they
//!   are pinned by digest in the signed index).
//! - **Blobs** stream through unchanged, chunk by chunk. They are hashed on
//!   the way; the last chunk is held back until the digest matches, so a
//!   corrupted or truncated blob ends in a broken transfer, never in
//!   wrong bytes delivered as complete.
//! - **Denials** are `403` with an OCI error body (`DENIED`) whose message
//!   names the image, the digest and the reasons; an undecidable image
//!   (registry unreachable) is `503` with code `UNAVAILABLE`.
//! - Writes are refused (`405 UNSUPPORTED`): the proxy only serves pulls.
//!
//! containerd's mirror requests carry `?ns=REGISTRY`; it selects the
//! upstream, which must be one the agent was configured with. Without it
//! the first upstream is used.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::Enforcer;
use crate::digest::Hasher;
use crate::reference::RegistryRef;
use crate::registry::{BlobStream, Client, ManifestRef, RegistryError};
use crate::{Digest, ImageRef};

/// Bytes of verified manifests kept for requests by digest.
const MANIFEST_CACHE_BYTES: usize = 32 << 20;
/// Manifest fetches and decisions in flight at once; the rest wait.
const MAX_UPSTREAM: usize = 64;

type Body = BoxBody<Bytes, std::io::Error>;

/// The proxy's configuration and caches.
#[derive(Debug)]
pub struct Proxy {
    enforcer: Arc<Enforcer>,
    upstreams: Vec<String>,
    client: Client,
    manifests: Mutex<ManifestCache>,
    slots: tokio::sync::Semaphore,
}

#[derive(Debug, Default)]
struct ManifestCache {
    bytes: usize,
    entries: HashMap<(String, Digest), (Bytes, String)>,
}

impl Proxy {
    /// A proxy for `upstreams` (registry hosts, the first being the
    /// default) that decides through `enforcer` and streams with `client`
    /// (whose request timeout must allow the largest blob).
    pub fn new(enforcer: Arc<Enforcer>, upstreams: Vec<String>, client: Client) -> Proxy {
        Proxy {
            enforcer,
            upstreams,
            client,
            manifests: Mutex::new(ManifestCache::default()),
            slots: tokio::sync::Semaphore::new(MAX_UPSTREAM),
        }
    }

    fn cached_manifest(&self, repo: &str, digest: &Digest) -> Option<(Bytes, String)> {
        let cache = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entries
            .get(&(repo.to_owned(), digest.clone()))
            .cloned()
    }

    fn keep_manifest(&self, repo: &str, digest: &Digest, bytes: Bytes, media_type: String) {
        let mut cache = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        if cache.bytes + bytes.len() > MANIFEST_CACHE_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        cache.bytes += bytes.len();
        if let Some((old, _)) = cache
            .entries
            .insert((repo.to_owned(), digest.clone()), (bytes, media_type))
        {
            cache.bytes -= old.len();
        }
    }
}

/// Serves `proxy` on `listener` (plain HTTP; bind it to loopback) until
/// `shutdown`; then finishes the requests in flight (a blob transfer
/// included) and returns.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    shutdown: crate::cluster::Shutdown,
) {
    crate::cluster::serve_until(listener, "proxy", shutdown, move |tcp, addr, stop| {
        let proxy = Arc::clone(&proxy);
        async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                async move { Ok::<_, Infallible>(handle(&proxy, req).await) }
            });
            if let Err(e) = crate::cluster::serve_http1(TokioIo::new(tcp), service, stop).await {
                tracing::debug!(%addr, "proxy connection ended: {e}");
            }
        }
    })
    .await;
}

/// An OCI distribution error response.
fn oci_error(
    status: StatusCode,
    code: &str,
    message: &str,
    detail: serde_json::Value,
) -> Response<Body> {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": detail }] });
    let mut r = Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn registry_error(e: &RegistryError, code_unknown: &str) -> Response<Body> {
    match e {
        RegistryError::NotFound { what } => oci_error(
            StatusCode::NOT_FOUND,
            code_unknown,
            &format!("{what} not found"),
            json!({}),
        ),
        other => oci_error(
            StatusCode::BAD_GATEWAY,
            "UNAVAILABLE",
            &format!("upstream: {other}"),
            json!({}),
        ),
    }
}

async fn handle(proxy: &Proxy, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            return oci_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the marque proxy serves pulls only",
                json!({}),
            );
        }
    };
    let upstream = match upstream_for(proxy, req.uri().query()) {
        Ok(u) => u,
        Err(why) => return oci_error(StatusCode::FORBIDDEN, "DENIED", &why, json!({})),
    };
    let path = req.uri().path();
    if path == "/v2/" || path == "/v2" {
        let mut r = Response::new(full(&b"{}"[..]));
        r.headers_mut().insert(
            "Docker-Distribution-API-Version",
            HeaderValue::from_static("registry/2.0"),
        );
        return r;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "not an OCI distribution path",
            json!({}),
        );
    };
    let route = ["manifests", "blobs"].into_iter().find_map(|kind| {
        let (name, reference) = rest.rsplit_once(&format!("/{kind}/"))?;
        (!reference.contains('/') && !name.is_empty()).then_some((kind, name, reference))
    });
    let Some((kind, name, reference)) = route else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "the marque proxy serves manifests and blobs only",
            json!({}),
        );
    };
    let repo = match RegistryRef::parse(&format!("{upstream}/{name}")) {
        Ok(r) => r,
        Err(e) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                &e.to_string(),
                json!({}),
            );
        }
    };
    match kind {
        "manifests" => manifest(proxy, repo, reference, head).await,
        _ => blob(proxy, repo, reference, head).await,
    }
}

/// The upstream a request names with containerd's `ns` query parameter
/// (percent-encoded: `ns=registry.example%3A5000`), or the first one.
fn upstream_for<'p>(proxy: &'p Proxy, query: Option<&str>) -> Result<&'p str, String> {
    let ns = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "ns")
        .map(|(_, v)| v);
    match ns {
        None => Ok(&proxy.upstreams[0]),
        Some(ns) => proxy
            .upstreams
            .iter()
            .find(|u| u.as_str() == ns)
            .map(String::as_str)
            .ok_or_else(|| format!("this proxy does not serve registry {ns:?}")),
    }
}

async fn manifest(proxy: &Proxy, repo: RegistryRef, reference: &str, head: bool) -> Response<Body> {
    let spelled = if reference.contains(':') {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    };
    let image = match ImageRef::parse(&spelled) {
        Ok(i) => i,
        Err(e) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                &e.to_string(),
                json!({}),
            );
        }
    };
    let Ok(_slot) = proxy.slots.acquire().await else {
        return oci_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "shutting down",
            json!({}),
        );
    };
    let key = format!("{}/{}", repo.registry(), repo.repository());
    let cached = image.digest().and_then(|d| proxy.cached_manifest(&key, d));
    let (bytes, media_type, digest) = match cached {
        Some((bytes, media_type)) => {
            let digest = image
                .digest()
                .cloned()
                .unwrap_or_else(|| Digest::of(&bytes));
            (bytes, media_type, digest)
        }
        None => {
            let repository = proxy.client.repository(&image);
            let wanted = match image.digest() {
                Some(d) => ManifestRef::Digest(d),
                None => ManifestRef::Tag(image.tag().unwrap_or("latest")),
            };
            let fetched = tokio::time::timeout(
                proxy.enforcer.settings().decision_timeout,
                repository.fetch_manifest(wanted),
            )
            .await;
            match fetched {
                Ok(Ok(Some(m))) => (
                    Bytes::from(m.bytes),
                    m.media_type
                        .unwrap_or_else(|| crate::artifact::OCI_MANIFEST.to_owned()),
                    m.digest,
                ),
                Ok(Ok(None)) => {
                    return oci_error(
                        StatusCode::NOT_FOUND,
                        "MANIFEST_UNKNOWN",
                        &format!("{image}: manifest unknown upstream"),
                        json!({}),
                    );
                }
                Ok(Err(e)) => return registry_error(&e, "MANIFEST_UNKNOWN"),
                Err(_) => {
                    return oci_error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "UNAVAILABLE",
                        &format!("{image}: the upstream registry did not answer in time"),
                        json!({}),
                    );
                }
            }
        }
    };
    // The decision is on the digest of exactly the bytes served.
    let pinned = image.with_digest(digest.clone());
    let verdict = proxy.enforcer.decide(&pinned, "proxy").await;
    if !verdict.allowed {
        let (status, code) = if verdict.inconclusive {
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        } else {
            (StatusCode::FORBIDDEN, "DENIED")
        };
        return oci_error(
            status,
            code,
            &verdict.summary(),
            json!({
                "digest": digest,
                "reasons": verdict.reasons,
                "bundle_version": verdict.bundle_version,
            }),
        );
    }
    if is_index(&media_type, &bytes) {
        proxy
            .enforcer
            .allow_children(&pinned, &verdict, &index_children(&bytes));
    }
    proxy.keep_manifest(&key, &digest, bytes.clone(), media_type.clone());
    let length = bytes.len();
    let mut r = Response::new(if head {
        full(Bytes::new())
    } else {
        full(bytes)
    });
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&media_type) {
        h.insert(CONTENT_TYPE, v);
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        h.insert("Docker-Content-Digest", v);
    }
    r
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    media_type == crate::artifact::OCI_INDEX
        || media_type == crate::artifact::DOCKER_MANIFEST_LIST
        || crate::registry::sniff_media_type(bytes).as_deref() == Some(crate::artifact::OCI_INDEX)
}

fn index_children(bytes: &[u8]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    v["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|d| d["digest"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn blob(proxy: &Proxy, repo: RegistryRef, reference: &str, head: bool) -> Response<Body> {
    let digest: Digest = match reference.parse() {
        Ok(d) => d,
        Err(e) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                &e.to_string(),
                json!({}),
            );
        }
    };
    let repository = proxy.client.repository(&ImageRef::Registry(repo));
    let stream = match repository.open_blob(&digest, head).await {
        Ok(s) => s,
        Err(e) => return registry_error(&e, "BLOB_UNKNOWN"),
    };
    let length = stream.length;
    let body = if head {
        full(Bytes::new())
    } else {
        forward(stream, digest.clone())
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(n) = length {
        h.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        h.insert("Docker-Content-Digest", v);
    }
    r
}

/// Chunks queued for the hashing thread before the transfer waits for it.
const HASH_QUEUE: usize = 64;

/// Streams a blob, hashing it on a blocking thread in parallel with the
/// transfer (hashing is the costliest step; on its own core it no longer
/// adds to the copy). The last chunk is only sent once the digest matched,
/// so bad content ends in an error, never in a complete transfer.
fn forward(stream: BlobStream, expected: Digest) -> Body {
    struct State {
        stream: BlobStream,
        to_hasher: Option<tokio::sync::mpsc::Sender<Bytes>>,
        hasher: Option<tokio::task::JoinHandle<Digest>>,
        held: Option<Bytes>,
        expected: Digest,
        done: bool,
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut h = Hasher::default();
        while let Some(chunk) = rx.blocking_recv() {
            h.update(&chunk);
        }
        h.finish()
    });
    let state = State {
        stream,
        to_hasher: Some(tx),
        hasher: Some(hasher),
        held: None,
        expected,
        done: false,
    };
    let fail = |s: State, why: String| {
        tracing::warn!(digest = %s.expected, "blob transfer failed: {why}");
        Some((Err(std::io::Error::other(why)), State { done: true, ..s }))
    };
    let frames = futures_util::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            match s.stream.chunk().await {
                Ok(Some(chunk)) => {
                    let queued = match &s.to_hasher {
                        Some(tx) => tx.send(chunk.clone()).await.is_ok(),
                        None => false,
                    };
                    if !queued {
                        return fail(s, "the blob hasher stopped".to_owned());
                    }
                    if let Some(previous) = s.held.replace(chunk) {
                        return Some((Ok(Frame::data(previous)), s));
                    }
                }
                Ok(None) => {
                    s.done = true;
                    s.to_hasher = None;
                    let actual = match s.hasher.take() {
                        Some(h) => h.await.ok(),
                        None => None,
                    };
                    let Some(actual) = actual else {
                        return fail(s, "the blob hasher failed".to_owned());
                    };
                    if actual != s.expected {
                        tracing::error!(expected = %s.expected, %actual, "upstream blob does not match its digest");
                        let why = format!(
                            "blob {} does not match its digest (got {actual})",
                            s.expected
                        );
                        return fail(s, why);
                    }
                    let last = s.held.take()?;
                    return Some((Ok(Frame::data(last)), s));
                }
                Err(e) => return fail(s, format!("upstream: {e}")),
            }
        }
    });
    StreamBody::new(frames).boxed()
}
