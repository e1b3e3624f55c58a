//! DSSE envelopes (secure-systems-lab/dsse v1.0.2) and their
//! Pre-Authentication Encoding, which is what is actually signed.
//!
//! [`sign`] produces an envelope; [`Envelope::parse`] reads one and
//! [`Envelope::open`] checks its payload type and signature count and
//! builds the PAE once; [`Opened`] then checks signatures against keys,
//! each try charged to the decision's [`Budget`], and hands out the payload
//! bytes it checked, so a caller never re-decodes the envelope.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use marque_keys::{Message, PublicKey, SigningKey};
use serde::{Deserialize, Serialize};

use crate::budget::Budget;

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
    /// More signatures than one envelope may carry.
    #[error("the envelope carries {found} signatures, more than the {limit} accepted")]
    TooManySignatures {
        /// Signatures in the envelope.
        found: usize,
        /// The most accepted.
        limit: usize,
    },
    /// The decision's work budget ran out while checking it.
    #[error("{0}")]
    OverBudget(#[from] crate::budget::OverBudget),
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

    /// Checks the payload type and the number of signatures (at most
    /// `budget.max_envelope_signatures()`, or the whole envelope is
    /// refused), decodes the payload and builds the PAE once. The result
    /// checks signatures against keys, hashing the PAE at most once for
    /// ECDSA, and charging `budget` for every try.
    pub fn open(&self, expected_type: &str, budget: &Budget) -> Result<Opened, DsseError> {
        let limit = budget.max_envelope_signatures();
        if self.signatures.len() > limit {
            return Err(DsseError::TooManySignatures {
                found: self.signatures.len(),
                limit,
            });
        }
        if self.payload_type != expected_type {
            return Err(DsseError::PayloadType {
                found: self.payload_type.clone(),
                expected: expected_type.to_owned(),
            });
        }
        let body = decode(&self.payload).ok_or(DsseError::PayloadEncoding)?;
        let message = Message::new(pae(&self.payload_type, &body));
        let mut signatures: Vec<(String, Vec<u8>)> = Vec::with_capacity(self.signatures.len());
        for s in &self.signatures {
            // An undecodable signature verifies with nothing; the same
            // signature twice is checked once.
            if let Some(sig) = decode(&s.sig)
                && !signatures.iter().any(|(_, seen)| *seen == sig)
            {
                signatures.push((s.keyid.clone(), sig));
            }
        }
        Ok(Opened {
            body,
            message,
            signatures,
        })
    }
}

/// An envelope whose payload type and size checks passed, ready to have
/// its signatures checked.
#[derive(Debug)]
pub struct Opened {
    body: Vec<u8>,
    message: Message<'static>,
    signatures: Vec<(String, Vec<u8>)>,
}

impl Opened {
    /// The payload (not yet authenticated: check a signer first).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The payload, taken.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The indexes of the distinct keys in `keys` that made a valid
    /// signature (a key that signed twice counts once).
    pub fn signers(
        &self,
        keys: &[PublicKey],
        budget: &Budget,
    ) -> Result<std::collections::BTreeSet<usize>, DsseError> {
        let mut found = std::collections::BTreeSet::new();
        for (hint, sig) in &self.signatures {
            for k in self.candidates(hint, sig, keys) {
                if !found.contains(&k) && self.verifies(&keys[k], sig, budget)? {
                    found.insert(k);
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The index of the first key in `keys` that made a valid signature.
    pub fn first_signer(
        &self,
        keys: &[PublicKey],
        budget: &Budget,
    ) -> Result<Option<usize>, DsseError> {
        for (hint, sig) in &self.signatures {
            for k in self.candidates(hint, sig, keys) {
                if self.verifies(&keys[k], sig, budget)? {
                    return Ok(Some(k));
                }
            }
        }
        Ok(None)
    }

    /// The signer a certificate names, once the certificate was accepted:
    /// some signature must be by its key.
    pub fn certified_signer(
        &self,
        cert: &marque_keys::certificate::SignerCertificate,
        accepted: crate::verify::AcceptedCertificate,
        budget: &Budget,
    ) -> Result<(String, Option<String>), String> {
        match self.first_signer(std::slice::from_ref(cert.public_key()), budget) {
            Ok(Some(_)) => Ok((accepted.identity, Some(accepted.serial))),
            Ok(None) => Err("the signature was not made with the certificate's key".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The keys worth trying for one signature: the key its `keyid` names,
    /// when that is one of `keys` (an unauthenticated hint, used only to
    /// try fewer keys), else every key whose algorithm makes signatures of
    /// this shape. Nothing is hashed for a signature no key could make.
    fn candidates<'a>(
        &self,
        hint: &str,
        sig: &'a [u8],
        keys: &'a [PublicKey],
    ) -> impl Iterator<Item = usize> + 'a {
        let named = (!hint.is_empty())
            .then(|| keys.iter().position(|k| k.key_id().as_str() == hint))
            .flatten();
        (0..keys.len())
            .filter(move |&i| named.is_none_or(|n| n == i))
            .filter(move |&i| keys[i].could_have_made(sig))
    }

    fn verifies(&self, key: &PublicKey, sig: &[u8], budget: &Budget) -> Result<bool, DsseError> {
        budget.spend(self.message.cost(key) + crate::budget::PER_SIGNATURE)?;
        Ok(key.verify_message(&self.message, sig).is_ok())
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

    fn verify(env: &Envelope, t: &str, keys: &[PublicKey]) -> Result<(Vec<u8>, usize), DsseError> {
        let budget = Budget::default_for_one_decision();
        let opened = env.open(t, &budget)?;
        match opened.first_signer(keys, &budget)? {
            Some(k) => Ok((opened.into_body(), k)),
            None => Err(DsseError::NoTrustedKey),
        }
    }

    #[test]
    fn sign_verify_and_refusals() {
        let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let other = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let bytes = sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &key).unwrap();
        let env = Envelope::parse(&bytes).unwrap();
        let keys = [other.public_key().clone(), key.public_key().clone()];
        assert_eq!(
            verify(&env, IN_TOTO_PAYLOAD_TYPE, &keys).unwrap(),
            (b"{}".to_vec(), 1)
        );
        assert_eq!(
            verify(&env, IN_TOTO_PAYLOAD_TYPE, &keys[..1]),
            Err(DsseError::NoTrustedKey)
        );
        assert!(matches!(
            verify(&env, "text/plain", &keys),
            Err(DsseError::PayloadType { .. })
        ));
        // The payload type is inside the signature: relabelling breaks it.
        let mut relabelled = env.clone();
        relabelled.payload_type = "application/vnd.in-toto.x+json".to_owned();
        assert_eq!(
            verify(&relabelled, "application/vnd.in-toto.x+json", &keys),
            Err(DsseError::NoTrustedKey)
        );
        // URL-safe base64 is accepted too.
        let mut url = env.clone();
        url.payload = URL_SAFE.encode(b"{}");
        url.signatures[0].sig = URL_SAFE.encode(STANDARD.decode(&env.signatures[0].sig).unwrap());
        assert!(verify(&url, IN_TOTO_PAYLOAD_TYPE, &keys).is_ok());
        assert!(matches!(
            Envelope::parse(b"[]"),
            Err(DsseError::Malformed(_))
        ));
    }

    /// The shape of the defect: many signatures over a large payload.
    /// Refused outright past the cap; under it, junk costs no hashing and
    /// well-formed fakes cost one hash in all (ECDSA), not one per
    /// signature and key.
    #[test]
    fn many_signatures_cost_one_hash() {
        let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let keys: Vec<PublicKey> = (0..4)
            .map(|_| {
                SigningKey::generate(Algorithm::EcdsaP256Sha256)
                    .unwrap()
                    .public_key()
                    .clone()
            })
            .chain([key.public_key().clone()])
            .collect();
        let body = vec![b'x'; 4 << 20];
        let good = sign_all(IN_TOTO_PAYLOAD_TYPE, &body, &[&key]).unwrap();
        let mut env = good.clone();
        let fake = STANDARD.encode(other_signature(&key));
        env.signatures = (0..2001)
            .map(|i| EnvelopeSignature {
                keyid: String::new(),
                sig: if i % 2 == 0 {
                    "AA==".into()
                } else {
                    fake.clone()
                },
            })
            .collect();
        let budget = Budget::default_for_one_decision();
        assert_eq!(
            env.open(IN_TOTO_PAYLOAD_TYPE, &budget).unwrap_err(),
            DsseError::TooManySignatures {
                found: 2001,
                limit: 16
            }
        );
        // 15 distinct well-formed fakes and junk, then the real one, last.
        env.signatures.clear();
        for i in 0..15u8 {
            let mut sig = other_signature(&key);
            let n = sig.len();
            sig[n - 1] ^= i + 1;
            env.signatures.push(EnvelopeSignature {
                keyid: String::new(),
                sig: STANDARD.encode(sig),
            });
        }
        env.signatures.push(good.signatures[0].clone());
        let opened = env.open(IN_TOTO_PAYLOAD_TYPE, &budget).unwrap();
        assert_eq!(opened.first_signer(&keys, &budget).unwrap(), Some(4));
        let pae_len = (body.len() + 64) as u64;
        let tries = 15 * 5 + 1;
        assert!(
            budget.spent() < pae_len + 64 + tries * crate::budget::PER_SIGNATURE,
            "spent {} for a {pae_len}-byte message",
            budget.spent()
        );
        // A budget that cannot pay for the hash refuses, and stays refused.
        let small = Budget::new(1 << 20, 16);
        let opened = env.open(IN_TOTO_PAYLOAD_TYPE, &small).unwrap();
        assert!(matches!(
            opened.signers(&keys, &small),
            Err(DsseError::OverBudget(_))
        ));
        assert!(small.exhausted().is_some());
    }

    fn other_signature(key: &SigningKey) -> Vec<u8> {
        key.sign(b"something else").unwrap()
    }
}
