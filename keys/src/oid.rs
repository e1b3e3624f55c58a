//! The object identifiers this crate recognises, and names for some it
//! does not, so that "unsupported algorithm" errors say what was found.
//!
//! DER itself (SubjectPublicKeyInfo, PKCS#8, SEC1) is read and written with
//! the RustCrypto `der`, `spki`, `pkcs8` and `sec1` crates; certificates
//! with `x509-parser`.

use der::asn1::ObjectIdentifier;

/// 1.2.840.10045.2.1 id-ecPublicKey
pub(crate) const EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// 1.2.840.10045.3.1.7 prime256v1 / secp256r1 / P-256
pub(crate) const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// 1.3.132.0.34 secp384r1 / P-384
pub(crate) const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// 1.3.101.112 Ed25519
pub(crate) const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Names for OIDs we do not support, to make error messages useful.
const KNOWN_NAMES: &[(ObjectIdentifier, &str)] = &[
    (
        ObjectIdentifier::new_unwrap("1.3.132.0.35"),
        "P-521 (secp521r1)",
    ),
    (ObjectIdentifier::new_unwrap("1.3.132.0.10"), "secp256k1"),
    (
        ObjectIdentifier::new_unwrap("1.3.132.0.33"),
        "P-224 (secp224r1)",
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.1"),
        "P-192 (prime192v1)",
    ),
    (
        ObjectIdentifier::new_unwrap("1.3.36.3.3.2.8.1.1.7"),
        "brainpoolP256r1",
    ),
    (
        ObjectIdentifier::new_unwrap("1.3.36.3.3.2.8.1.1.11"),
        "brainpoolP384r1",
    ),
    (
        ObjectIdentifier::new_unwrap("1.3.36.3.3.2.8.1.1.13"),
        "brainpoolP512r1",
    ),
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1"), "RSA"),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10"),
        "RSASSA-PSS",
    ),
    (ObjectIdentifier::new_unwrap("1.2.840.10040.4.1"), "DSA"),
    (ObjectIdentifier::new_unwrap("1.3.101.113"), "Ed448"),
    (ObjectIdentifier::new_unwrap("1.3.101.110"), "X25519"),
    (ObjectIdentifier::new_unwrap("1.3.101.111"), "X448"),
    (ObjectIdentifier::new_unwrap("1.2.156.10197.1.301"), "SM2"),
];

/// `"<name> (<dotted OID>)"`, or `"OID <dotted OID>"` if we have no name.
pub(crate) fn describe(oid: &ObjectIdentifier) -> String {
    match KNOWN_NAMES.iter().find(|(o, _)| o == oid) {
        Some((_, name)) => format!("{name} ({oid})"),
        None => format!("OID {oid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_names() {
        assert_eq!(P256.to_string(), "1.2.840.10045.3.1.7");
        assert_eq!(P384.to_string(), "1.3.132.0.34");
        assert_eq!(ED25519.to_string(), "1.3.101.112");
        assert_eq!(
            describe(&ObjectIdentifier::new_unwrap("1.3.132.0.10")),
            "secp256k1 (1.3.132.0.10)"
        );
        assert_eq!(
            describe(&ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1")),
            "RSA (1.2.840.113549.1.1.1)"
        );
        assert_eq!(
            describe(&ObjectIdentifier::new_unwrap("1.2.3")),
            "OID 1.2.3"
        );
    }

    #[test]
    fn oids_have_the_content_octets_of_the_old_tables() {
        // The content octets the hand-written tables held, so nothing was
        // renamed or renumbered in the move to const-oid.
        let ours: &[(&ObjectIdentifier, &[u8])] = &[
            (&EC_PUBLIC_KEY, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            (&P256, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
            (&P384, &[0x2b, 0x81, 0x04, 0x00, 0x22]),
            (&ED25519, &[0x2b, 0x65, 0x70]),
        ];
        for (oid, bytes) in ours {
            assert_eq!(oid.as_bytes(), *bytes, "{oid}");
        }
        let known: &[&[u8]] = &[
            &[0x2b, 0x81, 0x04, 0x00, 0x23],
            &[0x2b, 0x81, 0x04, 0x00, 0x0a],
            &[0x2b, 0x81, 0x04, 0x00, 0x21],
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01],
            &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07],
            &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0b],
            &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0d],
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a],
            &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01],
            &[0x2b, 0x65, 0x71],
            &[0x2b, 0x65, 0x6e],
            &[0x2b, 0x65, 0x6f],
            &[0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d],
        ];
        assert_eq!(KNOWN_NAMES.len(), known.len());
        for ((oid, name), bytes) in KNOWN_NAMES.iter().zip(known) {
            assert_eq!(oid.as_bytes(), *bytes, "{name}");
        }
    }
}
