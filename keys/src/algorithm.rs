//! Signature algorithms and the ring objects behind them.
//!
//! An [`Algorithm`] fixes curve, hash and signature encoding together, so a
//! key can never be used with the wrong hash: the algorithm is always taken
//! from the key, never from the signature or a caller's guess.
//!
//! What this module does not do: RSA (ring cannot generate RSA keys and
//! cosign's default is ECDSA P-256), P-521 (ring has no P-521), and
//! Ed25519ph (cosign's default for *imported* Ed25519 keys; marque signs
//! and verifies pure Ed25519).

use std::fmt;
use std::str::FromStr;

use der::asn1::ObjectIdentifier;
use der::{Tag, Tagged as _};
use ring::signature;
use spki::{AlgorithmIdentifier, AlgorithmIdentifierRef};

use crate::{Error, oid};

/// A signature algorithm: key type, curve, hash and signature encoding.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA on NIST P-256 over SHA-256, ASN.1 DER signatures. cosign's
    /// default and the only algorithm every cosign verifier accepts.
    EcdsaP256Sha256,
    /// ECDSA on NIST P-384 over SHA-384, ASN.1 DER signatures.
    EcdsaP384Sha384,
    /// Pure Ed25519 (RFC 8032), 64-byte signatures.
    Ed25519,
}

impl Algorithm {
    /// Every supported algorithm, in order of preference.
    pub const ALL: &'static [Algorithm] = &[
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
    ];

    /// The stable name: `ecdsa-p256-sha256`, `ecdsa-p384-sha384`, `ed25519`.
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// ring's verification algorithm for this key type.
    pub(crate) fn verification(&self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Algorithm::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
            Algorithm::Ed25519 => &signature::ED25519,
        }
    }

    /// ring's ECDSA signing algorithm, for the ECDSA variants.
    pub(crate) fn ecdsa_signing(&self) -> Option<&'static signature::EcdsaSigningAlgorithm> {
        match self {
            Algorithm::EcdsaP256Sha256 => Some(&signature::ECDSA_P256_SHA256_ASN1_SIGNING),
            Algorithm::EcdsaP384Sha384 => Some(&signature::ECDSA_P384_SHA384_ASN1_SIGNING),
            Algorithm::Ed25519 => None,
        }
    }

    /// For ECDSA: the curve's OID, scalar length and uncompressed point length.
    pub(crate) fn ec_curve(&self) -> Option<EcCurve> {
        match self {
            Algorithm::EcdsaP256Sha256 => Some(EcCurve {
                oid: oid::P256,
                scalar_len: 32,
                point_len: 65,
                ecdh: &ring::agreement::ECDH_P256,
            }),
            Algorithm::EcdsaP384Sha384 => Some(EcCurve {
                oid: oid::P384,
                scalar_len: 48,
                point_len: 97,
                ecdh: &ring::agreement::ECDH_P384,
            }),
            Algorithm::Ed25519 => None,
        }
    }

    /// The ECDSA algorithm for a named-curve OID, if supported.
    pub(crate) fn from_curve_oid(curve: &ObjectIdentifier) -> Option<Algorithm> {
        if *curve == oid::P256 {
            Some(Algorithm::EcdsaP256Sha256)
        } else if *curve == oid::P384 {
            Some(Algorithm::EcdsaP384Sha384)
        } else {
            None
        }
    }

    /// The algorithm of a key read from SubjectPublicKeyInfo or PKCS#8:
    /// an EC key on a supported named curve, or Ed25519 without parameters.
    /// `what` names the document in [`Error::Malformed`].
    pub(crate) fn from_algorithm_identifier(
        id: &AlgorithmIdentifierRef<'_>,
        what: &'static str,
    ) -> Result<Algorithm, Error> {
        if id.oid == oid::EC_PUBLIC_KEY {
            let curve = match id.parameters {
                Some(p) if p.tag() == Tag::ObjectIdentifier => {
                    ObjectIdentifier::try_from(p).map_err(|e| Error::malformed_by(what, e))?
                }
                Some(p) if p.tag() == Tag::Sequence => {
                    return Err(Error::UnsupportedAlgorithm {
                        algorithm: "EC key with explicit curve parameters".to_owned(),
                    });
                }
                _ => {
                    return Err(Error::malformed_because(
                        what,
                        "EC key without a named curve",
                    ));
                }
            };
            Algorithm::from_curve_oid(&curve).ok_or_else(|| Error::UnsupportedAlgorithm {
                algorithm: format!("EC curve {}", oid::describe(&curve)),
            })
        } else if id.oid == oid::ED25519 {
            // RFC 8410: parameters MUST be absent.
            match id.parameters {
                None => Ok(Algorithm::Ed25519),
                Some(_) => Err(Error::malformed_because(
                    what,
                    "Ed25519 key with algorithm parameters",
                )),
            }
        } else {
            Err(Error::UnsupportedAlgorithm {
                algorithm: oid::describe(&id.oid),
            })
        }
    }

    /// The `AlgorithmIdentifier` of this key type, as used in both
    /// SubjectPublicKeyInfo and PKCS#8: `{ id-ecPublicKey, namedCurve }`
    /// (RFC 5480) or `{ id-Ed25519 }` with absent parameters (RFC 8410).
    pub(crate) fn algorithm_identifier(&self) -> AlgorithmIdentifier<ObjectIdentifier> {
        match self.ec_curve() {
            Some(curve) => AlgorithmIdentifier {
                oid: oid::EC_PUBLIC_KEY,
                parameters: Some(curve.oid),
            },
            None => AlgorithmIdentifier {
                oid: oid::ED25519,
                parameters: None,
            },
        }
    }

    /// Length of the raw public key: the uncompressed EC point, or 32 bytes
    /// for Ed25519.
    pub(crate) fn raw_public_key_len(&self) -> usize {
        match self.ec_curve() {
            Some(curve) => curve.point_len,
            None => 32,
        }
    }
}

/// Facts about an ECDSA curve.
#[derive(Clone, Copy)]
pub(crate) struct EcCurve {
    pub(crate) oid: ObjectIdentifier,
    pub(crate) scalar_len: usize,
    pub(crate) point_len: usize,
    pub(crate) ecdh: &'static ring::agreement::Algorithm,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Parses the names [`Algorithm::name`] returns (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Algorithm, Error> {
        Algorithm::ALL
            .iter()
            .copied()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnsupportedAlgorithm {
                algorithm: format!("\"{s}\""),
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.to_string(), alg.name());
            assert_eq!(alg.name().parse::<Algorithm>().unwrap(), *alg);
        }
        assert_eq!(Algorithm::EcdsaP256Sha256.to_string(), "ecdsa-p256-sha256");
        assert_eq!(Algorithm::EcdsaP384Sha384.to_string(), "ecdsa-p384-sha384");
        assert_eq!(Algorithm::Ed25519.to_string(), "ed25519");
        assert!(matches!(
            "rsa-2048".parse::<Algorithm>(),
            Err(Error::UnsupportedAlgorithm { .. })
        ));
    }
}
