//! Public keys: reading (PEM, DER, certificates), writing (`cosign.pub`
//! form), key ids and signature verification.
//!
//! A [`PublicKey`] always holds a *canonical* SubjectPublicKeyInfo, rebuilt
//! from the algorithm and the raw key, so the same key read from a PEM
//! file, a DER blob or a certificate has the same bytes and the same
//! [`KeyId`]. EC points are checked to be on the curve when the key is
//! built, so an unusable key is refused at load time instead of failing
//! every verification later.
//!
//! What this module does not do: certificate validation. Reading a key out
//! of a certificate only takes its SubjectPublicKeyInfo; chains, validity
//! periods and extensions are the verifier's business.

use std::fmt;
use std::str::FromStr;

use der::asn1::BitStringRef;
use der::{Decode as _, Encode as _};
use ring::signature::UnparsedPublicKey;
use spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};

use crate::{Algorithm, Error, armor};

/// Identifies a public key: `sha256:<lowercase hex>` of the SHA-256 digest
/// of its DER SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The key id of a DER SubjectPublicKeyInfo. The bytes are hashed as
    /// given; [`PublicKey::key_id`] hashes the canonical encoding.
    pub fn of_spki_der(spki_der: &[u8]) -> KeyId {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        for b in digest.as_ref() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        KeyId(s)
    }

    /// The id as text, e.g. `sha256:3f2a…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = Error;

    /// Accepts exactly `sha256:` followed by 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<KeyId, Error> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::malformed_because("key id", "must start with \"sha256:\""))?;
        if hex.len() != 64 || !hex.bytes().all(|b| HEX.contains(&b)) {
            return Err(Error::malformed_because(
                "key id",
                "must be \"sha256:\" and 64 lowercase hex digits",
            ));
        }
        Ok(KeyId(s.to_owned()))
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A public key of a supported [`Algorithm`], ready to verify signatures.
///
/// Cheap to clone (a few hundred bytes) and to verify with: verification
/// builds no state beyond ring's `UnparsedPublicKey`, a pair of references.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    algorithm: Algorithm,
    /// Canonical DER SubjectPublicKeyInfo: `algorithm.algorithm_identifier()`
    /// and the raw key, which ends it.
    spki: Box<[u8]>,
    key_id: KeyId,
}

impl PublicKey {
    /// Reads a public key from PEM or DER.
    ///
    /// PEM input: the first block labelled `PUBLIC KEY` (PKIX
    /// SubjectPublicKeyInfo, as in `cosign.pub`) or `CERTIFICATE` (the
    /// certificate's SubjectPublicKeyInfo is taken; the certificate is not
    /// validated) is used. Input without a `-----BEGIN ` line is taken as a
    /// DER SubjectPublicKeyInfo, or failing that a DER certificate.
    pub fn from_pem(data: &[u8]) -> Result<PublicKey, Error> {
        if !armor::looks_like_pem(data) {
            return match PublicKey::from_spki_der(data) {
                Err(spki_err @ Error::Malformed { .. }) => {
                    // Maybe a DER certificate; report the SPKI error if not.
                    PublicKey::from_certificate_der(data).map_err(|_| spki_err)
                }
                other => other,
            };
        }
        let blocks = armor::parse_blocks(data)?;
        let keys = blocks.iter().filter(|b| b.label == "PUBLIC KEY").count();
        if keys > 1 {
            // One key per file: taking the first would silently trust fewer
            // keys than the file holds.
            return Err(Error::key_rejected(format!(
                "{keys} PUBLIC KEY blocks in one file; give one key per file"
            )));
        }
        for block in &blocks {
            match block.label.as_str() {
                "PUBLIC KEY" => return PublicKey::from_spki_der(&block.contents),
                "CERTIFICATE" => return PublicKey::from_certificate_der(&block.contents),
                _ => {}
            }
        }
        Err(Error::UnsupportedPem {
            label: blocks.first().map(|b| b.label.clone()).unwrap_or_default(),
        })
    }

    /// Reads a DER SubjectPublicKeyInfo (RFC 5280 §4.1, RFC 5480, RFC 8410).
    ///
    /// EC points are checked to lie on the curve, which costs one ECDH
    /// operation (tens of microseconds for P-256): load keys once and keep
    /// them, rather than per verification.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, Error> {
        const WHAT: &str = "public key (SubjectPublicKeyInfo DER)";
        // Strict DER: definite minimal lengths, no trailing bytes.
        let spki =
            SubjectPublicKeyInfoRef::from_der(der).map_err(|e| Error::malformed_by(WHAT, e))?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::malformed_because(WHAT, "BIT STRING with unused bits"))?;
        let algorithm = Algorithm::from_algorithm_identifier(&spki.algorithm, WHAT)?;
        PublicKey::from_raw(algorithm, raw)
    }

    /// Reads the SubjectPublicKeyInfo out of a DER X.509 certificate. The
    /// certificate itself is not validated.
    pub fn from_certificate_der(der: &[u8]) -> Result<PublicKey, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::malformed_by("certificate", e.to_string()))?;
        PublicKey::from_spki_der(cert.public_key().raw)
    }

    /// Builds a key from its algorithm and raw public key: the uncompressed
    /// SEC1 point (`04 || X || Y`) for ECDSA, 32 bytes for Ed25519.
    pub fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Result<PublicKey, Error> {
        if let Some(curve) = algorithm.ec_curve() {
            match raw.first() {
                Some(0x02 | 0x03) => {
                    return Err(Error::key_rejected(
                        "compressed EC points are not supported; use the uncompressed form",
                    ));
                }
                Some(0x04) if raw.len() == curve.point_len => {}
                _ => {
                    return Err(Error::key_rejected(format!(
                        "{algorithm} public key must be an uncompressed point of {} bytes",
                        curve.point_len
                    )));
                }
            }
            check_point_on_curve(curve.ecdh, raw)?;
        } else if raw.len() != algorithm.raw_public_key_len() {
            return Err(Error::key_rejected(format!(
                "{algorithm} public key must be {} bytes",
                algorithm.raw_public_key_len()
            )));
        }
        let spki = SubjectPublicKeyInfo {
            algorithm: algorithm.algorithm_identifier(),
            subject_public_key: BitStringRef::from_bytes(raw).map_err(|_| Error::Crypto)?,
        }
        .to_der()
        // Cannot fail for the key sizes checked above.
        .map_err(|_| Error::Crypto)?;
        let key_id = KeyId::of_spki_der(&spki);
        Ok(PublicKey {
            algorithm,
            spki: spki.into_boxed_slice(),
            key_id,
        })
    }

    /// The key in `cosign.pub` form: a `PUBLIC KEY` PEM block, 64-column
    /// base64, `\n` line endings, trailing newline.
    pub fn to_pem(&self) -> String {
        armor::encode("PUBLIC KEY", &self.spki)
    }

    /// The canonical DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The raw public key: uncompressed EC point, or 32 Ed25519 bytes.
    pub fn raw_public_key(&self) -> &[u8] {
        // The BIT STRING holding the key is the last thing in the SPKI.
        &self.spki[self.spki.len() - self.algorithm.raw_public_key_len()..]
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key's id, computed once when the key was built.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Verifies `signature` over `message`.
    ///
    /// ECDSA: `signature` is ASN.1 DER `Ecdsa-Sig-Value` over the SHA-256
    /// (P-256) or SHA-384 (P-384) digest of `message`, as cosign writes.
    /// Ed25519: pure Ed25519 over `message`. Returns
    /// [`Error::BadSignature`] on any mismatch or malformed signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        UnparsedPublicKey::new(self.algorithm.verification(), self.raw_public_key())
            .verify(message, signature)
            .map_err(|_| Error::BadSignature)
    }
}

/// Refuses EC points that are not on the curve (or are the identity).
///
/// ring validates peer keys in ECDH, and has no other public entry point
/// for point validation, so this runs one ephemeral key agreement. It costs
/// about as much as one signature verification and runs once per key load.
fn check_point_on_curve(
    ecdh: &'static ring::agreement::Algorithm,
    point: &[u8],
) -> Result<(), Error> {
    use ring::agreement;
    let rng = ring::rand::SystemRandom::new();
    let ephemeral =
        agreement::EphemeralPrivateKey::generate(ecdh, &rng).map_err(|_| Error::Crypto)?;
    agreement::agree_ephemeral(
        ephemeral,
        &agreement::UnparsedPublicKey::new(ecdh, point),
        |_| (),
    )
    .map_err(|_| Error::key_rejected("EC public key is not a valid point on its curve"))
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id.as_str())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The example key from formats.md §1.7 (a real cosign.pub).
    const COSIGN_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOvqGzUq0GETkGmBluD40fE+H6rDg
10yyXBk5HXXEm7+VBJMOdvo4Ldj8FiUZXKcxsk954utHal7r97i/OXjGQQ==
-----END PUBLIC KEY-----
";

    #[test]
    fn cosign_pub_round_trips_exactly() {
        let key = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::EcdsaP256Sha256);
        assert_eq!(key.to_pem(), COSIGN_PUB);
        // DER input gives the same key.
        let again = PublicKey::from_pem(key.spki_der()).unwrap();
        assert_eq!(again, key);
        assert_eq!(again.key_id(), key.key_id());
    }

    #[test]
    fn worked_example_signature_from_formats_md_verifies() {
        // formats.md §1.9: payload and signature made by cosign tooling.
        let payload = br#"{"critical":{"identity":{"docker-reference":"registry.example.com/team/app"},"image":{"docker-manifest-digest":"sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},"type":"cosign container image signature"},"optional":null}"#;
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::STANDARD
            .decode("MEYCIQDSUG1okk73DezGGyKUe/z+rdAbK1DBWTuxAtiM3Cq77QIhAMo5TCbfAqF1yb/nUyW0Bue+f3siRBKmKBHLJs+bYzzj")
            .unwrap();
        let key = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
        key.verify(payload, &sig).unwrap();
        assert!(matches!(
            key.verify(&payload[1..], &sig),
            Err(Error::BadSignature)
        ));
        assert!(matches!(key.verify(payload, &[]), Err(Error::BadSignature)));
    }

    #[test]
    fn key_id_format_and_parse() {
        let key = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
        let id = key.key_id().as_str();
        assert!(id.starts_with("sha256:"));
        assert_eq!(id.len(), 7 + 64);
        assert_eq!(id.parse::<KeyId>().unwrap(), *key.key_id());
        assert_eq!(KeyId::of_spki_der(key.spki_der()), *key.key_id());
        for bad in ["", "sha256:", "sha512:00", &id.to_uppercase(), &id[..70]] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn point_not_on_curve_is_rejected() {
        let key = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
        let mut raw = key.raw_public_key().to_vec();
        raw[64] ^= 1;
        assert!(matches!(
            PublicKey::from_raw(Algorithm::EcdsaP256Sha256, &raw),
            Err(Error::KeyRejected { .. })
        ));
        let mut compressed = raw[..33].to_vec();
        compressed[0] = 0x02;
        assert!(matches!(
            PublicKey::from_raw(Algorithm::EcdsaP256Sha256, &compressed),
            Err(Error::KeyRejected { .. })
        ));
        assert!(matches!(
            PublicKey::from_raw(Algorithm::Ed25519, &[0; 31]),
            Err(Error::KeyRejected { .. })
        ));
    }

    #[test]
    fn truncated_and_mutated_spki_never_panics() {
        let key = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
        let der = key.spki_der();
        for end in 0..der.len() {
            assert!(PublicKey::from_spki_der(&der[..end]).is_err());
            assert!(PublicKey::from_pem(&der[..end]).is_err());
        }
        for i in 0..der.len() {
            for bit in 0..8 {
                let mut m = der.to_vec();
                m[i] ^= 1 << bit;
                if let Ok(k) = PublicKey::from_spki_der(&m) {
                    // Only a flip inside the point could still parse, and then
                    // it is a different, valid point.
                    assert!(i >= der.len() - 64, "flip at {i} accepted");
                    assert_ne!(k, key);
                }
            }
        }
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert!(PublicKey::from_spki_der(&trailing).is_err());
    }

    #[test]
    fn ed25519_with_parameters_is_rejected() {
        // SEQUENCE { SEQUENCE { Ed25519, NULL }, BIT STRING }
        let spki = SubjectPublicKeyInfoRef {
            algorithm: spki::AlgorithmIdentifierRef {
                oid: crate::oid::ED25519,
                parameters: Some(der::asn1::Null.into()),
            },
            subject_public_key: BitStringRef::from_bytes(&[1; 32]).unwrap(),
        }
        .to_der()
        .unwrap();
        assert!(matches!(
            PublicKey::from_spki_der(&spki),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn canonical_spki_bytes_are_pinned() {
        // The exact DER every key id is a hash of: SEQUENCE { SEQUENCE {
        // algorithm, parameters }, BIT STRING { 0 unused bits, raw key } }.
        // Changing any of these bytes changes every KeyId.
        let prefixes: [(Algorithm, &[u8]); 3] = [
            (
                Algorithm::EcdsaP256Sha256,
                &[
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ],
            ),
            (
                Algorithm::EcdsaP384Sha384,
                &[
                    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
                ],
            ),
            (
                Algorithm::Ed25519,
                &[
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ],
            ),
        ];
        for (alg, prefix) in prefixes {
            let key = crate::SigningKey::generate(alg).unwrap();
            let public = key.public_key();
            let raw = public.raw_public_key();
            assert_eq!(raw.len(), alg.raw_public_key_len(), "{alg}");
            assert_eq!(public.spki_der(), [prefix, raw].concat(), "{alg}");
            assert_eq!(
                *public.key_id(),
                KeyId::of_spki_der(&[prefix, raw].concat()),
                "{alg}"
            );
        }
    }

    #[test]
    fn non_der_encodings_are_refused() {
        let key = PublicKey::from_pem(COSIGN_PUB.as_bytes()).unwrap();
        let der = key.spki_der();
        assert_eq!(&der[..2], &[0x30, 0x59]);
        let body = &der[2..];
        let cases: Vec<Vec<u8>> = vec![
            // non-minimal long-form lengths of the outer SEQUENCE
            [&[0x30, 0x81, 0x59][..], body].concat(),
            [&[0x30, 0x82, 0x00, 0x59][..], body].concat(),
            // indefinite length (BER, not DER)
            [&[0x30, 0x80][..], body, &[0, 0]].concat(),
            // trailing bytes after the SPKI
            [der, &[0][..]].concat(),
            [der, &[0x05, 0x00][..]].concat(),
            // empty
            Vec::new(),
        ];
        for case in &cases {
            assert!(
                matches!(PublicKey::from_spki_der(case), Err(Error::Malformed { .. })),
                "{case:02x?}"
            );
        }
        // BIT STRING with unused bits
        let mut unused = der.to_vec();
        unused[25] = 1;
        assert!(matches!(
            PublicKey::from_spki_der(&unused),
            Err(Error::Malformed { .. })
        ));
    }
}
