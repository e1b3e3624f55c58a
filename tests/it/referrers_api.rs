//! The in-process registry with a native OCI 1.1 referrers API
//! (`support::referrers_registry`) does what marque's referrers path needs:
//! it takes a Sigstore-bundle manifest whose `subject` is an image, answers
//! with `OCI-Subject`, and lists it under `GET /v2/<repo>/referrers/<digest>`,
//! filtered by `?artifactType=`.

use crate::support::image::OCI_INDEX;
use crate::support::referrers_registry::ReferrersRegistry;
use crate::support::{self, OCI_MANIFEST, http, sha256_digest};

const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn referrers(addr: &str, repo: &str, subject: &str, query: &str) -> http::Response {
    let r = http::get(addr, &format!("/v2/{repo}/referrers/{subject}{query}"), &[]).unwrap();
    assert_eq!(r.status, 200, "referrers{query}: {}", r.text());
    assert_eq!(r.header("Content-Type"), Some(OCI_INDEX));
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    r
}

fn listed(r: &http::Response) -> Vec<serde_json::Value> {
    r.json()["manifests"].as_array().unwrap().clone()
}

#[test]
fn referrers_api_lists_a_bundle_manifest_by_subject() {
    let registry = ReferrersRegistry::start();
    let addr = registry.addr();
    let repo = "demo/referrers";
    let image = support::push_sample_image(&addr, repo, "v1");
    let image_size = support::sample_image().manifest.len();

    // Nothing refers to the image yet: 200 with an empty index, not 404.
    assert!(listed(&referrers(&addr, repo, &image, "")).is_empty());

    // The empty descriptor is always there; the bundle is an ordinary blob.
    let empty = http::request(
        &addr,
        "HEAD",
        &format!("/v2/{repo}/blobs/{EMPTY_DIGEST}"),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(empty.status, 200);
    assert_eq!(support::push_blob(&addr, repo, b"{}"), EMPTY_DIGEST);
    let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#;
    let bundle_digest = support::push_blob(&addr, repo, bundle);

    let manifest = |layer_digest: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_TYPE,
            "config": { "mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": 2 },
            "layers": [{ "mediaType": BUNDLE_TYPE, "digest": layer_digest, "size": bundle.len() }],
            "subject": { "mediaType": OCI_MANIFEST, "digest": image, "size": image_size },
            "annotations": { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
        }))
        .unwrap()
    };

    // The server checks that a manifest's blobs exist (with 404, where
    // docker-registry answers 400; both say MANIFEST_BLOB_UNKNOWN).
    let missing = manifest(&sha256_digest(b"never uploaded"));
    let r = http::request(
        &addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{}", sha256_digest(&missing)),
        &[("Content-Type", OCI_MANIFEST)],
        &missing,
    )
    .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");

    // Push the referrer by digest: 201 with OCI-Subject naming the image.
    let referrer = manifest(&bundle_digest);
    let referrer_digest = sha256_digest(&referrer);
    let put = http::request(
        &addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{referrer_digest}"),
        &[("Content-Type", OCI_MANIFEST)],
        &referrer,
    )
    .unwrap();
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.header("OCI-Subject"), Some(image.as_str()));
    assert_eq!(
        put.header("Docker-Content-Digest"),
        Some(referrer_digest.as_str())
    );
    assert_eq!(
        put.header("Location"),
        Some(format!("/v2/{repo}/manifests/{referrer_digest}").as_str())
    );

    // The referrer is stored byte for byte.
    let got = http::get(
        &addr,
        &format!("/v2/{repo}/manifests/{referrer_digest}"),
        &[("Accept", OCI_MANIFEST)],
    )
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, referrer);

    // The referrers API lists it, with its artifactType and annotations.
    let all = referrers(&addr, repo, &image, "");
    assert_eq!(all.header("OCI-Filters-Applied"), None);
    assert_eq!(
        listed(&all),
        vec![serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": referrer_digest,
            "size": referrer.len(),
            "artifactType": BUNDLE_TYPE,
            "annotations": { "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
        })]
    );

    // ?artifactType= filters on the server and says so. The value must be
    // percent-encoded: the query is form-decoded, so a raw '+' becomes a
    // space and the filter silently matches nothing.
    let encoded = BUNDLE_TYPE.replace('+', "%2B");
    let bundles = referrers(&addr, repo, &image, &format!("?artifactType={encoded}"));
    assert_eq!(bundles.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(listed(&bundles), listed(&all));
    let raw_plus = referrers(&addr, repo, &image, &format!("?artifactType={BUNDLE_TYPE}"));
    assert_eq!(raw_plus.header("OCI-Filters-Applied"), Some("artifactType"));
    assert!(listed(&raw_plus).is_empty());
    let other = referrers(
        &addr,
        repo,
        &image,
        "?artifactType=application/vnd.dev.cosign.simplesigning.v1%2Bjson",
    );
    assert_eq!(other.header("OCI-Filters-Applied"), Some("artifactType"));
    assert!(listed(&other).is_empty());

    // Referrers are per repository.
    assert!(listed(&referrers(&addr, "demo/elsewhere", &image, "")).is_empty());

    // Dropping the registry stops it.
    drop(registry);
    assert!(
        http::get(&addr, "/v2/", &[]).is_err(),
        "registry still answers after drop"
    );
}
