//! Checkpoints: C2SP `tlog-checkpoint` bodies in C2SP `signed-note`
//! envelopes, as Rekor v1 and v2 publish them.
//!
//! ```text
//! <origin>\n<size>\n<base64 root hash>\n[<extension>\n...]\n
//! — <key name> <base64(key id[4] || signature)>\n   (one or more)
//! ```
//!
//! The signed text is everything up to and including the newline before
//! the last blank line. Lines from keys that are not trusted are ignored
//! (C2SP); a trusted key whose signature fails refuses the checkpoint, and
//! so does a checkpoint no trusted key signed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use marque_keys::{Algorithm, PublicKey};

use super::merkle::Hash;
use super::{ProofError, sha256};

/// The most signature lines read (C2SP: accept at least 16).
pub const MAX_SIGNATURES: usize = 64;

/// A log's checkpoint-signing key: its name (the log's URL without the
/// scheme), the 4-byte key id that signature lines carry, and the key.
#[derive(Debug, Clone)]
pub struct LogKey {
    /// The key name, e.g. `rekor.sigstore.dev`.
    pub name: String,
    /// The key id signature lines start with.
    pub key_id: [u8; 4],
    /// The public key.
    pub key: PublicKey,
}

impl LogKey {
    /// The key of the log at `base_url` (`https://rekor.sigstore.dev`).
    /// Key ids: ECDSA, the first 4 bytes of SHA-256 of the DER
    /// SubjectPublicKeyInfo (RFC 6962, what Rekor v1 uses); Ed25519, the
    /// signed-note rule, SHA-256(name || 0x0A || 0x01 || key)[..4].
    pub fn new(base_url: &str, key: PublicKey) -> Result<LogKey, ProofError> {
        let name = base_url
            .split_once("://")
            .map_or(base_url, |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ProofError::new(format!(
                "log URL {base_url:?} gives no key name"
            )));
        }
        let full = match key.algorithm() {
            Algorithm::Ed25519 => sha256(&[name.as_bytes(), b"\n", &[1], key.raw_public_key()]),
            _ => sha256(&[key.spki_der()]),
        };
        let mut key_id = [0; 4];
        key_id.copy_from_slice(&full[..4]);
        Ok(LogKey { name, key_id, key })
    }
}

/// A parsed checkpoint (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root_hash: Hash,
    /// Extension lines, in order.
    pub extensions: Vec<String>,
    text: String,
    signatures: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    name: String,
    key_id: [u8; 4],
    signature: Vec<u8>,
}

impl Checkpoint {
    /// Parses a signed note holding a checkpoint.
    pub fn parse(note: &str) -> Result<Checkpoint, ProofError> {
        let bad = |why: &str| ProofError::new(format!("checkpoint: {why}"));
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        if !sigs.ends_with('\n') {
            return Err(bad("the signature lines do not end with a newline"));
        }
        let mut lines = text[..text.len() - 1].split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("the tree size is not a decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad("the tree size is too large"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root_hash: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the root hash is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("an empty line among the extension lines"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(bad("too many signature lines"));
            }
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| bad("a signature line does not start with an em dash"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("a signature line has no key name"))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| bad("a signature is not base64"))?;
            if name.is_empty() || raw.len() < 5 {
                return Err(bad("a signature line is too short"));
            }
            let mut key_id = [0; 4];
            key_id.copy_from_slice(&raw[..4]);
            signatures.push(Line {
                name: name.to_owned(),
                key_id,
                signature: raw[4..].to_vec(),
            });
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root_hash,
            extensions,
            text: text.to_owned(),
            signatures,
        })
    }

    /// Verifies the signature of `log` on this checkpoint: a line with its
    /// name and key id must exist, and every such line must verify. Lines
    /// by other keys are ignored.
    pub fn verify(&self, log: &LogKey) -> Result<(), ProofError> {
        let mut found = false;
        for line in self
            .signatures
            .iter()
            .filter(|l| l.name == log.name && l.key_id == log.key_id)
        {
            log.key
                .verify(self.text.as_bytes(), &line.signature)
                .map_err(|_| {
                    ProofError::new(format!(
                        "checkpoint: the signature by {} does not verify",
                        log.name
                    ))
                })?;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(ProofError::new(format!(
                "checkpoint: not signed by the log {} (key id {})",
                log.name,
                hex(&log.key_id)
            )))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigstore::fixtures;

    fn note(case: &str) -> String {
        fixtures::entry(case)["inclusionProof"]["checkpoint"]["envelope"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn rekor_v1_and_v2_checkpoints() {
        let c = Checkpoint::parse(&note("happy-path-v0.3")).unwrap();
        assert_eq!(c.origin, "rekor.sigstore.dev - 2605736670972794746");
        assert_eq!(c.size, 75_408_393);
        let logs = fixtures::logs("happy-path-v0.3");
        assert_eq!(logs[0].name, "rekor.sigstore.dev");
        c.verify(&logs[0]).unwrap();

        let c = Checkpoint::parse(&note("rekor2-happy-path")).unwrap();
        assert_eq!(c.origin, "log2025-alpha1.rekor.sigstage.dev");
        let logs = fixtures::logs("rekor2-happy-path");
        let v2 = logs
            .iter()
            .find(|l| l.key.algorithm() == Algorithm::Ed25519)
            .unwrap();
        c.verify(v2).unwrap();
        // The v1 key of the same root did not sign it.
        assert!(c.verify(&logs[0]).is_err());
        // Cosignatures by keys nobody trusts are ignored.
        for case in [
            "rekor2-checkpoint-cosigned",
            "rekor2-checkpoint-multiple-cosigs",
        ] {
            let c = Checkpoint::parse(&note(case)).unwrap();
            assert!(c.signatures.len() > 1, "{case}");
            let logs = fixtures::logs(case);
            assert!(logs.iter().any(|l| c.verify(l).is_ok()), "{case}");
        }
    }

    #[test]
    fn refused_checkpoints() {
        for case in [
            "invalid-checkpoint-signature_fail",
            "checkpoint-bad-keyhint_fail",
        ] {
            let c = Checkpoint::parse(&note(case)).unwrap();
            let logs = fixtures::logs(case);
            assert!(logs.iter().all(|l| c.verify(l).is_err()), "{case}");
        }
        let case = "rekor2-checkpoint-no-matching-signature_fail";
        let logs = fixtures::logs(case);
        // Refused at parsing or at verifying, either way.
        if let Ok(c) = Checkpoint::parse(&note(case)) {
            assert!(logs.iter().all(|l| c.verify(l).is_err()), "{case}");
        }
        // Malformed notes are errors, never panics.
        let good = note("happy-path-v0.3");
        for bad in [
            "",
            "\n\n",
            "origin\n\n",
            "o\n01\nAAAA\n\n\u{2014} k AAAAAAA=\n",
            "o\n1\nnot base64\n\n\u{2014} k AAAAAAA=\n",
            &good.replace('\u{2014}', "-"),
            &good[..good.len() - 1],
            &good.replace("\n\n", "\n\n\n"),
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        // The text is what is signed: one changed byte breaks it.
        let c = Checkpoint::parse(&good.replacen("75408393", "75408394", 1)).unwrap();
        assert!(c.verify(&fixtures::logs("happy-path-v0.3")[0]).is_err());
    }
}
