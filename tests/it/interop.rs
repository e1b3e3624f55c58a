//! Interop with the real peers: cosign 2.5 and skopeo 1.18 (Debian trixie).
//! When CI is set a missing peer fails the run (support::peers panics).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::support::{self, peers};

struct Peers {
    cosign: PathBuf,
    skopeo: PathBuf,
    addr: String,
    dir: tempfile::TempDir,
}

fn peers() -> Option<Peers> {
    let reg = registry()?;
    let cosign = peers::cosign()?;
    let skopeo = peers::skopeo()?;
    Some(Peers {
        cosign,
        skopeo,
        addr: reg.addr(),
        dir: tempfile::tempdir().unwrap(),
    })
}

impl Peers {
    fn cosign(&self, args: &[&str]) -> Out {
        cosign(&self.cosign, self.dir.path(), args)
    }

    fn cosign_verify(&self, public: &Path, image: &str) -> Out {
        self.cosign(&[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            image,
        ])
    }

    fn cosign_sign(&self, key: &Path, image: &str) -> Out {
        self.cosign(&[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--tlog-upload=false",
            "--allow-http-registry",
            "-y",
            image,
        ])
    }

    fn skopeo(&self, policy: &Path, args: &[&str]) -> Out {
        let regd = self.dir.path().join("registries.d");
        peers::write_registries_d(&regd);
        run(Command::new(&self.skopeo)
            .arg("--policy")
            .arg(policy)
            .arg("--registries.d")
            .arg(&regd)
            .args(args)
            .env("HOME", self.dir.path()))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn push(&self, prefix: &str) -> (String, String) {
        let repo = unique_repo(prefix);
        let digest = support::push_sample_image(&self.addr, &repo, "v1");
        (repo, digest)
    }
}

#[test]
fn cosign_verify_accepts_marque_signatures() {
    let Some(p) = peers() else { return };
    let (repo, digest) = p.push("to-cosign");
    let (key, public) = generate_key(p.dir.path(), "marque");
    let image = format!("{}/{repo}@{digest}", p.addr);
    marque(
        &["sign", "--key", key.to_str().unwrap(), &image],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let out = p.cosign_verify(&public, &image);
    out.expect_code(0);
    let payloads: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        payloads[0]["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    // And cosign rejects them with the wrong key, so the check is real.
    let (_, other) = plain_key(p.dir.path(), "other");
    assert_ne!(p.cosign_verify(&other, &image).code, 0);
}

#[test]
fn marque_verifies_cosign_signatures_and_cosign_keys() {
    let Some(p) = p_with_cosign_key() else { return };
    let (repo, digest) = p.0.push("from-cosign");
    let image = format!("{}/{repo}@{digest}", p.0.addr);
    p.0.cosign_sign(&p.1, &image).expect_code(0);
    marque(&["verify", "--key", p.2.to_str().unwrap(), &image], &[]).expect_code(0);

    // marque signs with the cosign-generated key file, and cosign accepts it.
    let (repo, digest) = p.0.push("cosign-key");
    let image = format!("{}/{repo}@{digest}", p.0.addr);
    marque(
        &["sign", "--key", p.1.to_str().unwrap(), &image],
        &[("COSIGN_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    p.0.cosign_verify(&p.2, &image).expect_code(0);
    marque(&["verify", "--key", p.2.to_str().unwrap(), &image], &[]).expect_code(0);
    // Both signatures on one image: cosign's and marque's, nothing lost.
    p.0.cosign_sign(&p.1, &image).expect_code(0);
    let m = sig_manifest(&p.0.addr, &repo, &digest).unwrap();
    assert!(!m["layers"].as_array().unwrap().is_empty());
}

fn p_with_cosign_key() -> Option<(Peers, PathBuf, PathBuf)> {
    let p = peers()?;
    p.cosign(&["generate-key-pair", "--output-key-prefix", "cosign"])
        .expect_code(0);
    let (k, pk) = (p.path("cosign.key"), p.path("cosign.pub"));
    Some((p, k, pk))
}

#[test]
fn cosign_signs_with_marque_key_files() {
    let Some(p) = peers() else { return };
    let (key, public) = generate_key(p.dir.path(), "marque");
    let (repo, digest) = p.push("marque-key");
    let image = format!("{}/{repo}@{digest}", p.addr);
    p.cosign_sign(&key, &image).expect_code(0);
    p.cosign_verify(&public, &image).expect_code(0);
    marque(&["verify", "--key", public.to_str().unwrap(), &image], &[]).expect_code(0);
    // `marque key public` prints the same public key cosign derives.
    let out = marque(
        &["key", "public", "--key", key.to_str().unwrap()],
        &[("MARQUE_PASSWORD", PASSWORD)],
    );
    out.expect_code(0);
    assert_eq!(out.stdout, std::fs::read_to_string(&public).unwrap());
}

#[test]
fn marque_verifies_skopeo_signatures_and_signs_with_skopeo_keys() {
    let Some(p) = peers() else { return };
    let pass = p.path("pass");
    std::fs::write(&pass, PASSWORD).unwrap();
    let insecure = p.path("insecure.json");
    peers::write_insecure_policy(&insecure);
    p.skopeo(
        &insecure,
        &[
            "generate-sigstore-key",
            "--output-prefix",
            p.path("skopeo").to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    )
    .expect_code(0);
    let (key, public) = (p.path("skopeo.private"), p.path("skopeo.pub"));

    let repo = unique_repo("from-skopeo");
    let layout = format!(
        "oci:{}:latest",
        support::image::sample_layout_dir().display()
    );
    let dest = format!("docker://{}/{repo}:v1", p.addr);
    p.skopeo(
        &insecure,
        &[
            "copy",
            "--sign-by-sigstore-private-key",
            key.to_str().unwrap(),
            "--sign-passphrase-file",
            pass.to_str().unwrap(),
            "--dest-tls-verify=false",
            &layout,
            &dest,
        ],
    )
    .expect_code(0);
    // skopeo signs repo:tag; the default identity rule accepts it.
    let image = format!("{}/{repo}:v1", p.addr);
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
    let reference =
        &out.json()[0]["signatures"][0]["payload"]["critical"]["identity"]["docker-reference"];
    assert_eq!(reference, &serde_json::Value::from(image.clone()));
    marque(
        &[
            "verify",
            "--key",
            public.to_str().unwrap(),
            "--identity",
            "exact",
            &image,
        ],
        &[],
    )
    .expect_code(0);

    // marque signs with skopeo's key file (label ENCRYPTED COSIGN PRIVATE KEY).
    let (repo2, digest2) = p.push("skopeo-key");
    let image2 = format!("{}/{repo2}@{digest2}", p.addr);
    marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--password-file",
            pass.to_str().unwrap(),
            &image2,
        ],
        &[],
    )
    .expect_code(0);
    marque(&["verify", "--key", public.to_str().unwrap(), &image2], &[]).expect_code(0);
}

#[test]
fn skopeo_policy_accepts_marque_signed_and_rejects_unsigned() {
    let Some(p) = peers() else { return };
    let (key, public) = generate_key(p.dir.path(), "marque");
    let (signed, digest) = p.push("skopeo-pull-signed");
    let (unsigned, _) = p.push("skopeo-pull-unsigned");
    marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            &format!("{}/{signed}:v1", p.addr),
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let policy = p.path("policy.json");
    peers::write_sigstore_policy(&policy, &p.addr, &public);
    let pull = |repo: &str, dest: &str| {
        p.skopeo(
            &policy,
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{}/{repo}:v1", p.addr),
                &format!("dir:{}", p.path(dest).display()),
            ],
        )
    };
    pull(&signed, "pulled").expect_code(0);
    let by_digest = p.skopeo(
        &policy,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/{signed}@{digest}", p.addr),
            &format!("dir:{}", p.path("bydigest").display()),
        ],
    );
    by_digest.expect_code(0);
    let out = pull(&unsigned, "rejected");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("A signature was required, but no signature exists"),
        "{}",
        out.stderr
    );
}

#[test]
fn exported_containers_policy_makes_skopeo_decide_as_marque() {
    let Some(p) = peers() else { return };
    let (team_key, _team_pub) = plain_key(p.dir.path(), "team");
    let (ops_key, ops_pub) = plain_key(p.dir.path(), "ops");
    let ns = unique_repo("exp");
    let signed = format!("{ns}/signed");
    let unsigned = format!("{ns}/unsigned");
    support::push_sample_image(&p.addr, &signed, "v1");
    support::push_sample_image(&p.addr, &unsigned, "v1");
    marque(
        &[
            "sign",
            "--key",
            team_key.to_str().unwrap(),
            &format!("{}/{signed}:v1", p.addr),
        ],
        &[],
    )
    .expect_code(0);
    let policy = p.path("policy.toml");
    let write_policy = |threshold: &str| {
        std::fs::write(
            &policy,
            format!(
                "version = 1\n[[scope]]\nmatch = [\"{}/{ns}/**\"]\n[[scope.authority]]\nname = \"team\"\nkeys = [\"team.pub\", \"ops.pub\"]\nthreshold = {threshold}\n",
                p.addr
            ),
        )
        .unwrap();
    };
    write_policy("1");
    // A node whose bundle signer is `ops`, with a bundle for this policy.
    let node = p.path("node");
    pin_bundle_signer(&node, &ops_pub, "edge");
    let publish_and_accept = |version: &str| {
        let bundle = p.path(&format!("bundle-{version}"));
        publish_and_accept(&policy, version, &ops_key, &bundle, &node);
    };
    publish_and_accept("1");
    let out_dir = p.path("containers");
    let export = || {
        marque(
            &[
                "node",
                "export",
                "--format",
                "containers-policy",
                "--state",
                node.to_str().unwrap(),
                "--out",
                out_dir.to_str().unwrap(),
            ],
            &[],
        )
    };
    export().expect_code(0);
    let skopeo_pull = |repo: &str| {
        run(Command::new(&p.skopeo)
            .arg("--policy")
            .arg(out_dir.join("policy.json"))
            .arg("--registries.d")
            .arg(out_dir.join("registries.d"))
            .args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{}/{repo}:v1", p.addr),
                &format!(
                    "dir:{}",
                    p.path(&format!("pulled-{}", repo.replace('/', "-")))
                        .display()
                ),
            ])
            .env("HOME", p.dir.path()))
    };
    let marque_verify = |repo: &str| {
        marque(
            &[
                "verify",
                "--policy",
                policy.to_str().unwrap(),
                &format!("{}/{repo}:v1", p.addr),
            ],
            &[],
        )
        .code
    };
    // The same decisions: the signed image is accepted by both, the
    // unsigned one by neither, and a repository outside the scope is
    // rejected by default by both.
    skopeo_pull(&signed).expect_code(0);
    assert_eq!(marque_verify(&signed), 0);
    assert_ne!(skopeo_pull(&unsigned).code, 0);
    assert_eq!(marque_verify(&unsigned), 1);
    let (outside, _) = p.push("outside");
    assert_ne!(skopeo_pull(&outside).code, 0);
    assert_eq!(marque_verify(&outside), 1);
    // A policy policy.json cannot express is refused, not weakened.
    write_policy("2");
    publish_and_accept("2");
    let out = export();
    out.expect_code(2);
    assert!(
        out.stderr.contains("cannot express") && out.stderr.contains("2 distinct signers"),
        "{}",
        out.stderr
    );
}
