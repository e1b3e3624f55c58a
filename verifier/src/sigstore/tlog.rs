//! A transparency-log entry's inclusion proof, checked whole: the Merkle
//! path from the entry's body to the proof's root, the checkpoint signed
//! by a trusted log, and the checkpoint naming that same root and size.
//!
//! Rekor v2 clients are told to take the size and root from the verified
//! checkpoint and ignore the proof's own; requiring the two to agree is
//! stricter and accepts every conformance case that must pass.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ProofError;
use super::checkpoint::{Checkpoint, LogKey};
use super::merkle::{Hash, leaf_hash, verify_inclusion};

/// The largest audit path read (a tree of 2^64 leaves needs 64 hashes).
const MAX_PROOF_HASHES: usize = 64;

/// A bundle's `inclusionProof`, parsed.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The entry's index in the tree the proof is for.
    pub log_index: u64,
    /// That tree's size.
    pub tree_size: u64,
    /// Its root.
    pub root_hash: Hash,
    /// The audit path, leaf to root.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint for that tree.
    pub checkpoint: Checkpoint,
}

/// A proto3-JSON int64: a decimal string, or a number.
fn int64(v: &serde_json::Value, what: &str) -> Result<u64, ProofError> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| {
        ProofError::new(format!(
            "inclusion proof: {what} is not a non-negative integer"
        ))
    })
}

fn hash(v: &serde_json::Value, what: &str) -> Result<Hash, ProofError> {
    v.as_str()
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ProofError::new(format!("inclusion proof: {what} is not 32 bytes of base64"))
        })
}

impl InclusionProof {
    /// Reads an `inclusionProof` object.
    pub fn from_json(v: &serde_json::Value) -> Result<InclusionProof, ProofError> {
        let hashes = v["hashes"]
            .as_array()
            .ok_or_else(|| ProofError::new("inclusion proof: no hashes"))?;
        if hashes.len() > MAX_PROOF_HASHES {
            return Err(ProofError::new("inclusion proof: too many hashes"));
        }
        let envelope = v["checkpoint"]["envelope"]
            .as_str()
            .ok_or_else(|| ProofError::new("inclusion proof: no checkpoint"))?;
        Ok(InclusionProof {
            log_index: int64(&v["logIndex"], "logIndex")?,
            tree_size: int64(&v["treeSize"], "treeSize")?,
            root_hash: hash(&v["rootHash"], "rootHash")?,
            hashes: hashes
                .iter()
                .map(|h| hash(h, "a proof hash"))
                .collect::<Result<_, _>>()?,
            checkpoint: Checkpoint::parse(envelope)?,
        })
    }

    /// Checks that `body` (the decoded `canonicalizedBody`) is in the log
    /// whose key is `log`.
    pub fn verify(&self, body: &[u8], log: &LogKey) -> Result<(), ProofError> {
        verify_inclusion(
            self.log_index,
            self.tree_size,
            &leaf_hash(body),
            &self.hashes,
            &self.root_hash,
        )?;
        self.checkpoint.verify(log)?;
        if self.checkpoint.root_hash != self.root_hash {
            return Err(ProofError::new(
                "inclusion proof: the checkpoint is for another root hash",
            ));
        }
        if self.checkpoint.size != self.tree_size {
            return Err(ProofError::new(
                "inclusion proof: the checkpoint is for another tree size",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigstore::fixtures;

    /// The conformance case's proof against the trusted log its entry
    /// names (by logId), as a verifier picks it.
    fn check(case: &str) -> Result<(), ProofError> {
        let e = fixtures::entry(case);
        let body = STANDARD
            .decode(e["canonicalizedBody"].as_str().unwrap())
            .unwrap();
        let proof = InclusionProof::from_json(&e["inclusionProof"])?;
        let log_id = STANDARD
            .decode(e["logId"]["keyId"].as_str().unwrap())
            .unwrap();
        let root = fixtures::root(case);
        let log = root
            .tlog(&log_id)
            .ok_or_else(|| ProofError::new("no trusted log has this logId"))?;
        proof.verify(&body, &log.checkpoint_key()?)
    }

    #[test]
    fn conformance_inclusion_proofs() {
        for case in [
            "happy-path-v0.3",
            "rekor2-happy-path",
            "rekor2-checkpoint-cosigned",
            "rekor2-checkpoint-multiple-cosigs",
            "rekor2-checkpoint-origin-not-first",
            "rekor2-checkpoint-two-sigs-from-origin",
            "rekor2-checkpoint-two-sigs-cosigned",
        ] {
            check(case).unwrap_or_else(|e| panic!("{case}: {e}"));
        }
        for (case, why) in [
            ("invalid-inclusion-proof_fail", "inclusion proof"),
            ("inclusion-proof-corrupted-hash_fail", "computed root"),
            ("checkpoint-wrong-roothash_fail", "another root hash"),
            ("invalid-checkpoint-signature_fail", "checkpoint"),
            ("checkpoint-bad-keyhint_fail", "checkpoint"),
            ("rekor2-checkpoint-no-matching-signature_fail", "checkpoint"),
            ("rekor2-checkpoint-missing-origin_fail", "checkpoint"),
            ("rekor2-checkpoint-missing-size_fail", "checkpoint"),
            ("rekor2-checkpoint-missing-root-hash_fail", "checkpoint"),
            ("rekor2-checkpoint-missing-log-signature_fail", "checkpoint"),
        ] {
            let e = check(case).expect_err(case);
            assert!(e.0.contains(why), "{case}: {e}");
        }
    }

    #[test]
    fn malformed_proofs_are_errors() {
        let good = fixtures::entry("happy-path-v0.3")["inclusionProof"].clone();
        for (field, value) in [
            ("logIndex", serde_json::json!("-1")),
            ("treeSize", serde_json::json!("x")),
            ("rootHash", serde_json::json!("AAAA")),
            ("hashes", serde_json::json!(["AAAA"])),
            (
                "hashes",
                serde_json::json!(vec!["Fnnj13Uu1jdksPc4HZLapKX329dVlD5+MGNsiqBq1XM="; 65]),
            ),
            ("checkpoint", serde_json::json!({})),
        ] {
            let mut v = good.clone();
            v[field] = value;
            assert!(InclusionProof::from_json(&v).is_err(), "{field}");
        }
        // Numbers are accepted as well as strings.
        let mut v = good.clone();
        v["treeSize"] = serde_json::json!(75_408_393u64);
        assert_eq!(InclusionProof::from_json(&v).unwrap().tree_size, 75_408_393);
    }
}
