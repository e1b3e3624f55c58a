//! An OCI image layout directory (image-spec `image-layout.md`) used as a
//! repository: the embedded default that needs no server, and the format
//! for air-gapped copies.
//!
//! Tags are `org.opencontainers.image.ref.name` annotations in `index.json`,
//! so signatures live under the same `sha256-<hex>.sig` tags as in a
//! registry. `index.json` is replaced atomically (write, fsync, rename)
//! under an exclusive lock on the layout directory, so concurrent writers on
//! one machine cannot lose each other's tags.
//!
//! `marque save` names each image it copies with its registry reference in
//! both `org.opencontainers.image.ref.name` and `io.containerd.image.name`
//! (containerd's annotation for names in an OCI archive). [`expand`] turns
//! a reference to such a layout into one reference per saved image, each
//! carrying that name (`LayoutRef::saved_as`), so identities and policy
//! scopes are the registry's, not the directory's.

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use super::{Limits, Manifest, ManifestRef, RegistryError, check_digest};
use crate::artifact::OCI_INDEX;
use crate::digest::Digest;
use crate::reference::{ImageRef, LayoutRef, RegistryRef};

/// The annotation naming an index.json entry (a tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for an image's full name in an OCI archive.
pub const IMAGE_NAME: &str = "io.containerd.image.name";
/// Bound on index.json, which grows by one entry per signed digest.
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// An OCI image layout on disk.
#[derive(Debug, Clone)]
pub struct OciLayout {
    path: PathBuf,
    limits: Limits,
}

impl OciLayout {
    /// The layout at `path` (not checked until used).
    pub fn new(path: &Path, limits: Limits) -> OciLayout {
        OciLayout {
            path: path.to_owned(),
            limits,
        }
    }

    /// The layout directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> RegistryError + '_ {
        let path = path.to_owned();
        move |source| RegistryError::Io {
            path: path.clone(),
            source,
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path.join("blobs").join("sha256").join(digest.hex())
    }

    fn read_index(&self) -> Result<serde_json::Value, RegistryError> {
        let path = self.path.join("index.json");
        let bytes = read_limited(&path, MAX_INDEX_BYTES).map_err(|e| match e {
            ReadError::Io(source) if source.kind() == std::io::ErrorKind::NotFound => {
                RegistryError::Protocol(format!(
                    "{} is not an OCI image layout: it has no index.json",
                    self.path.display()
                ))
            }
            ReadError::Io(source) => RegistryError::Io {
                path: path.clone(),
                source,
            },
            ReadError::TooLarge => RegistryError::TooLarge {
                what: path.display().to_string(),
                limit: MAX_INDEX_BYTES,
            },
        })?;
        let index: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            RegistryError::Protocol(format!(
                "{}: malformed index.json: {e}",
                self.path.display()
            ))
        })?;
        if !index.get("manifests").is_some_and(|m| m.is_array()) {
            return Err(RegistryError::Protocol(format!(
                "{}: index.json has no manifests array",
                self.path.display()
            )));
        }
        Ok(index)
    }

    fn find_tag(&self, tag: &str) -> Result<Option<Digest>, RegistryError> {
        let index = self.read_index()?;
        let entries = index["manifests"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let found = entries
            .iter()
            .rev()
            .find(|e| e["annotations"][REF_NAME].as_str() == Some(tag));
        match found {
            None => Ok(None),
            Some(e) => e["digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    RegistryError::Protocol(format!(
                        "{}: index.json entry for tag {tag:?} has no valid digest",
                        self.path.display()
                    ))
                }),
        }
    }

    /// The digest `tag` points at in index.json, whether or not its blob
    /// is present; `None` when there is no such tag.
    pub fn tag_digest(&self, tag: &str) -> Result<Option<Digest>, RegistryError> {
        self.find_tag(tag)
    }

    pub(super) async fn resolve(&self, tag: &str) -> Result<Digest, RegistryError> {
        self.find_tag(tag)?.ok_or_else(|| RegistryError::NotFound {
            what: format!("tag {tag:?} in oci:{}", self.path.display()),
        })
    }

    pub(super) async fn fetch_manifest(
        &self,
        reference: ManifestRef<'_>,
    ) -> Result<Option<Manifest>, RegistryError> {
        let digest = match reference {
            ManifestRef::Digest(d) => d.clone(),
            ManifestRef::Tag(t) => match self.find_tag(t)? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        let path = self.blob_path(&digest);
        let bytes = match read_limited(&path, self.limits.max_manifest_bytes) {
            Ok(b) => b,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(ReadError::Io(source)) => return Err(RegistryError::Io { path, source }),
            Err(ReadError::TooLarge) => {
                return Err(RegistryError::TooLarge {
                    what: format!("manifest {digest}"),
                    limit: self.limits.max_manifest_bytes,
                });
            }
        };
        check_digest(&format!("manifest {digest}"), &digest, &bytes)?;
        Ok(Some(Manifest {
            media_type: super::sniff_media_type(&bytes),
            bytes,
            digest,
        }))
    }

    pub(super) async fn fetch_blob(
        &self,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let path = self.blob_path(digest);
        let what = format!("blob {digest}");
        let bytes = read_limited(&path, limit).map_err(|e| match e {
            ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                RegistryError::NotFound { what: what.clone() }
            }
            ReadError::Io(source) => RegistryError::Io {
                path: path.clone(),
                source,
            },
            ReadError::TooLarge => RegistryError::TooLarge {
                what: what.clone(),
                limit,
            },
        })?;
        check_digest(&what, digest, &bytes)?;
        Ok(bytes)
    }

    /// Streams a blob of at most `limit` bytes into `sink` in 64 KiB
    /// chunks; the caller checks the digest of what it received.
    pub(super) fn stream_blob(
        &self,
        digest: &Digest,
        limit: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        use std::io::Read as _;
        let path = self.blob_path(digest);
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RegistryError::NotFound {
                what: format!("blob {digest}"),
            },
            _ => self.io(&path)(e),
        })?;
        let mut buf = vec![0u8; 64 << 10];
        let mut seen = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(self.io(&path))?;
            if n == 0 {
                return Ok(());
            }
            seen += n as u64;
            if seen > limit {
                return Err(RegistryError::TooLarge {
                    what: format!("blob {digest}"),
                    limit,
                });
            }
            sink(&buf[..n])?;
        }
    }

    /// Whether the layout holds `digest` with exactly `size` bytes that
    /// hash to it (read in chunks, never whole).
    pub fn blob_intact(&self, digest: &Digest, size: u64) -> Result<bool, RegistryError> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) if m.len() == size => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io(&self.blob_path(digest))(e)),
        }
        let mut hasher = crate::digest::Hasher::default();
        self.stream_blob(digest, size, &mut |chunk| {
            hasher.update(chunk);
            Ok(())
        })?;
        Ok(hasher.finish() == *digest)
    }

    /// A writer for one blob of this layout: bytes go to a temporary file
    /// and are hashed as they come; [`BlobWriter::finish`] checks size and
    /// digest, fsyncs and renames it into place.
    pub fn blob_writer(&self) -> Result<BlobWriter, RegistryError> {
        let dir = self.path.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(self.io(&dir))?;
        let (path, file) = tempfile_in(&dir).map_err(self.io(&dir))?;
        Ok(BlobWriter {
            dir,
            path,
            file,
            hasher: crate::digest::Hasher::default(),
            written: 0,
        })
    }

    pub(super) async fn push_blob(&self, bytes: Vec<u8>) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&bytes);
        let path = self.blob_path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        self.write_blob(&bytes)
    }

    /// Writes a blob whether or not a file of its name exists (one that
    /// does may be damaged); returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        let dir = path.parent().unwrap_or(&self.path).to_owned();
        fs::create_dir_all(&dir).map_err(self.io(&dir))?;
        write_atomically(&dir, &path, bytes).map_err(self.io(&path))?;
        Ok(digest)
    }

    pub(super) async fn push_manifest(
        &self,
        tag: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let (digest, _) = self.replace_tag(tag, None, bytes, media_type).await?;
        Ok(digest)
    }

    /// Points `tag` at `bytes`; with `expected = Some(current)`, only if the
    /// tag still points at `current` (`None`: the tag is absent), checked
    /// and written under the layout lock. Returns the digest and whether
    /// the tag was written.
    pub(super) async fn replace_tag(
        &self,
        tag: &str,
        expected: Option<Option<&Digest>>,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(Digest, bool), RegistryError> {
        let size = bytes.len();
        let digest = self.push_blob(bytes).await?;
        let written = self.update_index(|entries| {
            if let Some(expected) = expected {
                let current = entries
                    .iter()
                    .rev()
                    .find(|e| e["annotations"][REF_NAME].as_str() == Some(tag))
                    .and_then(|e| e["digest"].as_str());
                if current != expected.map(Digest::as_str) {
                    return Ok(false);
                }
            }
            entries.retain(|e| e["annotations"][REF_NAME].as_str() != Some(tag));
            entries.push(serde_json::json!({
                "mediaType": media_type,
                "digest": digest.as_str(),
                "size": size,
                "annotations": { REF_NAME: tag },
            }));
            Ok(true)
        })?;
        Ok((digest, written))
    }

    /// Runs `change` on index.json's entries under the layout lock, and
    /// replaces index.json atomically when it returns `true`. The lock is
    /// held only across synchronous code.
    fn update_index(
        &self,
        change: impl FnOnce(&mut Vec<serde_json::Value>) -> Result<bool, RegistryError>,
    ) -> Result<bool, RegistryError> {
        let dir = File::open(&self.path).map_err(self.io(&self.path))?;
        dir.lock().map_err(self.io(&self.path))?;
        let result = (|| {
            let mut index = self.read_index()?;
            let entries = index["manifests"].as_array_mut().ok_or_else(|| {
                RegistryError::Protocol("index.json has no manifests array".to_owned())
            })?;
            if !change(entries)? {
                return Ok(false);
            }
            if index.get("mediaType").is_none() {
                index["mediaType"] = serde_json::Value::from(OCI_INDEX);
            }
            let bytes = serde_json::to_vec(&index)
                .map_err(|e| RegistryError::Protocol(format!("cannot encode index.json: {e}")))?;
            let path = self.path.join("index.json");
            write_atomically(&self.path, &path, &bytes).map_err(self.io(&path))?;
            Ok(true)
        })();
        let _ = dir.unlock();
        result
    }

    /// Makes `path` an empty OCI image layout (`oci-layout`, `index.json`,
    /// `blobs/sha256`) unless it already is one. The directory is created
    /// if missing; an existing directory that holds anything else is
    /// refused rather than written into.
    pub fn create(&self) -> Result<(), RegistryError> {
        fs::create_dir_all(&self.path).map_err(self.io(&self.path))?;
        let dir = File::open(&self.path).map_err(self.io(&self.path))?;
        dir.lock().map_err(self.io(&self.path))?;
        let result = self.create_locked();
        let _ = dir.unlock();
        result
    }

    fn create_locked(&self) -> Result<(), RegistryError> {
        let index = self.path.join("index.json");
        if index.is_file() {
            return Ok(());
        }
        for entry in fs::read_dir(&self.path).map_err(self.io(&self.path))? {
            let name = entry.map_err(self.io(&self.path))?.file_name();
            let name = name.to_string_lossy();
            if name != "oci-layout" && name != "blobs" && !name.starts_with(".marque-tmp-") {
                return Err(RegistryError::Protocol(format!(
                    "{} is not empty and is not an OCI image layout (it has no index.json); \
                     refusing to write into it",
                    self.path.display()
                )));
            }
        }
        let blobs = self.path.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(self.io(&blobs))?;
        let marker = self.path.join("oci-layout");
        write_atomically(&self.path, &marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(self.io(&marker))?;
        let empty =
            serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] });
        write_atomically(&self.path, &index, empty.to_string().as_bytes()).map_err(self.io(&index))
    }

    /// Names the image whose manifest is `digest` (`size` bytes of
    /// `media_type`) `name` in index.json: `org.opencontainers.image.ref.name`
    /// and `io.containerd.image.name` both set to `name`, replacing any
    /// entry of that name and keeping every other.
    pub fn name_image(
        &self,
        name: &str,
        digest: &Digest,
        size: u64,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        self.update_index(|entries| {
            entries.retain(|e| {
                e["annotations"][REF_NAME].as_str() != Some(name)
                    && e["annotations"][IMAGE_NAME].as_str() != Some(name)
            });
            entries.push(serde_json::json!({
                "mediaType": media_type,
                "digest": digest.as_str(),
                "size": size,
                "annotations": { REF_NAME: name, IMAGE_NAME: name },
            }));
            Ok(true)
        })
        .map(|_| ())
    }

    /// The images `marque save` put here, in index order: entries whose
    /// `io.containerd.image.name` and `org.opencontainers.image.ref.name`
    /// are the same registry reference. (containerd's own archives put
    /// only the tag in `ref.name`; they are not saved images.) A saved
    /// entry with an unusable name or digest is an error, not skipped.
    pub fn saved_images(&self) -> Result<Vec<SavedImage>, RegistryError> {
        let index = self.read_index()?;
        let entries = index["manifests"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut saved = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let annotations = &entry["annotations"];
            let Some(name) = annotations[IMAGE_NAME].as_str() else {
                continue;
            };
            if annotations[REF_NAME].as_str() != Some(name) {
                continue;
            }
            let bad = |reason: &str| {
                RegistryError::Protocol(format!(
                    "{}: index.json entry {i} ({name:?}): {reason}",
                    self.path.display()
                ))
            };
            let parsed = RegistryRef::parse(name).map_err(|e| bad(e.reason))?;
            let digest = entry["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| bad("no valid digest"))?;
            saved.push(SavedImage {
                name: parsed,
                digest,
            });
        }
        Ok(saved)
    }
}

/// An image `marque save` put in a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedImage {
    /// The registry reference it was saved from.
    pub name: RegistryRef,
    /// Its manifest digest.
    pub digest: Digest,
}

impl SavedImage {
    /// Whether `tag` (from `oci:PATH:NAME`) names this image: the same
    /// repository and tag, and the same digest if `tag` has one.
    fn is_named(&self, tag: &str) -> bool {
        if self.name.to_string() == tag {
            return true;
        }
        RegistryRef::parse(tag).is_ok_and(|r| {
            r.same_repository(&self.name)
                && r.tag() == self.name.tag()
                && r.digest().is_none_or(|d| Some(d) == self.name.digest())
        })
    }

    /// A reference to this image in the layout at `path`, pinned to its
    /// digest and carrying its saved name.
    fn layout_ref(&self, path: &Path) -> LayoutRef {
        LayoutRef {
            path: path.to_owned(),
            tag: Some(self.name.to_string()),
            digest: Some(self.digest.clone()),
            saved_as: Some(self.name.clone()),
        }
    }
}

/// Expands a reference to a layout that `marque save` wrote into the saved
/// images it names, each pinned to its digest and carrying its registry
/// name (`saved_as`):
///
/// * `oci:DIR` (no tag, no digest): every saved image;
/// * `oci:DIR@sha256:…`: the saved images with that digest;
/// * `oci:DIR:NAME` (skopeo's syntax, also with `@sha256:…`): that one.
///
/// Everything else is returned unchanged: registry references, references
/// that already carry a saved name, layouts without saved images (or
/// without index.json: the operation that reads it reports that), and
/// plain tags such as `oci:DIR:latest`.
pub fn expand(image: &ImageRef) -> Result<Vec<ImageRef>, RegistryError> {
    let unchanged = || Ok(vec![image.clone()]);
    let ImageRef::Layout(l) = image else {
        return unchanged();
    };
    if l.saved_as.is_some() || !l.path.join("index.json").is_file() {
        return unchanged();
    }
    let saved = OciLayout::new(&l.path, Limits::default()).saved_images()?;
    let chosen: Vec<&SavedImage> = saved
        .iter()
        .filter(|s| l.tag.as_deref().is_none_or(|t| s.is_named(t)))
        .filter(|s| l.digest.as_ref().is_none_or(|d| s.digest == *d))
        .collect();
    if chosen.is_empty() {
        return unchanged();
    }
    Ok(chosen
        .into_iter()
        .map(|s| ImageRef::Layout(s.layout_ref(&l.path)))
        .collect())
}

enum ReadError {
    Io(std::io::Error),
    TooLarge,
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let len = file.metadata().map_err(ReadError::Io)?.len();
    if len > limit {
        return Err(ReadError::TooLarge);
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge);
    }
    Ok(buf)
}

/// Writes `bytes` to a temporary file in `dir`, fsyncs it, renames it over
/// `path` and fsyncs the directory, so readers see the old or the new file.
pub(crate) fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    fs::rename(&tmp.0, path)?;
    File::open(dir)?.sync_all()
}

/// A blob being written into a layout; see [`OciLayout::blob_writer`].
/// Dropped unfinished, its temporary file is removed.
#[derive(Debug)]
pub struct BlobWriter {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    hasher: crate::digest::Hasher,
    written: u64,
}

impl BlobWriter {
    /// Appends `chunk`.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), RegistryError> {
        self.file
            .write_all(chunk)
            .map_err(|source| RegistryError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Checks that exactly `size` bytes hashing to `digest` were written,
    /// then fsyncs and moves the blob into place.
    pub fn finish(mut self, digest: &Digest, size: u64) -> Result<(), RegistryError> {
        let actual = std::mem::take(&mut self.hasher).finish();
        let what = format!("blob {digest}");
        if self.written != size {
            return Err(RegistryError::Protocol(format!(
                "{what}: received {} bytes, the descriptor says {size}",
                self.written
            )));
        }
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.clone(),
                actual,
            });
        }
        let io = |source| RegistryError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.sync_all().map_err(io)?;
        let target = self.dir.join(digest.hex());
        fs::rename(&self.path, &target).map_err(io)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".marque-tmp-{}-{n}", std::process::id());
        let path = dir.join(name);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a temporary file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn empty_layout() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("index.json"),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        dir
    }

    #[test]
    fn tags_and_blobs_round_trip() {
        let dir = empty_layout();
        let layout = OciLayout::new(dir.path(), Limits::default());
        let rt = rt();
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
            .to_vec();
        let d = rt
            .block_on(layout.push_manifest("v1", m.clone(), crate::artifact::OCI_MANIFEST))
            .unwrap();
        assert_eq!(rt.block_on(layout.resolve("v1")).unwrap(), d);
        let got = rt
            .block_on(layout.fetch_manifest(ManifestRef::Tag("v1")))
            .unwrap()
            .unwrap();
        assert_eq!(got.bytes, m);
        assert!(
            rt.block_on(layout.fetch_manifest(ManifestRef::Tag("v2")))
                .unwrap()
                .is_none()
        );
        // Re-tagging replaces the entry rather than adding a second one.
        let d2 = rt
            .block_on(layout.push_manifest("v1", b"{}".to_vec(), crate::artifact::OCI_MANIFEST))
            .unwrap();
        assert_eq!(rt.block_on(layout.resolve("v1")).unwrap(), d2);
        let index = layout.read_index().unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn tampered_blob_is_refused() {
        let dir = empty_layout();
        let layout = OciLayout::new(dir.path(), Limits::default());
        let rt = rt();
        let d = rt.block_on(layout.push_blob(b"payload".to_vec())).unwrap();
        fs::write(layout.blob_path(&d), b"PAYLOAD").unwrap();
        assert!(matches!(
            rt.block_on(layout.fetch_blob(&d, 100)),
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert!(matches!(
            rt.block_on(layout.fetch_blob(&d, 3)),
            Err(RegistryError::TooLarge { .. })
        ));
    }

    fn layout_ref(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn expand_saved_images() {
        let dir = empty_layout();
        let layout = OciLayout::new(dir.path(), Limits::default());
        let rt = rt();
        let m = |n: &str| format!(r#"{{"schemaVersion":2,"n":"{n}"}}"#).into_bytes();
        let d1 = rt.block_on(layout.push_blob(m("1"))).unwrap();
        let d2 = rt.block_on(layout.push_blob(m("2"))).unwrap();
        let oci = crate::artifact::OCI_MANIFEST;
        layout
            .name_image("127.0.0.1:5000/app:v1", &d1, 10, oci)
            .unwrap();
        let by_digest = format!("127.0.0.1:5000/api@{d2}");
        layout.name_image(&by_digest, &d2, 10, oci).unwrap();
        // A plain tag and a containerd-style entry (tag-only ref.name) are
        // not saved images.
        rt.block_on(layout.push_manifest("latest", m("3"), oci))
            .unwrap();
        layout
            .update_index(|e| {
                e.push(
                    serde_json::json!({"mediaType": oci, "digest": d1.as_str(), "size": 10,
                    "annotations": {REF_NAME: "v1", IMAGE_NAME: "docker.io/library/x:v1"}}),
                );
                Ok(true)
            })
            .unwrap();
        let path = dir.path().display().to_string();
        let expand = |s: &str| expand(&layout_ref(s)).unwrap();

        let all = expand(&format!("oci:{path}"));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].identity(), "127.0.0.1:5000/app");
        assert_eq!(all[0].digest(), Some(&d1));
        assert_eq!(
            all[0].to_string(),
            format!("oci:{path}:127.0.0.1:5000/app:v1@{d1}")
        );
        assert_eq!(all[1].identity(), "127.0.0.1:5000/api");
        assert_eq!(all[1].to_string(), format!("oci:{path}:{by_digest}"));
        // Expanding again changes nothing.
        assert_eq!(super::expand(&all[0]).unwrap(), vec![all[0].clone()]);

        // By digest, by name (skopeo's syntax), by name and digest.
        assert_eq!(expand(&format!("oci:{path}@{d2}")), vec![all[1].clone()]);
        assert_eq!(
            expand(&format!("oci:{path}:127.0.0.1:5000/app:v1")),
            vec![all[0].clone()]
        );
        assert_eq!(
            expand(&format!("oci:{path}:{by_digest}")),
            vec![all[1].clone()]
        );
        assert_eq!(
            expand(&format!("oci:{path}:127.0.0.1:5000/app:v1@{d1}")),
            vec![all[0].clone()]
        );
        // A name and another image's digest: nothing saved matches.
        let mismatch = format!("oci:{path}:127.0.0.1:5000/app:v1@{d2}");
        assert_eq!(expand(&mismatch), vec![layout_ref(&mismatch)]);
        // Plain tags, unknown names and other layouts are left alone.
        for plain in [
            format!("oci:{path}:latest"),
            format!("oci:{path}:127.0.0.1:5000/app:v9"),
            "oci:/nonexistent/layout".to_owned(),
            "127.0.0.1:5000/app:v1".to_owned(),
        ] {
            assert_eq!(expand(&plain), vec![layout_ref(&plain)], "{plain}");
        }
        let plain = empty_layout();
        let plain = format!("oci:{}", plain.path().display());
        assert_eq!(expand(&plain), vec![layout_ref(&plain)]);

        // A saved entry with a name that is no reference is an error.
        layout.name_image("Not A Name", &d1, 10, oci).unwrap();
        let err = super::expand(&layout_ref(&format!("oci:{path}"))).unwrap_err();
        assert!(err.to_string().contains("Not A Name"), "{err}");
    }

    #[test]
    fn naming_an_image_keeps_other_entries() {
        let dir = empty_layout();
        let layout = OciLayout::new(dir.path(), Limits::default());
        let rt = rt();
        let oci = crate::artifact::OCI_MANIFEST;
        let d = rt.block_on(layout.push_blob(b"{}".to_vec())).unwrap();
        rt.block_on(layout.push_manifest("sha256-x.sig", b"{}".to_vec(), oci))
            .unwrap();
        layout.name_image("reg.io/a:v1", &d, 2, oci).unwrap();
        layout.name_image("reg.io/b:v1", &d, 2, oci).unwrap();
        layout.name_image("reg.io/a:v1", &d, 2, oci).unwrap();
        let index = layout.read_index().unwrap();
        let names: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["annotations"][REF_NAME].as_str())
            .collect();
        assert_eq!(names, ["sha256-x.sig", "reg.io/b:v1", "reg.io/a:v1"]);
        assert_eq!(layout.saved_images().unwrap().len(), 2);
    }

    #[test]
    fn create_makes_a_layout_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/layout");
        let layout = OciLayout::new(&path, Limits::default());
        layout.create().unwrap();
        assert!(path.join("oci-layout").is_file());
        assert!(path.join("blobs/sha256").is_dir());
        let rt = rt();
        rt.block_on(layout.push_manifest("v1", b"{}".to_vec(), crate::artifact::OCI_MANIFEST))
            .unwrap();
        // Creating again keeps what is there.
        layout.create().unwrap();
        assert!(rt.block_on(layout.resolve("v1")).is_ok());
    }

    #[test]
    fn not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(dir.path(), Limits::default());
        let err = rt().block_on(layout.resolve("latest")).unwrap_err();
        assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    }

    #[test]
    fn blob_writer_checks_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(dir.path(), Limits::default());
        layout.create().unwrap();
        let body = b"a layer, streamed in pieces";
        let digest = Digest::of(body);
        let mut w = layout.blob_writer().unwrap();
        for chunk in body.chunks(5) {
            w.write(chunk).unwrap();
        }
        w.finish(&digest, body.len() as u64).unwrap();
        assert!(layout.blob_intact(&digest, body.len() as u64).unwrap());
        assert!(!layout.blob_intact(&digest, 3).unwrap());
        // Wrong content or size: refused, and nothing is left behind.
        let mut w = layout.blob_writer().unwrap();
        w.write(b"something else").unwrap();
        assert!(matches!(
            w.finish(&Digest::of(b"other"), 14),
            Err(RegistryError::DigestMismatch { .. })
        ));
        let mut w = layout.blob_writer().unwrap();
        w.write(body).unwrap();
        assert!(w.finish(&digest, 3).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".marque-tmp"))
            .collect();
        assert!(leftovers.is_empty());
        // A damaged copy is not intact.
        std::fs::write(
            dir.path().join("blobs/sha256").join(digest.hex()),
            b"a layer, streamed in piecez",
        )
        .unwrap();
        assert!(!layout.blob_intact(&digest, body.len() as u64).unwrap());
    }
}
