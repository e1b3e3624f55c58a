//! Shared support for the end-to-end tests: a real registry per test
//! (`registry`), a tiny std-only HTTP client and image pushers (`http`,
//! `image`), and the locations of the peer tools cosign and skopeo (`peers`).
//!
//! Rule for missing peers: when the environment variable `CI` is set, a
//! missing `docker-registry`, cosign or skopeo is a panic (CI must install
//! them via `scripts/install-peers.sh`); otherwise the lookup prints a loud
//! message and returns `None`, so a test can skip itself.

#![allow(dead_code, unused_imports)]

pub(crate) mod http;
pub(crate) mod image;
pub(crate) mod peers;
pub(crate) mod referrers_registry;
pub(crate) mod registry;

pub(crate) use image::{
    OCI_MANIFEST, SampleImage, push_blob, push_manifest, push_sample_image, push_synthetic_image,
    sample_image,
};
pub(crate) use peers::{cosign, skopeo};
pub(crate) use registry::Registry;

use std::path::PathBuf;

/// True when running in CI (`CI` set to anything but "", "0" or "false").
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Applies the missing-peer rule: panic in CI, else warn loudly.
pub(crate) fn missing(what: &str, hint: &str) {
    let msg = format!("{what} is not available: {hint}. Run `bash scripts/install-peers.sh`.");
    if in_ci() {
        panic!("{msg} (CI is set, so this is an error, not a skip)");
    }
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPING: {msg}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
}

/// The repository root (the root package's manifest dir).
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(data);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in hash.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
