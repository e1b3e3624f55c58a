//! Pushing images to a test registry with plain HTTP (no skopeo needed):
//! the committed sample image (testdata/sample-image, an OCI image layout)
//! and "synthetic" variants of it with distinct digests for batch tests.

use std::path::PathBuf;

use super::{http, sha256_digest};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The committed sample image, read from its OCI layout.
#[derive(Debug, Clone)]
pub(crate) struct SampleImage {
    /// `sha256:…` of `manifest` (the digest in index.json).
    pub(crate) digest: String,
    pub(crate) manifest: Vec<u8>,
    pub(crate) config: Vec<u8>,
    /// (digest, bytes) of each layer, in manifest order.
    pub(crate) layers: Vec<(String, Vec<u8>)>,
    /// The layer descriptors exactly as in the manifest.
    pub(crate) layer_descriptors: serde_json::Value,
}

/// testdata/sample-image
pub(crate) fn sample_layout_dir() -> PathBuf {
    super::repo_root().join("testdata").join("sample-image")
}

fn read_blob(digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = sample_layout_dir().join("blobs").join("sha256").join(hex);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(
        sha256_digest(&data),
        digest,
        "{} is corrupt",
        path.display()
    );
    data
}

/// Loads the sample image (the manifest tagged `latest` in index.json).
pub(crate) fn sample_image() -> SampleImage {
    let index_path = sample_layout_dir().join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index_path).unwrap_or_else(|e| panic!("{}: {e}", index_path.display())),
    )
    .expect("index.json is JSON");
    let desc = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter().find(|d| {
                d["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some("latest")
            })
        })
        .expect("index.json has a manifest named latest");
    let digest = desc["digest"].as_str().expect("digest").to_owned();
    let manifest = read_blob(&digest);
    let m: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest is JSON");
    let config = read_blob(m["config"]["digest"].as_str().expect("config digest"));
    let layers = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().expect("layer digest").to_owned();
            let bytes = read_blob(&d);
            (d, bytes)
        })
        .collect();
    SampleImage {
        digest,
        manifest,
        config,
        layers,
        layer_descriptors: m["layers"].clone(),
    }
}

/// Uploads a blob (monolithic: POST then PUT ?digest=) unless the repository
/// already has it. Returns its digest.
pub(crate) fn push_blob(addr: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let head = http::request(
        addr,
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    )
    .unwrap_or_else(|e| panic!("HEAD blob on {addr}: {e}"));
    if head.status == 200 {
        return digest;
    }
    let start = http::request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    )
    .unwrap_or_else(|e| panic!("POST upload on {addr}: {e}"));
    assert_eq!(
        start.status,
        202,
        "starting blob upload to {repo}: {}",
        start.text()
    );
    let location = start.header("Location").expect("upload Location header");
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = http::request(
        addr,
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .unwrap_or_else(|e| panic!("PUT blob on {addr}: {e}"));
    assert_eq!(
        put.status,
        201,
        "finishing blob upload of {digest} to {repo}: {}",
        put.text()
    );
    digest
}

/// PUTs manifest bytes under `reference` (tag or digest) with the given media
/// type. Returns the manifest digest (checked against Docker-Content-Digest).
pub(crate) fn push_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
) -> String {
    let digest = sha256_digest(manifest);
    let r = http::request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        manifest,
    )
    .unwrap_or_else(|e| panic!("PUT manifest on {addr}: {e}"));
    assert_eq!(
        r.status,
        201,
        "PUT manifest {repo}:{reference}: {}",
        r.text()
    );
    if let Some(d) = r.header("Docker-Content-Digest") {
        assert_eq!(d, digest, "registry computed another digest");
    }
    digest
}

/// Pushes testdata/sample-image to `addr`/`repo`:`tag`; returns its digest
/// (always the digest in the layout's index.json).
pub(crate) fn push_sample_image(addr: &str, repo: &str, tag: &str) -> String {
    let img = sample_image();
    for (_, layer) in &img.layers {
        push_blob(addr, repo, layer);
    }
    push_blob(addr, repo, &img.config);
    let digest = push_manifest(addr, repo, tag, OCI_MANIFEST, &img.manifest);
    assert_eq!(digest, img.digest);
    digest
}

/// Bytes of the n-th synthetic image: the sample image's layers, with the
/// config label `dev.marque.test.n=<n>` so each n has its own config and
/// manifest digest. Returns (config, manifest).
pub(crate) fn synthetic_image(n: u32) -> (Vec<u8>, Vec<u8>) {
    let img = sample_image();
    let mut config: serde_json::Value =
        serde_json::from_slice(&img.config).expect("sample config is JSON");
    config["config"]["Labels"] = serde_json::json!({ "dev.marque.test.n": n.to_string() });
    let config = serde_json::to_vec(&config).expect("serialize config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": img.layer_descriptors,
    });
    let manifest = serde_json::to_vec(&manifest).expect("serialize manifest");
    (config, manifest)
}

/// Pushes the n-th synthetic image (distinct digest per n) to
/// `addr`/`repo`:`tag`; returns its manifest digest.
pub(crate) fn push_synthetic_image(addr: &str, repo: &str, tag: &str, n: u32) -> String {
    let img = sample_image();
    for (_, layer) in &img.layers {
        push_blob(addr, repo, layer);
    }
    let (config, manifest) = synthetic_image(n);
    push_blob(addr, repo, &config);
    push_manifest(addr, repo, tag, OCI_MANIFEST, &manifest)
}
