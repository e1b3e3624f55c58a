//! Just enough DER to read and write SubjectPublicKeyInfo and PKCS#8.
//!
//! This is a strict reader for the handful of structures this crate needs:
//! definite lengths only, minimal length encodings, single-byte tags, no
//! trailing bytes. It is not a general ASN.1 library: it does not know
//! about types, only tag/length/value triples. Inner `ECPrivateKey`
//! structures are read with the `sec1` crate; certificates with
//! `x509-parser`.

use crate::error::Detail;

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
#[cfg(test)]
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
/// `[0]` constructed, as used for PKCS#8 attributes.
pub(crate) const TAG_CONTEXT_0_CONSTRUCTED: u8 = 0xa0;
/// `[1]` primitive: RFC 5958 `publicKey [1] IMPLICIT BIT STRING`.
pub(crate) const TAG_CONTEXT_1_PRIMITIVE: u8 = 0x81;
/// `[1]` constructed: the explicit form some encoders (ring) write.
pub(crate) const TAG_CONTEXT_1_CONSTRUCTED: u8 = 0xa1;

/// Object identifiers (content octets only) that this crate recognises.
pub(crate) mod oid {
    /// 1.2.840.10045.2.1 id-ecPublicKey
    pub(crate) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// 1.2.840.10045.3.1.7 prime256v1 / secp256r1 / P-256
    pub(crate) const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// 1.3.132.0.34 secp384r1 / P-384
    pub(crate) const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    /// 1.3.101.112 Ed25519
    pub(crate) const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

    /// Names for OIDs we do not support, to make error messages useful.
    pub(crate) const KNOWN_NAMES: &[(&[u8], &str)] = &[
        (&[0x2b, 0x81, 0x04, 0x00, 0x23], "P-521 (secp521r1)"),
        (&[0x2b, 0x81, 0x04, 0x00, 0x0a], "secp256k1"),
        (&[0x2b, 0x81, 0x04, 0x00, 0x21], "P-224 (secp224r1)"),
        (
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01],
            "P-192 (prime192v1)",
        ),
        (
            &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07],
            "brainpoolP256r1",
        ),
        (
            &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0b],
            "brainpoolP384r1",
        ),
        (
            &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0d],
            "brainpoolP512r1",
        ),
        (
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            "RSA",
        ),
        (
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a],
            "RSASSA-PSS",
        ),
        (&[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01], "DSA"),
        (&[0x2b, 0x65, 0x71], "Ed448"),
        (&[0x2b, 0x65, 0x6e], "X25519"),
        (&[0x2b, 0x65, 0x6f], "X448"),
        (&[0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d], "SM2"),
    ];
}

/// `"<name> (<dotted OID>)"`, or just the dotted OID if we have no name.
pub(crate) fn describe_oid(oid: &[u8]) -> String {
    let dotted = dotted_oid(oid);
    match oid::KNOWN_NAMES.iter().find(|(o, _)| *o == oid) {
        Some((_, name)) => format!("{name} ({dotted})"),
        None => format!("OID {dotted}"),
    }
}

/// Formats OID content octets as dotted decimal; `"?"` if they are invalid.
pub(crate) fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u128> = Vec::new();
    let mut acc: u128 = 0;
    let mut in_arc = false;
    for &b in oid {
        if !in_arc && b == 0x80 {
            return "?".to_owned(); // non-minimal arc
        }
        if acc > (u128::MAX >> 7) {
            return "?".to_owned();
        }
        acc = (acc << 7) | u128::from(b & 0x7f);
        in_arc = b & 0x80 != 0;
        if !in_arc {
            arcs.push(acc);
            acc = 0;
        }
    }
    if in_arc || arcs.is_empty() {
        return "?".to_owned();
    }
    let first = arcs[0];
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut s = format!("{a}.{b}");
    for arc in &arcs[1..] {
        s.push('.');
        s.push_str(&arc.to_string());
    }
    s
}

/// A cursor over DER-encoded bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    /// The next tag, without consuming anything.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads one tag/length/value triple and returns `(tag, value)`.
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8]), Detail> {
        let (&tag, rest) = self
            .data
            .split_first()
            .ok_or(Detail("unexpected end of DER data"))?;
        if tag & 0x1f == 0x1f {
            return Err(Detail("multi-byte DER tags are not supported"));
        }
        let (&first, mut rest) = rest
            .split_first()
            .ok_or(Detail("unexpected end of DER data"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 {
                return Err(Detail("indefinite DER length"));
            }
            if n > 3 {
                return Err(Detail("DER length too large"));
            }
            if rest.len() < n {
                return Err(Detail("unexpected end of DER data"));
            }
            let (len_bytes, after) = rest.split_at(n);
            rest = after;
            if len_bytes[0] == 0 {
                return Err(Detail("non-minimal DER length"));
            }
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return Err(Detail("non-minimal DER length"));
            }
            len
        };
        if rest.len() < len {
            return Err(Detail("unexpected end of DER data"));
        }
        let (value, after) = rest.split_at(len);
        self.data = after;
        Ok((tag, value))
    }

    /// Reads a triple and checks its tag.
    pub(crate) fn read(&mut self, tag: u8) -> Result<&'a [u8], Detail> {
        match self.read_any()? {
            (t, value) if t == tag => Ok(value),
            _ => Err(Detail("unexpected DER tag")),
        }
    }

    /// Reads an optional triple: consumes it only if the tag matches.
    pub(crate) fn read_optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, Detail> {
        if self.peek_tag() == Some(tag) {
            self.read(tag).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads a small non-negative INTEGER (0..=127).
    pub(crate) fn read_small_uint(&mut self) -> Result<u8, Detail> {
        match self.read(TAG_INTEGER)? {
            [v] if *v < 0x80 => Ok(*v),
            _ => Err(Detail("unexpected INTEGER value")),
        }
    }

    /// Fails if any bytes are left.
    pub(crate) fn finish(&self) -> Result<(), Detail> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(Detail("trailing data after DER value"))
        }
    }
}

/// The contents of a BIT STRING with no unused bits.
pub(crate) fn bit_string_bytes(value: &[u8]) -> Result<&[u8], Detail> {
    match value.split_first() {
        Some((0, bytes)) => Ok(bytes),
        Some(_) => Err(Detail("BIT STRING with unused bits")),
        None => Err(Detail("empty BIT STRING")),
    }
}

/// Appends one tag/length/value triple to `out`.
pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 1000, 70000] {
            let value = vec![7u8; len];
            let mut out = Vec::new();
            write_tlv(&mut out, TAG_OCTET_STRING, &value);
            let mut r = Reader::new(&out);
            assert_eq!(r.read(TAG_OCTET_STRING).unwrap(), &value[..]);
            r.finish().unwrap();
        }
    }

    #[test]
    fn rejects_bad_lengths() {
        let cases: &[&[u8]] = &[
            &[],
            &[0x04],
            &[0x04, 0x80],                      // indefinite
            &[0x04, 0x81, 0x05, 1, 2, 3, 4, 5], // non-minimal
            &[0x04, 0x82, 0x00, 0x80],          // non-minimal
            &[0x04, 0x85, 1, 1, 1, 1, 1],       // too large
            &[0x04, 0x03, 1, 2],                // truncated
            &[0x1f, 0x01, 0x00],                // multi-byte tag
        ];
        for case in cases {
            assert!(Reader::new(case).read_any().is_err(), "{case:02x?}");
        }
    }

    #[test]
    fn every_prefix_of_a_structure_fails_cleanly() {
        let mut inner = Vec::new();
        write_tlv(&mut inner, TAG_INTEGER, &[1]);
        write_tlv(&mut inner, TAG_OCTET_STRING, &[9; 200]);
        let mut outer = Vec::new();
        write_tlv(&mut outer, TAG_SEQUENCE, &inner);
        for end in 0..outer.len() {
            let mut r = Reader::new(&outer[..end]);
            assert!(r.read(TAG_SEQUENCE).is_err());
        }
    }

    #[test]
    fn oid_names() {
        assert_eq!(dotted_oid(oid::P256), "1.2.840.10045.3.1.7");
        assert_eq!(dotted_oid(oid::P384), "1.3.132.0.34");
        assert_eq!(dotted_oid(oid::ED25519), "1.3.101.112");
        assert_eq!(
            describe_oid(&[0x2b, 0x81, 0x04, 0x00, 0x0a]),
            "secp256k1 (1.3.132.0.10)"
        );
        assert_eq!(describe_oid(&[0x2a, 0x03]), "OID 1.2.3");
        assert_eq!(dotted_oid(&[0x2a, 0x83]), "?");
        assert_eq!(dotted_oid(&[]), "?");
        assert_eq!(dotted_oid(&[0x80, 0x01]), "?");
        assert_eq!(dotted_oid(&[0xff; 40]), "?");
    }
}
