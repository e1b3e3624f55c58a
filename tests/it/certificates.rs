//! Certificate-based signing with a private CA: `marque ca …`,
//! `sign --certificate`, `verify --ca-roots --certificate-identity`.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::support;

struct Pki {
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        marque(
            &[
                "ca",
                "init",
                "--out",
                ca.to_str().unwrap(),
                "--intermediate",
            ],
            &[("MARQUE_PASSWORD", PASSWORD)],
        )
        .expect_code(0);
        for f in [
            "root.crt",
            "root.key",
            "intermediate.crt",
            "intermediate.key",
            "chain.pem",
        ] {
            assert!(ca.join(f).exists(), "{f}");
        }
        let (key, public) = plain_key(dir.path(), "signer");
        Pki { dir, key, public }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn issue(&self, name: &str, identity: &str, extra: &[&str]) -> PathBuf {
        let out = self.path(name);
        let mut args = vec![
            "ca",
            "issue-signer",
            "--ca",
            self.dir
                .path()
                .join("ca")
                .to_str()
                .unwrap()
                .to_owned()
                .leak(),
            "--key",
            self.public.to_str().unwrap(),
            "--identity",
            identity,
            "--output",
            out.to_str().unwrap().to_owned().leak(),
        ];
        args.extend_from_slice(extra);
        marque(&args, &[("MARQUE_PASSWORD", PASSWORD)]).expect_code(0);
        out
    }

    fn sign(&self, cert: &Path, image: &str) -> Out {
        marque(
            &[
                "sign",
                "--key",
                self.key.to_str().unwrap(),
                "--certificate",
                cert.to_str().unwrap(),
                "--certificate-chain",
                self.path("ca/chain.pem").to_str().unwrap(),
                image,
            ],
            &[],
        )
    }

    fn verify(&self, roots: &Path, identity: &[&str], image: &str) -> Out {
        let mut args = vec![
            "verify",
            "--ca-roots",
            roots.to_str().unwrap().to_owned().leak(),
        ];
        args.extend_from_slice(identity);
        args.extend_from_slice(&["-o", "json", image]);
        marque(&args, &[])
    }
}

fn image(prefix: &str) -> Option<String> {
    let reg = registry()?;
    let addr = reg.addr();
    let repo = unique_repo(prefix);
    let digest = support::push_sample_image(&addr, &repo, "v1");
    Some(format!("{addr}/{repo}@{digest}"))
}

const ID: &str = "https://ci.example.com/release";

#[test]
fn sign_with_a_certificate_and_verify_against_the_root() {
    let Some(img) = image("cert") else { return };
    let pki = Pki::new();
    let cert = pki.issue("signer.crt", ID, &[]);
    pki.sign(&cert, &img).expect_code(0);
    let root = pki.path("ca/root.crt");
    let out = pki.verify(&root, &["--certificate-identity", ID], &img);
    out.expect_code(0);
    assert_eq!(out.json()[0]["signatures"][0]["key_id"], ID);
    pki.verify(
        &root,
        &[
            "--certificate-identity-regexp",
            r"https://ci\.example\.com/.*",
        ],
        &img,
    )
    .expect_code(0);
    // Wrong identity; a regexp must match the whole identity.
    let out = pki.verify(
        &root,
        &["--certificate-identity", "https://ci.example.com/other"],
        &img,
    );
    out.expect_code(1);
    assert!(out.stderr.contains("not accepted"), "{}", out.stderr);
    pki.verify(&root, &["--certificate-identity-regexp", "ci"], &img)
        .expect_code(1);
    // The plain public key still verifies the same signature.
    marque(
        &["verify", "--key", pki.public.to_str().unwrap(), &img],
        &[],
    )
    .expect_code(0);
}

#[test]
fn untrusted_certificates_are_rejected() {
    if registry().is_none() {
        return;
    }
    let pki = Pki::new();
    let root = pki.path("ca/root.crt");
    let id = ["--certificate-identity", ID];
    let cases = [
        (
            "expired",
            pki.issue(
                "old.crt",
                ID,
                &["--not-before", "2020-01-01T00:00:00Z", "--validity", "1d"],
            ),
            "expired",
        ),
        (
            "future",
            pki.issue("future.crt", ID, &["--not-before", "2099-01-01T00:00:00Z"]),
            "not valid yet",
        ),
    ];
    for (name, cert, reason) in cases {
        // A fresh image each time: the same key on the same payload is
        // deduplicated, whatever certificate comes with it.
        let img = image(name).unwrap();
        pki.sign(&cert, &img).expect_code(0);
        let out = pki.verify(&root, &id, &img);
        out.expect_code(1);
        assert!(out.stderr.contains(reason), "{name}: {}", out.stderr);
    }
    // A root that did not issue it.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca");
    marque(
        &["ca", "init", "--out", other_ca.to_str().unwrap()],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let good = pki.issue("good.crt", ID, &[]);
    let img = image("cert-foreign").unwrap();
    pki.sign(&good, &img).expect_code(0);
    let out = pki.verify(&other_ca.join("root.crt"), &id, &img);
    out.expect_code(1);
    assert!(out.stderr.contains("does not chain"), "{}", out.stderr);
}

#[test]
fn a_certificate_without_code_signing_or_for_another_key() {
    let Some(img) = image("cert-eku") else { return };
    let fixture = |n: &str| support::repo_root().join("keys/testdata").join(n);
    // A self-signed certificate with no extended key usage, for its own key.
    marque(
        &[
            "sign",
            "--key",
            fixture("p256-pkcs8.pem").to_str().unwrap(),
            "--certificate",
            fixture("p256-cert.pem").to_str().unwrap(),
            &img,
        ],
        &[],
    )
    .expect_code(0);
    let out = marque(
        &[
            "verify",
            "--ca-roots",
            fixture("p256-cert.pem").to_str().unwrap(),
            "--certificate-identity-regexp",
            ".*",
            &img,
        ],
        &[],
    );
    out.expect_code(1);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    // Signing refuses a certificate for another key.
    let pki = Pki::new();
    let cert = pki.issue("signer.crt", ID, &[]);
    let (other_key, _) = plain_key(pki.dir.path(), "other");
    let out = marque(
        &[
            "sign",
            "--key",
            other_key.to_str().unwrap(),
            "--certificate",
            cert.to_str().unwrap(),
            &img,
        ],
        &[],
    );
    out.expect_code(2);
    assert!(
        out.stderr.contains("not for the signing key"),
        "{}",
        out.stderr
    );
}

/// cosign 2.5 accepts marque's certificate signatures with its private-PKI
/// flags. It needs an OIDC issuer rule even for private certificates
/// (`--certificate-oidc-issuer-regexp '.*'` accepts the absent Fulcio
/// issuer extension) and `--insecure-ignore-sct` (no CT log here).
#[test]
fn cosign_verifies_marque_certificate_signatures() {
    let Some(img) = image("cert-cosign") else {
        return;
    };
    let Some(cosign_bin) = support::peers::cosign() else {
        return;
    };
    let pki = Pki::new();
    let cert = pki.issue("signer.crt", ID, &[]);
    pki.sign(&cert, &img).expect_code(0);
    let run = |trust: &[&str], identity: &str| {
        let mut args = vec!["verify"];
        args.extend_from_slice(trust);
        args.extend_from_slice(&[
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer-regexp",
            ".*",
            "--insecure-ignore-tlog=true",
            "--insecure-ignore-sct=true",
            &img,
        ]);
        let out = cosign(&cosign_bin, pki.dir.path(), &args);
        (out.code == 0, out.stderr)
    };
    let chain = pki.path("ca/chain.pem");
    let root = pki.path("ca/root.crt");
    let inter = pki.path("ca/intermediate.crt");
    let with_chain = ["--certificate-chain", chain.to_str().unwrap()];
    let with_roots = [
        "--ca-roots",
        root.to_str().unwrap(),
        "--ca-intermediates",
        inter.to_str().unwrap(),
    ];
    let (ok, err) = run(&with_chain, ID);
    assert!(ok, "cosign --certificate-chain: {err}");
    let (ok, err) = run(&with_roots, ID);
    assert!(ok, "cosign --ca-roots: {err}");
    let (ok, _) = run(&with_roots, "https://ci.example.com/other");
    assert!(!ok, "cosign must refuse another identity");
}

/// A certificate inside a Sigstore bundle (`--attach referrers`): the
/// bundle carries the leaf only, so the verifier names the intermediates.
#[test]
fn certificate_signatures_as_referrers() {
    let Some(img) = image("cert-referrer") else {
        return;
    };
    let pki = Pki::new();
    let cert = pki.issue("signer.crt", ID, &[]);
    marque(
        &[
            "sign",
            "--key",
            pki.key.to_str().unwrap(),
            "--certificate",
            cert.to_str().unwrap(),
            "--attach",
            "referrers",
            &img,
        ],
        &[],
    )
    .expect_code(0);
    let root = pki.path("ca/root.crt");
    let inter = pki.path("ca/intermediate.crt");
    let chain = ["--certificate-chain", inter.to_str().unwrap()];
    let out = pki.verify(
        &root,
        &[&["--certificate-identity", ID][..], &chain].concat(),
        &img,
    );
    out.expect_code(0);
    assert_eq!(out.json()[0]["signatures"][0]["key_id"], ID);
    let out = pki.verify(
        &root,
        &[
            &["--certificate-identity", "mailto:other@example.com"][..],
            &chain,
        ]
        .concat(),
        &img,
    );
    out.expect_code(1);
    assert!(out.stderr.contains("not accepted"), "{}", out.stderr);
    // Without the intermediate the path cannot be built.
    pki.verify(&root, &["--certificate-identity", ID], &img)
        .expect_code(1);
}

/// Attestations signed with a certificate, in `.att` layers and in bundles.
#[test]
fn certificate_attestations() {
    let pki = Pki::new();
    let cert = pki.issue("signer.crt", ID, &[]);
    let sbom = pki.path("sbom.json");
    std::fs::write(&sbom, "{}").unwrap();
    let root = pki.path("ca/root.crt");
    let inter = pki.path("ca/intermediate.crt");
    for attach in ["legacy", "referrers"] {
        let Some(img) = image(&format!("cert-attest-{attach}")) else {
            return;
        };
        marque(
            &[
                "attest",
                "--key",
                pki.key.to_str().unwrap(),
                "--certificate",
                cert.to_str().unwrap(),
                "--certificate-chain",
                pki.path("ca/chain.pem").to_str().unwrap(),
                "--attach",
                attach,
                "--type",
                "cyclonedx",
                "--predicate",
                sbom.to_str().unwrap(),
                &img,
            ],
            &[],
        )
        .expect_code(0);
        let verify = |identity: &str| {
            marque(
                &[
                    "verify-attestation",
                    "--ca-roots",
                    root.to_str().unwrap(),
                    "--certificate-chain",
                    inter.to_str().unwrap(),
                    "--certificate-identity",
                    identity,
                    "--type",
                    "cyclonedx",
                    "-o",
                    "json",
                    &img,
                ],
                &[],
            )
        };
        let out = verify(ID);
        out.expect_code(0);
        assert_eq!(out.json()[0]["attestations"][0]["key_id"], ID, "{attach}");
        let out = verify("https://ci.example.com/other");
        out.expect_code(1);
        assert!(
            out.stderr.contains("not accepted"),
            "{attach}: {}",
            out.stderr
        );
    }
}
