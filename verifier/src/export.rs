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

use crate::trust::Bundle;

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
        let text = self
            .policy
            .to_string()
            .replace(&format!("\"{KEY_DIR}/"), &format!("\"{}/", dir.display()));
        serde_json::from_str(&text).unwrap_or_default()
    }
}

fn err(scope: &str, reason: impl std::fmt::Display) -> ExportError {
    ExportError(format!("scope {scope:?}: {reason}"))
}

/// Exports `bundle`'s policy.
pub fn containers_policy(bundle: &Bundle) -> Result<ContainersPolicy, ExportError> {
    let value: toml::Value =
        toml::from_str(&bundle.policy).map_err(|e| ExportError(format!("the policy: {e}")))?;
    if !bundle.revocations.digests.is_empty()
        || value
            .get("revocations")
            .and_then(|r| r.get("digests"))
            .and_then(|d| d.as_array())
            .is_some_and(|d| !d.is_empty())
    {
        return Err(ExportError(
            "revoked digests (policy.json has no digest deny list)".into(),
        ));
    }
    let mut revoked_keys: Vec<String> = bundle.revocations.keys.clone();
    revoked_keys.extend(
        value
            .get("revocations")
            .and_then(|r| r.get("keys"))
            .and_then(|k| k.as_array())
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str().map(str::to_owned)),
    );
    let mut docker = serde_json::Map::new();
    let mut registries = String::from("docker:\n");
    let mut keys = BTreeMap::new();
    let list = |v: Option<&toml::Value>| v.and_then(|v| v.as_array()).cloned().unwrap_or_default();
    for scope in list(value.get("scope")) {
        let patterns: Vec<String> = list(scope.get("match"))
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        let name = scope
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| patterns.first().cloned().unwrap_or_default());
        let mode = scope
            .get("mode")
            .and_then(|m| m.as_str())
            .unwrap_or("enforce");
        let requirements = match mode {
            "skip" => vec![json!({ "type": "insecureAcceptAnything" })],
            "audit" => {
                return Err(err(
                    &name,
                    "audit mode (policy.json cannot allow and report)",
                ));
            }
            _ => {
                if scope.get("max_age").is_some() {
                    return Err(err(&name, "max_age"));
                }
                if !list(scope.get("attestation")).is_empty() {
                    return Err(err(&name, "required attestations"));
                }
                let mut reqs = Vec::new();
                for authority in list(scope.get("authority")) {
                    let aname = authority.get("name").and_then(|n| n.as_str()).unwrap_or("");
                    if authority.get("ca_roots").is_some() {
                        return Err(err(&name, format!("authority {aname:?} trusts a CA")));
                    }
                    let threshold = authority
                        .get("threshold")
                        .and_then(|t| t.as_integer())
                        .unwrap_or(1);
                    if threshold != 1 {
                        return Err(err(
                            &name,
                            format!("authority {aname:?} needs {threshold} distinct signers"),
                        ));
                    }
                    let mut paths = Vec::new();
                    for k in list(authority.get("keys")) {
                        let Some(file) = k.as_str() else { continue };
                        let pem = bundle.files.get(file).ok_or_else(|| {
                            err(&name, format!("key {file} is not in the bundle"))
                        })?;
                        let key = marque_keys::PublicKey::from_pem(pem.as_bytes())
                            .map_err(|e| err(&name, format!("key {file}: {e}")))?;
                        if revoked_keys.iter().any(|r| r == key.key_id().as_str()) {
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
                    return Err(err(&name, "no authority"));
                }
                reqs
            }
        };
        for p in patterns {
            if p.starts_with("oci:") {
                continue;
            }
            let scope_name = match p.strip_suffix("/**") {
                Some(prefix) if !prefix.contains('*') => prefix.to_owned(),
                _ if !p.contains('*') => p.clone(),
                _ => {
                    return Err(err(
                        &name,
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
