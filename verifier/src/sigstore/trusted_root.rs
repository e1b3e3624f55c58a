//! `trusted_root.json` (`dev.sigstore.trustedroot`, protobuf-specs
//! `sigstore_trustroot.proto`): the transparency logs, certificate
//! authorities, CT logs and timestamp authorities a Sigstore deployment's
//! signatures are checked against, each with its validity window.
//!
//! Strict where trust is decided: a log hashed with anything but SHA-256 or
//! a key or certificate that does not decode refuses the whole root. A key
//! type marque cannot use (RSA CT logs in staging) is kept as
//! [`LogPublicKey::Unsupported`], so nothing verifies against it. A window
//! with no start contains no time (conformance
//! `trust-root-tlog-missing-validity-start_fail`); ends are inclusive.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use marque_keys::PublicKey;
use serde_json::Value;

use super::ProofError;
use super::checkpoint::LogKey;

/// The largest trusted root read.
pub const MAX_BYTES: usize = 1 << 20;

/// The media types accepted (the old form is what production and staging
/// publish).
pub const MEDIA_TYPES: &[&str] = &[
    "application/vnd.dev.sigstore.trustedroot.v0.2+json",
    "application/vnd.dev.sigstore.trustedroot.v0.1+json",
    "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
];

/// A closed time interval in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The first instant (none: the window contains nothing).
    pub start: Option<i64>,
    /// The last instant, included (none: open-ended).
    pub end: Option<i64>,
}

impl Validity {
    /// Whether `at` (milliseconds since the epoch) is inside the window.
    pub fn contains(&self, at: i64) -> bool {
        self.start.is_some_and(|s| s <= at) && self.end.is_none_or(|e| at <= e)
    }
}

/// A log's key, if marque can use it.
#[derive(Debug, Clone)]
pub enum LogPublicKey {
    /// A key marque verifies with.
    Supported(PublicKey),
    /// A key type marque does not verify (its `keyDetails`).
    Unsupported(String),
}

/// A transparency log or CT log.
#[derive(Debug, Clone)]
pub struct TransparencyLog {
    /// Its URL.
    pub base_url: String,
    /// Its id, as entries and SCTs name it.
    pub log_id: Vec<u8>,
    /// Its key.
    pub key: LogPublicKey,
    /// When its key may be used.
    pub valid: Validity,
}

impl TransparencyLog {
    /// The key that signs this log's checkpoints.
    pub fn checkpoint_key(&self) -> Result<LogKey, ProofError> {
        match &self.key {
            LogPublicKey::Supported(k) => LogKey::new(&self.base_url, k.clone()),
            LogPublicKey::Unsupported(kind) => Err(ProofError::new(format!(
                "log {}: its {kind} key is not supported",
                self.base_url
            ))),
        }
    }
}

/// A certificate or timestamp authority.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    /// Its URL.
    pub uri: String,
    /// Its chain, DER, the trust anchor last.
    pub chain: Vec<Vec<u8>>,
    /// When it may have issued.
    pub valid: Validity,
}

/// A parsed trusted root.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// Transparency logs (Rekor).
    pub tlogs: Vec<TransparencyLog>,
    /// Certificate transparency logs.
    pub ctlogs: Vec<TransparencyLog>,
    /// Certificate authorities (Fulcio).
    pub certificate_authorities: Vec<CertificateAuthority>,
    /// Timestamp authorities (RFC 3161).
    pub timestamp_authorities: Vec<CertificateAuthority>,
}

fn bad(why: impl std::fmt::Display) -> ProofError {
    ProofError::new(format!("trusted root: {why}"))
}

fn b64(v: &Value, what: &str) -> Result<Vec<u8>, ProofError> {
    v.as_str()
        .and_then(|s| STANDARD.decode(s).ok())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad(format!("{what} is not base64")))
}

fn list<'a>(v: &'a Value, field: &str) -> Result<&'a [Value], ProofError> {
    match &v[field] {
        Value::Null => Ok(&[]),
        Value::Array(a) => Ok(a),
        _ => Err(bad(format!("{field} is not a list"))),
    }
}

fn time(v: &Value, what: &str) -> Result<Option<i64>, ProofError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let t = humantime::parse_rfc3339(s)
                .map_err(|e| bad(format!("{what} {s:?} is not an RFC 3339 time ({e})")))?;
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| bad(format!("{what} is before 1970")))?
                .as_millis();
            i64::try_from(ms)
                .map(Some)
                .map_err(|_| bad(format!("{what} is too late")))
        }
        _ => Err(bad(format!("{what} is not a string"))),
    }
}

fn validity(v: &Value, what: &str) -> Result<Validity, ProofError> {
    Ok(Validity {
        start: time(&v["start"], &format!("{what} validFor.start"))?,
        end: time(&v["end"], &format!("{what} validFor.end"))?,
    })
}

fn tlog(v: &Value, section: &str) -> Result<TransparencyLog, ProofError> {
    let base_url = v["baseUrl"]
        .as_str()
        .ok_or_else(|| bad(format!("a {section} entry has no baseUrl")))?
        .to_owned();
    let what = format!("{section} {base_url}");
    if v["hashAlgorithm"].as_str() != Some("SHA2_256") {
        return Err(bad(format!("{what}: hashAlgorithm is not SHA2_256")));
    }
    let pk = &v["publicKey"];
    let der = b64(&pk["rawBytes"], &format!("{what} publicKey.rawBytes"))?;
    let key = match pk["keyDetails"].as_str().unwrap_or("(no keyDetails)") {
        "PKIX_ECDSA_P256_SHA_256" | "PKIX_ECDSA_P384_SHA_384" | "PKIX_ED25519" => {
            LogPublicKey::Supported(
                PublicKey::from_spki_der(&der).map_err(|e| bad(format!("{what}: {e}")))?,
            )
        }
        other => LogPublicKey::Unsupported(other.to_owned()),
    };
    Ok(TransparencyLog {
        log_id: b64(&v["logId"]["keyId"], &format!("{what} logId.keyId"))?,
        valid: validity(&pk["validFor"], &what)?,
        key,
        base_url,
    })
}

fn authority(v: &Value, section: &str) -> Result<CertificateAuthority, ProofError> {
    // The URI names the authority in errors only; trust is its chain.
    let uri = v["uri"].as_str().unwrap_or("(no uri)").to_owned();
    let what = format!("{section} {uri}");
    let chain = list(&v["certChain"], "certificates")?
        .iter()
        .map(|c| {
            let der = b64(&c["rawBytes"], &format!("{what} certificate"))?;
            marque_keys::certificate::check_der(&der)
                .map_err(|e| bad(format!("{what}: a certificate does not parse ({e})")))?;
            Ok(der)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(bad(format!("{what}: no certificates")));
    }
    Ok(CertificateAuthority {
        valid: validity(&v["validFor"], &what)?,
        chain,
        uri,
    })
}

impl TrustedRoot {
    /// Parses `trusted_root.json`.
    pub fn parse(bytes: &[u8]) -> Result<TrustedRoot, ProofError> {
        if bytes.len() > MAX_BYTES {
            return Err(bad(format!("larger than {MAX_BYTES} bytes")));
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let media_type = v["mediaType"].as_str().unwrap_or("(none)");
        if !MEDIA_TYPES.contains(&media_type) {
            return Err(bad(format!("unknown mediaType {media_type:?}")));
        }
        let logs = |field: &str| -> Result<Vec<TransparencyLog>, ProofError> {
            list(&v, field)?.iter().map(|t| tlog(t, field)).collect()
        };
        let authorities = |field: &str| -> Result<Vec<CertificateAuthority>, ProofError> {
            list(&v, field)?
                .iter()
                .map(|a| authority(a, field))
                .collect()
        };
        Ok(TrustedRoot {
            tlogs: logs("tlogs")?,
            ctlogs: logs("ctlogs")?,
            certificate_authorities: authorities("certificateAuthorities")?,
            timestamp_authorities: authorities("timestampAuthorities")?,
        })
    }

    /// The transparency log with this id.
    pub fn tlog(&self, log_id: &[u8]) -> Option<&TransparencyLog> {
        self.tlogs.iter().find(|t| t.log_id == log_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigstore::fixtures;

    fn read(rel: &str) -> TrustedRoot {
        TrustedRoot::parse(&std::fs::read(fixtures::dir().join(rel)).unwrap()).unwrap()
    }

    #[test]
    fn production_and_staging_roots() {
        let prod = read("trusted_root.production.json");
        assert_eq!(prod.tlogs.len(), 2);
        assert_eq!(prod.ctlogs.len(), 2);
        assert_eq!(prod.certificate_authorities.len(), 2);
        assert_eq!(prod.timestamp_authorities.len(), 1);
        let staging = read("trusted_root.staging.json");
        // Every checkpoint key id derived from a log's key is the start of
        // the log id the root gives it: ECDSA (Rekor v1, hash of the SPKI)
        // and Ed25519 (Rekor v2, the signed-note hash), on real data.
        let mut ed25519 = 0;
        for log in prod.tlogs.iter().chain(&staging.tlogs) {
            let key = log.checkpoint_key().unwrap();
            assert_eq!(key.key_id, log.log_id[..4], "{}", log.base_url);
            ed25519 += usize::from(key.key.algorithm() == marque_keys::Algorithm::Ed25519);
        }
        assert!(ed25519 >= 2);
        // Staging's RSA CT log is kept, unusable.
        assert!(
            staging.ctlogs.iter().any(
                |l| matches!(&l.key, LogPublicKey::Unsupported(k) if k == "PKCS1_RSA_PKCS1V5")
            )
        );
        // Windows: the old Fulcio root ends at .999 ms, inclusive.
        let old = &prod.certificate_authorities[0];
        let end = old.valid.end.unwrap();
        assert!(old.valid.contains(end) && !old.valid.contains(end + 1));
        let v1 = prod.tlog(&prod.tlogs[0].log_id).unwrap();
        assert!(v1.valid.contains(1_710_869_186_000) && !v1.valid.contains(0));
    }

    #[test]
    fn a_log_without_a_start_is_never_valid() {
        let root =
            read("conformance/trust-root-tlog-missing-validity-start_fail/trusted_root.json");
        assert!(root.tlogs.iter().any(|t| t.valid.start.is_none()));
        assert!(
            root.tlogs
                .iter()
                .filter(|t| t.valid.start.is_none())
                .all(|t| !t.valid.contains(1_710_869_186_000))
        );
        read("conformance/trust-root-tlog-validity-end-inclusive/trusted_root.json");
    }

    #[test]
    fn refused_roots() {
        let good: Value = fixtures::json("trusted_root.production.json");
        let refuse = |edit: &dyn Fn(&mut Value), why: &str| {
            let mut v = good.clone();
            edit(&mut v);
            let e = TrustedRoot::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(e.0.contains(why), "{e}");
        };
        refuse(&|v| v["mediaType"] = "application/json".into(), "mediaType");
        refuse(
            &|v| v["tlogs"][0]["hashAlgorithm"] = "SHA2_384".into(),
            "hashAlgorithm",
        );
        refuse(
            &|v| v["tlogs"][0]["publicKey"]["rawBytes"] = "!!".into(),
            "rawBytes",
        );
        refuse(
            &|v| v["tlogs"][0]["publicKey"]["rawBytes"] = "AAAA".into(),
            "rekor.sigstore.dev",
        );
        refuse(&|v| v["tlogs"][0]["logId"] = Value::Null, "logId");
        refuse(
            &|v| v["tlogs"][0]["publicKey"]["validFor"]["start"] = "yesterday".into(),
            "RFC 3339",
        );
        refuse(
            &|v| {
                v["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"] =
                    "AAAA".into()
            },
            "does not parse",
        );
        refuse(
            &|v| {
                v["certificateAuthorities"][0]["certChain"]["certificates"] = serde_json::json!([])
            },
            "no certificates",
        );
        refuse(&|v| v["tlogs"] = "x".into(), "not a list");
        assert!(TrustedRoot::parse(b"not json").is_err());
        assert!(TrustedRoot::parse(&vec![b' '; MAX_BYTES + 1]).is_err());
    }
}
