//! Signed trust bundles: what a node enforces, for one segment.
//!
//! A bundle is a JSON document in a DSSE envelope (payload type
//! [`PAYLOAD_TYPE`]) signed by a threshold of bundle-signing keys. It holds
//! the policy (TOML text) and the files it names (keys, CA roots), the
//! revocations, the segment, a version and an expiry, and the signing keys
//! and threshold that the *next* version must satisfy — so signing keys
//! rotate through the bundles themselves, as TUF's root does.
//!
//! A node accepts a bundle ([`Accepted::accept`]) only if:
//! - a threshold of the keys it already trusts signed it (the previous
//!   bundle's signers, or the keys pinned at join for the first one), and a
//!   threshold of the bundle's own signers signed it too;
//! - its version is not lower than the last accepted one (rollback), which
//!   is persisted;
//! - it has not expired at the time taken once for this update (freeze);
//! - its segment is the node's.
//!
//! A bundle that fails changes nothing: the last good one stays in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use marque_keys::{PublicKey, SigningKey};
use serde::{Deserialize, Serialize};

use crate::artifact::dsse::{self, Envelope};

/// The DSSE payload type of a trust bundle.
pub const PAYLOAD_TYPE: &str = "application/vnd.marque.trust-bundle.v1+json";
/// Largest bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 4 << 20;

/// Why a bundle was refused or could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// Not a well-formed bundle.
    #[error("malformed trust bundle: {0}")]
    Malformed(String),
    /// The policy has errors (each with its file, line and field).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Policy(Vec<crate::policy::PolicyError>),
    /// Too few trusted signatures.
    #[error("trust bundle v{version}: {found} of {threshold} required signatures by {whose} keys")]
    Threshold {
        /// The bundle's version.
        version: u64,
        /// Valid distinct signatures found.
        found: usize,
        /// Required.
        threshold: usize,
        /// `trusted` (the previous bundle's) or `its own`.
        whose: &'static str,
    },
    /// A lower version than the one in force.
    #[error(
        "trust bundle v{offered} is older than v{current}, the one in force: refusing a rollback"
    )]
    Rollback {
        /// Offered.
        offered: u64,
        /// In force.
        current: u64,
    },
    /// The same version with other content.
    #[error(
        "trust bundle v{0} differs from the v{0} in force: refusing it (versions must increase)"
    )]
    SameVersionDifferent(u64),
    /// Expired at the update time.
    #[error("trust bundle v{version} expired at {expires} (now {now})")]
    Expired {
        /// The bundle's version.
        version: u64,
        /// Its expiry (Unix seconds).
        expires: u64,
        /// The update time (Unix seconds).
        now: u64,
    },
    /// For another segment.
    #[error("trust bundle is for segment {found:?}, this node is in {expected:?}")]
    WrongSegment {
        /// The bundle's segment.
        found: String,
        /// The node's.
        expected: String,
    },
    /// Local files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key problem.
    #[error(transparent)]
    Key(#[from] marque_keys::Error),
}

/// Who signs the next bundle, and how many of them must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signers {
    /// Public keys, PEM.
    pub keys: Vec<String>,
    /// Distinct signatures required.
    pub threshold: usize,
}

impl Signers {
    /// The keys, parsed (and refused when repeated, or when the threshold
    /// cannot be met).
    pub fn parse(&self) -> Result<Vec<PublicKey>, TrustError> {
        let keys = self
            .keys
            .iter()
            .map(|k| PublicKey::from_pem(k.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ids: Vec<_> = keys.iter().map(|k| k.key_id().to_string()).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != keys.len() {
            return Err(TrustError::Malformed(
                "a signing key is listed twice".into(),
            ));
        }
        if self.threshold == 0 || self.threshold > keys.len() {
            return Err(TrustError::Malformed(format!(
                "threshold {} with {} signing keys",
                self.threshold,
                keys.len()
            )));
        }
        Ok(keys)
    }
}

/// Revocations a bundle carries, beyond those in its policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    /// Image digests.
    #[serde(default)]
    pub digests: Vec<String>,
    /// Signing key ids.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Certificate serials.
    #[serde(default)]
    pub serials: Vec<String>,
    /// Removed node ids (the CA's denylist).
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// Whether `id` has the form the CA gives node ids: 26 characters of
/// `[a-z2-7]`. A removed-node entry of any other form would match no node
/// and leave the node it meant running, so it is refused instead.
pub fn is_node_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
}

/// A trust bundle's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Increases with every bundle for the segment.
    pub version: u64,
    /// The segment it is for.
    pub segment: String,
    /// Unix seconds after which it must not be used.
    pub expires: u64,
    /// The policy, TOML.
    pub policy: String,
    /// Files the policy names (relative path → content).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Revocations.
    #[serde(default)]
    pub revocations: Revocations,
    /// Who signs the next version (and co-signed this one).
    pub signers: Signers,
}

impl Bundle {
    /// The bundle's policy, with its files read from the bundle and its
    /// revocations added.
    pub fn policy(&self) -> Result<crate::policy::Policy, TrustError> {
        let base = Path::new("/bundle");
        let read = |p: &Path| {
            p.strip_prefix(base)
                .ok()
                .and_then(|rel| self.files.get(rel.to_str().unwrap_or_default()))
                .map(|t| t.as_bytes().to_vec())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        let mut policy =
            crate::policy::Policy::parse_with(&base.join("policy.toml"), &self.policy, &read)
                .map_err(TrustError::Policy)?;
        let r = &self.revocations;
        policy
            .revoke(&r.digests, &r.keys, &r.serials)
            .map_err(TrustError::Malformed)?;
        if let Some(bad) = r.nodes.iter().find(|n| !is_node_id(n)) {
            return Err(TrustError::Malformed(format!(
                "removed node {bad:?} is not a node id (26 characters of a-z and 2-7, as `marque ca node list` shows them)"
            )));
        }
        Ok(policy)
    }

    /// Signs the bundle with `keys` into a DSSE envelope (JSON bytes).
    pub fn sign(&self, keys: &[&SigningKey]) -> Result<Vec<u8>, TrustError> {
        let limit = crate::budget::DEFAULT_MAX_ENVELOPE_SIGNATURES;
        if keys.len() > limit {
            // Nodes refuse an envelope with more signatures than this.
            return Err(TrustError::Malformed(format!(
                "{} signing keys: a bundle carries at most {limit} signatures",
                keys.len()
            )));
        }
        let body = serde_json::to_vec(self).map_err(|e| TrustError::Malformed(e.to_string()))?;
        let envelope = dsse::sign_all(PAYLOAD_TYPE, &body, keys)?;
        serde_json::to_vec(&envelope).map_err(|e| TrustError::Malformed(e.to_string()))
    }
}

/// The work one bundle's signatures may cost: at most
/// [`crate::budget::DEFAULT_MAX_ENVELOPE_SIGNATURES`] signatures, and
/// hashing worth 128 bundles of the largest size (Ed25519 hashes the
/// message once per signature tried).
fn bundle_budget() -> crate::budget::Budget {
    crate::budget::Budget::new(
        128 * MAX_BUNDLE_BYTES,
        crate::budget::DEFAULT_MAX_ENVELOPE_SIGNATURES,
    )
}

/// Verifies `envelope` against `trusted` (and its own signers) without
/// any state: signatures only. Returns the bundle.
pub fn verify_signatures(envelope: &[u8], trusted: &Signers) -> Result<Bundle, TrustError> {
    if envelope.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(TrustError::Malformed(format!(
            "larger than {MAX_BUNDLE_BYTES} bytes"
        )));
    }
    let env = Envelope::parse(envelope).map_err(|e| TrustError::Malformed(e.to_string()))?;
    let trusted_keys = trusted.parse()?;
    // One PAE, hashed once, for both signer sets; a bounded number of
    // signatures and tries whatever the envelope holds.
    let budget = bundle_budget();
    let malformed = |e: dsse::DsseError| TrustError::Malformed(e.to_string());
    let opened = env.open(PAYLOAD_TYPE, &budget).map_err(malformed)?;
    let by_trusted = opened.signers(&trusted_keys, &budget).map_err(malformed)?;
    let bundle: Bundle =
        serde_json::from_slice(opened.body()).map_err(|e| TrustError::Malformed(e.to_string()))?;
    if by_trusted.len() < trusted.threshold {
        return Err(TrustError::Threshold {
            version: bundle.version,
            found: by_trusted.len(),
            threshold: trusted.threshold,
            whose: "trusted",
        });
    }
    // The new signers must also vouch for it: a rotation is signed by both
    // the old threshold and the new one.
    let own = bundle.signers.parse()?;
    let by_own = opened.signers(&own, &budget).map_err(malformed)?;
    if by_own.len() < bundle.signers.threshold {
        return Err(TrustError::Threshold {
            version: bundle.version,
            found: by_own.len(),
            threshold: bundle.signers.threshold,
            whose: "its own",
        });
    }
    Ok(bundle)
}

/// Validates `policy` (read from `policy_path`) and returns the key and CA
/// files it names, as the policy parser reads them, for bundling with it.
/// Names must be relative and stay inside the policy's directory; files
/// are at most 1 MiB of UTF-8 text.
pub fn policy_files(
    policy_path: &Path,
    policy: &str,
) -> Result<BTreeMap<String, String>, TrustError> {
    let base = policy_path.parent().unwrap_or(Path::new("."));
    let files = std::cell::RefCell::new(BTreeMap::new());
    let read = |path: &Path| -> std::io::Result<Vec<u8>> {
        let name = path
            .strip_prefix(base)
            .ok()
            .filter(|rel| {
                rel.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
            })
            .and_then(|rel| rel.to_str())
            .ok_or_else(|| {
                std::io::Error::other(
                    "a bundled policy must name its files relative to the policy, inside its directory",
                )
            })?;
        if std::fs::metadata(path)?.len() > 1 << 20 {
            return Err(std::io::Error::other("larger than 1 MiB"));
        }
        let text = std::fs::read_to_string(path)?;
        files.borrow_mut().insert(name.to_owned(), text.clone());
        Ok(text.into_bytes())
    };
    crate::policy::Policy::parse_with(policy_path, policy, &read).map_err(TrustError::Policy)?;
    Ok(files.into_inner())
}

/// What a node has accepted, kept in a directory: `bundle.json` (the
/// envelope in force) and `trust-state.json` (its version, and the signers
/// the next one must satisfy). Both are written atomically.
#[derive(Debug, Clone)]
pub struct Accepted {
    dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrustState {
    version: u64,
    signers: Signers,
    segment: String,
}

impl Accepted {
    /// The trust directory of a node.
    pub fn new(dir: &Path) -> Accepted {
        Accepted {
            dir: dir.to_owned(),
        }
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> TrustError {
        let path = path.to_owned();
        move |source| TrustError::Io {
            path: path.clone(),
            source,
        }
    }

    fn state(&self) -> Result<Option<TrustState>, TrustError> {
        let path = self.dir.join("trust-state.json");
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| TrustError::Malformed(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path)(e)),
        }
    }

    /// Pins the signers the first bundle must satisfy (from the join
    /// response), unless a bundle was already accepted.
    pub fn pin(&self, signers: &Signers, segment: &str) -> Result<(), TrustError> {
        signers.parse()?;
        if self.state()?.is_some() {
            return Ok(());
        }
        self.write_state(&TrustState {
            version: 0,
            signers: signers.clone(),
            segment: segment.to_owned(),
        })
    }

    fn write_state(&self, state: &TrustState) -> Result<(), TrustError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let path = self.dir.join("trust-state.json");
        let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
        crate::registry::layout::write_atomically(&self.dir, &path, &bytes).map_err(self.io(&path))
    }

    /// The version in force according to the trust state (0: none), without
    /// verifying the bundle.
    pub fn version(&self) -> Result<u64, TrustError> {
        Ok(self.state()?.map_or(0, |s| s.version))
    }

    /// The file holding the envelope in force.
    pub fn bundle_path(&self) -> PathBuf {
        self.dir.join("bundle.json")
    }

    /// The bundle in force, re-verified from disk against the signers that
    /// were trusted when it was accepted (a corrupted file is refused).
    pub fn current(&self) -> Result<Option<Bundle>, TrustError> {
        let Some(state) = self.state()? else {
            return Ok(None);
        };
        if state.version == 0 {
            return Ok(None);
        }
        let path = self.dir.join("bundle.json");
        let bytes = std::fs::read(&path).map_err(self.io(&path))?;
        let env = Envelope::parse(&bytes).map_err(|e| TrustError::Malformed(e.to_string()))?;
        let keys = state.signers.parse()?;
        let budget = bundle_budget();
        let malformed = |e: dsse::DsseError| TrustError::Malformed(e.to_string());
        let opened = env.open(PAYLOAD_TYPE, &budget).map_err(malformed)?;
        let signers = opened.signers(&keys, &budget).map_err(malformed)?;
        let bundle: Bundle = serde_json::from_slice(opened.body())
            .map_err(|e| TrustError::Malformed(e.to_string()))?;
        if signers.len() < state.signers.threshold || bundle.version != state.version {
            return Err(TrustError::Malformed(format!(
                "{}: does not match the accepted trust state (corrupted or replaced)",
                path.display()
            )));
        }
        Ok(Some(bundle))
    }

    /// Accepts `envelope` if it passes every check at `now` (Unix seconds,
    /// taken once per update) and returns it; otherwise changes nothing and
    /// says why. `Ok(None)`: the same bundle is already in force.
    pub fn accept(&self, envelope: &[u8], now: u64) -> Result<Option<Bundle>, TrustError> {
        let state = self.state()?.ok_or_else(|| {
            TrustError::Malformed("no bundle signers pinned for this node".into())
        })?;
        let bundle = verify_signatures(envelope, &state.signers)?;
        if bundle.segment != state.segment {
            return Err(TrustError::WrongSegment {
                found: bundle.segment,
                expected: state.segment,
            });
        }
        if bundle.version < state.version {
            return Err(TrustError::Rollback {
                offered: bundle.version,
                current: state.version,
            });
        }
        if bundle.version == state.version {
            let same = self.current()?.as_ref() == Some(&bundle);
            return if same {
                Ok(None)
            } else {
                Err(TrustError::SameVersionDifferent(bundle.version))
            };
        }
        if now >= bundle.expires {
            return Err(TrustError::Expired {
                version: bundle.version,
                expires: bundle.expires,
                now,
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let path = self.dir.join("bundle.json");
        crate::registry::layout::write_atomically(&self.dir, &path, envelope)
            .map_err(self.io(&path))?;
        // The state last: a crash in between leaves the old state, under
        // which the new file fails verification and is refused until the
        // update is retried.
        self.write_state(&TrustState {
            version: bundle.version,
            signers: bundle.signers.clone(),
            segment: state.segment,
        })?;
        Ok(Some(bundle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marque_keys::Algorithm;

    fn key() -> SigningKey {
        SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap()
    }

    fn signers(keys: &[&SigningKey], threshold: usize) -> Signers {
        Signers {
            keys: keys.iter().map(|k| k.public_key().to_pem()).collect(),
            threshold,
        }
    }

    fn bundle(version: u64, segment: &str, s: Signers) -> Bundle {
        Bundle {
            version,
            segment: segment.into(),
            expires: 2_000_000_000,
            policy: "version = 1\n".into(),
            files: BTreeMap::new(),
            revocations: Revocations::default(),
            signers: s,
        }
    }

    #[test]
    fn threshold_rollback_freeze_segment_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (key(), key(), key());
        let two_of_three = signers(&[&a, &b, &c], 2);
        let node = Accepted::new(dir.path());
        node.pin(&two_of_three, "edge").unwrap();
        let now = 1_900_000_000;

        // One signature of the two required.
        let v1 = bundle(1, "edge", two_of_three.clone());
        let e = node.accept(&v1.sign(&[&a]).unwrap(), now).unwrap_err();
        assert!(matches!(e, TrustError::Threshold { found: 1, .. }), "{e}");
        // The same key twice is still one signer.
        let e = node.accept(&v1.sign(&[&a, &a]).unwrap(), now).unwrap_err();
        assert!(matches!(e, TrustError::Threshold { found: 1, .. }), "{e}");
        assert!(
            node.accept(&v1.sign(&[&a, &b]).unwrap(), now)
                .unwrap()
                .is_some()
        );
        assert!(
            node.accept(&v1.sign(&[&b, &c]).unwrap(), now)
                .unwrap()
                .is_none()
        );
        assert_eq!(node.current().unwrap().unwrap().version, 1);

        // Another segment, an expired bundle, a rollback: refused, and v1
        // stays in force.
        let e = node
            .accept(
                &bundle(2, "core", two_of_three.clone())
                    .sign(&[&a, &b])
                    .unwrap(),
                now,
            )
            .unwrap_err();
        assert!(matches!(e, TrustError::WrongSegment { .. }), "{e}");
        let mut expired = bundle(2, "edge", two_of_three.clone());
        expired.expires = now - 1;
        let e = node
            .accept(&expired.sign(&[&a, &b]).unwrap(), now)
            .unwrap_err();
        assert!(matches!(e, TrustError::Expired { .. }), "{e}");
        let mut other_v1 = v1.clone();
        other_v1.policy = "version = 1\n# changed\n".into();
        let e = node
            .accept(&other_v1.sign(&[&a, &b]).unwrap(), now)
            .unwrap_err();
        assert!(matches!(e, TrustError::SameVersionDifferent(1)), "{e}");
        assert_eq!(node.current().unwrap().unwrap(), v1);

        // Rotation: v2 hands over to {d, e}; it needs 2 of {a, b, c} and
        // 2 of {d, e}.
        let (d, e_) = (key(), key());
        let new_signers = signers(&[&d, &e_], 2);
        let v2 = bundle(2, "edge", new_signers.clone());
        let err = node.accept(&v2.sign(&[&d, &e_]).unwrap(), now).unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::Threshold {
                    whose: "trusted",
                    ..
                }
            ),
            "{err}"
        );
        let err = node
            .accept(&v2.sign(&[&a, &b, &d]).unwrap(), now)
            .unwrap_err();
        assert!(
            matches!(
                err,
                TrustError::Threshold {
                    whose: "its own",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            node.accept(&v2.sign(&[&a, &b, &d, &e_]).unwrap(), now)
                .unwrap()
                .is_some()
        );
        // From now on the old keys are not enough, and v1 is a rollback.
        let v3 = bundle(3, "edge", new_signers.clone());
        assert!(node.accept(&v3.sign(&[&a, &b]).unwrap(), now).is_err());
        let e = node.accept(&v1.sign(&[&a, &b]).unwrap(), now).unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Threshold { .. } | TrustError::Rollback { .. }
            ),
            "{e}"
        );
        let v1_by_new = bundle(1, "edge", new_signers.clone());
        let e = node
            .accept(&v1_by_new.sign(&[&d, &e_]).unwrap(), now)
            .unwrap_err();
        assert!(
            matches!(
                e,
                TrustError::Rollback {
                    offered: 1,
                    current: 2
                }
            ),
            "{e}"
        );

        // The state survives a restart (a new handle), and a corrupted
        // bundle file is detected.
        let again = Accepted::new(dir.path());
        assert_eq!(again.current().unwrap().unwrap().version, 2);
        let path = dir.path().join("bundle.json");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        assert!(again.current().is_err());
    }

    #[test]
    fn removed_nodes_must_be_node_ids() {
        assert!(is_node_id("abcdefghijklmnopqrstuvwxyz"));
        assert!(is_node_id("a234567bcdefghijklmnopqrst"));
        for bad in [
            "",
            "abc",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "abcdefghijklmnopqrstuvwxy1",
            " bcdefghijklmnopqrstuvwxyz",
        ] {
            assert!(!is_node_id(bad), "{bad:?}");
        }
        let mut b = bundle(1, "edge", signers(&[&key()], 1));
        b.revocations.nodes = vec!["abcdefghijklmnopqrstuvwxyz".into()];
        assert!(b.policy().is_ok());
        b.revocations.nodes.push("node-7 ".into());
        let e = b.policy().unwrap_err().to_string();
        assert!(e.contains("\"node-7 \" is not a node id"), "{e}");
    }
}
