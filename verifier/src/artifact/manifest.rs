//! OCI image manifests, as used for cosign signature manifests
//! (formats.md §1.4), and the image config cosign writes beside them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{OCI_CONFIG, OCI_MANIFEST};
use crate::digest::Digest;

/// An OCI content descriptor. Unknown fields are kept, so appending a layer
/// to a manifest written by another tool does not lose what it recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The media type of the referenced content.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The size in bytes.
    pub size: u64,
    /// The digest, kept as written; see [`Descriptor::digest`].
    #[serde(rename = "digest")]
    pub digest_str: String,
    /// Annotations (signature, certificate, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields this version does not interpret.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    /// A descriptor for `bytes`.
    pub fn for_bytes(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            size: bytes.len() as u64,
            digest_str: Digest::of(bytes).to_string(),
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// The validated digest.
    pub fn digest(&self) -> Result<Digest, crate::digest::InvalidDigest> {
        self.digest_str.parse()
    }

    /// Embeds `bytes` (the content this descriptor names) as OCI 1.1
    /// `data`, when they are at most [`MAX_EMBEDDED_BYTES`]. The blob is
    /// pushed as well, so readers that ignore `data` are unaffected; a
    /// reader that uses it saves one request.
    pub fn embed(&mut self, bytes: &[u8]) {
        use base64::Engine as _;
        if bytes.len() <= MAX_EMBEDDED_BYTES {
            self.extra.insert(
                "data".to_owned(),
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
    }

    /// The embedded content: `None` when there is none, `Some(Err)` when
    /// it is not exactly the content the descriptor's size and digest name.
    pub fn embedded(&self) -> Option<Result<Vec<u8>, EmbeddedMismatch>> {
        use base64::Engine as _;
        let data = self.extra.get("data")?;
        let bytes = data
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        Some(match (bytes, self.digest()) {
            (Some(b), Ok(d)) if b.len() as u64 == self.size && d.matches(&b) => Ok(b),
            _ => Err(EmbeddedMismatch),
        })
    }
}

/// Largest content embedded in a descriptor by [`Descriptor::embed`].
pub const MAX_EMBEDDED_BYTES: usize = 16 << 10;

/// Embedded `data` that is not the content its descriptor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the embedded data does not match the descriptor's size and digest")]
pub struct EmbeddedMismatch;

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest media type, when present.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers; for a signature manifest, one per signature.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Fields this version does not interpret (annotations, subject, …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why manifest bytes were refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON of the manifest shape.
    #[error("malformed manifest: {0}")]
    Malformed(#[source] serde_json::Error),
    /// `schemaVersion` is not 2.
    #[error("unsupported manifest schemaVersion {0}")]
    SchemaVersion(u32),
    /// The manifest is an index or another kind of document.
    #[error("unexpected manifest media type {0:?}")]
    MediaType(String),
}

impl ImageManifest {
    /// Parses an image manifest (OCI or Docker schema 2).
    pub fn parse(bytes: &[u8]) -> Result<ImageManifest, ManifestError> {
        let m: ImageManifest = serde_json::from_slice(bytes).map_err(ManifestError::Malformed)?;
        if m.schema_version != 2 {
            return Err(ManifestError::SchemaVersion(m.schema_version));
        }
        match m.media_type.as_deref() {
            None | Some(OCI_MANIFEST) | Some(super::DOCKER_MANIFEST) => Ok(m),
            Some(other) => Err(ManifestError::MediaType(other.to_owned())),
        }
    }

    /// Serialises to the bytes to push.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A manifest of strings, numbers and maps always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A signature manifest ready to push: the manifest and its config blob.
#[derive(Debug, Clone)]
pub struct BuiltManifest {
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The config blob bytes the manifest names.
    pub config: Vec<u8>,
}

/// Builds the signature manifest holding `layers`, in order, with the same
/// config cosign writes (formats.md §1.4): empty architecture and os, one
/// history entry and one diff_id per layer.
pub fn signature_manifest(layers: Vec<Descriptor>) -> BuiltManifest {
    #[derive(Serialize)]
    struct Config<'a> {
        architecture: &'a str,
        created: &'a str,
        history: Vec<History<'a>>,
        os: &'a str,
        rootfs: RootFs<'a>,
        config: serde_json::Map<String, serde_json::Value>,
    }
    #[derive(Serialize)]
    struct History<'a> {
        created: &'a str,
    }
    #[derive(Serialize)]
    struct RootFs<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        diff_ids: Vec<&'a str>,
    }
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let config = Config {
        architecture: "",
        created: ZERO_TIME,
        history: layers
            .iter()
            .map(|_| History { created: ZERO_TIME })
            .collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.digest_str.as_str()).collect(),
        },
        config: serde_json::Map::new(),
    };
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config: Descriptor::for_bytes(OCI_CONFIG, &config),
        layers,
        extra: serde_json::Map::new(),
    };
    BuiltManifest {
        manifest: manifest.to_bytes(),
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_matches_cosign_byte_for_byte() {
        // formats.md §1.9: one signature over the worked example payload
        // gives a 233-byte config with this digest.
        let payload = br#"{"critical":{"identity":{"docker-reference":"registry.example.com/team/app"},"image":{"docker-manifest-digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},"type":"cosign container image signature"},"optional":null}"#;
        let layer = Descriptor::for_bytes(crate::artifact::simple_signing::MEDIA_TYPE, payload);
        let built = signature_manifest(vec![layer]);
        assert_eq!(built.config.len(), 233);
        assert_eq!(
            Digest::of(&built.config).as_str(),
            "sha256:17f5aa822a3dc968881ae4593f55700fe3ed018edc889ec61576c899b5f56fc7"
        );
        let m = String::from_utf8(built.manifest).unwrap();
        assert!(m.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":233,"digest":"sha256:17f5"#), "{m}");
    }

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let src = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","size":1,"digest":"sha256:x"},"layers":[{"mediaType":"b","size":2,"digest":"sha256:y","annotations":{"k":"v"},"urls":["u"]}],"annotations":{"m":"n"}}"#;
        let m = ImageManifest::parse(src).unwrap();
        assert_eq!(m.layers[0].extra["urls"][0], "u");
        assert!(m.layers[0].digest().is_err());
        let again = ImageManifest::parse(&m.to_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn refuses_index_and_garbage() {
        assert!(matches!(
            ImageManifest::parse(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","config":{"mediaType":"a","size":1,"digest":"d"}}"#),
            Err(ManifestError::MediaType(_))
        ));
        assert!(matches!(
            ImageManifest::parse(b"\xff\x00"),
            Err(ManifestError::Malformed(_))
        ));
        assert!(matches!(
            ImageManifest::parse(
                br#"{"schemaVersion":1,"config":{"mediaType":"a","size":1,"digest":"d"}}"#
            ),
            Err(ManifestError::SchemaVersion(1))
        ));
    }
}
