//! `marque attest`, `marque provenance` and `marque verify-attestation`,
//! against the registry and against cosign.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::support;

struct Setup {
    addr: &'static str,
    repo: String,
    digest: String,
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
}

fn setup(prefix: &str) -> Option<Setup> {
    let reg = registry()?;
    let addr: &'static str = Box::leak(reg.addr().into_boxed_str());
    let repo = unique_repo(prefix);
    let digest = support::push_sample_image(addr, &repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "k");
    Some(Setup {
        addr,
        repo,
        digest,
        dir,
        key,
        public,
    })
}

impl Setup {
    fn image(&self) -> String {
        format!("{}/{}@{}", self.addr, self.repo, self.digest)
    }

    fn provenance(&self) -> PathBuf {
        let out = self.dir.path().join("prov.json");
        marque(
            &[
                "provenance",
                "--builder-id",
                "https://ci.example.com/builders/1",
                "--build-type",
                "https://ci.example.com/buildtypes/make/v1",
                "--source-repo",
                "https://git.example.com/app",
                "--source-commit",
                "0123456789abcdef0123456789abcdef01234567",
                "--output",
                out.to_str().unwrap(),
            ],
            &[("GITHUB_ACTIONS", ""), ("GITLAB_CI", "")],
        )
        .expect_code(0);
        out
    }

    fn attest(&self, kind: &str, predicate: &Path) -> Out {
        marque(
            &[
                "attest",
                "--key",
                self.key.to_str().unwrap(),
                "--type",
                kind,
                "--predicate",
                predicate.to_str().unwrap(),
                "-o",
                "json",
                &self.image(),
            ],
            &[],
        )
    }

    fn verify(&self, kind: &str, image: &str) -> Out {
        marque(
            &[
                "verify-attestation",
                "--key",
                self.public.to_str().unwrap(),
                "--type",
                kind,
                "-o",
                "json",
                image,
            ],
            &[],
        )
    }
}

#[test]
fn attest_and_verify_provenance() {
    let Some(s) = setup("attest") else { return };
    let prov = s.provenance();
    let out = s.attest("slsaprovenance1", &prov);
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["attestation_tag"],
        format!("{}.att", s.digest.replacen(':', "-", 1)).as_str()
    );

    // Stored as cosign stores it.
    let m: serde_json::Value = serde_json::from_slice(
        &get_manifest(
            s.addr,
            &s.repo,
            &format!("{}.att", s.digest.replacen(':', "-", 1)),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = &m["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.dsse.envelope.v1+json");
    assert_eq!(
        layer["annotations"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(
        layer["annotations"]["dev.cosignproject.cosign/signature"],
        ""
    );
    let envelope: serde_json::Value = serde_json::from_slice(&get_blob(
        s.addr,
        &s.repo,
        layer["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");

    let out = s.verify("slsaprovenance1", &s.image());
    out.expect_code(0);
    let statement = &out.json()[0]["attestations"][0]["statement"];
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        statement["subject"][0]["name"],
        format!("{}/{}", s.addr, s.repo).as_str()
    );
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        s.digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        statement["predicate"]["runDetails"]["builder"]["id"],
        "https://ci.example.com/builders/1"
    );

    // Another predicate type is not accepted in its place.
    let out = s.verify("spdxjson", &s.image());
    out.expect_code(1);
    assert!(out.stderr.contains("predicate type"), "{}", out.stderr);
    // Nor another key.
    let (_, other) = plain_key(s.dir.path(), "other");
    marque(
        &[
            "verify-attestation",
            "--key",
            other.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            &s.image(),
        ],
        &[],
    )
    .expect_code(1);
}

#[test]
fn attestations_append() {
    let Some(s) = setup("attest-append") else {
        return;
    };
    let sbom = s.dir.path().join("sbom.json");
    std::fs::write(&sbom, r#"{"spdxVersion":"SPDX-2.3","name":"app"}"#).unwrap();
    s.attest("spdxjson", &sbom).expect_code(0);
    s.attest("slsaprovenance1", &s.provenance()).expect_code(0);
    let m: serde_json::Value = serde_json::from_slice(
        &get_manifest(
            s.addr,
            &s.repo,
            &format!("{}.att", s.digest.replacen(':', "-", 1)),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    s.verify("spdxjson", &s.image()).expect_code(0);
    s.verify("slsaprovenance1", &s.image()).expect_code(0);
    // Not JSON for a JSON predicate type: a usage error before any upload.
    let bad = s.dir.path().join("bad.json");
    std::fs::write(&bad, "not json").unwrap();
    s.attest("spdxjson", &bad).expect_code(2);
    s.attest("no-such-type", &sbom).expect_code(2);
}

/// Pushes an `.att` manifest whose one layer holds `envelope`.
fn push_attestation(s: &Setup, target_digest: &str, envelope: &[u8]) {
    use marque_verifier::artifact::manifest::{Descriptor, signature_manifest};
    let mut layer = Descriptor::for_bytes("application/vnd.dsse.envelope.v1+json", envelope);
    layer
        .annotations
        .insert("dev.cosignproject.cosign/signature".into(), String::new());
    layer.annotations.insert(
        "predicateType".into(),
        "https://slsa.dev/provenance/v1".into(),
    );
    put_blob(s.addr, &s.repo, envelope);
    let built = signature_manifest(vec![layer]);
    put_blob(s.addr, &s.repo, &built.config);
    put_manifest(
        s.addr,
        &s.repo,
        &format!("{}.att", target_digest.replacen(':', "-", 1)),
        &built.manifest,
    );
}

fn signing_key(s: &Setup) -> marque_keys::SigningKey {
    marque_keys::PrivateKeyFile::parse(&std::fs::read(&s.key).unwrap())
        .unwrap()
        .into_signing_key(None)
        .unwrap()
}

#[test]
fn bad_attestations_are_rejected_with_a_reason() {
    use marque_verifier::artifact::dsse;
    let Some(s) = setup("attest-bad") else { return };
    let key = signing_key(&s);
    let hex = s.digest.trim_start_matches("sha256:");
    let statement = |digest_hex: &str| {
        serde_json::to_vec(&serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "x", "digest": {"sha256": digest_hex}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {}
        }))
        .unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not this image",
            dsse::sign(
                dsse::IN_TOTO_PAYLOAD_TYPE,
                &statement(&"0".repeat(64)),
                &key,
            )
            .unwrap(),
        ),
        (
            "payloadType",
            dsse::sign("text/plain", &statement(hex), &key).unwrap(),
        ),
        (
            "not an in-toto Statement",
            dsse::sign(dsse::IN_TOTO_PAYLOAD_TYPE, b"[1,2,3]", &key).unwrap(),
        ),
        ("not a DSSE envelope", b"{\"hello\":1}".to_vec()),
    ];
    for (reason, envelope) in cases {
        push_attestation(&s, &s.digest, &envelope);
        let out = s.verify("slsaprovenance1", &s.image());
        out.expect_code(1);
        assert!(out.stderr.contains(reason), "{reason}: {}", out.stderr);
    }
    // A second subject for this image counts: every subject is checked.
    let two = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a", "digest": {"sha256": "0".repeat(64)}}, {"name": "b", "digest": {"sha256": hex}}],
        "predicateType": "https://slsa.dev/provenance/v1", "predicate": {}
    }))
    .unwrap();
    push_attestation(
        &s,
        &s.digest,
        &dsse::sign(dsse::IN_TOTO_PAYLOAD_TYPE, &two, &key).unwrap(),
    );
    s.verify("slsaprovenance1", &s.image()).expect_code(0);
}

#[test]
fn attestations_on_an_oci_layout() {
    let (dir, layout) = sample_layout_copy();
    let (key, public) = plain_key(dir.path(), "k");
    let image = format!("oci:{}", layout.display());
    let sbom = dir.path().join("sbom.json");
    std::fs::write(&sbom, r#"{"bomFormat":"CycloneDX"}"#).unwrap();
    marque(
        &[
            "attest",
            "--key",
            key.to_str().unwrap(),
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
    marque(
        &[
            "verify-attestation",
            "--key",
            public.to_str().unwrap(),
            "--type",
            "vuln",
            &image,
        ],
        &[],
    )
    .expect_code(1);
}

#[test]
fn cosign_accepts_marque_attestations_and_marque_verifies_cosigns() {
    let Some(s) = setup("attest-cosign") else {
        return;
    };
    let Some(cosign_bin) = support::peers::cosign() else {
        return;
    };
    let cosign_run = |args: &[&str]| cosign(&cosign_bin, s.dir.path(), args);
    // marque attests; cosign verifies.
    let prov = s.provenance();
    s.attest("slsaprovenance1", &prov).expect_code(0);
    let pk = s.public.to_str().unwrap();
    cosign_run(&[
        "verify-attestation",
        "--key",
        pk,
        "--type",
        "slsaprovenance1",
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
        &s.image(),
    ])
    .expect_code(0);

    // cosign attests (a v0.1 statement) with its own key; marque verifies.
    cosign_run(&["generate-key-pair", "--output-key-prefix", "cosign"]).expect_code(0);
    let repo2 = unique_repo("attest-by-cosign");
    let digest2 = support::push_sample_image(s.addr, &repo2, "v1");
    let image2 = format!("{}/{repo2}@{digest2}", s.addr);
    cosign_run(&[
        "attest",
        "--key",
        "cosign.key",
        "--type",
        "slsaprovenance1",
        "--predicate",
        prov.to_str().unwrap(),
        "--tlog-upload=false",
        "--allow-http-registry",
        "-y",
        &image2,
    ])
    .expect_code(0);
    let cosign_pub = s.dir.path().join("cosign.pub");
    let out = marque(
        &[
            "verify-attestation",
            "--key",
            cosign_pub.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            "-o",
            "json",
            &image2,
        ],
        &[],
    );
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["attestations"][0]["statement"]["_type"],
        "https://in-toto.io/Statement/v0.1"
    );
}

/// Small envelopes are embedded in their layer descriptor (`data`, OCI
/// 1.1), so verify needs no blob request; embedded bytes must match the
/// digest.
#[test]
fn embedded_envelopes_are_used_and_checked() {
    let Some(s) = setup("attest-embedded") else {
        return;
    };
    s.attest("slsaprovenance1", &s.provenance()).expect_code(0);
    let tag = format!("{}.att", s.digest.replacen(':', "-", 1));
    let original = get_manifest(s.addr, &s.repo, &tag).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    assert!(m["layers"][0]["data"].is_string());
    // Embedded bytes that do not match the digest are refused.
    use base64::Engine as _;
    m["layers"][0]["data"] = base64::engine::general_purpose::STANDARD
        .encode(b"{\"forged\":true}")
        .into();
    put_manifest(s.addr, &s.repo, &tag, &serde_json::to_vec(&m).unwrap());
    let out = s.verify("slsaprovenance1", &s.image());
    out.expect_code(1);
    assert!(
        out.stderr.contains("embedded envelope does not match"),
        "{}",
        out.stderr
    );
    // Restore it, then delete the blob: the descriptor alone suffices.
    put_manifest(s.addr, &s.repo, &tag, &original);
    let r = support::http::request(
        s.addr,
        "DELETE",
        &format!("/v2/{}/blobs/{layer_digest}", s.repo),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    s.verify("slsaprovenance1", &s.image()).expect_code(0);
}
