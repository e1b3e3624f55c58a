//! The OCI distribution client for remote registries.
//!
//! Requests go through one pooled `reqwest` client (rustls on ring). Bearer
//! token exchange is delegated to `oci-client`; Basic credentials are sent
//! directly. Reads are streamed and cut off at the configured limit, so a
//! hostile registry cannot make marque buffer more than the limit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine as _;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};

use super::credentials::{self, Credentials};
use super::danger::Insecure;
use super::{ClientOptions, Limits, Manifest, ManifestRef, RegistryError, check_digest};
use crate::artifact::MANIFEST_MEDIA_TYPES;
use crate::digest::Digest;
use crate::reference::RegistryRef;

/// Which access a request needs; tokens are scoped by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Access {
    Pull,
    Push,
}

/// A connection pool and token cache shared by every repository.
pub struct RemoteRegistry {
    /// For plain-HTTP registries (loopback, or `--allow-insecure-registry`):
    /// loads no TLS roots, which would cost milliseconds per process, and
    /// stops at a redirect to HTTPS, which `send` hands to `https`.
    http: reqwest::Client,
    /// For HTTPS, with the platform's roots: built on first use.
    https: Mutex<Option<reqwest::Client>>,
    limits: Limits,
    insecure: Insecure,
    explicit: Option<Credentials>,
    docker_config_dir: Option<PathBuf>,
    /// `Authorization` values by (registry host, repository, access).
    auth: Mutex<HashMap<(String, String, Access), HeaderValue>>,
    /// Token clients by registry host.
    token_clients: Mutex<HashMap<String, oci_client::Client>>,
}

impl std::fmt::Debug for RemoteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRegistry")
            .field("limits", &self.limits)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// Retries of an idempotent request that got a 5xx answer.
const SERVER_RETRIES: u32 = 3;

const USER_AGENT: &str = concat!("marque/", env!("CARGO_PKG_VERSION"));

impl RemoteRegistry {
    /// Builds the pool.
    pub fn new(options: ClientOptions) -> Result<RemoteRegistry, RegistryError> {
        install_crypto_provider();
        // Within plain HTTP, follow redirects; hand one to HTTPS back.
        let plain_redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().scheme() == "https" {
                attempt.stop()
            } else if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let http = client_builder(&options.limits)
            .tls_certs_only(Vec::<reqwest::Certificate>::new())
            .redirect(plain_redirects)
            .build()
            .map_err(|source| RegistryError::Transport {
                registry: "(client setup)".to_owned(),
                source,
            })?;
        Ok(RemoteRegistry {
            http,
            https: Mutex::new(None),
            limits: options.limits,
            insecure: options.insecure,
            explicit: options.credentials,
            docker_config_dir: options.docker_config_dir,
            auth: Mutex::new(HashMap::new()),
            token_clients: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTPS client, built (with the platform's roots) on first use.
    fn https(&self, registry: &str) -> Result<reqwest::Client, RegistryError> {
        let mut slot = self.https.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = client_builder(&self.limits)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|source| RegistryError::Transport {
                registry: registry.to_owned(),
                source,
            })?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn plain_http(&self, r: &RegistryRef) -> bool {
        r.is_loopback() || self.insecure == Insecure::AllowPlainHttp
    }

    fn url(&self, r: &RegistryRef, rest: &str) -> String {
        let scheme = if self.plain_http(r) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{rest}", r.api_host(), r.repository())
    }

    /// Sends a request, answering one authentication challenge if the
    /// registry sends one.
    async fn send(
        &self,
        r: &RegistryRef,
        access: Access,
        method: Method,
        url: &str,
        headers: &[(reqwest::header::HeaderName, HeaderValue)],
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response, RegistryError> {
        let key = (r.api_host().to_owned(), r.repository().to_owned(), access);
        let mut authenticated = false;
        let mut server_errors = 0u32;
        let client = if url.starts_with("https://") {
            self.https(r.registry())?
        } else {
            self.http.clone()
        };
        loop {
            let mut req = client.request(method.clone(), url);
            for (name, value) in headers {
                req = req.header(name, value);
            }
            if let Some(body) = body {
                req = req.body(body.to_vec());
            }
            let cached = self.auth.lock().ok().and_then(|m| m.get(&key).cloned());
            if let Some(value) = cached {
                req = req.header(AUTHORIZATION, value);
            }
            let started = std::time::Instant::now();
            let resp = req
                .send()
                .await
                .map_err(|source| RegistryError::Transport {
                    registry: r.registry().to_owned(),
                    source,
                })?;
            let resp = self.follow_to_https(r, &method, resp).await?;
            let status = resp.status();
            tracing::debug!(%method, %url, status = status.as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "registry request");
            // Registries answer 5xx under load or while a tag is being
            // rewritten; idempotent requests are retried a few times.
            if status.is_server_error() && method != Method::POST && server_errors < SERVER_RETRIES
            {
                server_errors += 1;
                tracing::debug!(%url, %status, server_errors, "retrying after a server error");
                tokio::time::sleep(std::time::Duration::from_millis(20 << (2 * server_errors)))
                    .await;
                continue;
            }
            if status != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if authenticated {
                return Err(RegistryError::Unauthorized {
                    registry: r.registry().to_owned(),
                    repository: r.repository().to_owned(),
                    reason: "credentials were refused".to_owned(),
                });
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let value = self.authenticate(r, access, &challenge).await?;
            if let Ok(mut m) = self.auth.lock() {
                m.insert(key.clone(), value);
            }
            authenticated = true;
        }
    }

    /// A plain-HTTP registry's redirect to HTTPS (blob storage, say),
    /// followed with the HTTPS client and without the registry's
    /// `Authorization` (another host). Other answers are returned as they
    /// are.
    async fn follow_to_https(
        &self,
        r: &RegistryRef,
        method: &Method,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, RegistryError> {
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|l| l.starts_with("https://"));
        let (true, Some(location)) = (resp.status().is_redirection(), location) else {
            return Ok(resp);
        };
        if *method != Method::GET && *method != Method::HEAD {
            return Ok(resp);
        }
        let location = location.to_owned();
        tracing::debug!(%location, "following a redirect to HTTPS");
        self.https(r.registry())?
            .request(method.clone(), &location)
            .send()
            .await
            .map_err(|source| RegistryError::Transport {
                registry: r.registry().to_owned(),
                source,
            })
    }

    async fn credentials(&self, r: &RegistryRef) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = &self.explicit {
            return Ok(Some(c.clone()));
        }
        let dir = match &self.docker_config_dir {
            Some(d) => Some(d.clone()),
            None => credentials::docker_config_dir(),
        };
        match dir {
            Some(dir) => credentials::from_docker_config(&dir, r.registry()).await,
            None => Ok(None),
        }
    }

    /// Turns a `WWW-Authenticate` challenge into an `Authorization` value.
    async fn authenticate(
        &self,
        r: &RegistryRef,
        access: Access,
        challenge: &str,
    ) -> Result<HeaderValue, RegistryError> {
        let unauthorized = |reason: String| RegistryError::Unauthorized {
            registry: r.registry().to_owned(),
            repository: r.repository().to_owned(),
            reason,
        };
        let creds = self.credentials(r).await?;
        let scheme = challenge.split_whitespace().next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("basic") {
            let Some(c) = creds else {
                return Err(unauthorized(format!(
                    "the registry needs credentials: run `docker login {}` or pass --registry-username",
                    r.registry()
                )));
            };
            let raw = format!("{}:{}", c.username, c.password);
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            );
            return HeaderValue::from_str(&value).map_err(|_| {
                unauthorized("credentials contain characters not allowed in a header".to_owned())
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized(format!(
                "unsupported authentication challenge {:?}",
                challenge.chars().take(80).collect::<String>()
            )));
        }
        // oci-client performs the token exchange (realm, service, scope).
        let client = self.token_client(r);
        let oci_ref = oci_client::Reference::with_tag(
            r.registry().to_owned(),
            r.repository().to_owned(),
            "latest".to_owned(),
        );
        let hint = if creds.is_some() {
            "check the credentials"
        } else {
            "no credentials were found: run `docker login` or pass --registry-username"
        };
        let auth = match creds {
            Some(c) => oci_client::secrets::RegistryAuth::Basic(c.username, c.password),
            None => oci_client::secrets::RegistryAuth::Anonymous,
        };
        let op = match access {
            Access::Pull => oci_client::RegistryOperation::Pull,
            Access::Push => oci_client::RegistryOperation::Push,
        };
        let token = client
            .auth(&oci_ref, &auth, op)
            .await
            .map_err(|e| unauthorized(format!("token exchange failed ({hint}): {e}")))?
            .ok_or_else(|| unauthorized("the token service issued no token".to_owned()))?;
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            unauthorized("the token service issued a token that is not a valid header".to_owned())
        })
    }

    fn token_client(&self, r: &RegistryRef) -> oci_client::Client {
        let host = r.registry().to_owned();
        let mut clients = match self.token_clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients
            .entry(host.clone())
            .or_insert_with(|| {
                let protocol = if self.plain_http(r) {
                    oci_client::client::ClientProtocol::Http
                } else {
                    oci_client::client::ClientProtocol::Https
                };
                oci_client::Client::new(oci_client::client::ClientConfig {
                    protocol,
                    read_timeout: Some(self.limits.request_timeout),
                    connect_timeout: Some(self.limits.connect_timeout),
                    user_agent: USER_AGENT,
                    ..Default::default()
                })
            })
            .clone()
    }

    pub(super) async fn resolve(
        &self,
        r: &RegistryRef,
        tag: &str,
    ) -> Result<Digest, RegistryError> {
        let url = self.url(r, &format!("manifests/{tag}"));
        let resp = self
            .send(
                r,
                Access::Pull,
                Method::HEAD,
                &url,
                &[accept_manifests()],
                None,
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    what: format!("image {}", r.with_tag(tag)),
                });
            }
            status => return Err(status_error("HEAD", &url, status, String::new())),
        }
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(digest) = header {
            return Ok(digest);
        }
        // No usable header: fetch the manifest and hash it ourselves.
        match self.fetch_manifest(r, ManifestRef::Tag(tag)).await? {
            Some(m) => Ok(m.digest),
            None => Err(RegistryError::NotFound {
                what: format!("image {}", r.with_tag(tag)),
            }),
        }
    }

    pub(super) async fn fetch_manifest(
        &self,
        r: &RegistryRef,
        reference: ManifestRef<'_>,
    ) -> Result<Option<Manifest>, RegistryError> {
        let name = match reference {
            ManifestRef::Tag(t) => t.to_owned(),
            ManifestRef::Digest(d) => d.to_string(),
        };
        let url = self.url(r, &format!("manifests/{name}"));
        let resp = self
            .send(
                r,
                Access::Pull,
                Method::GET,
                &url,
                &[accept_manifests()],
                None,
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => return Err(status_error("GET", &url, status, body_snippet(resp).await)),
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let what = format!("manifest {}@{name}", r.repository());
        let bytes = read_bounded(resp, self.limits.max_manifest_bytes, &what, r).await?;
        let digest = Digest::of(&bytes);
        if let ManifestRef::Digest(expected) = reference {
            check_digest(&what, expected, &bytes)?;
        }
        let media_type = super::sniff_media_type(&bytes).or(media_type);
        Ok(Some(Manifest {
            bytes,
            digest,
            media_type,
        }))
    }

    pub(super) async fn fetch_blob(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let resp = self.blob_response(r, digest, Method::GET).await?;
        let what = format!("blob {}@{digest}", r.repository());
        let bytes = read_bounded(resp, limit, &what, r).await?;
        check_digest(&what, digest, &bytes)?;
        Ok(bytes)
    }

    /// Streams a blob of at most `limit` bytes into `sink`, chunk by chunk,
    /// without holding it in memory. The caller checks the digest of what
    /// it received (see `layout::BlobWriter`).
    pub(super) async fn stream_blob(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        limit: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        let mut resp = self.blob_response(r, digest, Method::GET).await?;
        let what = format!("blob {}@{digest}", r.repository());
        let too_large = || RegistryError::TooLarge {
            what: what.clone(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut seen = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| RegistryError::Transport {
                registry: r.registry().to_owned(),
                source,
            })?
        {
            seen += chunk.len() as u64;
            if seen > limit {
                return Err(too_large());
            }
            sink(&chunk)?;
        }
        Ok(())
    }

    /// Opens a blob for streaming (`head`: headers only). The caller
    /// checks the digest of what it reads.
    pub(super) async fn open_blob(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        head: bool,
    ) -> Result<super::BlobStream, RegistryError> {
        let method = if head { Method::HEAD } else { Method::GET };
        let resp = self.blob_response(r, digest, method).await?;
        Ok(super::BlobStream {
            length: resp.content_length(),
            registry: r.registry().to_owned(),
            resp: if head { None } else { Some(resp) },
        })
    }

    /// `GET` or `HEAD` of a blob: the response when it is `200`; `NotFound`
    /// or the status as an error otherwise.
    async fn blob_response(
        &self,
        r: &RegistryRef,
        digest: &Digest,
        method: Method,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let name = if method == Method::HEAD {
            "HEAD"
        } else {
            "GET"
        };
        let resp = self.send(r, Access::Pull, method, &url, &[], None).await?;
        match resp.status() {
            StatusCode::OK => Ok(resp),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                what: format!("blob {}@{digest}", r.repository()),
            }),
            status => Err(status_error(name, &url, status, body_snippet(resp).await)),
        }
    }

    pub(super) async fn push_blob(
        &self,
        r: &RegistryRef,
        bytes: Vec<u8>,
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&bytes);
        let start = self.url(r, "blobs/uploads/");
        let resp = self
            .send(r, Access::Push, Method::POST, &start, &[], None)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let status = resp.status();
            return Err(status_error(
                "POST",
                &start,
                status,
                body_snippet(resp).await,
            ));
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                RegistryError::Protocol(format!(
                    "registry {} started an upload without a Location",
                    r.registry()
                ))
            })?;
        let base =
            reqwest::Url::parse(&start).map_err(|e| RegistryError::Protocol(e.to_string()))?;
        let mut upload = base.join(location).map_err(|e| {
            RegistryError::Protocol(format!("bad upload Location {location:?}: {e}"))
        })?;
        upload
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let headers = [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )];
        let resp = self
            .send(
                r,
                Access::Push,
                Method::PUT,
                upload.as_str(),
                &headers,
                Some(&bytes),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            let status = resp.status();
            return Err(status_error(
                "PUT",
                upload.as_str(),
                status,
                body_snippet(resp).await,
            ));
        }
        Ok(digest)
    }

    pub(super) async fn push_manifest(
        &self,
        r: &RegistryRef,
        tag: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        self.put_manifest(r, tag, bytes, media_type)
            .await
            .map(|(d, _)| d)
    }

    /// Lists referrers of `digest` through the referrers API; `None` when
    /// the registry does not have the API (it answers 404).
    pub(super) async fn referrers(
        &self,
        r: &RegistryRef,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.url(r, &format!("referrers/{digest}"));
        let accept = (ACCEPT, HeaderValue::from_static(crate::artifact::OCI_INDEX));
        let resp = self
            .send(r, Access::Pull, Method::GET, &url, &[accept], None)
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => return Err(status_error("GET", &url, status, body_snippet(resp).await)),
        }
        let what = format!("referrers index of {}@{digest}", r.repository());
        read_bounded(resp, self.limits.max_manifest_bytes, &what, r)
            .await
            .map(Some)
    }

    /// PUTs a manifest; also says whether the registry answered with
    /// `OCI-Subject`, i.e. indexed the manifest's subject for the
    /// referrers API itself.
    pub(super) async fn put_manifest(
        &self,
        r: &RegistryRef,
        tag: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(Digest, bool), RegistryError> {
        let digest = Digest::of(&bytes);
        let url = self.url(r, &format!("manifests/{tag}"));
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| RegistryError::Protocol(format!("bad media type {media_type:?}")))?;
        let resp = self
            .send(
                r,
                Access::Push,
                Method::PUT,
                &url,
                &[(CONTENT_TYPE, content_type)],
                Some(&bytes),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            let status = resp.status();
            return Err(status_error("PUT", &url, status, body_snippet(resp).await));
        }
        let stored = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(stored) = stored.filter(|s| *s != digest) {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest pushed to {}:{tag}", r.repository()),
                expected: digest,
                actual: stored,
            });
        }
        let subject_indexed = resp.headers().contains_key("oci-subject");
        Ok((digest, subject_indexed))
    }
}

fn accept_manifests() -> (reqwest::header::HeaderName, HeaderValue) {
    (ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS))
}

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

// Keep the Accept header in step with the media types the parsers know.
const _: () = assert!(MANIFEST_MEDIA_TYPES.len() == 4);

async fn read_bounded(
    mut resp: reqwest::Response,
    limit: u64,
    what: &str,
    r: &RegistryRef,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| RegistryError::Transport {
            registry: r.registry().to_owned(),
            source,
        })?
    {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn body_snippet(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() > 512 {
            buf.truncate(512);
            break;
        }
    }
    String::from_utf8_lossy(&buf).trim().to_owned()
}

fn status_error(
    method: &'static str,
    url: &str,
    status: StatusCode,
    body: String,
) -> RegistryError {
    RegistryError::Status {
        method,
        url: url.to_owned(),
        status: status.as_u16(),
        body,
    }
}

/// What both clients share: agent, timeouts, pool size.
fn client_builder(limits: &Limits) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.request_timeout)
        .read_timeout(limits.read_timeout)
        .pool_max_idle_per_host(64)
}

/// rustls needs a process-wide crypto provider; marque uses ring only.
fn install_crypto_provider() {
    // Fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(insecure: Insecure) -> RemoteRegistry {
        let options = ClientOptions {
            insecure,
            ..ClientOptions::default()
        };
        RemoteRegistry::new(options).unwrap()
    }

    #[test]
    fn the_https_client_and_its_roots_are_built_on_first_use() {
        let r = remote(Insecure::LoopbackOnly);
        assert!(r.https.lock().unwrap().is_none());
        r.https("registry.example").unwrap();
        assert!(r.https.lock().unwrap().is_some());
    }

    #[test]
    fn plain_http_only_for_loopback_unless_allowed() {
        let r = remote(Insecure::LoopbackOnly);
        let url = |s: &str| r.url(&RegistryRef::parse(s).unwrap(), "manifests/x");
        assert_eq!(
            url("127.0.0.1:5000/a"),
            "http://127.0.0.1:5000/v2/a/manifests/x"
        );
        assert_eq!(
            url("localhost:5000/a"),
            "http://localhost:5000/v2/a/manifests/x"
        );
        assert_eq!(url("[::1]:5000/a"), "http://[::1]:5000/v2/a/manifests/x");
        assert_eq!(
            url("10.0.0.1:5000/a"),
            "https://10.0.0.1:5000/v2/a/manifests/x"
        );
        assert_eq!(url("ghcr.io/org/a"), "https://ghcr.io/v2/org/a/manifests/x");
        assert_eq!(
            url("alpine"),
            "https://registry-1.docker.io/v2/library/alpine/manifests/x"
        );
        let r = remote(Insecure::AllowPlainHttp);
        assert_eq!(
            r.url(
                &RegistryRef::parse("registry.internal:5000/a").unwrap(),
                "blobs/"
            ),
            "http://registry.internal:5000/v2/a/blobs/"
        );
    }
}
