//! Sign and verify through a real registry with the real binary.

use crate::common::*;
use crate::support;

fn setup(prefix: &str) -> Option<(&'static str, String, String, tempfile::TempDir)> {
    let reg = registry()?;
    let addr: &'static str = Box::leak(reg.addr().to_owned().into_boxed_str());
    let repo = unique_repo(prefix);
    let digest = support::push_sample_image(addr, &repo, "v1");
    Some((addr, repo, digest, tempfile::tempdir().unwrap()))
}

#[test]
fn sign_then_verify_by_tag_and_digest() {
    let Some((addr, repo, digest, dir)) = setup("roundtrip") else {
        return;
    };
    let (key, public) = generate_key(dir.path(), "release");
    let image = format!("{addr}/{repo}:v1");
    let out = marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--output",
            "json",
            &image,
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    );
    out.expect_code(0);
    let json = out.json();
    assert_eq!(json[0]["digest"], digest.as_str());
    assert_eq!(json[0]["signature_tag"], sig_tag(&digest).as_str());
    assert_eq!(json[0]["appended"], true);

    // The stored payload is cosign's, byte for byte.
    let m = sig_manifest(addr, &repo, &digest).expect("signature manifest");
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    let layer = &m["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert!(layer["annotations"]["dev.cosignproject.cosign/signature"].is_string());
    // The payload is cosign's plus the signing time, in the form skopeo
    // writes it, and it is also embedded in the descriptor.
    let payload = get_blob(addr, &repo, layer["digest"].as_str().unwrap());
    let parsed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        parsed["critical"]["identity"]["docker-reference"],
        format!("{addr}/{repo}").as_str()
    );
    assert_eq!(
        parsed["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert!(
        parsed["optional"]["creator"]
            .as_str()
            .unwrap()
            .starts_with("marque ")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed_at = parsed["optional"]["timestamp"].as_u64().unwrap();
    assert!(now.abs_diff(signed_at) < 300, "{signed_at} vs {now}");
    use base64::Engine as _;
    assert_eq!(
        layer["data"].as_str().unwrap(),
        base64::engine::general_purpose::STANDARD.encode(&payload)
    );

    for reference in [image.clone(), format!("{addr}/{repo}@{digest}")] {
        let out = marque(
            &[
                "verify",
                "--key",
                public.to_str().unwrap(),
                "-o",
                "json",
                &reference,
            ],
            &[],
        );
        out.expect_code(0);
        let json = out.json();
        assert_eq!(json[0]["verified"], true);
        assert_eq!(json[0]["digest"], digest.as_str());
        let sigs = json[0]["signatures"].as_array().expect("signatures");
        assert_eq!(sigs.len(), 1);
        assert!(sigs[0]["key_id"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(
            sigs[0]["payload"]["critical"]["image"]["docker-manifest-digest"],
            digest.as_str()
        );
        assert!(out.stderr.contains("Verified"), "{}", out.stderr);
        assert_eq!(sigs[0]["signed_at"], signed_at);
    }
}

#[test]
fn without_timestamp_the_payload_is_cosigns_byte_for_byte() {
    let Some((addr, repo, digest, dir)) = setup("notimestamp") else {
        return;
    };
    let (key, public) = plain_key(dir.path(), "k");
    let image = format!("{addr}/{repo}:v1");
    marque(
        &[
            "sign",
            "--no-timestamp",
            "--key",
            key.to_str().unwrap(),
            &image,
        ],
        &[],
    )
    .expect_code(0);
    let m = sig_manifest(addr, &repo, &digest).expect("signature manifest");
    let payload = get_blob(addr, &repo, m["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{addr}/{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
    );
    let out = marque(
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "-o",
            "json",
            &image,
        ],
        &[],
    );
    out.expect_code(0);
    assert!(out.json()[0]["signatures"][0].get("signed_at").is_none());
    // The signing-time keys cannot be set by hand while marque stamps.
    let out = marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "-a",
            "timestamp=1",
            &image,
        ],
        &[],
    );
    out.expect_code(2);
    assert!(out.stderr.contains("reserved"), "{}", out.stderr);
}

#[test]
fn wrong_key_and_unsigned_image_fail_with_exit_1() {
    let Some((addr, repo, _digest, dir)) = setup("wrongkey") else {
        return;
    };
    let (key, _) = plain_key(dir.path(), "signer");
    let (_, other_pub) = plain_key(dir.path(), "other");
    let image = format!("{addr}/{repo}:v1");
    marque(&["sign", "--key", key.to_str().unwrap(), &image], &[]).expect_code(0);
    let out = marque(
        &["verify", "--key", other_pub.to_str().unwrap(), &image],
        &[],
    );
    out.expect_code(1);
    assert!(
        out.stderr.contains("does not verify with any given key"),
        "{}",
        out.stderr
    );

    let unsigned = unique_repo("unsigned");
    support::push_sample_image(addr, &unsigned, "v1");
    let out = marque(
        &[
            "verify",
            "--key",
            other_pub.to_str().unwrap(),
            &format!("{addr}/{unsigned}:v1"),
        ],
        &[],
    );
    out.expect_code(1);
    assert!(out.stderr.contains("no signatures found"), "{}", out.stderr);
}

#[test]
fn several_keys_any_one_may_verify() {
    let Some((addr, repo, _digest, dir)) = setup("anykey") else {
        return;
    };
    let (key, public) = plain_key(dir.path(), "signer");
    let (_, other_pub) = plain_key(dir.path(), "other");
    let image = format!("{addr}/{repo}:v1");
    marque(&["sign", "--key", key.to_str().unwrap(), &image], &[]).expect_code(0);
    marque(
        &[
            "verify",
            "--key",
            other_pub.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            &image,
        ],
        &[],
    )
    .expect_code(0);
}

#[test]
fn annotations_are_signed_and_required() {
    let Some((addr, repo, digest, dir)) = setup("annot") else {
        return;
    };
    let (key, public) = plain_key(dir.path(), "signer");
    let image = format!("{addr}/{repo}@{digest}");
    marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "-a",
            "git-sha=abc",
            "-a",
            "env=prod",
            &image,
        ],
        &[],
    )
    .expect_code(0);
    let pk = public.to_str().unwrap();
    let out = marque(
        &[
            "verify",
            "--key",
            pk,
            "-a",
            "git-sha=abc",
            "-o",
            "json",
            &image,
        ],
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.json()[0]["verified"], true);
    let out = marque(&["verify", "--key", pk, "-a", "git-sha=def", &image], &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("git-sha"), "{}", out.stderr);
    marque(&["verify", "--key", pk, "-a", "missing=x", &image], &[]).expect_code(1);
}

#[test]
fn appending_keeps_other_signatures_and_skips_duplicates() {
    let Some((addr, repo, digest, dir)) = setup("append") else {
        return;
    };
    let (k1, p1) = plain_key(dir.path(), "one");
    let (k2, p2) = plain_key(dir.path(), "two");
    let image = format!("{addr}/{repo}:v1");
    // Without timestamps, signing twice with one key gives one payload.
    let k1_plain = ["sign", "--no-timestamp", "--key", k1.to_str().unwrap()];
    marque(&[&k1_plain[..], &[&image]].concat(), &[]).expect_code(0);
    marque(&["sign", "--key", k2.to_str().unwrap(), &image], &[]).expect_code(0);
    let out = marque(&[&k1_plain[..], &["-o", "json", &image]].concat(), &[]);
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["appended"],
        false,
        "same key and payload must not add a layer"
    );
    let m = sig_manifest(addr, &repo, &digest).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    // Re-signing with a signing time (to stay fresh) adds a layer and
    // keeps the older ones.
    let out = marque(
        &["sign", "--key", k1.to_str().unwrap(), "-o", "json", &image],
        &[],
    );
    assert_eq!(out.expect_code(0).json()[0]["appended"], true);
    let m = sig_manifest(addr, &repo, &digest).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    // The config lists one diff_id per layer, in order, as cosign writes it.
    let config: serde_json::Value = serde_json::from_slice(&get_blob(
        addr,
        &repo,
        m["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    for p in [&p1, &p2] {
        marque(&["verify", "--key", p.to_str().unwrap(), &image], &[]).expect_code(0);
    }
}

#[test]
fn signing_several_images_in_one_call() {
    let Some(reg) = registry() else { return };
    let addr = &reg.addr();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "batch");
    let repo = unique_repo("batch");
    let images: Vec<String> = (0..6)
        .map(|n| {
            support::push_synthetic_image(addr, &repo, &format!("t{n}"), n);
            format!("{addr}/{repo}:t{n}")
        })
        .collect();
    let mut args = vec![
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--jobs",
        "3",
        "-o",
        "json",
    ];
    args.extend(images.iter().map(String::as_str));
    let out = marque(&args, &[]);
    out.expect_code(0);
    let json = out.json();
    assert_eq!(json.as_array().unwrap().len(), 6);
    let mut args = vec!["verify", "--key", public.to_str().unwrap(), "-o", "json"];
    args.extend(images.iter().map(String::as_str));
    let out = marque(&args, &[]);
    out.expect_code(0);
    assert!(
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["verified"] == true)
    );
    assert!(
        out.stderr.contains("6 of 6 images verified"),
        "{}",
        out.stderr
    );
}

#[test]
fn unreachable_registry_is_an_operational_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = plain_key(dir.path(), "k");
    // Port 9 on loopback: nothing listens, so the connection is refused.
    let out = marque(
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--timeout",
            "5",
            "127.0.0.1:9/nothing/here:v1",
        ],
        &[],
    );
    out.expect_code(2);
    assert!(out.stderr.contains("127.0.0.1:9"), "{}", out.stderr);
}

#[test]
fn verify_with_the_public_key_of_a_certificate() {
    let Some((addr, repo, digest, _dir)) = setup("cert") else {
        return;
    };
    let fixture = |n: &str| {
        crate::support::repo_root()
            .join("keys/testdata")
            .join(n)
            .display()
            .to_string()
    };
    let image = format!("{addr}/{repo}@{digest}");
    // p256-cert.pem is a self-signed certificate for p256-pkcs8.pem.
    marque(&["sign", "--key", &fixture("p256-pkcs8.pem"), &image], &[]).expect_code(0);
    marque(&["verify", "--key", &fixture("p256-cert.pem"), &image], &[]).expect_code(0);
}
