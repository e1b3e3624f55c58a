//! DSSE envelopes (secure-systems-lab/dsse v1.0.2) and their
//! Pre-Authentication Encoding, which is what is actually signed.
//!
//! [`sign`] produces an envelope; [`Envelope::parse`] reads one and
//! [`Envelope::verify`] checks its signatures over the PAE of the decoded
//! payload. The verified payload bytes are returned from `verify`, so a
//! caller never re-decodes the envelope after checking it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use marque_keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};

/// Media type of a DSSE envelope layer.
pub const MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A parsed envelope. Unknown fields are ignored, as the spec requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// What the payload is.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the payload (standard or URL-safe alphabet).
    pub payload: String,
    /// One or more signatures over the PAE.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// An unauthenticated hint; never used for trust.
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the signature.
    pub sig: String,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DsseError {
    /// Not a DSSE envelope.
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    /// The payload is not base64.
    #[error("the envelope payload is not base64")]
    PayloadEncoding,
    /// The payload type is not the one required.
    #[error("payloadType is {found:?}, expected {expected:?}")]
    PayloadType {
        /// The type found.
        found: String,
        /// The type required.
        expected: String,
    },
    /// No signature verifies with a trusted key.
    #[error("no envelope signature verifies with any given key")]
    NoTrustedKey,
}

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + payload_type.len() + 32);
    out.extend_from_slice(
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

/// Signs `body` as `payload_type` and returns the envelope's JSON bytes.
pub fn sign(
    payload_type: &str,
    body: &[u8],
    key: &SigningKey,
) -> Result<Vec<u8>, marque_keys::Error> {
    let sig = key.sign(&pae(payload_type, body))?;
    let envelope = Envelope {
        payload_type: payload_type.to_owned(),
        payload: STANDARD.encode(body),
        signatures: vec![EnvelopeSignature {
            keyid: String::new(),
            sig: STANDARD.encode(sig),
        }],
    };
    // Strings only: serialisation cannot fail.
    Ok(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Signs `body` as `payload_type` with every key in `keys` (one signature
/// each, `keyid` set to the key id as a hint) and returns the envelope.
pub fn sign_all(
    payload_type: &str,
    body: &[u8],
    keys: &[&SigningKey],
) -> Result<Envelope, marque_keys::Error> {
    let message = pae(payload_type, body);
    let signatures = keys
        .iter()
        .map(|k| {
            Ok(EnvelopeSignature {
                keyid: k.public_key().key_id().to_string(),
                sig: STANDARD.encode(k.sign(&message)?),
            })
        })
        .collect::<Result<Vec<_>, marque_keys::Error>>()?;
    Ok(Envelope {
        payload_type: payload_type.to_owned(),
        payload: STANDARD.encode(body),
        signatures,
    })
}

fn decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

impl Envelope {
    /// Parses envelope JSON.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, DsseError> {
        serde_json::from_slice(bytes).map_err(|e| DsseError::Malformed(e.to_string()))
    }

    /// Checks the payload type, then that some signature verifies over the
    /// PAE with one of `keys`. Returns the verified payload bytes and the
    /// index of the key that verified.
    pub fn verify(
        &self,
        expected_type: &str,
        keys: &[PublicKey],
    ) -> Result<(Vec<u8>, usize), DsseError> {
        self.verify_with(expected_type, |message, sig| {
            keys.iter().position(|k| k.verify(message, sig).is_ok())
        })
    }

    /// Checks the payload type, then every signature against `keys`.
    /// Returns the payload and the indexes of the distinct keys that made a
    /// valid signature (a key that signed twice counts once).
    pub fn verified_signers(
        &self,
        expected_type: &str,
        keys: &[PublicKey],
    ) -> Result<(Vec<u8>, std::collections::BTreeSet<usize>), DsseError> {
        let (body, message) = self.signed_message(expected_type)?;
        let mut signers = std::collections::BTreeSet::new();
        for s in &self.signatures {
            let Some(sig) = decode(&s.sig) else { continue };
            signers.extend(keys.iter().position(|k| k.verify(&message, &sig).is_ok()));
        }
        Ok((body, signers))
    }

    /// The payload and the PAE its signatures cover, once the payload type
    /// is the expected one.
    fn signed_message(&self, expected_type: &str) -> Result<(Vec<u8>, Vec<u8>), DsseError> {
        if self.payload_type != expected_type {
            return Err(DsseError::PayloadType {
                found: self.payload_type.clone(),
                expected: expected_type.to_owned(),
            });
        }
        let body = decode(&self.payload).ok_or(DsseError::PayloadEncoding)?;
        let message = pae(&self.payload_type, &body);
        Ok((body, message))
    }

    /// Checks the payload type, then offers each signature, with the PAE it
    /// must cover, to `check` (which verifies it, e.g. with a certificate's
    /// key). Returns the verified payload bytes and what `check` returned
    /// for the first signature it accepted.
    pub fn verify_with<T>(
        &self,
        expected_type: &str,
        mut check: impl FnMut(&[u8], &[u8]) -> Option<T>,
    ) -> Result<(Vec<u8>, T), DsseError> {
        let (body, message) = self.signed_message(expected_type)?;
        for s in &self.signatures {
            let Some(sig) = decode(&s.sig) else { continue };
            if let Some(found) = check(&message, &sig) {
                return Ok((body, found));
            }
        }
        Err(DsseError::NoTrustedKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marque_keys::Algorithm;

    #[test]
    fn pae_matches_the_spec_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn sign_verify_and_refusals() {
        let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let other = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let bytes = sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &key).unwrap();
        let env = Envelope::parse(&bytes).unwrap();
        let keys = [other.public_key().clone(), key.public_key().clone()];
        assert_eq!(
            env.verify(IN_TOTO_PAYLOAD_TYPE, &keys).unwrap(),
            (b"{}".to_vec(), 1)
        );
        assert_eq!(
            env.verify(IN_TOTO_PAYLOAD_TYPE, &keys[..1]),
            Err(DsseError::NoTrustedKey)
        );
        assert!(matches!(
            env.verify("text/plain", &keys),
            Err(DsseError::PayloadType { .. })
        ));
        // The payload type is inside the signature: relabelling breaks it.
        let mut relabelled = env.clone();
        relabelled.payload_type = "application/vnd.in-toto.x+json".to_owned();
        assert_eq!(
            relabelled.verify("application/vnd.in-toto.x+json", &keys),
            Err(DsseError::NoTrustedKey)
        );
        // URL-safe base64 is accepted too.
        let mut url = env.clone();
        url.payload = URL_SAFE.encode(b"{}");
        url.signatures[0].sig = URL_SAFE.encode(STANDARD.decode(&env.signatures[0].sig).unwrap());
        assert!(url.verify(IN_TOTO_PAYLOAD_TYPE, &keys).is_ok());
        assert!(matches!(
            Envelope::parse(b"[]"),
            Err(DsseError::Malformed(_))
        ));
    }
}
