//! Saving images for offline verification: each image's manifest, with
//! every signature, attestation and referrer that verifying it reads, copied
//! into an OCI image layout (`marque save`).
//!
//! Per image:
//!
//! * the tag is resolved to a digest once; everything after that is
//!   fetched by digest and checked against it (an index's child manifests
//!   too, and with [`SaveOptions::with_blobs`] every config and layer);
//! * cosign's `sha256-<hex>.sig`, `.att` and `.sbom` manifests are copied
//!   with all their blobs, always (verifying needs the payloads);
//! * every referrer of the digest (referrers API or fallback index) is
//!   copied with its blobs and listed in the layout's fallback index
//!   `sha256-<hex>`, which is where a layout's referrers are read from;
//! * last, index.json names the image with its registry reference
//!   (`org.opencontainers.image.ref.name` and `io.containerd.image.name`),
//!   so a layout never names an image whose evidence is not all there.
//!
//! Saving into a layout that already holds something keeps it: a cosign
//! tag or fallback index that is already there is merged with the new one
//! (layers and entries are added, none dropped), under the layout's lock
//! with a compare-and-swap, so concurrent saves cannot lose each other's
//! evidence. Nothing here decides whether a signature is valid: content is
//! copied as the registry holds it, and `verify` judges it offline exactly
//! as it would online.

use serde::Serialize;

use crate::artifact::manifest::{Descriptor, ImageManifest, signature_manifest};
use crate::artifact::referrer::{ReferrersIndex, fallback_tag};
use crate::artifact::{DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::digest::Digest;
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::{
    Manifest, ManifestRef, OciLayout, RegistryError, Repository, TagCheck, TagUpdate,
};

/// The cosign attachment tags copied, by suffix.
const ATTACHMENTS: [&str; 3] = ["sig", "att", "sbom"];
/// How deep indexes may nest (an index of indexes of manifests is 2).
const MAX_INDEX_DEPTH: usize = 4;
/// Compare-and-swap attempts on one layout tag before giving up.
const MAX_TAG_ROUNDS: usize = 100;

/// What to copy, and the bounds on it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Also copy image configs and layers, making a complete image that
    /// skopeo or podman can read. Without it only manifests are copied
    /// (plus every blob of signatures, attestations and referrers).
    pub with_blobs: bool,
    /// Largest blob copied (default 4 GiB). Config and layer blobs are
    /// streamed to a temporary file and hashed on the way, never held in
    /// memory whole.
    pub max_blob_bytes: u64,
    /// Most manifests copied per image, children of indexes and referrers
    /// included (default 10,000).
    pub max_manifests: usize,
    /// Most referrers copied per image (default 1,000, as many as
    /// verification reads).
    pub max_referrers: usize,
}

impl Default for SaveOptions {
    fn default() -> SaveOptions {
        SaveOptions {
            with_blobs: false,
            max_blob_bytes: 4 << 30,
            max_manifests: 10_000,
            max_referrers: 1000,
        }
    }
}

/// What was copied for one image. Content the layout already had counts
/// too: these describe the saved image, not the bytes transferred.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Copied {
    /// Manifests: the image's (and an index's children), the cosign
    /// attachment manifests, and referrer manifests.
    pub manifests: usize,
    /// Blobs other than manifests.
    pub blobs: usize,
    /// Layers of the `.sig` manifest.
    pub signatures: usize,
    /// Layers of the `.att` manifest.
    pub attestations: usize,
    /// Layers of the `.sbom` manifest.
    pub sboms: usize,
    /// Referrer manifests.
    pub referrers: usize,
}

/// One image saved.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    /// The name it was saved under (its registry reference, normalised).
    pub name: String,
    /// Its manifest digest.
    pub digest: Digest,
    /// What was copied.
    pub copied: Copied,
    /// Evidence the source lists but could not be copied as is (a referrer
    /// that is gone, a malformed attachment); the image was saved without it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why an image could not be saved.
#[derive(Debug, thiserror::Error)]
#[error("cannot save {image}: {reason}")]
pub struct SaveError {
    /// The image as given.
    pub image: String,
    /// What went wrong.
    pub reason: SaveFailure,
}

/// What went wrong saving an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveFailure {
    /// The image does not exist in its registry or layout.
    #[error("{0}")]
    NotFound(String),
    /// A layout image that has no registry name to be saved under.
    #[error(
        "it has no registry name to be saved under; give a registry reference, or oci:DIR of images saved by marque save"
    )]
    Unnamed,
    /// Reading from the source failed.
    #[error("cannot read {what}: {source}")]
    Read {
        /// What was being read.
        what: String,
        /// The underlying error.
        #[source]
        source: RegistryError,
    },
    /// Writing to (or reading back from) the layout failed.
    #[error("cannot write {what} to the layout: {source}")]
    Write {
        /// What was being written.
        what: String,
        /// The underlying error.
        #[source]
        source: RegistryError,
    },
    /// A manifest that must be understood to be copied is not.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// The manifest.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob larger than [`SaveOptions::max_blob_bytes`].
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The blob.
        what: String,
        /// Its size in its descriptor.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More manifests than [`SaveOptions::max_manifests`], or indexes
    /// nested deeper than marque follows.
    #[error("{0}")]
    TooMany(String),
    /// Other writers kept changing a tag in the layout.
    #[error("gave up after {rounds} attempts: other writers kept replacing {tag} in the layout")]
    Contended {
        /// The tag.
        tag: String,
        /// Attempts made.
        rounds: usize,
    },
}

/// The name an image is saved under: its registry reference, normalised,
/// with Docker's default tag `latest` when it names neither tag nor digest;
/// a layout image keeps the name it was saved under.
pub fn saved_name(image: &ImageRef) -> Result<RegistryRef, SaveFailure> {
    match image {
        ImageRef::Registry(r) if r.tag().is_none() && r.digest().is_none() => {
            Ok(r.with_tag("latest"))
        }
        ImageRef::Registry(r) => Ok(r.clone()),
        ImageRef::Layout(l) => l.saved_as.clone().ok_or(SaveFailure::Unnamed),
    }
}

/// Copies `image` from `source` into the layout `dest` (created if
/// missing) with its signatures, attestations and referrers, and names it
/// there with its registry reference. See the module documentation.
pub async fn save(
    source: &Repository,
    image: &ImageRef,
    dest: &OciLayout,
    options: &SaveOptions,
) -> Result<Saved, SaveError> {
    let fail = |reason| SaveError {
        image: image.to_string(),
        reason,
    };
    let name = saved_name(image).map_err(fail)?;
    let mut copier = Copier {
        source,
        layout: dest,
        dest: Repository::Layout(dest.clone()),
        options,
        copied: Copied::default(),
        warnings: Vec::new(),
    };
    copier.write(dest.create(), "the layout").map_err(fail)?;
    let digest = copier.copy_image(image, &name).await.map_err(fail)?;
    Ok(Saved {
        name: name.to_string(),
        digest,
        copied: copier.copied,
        warnings: copier.warnings,
    })
}

/// The state of one image's copy.
struct Copier<'a> {
    source: &'a Repository,
    layout: &'a OciLayout,
    /// `layout` as a repository, for reads and tag updates.
    dest: Repository,
    options: &'a SaveOptions,
    copied: Copied,
    warnings: Vec<String>,
}

/// What a manifest holds, as far as copying is concerned.
enum Contents {
    /// An image index or Docker manifest list: child manifests.
    Index(Vec<Descriptor>),
    /// An image manifest: config and layers.
    Image(ImageManifest),
}

impl Copier<'_> {
    /// Resolves, copies the image and its evidence, and names it.
    async fn copy_image(
        &mut self,
        image: &ImageRef,
        name: &RegistryRef,
    ) -> Result<Digest, SaveFailure> {
        let digest = self.source.resolve(image).await.map_err(|e| match e {
            RegistryError::NotFound { what } => SaveFailure::NotFound(format!("{what} not found")),
            source => SaveFailure::Read {
                what: "the image's digest".to_owned(),
                source,
            },
        })?;
        let root = self
            .source
            .fetch_manifest(ManifestRef::Digest(&digest))
            .await
            .map_err(read(format!("manifest {digest}")))?
            .ok_or_else(|| {
                SaveFailure::NotFound(format!(
                    "manifest {digest} not found in {}",
                    self.source.name()
                ))
            })?;
        self.copy_tree(&root, self.options.with_blobs, 0).await?;
        for suffix in ATTACHMENTS {
            self.copy_attachment(&digest, suffix).await?;
        }
        self.copy_referrers(&digest).await?;
        let media_type = root.media_type.as_deref().unwrap_or(OCI_MANIFEST);
        let size = root.bytes.len() as u64;
        let result = self
            .layout
            .name_image(&name.to_string(), &digest, size, media_type);
        self.write(result, "index.json")?;
        Ok(digest)
    }

    /// Copies `manifest` and what it names: an index's child manifests
    /// (fetched by digest), and with `blobs` an image's config and layers.
    /// The manifest itself is written after its contents.
    async fn copy_tree(
        &mut self,
        manifest: &Manifest,
        blobs: bool,
        depth: usize,
    ) -> Result<(), SaveFailure> {
        self.copied.manifests += 1;
        if self.copied.manifests > self.options.max_manifests {
            return Err(SaveFailure::TooMany(format!(
                "more than {} manifests",
                self.options.max_manifests
            )));
        }
        match contents(manifest, blobs)? {
            Some(Contents::Index(children)) => {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(SaveFailure::TooMany(format!(
                        "indexes nested more than {MAX_INDEX_DEPTH} deep"
                    )));
                }
                for child in &children {
                    let digest = descriptor_digest(child, "child manifest")?;
                    let what = format!("child manifest {digest} of {}", manifest.digest);
                    let m = self
                        .source
                        .fetch_manifest(ManifestRef::Digest(&digest))
                        .await
                        .map_err(read(what.clone()))?
                        .ok_or_else(|| SaveFailure::NotFound(format!("{what} not found")))?;
                    Box::pin(self.copy_tree(&m, blobs, depth + 1)).await?;
                }
            }
            Some(Contents::Image(image)) => {
                self.copy_blob(&image.config).await?;
                for layer in &image.layers {
                    self.copy_blob(layer).await?;
                }
            }
            None => {}
        }
        self.put_manifest(manifest).await
    }

    /// Writes manifest bytes into the layout unless they are there intact.
    async fn put_manifest(&mut self, manifest: &Manifest) -> Result<(), SaveFailure> {
        let size = manifest.bytes.len() as u64;
        if !self.present(&manifest.digest, size).await? {
            let result = self.layout.write_blob(&manifest.bytes);
            self.write(result, &format!("manifest {}", manifest.digest))?;
        }
        Ok(())
    }

    /// Copies one blob (bounded by its descriptor's size, digest-checked)
    /// unless the layout has it intact.
    async fn copy_blob(&mut self, descriptor: &Descriptor) -> Result<(), SaveFailure> {
        let digest = descriptor_digest(descriptor, "blob")?;
        let what = format!("blob {digest}");
        if descriptor.size > self.options.max_blob_bytes {
            return Err(SaveFailure::TooLarge {
                what,
                size: descriptor.size,
                limit: self.options.max_blob_bytes,
            });
        }
        self.copied.blobs += 1;
        let intact = self.layout.blob_intact(&digest, descriptor.size);
        if self.write(intact, &what)? {
            return Ok(());
        }
        // Streamed to a temporary file and hashed on the way: layers are
        // never held in memory whole.
        let writer = self.layout.blob_writer();
        let mut writer = self.write(writer, &what)?;
        self.source
            .stream_blob(&digest, descriptor.size, &mut |chunk| writer.write(chunk))
            .await
            .map_err(read(what.clone()))?;
        let result = writer.finish(&digest, descriptor.size);
        self.write(result, &what)?;
        Ok(())
    }

    /// Whether the layout already has `digest` with the right content. A
    /// damaged or oversized copy counts as absent, to be written again.
    async fn present(&self, digest: &Digest, size: u64) -> Result<bool, SaveFailure> {
        match self.dest.fetch_blob(digest, size).await {
            Ok(bytes) => Ok(bytes.len() as u64 == size),
            Err(
                RegistryError::NotFound { .. }
                | RegistryError::DigestMismatch { .. }
                | RegistryError::TooLarge { .. },
            ) => Ok(false),
            Err(source) => Err(self.write_error(&format!("blob {digest}"), source)),
        }
    }

    /// Copies cosign's `sha256-<hex>.<suffix>` manifest and all its blobs,
    /// merging it into the layout's tag of that name.
    async fn copy_attachment(&mut self, digest: &Digest, suffix: &str) -> Result<(), SaveFailure> {
        let tag = digest.cosign_tag(suffix);
        let Some(m) = self
            .source
            .fetch_manifest(ManifestRef::Tag(&tag))
            .await
            .map_err(read(tag.clone()))?
        else {
            return Ok(());
        };
        let parsed = match ImageManifest::parse(&m.bytes) {
            Ok(p) => p,
            Err(e) => {
                self.warnings
                    .push(format!("{tag} is not an image manifest ({e}); not copied"));
                return Ok(());
            }
        };
        let count = parsed.layers.len();
        match suffix {
            "sig" => self.copied.signatures += count,
            "att" => self.copied.attestations += count,
            _ => self.copied.sboms += count,
        }
        self.copy_tree(&m, true, 0).await?;
        self.merge_attachment(&tag, &m, &parsed).await
    }

    /// Points the layout's `tag` at `m`, or, when it holds another cosign
    /// manifest, at one with that manifest's layers followed by the new
    /// ones (none dropped).
    async fn merge_attachment(
        &mut self,
        tag: &str,
        m: &Manifest,
        parsed: &ImageManifest,
    ) -> Result<(), SaveFailure> {
        for _ in 0..MAX_TAG_ROUNDS {
            let current = self.tag_digest(tag)?;
            let existing = match &current {
                None => None,
                Some(d) if *d == m.digest => return Ok(()),
                Some(d) => self.readable_manifest(d).await?,
            };
            let replaced = current.is_some();
            let (bytes, media_type, replaced) =
                match existing.map(|e| ImageManifest::parse(&e.bytes)) {
                    Some(Ok(existing)) => {
                        let Some(layers) = merged_layers(existing.layers, &parsed.layers) else {
                            return Ok(());
                        };
                        let built = signature_manifest(layers);
                        let result = self.layout.write_blob(&built.config);
                        self.write(result, &format!("the config of {tag}"))?;
                        (built.manifest, OCI_MANIFEST, false)
                    }
                    // No tag yet, or one whose manifest is gone or unusable:
                    // the source's manifest replaces it.
                    _ => (
                        m.bytes.clone(),
                        m.media_type.as_deref().unwrap_or(OCI_MANIFEST),
                        replaced,
                    ),
                };
            if self
                .replace_tag(tag, current.as_ref(), bytes, media_type)
                .await?
            {
                if replaced {
                    self.warnings.push(format!(
                        "{tag} in the layout was missing or unusable; replaced"
                    ));
                }
                return Ok(());
            }
        }
        Err(SaveFailure::Contended {
            tag: tag.to_owned(),
            rounds: MAX_TAG_ROUNDS,
        })
    }

    /// Copies every referrer of `digest` with its blobs, and lists them in
    /// the layout's fallback index.
    async fn copy_referrers(&mut self, digest: &Digest) -> Result<(), SaveFailure> {
        let index = self
            .source
            .referrers(digest)
            .await
            .map_err(read(format!("the referrers of {digest}")))?;
        if index.manifests.len() > self.options.max_referrers {
            self.warnings.push(format!(
                "{} referrers listed; only the first {} were copied",
                index.manifests.len(),
                self.options.max_referrers
            ));
        }
        let mut copied = Vec::new();
        for entry in index.manifests.iter().take(self.options.max_referrers) {
            let Ok(d) = entry.digest() else {
                self.warnings.push(format!(
                    "referrer {:?} is not a sha256 digest; not copied",
                    entry.digest_str
                ));
                continue;
            };
            let found = self
                .source
                .fetch_manifest(ManifestRef::Digest(&d))
                .await
                .map_err(read(format!("referrer {d}")))?;
            let Some(m) = found else {
                self.warnings
                    .push(format!("referrer {d} is listed but missing; not copied"));
                continue;
            };
            self.copy_tree(&m, true, 0).await?;
            self.copied.referrers += 1;
            copied.push(entry.clone());
        }
        if copied.is_empty() {
            return Ok(());
        }
        self.merge_referrers(digest, copied).await
    }

    /// Adds `entries` to the layout's fallback index for `subject`,
    /// keeping every entry already there.
    async fn merge_referrers(
        &mut self,
        subject: &Digest,
        entries: Vec<Descriptor>,
    ) -> Result<(), SaveFailure> {
        let tag = fallback_tag(subject);
        for _ in 0..MAX_TAG_ROUNDS {
            let current = self.tag_digest(&tag)?;
            let existing = match &current {
                None => None,
                Some(d) => self.readable_manifest(d).await?,
            };
            let parsed = existing.and_then(|e| ReferrersIndex::parse(&e.bytes).ok());
            let replaced = current.is_some() && parsed.is_none();
            let mut index = parsed.unwrap_or_else(ReferrersIndex::empty);
            let before = index.manifests.len();
            for entry in &entries {
                if !index
                    .manifests
                    .iter()
                    .any(|e| e.digest_str == entry.digest_str)
                {
                    index.manifests.push(entry.clone());
                }
            }
            if current.is_some() && index.manifests.len() == before {
                return Ok(());
            }
            if self
                .replace_tag(&tag, current.as_ref(), index.to_bytes(), OCI_INDEX)
                .await?
            {
                if replaced {
                    self.warnings.push(format!(
                        "{tag} in the layout was missing or unusable; replaced"
                    ));
                }
                return Ok(());
            }
        }
        Err(SaveFailure::Contended {
            tag,
            rounds: MAX_TAG_ROUNDS,
        })
    }

    /// The digest a layout tag points at.
    fn tag_digest(&self, tag: &str) -> Result<Option<Digest>, SaveFailure> {
        let result = self.layout.tag_digest(tag);
        self.write(result, &format!("tag {tag}"))
    }

    /// The layout's manifest `digest`, or `None` when it is missing or
    /// damaged (and may be replaced).
    async fn readable_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, SaveFailure> {
        match self.dest.fetch_manifest(ManifestRef::Digest(digest)).await {
            Ok(m) => Ok(m),
            Err(RegistryError::DigestMismatch { .. } | RegistryError::TooLarge { .. }) => Ok(None),
            Err(source) => Err(self.write_error(&format!("manifest {digest}"), source)),
        }
    }

    /// Points a layout tag at `bytes` if it still points at `expected`;
    /// `false` when another writer moved it first.
    async fn replace_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<bool, SaveFailure> {
        match self
            .dest
            .replace_tag(tag, expected, TagCheck::Recheck, bytes, media_type)
            .await
        {
            Ok(TagUpdate::Conflict) => Ok(false),
            Ok(TagUpdate::Replaced | TagUpdate::Unconditional) => Ok(true),
            Err(source) => Err(self.write_error(&format!("tag {tag}"), source)),
        }
    }

    /// Maps a layout error to [`SaveFailure::Write`].
    fn write<T>(&self, result: Result<T, RegistryError>, what: &str) -> Result<T, SaveFailure> {
        result.map_err(|source| self.write_error(what, source))
    }

    fn write_error(&self, what: &str, source: RegistryError) -> SaveFailure {
        SaveFailure::Write {
            what: format!("{what} (oci:{})", self.layout.path().display()),
            source,
        }
    }
}

/// `existing` followed by each of `new` that is not among them (the whole
/// descriptor compared: two signatures over the same payload differ in
/// their annotations). `None` when nothing is new.
fn merged_layers(mut existing: Vec<Descriptor>, new: &[Descriptor]) -> Option<Vec<Descriptor>> {
    let before = existing.len();
    for layer in new {
        if !existing.contains(layer) {
            existing.push(layer.clone());
        }
    }
    (existing.len() > before).then_some(existing)
}

/// Maps a source error to [`SaveFailure::Read`] of `what`.
fn read(what: String) -> impl FnOnce(RegistryError) -> SaveFailure {
    move |source| SaveFailure::Read { what, source }
}

/// The validated digest of a descriptor.
fn descriptor_digest(d: &Descriptor, what: &str) -> Result<Digest, SaveFailure> {
    d.digest().map_err(|_| SaveFailure::Malformed {
        what: format!("{what} {:?}", d.digest_str),
        reason: "its digest is not sha256:<64 hex>".to_owned(),
    })
}

/// What `manifest` names that must be copied with it: an index's children
/// always, an image's config and layers only with `blobs`. `None` when
/// nothing need be (or can be) followed: an image manifest without `blobs`,
/// or a document of another kind, which is copied as it is.
fn contents(manifest: &Manifest, blobs: bool) -> Result<Option<Contents>, SaveFailure> {
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
    }
    let malformed = |reason: String| SaveFailure::Malformed {
        what: format!("manifest {}", manifest.digest),
        reason,
    };
    let is_index = match manifest.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(_) => false,
        // `mediaType` is optional in an index: look for its `manifests`.
        None => serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
            .is_ok_and(|v| v.get("manifests").is_some_and(serde_json::Value::is_array)),
    };
    if is_index {
        return serde_json::from_slice::<Index>(&manifest.bytes)
            .map(|i| Some(Contents::Index(i.manifests)))
            .map_err(|e| malformed(e.to_string()));
    }
    if !blobs {
        return Ok(None);
    }
    match ImageManifest::parse(&manifest.bytes) {
        Ok(m) => Ok(Some(Contents::Image(m))),
        Err(crate::artifact::manifest::ManifestError::MediaType(_)) => Ok(None),
        Err(e) => Err(malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Limits;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn saved_names_are_normalised() {
        let name = |s: &str| saved_name(&ImageRef::parse(s).unwrap()).map(|r| r.to_string());
        assert_eq!(
            name("127.0.0.1:5000/app:v1").unwrap(),
            "127.0.0.1:5000/app:v1"
        );
        assert_eq!(name("alpine").unwrap(), "docker.io/library/alpine:latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            name(&format!("reg.io/app@{d}")).unwrap(),
            format!("reg.io/app@{d}")
        );
        assert!(matches!(
            saved_name(&ImageRef::parse("oci:/tmp/x").unwrap()),
            Err(SaveFailure::Unnamed)
        ));
    }

    /// A layout with one image, signed in `.sig`, with a referrer.
    fn source_layout(dir: &std::path::Path) -> (OciLayout, Digest) {
        let layout = OciLayout::new(dir, Limits::default());
        layout.create().unwrap();
        let rt = rt();
        let config = layout.write_blob(b"{\"os\":\"linux\"}").unwrap();
        let layer = layout.write_blob(b"layer bytes").unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": crate::artifact::OCI_CONFIG, "size": 14, "digest": config.as_str()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 11, "digest": layer.as_str()}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let repo = Repository::Layout(layout.clone());
        let digest = rt
            .block_on(repo.push_manifest("v1", bytes.clone(), OCI_MANIFEST))
            .unwrap();
        let payload = b"signed payload";
        layout.write_blob(payload).unwrap();
        let sig = signature_manifest(vec![Descriptor::for_bytes(
            crate::artifact::simple_signing::MEDIA_TYPE,
            payload,
        )]);
        layout.write_blob(&sig.config).unwrap();
        rt.block_on(repo.push_manifest(&digest.cosign_tag("sig"), sig.manifest, OCI_MANIFEST))
            .unwrap();
        let subject = Descriptor::for_bytes(OCI_MANIFEST, &bytes);
        let referrer = crate::artifact::referrer::ReferrerManifest::new(
            subject,
            b"bundle",
            crate::artifact::referrer::SIGN_PREDICATE_TYPE,
            "2026-01-01T00:00:00Z",
        );
        layout.write_blob(b"bundle").unwrap();
        layout
            .write_blob(crate::artifact::referrer::EMPTY_CONFIG)
            .unwrap();
        let referrer_bytes = referrer.to_bytes();
        layout.write_blob(&referrer_bytes).unwrap();
        let mut index = ReferrersIndex::empty();
        index.manifests.push(referrer.index_entry(&referrer_bytes));
        rt.block_on(repo.push_manifest(&fallback_tag(&digest), index.to_bytes(), OCI_INDEX))
            .unwrap();
        (layout, digest)
    }

    fn saved(src: &OciLayout, image: &str, dest: &OciLayout, with_blobs: bool) -> Saved {
        let mut image = match ImageRef::parse(image).unwrap() {
            ImageRef::Layout(l) => l,
            other => panic!("{other:?}"),
        };
        image.saved_as = Some(RegistryRef::parse("reg.example/team/app:v1").unwrap());
        let options = SaveOptions {
            with_blobs,
            ..SaveOptions::default()
        };
        rt().block_on(save(
            &Repository::Layout(src.clone()),
            &ImageRef::Layout(image),
            dest,
            &options,
        ))
        .unwrap()
    }

    #[test]
    fn saves_evidence_and_names_the_image() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, digest) = source_layout(dirs.0.path());
        let dest_dir = dirs.1.path().join("new");
        let dest = OciLayout::new(&dest_dir, Limits::default());
        let image = format!("oci:{}:v1", dirs.0.path().display());
        let s = saved(&src, &image, &dest, false);
        assert_eq!(s.name, "reg.example/team/app:v1");
        assert_eq!(s.digest, digest);
        // Image manifest, .sig manifest, referrer manifest; sig config and
        // payload, referrer config and bundle; no image blobs.
        assert_eq!(
            s.copied,
            Copied {
                manifests: 3,
                blobs: 4,
                signatures: 1,
                attestations: 0,
                sboms: 0,
                referrers: 1,
            }
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // The saved image expands to one reference carrying its name.
        let expanded = crate::registry::layout::expand(
            &ImageRef::parse(&format!("oci:{}", dest_dir.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(expanded.len(), 1);
        assert_eq!(expanded[0].identity(), "reg.example/team/app");
        assert_eq!(expanded[0].digest(), Some(&digest));
        assert_eq!(
            expanded[0].to_string(),
            format!(
                "oci:{}:reg.example/team/app:v1@{digest}",
                dest_dir.display()
            )
        );
        let rt = rt();
        let dest_repo = Repository::Layout(dest.clone());
        assert!(
            rt.block_on(dest_repo.referrers(&digest))
                .unwrap()
                .manifests
                .len()
                == 1
        );
        // Without --with-blobs the layers stay behind; with it they come.
        let layer = Digest::of(b"layer bytes");
        assert!(rt.block_on(dest_repo.fetch_blob(&layer, 100)).is_err());
        let s = saved(&src, &image, &dest, true);
        assert_eq!(s.copied.blobs, 6);
        assert!(rt.block_on(dest_repo.fetch_blob(&layer, 100)).is_ok());
    }

    #[test]
    fn merges_into_existing_tags_without_loss() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, digest) = source_layout(dirs.0.path());
        let dest = OciLayout::new(dirs.1.path(), Limits::default());
        dest.create().unwrap();
        let rt = rt();
        // The layout already has another signature for this digest.
        let other = b"another signature payload";
        dest.write_blob(other).unwrap();
        let theirs = signature_manifest(vec![Descriptor::for_bytes(
            crate::artifact::simple_signing::MEDIA_TYPE,
            other,
        )]);
        dest.write_blob(&theirs.config).unwrap();
        let tag = digest.cosign_tag("sig");
        let dest_repo = Repository::Layout(dest.clone());
        rt.block_on(dest_repo.push_manifest(&tag, theirs.manifest, OCI_MANIFEST))
            .unwrap();
        let image = format!("oci:{}:v1", dirs.0.path().display());
        saved(&src, &image, &dest, false);
        let merged = rt
            .block_on(dest_repo.fetch_manifest(ManifestRef::Tag(&tag)))
            .unwrap()
            .unwrap();
        let merged = ImageManifest::parse(&merged.bytes).unwrap();
        assert_eq!(merged.layers.len(), 2);
        assert_eq!(merged.layers[0].digest_str, Digest::of(other).as_str());
        // Saving again changes nothing.
        saved(&src, &image, &dest, false);
        let again = rt
            .block_on(dest_repo.fetch_manifest(ManifestRef::Tag(&tag)))
            .unwrap()
            .unwrap();
        assert_eq!(ImageManifest::parse(&again.bytes).unwrap().layers.len(), 2);
    }

    #[test]
    fn an_unusable_tag_in_the_layout_is_replaced_with_a_warning() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, digest) = source_layout(dirs.0.path());
        let dest = OciLayout::new(dirs.1.path(), Limits::default());
        dest.create().unwrap();
        let rt = rt();
        let dest_repo = Repository::Layout(dest.clone());
        let tag = digest.cosign_tag("sig");
        rt.block_on(dest_repo.push_manifest(&tag, b"not a manifest".to_vec(), OCI_MANIFEST))
            .unwrap();
        let s = saved(
            &src,
            &format!("oci:{}:v1", dirs.0.path().display()),
            &dest,
            false,
        );
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains(&tag), "{:?}", s.warnings);
        let m = rt
            .block_on(dest_repo.fetch_manifest(ManifestRef::Tag(&tag)))
            .unwrap()
            .unwrap();
        assert_eq!(ImageManifest::parse(&m.bytes).unwrap().layers.len(), 1);
    }

    #[test]
    fn a_missing_image_is_reported_with_its_name() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (src, _) = source_layout(dirs.0.path());
        let dest = OciLayout::new(dirs.1.path(), Limits::default());
        let image = match ImageRef::parse(&format!("oci:{}:v9", dirs.0.path().display())) {
            Ok(ImageRef::Layout(mut l)) => {
                l.saved_as = Some(RegistryRef::parse("reg.example/app:v9").unwrap());
                ImageRef::Layout(l)
            }
            other => panic!("{other:?}"),
        };
        let err = rt()
            .block_on(save(
                &Repository::Layout(src),
                &image,
                &dest,
                &SaveOptions::default(),
            ))
            .unwrap_err();
        assert!(matches!(err.reason, SaveFailure::NotFound(_)), "{err}");
        assert!(err.to_string().contains(":v9"), "{err}");
    }

    #[test]
    fn refuses_to_write_into_a_directory_that_is_not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let err = OciLayout::new(dir.path(), Limits::default())
            .create()
            .unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
    }

    #[test]
    fn saved_images_verify_as_their_registry_name() {
        use crate::verify::{IdentityMatch, Requirements, check_layer};
        use base64::Engine as _;
        let key =
            marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
        let digest = Digest::of(b"image");
        let payload = crate::artifact::simple_signing::build(
            "reg.example/team/app",
            &digest,
            &Default::default(),
        );
        let mut layer =
            Descriptor::for_bytes(crate::artifact::simple_signing::MEDIA_TYPE, &payload);
        layer.annotations.insert(
            crate::sign::SIGNATURE_ANNOTATION.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(key.sign(&payload).unwrap()),
        );
        let req = |identity| Requirements {
            keys: vec![key.public_key().clone()],
            identity,
            annotations: Default::default(),
            max_payload_bytes: 1 << 20,
            max_signatures: 10,
            certificates: None,
            now: std::time::SystemTime::now(),
            max_clock_skew: crate::verify::DEFAULT_CLOCK_SKEW,
        };
        let saved_as = |name: &str| {
            let mut l = match ImageRef::parse("oci:/tmp/bundle").unwrap() {
                ImageRef::Layout(l) => l,
                other => panic!("{other:?}"),
            };
            l.saved_as = Some(RegistryRef::parse(name).unwrap());
            ImageRef::Layout(l)
        };
        let budget = crate::budget::Budget::default_for_one_decision();
        let check = |image: &ImageRef, rule| {
            check_layer(&layer, &payload, &digest, image, &req(rule), &budget)
        };
        let repo = IdentityMatch::Repository;
        assert!(check(&saved_as("reg.example/team/app:v1"), repo).is_ok());
        // The directory name no longer counts; the saved repository does.
        assert!(check(&saved_as("reg.example/team/other:v1"), repo).is_err());
        assert!(check(&ImageRef::parse("oci:/tmp/app").unwrap(), repo).is_err());
        // Exact: the repository-only identity does not match a tagged name.
        assert!(check(&saved_as("reg.example/team/app:v1"), IdentityMatch::Exact).is_err());
        assert!(check(&saved_as("reg.example/team/app"), IdentityMatch::Exact).is_ok());
    }
}
