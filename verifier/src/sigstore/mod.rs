//! Sigstore transparency-log proofs, as pure functions over bytes: no I/O,
//! no clock, no policy. The first pieces of keyless verification (issue
//! 14); nothing calls them from the CLI yet.
//!
//! - [`merkle`]: RFC 9162 inclusion proofs (leaf and node hashes).
//! - [`checkpoint`]: C2SP signed-note checkpoints and the log keys that
//!   sign them (Rekor v1: ECDSA P-256; Rekor v2: Ed25519).
//! - [`sct`]: SCTs embedded in Fulcio certificates (RFC 6962 §3.2).
//! - [`set`]: Rekor v1 signed entry timestamps (inclusion promises).
//! - [`tlog`]: a bundle's `inclusionProof` checked whole: the proof, its
//!   checkpoint's signature by a trusted log, and that the two agree.
//! - [`entry`]: a `hashedrekord` entry body against the artifact digest,
//!   signature and certificate it must log.
//! - [`trusted_root`]: `trusted_root.json`, the logs and authorities with
//!   their validity windows.
//!
//! Each is tested on real public data (testdata/sigstore, from the
//! sigstore-conformance suite), facts from `shared/reference/keyless.md`.

pub mod checkpoint;
pub mod entry;
pub mod merkle;
pub mod sct;
pub mod set;
pub mod tlog;
pub mod trusted_root;

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

    /// A case's trusted root: its own, or production.
    pub(crate) fn root(case: &str) -> super::trusted_root::TrustedRoot {
        let own = dir().join(format!("conformance/{case}/trusted_root.json"));
        let path = if own.exists() {
            own
        } else {
            dir().join("trusted_root.production.json")
        };
        super::trusted_root::TrustedRoot::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The checkpoint keys of a case's trusted logs.
    pub(crate) fn logs(case: &str) -> Vec<super::checkpoint::LogKey> {
        root(case)
            .tlogs
            .iter()
            .map(|t| t.checkpoint_key().unwrap())
            .collect()
    }
}
