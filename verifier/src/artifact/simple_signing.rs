//! The cosign "simple signing" payload (formats.md §1.2).
//!
//! The payload is signed and stored as exact bytes. [`build`] writes the same
//! bytes cosign writes (compact JSON, fields in Go struct order, `optional`
//! keys sorted). [`parse`] is only to be called on bytes whose signature has
//! already been verified: it never re-serialises anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Media type of the payload blob (the signature layer).
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The only accepted `critical.type`.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// A parsed payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// What the signature binds.
    pub critical: Critical,
    /// Annotations: `null`, or an object (cosign writes strings; skopeo
    /// writes `creator` and an integer `timestamp`).
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `critical` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    /// The signed identity.
    pub identity: Identity,
    /// The signed image.
    pub image: Image,
    /// Must be [`SIGNATURE_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// The repository (cosign) or repository:tag (skopeo).
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// The manifest digest the signature is for. Kept as a string so a
    /// malformed value is reported as a mismatch, not a parse failure.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The `optional` key holding the signing time (Unix seconds, an integer),
/// as containers/image (skopeo, podman) writes it.
pub const TIMESTAMP_KEY: &str = "timestamp";
/// The `optional` key naming the signing tool, as containers/image writes it.
pub const CREATOR_KEY: &str = "creator";

/// Who signed and when, recorded inside the signed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The signing tool, e.g. `marque 0.1.0`.
    pub creator: String,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
}

impl Payload {
    /// The signing time the signer recorded (`optional.timestamp`), when it
    /// is a non-negative integer. Only meaningful on a verified payload.
    pub fn signed_at(&self) -> Option<u64> {
        self.optional.as_ref()?.get(TIMESTAMP_KEY)?.as_u64()
    }
}

/// The payload bytes cosign would write for `identity` and `digest`.
pub fn build(identity: &str, digest: &Digest, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let optional: BTreeMap<&str, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.as_str(), serde_json::Value::from(v.as_str())))
        .collect();
    serialize(identity, digest, &optional)
}

/// The payload with `annotations` plus the signer's [`Stamp`] in
/// `optional`, in the form containers/image writes (`creator`, and an
/// integer `timestamp`). The stamp's keys override annotations of the same
/// name; callers refuse those (see [`is_reserved`]).
pub fn build_stamped(
    identity: &str,
    digest: &Digest,
    annotations: &BTreeMap<String, String>,
    stamp: &Stamp,
) -> Vec<u8> {
    let mut optional: BTreeMap<&str, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.as_str(), serde_json::Value::from(v.as_str())))
        .collect();
    optional.insert(CREATOR_KEY, serde_json::Value::from(stamp.creator.as_str()));
    optional.insert(TIMESTAMP_KEY, serde_json::Value::from(stamp.timestamp));
    serialize(identity, digest, &optional)
}

/// Whether `key` is an `optional` key a [`Stamp`] writes.
pub fn is_reserved(key: &str) -> bool {
    key == CREATOR_KEY || key == TIMESTAMP_KEY
}

fn serialize(
    identity: &str,
    digest: &Digest,
    optional: &BTreeMap<&str, serde_json::Value>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        critical: CriticalOut<'a>,
        optional: Option<&'a BTreeMap<&'a str, serde_json::Value>>,
    }
    #[derive(Serialize)]
    struct CriticalOut<'a> {
        identity: IdentityOut<'a>,
        image: ImageOut<'a>,
        #[serde(rename = "type")]
        kind: &'a str,
    }
    #[derive(Serialize)]
    struct IdentityOut<'a> {
        #[serde(rename = "docker-reference")]
        docker_reference: &'a str,
    }
    #[derive(Serialize)]
    struct ImageOut<'a> {
        #[serde(rename = "docker-manifest-digest")]
        digest: &'a str,
    }
    let out = Out {
        critical: CriticalOut {
            identity: IdentityOut {
                docker_reference: identity,
            },
            image: ImageOut {
                digest: digest.as_str(),
            },
            kind: SIGNATURE_TYPE,
        },
        optional: (!optional.is_empty()).then_some(optional),
    };
    // Serialising plain structs of strings cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Parses verified payload bytes.
pub fn parse(bytes: &[u8]) -> Result<Payload, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_exact_with_cosign() {
        // formats.md §1.9, generated by cosign.
        let digest: Digest =
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .parse()
                .unwrap();
        let bytes = build("registry.example.com/team/app", &digest, &BTreeMap::new());
        let expected = r#"{"critical":{"identity":{"docker-reference":"registry.example.com/team/app"},"image":{"docker-manifest-digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},"type":"cosign container image signature"},"optional":null}"#;
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), expected);
        assert_eq!(
            Digest::of(&bytes).as_str(),
            "sha256:d2b9187fa8f64c43c611bb7501e41d8ef2713a317ccae44c16740f3ba233e674"
        );
    }

    #[test]
    fn annotations_sorted_and_round_trip() {
        let digest = Digest::of(b"x");
        let mut a = BTreeMap::new();
        a.insert("z".to_owned(), "1".to_owned());
        a.insert("a".to_owned(), "2".to_owned());
        let bytes = build("h/r", &digest, &a);
        let s = std::str::from_utf8(&bytes).unwrap();
        assert!(s.ends_with(r#""optional":{"a":"2","z":"1"}}"#), "{s}");
        let p = parse(&bytes).unwrap();
        assert_eq!(p.critical.kind, SIGNATURE_TYPE);
        assert_eq!(p.critical.image.docker_manifest_digest, digest.as_str());
        assert_eq!(p.optional.unwrap()["a"], "2");
    }

    #[test]
    fn parses_skopeo_payload() {
        let s = br#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/demo/signed:v1"},"image":{"docker-manifest-digest":"sha256:aa"},"type":"cosign container image signature"},"optional":{"creator":"containers/image 5.34.0","timestamp":1700000000}}"#;
        let p = parse(s).unwrap();
        assert_eq!(
            p.critical.identity.docker_reference,
            "127.0.0.1:5000/demo/signed:v1"
        );
        assert_eq!(p.signed_at(), Some(1700000000));
        assert_eq!(p.optional.unwrap()["timestamp"], 1700000000);
    }

    #[test]
    fn stamped_payload_is_what_skopeo_writes() {
        let digest: Digest =
            "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .parse()
                .unwrap();
        let mut a = BTreeMap::new();
        a.insert("sha".to_owned(), "abc".to_owned());
        let stamp = Stamp {
            creator: "marque 0.1.0".to_owned(),
            timestamp: 1_700_000_000,
        };
        let bytes = build_stamped("r.io/app", &digest, &a, &stamp);
        let s = std::str::from_utf8(&bytes).unwrap();
        assert!(
            s.ends_with(
                r#""optional":{"creator":"marque 0.1.0","sha":"abc","timestamp":1700000000}}"#
            ),
            "{s}"
        );
        assert_eq!(parse(&bytes).unwrap().signed_at(), Some(1_700_000_000));
        // A string or negative timestamp is not a signing time.
        let mut a = BTreeMap::new();
        a.insert("timestamp".to_owned(), "1700000000".to_owned());
        assert_eq!(
            parse(&build("r.io/app", &digest, &a)).unwrap().signed_at(),
            None
        );
        let neg = br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:aa"},"type":"cosign container image signature"},"optional":{"timestamp":-5}}"#;
        assert_eq!(parse(neg).unwrap().signed_at(), None);
    }
}
