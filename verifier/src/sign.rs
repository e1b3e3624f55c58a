//! Signing an image digest and appending the signature to its `.sig`
//! manifest without losing anyone else's.
//!
//! Registries have no compare-and-swap on tags, so appending is a
//! read-modify-write that can race with another signer. [`sign`] keeps
//! every layer it read, checks the tag again just before writing (a HEAD;
//! on conflict it starts over), and after writing waits a settle delay of
//! several check-then-write windows and reads the tag again: if its layer
//! was dropped by a writer that read before it wrote, it appends again. In
//! an OCI layout the check and write are one atomic step under a file lock.
//! See docs/threat-model.md for what this does and does not guarantee.

use std::collections::BTreeMap;
use std::hash::BuildHasher as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use marque_keys::SigningKey;

use crate::artifact::OCI_MANIFEST;
use crate::artifact::manifest::{self, Descriptor, ImageManifest};
use crate::artifact::simple_signing::{self, Stamp};
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{ManifestRef, RegistryError, Repository, TagCheck, TagUpdate};

/// The annotation holding a layer's base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Most read-modify-write rounds before giving up.
const MAX_ROUNDS: usize = 100;

/// The result of signing one image.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The image, pinned to the digest that was signed.
    pub image: ImageRef,
    /// The signed manifest digest.
    pub digest: Digest,
    /// The tag holding the signature manifest.
    pub signature_tag: String,
    /// The digest of the payload blob.
    pub payload_digest: Digest,
    /// False when the same key had already signed the same payload, so
    /// nothing was added.
    pub appended: bool,
    /// How many times the signature manifest was written.
    pub writes: usize,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// Reading or writing the registry or layout failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The key could not sign.
    #[error("signing failed: {0}")]
    Key(#[from] marque_keys::Error),
    /// The signature tag holds something marque will not overwrite.
    #[error("{tag} holds a manifest marque cannot append to ({reason}); refusing to overwrite it")]
    Unappendable {
        /// The signature tag.
        tag: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signature manifest is full.
    #[error("{tag} already has {count} signatures, the most verifiers read")]
    TooManySignatures {
        /// The signature tag.
        tag: String,
        /// How many layers it has.
        count: usize,
    },
    /// An annotation would overwrite the signing time or tool.
    #[error(
        "annotation {key:?} is reserved for the signing time and tool (use --no-timestamp to set it yourself)"
    )]
    ReservedAnnotation {
        /// The annotation key.
        key: String,
    },
    /// Other writers kept overwriting the signature.
    #[error("gave up after {rounds} writes: other writers kept replacing {tag}")]
    Contended {
        /// The signature tag.
        tag: String,
        /// Writes attempted.
        rounds: usize,
    },
}

/// Signs `image` in `repo` with `key`, adding `annotations` (and `stamp`,
/// the signing time, when given) to the payload's `optional` section, and
/// appends the signature to the `.sig` manifest,
/// confirming it survived. For many images, [`Append`] lets the caller write
/// them all first and confirm them afterwards, so the settle delays overlap.
pub async fn sign(
    repo: &Repository,
    image: &ImageRef,
    key: &SigningKey,
    annotations: &BTreeMap<String, String>,
    stamp: Option<&Stamp>,
    max_signatures: usize,
) -> Result<Signed, SignError> {
    let mut append =
        Append::start(repo.clone(), image, key, annotations, stamp, max_signatures).await?;
    match append.write().await? {
        Some(done) => Ok(done),
        None => append.confirm().await,
    }
}

/// One signature being appended to an image's `.sig` manifest.
///
/// [`Append::start`] resolves the image and signs the payload;
/// [`Append::write`] appends the layer (re-reading on conflict) and returns
/// the result at once when no confirmation is needed (it was already there,
/// or the write was atomic); otherwise [`Append::confirm`] waits out the
/// settle delay, re-reads, and appends again if the layer was dropped.
#[derive(Debug)]
pub struct Append {
    repo: Repository,
    image: ImageRef,
    digest: Digest,
    tag: String,
    payload: Vec<u8>,
    payload_digest: Digest,
    layer: Descriptor,
    signature: String,
    public_key: marque_keys::PublicKey,
    max_signatures: usize,
    appended: bool,
    writes: usize,
    /// How long our check-then-write takes; a concurrent marque writer is
    /// exposed to a stale read only for about as long as its own.
    window: Duration,
    payload_uploaded: bool,
    written_at: Option<Instant>,
}

impl Append {
    /// Resolves `image` once and signs its payload.
    pub async fn start(
        repo: Repository,
        image: &ImageRef,
        key: &SigningKey,
        annotations: &BTreeMap<String, String>,
        stamp: Option<&Stamp>,
        max_signatures: usize,
    ) -> Result<Append, SignError> {
        Unsigned::prepare(repo, image, annotations, stamp, max_signatures)
            .await?
            .sign(key)
    }

    /// Appends `blob`, described by `layer` (annotations included), to the
    /// manifest under `tag`; uploads the blob and its first-layer config.
    #[allow(clippy::too_many_arguments)] // crate-private; each is one field
    pub(crate) async fn with_layer(
        repo: Repository,
        image: ImageRef,
        digest: Digest,
        tag: String,
        blob: Vec<u8>,
        layer: Descriptor,
        public_key: marque_keys::PublicKey,
        max_signatures: usize,
    ) -> Result<Append, SignError> {
        repo.push_blob(blob.clone()).await?;
        repo.push_blob(manifest::signature_manifest(vec![layer.clone()]).config)
            .await?;
        Ok(Append::uploaded(
            repo,
            image,
            digest,
            tag,
            blob,
            layer,
            public_key,
            max_signatures,
        ))
    }

    /// An append of `layer` (describing `blob`; its signature annotation
    /// set) whose blob and first-signature config are already uploaded.
    #[allow(clippy::too_many_arguments)] // private; each is one field
    fn uploaded(
        repo: Repository,
        image: ImageRef,
        digest: Digest,
        tag: String,
        blob: Vec<u8>,
        layer: Descriptor,
        public_key: marque_keys::PublicKey,
        max_signatures: usize,
    ) -> Append {
        Append {
            repo,
            image,
            payload_digest: Digest::of(&blob),
            signature: layer
                .annotations
                .get(SIGNATURE_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            digest,
            tag,
            payload: blob,
            layer,
            public_key,
            max_signatures,
            appended: true,
            writes: 0,
            window: Duration::from_millis(5),
            payload_uploaded: true,
            written_at: None,
        }
    }

    /// Adds an annotation to the signature layer (a certificate and its
    /// chain, for instance) before it is written.
    pub fn annotate(&mut self, key: &str, value: &str) {
        self.layer
            .annotations
            .insert(key.to_owned(), value.to_owned());
    }

    fn done(&self) -> Signed {
        Signed {
            image: self.image.clone(),
            digest: self.digest.clone(),
            signature_tag: self.tag.clone(),
            payload_digest: self.payload_digest.clone(),
            appended: self.appended,
            writes: self.writes,
        }
    }

    fn is_present(&self, layers: &[Descriptor]) -> bool {
        layers.iter().any(|l| {
            l.digest_str == self.payload_digest.as_str()
                && l.annotations.get(SIGNATURE_ANNOTATION) == Some(&self.signature)
        })
    }

    /// Appends the layer. `Some` when finished; `None` when the write must
    /// still be confirmed with [`Append::confirm`].
    pub async fn write(&mut self) -> Result<Option<Signed>, SignError> {
        // Most signatures go to a digest nobody has signed yet. For that
        // case upload the payload and the one-layer config before reading,
        // so that the read itself is the check just before the write.
        self.layer
            .annotations
            .insert(SIGNATURE_ANNOTATION.to_owned(), self.signature.clone());
        // Unsigned::prepare uploaded the payload and the one-layer config.
        let mut fresh = (self.writes == 0)
            .then(|| manifest::signature_manifest(vec![self.layer.clone()]).manifest);
        loop {
            let (current, existing) = read_layers(&self.repo, &self.tag).await?;
            if self.writes == 0 {
                // Same key, same payload already there: keep that signature
                // rather than adding a second, randomised one.
                if let Some(prior) = existing.iter().find(|l| {
                    is_same_signer(l, &self.payload_digest, &self.payload, &self.public_key)
                }) {
                    self.signature = prior.annotations[SIGNATURE_ANNOTATION].clone();
                    self.appended = false;
                }
            }
            if self.is_present(&existing) {
                return Ok(Some(self.done()));
            }
            if self.writes >= MAX_ROUNDS {
                return Err(SignError::Contended {
                    tag: self.tag.clone(),
                    rounds: self.writes,
                });
            }
            if existing.len() >= self.max_signatures {
                return Err(SignError::TooManySignatures {
                    tag: self.tag.clone(),
                    count: existing.len(),
                });
            }
            // Another signer of the same payload may have uploaded it.
            let payload_present = existing
                .iter()
                .any(|l| l.digest_str == self.payload_digest.as_str());
            if !self.payload_uploaded && !payload_present {
                self.repo.push_blob(self.payload.clone()).await?;
                self.payload_uploaded = true;
            }
            self.layer
                .annotations
                .insert(SIGNATURE_ANNOTATION.to_owned(), self.signature.clone());
            self.appended = true;
            let (manifest_bytes, check) = match fresh.take() {
                // The tag did not exist a moment ago: our read was the check.
                Some(bytes) if existing.is_empty() && current.is_none() => {
                    (bytes, TagCheck::JustRead)
                }
                _ => {
                    let mut layers = existing;
                    layers.push(self.layer.clone());
                    let built = manifest::signature_manifest(layers);
                    self.repo.push_blob(built.config).await?;
                    (built.manifest, TagCheck::Recheck)
                }
            };
            self.writes += 1;
            let write_start = Instant::now();
            match self
                .repo
                .replace_tag(
                    &self.tag,
                    current.as_ref(),
                    check,
                    manifest_bytes,
                    OCI_MANIFEST,
                )
                .await
            {
                // Atomic (OCI layout): nobody can have overwritten it.
                Ok(TagUpdate::Replaced) => return Ok(Some(self.done())),
                Ok(TagUpdate::Unconditional) => {
                    self.window = write_start.elapsed();
                    self.written_at = Some(Instant::now());
                    return Ok(None);
                }
                Ok(TagUpdate::Conflict) => {
                    // Someone wrote between our read and our write: read
                    // again, backing off a little more each time.
                    tokio::time::sleep(jitter(self.window * self.writes.min(8) as u32)).await;
                }
                // Concurrent uploads of the same blob (every signer of one
                // image uploads the same payload and, for the same layer
                // count, the same config) can make distribution briefly
                // report a blob it just received as unknown. Upload again.
                Err(RegistryError::Status {
                    status: 400,
                    ref body,
                    ..
                }) if body.contains("BLOB_UNKNOWN") => {
                    tracing::debug!(tag = %self.tag, "registry lost a blob under concurrent upload; retrying");
                    self.payload_uploaded = false;
                    tokio::time::sleep(jitter(self.window * 2)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the settle delay after the last write has passed, then
    /// checks the layer is still there, appending again until it stays.
    /// A writer that read before our write has written by then; if it
    /// dropped our layer we see it here.
    pub async fn confirm(mut self) -> Result<Signed, SignError> {
        loop {
            if let Some(at) = self.written_at {
                tokio::time::sleep_until((at + settle_delay(self.window)).into()).await;
            }
            let (_, existing) = read_layers(&self.repo, &self.tag).await?;
            if self.is_present(&existing) {
                return Ok(self.done());
            }
            tracing::debug!(tag = %self.tag, "our signature was overwritten; appending again");
            if let Some(done) = self.write().await? {
                return Ok(done);
            }
        }
    }
}

/// An image's payload, resolved and uploaded but not yet signed.
///
/// Most signatures go to a digest nobody has signed yet. For that case the
/// payload and the one-layer config (which depends only on the payload's
/// digest) are uploaded here, before the tag is read, so that read is the
/// check right before the write. It also lets a caller do this network work
/// while the signing key is still being decrypted: the blobs are content
/// addressed and unreferenced until a manifest names them.
#[derive(Debug)]
pub struct Unsigned {
    repo: Repository,
    image: ImageRef,
    digest: Digest,
    payload: Vec<u8>,
    max_signatures: usize,
}

impl Unsigned {
    /// Resolves `image` once, builds its payload (with `stamp`, the signing
    /// time, when given) and uploads it with the config a first signature
    /// needs.
    pub async fn prepare(
        repo: Repository,
        image: &ImageRef,
        annotations: &BTreeMap<String, String>,
        stamp: Option<&Stamp>,
        max_signatures: usize,
    ) -> Result<Unsigned, SignError> {
        if stamp.is_some()
            && let Some(key) = annotations.keys().find(|k| simple_signing::is_reserved(k))
        {
            return Err(SignError::ReservedAnnotation { key: key.clone() });
        }
        let digest = repo.resolve(image).await?;
        let identity = image.identity();
        let payload = match stamp {
            Some(stamp) => simple_signing::build_stamped(&identity, &digest, annotations, stamp),
            None => simple_signing::build(&identity, &digest, annotations),
        };
        let layer = Descriptor::for_bytes(simple_signing::MEDIA_TYPE, &payload);
        repo.push_blob(payload.clone()).await?;
        repo.push_blob(manifest::signature_manifest(vec![layer]).config)
            .await?;
        Ok(Unsigned {
            repo,
            image: image.with_digest(digest.clone()),
            digest,
            payload,
            max_signatures,
        })
    }

    /// Signs the payload with `key`.
    pub fn sign(self, key: &SigningKey) -> Result<Append, SignError> {
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&self.payload)?);
        let mut layer = Descriptor::for_bytes(simple_signing::MEDIA_TYPE, &self.payload);
        layer
            .annotations
            .insert(SIGNATURE_ANNOTATION.to_owned(), signature);
        // A stamped payload cannot be rebuilt by a verifier; embedding it
        // saves the verifier the blob request.
        layer.embed(&self.payload);
        Ok(Append::uploaded(
            self.repo,
            self.image,
            self.digest.clone(),
            self.digest.cosign_tag("sig"),
            self.payload,
            layer,
            key.public_key().clone(),
            self.max_signatures,
        ))
    }
}

/// The digest and layers of the signature manifest under `tag`, or none.
async fn read_layers(
    repo: &Repository,
    tag: &str,
) -> Result<(Option<Digest>, Vec<Descriptor>), SignError> {
    let Some(found) = repo.fetch_manifest(ManifestRef::Tag(tag)).await? else {
        return Ok((None, Vec::new()));
    };
    let parsed = ImageManifest::parse(&found.bytes).map_err(|e| SignError::Unappendable {
        tag: tag.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((Some(found.digest), parsed.layers))
}

fn is_same_signer(
    layer: &Descriptor,
    payload_digest: &Digest,
    payload: &[u8],
    key: &marque_keys::PublicKey,
) -> bool {
    if layer.digest_str != payload_digest.as_str() || layer.media_type != simple_signing::MEDIA_TYPE
    {
        return false;
    }
    let Some(sig) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
        return false;
    };
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig) else {
        return false;
    };
    key.verify(payload, &sig).is_ok()
}

/// How long to wait before confirming that a write survived: several times
/// another writer's check-then-write window, which is about as long as ours.
pub(crate) fn settle_delay(window: Duration) -> Duration {
    // The floor covers a writer that is descheduled between its check and
    // its write (16 signer processes on 2 cores stall each other for tens
    // of milliseconds); in a batch the delays overlap, so it costs little.
    let base = (window * 4).clamp(Duration::from_millis(60), Duration::from_secs(2));
    base + jitter(Duration::from_millis(30))
}

/// The stamp marque records: this version, and `now` in Unix seconds.
pub fn stamp_at(now: std::time::SystemTime) -> Stamp {
    Stamp {
        creator: format!("marque {}", env!("CARGO_PKG_VERSION")),
        timestamp: now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// A random duration in `[0, max)`.
pub(crate) fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos().max(1) as u64;
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    Duration::from_nanos(random % nanos)
}
