//! An OCI image layout directory (image-spec `image-layout.md`) used as a
//! repository: the embedded default that needs no server, and the format
//! for air-gapped copies.
//!
//! Tags are `org.opencontainers.image.ref.name` annotations in `index.json`,
//! so signatures live under the same `sha256-<hex>.sig` tags as in a
//! registry. `index.json` is replaced atomically (write, fsync, rename)
//! under an exclusive lock on the layout directory, so concurrent writers on
//! one machine cannot lose each other's tags.

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use super::{Limits, Manifest, ManifestRef, RegistryError, check_digest};
use crate::artifact::OCI_INDEX;
use crate::digest::Digest;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
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

    pub(super) async fn push_blob(&self, bytes: Vec<u8>) -> Result<Digest, RegistryError> {
        let digest = Digest::of(&bytes);
        let path = self.blob_path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let dir = path.parent().unwrap_or(&self.path).to_owned();
        fs::create_dir_all(&dir).map_err(self.io(&dir))?;
        write_atomically(&dir, &path, &bytes).map_err(self.io(&path))?;
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
        // Hold the directory lock only across synchronous code.
        let dir = File::open(&self.path).map_err(self.io(&self.path))?;
        dir.lock().map_err(self.io(&self.path))?;
        let result = (|| {
            let mut index = self.read_index()?;
            let entries = index["manifests"].as_array_mut().ok_or_else(|| {
                RegistryError::Protocol("index.json has no manifests array".to_owned())
            })?;
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
        result.map(|written| (digest, written))
    }
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
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    fs::rename(&tmp.0, path)?;
    File::open(dir)?.sync_all()
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

    #[test]
    fn not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(dir.path(), Limits::default());
        let err = rt().block_on(layout.resolve("latest")).unwrap_err();
        assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    }
}
