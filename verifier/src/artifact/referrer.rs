//! OCI 1.1 referrers carrying Sigstore bundles (formats.md §3.4): the
//! bundle JSON, the referrer manifest, and the fallback index kept under
//! the tag `sha256-<hex>` for registries without the referrers API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dsse::Envelope;
use super::manifest::Descriptor;
use super::{OCI_INDEX, OCI_MANIFEST};
use crate::digest::Digest;

/// Sigstore bundle v0.3: the bundle media type and the referrer's artifactType.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Older bundle media types, read but not written.
const OLD_BUNDLE_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
];
/// The predicate type cosign 3 uses for a plain image signature.
pub const SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The OCI empty descriptor's media type, digest and content.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// `{}`.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Referrer annotation: `dsse-envelope` or `message-signature`.
pub const CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
/// Referrer annotation: the statement's predicate type.
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

/// A parsed bundle: only what key-based verification needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Bundle {
    /// The bundle's media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// The DSSE envelope, when the bundle holds one.
    #[serde(rename = "dsseEnvelope")]
    pub dsse_envelope: Option<Envelope>,
    /// The key hint or certificate.
    #[serde(rename = "verificationMaterial", default)]
    pub verification_material: serde_json::Value,
}

impl Bundle {
    /// Parses bundle JSON, refusing unknown media types and bundles that
    /// hold no DSSE envelope (message signatures are not read yet).
    pub fn parse(bytes: &[u8]) -> Result<Bundle, String> {
        let b: Bundle =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Sigstore bundle: {e}"))?;
        if b.media_type != BUNDLE_MEDIA_TYPE
            && !OLD_BUNDLE_MEDIA_TYPES.contains(&b.media_type.as_str())
        {
            return Err(format!("unknown bundle media type {:?}", b.media_type));
        }
        if b.dsse_envelope.is_none() {
            return Err("the bundle holds no DSSE envelope".to_owned());
        }
        Ok(b)
    }

    /// The signer's certificate (DER), when the bundle carries one
    /// (`certificate.rawBytes` in v0.3, the chain's first certificate in
    /// older versions).
    pub fn certificate_der(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let m = &self.verification_material;
        let raw = m["certificate"]["rawBytes"]
            .as_str()
            .or_else(|| m["x509CertificateChain"]["certificates"][0]["rawBytes"].as_str())?;
        base64::engine::general_purpose::STANDARD.decode(raw).ok()
    }
}

/// What a bundle says about its signer.
#[derive(Debug, Clone, Copy)]
pub enum Material<'a> {
    /// A public key, by its key id.
    KeyHint(&'a str),
    /// A certificate, DER.
    Certificate(&'a [u8]),
}

/// Bundle JSON around a DSSE envelope, naming its signer.
pub fn bundle(envelope: &[u8], material: Material<'_>) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine as _;
    let envelope: serde_json::Value = serde_json::from_slice(envelope)?;
    let material = match material {
        Material::KeyHint(hint) => {
            serde_json::json!({ "publicKey": { "hint": hint }, "tlogEntries": [] })
        }
        Material::Certificate(der) => serde_json::json!({
            "certificate": { "rawBytes": base64::engine::general_purpose::STANDARD.encode(der) },
            "tlogEntries": [],
        }),
    };
    serde_json::to_vec(&serde_json::json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": envelope,
    }))
}

/// A referrer manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferrerManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The OCI manifest media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// The artifact type.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    /// The empty config.
    pub config: Descriptor,
    /// The bundle.
    pub layers: Vec<Descriptor>,
    /// The image this is about.
    pub subject: Option<Descriptor>,
    /// `dev.sigstore.bundle.*` and the creation time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ReferrerManifest {
    /// Builds the referrer manifest for `bundle` about `subject`.
    pub fn new(
        subject: Descriptor,
        bundle: &[u8],
        predicate_type: &str,
        created: &str,
    ) -> ReferrerManifest {
        let mut annotations = BTreeMap::new();
        annotations.insert(CONTENT_ANNOTATION.to_owned(), "dsse-envelope".to_owned());
        annotations.insert(PREDICATE_ANNOTATION.to_owned(), predicate_type.to_owned());
        annotations.insert(
            "org.opencontainers.image.created".to_owned(),
            created.to_owned(),
        );
        ReferrerManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_owned()),
            artifact_type: Some(BUNDLE_MEDIA_TYPE.to_owned()),
            config: Descriptor::for_bytes(EMPTY_MEDIA_TYPE, EMPTY_CONFIG),
            layers: vec![Descriptor::for_bytes(BUNDLE_MEDIA_TYPE, bundle)],
            subject: Some(subject),
            annotations,
        }
    }

    /// Parses a referrer manifest.
    pub fn parse(bytes: &[u8]) -> Result<ReferrerManifest, String> {
        let m: ReferrerManifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("malformed referrer manifest: {e}"))?;
        if m.schema_version != 2 || m.media_type.as_deref().is_some_and(|t| t != OCI_MANIFEST) {
            return Err("the referrer is not an OCI image manifest".to_owned());
        }
        Ok(m)
    }

    /// The bytes to push.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The entry for this manifest in a referrers index.
    pub fn index_entry(&self, bytes: &[u8]) -> Descriptor {
        let mut d = Descriptor::for_bytes(OCI_MANIFEST, bytes);
        d.annotations = self.annotations.clone();
        if let Some(t) = &self.artifact_type {
            d.extra.insert(
                "artifactType".to_owned(),
                serde_json::Value::from(t.as_str()),
            );
        }
        d
    }
}

/// A referrers index (the API's answer, or the fallback tag's content).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferrersIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The OCI index media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    /// The referrers.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl ReferrersIndex {
    /// Parses an index, refusing other documents (some registries answer
    /// the fallback tag with the image itself).
    pub fn parse(bytes: &[u8]) -> Result<ReferrersIndex, String> {
        let i: ReferrersIndex =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed referrers index: {e}"))?;
        if i.schema_version != 2 || i.media_type.as_deref() != Some(OCI_INDEX) {
            return Err("the referrers document is not an OCI image index".to_owned());
        }
        Ok(i)
    }

    /// An empty index.
    pub fn empty() -> ReferrersIndex {
        ReferrersIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            manifests: Vec::new(),
        }
    }

    /// The bytes to push.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether `digest` is listed.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.manifests
            .iter()
            .any(|d| d.digest_str == digest.as_str())
    }
}

/// The fallback tag for referrers of `digest`: `sha256-<hex>`.
pub fn fallback_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrer_round_trip_and_refusals() {
        let subject = Descriptor::for_bytes(OCI_MANIFEST, b"image");
        let m = ReferrerManifest::new(
            subject.clone(),
            b"bundle",
            SIGN_PREDICATE_TYPE,
            "2026-11-23T00:00:00Z",
        );
        let bytes = m.to_bytes();
        let again = ReferrerManifest::parse(&bytes).unwrap();
        assert_eq!(again.subject.unwrap().digest_str, subject.digest_str);
        assert_eq!(
            again.config.digest_str,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let entry = m.index_entry(&bytes);
        assert_eq!(entry.extra["artifactType"], BUNDLE_MEDIA_TYPE);
        let mut index = ReferrersIndex::empty();
        index.manifests.push(entry);
        let parsed = ReferrersIndex::parse(&index.to_bytes()).unwrap();
        assert!(parsed.contains(&Digest::of(&bytes)));
        // An image manifest at the fallback tag is not an index.
        assert!(ReferrersIndex::parse(&bytes).is_err());
        assert!(Bundle::parse(br#"{"mediaType":"application/x-unknown","dsseEnvelope":{"payloadType":"a","payload":"","signatures":[]}}"#).unwrap_err().contains("unknown bundle media type"));
    }
}
