//! `marque policy check` and `marque verify --policy`.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::support;

struct Env {
    addr: String,
    dir: tempfile::TempDir,
    keys: Vec<(PathBuf, PathBuf)>,
}

fn env() -> Option<Env> {
    let addr = registry()?.addr();
    let dir = tempfile::tempdir().unwrap();
    let keys = ["alice", "bob", "carol"]
        .iter()
        .map(|n| plain_key(dir.path(), n))
        .collect();
    Some(Env { addr, dir, keys })
}

impl Env {
    fn image(&self, repo: &str) -> String {
        let digest = support::push_sample_image(&self.addr, repo, "v1");
        format!("{}/{repo}@{digest}", self.addr)
    }

    fn sign(&self, who: usize, image: &str) {
        marque(
            &["sign", "--key", self.keys[who].0.to_str().unwrap(), image],
            &[],
        )
        .expect_code(0);
    }

    fn policy(&self, text: &str) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("policy-{}.toml", unique_repo("p")));
        std::fs::write(&p, text.replace("ADDR", &self.addr)).unwrap();
        p
    }

    fn verify(&self, policy: &Path, image: &str) -> Out {
        marque(
            &[
                "verify",
                "--policy",
                policy.to_str().unwrap(),
                "-o",
                "json",
                image,
            ],
            &[],
        )
    }
}

const TWO_OF_THREE: &str = r#"
version = 1

[[scope]]
name = "release"
match = ["ADDR/pol-*"]

[[scope.authority]]
name = "release-managers"
keys = ["alice.pub", "bob.pub", "carol.pub"]
threshold = 2

[[scope]]
name = "audited"
match = ["ADDR/audit-*"]
mode = "audit"

[[scope.authority]]
name = "team"
keys = ["alice.pub"]

[[scope]]
name = "third-party"
match = ["ADDR/vendor/**"]
mode = "skip"
"#;

#[test]
fn two_of_three_distinct_signers() {
    let Some(e) = env() else { return };
    let policy = e.policy(TWO_OF_THREE);
    marque(&["policy", "check", policy.to_str().unwrap()], &[]).expect_code(0);

    let repo = unique_repo("pol-two");
    let image = e.image(&repo);
    e.sign(0, &image);
    let out = e.verify(&policy, &image);
    out.expect_code(1);
    assert!(
        out.stderr.contains("1 of 2 required distinct signers"),
        "{}",
        out.stderr
    );

    // The same signer's layer twice does not count twice.
    let digest = image.rsplit('@').next().unwrap();
    let mut m = sig_manifest(&e.addr, &repo, digest).unwrap();
    let layer = m["layers"][0].clone();
    m["layers"].as_array_mut().unwrap().push(layer);
    put_manifest(
        &e.addr,
        &repo,
        &sig_tag(digest),
        &serde_json::to_vec(&m).unwrap(),
    );
    let out = e.verify(&policy, &image);
    out.expect_code(1);
    assert!(
        out.json()[0]["authorities"][0]["not_counted"]
            .to_string()
            .contains("already counted"),
        "{}",
        out.stdout
    );

    e.sign(1, &image);
    let out = e.verify(&policy, &image);
    out.expect_code(0);
    let d = &out.json()[0];
    assert_eq!(d["allowed"], true);
    assert_eq!(d["authorities"][0]["signers"].as_array().unwrap().len(), 2);
}

#[test]
fn default_deny_audit_and_skip() {
    let Some(e) = env() else { return };
    let policy = e.policy(TWO_OF_THREE);
    // No scope: denied, with the reason.
    let other = e.image(&unique_repo("elsewhere"));
    let out = e.verify(&policy, &other);
    out.expect_code(1);
    assert!(out.stderr.contains("no scope matches"), "{}", out.stderr);
    // Audit: unsigned but allowed, and said so.
    let audited = e.image(&unique_repo("audit-x"));
    let out = e.verify(&policy, &audited);
    out.expect_code(0);
    assert_eq!(out.json()[0]["satisfied"], false);
    assert!(out.stderr.contains("audit"), "{}", out.stderr);
    // Skip: allowed without evidence.
    let vendor = e.image(&format!("vendor/{}", unique_repo("lib")));
    e.verify(&policy, &vendor).expect_code(0);
}

#[test]
fn revocations() {
    let Some(e) = env() else { return };
    let repo = unique_repo("pol-revoked");
    let image = e.image(&repo);
    e.sign(0, &image);
    e.sign(1, &image);
    let digest = image.rsplit('@').next().unwrap().to_owned();
    let alice = marque_keys::PublicKey::from_pem(&std::fs::read(&e.keys[0].1).unwrap()).unwrap();
    let revoked_digest = e.policy(&format!(
        "{TWO_OF_THREE}\n[revocations]\ndigests = [\"{digest}\"]\n"
    ));
    let out = e.verify(&revoked_digest, &image);
    out.expect_code(1);
    assert!(out.stderr.contains("is revoked"), "{}", out.stderr);
    let revoked_key = e.policy(&format!(
        "{TWO_OF_THREE}\n[revocations]\nkeys = [\"{}\"]\n",
        alice.key_id()
    ));
    let out = e.verify(&revoked_key, &image);
    out.expect_code(1);
    assert!(
        out.json()[0]["authorities"][0]["not_counted"]
            .to_string()
            .contains("revoked"),
        "{}",
        out.stdout
    );
}

#[test]
fn policy_check_explains_every_error() {
    let Some(e) = env() else { return };
    let bad = e.policy(
        r#"version = 1
[[scope]]
match = ["ADDR/App"]
[[scope.authority]]
name = "x"
keys = ["alice.pub"]
threshold = 2
[[scope]]
match = ["ADDR/app"]
mode = "skip"
[[scope]]
match = ["ADDR/app"]
mode = "skip"
"#,
    );
    let out = marque(&["policy", "check", bad.to_str().unwrap()], &[]);
    out.expect_code(1);
    for needle in [
        ":3: scope[0].match",
        "matches nothing",
        ":7: scope[0].authority[0].threshold",
        "more than the 1 keys",
        "duplicate scope",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    let unknown = e.policy("version = 1\nverison = 2\n");
    let out = marque(&["policy", "check", unknown.to_str().unwrap()], &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains(":2:") && out.stderr.contains("verison"),
        "{}",
        out.stderr
    );
    // verify --policy refuses a bad policy before any network use.
    marque(
        &[
            "verify",
            "--policy",
            bad.to_str().unwrap(),
            "127.0.0.1:9/x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
        &[],
    )
    .expect_code(2);
}

#[test]
fn a_ca_authority_with_an_identity_regex() {
    let Some(e) = env() else { return };
    let ca = e.dir.path().join("ca");
    marque(
        &["ca", "init", "--out", ca.to_str().unwrap()],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let cert = e.dir.path().join("ci.crt");
    marque(
        &[
            "ca",
            "issue-signer",
            "--ca",
            ca.to_str().unwrap(),
            "--key",
            e.keys[2].1.to_str().unwrap(),
            "--identity",
            "https://ci.example.com/release",
            "--output",
            cert.to_str().unwrap(),
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let policy = e.policy(
        r#"version = 1
[[scope]]
match = ["ADDR/pol-ca-*"]
[[scope.authority]]
name = "ci"
ca_roots = "ca/root.crt"
identity_regex = "https://ci\\.example\\.com/.*"
"#,
    );
    let image = e.image(&unique_repo("pol-ca-app"));
    e.verify(&policy, &image).expect_code(1);
    marque(
        &[
            "sign",
            "--key",
            e.keys[2].0.to_str().unwrap(),
            "--certificate",
            cert.to_str().unwrap(),
            &image,
        ],
        &[],
    )
    .expect_code(0);
    let out = e.verify(&policy, &image);
    out.expect_code(0);
    assert_eq!(
        out.json()[0]["authorities"][0]["signers"][0],
        "https://ci.example.com/release"
    );
}

#[test]
fn batch_from_file_verifies_each_digest_once_and_explain_traces() {
    let Some(e) = env() else { return };
    let policy = e.policy(TWO_OF_THREE);
    let repo = unique_repo("pol-batch");
    let image = e.image(&repo);
    e.sign(0, &image);
    e.sign(2, &image);
    let by_tag = format!("{}/{repo}:v1", e.addr);
    let list = e.dir.path().join("images.txt");
    std::fs::write(&list, format!("# release\n{image}\n\n{by_tag}\n{image}\n")).unwrap();
    let out = marque(
        &[
            "verify",
            "--policy",
            policy.to_str().unwrap(),
            "--from-file",
            list.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.json().as_array().unwrap().len(), 3);
    assert!(
        out.stderr
            .contains("3 of 3 images allowed (1 distinct digests verified)"),
        "{}",
        out.stderr
    );

    let out = marque(
        &["policy", "explain", policy.to_str().unwrap(), &by_tag],
        &[],
    );
    out.expect_code(0);
    for needle in [
        "scope:  \"release\"",
        "2 of 2 distinct signers, satisfied",
        "counted:",
        "decision: ALLOWED",
    ] {
        assert!(out.stdout.contains(needle), "{needle}:\n{}", out.stdout);
    }
}

#[test]
fn required_provenance_with_conditions() {
    let Some(e) = env() else { return };
    let policy_text = |condition: &str| {
        format!(
            r#"version = 1
[[scope]]
match = ["ADDR/pol-prov-*"]
[[scope.authority]]
name = "builder"
keys = ["alice.pub"]
[[scope.attestation]]
type = "slsaprovenance1"
authority = "builder"
{condition}
"#
        )
    };
    let image = e.image(&unique_repo("pol-prov-app"));
    e.sign(0, &image);
    let prov = e.dir.path().join("prov.json");
    marque(
        &[
            "provenance",
            "--builder-id",
            "https://ci.example.com/builders/1",
            "--build-type",
            "https://ci.example.com/t",
            "--source-repo",
            "https://git.example.com/org/app",
            "--output",
            prov.to_str().unwrap(),
        ],
        &[("GITHUB_ACTIONS", ""), ("GITLAB_CI", "")],
    )
    .expect_code(0);
    let with = |cond: &str| e.policy(&policy_text(cond));
    // Required but absent.
    let prefix = with(
        "[[scope.attestation.condition]]\npath = \"predicate.runDetails.builder.id\"\nprefix = \"https://ci.example.com/\"\n",
    );
    let out = e.verify(&prefix, &image);
    out.expect_code(1);
    assert!(
        out.stderr.contains("none satisfies the policy"),
        "{}",
        out.stderr
    );
    marque(
        &[
            "attest",
            "--key",
            e.keys[0].0.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            "--predicate",
            prov.to_str().unwrap(),
            &image,
        ],
        &[],
    )
    .expect_code(0);
    e.verify(&prefix, &image).expect_code(0);
    let one_of = with(
        "[[scope.attestation.condition]]\npath = \"predicate.buildDefinition.externalParameters.source.repository\"\none_of = [\"https://git.example.com/org/app\", \"https://git.example.com/org/lib\"]\n",
    );
    e.verify(&one_of, &image).expect_code(0);
    // Another builder, and a field that is missing, both fail.
    let other = with(
        "[[scope.attestation.condition]]\npath = \"predicate.runDetails.builder.id\"\nequals = \"https://evil.example.com/\"\n",
    );
    e.verify(&other, &image).expect_code(1);
    let missing = with(
        "[[scope.attestation.condition]]\npath = \"predicate.runDetails.metadata.invocationId\"\nprefix = \"https://\"\n",
    );
    let out = e.verify(&missing, &image);
    out.expect_code(1);
    assert!(out.stdout.contains("is missing"), "{}", out.stdout);
    // A rule naming an authority the scope does not have.
    let bad = e.policy(
        &policy_text("").replace("authority = \"builder\"\n\n", "authority = \"nobody\"\n"),
    );
    let out = marque(&["policy", "check", bad.to_str().unwrap()], &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("no usable authority named \"nobody\""),
        "{}",
        out.stderr
    );
}

#[test]
fn max_age_counts_signed_times_only() {
    let Some(e) = env() else { return };
    let policy = e.policy(
        r#"version = 1
[[scope]]
match = ["ADDR/pol-fresh-*"]
max_age = "30d"
[[scope.authority]]
name = "team"
keys = ["alice.pub"]
"#,
    );
    // Signed now: fresh, and the decision says when.
    let fresh = e.image(&unique_repo("pol-fresh-new"));
    e.sign(0, &fresh);
    let out = e.verify(&policy, &fresh);
    out.expect_code(0);
    assert!(out.json()[0]["newest"].as_str().unwrap().starts_with("20"));
    // No signing time at all (cosign's payload): refused, saying why.
    let untimed = e.image(&unique_repo("pol-fresh-untimed"));
    marque(
        &[
            "sign",
            "--no-timestamp",
            "--key",
            e.keys[0].0.to_str().unwrap(),
            &untimed,
        ],
        &[],
    )
    .expect_code(0);
    let out = e.verify(&policy, &untimed);
    out.expect_code(1);
    assert!(
        out.stderr.contains("records a signing time"),
        "{}",
        out.stderr
    );
    // Signed 40 days ago: too old, whatever the registry says.
    let old = e.image(&unique_repo("pol-fresh-old"));
    let (repo, digest) = old
        .strip_prefix(&format!("{}/", e.addr))
        .unwrap()
        .split_once('@')
        .unwrap();
    put_signature_at(
        &e.addr,
        repo,
        digest,
        &e.keys[0].0,
        unix_now() - 40 * 86_400,
    );
    let out = e.verify(&policy, &old);
    out.expect_code(1);
    assert!(
        out.stderr.contains("max_age 30days") && out.stderr.contains("rebuild and re-sign"),
        "{}",
        out.stderr
    );
    // A fresh provenance, signed by the same authority and required by the
    // scope, is a newer build time: allowed.
    let with_provenance = e.policy(
        r#"version = 1
[[scope]]
match = ["ADDR/pol-fresh-*"]
max_age = "30d"
[[scope.authority]]
name = "team"
keys = ["alice.pub"]
[[scope.attestation]]
type = "slsaprovenance1"
authority = "team"
"#,
    );
    let prov = e.dir.path().join("fresh-prov.json");
    marque(
        &[
            "provenance",
            "--builder-id",
            "https://ci.example.com/builders/1",
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
            e.keys[0].0.to_str().unwrap(),
            "--type",
            "slsaprovenance1",
            "--predicate",
            prov.to_str().unwrap(),
            &old,
        ],
        &[],
    )
    .expect_code(0);
    e.verify(&with_provenance, &old).expect_code(0);
    // A future-dated signature does not count at all.
    let future = e.image(&unique_repo("pol-fresh-future"));
    let (repo, digest) = future
        .strip_prefix(&format!("{}/", e.addr))
        .unwrap()
        .split_once('@')
        .unwrap();
    put_signature_at(&e.addr, repo, digest, &e.keys[0].0, unix_now() + 86_400);
    let out = e.verify(&policy, &future);
    out.expect_code(1);
    assert!(
        out.json()[0]["authorities"][0]["not_counted"]
            .to_string()
            .contains("in the future"),
        "{}",
        out.stdout
    );
    // A bad duration is a policy error with its line and field.
    let bad = e.policy(
        "version = 1\n[[scope]]\nmatch = [\"ADDR/x\"]\nmode = \"skip\"\nmax_age = \"30 dayz\"\n",
    );
    let out = marque(&["policy", "check", bad.to_str().unwrap()], &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains(":5: scope[0].max_age") && out.stderr.contains("is not a duration"),
        "{}",
        out.stderr
    );
}

#[test]
fn revoked_certificate_serial_does_not_count() {
    let Some(e) = env() else { return };
    let ca = e.dir.path().join("ca");
    marque(
        &["ca", "init", "--out", ca.to_str().unwrap()],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let cert = e.dir.path().join("ci.crt");
    let out = marque(
        &[
            "ca",
            "issue-signer",
            "--ca",
            ca.to_str().unwrap(),
            "--key",
            e.keys[1].1.to_str().unwrap(),
            "--identity",
            "https://ci.example.com/release",
            "--output",
            cert.to_str().unwrap(),
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    );
    out.expect_code(0);
    let serial = out
        .stderr
        .split("serial ")
        .nth(1)
        .and_then(|s| s.split('.').next())
        .expect("issue-signer prints the serial")
        .to_owned();
    let image = e.image(&unique_repo("pol-serial-app"));
    marque(
        &[
            "sign",
            "--key",
            e.keys[1].0.to_str().unwrap(),
            "--certificate",
            cert.to_str().unwrap(),
            &image,
        ],
        &[],
    )
    .expect_code(0);
    let policy = |revoked: &str| {
        e.policy(&format!(
            r#"version = 1
[[scope]]
match = ["ADDR/pol-serial-*"]
[[scope.authority]]
name = "ci"
ca_roots = "ca/root.crt"
identities = ["https://ci.example.com/release"]
[revocations]
serials = [{revoked}]
"#
        ))
    };
    e.verify(&policy(""), &image).expect_code(0);
    // The serial as printed, and in the colon-separated form openssl prints.
    let colons: Vec<String> = (if serial.len() % 2 == 1 {
        format!("0{serial}")
    } else {
        serial.clone()
    })
    .as_bytes()
    .chunks(2)
    .map(|c| String::from_utf8(c.to_vec()).unwrap().to_uppercase())
    .collect();
    for spelling in [serial.clone(), colons.join(":")] {
        let out = e.verify(&policy(&format!("\"{spelling}\"")), &image);
        out.expect_code(1);
        assert!(
            out.json()[0]["authorities"][0]["not_counted"]
                .to_string()
                .contains(&format!("certificate serial {serial} is revoked")),
            "{}",
            out.stdout
        );
    }
}
