//! Content digests (`sha256:<64 lowercase hex>`).
//!
//! Only SHA-256 is accepted: it is what every registry and both peers use,
//! and the cosign signature format has no algorithm agility (the signature
//! covers a payload naming one digest; see docs/formats.md).

use std::fmt;
use std::str::FromStr;

use sha2::Sha256;

/// A validated `sha256:` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// A string that is not a `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex characters>")]
pub struct InvalidDigest(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::default();
        h.update(bytes);
        h.finish()
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part only.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The digest whose SHA-256 value is `hash`.
    pub fn from_sha256(hash: &[u8; 32]) -> Digest {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in hash {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Digest(s)
    }

    /// Whether `bytes` hash to this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        Digest::of(bytes) == *self
    }

    /// The cosign tag of a suffix kind: `sha256-<hex>.sig` for "sig".
    pub fn cosign_tag(&self, suffix: &str) -> String {
        format!("sha256-{}.{suffix}", self.hex())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Hashes content that arrives in pieces.
#[derive(Debug, Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Adds `chunk`.
    pub fn update(&mut self, chunk: &[u8]) {
        sha2::Digest::update(&mut self.0, chunk);
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        let hash: [u8; 32] = sha2::Digest::finalize(self.0).into();
        Digest::from_sha256(&hash)
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Digest, InvalidDigest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| InvalidDigest(s.to_owned()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidDigest(s.to_owned()));
        }
        Ok(Digest(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // formats.md §1.9: the worked example's payload digest.
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(d.matches(b""));
        assert!(!d.matches(b"x"));
    }

    #[test]
    fn parse_rejects_bad_forms() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cosign_tag() {
        let d = Digest::of(b"");
        assert_eq!(
            d.cosign_tag("sig"),
            "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.sig"
        );
    }
}
