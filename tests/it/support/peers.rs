//! Locations of the peer tools (cosign 2.5 and skopeo 1.18 from Debian
//! trixie, unpacked by scripts/install-peers.sh), plus small helpers for
//! skopeo's sigstore configuration.

use std::path::{Path, PathBuf};

/// `$MARQUE_PEERS_BIN`, else `$CARGO_MANIFEST_DIR/.cache/peers/bin`.
pub(crate) fn peers_bin_dir() -> PathBuf {
    match std::env::var_os("MARQUE_PEERS_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => super::repo_root().join(".cache").join("peers").join("bin"),
    }
}

fn find(name: &str) -> Option<PathBuf> {
    let p = peers_bin_dir().join(name);
    if p.is_file() {
        Some(p)
    } else {
        super::missing(name, &format!("{} does not exist", p.display()));
        None
    }
}

/// The cosign wrapper. `None` (after a loud message) when missing outside
/// CI; panics in CI.
pub(crate) fn cosign() -> Option<PathBuf> {
    find("cosign")
}

/// The skopeo wrapper. `None` (after a loud message) when missing outside
/// CI; panics in CI. Always pass `--policy` (and `--registries.d` for
/// sigstore signatures): there is no system-wide containers config.
pub(crate) fn skopeo() -> Option<PathBuf> {
    find("skopeo")
}

/// Writes `<dir>/default.yaml` turning on sigstore attachments (the
/// `sha256-<hex>.sig` tags) for every registry; pass `dir` as
/// `skopeo --registries.d <dir>`.
pub(crate) fn write_registries_d(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create registries.d");
    std::fs::write(
        dir.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .expect("write registries.d/default.yaml");
}

/// Writes a policy.json that accepts anything (for pushing with skopeo).
pub(crate) fn write_insecure_policy(path: &Path) {
    std::fs::write(path, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)
        .expect("write policy.json");
}

/// Writes a policy.json that rejects everything except images from
/// `registry_addr` carrying a sigstore signature by `public_key` whose
/// identity matches the repository (`matchRepository`, which accepts both
/// cosign's repo-only and skopeo's repo:tag identities).
pub(crate) fn write_sigstore_policy(path: &Path, registry_addr: &str, public_key: &Path) {
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {registry_addr: [{
            "type": "sigstoreSigned",
            "keyPath": public_key,
            "signedIdentity": {"type": "matchRepository"},
        }]}},
    });
    std::fs::write(path, serde_json::to_vec(&policy).expect("policy JSON"))
        .expect("write policy.json");
}
