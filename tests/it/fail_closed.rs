//! Issue 13, reproduced as found and shown fixed through the CLI, the
//! containerd verifier (`node verify-image`) and the node's trust store:
//! a policy authority that vanished and let unsigned images in, and DSSE
//! envelopes whose thousands of signatures pinned a CPU for minutes. The
//! hostile inputs are built here, at test time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::common::*;
use crate::support;

/// A CA root to name in policies (no certificate of it signs anything).
pub(crate) fn ca_root(dir: &Path) -> PathBuf {
    let root = marque_keys::certificate::new_root(
        "issue 13 root",
        std::time::SystemTime::now(),
        Duration::from_secs(3600),
        0,
    )
    .unwrap();
    let path = dir.join("root.pem");
    std::fs::write(&path, root.cert_pem.as_bytes()).unwrap();
    path
}

/// The policy of about 200 KB that used to drop its CA authority: five
/// identities of 40,000 characters, then (optionally) a second authority
/// that an attestation rule names.
pub(crate) fn large_identity_policy(scope: &str, second: Option<&str>) -> String {
    let ids: Vec<String> = (0..5)
        .map(|i| format!("\"https://ci.example/{i}/{}\"", "x".repeat(40_000)))
        .collect();
    let mut p = format!(
        "version = 1\n[[scope]]\nmatch = [\"{scope}\"]\n[[scope.authority]]\nname = \"ci\"\nca_roots = \"root.pem\"\nidentities = [{}]\n",
        ids.join(", ")
    );
    if let Some(key) = second {
        p += &format!(
            "[[scope.authority]]\nname = \"release\"\nkeys = [\"{key}\"]\n[[scope.attestation]]\ntype = \"slsaprovenance1\"\nauthority = \"release\"\n"
        );
    }
    p
}

#[test]
fn a_large_identity_list_no_longer_allows_unsigned_images() {
    let dir = tempfile::tempdir().unwrap();
    ca_root(dir.path());
    let (_, public) = plain_key(dir.path(), "release");
    let layout = support::image::sample_layout_dir();
    let image = format!("oci:{}", layout.display());
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, large_identity_policy("oci:sample-image", None)).unwrap();
    assert!(std::fs::metadata(&policy).unwrap().len() > 190_000);
    let p = policy.to_str().unwrap();

    marque(&["policy", "check", p], &[]).expect_code(0);
    // The unsigned sample image: DENIED by the authority, which is there.
    let out = marque(&["verify", "--policy", p, &image], &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("DENIED") && out.stderr.contains("authority \"ci\": 0 of 1"),
        "{}",
        out.stderr
    );

    // A rule naming the authority after it: no panic (it was an index out
    // of bounds), and the decision names the right authority.
    let name = public.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        &policy,
        large_identity_policy("oci:sample-image", Some(name)),
    )
    .unwrap();
    let out = marque(&["policy", "explain", p, &image], &[]);
    out.expect_code(1);
    assert!(
        out.stdout
            .contains("attestation https://slsa.dev/provenance/v1 by \"release\": NOT satisfied")
            && out.stdout.contains("decision: DENIED"),
        "{}",
        out.stdout
    );
    let out = marque(&["verify", "--policy", p, "-o", "json", &image], &[]);
    out.expect_code(1);
    let d = &out.json()[0];
    assert_eq!(d["authorities"].as_array().unwrap().len(), 2, "{d}");

    // An identity expression past the compiled-size limit is an error that
    // names the file, the line, the field and the reason.
    let huge: Vec<String> = (0..20_000).map(|i| format!("id{i}\\\\.example")).collect();
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[scope]]\nmatch = [\"oci:sample-image\"]\n[[scope.authority]]\nname = \"ci\"\nca_roots = \"root.pem\"\nidentity_regex = \"{}\"\n",
            huge.join("|")
        ),
    )
    .unwrap();
    let out = marque(&["policy", "check", p], &[]);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("policy.toml:7: scope[0].authority[0].identity_regex")
            && out.stderr.contains("limit"),
        "{}",
        out.stderr
    );
    marque(&["verify", "--policy", p, &image], &[]).expect_code(2);
}

#[test]
fn a_large_identity_list_in_a_trust_bundle_is_enforced_by_the_node() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let repo = unique_repo("fc-bundle");
    let unsigned = support::push_sample_image(&addr, &repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    ca_root(dir.path());
    let (ops_key, ops_pub) = plain_key(dir.path(), "ops");
    let node = dir.path().join("node");
    pin_bundle_signer(&node, &ops_pub, "edge");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        large_identity_policy(&format!("{addr}/{repo}"), None),
    )
    .unwrap();
    publish_and_accept(&policy, "1", &ops_key, &dir.path().join("b1"), &node);
    let (out, _) = node_verify_image(&node, &format!("{addr}/{repo}:v1"), &unsigned, &unsigned);
    out.expect_code(1);
    assert!(
        out.stdout.starts_with("DENIED") && out.stdout.contains("authority \"ci\": 0 of 1"),
        "{}",
        out.stdout
    );
}

/// A signed statement about `digest`, then the `.att` manifest that holds
/// it replaced by one whose only layer is `envelope`.
pub(crate) fn replace_attestation(addr: &str, repo: &str, digest: &str, envelope: &[u8]) {
    let tag = format!("{}.att", digest.replacen(':', "-", 1));
    let m: serde_json::Value =
        serde_json::from_slice(&get_manifest(addr, repo, &tag).unwrap()).unwrap();
    let blob = put_blob(addr, repo, envelope);
    let mut m2 = m.clone();
    m2["layers"] = serde_json::json!([{
        "mediaType": "application/vnd.dsse.envelope.v1+json",
        "digest": blob,
        "size": envelope.len(),
        "annotations": {
            "dev.cosignproject.cosign/signature": "",
            "predicateType": "https://slsa.dev/provenance/v1",
        },
    }]);
    put_manifest(addr, repo, &tag, &serde_json::to_vec(&m2).unwrap());
}

/// The envelope that `marque attest` wrote for `digest`.
pub(crate) fn attested_envelope(addr: &str, repo: &str, digest: &str) -> serde_json::Value {
    let tag = format!("{}.att", digest.replacen(':', "-", 1));
    let m: serde_json::Value =
        serde_json::from_slice(&get_manifest(addr, repo, &tag).unwrap()).unwrap();
    let layer = &m["layers"][0];
    let bytes = get_blob(addr, repo, layer["digest"].as_str().unwrap());
    serde_json::from_slice(&bytes).unwrap()
}

/// As found: a payload of ~10.7 MB (the statement, padded with JSON
/// whitespace) and 2,001 signatures of `{"sig":"AA=="}`.
pub(crate) fn hostile_envelope(
    real: &serde_json::Value,
    size: usize,
    signatures: usize,
) -> Vec<u8> {
    let statement = STANDARD.decode(real["payload"].as_str().unwrap()).unwrap();
    let mut padded = statement.clone();
    padded.resize(size, b' ');
    let sigs: Vec<serde_json::Value> = (0..signatures)
        .map(|_| serde_json::json!({ "sig": "AA==" }))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "payloadType": real["payloadType"],
        "payload": STANDARD.encode(padded),
        "signatures": sigs,
    }))
    .unwrap()
}

pub(crate) fn attest(addr: &str, repo: &str, digest: &str, key: &Path, dir: &Path) {
    let predicate = dir.join("predicate.json");
    std::fs::write(
        &predicate,
        r#"{"buildDefinition":{"buildType":"https://example/t"},"runDetails":{"builder":{"id":"https://ci.example/b"}}}"#,
    )
    .unwrap();
    marque(
        &[
            "attest",
            "--key",
            key.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            "--predicate",
            predicate.to_str().unwrap(),
            &format!("{addr}/{repo}@{digest}"),
        ],
        &[],
    )
    .expect_code(0);
}

#[test]
fn envelopes_with_thousands_of_signatures_are_refused_at_once() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let repo = unique_repo("fc-dsse");
    let digest = support::push_sample_image(&addr, &repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = plain_key(dir.path(), "release");
    attest(&addr, &repo, &digest, &key, dir.path());
    let real = attested_envelope(&addr, &repo, &digest);
    let image = format!("{addr}/{repo}@{digest}");
    let verify = || {
        let start = Instant::now();
        let out = marque(
            &[
                "verify-attestation",
                "--key",
                public.to_str().unwrap(),
                "--type",
                "slsaprovenance1",
                &image,
            ],
            &[],
        );
        (out, start.elapsed())
    };
    verify().0.expect_code(0);

    // The legitimate signature among 15 well-formed fakes (under the cap):
    // still verified, the payload hashed once for all of them.
    let mut crowded = real.clone();
    let good = real["signatures"][0].clone();
    let fakes: Vec<serde_json::Value> = (0..15u8)
        .map(|i| {
            let mut sig = STANDARD.decode(good["sig"].as_str().unwrap()).unwrap();
            let n = sig.len();
            sig[n - 1] ^= i + 1;
            serde_json::json!({ "keyid": "", "sig": STANDARD.encode(sig) })
        })
        .chain([good.clone()])
        .collect();
    crowded["signatures"] = serde_json::Value::Array(fakes);
    replace_attestation(
        &addr,
        &repo,
        &digest,
        &serde_json::to_vec(&crowded).unwrap(),
    );
    verify().0.expect_code(0);

    // As found: 10.7 MB and 2,001 signatures took 8.1 s; now refused
    // before any signature is checked.
    let hostile = hostile_envelope(&real, 8 << 20, 2001);
    assert!(hostile.len() > 10_700_000, "{}", hostile.len());
    replace_attestation(&addr, &repo, &digest, &hostile);
    let (out, took) = verify();
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("the envelope carries 2001 signatures, more than the 16 accepted"),
        "{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The same through containerd's verifier, under a trust bundle that
    // requires the attestation: 9 MB took 26.9 s past its 8 s timeout.
    let hostile = hostile_envelope(&real, 6_700_000, 2001);
    replace_attestation(&addr, &repo, &digest, &hostile);
    let (ops_key, ops_pub) = plain_key(dir.path(), "ops");
    let node = dir.path().join("node");
    pin_bundle_signer(&node, &ops_pub, "edge");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[scope]]\nmatch = [\"{addr}/{repo}\"]\nmode = \"enforce\"\n[[scope.authority]]\nname = \"release\"\nkeys = [\"release.pub\"]\n[[scope.attestation]]\ntype = \"slsaprovenance1\"\nauthority = \"release\"\n"
        ),
    )
    .unwrap();
    marque(&["sign", "--key", key.to_str().unwrap(), &image], &[]).expect_code(0);
    publish_and_accept(&policy, "1", &ops_key, &dir.path().join("b1"), &node);
    let (out, took) = node_verify_image(&node, &format!("{addr}/{repo}:v1"), &digest, &digest);
    out.expect_code(1);
    assert!(
        out.stdout.starts_with("DENIED") && out.stdout.contains("2001 signatures"),
        "{}",
        out.stdout
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // With the real envelope back, the same node allows the image.
    replace_attestation(&addr, &repo, &digest, &serde_json::to_vec(&real).unwrap());
    let (out, _) = node_verify_image(&node, &format!("{addr}/{repo}:v1"), &digest, &digest);
    out.expect_code(0);
}

#[test]
fn a_trust_bundle_with_thousands_of_signatures_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Ed25519 signers, as found: each try hashes the whole bundle.
    let signer = marque_keys::SigningKey::generate(marque_keys::Algorithm::Ed25519).unwrap();
    let key = dir.path().join("ops.pem");
    let public = dir.path().join("ops.pub");
    std::fs::write(&key, signer.to_pkcs8_pem()).unwrap();
    std::fs::write(&public, signer.public_key().to_pem()).unwrap();
    let node = dir.path().join("node");
    pin_bundle_signer(&node, &public, "edge");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[[scope]]\nmatch = [\"r.example/**\"]\nmode = \"skip\"\n",
    )
    .unwrap();
    let good = dir.path().join("good.json");
    publish_and_accept(&policy, "1", &key, &good, &node);
    // A removed node written so that it matches no node is refused, not
    // published to leave that node running.
    let bad = dir.path().join("bad.json");
    let out = trust_publish(
        &policy,
        "2",
        &key,
        &["--revoke-node", "Node-7", "--out", bad.to_str().unwrap()],
    );
    out.expect_code(2);
    assert!(
        out.stderr.contains("\"Node-7\" is not a node id"),
        "{}",
        out.stderr
    );

    // v2, padded to ~4 MiB with 22,162 zero signatures (took 87 s).
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    let zero = STANDARD.encode([0u8; 64]);
    env["signatures"] = serde_json::Value::Array(
        (0..22_162)
            .map(|_| serde_json::json!({ "keyid": "", "sig": zero }))
            .collect(),
    );
    let hostile = dir.path().join("hostile.json");
    std::fs::write(&hostile, serde_json::to_vec(&env).unwrap()).unwrap();
    let start = Instant::now();
    let out = marque(
        &[
            "node",
            "trust",
            "--state",
            node.to_str().unwrap(),
            "--bundle",
            hostile.to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("the envelope carries 22162 signatures, more than the 16 accepted"),
        "{}",
        out.stderr
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// The per-decision work budget through containerd's verifier: an image
/// whose `.sig` tag holds 1,000 well-formed signatures (none valid, each
/// embedded so nothing is fetched) against an authority of 100 keys is
/// 100,000 signature checks. The budget stops them after about a second;
/// the pull is refused, with the reason.
#[test]
fn a_decision_past_its_work_budget_is_refused_by_the_node() {
    let Some(reg) = registry() else { return };
    let addr = reg.addr();
    let repo = unique_repo("fc-budget");
    let digest = support::push_sample_image(&addr, &repo, "v1");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for i in 0..100 {
        let key =
            marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
        let name = format!("k{i}.pub");
        std::fs::write(dir.path().join(&name), key.public_key().to_pem()).unwrap();
        names.push(format!("\"{name}\""));
    }
    let forger =
        marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256).unwrap();
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{addr}/{repo}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let config = put_blob(&addr, &repo, b"{}");
    // The registry wants the blob; marque reads the embedded copy.
    put_blob(&addr, &repo, payload.as_bytes());
    let layers: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            let sig = forger
                .sign(format!("not the payload {i}").as_bytes())
                .unwrap();
            serde_json::json!({
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "digest": support::sha256_digest(payload.as_bytes()),
                "size": payload.len(),
                "annotations": { "dev.cosignproject.cosign/signature": STANDARD.encode(sig) },
                "data": STANDARD.encode(&payload),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2 },
        "layers": layers,
    });
    put_manifest(
        &addr,
        &repo,
        &format!("{}.sig", digest.replacen(':', "-", 1)),
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let (ops_key, ops_pub) = plain_key(dir.path(), "ops");
    let node = dir.path().join("node");
    pin_bundle_signer(&node, &ops_pub, "edge");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n[[scope]]\nmatch = [\"{addr}/{repo}\"]\n[[scope.authority]]\nname = \"release\"\nkeys = [{}]\n",
            names.join(", ")
        ),
    )
    .unwrap();
    publish_and_accept(&policy, "1", &ops_key, &dir.path().join("b1"), &node);
    let (out, took) = node_verify_image(&node, &format!("{addr}/{repo}:v1"), &digest, &digest);
    out.expect_code(1);
    assert!(
        out.stdout.starts_with("DENIED")
            && out.stdout.contains("work limit")
            && out.stdout.contains("the image is refused"),
        "{}",
        out.stdout
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
}
