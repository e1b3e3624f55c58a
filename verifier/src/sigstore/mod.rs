//! Sigstore transparency-log proofs, as pure functions over bytes: no I/O,
//! no clock, no policy. The first pieces of keyless verification (issue
//! 14); nothing calls them from the CLI yet.
//!
//! - [`merkle`]: RFC 9162 inclusion proofs (leaf and node hashes).
//! - [`checkpoint`]: C2SP signed-note checkpoints and the log keys that
//!   sign them (Rekor v1: ECDSA P-256; Rekor v2: Ed25519).
//! - [`set`]: Rekor v1 signed entry timestamps (inclusion promises).
//! - [`tlog`]: a bundle's `inclusionProof` checked whole: the proof, its
//!   checkpoint's signature by a trusted log, and that the two agree.
//!
//! Each is tested on real public data (testdata/sigstore, from the
//! sigstore-conformance suite), facts from `shared/reference/keyless.md`.

pub mod checkpoint;
pub mod merkle;
pub mod set;
pub mod tlog;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProofError(pub String);

impl ProofError {
    pub(crate) fn new(why: impl Into<String>) -> ProofError {
        ProofError(why.into())
    }
}

pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::PathBuf;

    pub(crate) fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/sigstore")
    }

    pub(crate) fn json(rel: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir().join(rel)).unwrap()).unwrap()
    }

    /// The first tlog entry of a conformance case's bundle.
    pub(crate) fn entry(case: &str) -> serde_json::Value {
        json(&format!("conformance/{case}/bundle.sigstore.json"))["verificationMaterial"]
            ["tlogEntries"][0]
            .clone()
    }

    /// The trusted logs for a case: its own trusted root, or production
    /// Rekor v1.
    pub(crate) fn logs(case: &str) -> Vec<super::checkpoint::LogKey> {
        let own = dir().join(format!("conformance/{case}/trusted_root.json"));
        let root = if own.exists() {
            json(&format!("conformance/{case}/trusted_root.json"))
        } else {
            json("rekor-v1.production.json")
        };
        root["tlogs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let der = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    t["publicKey"]["rawBytes"].as_str().unwrap(),
                )
                .unwrap();
                super::checkpoint::LogKey::new(
                    t["baseUrl"].as_str().unwrap(),
                    marque_keys::PublicKey::from_spki_der(&der).unwrap(),
                )
                .unwrap()
            })
            .collect()
    }
}
