//! in-toto Statements (v1 written, v1 and v0.1 read) and predicate types.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// Statement v0.1, which `cosign attest` still writes.
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// SLSA Provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

/// The predicate type URI for a cosign `--type` short name, or the
/// argument itself when it is a URI. `None` for an unknown short name.
pub fn predicate_type(name: &str) -> Option<&str> {
    Some(match name {
        "custom" => "https://cosign.sigstore.dev/attestation/v1",
        "slsaprovenance" | "slsaprovenance02" => "https://slsa.dev/provenance/v0.2",
        "slsaprovenance1" => SLSA_PROVENANCE_V1,
        "spdx" | "spdxjson" => "https://spdx.dev/Document",
        "cyclonedx" => "https://cyclonedx.org/bom",
        "link" => "https://in-toto.io/Link/v1",
        "vuln" => "https://cosign.sigstore.dev/attestation/vuln/v1",
        "openvex" => "https://openvex.dev/ns",
        uri if uri.contains("://") => uri,
        _ => return None,
    })
}

/// A subject of a Statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// The name (required in v0.1; the repository for images).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Algorithm → lowercase hex.
    pub digest: std::collections::BTreeMap<String, String>,
    /// Annotations on the subject (cosign 3 puts `-a key=value` here).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub annotations: serde_json::Map<String, serde_json::Value>,
}

/// A Statement, as read. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// `https://in-toto.io/Statement/v1` or `/v0.1`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// What the statement is about.
    pub subject: Vec<Subject>,
    /// The predicate's type URI.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The predicate (an empty object when absent).
    #[serde(default)]
    pub predicate: serde_json::Value,
}

impl Statement {
    /// A v1 statement about `digest` of the image named `name`.
    pub fn new(
        name: &str,
        digest: &Digest,
        predicate_type: &str,
        predicate: serde_json::Value,
    ) -> Statement {
        let mut d = std::collections::BTreeMap::new();
        d.insert("sha256".to_owned(), digest.hex().to_owned());
        Statement {
            kind: STATEMENT_V1.to_owned(),
            subject: vec![Subject {
                name: name.to_owned(),
                digest: d,
                annotations: serde_json::Map::new(),
            }],
            predicate_type: predicate_type.to_owned(),
            predicate,
        }
    }

    /// The bytes to sign.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses verified payload bytes, refusing other statement types.
    pub fn parse(bytes: &[u8]) -> Result<Statement, String> {
        let s: Statement =
            serde_json::from_slice(bytes).map_err(|e| format!("not an in-toto Statement: {e}"))?;
        if s.kind != STATEMENT_V1 && s.kind != STATEMENT_V01 {
            return Err(format!("unsupported statement _type {:?}", s.kind));
        }
        Ok(s)
    }

    /// The subjects that name `digest`.
    pub fn subjects_for<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> impl Iterator<Item = &'a Subject> + 'a {
        self.subject
            .iter()
            .filter(move |s| s.digest.get("sha256").is_some_and(|h| h == digest.hex()))
    }

    /// Whether any subject names `digest` (compared by sha256, the only
    /// algorithm registries use).
    pub fn is_about(&self, digest: &Digest) -> bool {
        self.subject
            .iter()
            .any(|s| s.digest.get("sha256").is_some_and(|h| h == digest.hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(predicate_type("slsaprovenance1"), Some(SLSA_PROVENANCE_V1));
        assert_eq!(
            predicate_type("spdxjson"),
            Some("https://spdx.dev/Document")
        );
        assert_eq!(
            predicate_type("https://example.com/p/v1"),
            Some("https://example.com/p/v1")
        );
        assert_eq!(predicate_type("nope"), None);
    }

    #[test]
    fn every_subject_is_checked() {
        let d = Digest::of(b"image");
        let other = Digest::of(b"other");
        let mut s = Statement::new("r/app", &other, SLSA_PROVENANCE_V1, serde_json::json!({}));
        assert!(!s.is_about(&d));
        let mut second = s.subject[0].clone();
        second.digest.insert("sha256".into(), d.hex().into());
        s.subject.push(second);
        assert!(s.is_about(&d));
        let parsed = Statement::parse(&s.to_bytes()).unwrap();
        assert_eq!(parsed, s);
        assert!(Statement::parse(br#"{"_type":"x","subject":[],"predicateType":"p"}"#).is_err());
        assert!(Statement::parse(b"{}").is_err());
    }
}
