//! Exporting a trust bundle's policy as containers-policy.json(5) plus a
//! registries.d file, for CRI-O, podman and skopeo.
//!
//! Only what policy.json can express *exactly* is exported; anything else
//! is an error naming the scope and the reason, never a weaker policy:
//! - each scope pattern must be `registry/path` (exact) or
//!   `registry/path/**` (everything under it);
//! - `enforce` scopes need key authorities with threshold 1 (any of their
//!   keys; several authorities are all required), `skip` scopes become
//!   `insecureAcceptAnything`; `audit` cannot be expressed;
//! - CA authorities, required attestations, `max_age` and revoked digests
//!   cannot be expressed; revoked keys are left out of the key lists.
//!
//! Everything not matched is rejected (`default: reject`), as in marque.

use std::collections::BTreeMap;

use serde_json::json;

use crate::policy::{Mode, Policy, Trusted};

/// Why a policy cannot be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot express in policy.json: {0}")]
pub struct ExportError(String);

/// The files to write.
#[derive(Debug, Clone)]
pub struct ContainersPolicy {
    /// `policy.json`; key paths are `KEYDIR/<name>`, to be replaced by
    /// where the keys are written (see [`ContainersPolicy::with_key_dir`]).
    pub policy: serde_json::Value,
    /// `registries.d/marque.yaml`.
    pub registries_d: String,
    /// Key files: name → PEM.
    pub keys: BTreeMap<String, String>,
}

const KEY_DIR: &str = "KEYDIR";

impl ContainersPolicy {
    /// The policy with key paths under `dir` (absolute, as policy.json
    /// requires).
    pub fn with_key_dir(&self, dir: &std::path::Path) -> serde_json::Value {
        // Rewritten in the document, not in its text: a directory name with
        // a quote or backslash in it stays a string.
        fn rewrite(v: &mut serde_json::Value, dir: &std::path::Path) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map.iter_mut() {
                        match v {
                            serde_json::Value::Array(paths) if k == "keyPaths" => {
                                for p in paths.iter_mut() {
                                    if let Some(name) = p
                                        .as_str()
                                        .and_then(|s| s.strip_prefix(KEY_DIR)?.strip_prefix('/'))
                                    {
                                        *p = dir.join(name).display().to_string().into();
                                    }
                                }
                            }
                            other => rewrite(other, dir),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(|i| rewrite(i, dir)),
                _ => {}
            }
        }
        let mut policy = self.policy.clone();
        rewrite(&mut policy, dir);
        policy
    }
}

fn err(scope: &str, reason: impl std::fmt::Display) -> ExportError {
    ExportError(format!("scope {scope:?}: {reason}"))
}

/// Exports a bundle's policy as a node enforces it, i.e. as parsed by
/// [`crate::trust::Bundle::policy`], with the bundle's revocations.
pub fn containers_policy(policy: &Policy) -> Result<ContainersPolicy, ExportError> {
    if policy.has_revoked_digests() {
        return Err(ExportError(
            "revoked digests (policy.json has no digest deny list)".into(),
        ));
    }
    let mut docker = serde_json::Map::new();
    let mut registries = String::from("docker:\n");
    let mut keys = BTreeMap::new();
    for scope in policy.scopes() {
        let name = &scope.name;
        let requirements = match scope.mode {
            Mode::Skip => vec![json!({ "type": "insecureAcceptAnything" })],
            Mode::Audit => {
                return Err(err(
                    name,
                    "audit mode (policy.json cannot allow and report)",
                ));
            }
            Mode::Enforce => {
                if scope.max_age.is_some() {
                    return Err(err(name, "max_age"));
                }
                if !scope.attestations.is_empty() {
                    return Err(err(name, "required attestations"));
                }
                let mut reqs = Vec::new();
                for authority in &scope.authorities {
                    let aname = &authority.name;
                    let Trusted::Keys(trusted) = &authority.trusted else {
                        return Err(err(name, format!("authority {aname:?} trusts a CA")));
                    };
                    if authority.threshold != 1 {
                        return Err(err(
                            name,
                            format!(
                                "authority {aname:?} needs {} distinct signers",
                                authority.threshold
                            ),
                        ));
                    }
                    let mut paths = Vec::new();
                    for key in trusted {
                        if policy.is_key_revoked(key.key_id().as_str()) {
                            continue;
                        }
                        let file_name = format!("{}.pub", key.key_id().as_str().replace(':', "-"));
                        keys.insert(file_name.clone(), key.to_pem());
                        paths.push(format!("{KEY_DIR}/{file_name}"));
                    }
                    if paths.is_empty() {
                        // Every key revoked: nothing can satisfy it.
                        reqs = vec![json!({ "type": "reject" })];
                        break;
                    }
                    reqs.push(json!({
                        "type": "sigstoreSigned",
                        "keyPaths": paths,
                        "signedIdentity": { "type": "matchRepository" },
                    }));
                }
                if reqs.is_empty() {
                    return Err(err(name, "no authority"));
                }
                reqs
            }
        };
        for p in scope.patterns() {
            if p.starts_with("oci:") {
                continue;
            }
            let scope_name = match p.strip_suffix("/**") {
                Some(prefix) if !prefix.contains('*') => prefix.to_owned(),
                _ if !p.contains('*') => p.to_owned(),
                _ => {
                    return Err(err(
                        name,
                        format!(
                            "pattern {p:?} (only exact names and a trailing /** can be expressed)"
                        ),
                    ));
                }
            };
            docker.insert(scope_name.clone(), json!(requirements));
            registries.push_str(&format!(
                "  {scope_name:?}:\n    use-sigstore-attachments: true\n"
            ));
        }
    }
    Ok(ContainersPolicy {
        policy: json!({
            "default": [{ "type": "reject" }],
            "transports": { "docker": docker },
        }),
        registries_d: registries,
        keys,
    })
}

/// What [`write()`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The bundle's policy, with this many key files.
    Policy {
        /// Key files written.
        keys: usize,
    },
    /// No usable bundle, or one policy.json cannot express: a policy that
    /// rejects every image was written instead (failing closed), for this
    /// reason.
    RejectAll(String),
}

/// Writes `policy.json`, `registries.d/marque.yaml` and `keys/` for an
/// exported policy into `dir` (each file atomically; the policy last, so it
/// never names a key file not yet written). `Err(why)` (no usable bundle,
/// or one policy.json cannot express exactly) writes a policy that rejects
/// everything, never a weaker one, and says why.
pub fn write(
    exported: Result<&ContainersPolicy, &str>,
    dir: &std::path::Path,
) -> std::io::Result<Written> {
    use crate::registry::layout::write_atomically;
    std::fs::create_dir_all(dir.join("registries.d"))?;
    let dir = std::fs::canonicalize(dir)?;
    let (policy, written) = match exported {
        Ok(exported) => {
            let keys = dir.join("keys");
            std::fs::create_dir_all(&keys)?;
            for (name, pem) in &exported.keys {
                write_atomically(&keys, &keys.join(name), pem.as_bytes())?;
            }
            let regd = dir.join("registries.d");
            write_atomically(
                &regd,
                &regd.join("marque.yaml"),
                exported.registries_d.as_bytes(),
            )?;
            (
                exported.with_key_dir(&keys),
                Written::Policy {
                    keys: exported.keys.len(),
                },
            )
        }
        Err(why) => (
            json!({ "default": [{ "type": "reject" }] }),
            Written::RejectAll(why.to_owned()),
        ),
    };
    let bytes = serde_json::to_vec_pretty(&policy).unwrap_or_default();
    write_atomically(&dir, &dir.join("policy.json"), &bytes)?;
    // Readable by the container tools (write_atomically makes 0600 files).
    for entry in walk(&dir)? {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(written)
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for sub in ["", "keys", "registries.d"] {
        let d = dir.join(sub);
        if !d.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    Ok(files)
}
