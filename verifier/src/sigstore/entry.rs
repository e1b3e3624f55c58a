//! A log entry's body against the signature it is said to log
//! (client-spec §4.4; leaving this out was CVE-2022-36056): the
//! `hashedrekord` kinds, 0.0.1 (Rekor v1) and 0.0.2 (Rekor v2), must name
//! this artifact digest, this signature and this certificate.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::ProofError;
use crate::Digest;

/// What a `hashedrekord` entry must record.
#[derive(Debug, Clone, Copy)]
pub struct Logged<'a> {
    /// SHA-256 of the artifact, computed by the verifier (never the
    /// bundle's `messageDigest`).
    pub sha256: &'a [u8; 32],
    /// The signature bytes.
    pub signature: &'a [u8],
    /// The signing certificate, DER.
    pub certificate: &'a [u8],
}

fn bad(why: &str) -> ProofError {
    ProofError::new(format!("log entry: {why}"))
}

fn b64(v: &Value, what: &str) -> Result<Vec<u8>, ProofError> {
    v.as_str()
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or_else(|| bad(&format!("{what} is not base64")))
}

/// Checks the entry `body` (decoded `canonicalizedBody`) against `logged`.
pub fn check_hashedrekord(body: &[u8], logged: &Logged<'_>) -> Result<(), ProofError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("the body is not JSON"))?;
    if v["kind"] != "hashedrekord" {
        return Err(bad("not a hashedrekord entry"));
    }
    let (digest, signature, certificate) = match v["apiVersion"].as_str() {
        Some("0.0.1") => {
            let spec = &v["spec"];
            let hash = &spec["data"]["hash"];
            if hash["algorithm"] != "sha256" {
                return Err(bad("the logged digest is not SHA-256"));
            }
            let digest: Digest = hash["value"]
                .as_str()
                .and_then(|h| format!("sha256:{h}").parse().ok())
                .ok_or_else(|| bad("the logged digest is not 64 lowercase hex digits"))?;
            let pem = b64(&spec["signature"]["publicKey"]["content"], "the logged key")?;
            let certificate = marque_keys::certificate::first_certificate(&pem)
                .map_err(|_| bad("the logged key is not a certificate"))?;
            (
                digest,
                b64(&spec["signature"]["content"], "the logged signature")?,
                certificate,
            )
        }
        Some("0.0.2") => {
            let spec = &v["spec"]["hashedRekordV002"];
            if spec["data"]["algorithm"] != "SHA2_256" {
                return Err(bad("the logged digest is not SHA-256"));
            }
            let digest: [u8; 32] = b64(&spec["data"]["digest"], "the logged digest")?
                .try_into()
                .map_err(|_| bad("the logged digest is not 32 bytes"))?;
            (
                Digest::from_sha256(&digest),
                b64(&spec["signature"]["content"], "the logged signature")?,
                b64(
                    &spec["signature"]["verifier"]["x509Certificate"]["rawBytes"],
                    "the logged certificate",
                )?,
            )
        }
        _ => return Err(bad("unknown hashedrekord apiVersion")),
    };
    if digest != Digest::from_sha256(logged.sha256) {
        return Err(bad("it logs another artifact digest"));
    }
    if signature != logged.signature {
        return Err(bad("it logs another signature"));
    }
    if certificate != logged.certificate {
        return Err(bad("it logs another certificate"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigstore::fixtures;

    fn check(case: &str) -> Result<(), ProofError> {
        let b = fixtures::json(&format!("conformance/{case}/bundle.sigstore.json"));
        let artifact = std::fs::read(fixtures::dir().join("conformance/a.txt")).unwrap();
        let sha256 = crate::sigstore::sha256(&[&artifact]);
        let vm = &b["verificationMaterial"];
        let certificate = b64(&vm["certificate"]["rawBytes"], "certificate").unwrap();
        let signature = b64(&b["messageSignature"]["signature"], "signature").unwrap();
        let body = b64(&vm["tlogEntries"][0]["canonicalizedBody"], "body").unwrap();
        check_hashedrekord(
            &body,
            &Logged {
                sha256: &sha256,
                signature: &signature,
                certificate: &certificate,
            },
        )
    }

    #[test]
    fn conformance_entries() {
        check("happy-path-v0.3").unwrap();
        check("rekor2-happy-path").unwrap();
        for (case, why) in [
            (
                "wrong-hashedrekord-artifact_fail",
                "another artifact digest",
            ),
            ("wrong-hashedrekord-cert-and-sig_fail", "another signature"),
            ("wrong-hashedrekord-entry_fail", "another"),
        ] {
            let e = check(case).expect_err(case);
            assert!(e.0.contains(why), "{case}: {e}");
        }
    }

    #[test]
    fn malformed_bodies() {
        let logged = Logged {
            sha256: &[0; 32],
            signature: b"s",
            certificate: b"c",
        };
        for body in [
            &b"not json"[..],
            br#"{"kind":"rekord","apiVersion":"0.0.1"}"#,
            br#"{"kind":"hashedrekord","apiVersion":"9"}"#,
            br#"{"kind":"hashedrekord","apiVersion":"0.0.1","spec":{"data":{"hash":{"algorithm":"sha256","value":"zz"}}}}"#,
            br#"{"kind":"hashedrekord","apiVersion":"0.0.2","spec":{"hashedRekordV002":{"data":{"algorithm":"SHA2_384"}}}}"#,
        ] {
            assert!(check_hashedrekord(body, &logged).is_err());
        }
        // 64 bytes that are not 64 characters (a two-byte character
        // across a hex pair): refused, not a panic.
        let odd = format!(
            r#"{{"kind":"hashedrekord","apiVersion":"0.0.1","spec":{{"data":{{"hash":{{"algorithm":"sha256","value":"{}éa"}}}}}}}}"#,
            "a".repeat(61)
        );
        assert!(check_hashedrekord(odd.as_bytes(), &logged).is_err());
    }
}
