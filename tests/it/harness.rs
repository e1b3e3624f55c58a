//! Tests of the test harness itself: the registry starts, the sample image
//! layout is consistent and pushes with its own digest, synthetic images are
//! distinct, and (when installed) cosign and skopeo run and interoperate with
//! the registry the way the e2e tests expect.

use std::process::Command;

use crate::support::{self, Registry, peers};

#[test]
fn sample_layout_is_consistent() {
    let img = support::sample_image();
    assert_eq!(support::sha256_digest(&img.manifest), img.digest);
    let m: serde_json::Value = serde_json::from_slice(&img.manifest).expect("manifest JSON");
    assert_eq!(m["mediaType"], support::OCI_MANIFEST);
    assert_eq!(m["config"]["size"].as_u64(), Some(img.config.len() as u64));
    let config: serde_json::Value = serde_json::from_slice(&img.config).expect("config JSON");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(img.layers.len(), 1);
    // The layer is gzip (magic 1f 8b) and small.
    assert_eq!(&img.layers[0].1[..2], &[0x1f, 0x8b]);
    let oci_layout =
        std::fs::read_to_string(support::image::sample_layout_dir().join("oci-layout"))
            .expect("oci-layout");
    assert!(oci_layout.contains("\"imageLayoutVersion\":\"1.0.0\""));
}

#[test]
fn sample_layout_is_reproducible() {
    // make.py --check exits 1 when the committed bytes differ from what it would write.
    let script = support::image::sample_layout_dir().join("make.py");
    let out = match Command::new("python3").arg(&script).arg("--check").output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipping: python3 not runnable ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "make.py --check failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(printed, support::sample_image().digest);
}

#[test]
fn registry_starts_and_answers_v2() {
    let Some(reg) = Registry::start() else { return };
    let r = reg.request("GET", "/v2/", &[], &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );
    assert!(reg.addr().starts_with("127.0.0.1:"));
    // No referrers API on this registry: clients must use the tag fallback.
    let digest = support::push_sample_image(&reg.addr(), "harness/referrers", "v1");
    let r = reg.request(
        "GET",
        &format!("/v2/harness/referrers/referrers/{digest}"),
        &[],
        &[],
    );
    assert_eq!(r.status, 404);
}

#[test]
fn two_registries_run_side_by_side_and_stop_on_drop() {
    let (Some(a), Some(b)) = (Registry::start(), Registry::start()) else {
        return;
    };
    assert_ne!(a.addr(), b.addr());
    let addr = a.addr();
    drop(a);
    // After drop the port no longer answers (the process is gone).
    assert!(support::http::get(&addr, "/v2/", &[]).is_err());
    assert_eq!(b.request("GET", "/v2/", &[], &[]).status, 200);
}

#[test]
fn sample_image_pushes_with_layout_digest() {
    let Some(reg) = Registry::start() else { return };
    let img = support::sample_image();
    let digest = support::push_sample_image(&reg.addr(), "harness/sample", "latest");
    assert_eq!(digest, img.digest);

    let by_tag = reg.get_manifest("harness/sample", "latest");
    assert_eq!(by_tag.status, 200, "{}", by_tag.text());
    assert_eq!(
        by_tag.header("Docker-Content-Digest"),
        Some(digest.as_str())
    );
    assert_eq!(by_tag.header("Content-Type"), Some(support::OCI_MANIFEST));
    assert_eq!(
        by_tag.body, img.manifest,
        "registry stores the manifest bytes as sent"
    );

    let by_digest = reg.get_manifest("harness/sample", &digest);
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, img.manifest);

    let m: serde_json::Value = serde_json::from_slice(&img.manifest).expect("manifest JSON");
    let config_digest = m["config"]["digest"].as_str().expect("config digest");
    assert_eq!(reg.get_blob("harness/sample", config_digest), img.config);
    assert_eq!(
        reg.get_blob("harness/sample", &img.layers[0].0),
        img.layers[0].1
    );
    assert_eq!(reg.tags("harness/sample"), vec!["latest".to_owned()]);

    // Pushing again is idempotent (blobs are skipped via HEAD).
    assert_eq!(
        support::push_sample_image(&reg.addr(), "harness/sample", "again"),
        digest
    );
}

#[test]
fn synthetic_images_have_distinct_digests() {
    let Some(reg) = Registry::start() else { return };
    let sample = support::sample_image().digest;
    let digests: Vec<String> = (0..4)
        .map(|n| support::push_synthetic_image(&reg.addr(), "harness/batch", &format!("n{n}"), n))
        .collect();
    let mut unique = digests.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), digests.len());
    assert!(!digests.contains(&sample));
    // Deterministic: the same n gives the same digest.
    assert_eq!(
        support::push_synthetic_image(&reg.addr(), "harness/batch", "again", 2),
        digests[2]
    );
    for (n, d) in digests.iter().enumerate() {
        let r = reg.get_manifest("harness/batch", &format!("n{n}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Docker-Content-Digest"), Some(d.as_str()));
    }
}

#[test]
fn manifest_put_needs_matching_content_type() {
    let Some(reg) = Registry::start() else { return };
    let img = support::sample_image();
    support::push_sample_image(&reg.addr(), "harness/ct", "v1");
    let r = reg.request(
        "PUT",
        "/v2/harness/ct/manifests/wrong",
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        &img.manifest,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn peers_run() {
    if let Some(cosign) = peers::cosign() {
        let (ok, out, err) = run(Command::new(&cosign).arg("version"));
        assert!(ok, "cosign version: {out}{err}");
        assert!(out.contains("GitVersion"), "{out}");
    }
    if let Some(skopeo) = peers::skopeo() {
        let (ok, out, err) = run(Command::new(&skopeo).arg("--version"));
        assert!(ok, "skopeo --version: {out}{err}");
        assert!(out.starts_with("skopeo version 1."), "{out}");
    }
}

/// cosign signs the pushed sample image and verifies it; skopeo accepts the
/// signature with a sigstoreSigned/matchRepository policy and rejects an
/// unsigned image. This proves the harness works with the real peers.
#[test]
fn cosign_and_skopeo_interoperate_on_sample_image() {
    let Some(reg) = Registry::start() else { return };
    let (Some(cosign), Some(skopeo)) = (peers::cosign(), peers::skopeo()) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let digest = support::push_sample_image(&reg.addr(), "harness/signed", "v1");
    support::push_sample_image(&reg.addr(), "harness/unsigned", "v1");
    let image = format!("{}@{digest}", reg.repo("harness/signed"));

    let cosign_cmd = |args: &[&str]| {
        let mut c = Command::new(&cosign);
        c.args(args)
            .current_dir(tmp.path())
            .env("COSIGN_PASSWORD", "harness");
        c
    };
    let (ok, out, err) = run(&mut cosign_cmd(&[
        "generate-key-pair",
        "--output-key-prefix",
        "k",
    ]));
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&mut cosign_cmd(&[
        "sign",
        "--key",
        "k.key",
        "--tlog-upload=false",
        "--allow-http-registry",
        "-y",
        &image,
    ]));
    assert!(ok, "cosign sign: {out}{err}");
    let (ok, out, err) = run(&mut cosign_cmd(&[
        "verify",
        "--key",
        "k.pub",
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
        &image,
    ]));
    assert!(ok, "cosign verify: {out}{err}");
    let payloads: serde_json::Value = serde_json::from_str(out.trim()).expect("verify prints JSON");
    assert_eq!(
        payloads[0]["critical"]["image"]["docker-manifest-digest"].as_str(),
        Some(digest.as_str())
    );
    let sig_tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    assert!(reg.tags("harness/signed").contains(&sig_tag));

    let regd = tmp.path().join("registries.d");
    peers::write_registries_d(&regd);
    let policy = tmp.path().join("policy.json");
    peers::write_sigstore_policy(&policy, &reg.addr(), &tmp.path().join("k.pub"));
    let pull = |repo: &str, dest: &str| {
        let mut c = Command::new(&skopeo);
        c.arg("--policy")
            .arg(&policy)
            .arg("--registries.d")
            .arg(&regd)
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}:v1", reg.repo(repo)))
            .arg(format!("dir:{}", tmp.path().join(dest).display()));
        run(&mut c)
    };
    let (ok, out, err) = pull("harness/signed", "pulled");
    assert!(ok, "skopeo should accept cosign's signature: {out}{err}");
    let (ok, _, err) = pull("harness/unsigned", "rejected");
    assert!(!ok);
    assert!(
        err.contains("A signature was required, but no signature exists"),
        "{err}"
    );
}
