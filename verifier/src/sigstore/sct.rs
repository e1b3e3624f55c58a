//! Signed certificate timestamps embedded in a Fulcio certificate (RFC
//! 6962 §3.2, precertificate entries): at least one SCT from a trusted CT
//! log, valid at its timestamp, must sign the certificate's TBS without the
//! SCT extension, bound to the issuer's key.

use marque_keys::certificate::{spki_of, tbs_without_extension};

use super::trusted_root::{LogPublicKey, TransparencyLog};
use super::{ProofError, sha256};

/// The embedded SCT list extension.
pub const SCT_LIST_OID: &str = "1.3.6.1.4.1.11129.2.4.2";

/// One SCT, parsed from the TLS encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sct {
    /// The CT log's id.
    pub log_id: [u8; 32],
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// CT extensions (usually empty; Static CT logs carry some).
    pub extensions: Vec<u8>,
    /// The signature (DER for ECDSA).
    pub signature: Vec<u8>,
}

fn bad(why: &str) -> ProofError {
    ProofError::new(format!("SCT: {why}"))
}

/// A cursor over TLS-encoded bytes.
struct Tls<'a>(&'a [u8]);

impl<'a> Tls<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProofError> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn uint(&mut self, n: usize) -> Result<u64, ProofError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn vec(&mut self, len_bytes: usize) -> Result<&'a [u8], ProofError> {
        let n = self.uint(len_bytes)? as usize;
        self.take(n)
    }
}

/// Parses a `SignedCertificateTimestampList`.
pub fn parse_list(list: &[u8]) -> Result<Vec<Sct>, ProofError> {
    let mut outer = Tls(list);
    let mut scts = Tls(outer.vec(2)?);
    if !outer.0.is_empty() {
        return Err(bad("bytes after the list"));
    }
    let mut out = Vec::new();
    while !scts.0.is_empty() {
        let mut s = Tls(scts.vec(2)?);
        if s.uint(1)? != 0 {
            return Err(bad("not a v1 SCT"));
        }
        let mut log_id = [0; 32];
        log_id.copy_from_slice(s.take(32)?);
        let timestamp = s.uint(8)?;
        let extensions = s.vec(2)?.to_vec();
        let (hash, sig_alg) = (s.uint(1)?, s.uint(1)?);
        if (hash, sig_alg) != (4, 3) {
            return Err(bad("not ECDSA with SHA-256"));
        }
        let signature = s.vec(2)?.to_vec();
        if !s.0.is_empty() {
            return Err(bad("bytes after an SCT"));
        }
        out.push(Sct {
            log_id,
            timestamp,
            extensions,
            signature,
        });
    }
    Ok(out)
}

/// Checks the SCTs embedded in `leaf` (DER), issued by `issuer` (DER, the
/// certificate that signed it), against `ctlogs`: one must verify.
pub fn verify_embedded(
    leaf: &[u8],
    issuer: &[u8],
    ctlogs: &[TransparencyLog],
) -> Result<(), ProofError> {
    let (tbs, list) = tbs_without_extension(leaf, SCT_LIST_OID).map_err(|e| bad(&e.to_string()))?;
    let list = list.ok_or_else(|| bad("the certificate has no embedded SCT"))?;
    let issuer_key_hash = sha256(&[&spki_of(issuer).map_err(|e| bad(&e.to_string()))?]);
    let tbs_len = u32::try_from(tbs.len())
        .ok()
        .filter(|n| *n < 1 << 24)
        .ok_or_else(|| bad("the TBSCertificate is too large"))?;
    let mut last = bad("no SCT from a trusted CT log");
    for sct in parse_list(&list)? {
        let Some(log) = ctlogs.iter().find(|l| l.log_id == sct.log_id) else {
            continue;
        };
        let LogPublicKey::Supported(key) = &log.key else {
            last = bad(&format!("CT log {}: unsupported key", log.base_url));
            continue;
        };
        if !i64::try_from(sct.timestamp).is_ok_and(|t| log.valid.contains(t)) {
            last = bad(&format!(
                "CT log {}: the SCT's time is outside the key's validity",
                log.base_url
            ));
            continue;
        }
        let ext_len =
            u16::try_from(sct.extensions.len()).map_err(|_| bad("extensions too long"))?;
        let mut signed = Vec::with_capacity(tbs.len() + sct.extensions.len() + 48);
        signed.extend_from_slice(&[0, 0]); // v1, certificate_timestamp
        signed.extend_from_slice(&sct.timestamp.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
        signed.extend_from_slice(&issuer_key_hash);
        signed.extend_from_slice(&tbs_len.to_be_bytes()[1..]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&ext_len.to_be_bytes());
        signed.extend_from_slice(&sct.extensions);
        match key.verify(&signed, &sct.signature) {
            Ok(()) => return Ok(()),
            Err(_) => {
                last = bad(&format!(
                    "CT log {}: the SCT's signature does not verify",
                    log.base_url
                ));
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::sigstore::fixtures;

    fn check(case: &str) -> Result<(), ProofError> {
        let b = fixtures::json(&format!("conformance/{case}/bundle.sigstore.json"));
        let vm = &b["verificationMaterial"];
        let leaf = vm["certificate"]["rawBytes"]
            .as_str()
            .or(vm["x509CertificateChain"]["certificates"][0]["rawBytes"].as_str())
            .unwrap();
        let leaf = STANDARD.decode(leaf).unwrap();
        let root = fixtures::root(case);
        // The issuer: the first certificate of the CA chain that signed it
        // (here: the intermediate, or a custom root's only certificate).
        let mut last = bad("no CA");
        for ca in &root.certificate_authorities {
            match verify_embedded(&leaf, &ca.chain[0], &root.ctlogs) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    #[test]
    fn conformance_scts() {
        check("happy-path-v0.3").unwrap();
        // The issuer's key is part of what is signed: the right SCT with
        // another issuer (the 2021 root) fails.
        let b = fixtures::json("conformance/happy-path-v0.3/bundle.sigstore.json");
        let leaf = STANDARD
            .decode(
                b["verificationMaterial"]["certificate"]["rawBytes"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let prod = fixtures::root("happy-path-v0.3");
        let e = verify_embedded(
            &leaf,
            &prod.certificate_authorities[0].chain[0],
            &prod.ctlogs,
        )
        .unwrap_err();
        assert!(e.0.contains("does not verify"), "{e}");
        // No trusted CT log: refused.
        assert!(verify_embedded(&leaf, &prod.certificate_authorities[1].chain[0], &[]).is_err());
        check("bundle-with-sct-with-extensions").unwrap();
        assert!(check("invalid-ct-key_fail").is_err());
    }

    #[test]
    fn malformed_lists() {
        for list in [
            &[][..],
            &[0, 5, 0, 3, 0],
            &[0, 2, 0, 0, 9],
            &[0, 3, 0, 1, 1],
        ] {
            assert!(parse_list(list).is_err(), "{list:?}");
        }
        assert_eq!(parse_list(&[0, 0]).unwrap(), Vec::new());
    }
}
