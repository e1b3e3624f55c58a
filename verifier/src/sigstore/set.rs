//! Rekor v1 signed entry timestamps (the bundle's `inclusionPromise`): the
//! log's signature over the JSON canonical form (RFC 8785) of
//! `{"body","integratedTime","logID","logIndex"}`.

use marque_keys::{Algorithm, PublicKey};

use super::ProofError;

/// What a SET covers.
#[derive(Debug, Clone, Copy)]
pub struct Promise<'a> {
    /// The entry's `canonicalizedBody`, base64 as the bundle carries it.
    pub body_b64: &'a str,
    /// Seconds since the epoch at which the log integrated the entry.
    pub integrated_time: i64,
    /// The log's id (32 bytes; hex in the signed form).
    pub log_id: &'a [u8],
    /// The entry's global index in the log.
    pub log_index: i64,
}

impl Promise<'_> {
    /// The signed bytes. Every field is ASCII (base64, hex) or an integer,
    /// so sorted keys without whitespace are the RFC 8785 form.
    pub fn canonical(&self) -> Result<Vec<u8>, ProofError> {
        if !self
            .body_b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(ProofError::new("SET: the entry body is not base64"));
        }
        let log_id: String = self.log_id.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{log_id}","logIndex":{}}}"#,
            self.body_b64, self.integrated_time, self.log_index
        )
        .into_bytes())
    }

    /// Checks `signature` (ECDSA, DER) by the log's `key` over the promise.
    pub fn verify(&self, signature: &[u8], key: &PublicKey) -> Result<(), ProofError> {
        if key.algorithm() == Algorithm::Ed25519 {
            // As sigstore-go: Rekor v1 signs SETs with ECDSA only.
            return Err(ProofError::new("SET: the log key is not an ECDSA key"));
        }
        key.verify(&self.canonical()?, signature)
            .map_err(|_| ProofError::new("SET: the log's signature does not verify"))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::sigstore::fixtures;

    /// A case's entry, its log id and its SET, decoded.
    fn parts(case: &str) -> (serde_json::Value, Vec<u8>, Vec<u8>) {
        let e = fixtures::entry(case);
        let log_id = STANDARD
            .decode(e["logId"]["keyId"].as_str().unwrap())
            .unwrap();
        let set = STANDARD
            .decode(
                e["inclusionPromise"]["signedEntryTimestamp"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        (e, log_id, set)
    }

    fn check(case: &str) -> Result<(), ProofError> {
        let (e, log_id, set) = parts(case);
        let int = |v: &serde_json::Value| v.as_str().unwrap().parse::<i64>().unwrap();
        let promise = Promise {
            body_b64: e["canonicalizedBody"].as_str().unwrap(),
            integrated_time: int(&e["integratedTime"]),
            log_id: &log_id,
            log_index: int(&e["logIndex"]),
        };
        promise.verify(&set, &fixtures::logs(case)[0].key)
    }

    #[test]
    fn real_sets() {
        check("happy-path-v0.3").unwrap();
        let e = check("set-invalid-signature_fail").unwrap_err();
        assert!(e.0.contains("does not verify"), "{e}");
    }

    #[test]
    fn each_field_is_covered() {
        let (e, log_id, set) = parts("happy-path-v0.3");
        let key = fixtures::logs("happy-path-v0.3")[0].key.clone();
        let good = Promise {
            body_b64: e["canonicalizedBody"].as_str().unwrap(),
            integrated_time: 1_710_869_186,
            log_id: &log_id,
            log_index: 79_571_823,
        };
        good.verify(&set, &key).unwrap();
        let mut other_id = log_id.clone();
        other_id[0] ^= 1;
        for bad in [
            Promise {
                integrated_time: 1_710_869_187,
                ..good
            },
            Promise {
                log_index: 75_408_392,
                ..good
            },
            Promise {
                log_id: &other_id,
                ..good
            },
            Promise {
                body_b64: "e30=",
                ..good
            },
        ] {
            assert!(bad.verify(&set, &key).is_err());
        }
        assert!(
            Promise {
                body_b64: "\"}",
                ..good
            }
            .canonical()
            .is_err()
        );
    }
}
