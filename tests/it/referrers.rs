//! `--attach referrers`: Sigstore bundles as OCI 1.1 referrers, on
//! Debian's registry (no referrers API, so the `sha256-<hex>` fallback
//! index) and read back by verify and verify-attestation.

use std::process::{Command, Stdio};

use marque_verifier::artifact::manifest::Descriptor;
use marque_verifier::artifact::referrer::{self, ReferrerManifest, ReferrersIndex};

use crate::common::*;
use crate::support;

struct Img {
    addr: String,
    repo: String,
    digest: String,
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
    public: std::path::PathBuf,
}

fn img(prefix: &str) -> Option<Img> {
    let reg = registry()?;
    let addr = reg.addr();
    let repo = unique_repo(prefix);
    let digest = support::push_sample_image(&addr, &repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "k");
    Some(Img {
        addr,
        repo,
        digest,
        dir,
        key,
        public,
    })
}

impl Img {
    fn reference(&self) -> String {
        format!("{}/{}@{}", self.addr, self.repo, self.digest)
    }

    fn fallback(&self) -> Option<ReferrersIndex> {
        let tag = format!("sha256-{}", self.digest.trim_start_matches("sha256:"));
        let r = support::http::request(
            &self.addr,
            "GET",
            &format!("/v2/{}/manifests/{tag}", self.repo),
            &[("Accept", "application/vnd.oci.image.index.v1+json")],
            b"",
        )
        .unwrap();
        (r.status == 200).then(|| ReferrersIndex::parse(&r.body).unwrap())
    }

    fn verify(&self) -> Out {
        marque(
            &[
                "verify",
                "--key",
                self.public.to_str().unwrap(),
                "-o",
                "json",
                &self.reference(),
            ],
            &[],
        )
    }
}

#[test]
fn sign_as_a_referrer_and_verify() {
    let Some(i) = img("ref-sign") else { return };
    let out = marque(
        &[
            "sign",
            "--key",
            i.key.to_str().unwrap(),
            "--attach",
            "referrers",
            "-o",
            "json",
            &i.reference(),
        ],
        &[],
    );
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["fallback_index"],
        true,
        "Debian's registry has no referrers API"
    );
    let index = i.fallback().expect("fallback index");
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(
        index.manifests[0].extra["artifactType"],
        referrer::BUNDLE_MEDIA_TYPE
    );
    let m = ReferrerManifest::parse(
        &get_manifest(&i.addr, &i.repo, &index.manifests[0].digest_str).unwrap(),
    )
    .unwrap();
    assert_eq!(m.subject.unwrap().digest_str, i.digest);
    assert_eq!(
        m.annotations[referrer::PREDICATE_ANNOTATION],
        referrer::SIGN_PREDICATE_TYPE
    );
    // No .sig tag was written.
    assert!(sig_manifest(&i.addr, &i.repo, &i.digest).is_none());

    let out = i.verify();
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["signatures"][0]["payload"]["predicateType"],
        referrer::SIGN_PREDICATE_TYPE
    );
    let (_, other) = plain_key(i.dir.path(), "other");
    marque(
        &["verify", "--key", other.to_str().unwrap(), &i.reference()],
        &[],
    )
    .expect_code(1);
    // A signature is not an attestation of another type.
    marque(
        &[
            "verify-attestation",
            "--key",
            i.public.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            &i.reference(),
        ],
        &[],
    )
    .expect_code(1);
}

#[test]
fn attest_as_a_referrer() {
    let Some(i) = img("ref-attest") else { return };
    let sbom = i.dir.path().join("sbom.json");
    std::fs::write(&sbom, r#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    marque(
        &[
            "attest",
            "--key",
            i.key.to_str().unwrap(),
            "--attach",
            "referrers",
            "--type",
            "spdxjson",
            "--predicate",
            sbom.to_str().unwrap(),
            &i.reference(),
        ],
        &[],
    )
    .expect_code(0);
    let out = marque(
        &[
            "verify-attestation",
            "--key",
            i.public.to_str().unwrap(),
            "--type",
            "spdxjson",
            "-o",
            "json",
            &i.reference(),
        ],
        &[],
    );
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["attestations"][0]["statement"]["predicateType"],
        "https://spdx.dev/Document"
    );
    // An SBOM attestation does not count as a signature.
    i.verify().expect_code(1);
}

#[test]
fn concurrent_referrer_signers_keep_every_index_entry() {
    let Some(i) = img("ref-concurrent") else {
        return;
    };
    let keys: Vec<_> = (0..8)
        .map(|n| plain_key(i.dir.path(), &format!("c{n}")))
        .collect();
    let children: Vec<_> = keys
        .iter()
        .map(|(k, _)| {
            Command::new(marque_bin())
                .args([
                    "sign",
                    "--key",
                    k.to_str().unwrap(),
                    "--attach",
                    "referrers",
                    &i.reference(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(i.fallback().unwrap().manifests.len(), 8);
    for (_, p) in &keys {
        marque(
            &["verify", "--key", p.to_str().unwrap(), &i.reference()],
            &[],
        )
        .expect_code(0);
    }
}

/// Pushes `manifest` by digest and lists it in the image's fallback index.
fn push_listed(i: &Img, manifest: &ReferrerManifest) {
    let bytes = manifest.to_bytes();
    let digest = support::sha256_digest(&bytes);
    support::image::push_manifest(&i.addr, &i.repo, &digest, OCI_MANIFEST, &bytes);
    let mut index = i.fallback().unwrap_or_else(ReferrersIndex::empty);
    index.manifests.push(manifest.index_entry(&bytes));
    let tag = format!("sha256-{}", i.digest.trim_start_matches("sha256:"));
    support::image::push_manifest(
        &i.addr,
        &i.repo,
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &index.to_bytes(),
    );
}

#[test]
fn bad_referrers_are_rejected_with_a_reason() {
    let Some(i) = img("ref-bad") else { return };
    // A valid signature bundle for another image, listed under this one.
    let other = support::push_synthetic_image(&i.addr, &i.repo, "other", 11);
    let out = marque(
        &[
            "sign",
            "--key",
            i.key.to_str().unwrap(),
            "--attach",
            "referrers",
            "-o",
            "json",
            &format!("{}/{}@{other}", i.addr, i.repo),
        ],
        &[],
    );
    let referrer_digest = out.expect_code(0).json()[0]["referrer"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs =
        ReferrerManifest::parse(&get_manifest(&i.addr, &i.repo, &referrer_digest).unwrap())
            .unwrap();
    push_listed(&i, &theirs);
    let out = i.verify();
    out.expect_code(1);
    assert!(
        out.stderr.contains("subject names another image"),
        "{}",
        out.stderr
    );

    // A bundle with an unknown media type.
    let fake = br#"{"mediaType":"application/vnd.example.bundle+json","dsseEnvelope":{"payloadType":"application/vnd.in-toto+json","payload":"","signatures":[]}}"#;
    put_blob(&i.addr, &i.repo, fake);
    put_blob(&i.addr, &i.repo, referrer::EMPTY_CONFIG);
    let subject = Descriptor::for_bytes(
        OCI_MANIFEST,
        &get_manifest(&i.addr, &i.repo, &i.digest).unwrap(),
    );
    push_listed(
        &i,
        &ReferrerManifest::new(
            subject,
            fake,
            referrer::SIGN_PREDICATE_TYPE,
            "2026-11-23T00:00:00Z",
        ),
    );
    let out = i.verify();
    out.expect_code(1);
    assert!(
        out.stderr.contains("unknown bundle media type"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_fallback_tag_that_is_not_an_index_or_is_too_large() {
    let Some(i) = img("ref-quirk") else { return };
    let tag = format!("sha256-{}", i.digest.trim_start_matches("sha256:"));
    // Some registries answer the fallback tag with the image itself.
    let image = get_manifest(&i.addr, &i.repo, &i.digest).unwrap();
    support::image::push_manifest(&i.addr, &i.repo, &tag, OCI_MANIFEST, &image);
    let out = i.verify();
    out.expect_code(1);
    assert!(out.stderr.contains("no signatures found"), "{}", out.stderr);
}

#[test]
fn an_oversized_referrers_index_is_refused() {
    // docker-registry itself refuses manifests over 4 MiB, so use a layout.
    let (dir, layout) = sample_layout_copy();
    let (_, public) = plain_key(dir.path(), "k");
    let index_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index_json["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut index = ReferrersIndex::empty();
    index.manifests = vec![Descriptor::for_bytes(OCI_MANIFEST, b"x"); 40_000];
    let bytes = index.to_bytes();
    assert!(bytes.len() > 4 << 20);
    let d = support::sha256_digest(&bytes);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
        &bytes,
    )
    .unwrap();
    let mut idx = index_json.clone();
    idx["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": format!("sha256-{}", digest.trim_start_matches("sha256:"))}
    }));
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    let out = marque(
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            &format!("oci:{}", layout.display()),
        ],
        &[],
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("larger than the limit"),
        "{}",
        out.stderr
    );
}

/// A registry with the referrers API (ferro-oci-server, in process): the
/// referrer is indexed by the registry (no fallback tag) and verify finds
/// it through `GET /v2/<name>/referrers/<digest>`.
#[test]
fn native_referrers_api() {
    let reg = support::referrers_registry::ReferrersRegistry::start();
    let addr = reg.addr();
    let digest = support::push_sample_image(&addr, "native/app", "v1");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "k");
    let image = format!("{addr}/native/app@{digest}");
    let out = marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--attach",
            "referrers",
            "-o",
            "json",
            &image,
        ],
        &[],
    );
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["fallback_index"],
        false,
        "the registry indexes the subject itself"
    );
    let tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    let r = support::http::request(
        &addr,
        "GET",
        &format!("/v2/native/app/manifests/{tag}"),
        &[],
        b"",
    )
    .unwrap();
    assert_ne!(r.status, 200, "no fallback index is written");
    marque(&["verify", "--key", public.to_str().unwrap(), &image], &[]).expect_code(0);
    let (_, other) = plain_key(dir.path(), "other");
    marque(&["verify", "--key", other.to_str().unwrap(), &image], &[]).expect_code(1);
    // Attestations too.
    let sbom = dir.path().join("sbom.json");
    std::fs::write(&sbom, "{}").unwrap();
    marque(
        &[
            "attest",
            "--key",
            key.to_str().unwrap(),
            "--attach",
            "referrers",
            "--type",
            "cyclonedx",
            "--predicate",
            sbom.to_str().unwrap(),
            &image,
        ],
        &[],
    )
    .expect_code(0);
    marque(
        &[
            "verify-attestation",
            "--key",
            public.to_str().unwrap(),
            "--type",
            "cyclonedx",
            &image,
        ],
        &[],
    )
    .expect_code(0);
}

/// marque reads what `cosign attest --new-bundle-format` (cosign 2.5)
/// writes: a bundle referrer listed in the fallback index with the empty
/// config type as its artifactType (cosign#4422) and a v0.1 statement.
#[test]
fn marque_verifies_cosign_bundle_attestations() {
    let Some(i) = img("ref-cosign") else { return };
    let Some(cosign_bin) = support::peers::cosign() else {
        return;
    };
    let run = |args: &[&str]| {
        cosign(&cosign_bin, i.dir.path(), args).expect_code(0);
    };
    run(&["generate-key-pair", "--output-key-prefix", "ck"]);
    let prov = i.dir.path().join("prov.json");
    marque(
        &[
            "provenance",
            "--builder-id",
            "https://ci.example.com/b",
            "--build-type",
            "https://ci.example.com/t",
            "--output",
            prov.to_str().unwrap(),
        ],
        &[("GITHUB_ACTIONS", ""), ("GITLAB_CI", "")],
    )
    .expect_code(0);
    run(&[
        "attest",
        "--key",
        "ck.key",
        "--new-bundle-format",
        "--type",
        "slsaprovenance1",
        "--predicate",
        prov.to_str().unwrap(),
        "--tlog-upload=false",
        "-y",
        &i.reference(),
    ]);
    assert!(i.fallback().is_some(), "cosign wrote the fallback index");
    let ck = i.dir.path().join("ck.pub");
    let out = marque(
        &[
            "verify-attestation",
            "--key",
            ck.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            "-o",
            "json",
            &i.reference(),
        ],
        &[],
    );
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["attestations"][0]["statement"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
}

/// cosign 2.5 accepts marque's bundle attestations:
/// `verify-attestation --new-bundle-format`, offline thanks to an empty
/// trusted root (its bundle path otherwise fetches Sigstore's TUF root).
#[test]
fn cosign_verifies_marque_bundle_attestations() {
    let Some(i) = img("ref-to-cosign") else {
        return;
    };
    let Some(cosign_bin) = support::peers::cosign() else {
        return;
    };
    let prov = i.dir.path().join("prov.json");
    marque(
        &[
            "provenance",
            "--builder-id",
            "https://ci.example.com/b",
            "--build-type",
            "https://ci.example.com/t",
            "--output",
            prov.to_str().unwrap(),
        ],
        &[("GITHUB_ACTIONS", ""), ("GITLAB_CI", "")],
    )
    .expect_code(0);
    marque(
        &[
            "attest",
            "--key",
            i.key.to_str().unwrap(),
            "--attach",
            "referrers",
            "--type",
            "slsaprovenance1",
            "--predicate",
            prov.to_str().unwrap(),
            &i.reference(),
        ],
        &[],
    )
    .expect_code(0);
    let trusted_root = i.dir.path().join("trusted_root.json");
    std::fs::write(
        &trusted_root,
        r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}"#,
    )
    .unwrap();
    let root = trusted_root.to_str().unwrap();
    let reference = i.reference();
    let verify = |key: &std::path::Path| {
        cosign(
            &cosign_bin,
            i.dir.path(),
            &[
                "verify-attestation",
                "--key",
                key.to_str().unwrap(),
                "--new-bundle-format",
                "--trusted-root",
                root,
                "--type",
                "slsaprovenance1",
                "--insecure-ignore-tlog=true",
                &reference,
            ],
        )
    };
    verify(&i.public).expect_code(0);
    let (_, other) = plain_key(i.dir.path(), "other");
    assert_ne!(verify(&other).code, 0, "cosign must refuse another key");
}

/// `-a key=value` goes on the statement's subject, as cosign 3 writes it,
/// and verify -a checks it there.
#[test]
fn referrer_signature_annotations() {
    let Some(i) = img("ref-annot") else { return };
    marque(
        &[
            "sign",
            "--key",
            i.key.to_str().unwrap(),
            "--attach",
            "referrers",
            "-a",
            "env=prod",
            &i.reference(),
        ],
        &[],
    )
    .expect_code(0);
    let pk = i.public.to_str().unwrap();
    marque(
        &["verify", "--key", pk, "-a", "env=prod", &i.reference()],
        &[],
    )
    .expect_code(0);
    let out = marque(
        &["verify", "--key", pk, "-a", "env=dev", &i.reference()],
        &[],
    );
    out.expect_code(1);
    assert!(out.stderr.contains("env"), "{}", out.stderr);
}
