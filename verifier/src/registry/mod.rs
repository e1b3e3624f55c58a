//! Registry I/O: one narrow interface over a remote OCI registry and an OCI
//! image layout on disk.
//!
//! Every read is bounded by [`Limits`] and every fetch by digest is checked
//! against that digest before it is returned. Writes push exact bytes.
//! Nothing here knows about signatures or policy.

pub mod credentials;
pub mod layout;
mod remote;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use layout::OciLayout;
pub use remote::RemoteRegistry;

use crate::artifact::referrer::ReferrersIndex;
use crate::digest::Digest;
use crate::reference::{ImageRef, RegistryRef};

/// Size and time bounds for everything read from a registry or layout.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest manifest accepted (default 4 MiB).
    pub max_manifest_bytes: u64,
    /// Largest signature payload blob accepted (default 1 MiB).
    pub max_payload_bytes: u64,
    /// Most signature layers tried per image (default 1,000, as cosign).
    pub max_signatures: usize,
    /// Whole-request timeout (default 30 s).
    pub request_timeout: Duration,
    /// Longest wait for the next bytes of a response (default 30 s).
    pub read_timeout: Duration,
    /// TCP/TLS connect timeout (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_manifest_bytes: 4 << 20,
            max_payload_bytes: 1 << 20,
            max_signatures: 1000,
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a registry or layout operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached or the request timed out.
    #[error("cannot reach registry {registry}: {source}")]
    Transport {
        /// The registry host.
        registry: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry refused the credentials, or needs some.
    #[error("registry {registry} refused access to {repository}: {reason}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
        /// What the registry or the credential lookup said.
        reason: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry answered {status} for {method} {url}: {body}")]
    Status {
        /// The request method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Content larger than the configured limit.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit that was exceeded.
        limit: u64,
    },
    /// Content did not hash to the digest it was fetched by.
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being read.
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// The manifest or blob does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was asked for.
        what: String,
    },
    /// The registry or layout broke the protocol or format.
    #[error("{0}")]
    Protocol(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A fetched manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// The digest of `bytes`.
    pub digest: Digest,
    /// The media type the registry declared, or the document's `mediaType`.
    pub media_type: Option<String>,
}

/// A blob being read from a registry, chunk by chunk.
#[derive(Debug)]
pub struct BlobStream {
    /// The length the registry declared.
    pub length: Option<u64>,
    registry: String,
    resp: Option<reqwest::Response>,
}

impl BlobStream {
    /// The next chunk; `None` at the end (or for a `head` request).
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RegistryError> {
        let Some(resp) = self.resp.as_mut() else {
            return Ok(None);
        };
        resp.chunk()
            .await
            .map_err(|source| RegistryError::Transport {
                registry: self.registry.clone(),
                source,
            })
    }
}

/// A manifest reference within a repository.
#[derive(Debug, Clone, Copy)]
pub enum ManifestRef<'a> {
    /// A tag; mutable, so only used to find signature manifests and resolve.
    Tag(&'a str),
    /// A digest; the fetched bytes are checked against it.
    Digest(&'a Digest),
}

/// Whether [`Repository::replace_tag`] must look at a registry tag again
/// before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagCheck {
    /// Read the tag again right before the write.
    Recheck,
    /// The caller read the tag immediately before; do not read it again.
    /// (An OCI layout always checks, under its lock.)
    JustRead,
}

/// The result of [`Repository::replace_tag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagUpdate {
    /// The tag was checked and replaced atomically.
    Replaced,
    /// The tag had moved; nothing was written.
    Conflict,
    /// Written without a check (registries).
    Unconditional,
}

/// Options for connecting to registries.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Bounds on reads and requests.
    pub limits: Limits,
    /// Plain-HTTP and TLS exceptions; see [`danger`].
    pub insecure: danger::Insecure,
    /// Explicit credentials, used for every registry, instead of the Docker
    /// config.
    pub credentials: Option<credentials::Credentials>,
    /// Where to read Docker's config.json; `None` means `$DOCKER_CONFIG` or
    /// `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
}

/// Settings that weaken transport security, kept apart so each use is
/// visible at the call site.
pub mod danger {
    /// Whether non-loopback registries may be reached over plain HTTP.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub enum Insecure {
        /// HTTPS with certificate verification, except for loopback
        /// registries (127.0.0.0/8, localhost, `[::1]`), which use HTTP.
        #[default]
        LoopbackOnly,
        /// Plain HTTP for every registry (`--allow-insecure-registry`).
        AllowPlainHttp,
    }
}

/// Opens repositories in registries or layouts. Cheap to clone; share one
/// per process so connections and tokens are reused.
#[derive(Debug, Clone)]
pub struct Client {
    remote: Arc<RemoteRegistry>,
    limits: Limits,
}

impl Client {
    /// A client with the given options.
    pub fn new(options: ClientOptions) -> Result<Client, RegistryError> {
        let limits = options.limits.clone();
        Ok(Client {
            remote: Arc::new(RemoteRegistry::new(options)?),
            limits,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The repository holding `image`.
    pub fn repository(&self, image: &ImageRef) -> Repository {
        match image {
            ImageRef::Registry(r) => Repository::Remote {
                remote: Arc::clone(&self.remote),
                reference: r.clone(),
            },
            ImageRef::Layout(l) => Repository::Layout(OciLayout::new(&l.path, self.limits.clone())),
        }
    }
}

/// One repository: a registry repository or an OCI layout directory.
#[derive(Debug, Clone)]
pub enum Repository {
    /// A repository in a registry.
    Remote {
        /// The shared client.
        remote: Arc<RemoteRegistry>,
        /// Any reference in the repository (tag and digest are ignored).
        reference: RegistryRef,
    },
    /// An OCI image layout.
    Layout(OciLayout),
}

impl Repository {
    /// Resolves `image` to the digest of its manifest. A digest in the
    /// reference is returned as is: the signature check binds it, and no
    /// request is needed. A tag is resolved once; Docker's default tag is
    /// `latest`.
    pub async fn resolve(&self, image: &ImageRef) -> Result<Digest, RegistryError> {
        if let Some(d) = image.digest() {
            return Ok(d.clone());
        }
        let tag = image.tag().unwrap_or("latest");
        match self {
            Repository::Remote { remote, reference } => remote.resolve(reference, tag).await,
            Repository::Layout(layout) => layout.resolve(tag).await,
        }
    }

    /// Fetches a manifest; `Ok(None)` when it does not exist.
    pub async fn fetch_manifest(
        &self,
        reference: ManifestRef<'_>,
    ) -> Result<Option<Manifest>, RegistryError> {
        match self {
            Repository::Remote {
                remote,
                reference: r,
            } => remote.fetch_manifest(r, reference).await,
            Repository::Layout(layout) => layout.fetch_manifest(reference).await,
        }
    }

    /// Fetches a blob of at most `limit` bytes, checked against `digest`.
    pub async fn fetch_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, RegistryError> {
        match self {
            Repository::Remote { remote, reference } => {
                remote.fetch_blob(reference, digest, limit).await
            }
            Repository::Layout(layout) => layout.fetch_blob(digest, limit).await,
        }
    }

    /// Streams a blob of at most `limit` bytes into `sink` without
    /// holding it in memory. The digest is not checked here: the sink
    /// hashes what it receives (see [`layout::BlobWriter`]).
    pub async fn stream_blob(
        &self,
        digest: &Digest,
        limit: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        match self {
            Repository::Remote { remote, reference } => {
                remote.stream_blob(reference, digest, limit, sink).await
            }
            Repository::Layout(layout) => layout.stream_blob(digest, limit, sink),
        }
    }

    /// Opens a blob in a registry for streaming, without reading it
    /// (`head`: headers only). The digest is not checked here: the reader
    /// hashes what it forwards. Not available for OCI layouts.
    pub async fn open_blob(
        &self,
        digest: &Digest,
        head: bool,
    ) -> Result<BlobStream, RegistryError> {
        match self {
            Repository::Remote { remote, reference } => {
                remote.open_blob(reference, digest, head).await
            }
            Repository::Layout(layout) => Err(RegistryError::Protocol(format!(
                "cannot stream blobs from the layout {}",
                layout.path().display()
            ))),
        }
    }

    /// Uploads a blob; returns its digest.
    pub async fn push_blob(&self, bytes: Vec<u8>) -> Result<Digest, RegistryError> {
        match self {
            Repository::Remote { remote, reference } => remote.push_blob(reference, bytes).await,
            Repository::Layout(layout) => layout.push_blob(bytes).await,
        }
    }

    /// Uploads manifest bytes under `tag`; returns their digest.
    pub async fn push_manifest(
        &self,
        tag: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        match self {
            Repository::Remote { remote, reference } => {
                remote
                    .push_manifest(reference, tag, bytes, media_type)
                    .await
            }
            Repository::Layout(layout) => layout.push_manifest(tag, bytes, media_type).await,
        }
    }

    /// Points `tag` at `bytes` only if it still points at `expected`
    /// (`None`: the tag does not exist). An OCI layout checks this under
    /// its lock. Registries have no compare-and-swap: the tag is checked
    /// with a HEAD just before the PUT, and [`TagUpdate::Unconditional`]
    /// says the write was not atomic.
    pub async fn replace_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        check: TagCheck,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<TagUpdate, RegistryError> {
        match self {
            Repository::Remote { remote, reference } => {
                // No compare-and-swap: check just before writing, which
                // narrows the race to the gap between these two requests.
                if check == TagCheck::Recheck {
                    let now = match remote.resolve(reference, tag).await {
                        Ok(d) => Some(d),
                        Err(RegistryError::NotFound { .. }) => None,
                        Err(e) => return Err(e),
                    };
                    if now.as_ref() != expected {
                        return Ok(TagUpdate::Conflict);
                    }
                }
                remote
                    .push_manifest(reference, tag, bytes, media_type)
                    .await?;
                Ok(TagUpdate::Unconditional)
            }
            Repository::Layout(layout) => {
                match layout
                    .replace_tag(tag, Some(expected), bytes, media_type)
                    .await?
                {
                    (_, true) => Ok(TagUpdate::Replaced),
                    (_, false) => Ok(TagUpdate::Conflict),
                }
            }
        }
    }

    /// Pushes a referrer manifest by digest. `true` when the registry
    /// indexed its subject itself (it answered `OCI-Subject`); otherwise
    /// the caller must update the fallback index.
    pub async fn push_referrer(&self, bytes: Vec<u8>) -> Result<(Digest, bool), RegistryError> {
        let digest = Digest::of(&bytes);
        match self {
            Repository::Remote { remote, reference } => {
                remote
                    .put_manifest(
                        reference,
                        digest.as_str(),
                        bytes,
                        crate::artifact::OCI_MANIFEST,
                    )
                    .await
            }
            Repository::Layout(layout) => Ok((layout.push_blob(bytes).await?, false)),
        }
    }

    /// The referrers of `subject`: from the referrers API where the
    /// registry has one, else from the fallback index under `sha256-<hex>`.
    /// A fallback tag that is not an index (some registries answer with the
    /// image itself) counts as no referrers.
    pub async fn referrers(&self, subject: &Digest) -> Result<ReferrersIndex, RegistryError> {
        if let Repository::Remote { remote, reference } = self
            && let Some(bytes) = remote.referrers(reference, subject).await?
        {
            return ReferrersIndex::parse(&bytes).map_err(RegistryError::Protocol);
        }
        let tag = crate::artifact::referrer::fallback_tag(subject);
        match self.fetch_manifest(ManifestRef::Tag(&tag)).await? {
            None => Ok(ReferrersIndex::empty()),
            Some(m) if m.digest == *subject => Ok(ReferrersIndex::empty()),
            Some(m) => match ReferrersIndex::parse(&m.bytes) {
                Ok(index) => Ok(index),
                Err(e) => {
                    tracing::warn!(%tag, "ignoring the referrers fallback tag: {e}");
                    Ok(ReferrersIndex::empty())
                }
            },
        }
    }

    /// A display name for messages.
    pub fn name(&self) -> String {
        match self {
            Repository::Remote { reference, .. } => {
                format!("{}/{}", reference.registry(), reference.repository())
            }
            Repository::Layout(layout) => format!("oci:{}", layout.path().display()),
        }
    }
}

/// Fails unless `bytes` hash to `expected`.
pub(crate) fn check_digest(
    what: &str,
    expected: &Digest,
    bytes: &[u8],
) -> Result<(), RegistryError> {
    let actual = Digest::of(bytes);
    if &actual != expected {
        return Err(RegistryError::DigestMismatch {
            what: what.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// The `mediaType` field of a JSON document, if it has one.
pub(crate) fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<M>(bytes)
        .ok()
        .and_then(|m| m.media_type)
}
