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

use der::asn1::{BitStringRef, ObjectIdentifier, OctetStringRef, SequenceRef};
use der::{Decode, DecodeValue, Encode, Header, Reader, Sequence, Tag, TagMode, TagNumber};
use pkcs8::{PrivateKeyInfo, PrivateKeyInfoRef};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

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
        let info = Pkcs8::from_der(der).map_err(|e| Error::malformed_by(WHAT, e))?;
        let public_key = match info.public_key {
            Some(bits) => Some(
                bits.as_bytes()
                    .ok_or_else(|| Error::malformed_because(WHAT, "BIT STRING with unused bits"))?,
            ),
            None => None,
        };
        match Algorithm::from_algorithm_identifier(&info.algorithm, WHAT)? {
            Algorithm::Ed25519 => {
                // CurvePrivateKey ::= OCTET STRING (the 32-byte seed)
                let seed = <&OctetStringRef>::from_der(info.private_key)
                    .map_err(|e| Error::malformed_by(WHAT, e))?;
                SigningKey::from_ed25519_seed(seed.as_bytes(), public_key)
            }
            ec @ (Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384) => {
                SigningKey::from_ec_private_key(Some(ec), info.private_key, public_key)
            }
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
            Some(oid) => Some(Algorithm::from_curve_oid(&oid).ok_or_else(|| {
                Error::UnsupportedAlgorithm {
                    algorithm: format!("EC curve {}", crate::oid::describe(&oid)),
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
        let pkcs8 = canonical_ec_pkcs8(algorithm, &scalar, public)?;
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
        let curve_private_key = encode_secret(&OctetStringRef::new(seed).map_err(encoding)?)?;
        let pkcs8 = pkcs8_v1(Algorithm::Ed25519, &curve_private_key)?;
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

/// The fields of a PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey` (RFC 5208,
/// RFC 5958) that this crate uses; attributes are skipped.
struct Pkcs8<'a> {
    algorithm: AlgorithmIdentifierRef<'a>,
    /// The contents of the `privateKey` OCTET STRING.
    private_key: &'a [u8],
    /// v2 only.
    public_key: Option<BitStringRef<'a>>,
}

impl<'a> Pkcs8<'a> {
    /// Reads a DER PKCS#8 document with the `pkcs8` crate, or failing that
    /// in old ring's v2 layout (see [`RingPkcs8V2`]). Errors are `pkcs8`'s.
    fn from_der(der: &'a [u8]) -> der::Result<Pkcs8<'a>> {
        match PrivateKeyInfoRef::from_der(der) {
            Ok(info) => Ok(Pkcs8 {
                algorithm: info.algorithm,
                private_key: info.private_key.as_bytes(),
                public_key: info.public_key,
            }),
            Err(err) => match RingPkcs8V2::from_der(der) {
                Ok(ring) => Ok(Pkcs8 {
                    algorithm: ring.algorithm,
                    private_key: ring.private_key.as_bytes(),
                    public_key: Some(ring.public_key),
                }),
                Err(_) => Err(err),
            },
        }
    }
}

/// PKCS#8 v2 as ring 0.16 and older wrote it (`Ed25519KeyPair::
/// generate_pkcs8`; ring issue #1464, fixed in 0.17, which still reads
/// it): RFC 5958's `OneAsymmetricKey`, except that the public key is
/// wrapped in an EXPLICIT `[1]` (`a1 23 03 21 00 …`) instead of RFC 5958's
/// `[1] IMPLICIT BIT STRING` (`81 21 00 …`). The `pkcs8` crate reads only
/// the RFC form, so this is the same structure built from the `der`
/// crate's types with that one tagging difference.
struct RingPkcs8V2<'a> {
    algorithm: AlgorithmIdentifierRef<'a>,
    private_key: &'a OctetStringRef,
    public_key: BitStringRef<'a>,
}

impl<'a> DecodeValue<'a> for RingPkcs8V2<'a> {
    type Error = der::Error;

    fn decode_value<R: Reader<'a>>(reader: &mut R, _header: Header) -> der::Result<Self> {
        if pkcs8::Version::decode(reader)? != pkcs8::Version::V2 {
            return Err(reader.error(Tag::Integer.value_error()));
        }
        let algorithm = reader.decode()?;
        let private_key = reader.decode()?;
        let _attributes =
            reader.context_specific::<&SequenceRef>(TagNumber(0), TagMode::Implicit)?;
        let public_key = reader
            .context_specific::<BitStringRef<'a>>(TagNumber(1), TagMode::Explicit)?
            .ok_or_else(|| reader.error(Tag::BitString.value_error()))?;
        // The der reader refuses anything left inside the SEQUENCE.
        Ok(RingPkcs8V2 {
            algorithm,
            private_key,
            public_key,
        })
    }
}

impl<'a> Sequence<'a> for RingPkcs8V2<'a> {}

/// Go's `x509.MarshalPKCS8PrivateKey` layout for an EC key: PKCS#8 v1 with
/// the curve named only in the outer algorithm identifier, around
/// `ECPrivateKey { 1, d, [1] public point }`.
fn canonical_ec_pkcs8(
    algorithm: Algorithm,
    scalar: &[u8],
    public: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let ec_private_key = encode_secret(&sec1::EcPrivateKey {
        private_key: scalar,
        parameters: None,
        public_key: Some(public),
    })?;
    pkcs8_v1(algorithm, &ec_private_key)
}

/// `PrivateKeyInfo { 0, algorithm identifier, OCTET STRING private_key }`.
fn pkcs8_v1(algorithm: Algorithm, private_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    encode_secret(&PrivateKeyInfo::<ObjectIdentifier, _, BitStringRef<'_>> {
        algorithm: algorithm.algorithm_identifier(),
        private_key: OctetStringRef::new(private_key).map_err(encoding)?,
        public_key: None,
    })
}

/// DER-encodes `value` straight into a buffer that is zeroized on drop, so
/// no unzeroized copy of a secret is left behind by reallocation.
fn encode_secret(value: &impl Encode) -> Result<Zeroizing<Vec<u8>>, Error> {
    let len = usize::try_from(value.encoded_len().map_err(encoding)?).map_err(encoding)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    let written = value.encode_to_slice(&mut out).map_err(encoding)?.len();
    if written != len {
        return Err(Error::Crypto);
    }
    Ok(out)
}

/// Encoding the structures above cannot fail for the key sizes this crate
/// accepts; if the encoder ever does, report it as a library failure.
fn encoding(_: der::Error) -> Error {
    Error::Crypto
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
    fn pkcs8_v2_in_both_public_key_taggings_is_read() {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        // ring 0.17, like OpenSSL and RFC 5958: `[1] IMPLICIT BIT STRING`.
        let rfc = doc.as_ref();
        assert_eq!(&rfc[48..51], &[0x81, 0x21, 0x00]);
        let from_rfc = SigningKey::from_pkcs8_der(rfc).unwrap();
        // ring 0.16 and older: `[1] { BIT STRING }`, EXPLICIT.
        let mut legacy = rfc.to_vec();
        legacy.splice(48..48, [0xa1, 0x23]);
        legacy[48 + 2] = 0x03;
        legacy[1] += 2;
        assert_eq!(&legacy[48..53], &[0xa1, 0x23, 0x03, 0x21, 0x00]);
        Ed25519KeyPair::from_pkcs8(&legacy).unwrap();
        let from_legacy = SigningKey::from_pkcs8_der(&legacy).unwrap();
        assert_eq!(from_legacy.pkcs8_der(), from_rfc.pkcs8_der());
        assert_eq!(from_legacy.public_key(), from_rfc.public_key());

        // Either form is refused as a v1 or v3 document, with trailing
        // bytes, or with a public key that has unused bits.
        for doc in [rfc, &legacy[..]] {
            assert_eq!(&doc[2..5], &[0x02, 0x01, 0x01]);
            for version in [0, 2] {
                let mut other = doc.to_vec();
                other[4] = version;
                assert!(matches!(
                    SigningKey::from_pkcs8_der(&other),
                    Err(Error::Malformed { .. })
                ));
            }
            let trailing = [doc, &[0][..]].concat();
            assert!(matches!(
                SigningKey::from_pkcs8_der(&trailing),
                Err(Error::Malformed { .. })
            ));
            let mut unused_bits = doc.to_vec();
            let at = doc.len() - 33;
            assert_eq!(unused_bits[at], 0);
            unused_bits[at] = 1;
            let last = unused_bits.len() - 1;
            unused_bits[last] &= 0xfe;
            assert!(matches!(
                SigningKey::from_pkcs8_der(&unused_bits),
                Err(Error::Malformed { .. })
            ));
        }
    }

    #[test]
    fn non_der_pkcs8_is_refused() {
        let key = SigningKey::generate(Algorithm::Ed25519).unwrap();
        let der = key.pkcs8_der();
        assert_eq!(&der[..2], &[0x30, 0x2e]);
        let body = &der[2..];
        for case in [
            [&[0x30, 0x81, 0x2e][..], body].concat(),
            [&[0x30, 0x80][..], body, &[0, 0]].concat(),
            [der, &[0][..]].concat(),
        ] {
            assert!(
                matches!(
                    SigningKey::from_pkcs8_der(&case),
                    Err(Error::Malformed { .. })
                ),
                "{case:02x?}"
            );
        }
        // A v1 document with a public key is refused.
        let mut with_public = der.to_vec();
        with_public.extend_from_slice(&[0x81, 0x21, 0x00]);
        with_public.extend_from_slice(key.public_key().raw_public_key());
        with_public[1] += 35;
        assert!(matches!(
            SigningKey::from_pkcs8_der(&with_public),
            Err(Error::Malformed { .. })
        ));
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
