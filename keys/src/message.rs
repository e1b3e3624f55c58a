//! A message that signatures are verified over, hashed at most once.
//!
//! ring hashes the whole message inside every `verify` call, before it
//! even parses the signature: checking N signatures against M keys hashes
//! the message N × M times, which a hostile envelope turns into minutes of
//! CPU (issue 13). A [`Message`] keeps its SHA-256 and SHA-384 digests once
//! computed, and [`PublicKey::verify_message`] verifies ECDSA signatures
//! over large messages against that digest (RustCrypto's `p256`/`p384`,
//! which, unlike ring, verify a precomputed digest), after the signature
//! has been parsed, so a malformed signature costs no hashing at all.
//!
//! Small messages (at most [`PREHASH_ABOVE`] bytes, every simple-signing
//! payload cosign writes) go to ring as before: their hashing is cheap.
//! Ed25519 cannot be verified from a digest of the message (the hash
//! covers the signature's R and the key as well), so each Ed25519 try
//! hashes the message; callers bound the tries, and
//! [`Message::cost`] tells them what each costs.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::{Algorithm, Error, PublicKey};

/// Messages longer than this are verified from a digest computed once.
pub const PREHASH_ABOVE: usize = 16 << 10;

/// The bytes a signature covers, with their digests computed on demand
/// and kept.
#[derive(Debug)]
pub struct Message<'a> {
    bytes: Cow<'a, [u8]>,
    sha256: OnceLock<[u8; 32]>,
    sha384: OnceLock<[u8; 48]>,
}

impl<'a> Message<'a> {
    /// A message over `bytes` (owned or borrowed).
    pub fn new(bytes: impl Into<Cow<'a, [u8]>>) -> Message<'a> {
        Message {
            bytes: bytes.into(),
            sha256: OnceLock::new(),
            sha384: OnceLock::new(),
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// SHA-256 of the message, computed once.
    pub fn sha256(&self) -> &[u8; 32] {
        self.sha256.get_or_init(|| {
            let d = ring::digest::digest(&ring::digest::SHA256, &self.bytes);
            let mut out = [0; 32];
            out.copy_from_slice(d.as_ref());
            out
        })
    }

    /// SHA-384 of the message, computed once.
    pub fn sha384(&self) -> &[u8; 48] {
        self.sha384.get_or_init(|| {
            let d = ring::digest::digest(&ring::digest::SHA384, &self.bytes);
            let mut out = [0; 48];
            out.copy_from_slice(d.as_ref());
            out
        })
    }

    /// Bytes of the message that verifying one signature with `key` would
    /// hash now: the whole message for Ed25519 and for small messages,
    /// nothing for a large message whose digest is already known.
    pub fn cost(&self, key: &PublicKey) -> u64 {
        let len = self.bytes.len() as u64;
        match key.algorithm() {
            Algorithm::Ed25519 => len,
            _ if self.bytes.len() <= PREHASH_ABOVE => len,
            Algorithm::EcdsaP256Sha256 if self.sha256.get().is_some() => 0,
            Algorithm::EcdsaP384Sha384 if self.sha384.get().is_some() => 0,
            _ => len,
        }
    }
}

impl PublicKey {
    /// Whether `signature` has the shape this key's algorithm produces (a
    /// DER `SEQUENCE` of a plausible length for ECDSA, 64 bytes for
    /// Ed25519): a cheap filter before any hashing, never a substitute
    /// for verification.
    pub fn could_have_made(&self, signature: &[u8]) -> bool {
        match self.algorithm() {
            Algorithm::Ed25519 => signature.len() == 64,
            Algorithm::EcdsaP256Sha256 => plausible_der(signature, 32),
            Algorithm::EcdsaP384Sha384 => plausible_der(signature, 48),
        }
    }

    /// Verifies `signature` over `message`, as [`PublicKey::verify`] does,
    /// hashing a large message at most once for all the keys and
    /// signatures it is checked with.
    pub fn verify_message(&self, message: &Message<'_>, signature: &[u8]) -> Result<(), Error> {
        if message.len() <= PREHASH_ABOVE || self.algorithm() == Algorithm::Ed25519 {
            return self.verify(message.bytes(), signature);
        }
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        let raw = self.raw_public_key();
        match self.algorithm() {
            Algorithm::EcdsaP256Sha256 => {
                let sig =
                    p256::ecdsa::Signature::from_der(signature).map_err(|_| Error::BadSignature)?;
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(raw)
                    .map_err(|_| Error::BadSignature)?;
                key.verify_prehash(message.sha256(), &sig)
                    .map_err(|_| Error::BadSignature)
            }
            Algorithm::EcdsaP384Sha384 => {
                let sig =
                    p384::ecdsa::Signature::from_der(signature).map_err(|_| Error::BadSignature)?;
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(raw)
                    .map_err(|_| Error::BadSignature)?;
                key.verify_prehash(message.sha384(), &sig)
                    .map_err(|_| Error::BadSignature)
            }
            Algorithm::Ed25519 => self.verify(message.bytes(), signature),
        }
    }
}

/// `30 len 02 … 02 …` within the size two scalars of `scalar_len` bytes
/// can take in DER.
fn plausible_der(sig: &[u8], scalar_len: usize) -> bool {
    sig.len() >= 8 && sig.len() <= 2 * (scalar_len + 1) + 6 + 2 && sig[0] == 0x30
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::SigningKey;

    /// The digest path (p256/p384) and ring agree on every signature:
    /// valid ones (low and high S, as ring produces both), signatures over
    /// another message, by another key, truncated, bit-flipped and junk.
    #[test]
    fn digest_path_and_ring_agree() {
        for algorithm in [Algorithm::EcdsaP256Sha256, Algorithm::EcdsaP384Sha384] {
            let key = SigningKey::generate(algorithm).unwrap();
            let other = SigningKey::generate(algorithm).unwrap();
            for round in 0..64u32 {
                let len = PREHASH_ABOVE + 1 + round as usize * 977;
                let bytes: Vec<u8> = (0..len).map(|i| (i as u32 * 31 + round) as u8).collect();
                let message = Message::new(bytes.clone());
                let good = key.sign(&bytes).unwrap();
                let mut candidates = vec![
                    good.clone(),
                    other.sign(&bytes).unwrap(),
                    key.sign(b"another message").unwrap(),
                    good[..good.len() - 1].to_vec(),
                    vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
                    Vec::new(),
                ];
                let mut flipped = good.clone();
                let at = 8 + round as usize % (good.len() - 8);
                flipped[at] ^= 1 << (round % 8);
                candidates.push(flipped);
                for (i, sig) in candidates.iter().enumerate() {
                    let ring = key.public_key().verify(&bytes, sig).is_ok();
                    let ours = key.public_key().verify_message(&message, sig).is_ok();
                    assert_eq!(ring, ours, "{algorithm} round {round} candidate {i}");
                    assert_eq!(ring, i == 0, "{algorithm} round {round} candidate {i}");
                }
            }
        }
    }

    #[test]
    fn large_messages_are_hashed_once() {
        let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let ed = SigningKey::generate(Algorithm::Ed25519).unwrap();
        let message = Message::new(vec![7; PREHASH_ABOVE * 4]);
        let len = message.len() as u64;
        assert_eq!(message.cost(key.public_key()), len);
        assert!(
            key.public_key()
                .verify_message(&message, &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
                .is_err()
        );
        // A malformed signature is refused before the message is hashed.
        assert!(
            key.public_key()
                .verify_message(&message, b"not DER")
                .is_err()
        );
        assert_eq!(message.cost(key.public_key()), 0);
        // Ed25519 hashes the message on every try, whatever was cached.
        assert_eq!(message.cost(ed.public_key()), len);
        let small = Message::new(&b"small"[..]);
        assert_eq!(small.cost(key.public_key()), 5);
        assert!(key.public_key().could_have_made(&key.sign(b"x").unwrap()));
        assert!(!key.public_key().could_have_made(&[0; 64]));
        assert!(ed.public_key().could_have_made(&ed.sign(b"x").unwrap()));
        assert!(!ed.public_key().could_have_made(&[0; 63]));
    }
}
