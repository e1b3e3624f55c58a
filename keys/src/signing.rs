//! Private keys: generating, loading from PKCS#8 or SEC1, signing, and
//! writing out.
//!
//! Whatever form a key arrives in, a [`SigningKey`] keeps it as a canonical
//! PKCS#8 v1 document, byte-compatible with Go's
//! `x509.MarshalPKCS8PrivateKey`, because that is what cosign decrypts and
//! parses:
//!
//! * ECDSA: `PrivateKeyInfo { 0, {id-ecPublicKey, curve}, ECPrivateKey { 1,
//!   d (padded to the curve size), [1] public point } }`, the curve named
//!   only in the outer algorithm identifier.
//! * Ed25519: `PrivateKeyInfo { 0, {id-Ed25519}, OCTET STRING { seed } }`
//!   (RFC 8410; the v2 form with an embedded public key, which ring
//!   generates, is converted).
//!
//! The PKCS#8 bytes live in a [`Zeroizing`] buffer. ring's own key objects
//! and the document ring returns from ECDSA key generation are not zeroized
//! on drop; nothing here can change that.
//!
//! What this module does not do: encrypted files (see
//! [`crate::PrivateKeyFile`]), RSA, or signing with a hash chosen by the
//! caller.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use zeroize::Zeroizing;

use crate::der::{self, Reader, oid};
use crate::{Algorithm, Error, PublicKey, armor};

/// A private key that can sign, with its public key.
pub struct SigningKey {
    pair: Pair,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicKey,
    rng: SystemRandom,
}

enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// Generates a new key from the system's random number generator.
    pub fn generate(algorithm: Algorithm) -> Result<SigningKey, Error> {
        let rng = SystemRandom::new();
        match algorithm.ecdsa_signing() {
            Some(signing) => {
                let doc = EcdsaKeyPair::generate_pkcs8(signing, &rng).map_err(|_| Error::Crypto)?;
                SigningKey::from_pkcs8_der(doc.as_ref())
            }
            None => {
                let mut seed = Zeroizing::new([0u8; 32]);
                rng.fill(&mut seed[..]).map_err(|_| Error::Crypto)?;
                SigningKey::from_ed25519_seed(&seed[..], None)
            }
        }
    }

    /// Loads a DER PKCS#8 `PrivateKeyInfo` (v1 or v2, RFC 5208 / 5958):
    /// ECDSA P-256 or P-384 with the public key embedded, or Ed25519.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, Error> {
        const WHAT: &str = "PKCS#8 private key";
        let bad = |d| Error::malformed_by(WHAT, d);

        let mut outer = Reader::new(der);
        let info = outer.read(der::TAG_SEQUENCE).map_err(bad)?;
        outer.finish().map_err(bad)?;
        let mut r = Reader::new(info);
        let version = r.read_small_uint().map_err(bad)?;
        if version > 1 {
            return Err(Error::malformed_because(WHAT, "unknown PKCS#8 version"));
        }
        let alg_id = r.read(der::TAG_SEQUENCE).map_err(bad)?;
        let private_key = r.read(der::TAG_OCTET_STRING).map_err(bad)?;
        r.read_optional(der::TAG_CONTEXT_0_CONSTRUCTED)
            .map_err(bad)?; // attributes
        let public_key = match r.peek_tag() {
            Some(der::TAG_CONTEXT_1_PRIMITIVE) => Some(
                der::bit_string_bytes(r.read(der::TAG_CONTEXT_1_PRIMITIVE).map_err(bad)?)
                    .map_err(bad)?,
            ),
            Some(der::TAG_CONTEXT_1_CONSTRUCTED) => {
                let mut inner = Reader::new(r.read(der::TAG_CONTEXT_1_CONSTRUCTED).map_err(bad)?);
                let bits = inner.read(der::TAG_BIT_STRING).map_err(bad)?;
                inner.finish().map_err(bad)?;
                Some(der::bit_string_bytes(bits).map_err(bad)?)
            }
            _ => None,
        };
        r.finish().map_err(bad)?;
        if version == 0 && public_key.is_some() {
            return Err(Error::malformed_because(
                WHAT,
                "public key in a version 1 document",
            ));
        }

        let mut a = Reader::new(alg_id);
        let alg_oid = a.read(der::TAG_OID).map_err(bad)?;
        if alg_oid == oid::EC_PUBLIC_KEY {
            let curve = match a.peek_tag() {
                Some(der::TAG_OID) => a.read(der::TAG_OID).map_err(bad)?,
                Some(der::TAG_SEQUENCE) => {
                    return Err(Error::UnsupportedAlgorithm {
                        algorithm: "EC key with explicit curve parameters".to_owned(),
                    });
                }
                _ => {
                    return Err(Error::malformed_because(
                        WHAT,
                        "EC key without a named curve",
                    ));
                }
            };
            a.finish().map_err(bad)?;
            let algorithm =
                Algorithm::from_curve_oid(curve).ok_or_else(|| Error::UnsupportedAlgorithm {
                    algorithm: format!("EC curve {}", der::describe_oid(curve)),
                })?;
            SigningKey::from_ec_private_key(Some(algorithm), private_key, public_key)
        } else if alg_oid == oid::ED25519 {
            a.finish().map_err(bad)?;
            // CurvePrivateKey ::= OCTET STRING (the 32-byte seed)
            let mut inner = Reader::new(private_key);
            let seed = inner.read(der::TAG_OCTET_STRING).map_err(bad)?;
            inner.finish().map_err(bad)?;
            SigningKey::from_ed25519_seed(seed, public_key)
        } else {
            Err(Error::UnsupportedAlgorithm {
                algorithm: der::describe_oid(alg_oid),
            })
        }
    }

    /// Loads a DER SEC1 `ECPrivateKey` (RFC 5915, `EC PRIVATE KEY` in PEM),
    /// which must name its curve and contain its public key.
    pub fn from_sec1_der(der: &[u8]) -> Result<SigningKey, Error> {
        SigningKey::from_ec_private_key(None, der, None)
    }

    /// Shared by PKCS#8 and SEC1: `curve` comes from the PKCS#8 algorithm
    /// identifier if there is one; `outer_public` from a PKCS#8 v2 document.
    fn from_ec_private_key(
        curve: Option<Algorithm>,
        ec_private_key: &[u8],
        outer_public: Option<&[u8]>,
    ) -> Result<SigningKey, Error> {
        const WHAT: &str = "EC private key (SEC1 ECPrivateKey)";
        let key = sec1::EcPrivateKey::try_from(ec_private_key)
            .map_err(|e| Error::malformed_by(WHAT, e))?;
        let inner_curve = match key.parameters.and_then(|p| p.named_curve()) {
            Some(oid) => Some(Algorithm::from_curve_oid(oid.as_bytes()).ok_or_else(|| {
                Error::UnsupportedAlgorithm {
                    algorithm: format!("EC curve {}", der::describe_oid(oid.as_bytes())),
                }
            })?),
            None => None,
        };
        let algorithm = match (curve, inner_curve) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::key_rejected(
                    "PKCS#8 and the inner EC private key name different curves",
                ));
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                return Err(Error::malformed_because(
                    WHAT,
                    "the key does not name its curve",
                ));
            }
        };
        let public = match (key.public_key, outer_public) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::key_rejected(
                    "PKCS#8 and the inner EC private key hold different public keys",
                ));
            }
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => return Err(Error::MissingPublicKey),
        };
        let (Some(curve), Some(signing)) = (algorithm.ec_curve(), algorithm.ecdsa_signing()) else {
            return Err(Error::Crypto); // from_curve_oid only returns ECDSA algorithms
        };

        // Go and OpenSSL pad d to the curve size; some encoders strip
        // leading zeros. ring wants exactly the curve size.
        let d = key.private_key;
        if d.len() > curve.scalar_len || d.is_empty() {
            return Err(Error::key_rejected(format!(
                "{algorithm} private scalar must be {} bytes",
                curve.scalar_len
            )));
        }
        let mut scalar = Zeroizing::new(vec![0u8; curve.scalar_len]);
        scalar[curve.scalar_len - d.len()..].copy_from_slice(d);

        let public_key = PublicKey::from_raw(algorithm, public)?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(signing, &scalar, public, &rng)
            .map_err(|e| Error::key_rejected(rejection_reason(e)))?;
        let pkcs8 = canonical_ec_pkcs8(curve.oid, &scalar, public);
        Ok(SigningKey {
            pair: Pair::Ecdsa(pair),
            pkcs8,
            public: public_key,
            rng,
        })
    }

    fn from_ed25519_seed(seed: &[u8], public: Option<&[u8]>) -> Result<SigningKey, Error> {
        if seed.len() != 32 {
            return Err(Error::key_rejected("Ed25519 private key must be 32 bytes"));
        }
        let pair = match public {
            Some(p) => Ed25519KeyPair::from_seed_and_public_key(seed, p),
            None => Ed25519KeyPair::from_seed_unchecked(seed),
        }
        .map_err(|e| Error::key_rejected(rejection_reason(e)))?;
        let public_key = PublicKey::from_raw(Algorithm::Ed25519, pair.public_key().as_ref())?;
        // PrivateKeyInfo { 0, { id-Ed25519 }, OCTET STRING { OCTET STRING seed } }
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ]);
        pkcs8.extend_from_slice(seed);
        Ok(SigningKey {
            pair: Pair::Ed25519(pair),
            pkcs8,
            public: public_key,
            rng: SystemRandom::new(),
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`.
    ///
    /// ECDSA: ASN.1 DER signature over SHA-256 (P-256) or SHA-384 (P-384) of
    /// `message`, randomized, as cosign writes. Ed25519: pure Ed25519, 64
    /// bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        match &self.pair {
            Pair::Ecdsa(pair) => pair
                .sign(&self.rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| Error::Crypto),
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }

    /// The canonical PKCS#8 v1 DER (see the module docs). Secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key encrypted in cosign's format (`ENCRYPTED SIGSTORE PRIVATE
    /// KEY`, scrypt N=65536 r=8 p=1, NaCl secretbox), which `cosign sign
    /// --key` reads. An empty password is allowed, as in cosign.
    pub fn to_cosign_pem(&self, password: &[u8]) -> Result<String, Error> {
        crate::keyfile::encode_cosign_pem_with_params(
            &self.pkcs8,
            password,
            crate::keyfile::DEFAULT_SCRYPT_LOG_N,
        )
    }

    /// The key unencrypted, as a `PRIVATE KEY` (PKCS#8) PEM block. The
    /// returned string is secret and is not zeroized.
    pub fn to_pkcs8_pem(&self) -> String {
        armor::encode("PRIVATE KEY", &self.pkcs8)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm())
            .field("key_id", &self.public.key_id().as_str())
            .finish()
    }
}

fn rejection_reason(e: impl fmt::Display) -> String {
    // ring's reasons are CamelCase words such as "InconsistentComponents".
    let raw = e.to_string();
    let mut out = String::with_capacity(raw.len() + 4);
    for (i, c) in raw.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push(' ');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Go's `x509.MarshalPKCS8PrivateKey` layout for an EC key.
fn canonical_ec_pkcs8(curve_oid: &[u8], scalar: &[u8], public: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut bits = Vec::with_capacity(public.len() + 1);
    bits.push(0);
    bits.extend_from_slice(public);
    let mut public_field = Vec::new();
    der::write_tlv(&mut public_field, der::TAG_BIT_STRING, &bits);

    let mut ec = Zeroizing::new(Vec::with_capacity(160));
    der::write_tlv(&mut ec, der::TAG_INTEGER, &[1]);
    der::write_tlv(&mut ec, der::TAG_OCTET_STRING, scalar);
    der::write_tlv(&mut ec, der::TAG_CONTEXT_1_CONSTRUCTED, &public_field);
    let mut ec_seq = Zeroizing::new(Vec::with_capacity(ec.len() + 4));
    der::write_tlv(&mut ec_seq, der::TAG_SEQUENCE, &ec);

    let mut alg = Vec::new();
    der::write_tlv(&mut alg, der::TAG_OID, oid::EC_PUBLIC_KEY);
    der::write_tlv(&mut alg, der::TAG_OID, curve_oid);

    let mut info = Zeroizing::new(Vec::with_capacity(ec_seq.len() + 40));
    der::write_tlv(&mut info, der::TAG_INTEGER, &[0]);
    der::write_tlv(&mut info, der::TAG_SEQUENCE, &alg);
    der::write_tlv(&mut info, der::TAG_OCTET_STRING, &ec_seq);
    let mut out = Zeroizing::new(Vec::with_capacity(info.len() + 4));
    der::write_tlv(&mut out, der::TAG_SEQUENCE, &info);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generate_sign_verify_all_algorithms() {
        for &alg in Algorithm::ALL {
            let key = SigningKey::generate(alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            let sig = key.sign(b"payload").unwrap();
            key.public_key().verify(b"payload", &sig).unwrap();
            assert!(matches!(
                key.public_key().verify(b"payloaD", &sig),
                Err(Error::BadSignature)
            ));
            let other = SigningKey::generate(alg).unwrap();
            assert!(matches!(
                other.public_key().verify(b"payload", &sig),
                Err(Error::BadSignature)
            ));
            // Reloading the canonical PKCS#8 gives the same key, same bytes.
            let again = SigningKey::from_pkcs8_der(key.pkcs8_der()).unwrap();
            assert_eq!(again.public_key(), key.public_key());
            assert_eq!(again.pkcs8_der(), key.pkcs8_der());
        }
    }

    #[test]
    fn canonical_pkcs8_is_what_ring_and_go_write() {
        // ring's generate_pkcs8 output for ECDSA already has Go's layout.
        let rng = SystemRandom::new();
        for alg in [Algorithm::EcdsaP256Sha256, Algorithm::EcdsaP384Sha384] {
            let doc = EcdsaKeyPair::generate_pkcs8(alg.ecdsa_signing().unwrap(), &rng).unwrap();
            let key = SigningKey::from_pkcs8_der(doc.as_ref()).unwrap();
            assert_eq!(key.pkcs8_der(), doc.as_ref());
            // and ring can load it back through its own PKCS#8 parser
            EcdsaKeyPair::from_pkcs8(alg.ecdsa_signing().unwrap(), key.pkcs8_der(), &rng).unwrap();
        }
        // Ed25519 v2 from ring becomes the 48-byte v1 form Go writes.
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = SigningKey::from_pkcs8_der(doc.as_ref()).unwrap();
        assert_eq!(key.pkcs8_der().len(), 48);
        let ring_pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        assert_eq!(
            key.public_key().raw_public_key(),
            ring_pair.public_key().as_ref()
        );
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.pkcs8_der()).unwrap();
    }

    #[test]
    fn ed25519_v2_with_wrong_public_key_is_rejected() {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let mut bytes = doc.as_ref().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            SigningKey::from_pkcs8_der(&bytes),
            Err(Error::KeyRejected { .. })
        ));
    }

    #[test]
    fn mismatched_ec_public_key_is_rejected() {
        let a = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let b = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
        let mut mixed = a.pkcs8_der().to_vec();
        let n = mixed.len();
        mixed[n - 65..].copy_from_slice(b.public_key().raw_public_key());
        assert!(matches!(
            SigningKey::from_pkcs8_der(&mixed),
            Err(Error::KeyRejected { .. })
        ));
    }

    #[test]
    fn debug_does_not_print_secrets() {
        let key = SigningKey::generate(Algorithm::Ed25519).unwrap();
        let dbg = format!("{key:?}");
        assert!(
            dbg.starts_with("SigningKey { algorithm: Ed25519, key_id: \"sha256:"),
            "{dbg}"
        );
        let seed_hex: String = key.pkcs8_der()[16..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!dbg.contains(&seed_hex));
    }

    #[test]
    fn mutated_pkcs8_never_panics() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(*alg).unwrap();
            let der = key.pkcs8_der();
            for end in 0..der.len() {
                assert!(SigningKey::from_pkcs8_der(&der[..end]).is_err());
            }
            for i in 0..der.len() {
                let mut m = der.to_vec();
                m[i] ^= 0x41;
                let _ = SigningKey::from_pkcs8_der(&m);
                let _ = SigningKey::from_sec1_der(&m);
            }
        }
    }

    #[test]
    fn rejection_reasons_read_as_words() {
        assert_eq!(
            rejection_reason("InconsistentComponents"),
            "inconsistent components"
        );
    }
}
