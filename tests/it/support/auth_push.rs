//! Pushing the sample image to a registry that wants authentication: the same
//! monolithic uploads as `support::image`, with a fixed `Authorization` value
//! ("Basic …" for htpasswd, "Bearer <jwt>" for token auth) on every request.
//!
//! Included by `auth.rs` with `#[path]`, so `support/mod.rs` stays as it is.

#![allow(dead_code)]

use crate::support::{http, image, sha256_digest};

fn request(
    addr: &str,
    method: &str,
    target: &str,
    authorization: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Response {
    let mut all = vec![("Authorization", authorization)];
    all.extend_from_slice(headers);
    http::request(addr, method, target, &all, body)
        .unwrap_or_else(|e| panic!("{method} {target} on {addr}: {e}"))
}

/// Uploads a blob (POST, then PUT ?digest=) with `authorization`.
pub(crate) fn push_blob(addr: &str, repo: &str, authorization: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let start = request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        authorization,
        &[],
        &[],
    );
    assert_eq!(
        start.status,
        202,
        "starting an authenticated blob upload to {repo}: {}",
        start.text()
    );
    let location = start.header("Location").expect("upload Location header");
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = request(
        addr,
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        authorization,
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(
        put.status,
        201,
        "finishing the authenticated upload of {digest} to {repo}: {}",
        put.text()
    );
    digest
}

/// Pushes testdata/sample-image to `addr`/`repo`:`tag` with `authorization`
/// on every request; returns its digest.
pub(crate) fn push_sample_image(addr: &str, repo: &str, tag: &str, authorization: &str) -> String {
    let img = image::sample_image();
    for (_, layer) in &img.layers {
        push_blob(addr, repo, authorization, layer);
    }
    push_blob(addr, repo, authorization, &img.config);
    let r = request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        authorization,
        &[("Content-Type", image::OCI_MANIFEST)],
        &img.manifest,
    );
    assert_eq!(
        r.status,
        201,
        "authenticated PUT manifest {repo}:{tag}: {}",
        r.text()
    );
    if let Some(d) = r.header("Docker-Content-Digest") {
        assert_eq!(d, img.digest, "registry computed another digest");
    }
    img.digest
}

/// "Basic base64(user:password)"
pub(crate) fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
