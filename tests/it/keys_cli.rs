//! `marque key …` and key loading as a user meets it: one-line errors that
//! name the file, and no waiting for a password that cannot come.

use crate::common::*;

fn fixture(name: &str) -> String {
    crate::support::repo_root()
        .join("keys/testdata")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn generate_writes_cosign_format_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_key(dir.path(), "k");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
        "{pem}"
    );
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let json = base64_decode(&body);
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(doc["kdf"]["name"], "scrypt");
    assert_eq!(doc["kdf"]["params"]["N"], 65536);
    assert_eq!(doc["kdf"]["params"]["r"], 8);
    assert_eq!(doc["kdf"]["params"]["p"], 1);
    assert_eq!(doc["cipher"]["name"], "nacl/secretbox");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
    );

    let prefix = dir.path().join("k");
    let out = marque(
        &[
            "key",
            "generate",
            "--output-prefix",
            prefix.to_str().unwrap(),
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    );
    out.expect_code(2);
    assert!(
        out.stderr.contains("exists") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn ed25519_keys_sign_and_verify_a_layout() {
    let (dir, layout) = sample_layout_copy();
    let prefix = dir.path().join("ed");
    marque(
        &[
            "key",
            "generate",
            "--algorithm",
            "ed25519",
            "--output-prefix",
            prefix.to_str().unwrap(),
        ],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let image = format!("oci:{}", layout.display());
    let key = dir.path().join("ed.key");
    marque(
        &["sign", "--key", key.to_str().unwrap(), &image],
        &[("MARQUE_PASSWORD", PASSWORD)],
    )
    .expect_code(0);
    let public = dir.path().join("ed.pub");
    marque(&["verify", "--key", public.to_str().unwrap(), &image], &[]).expect_code(0);
}

#[test]
fn public_prints_the_public_key_of_any_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_key(dir.path(), "k");
    let expected = std::fs::read_to_string(&public).unwrap();
    let out = marque(
        &["key", "public", "--key", key.to_str().unwrap()],
        &[("COSIGN_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.expect_code(0).stdout, expected);
    // A password file works too, with its trailing newline dropped.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let out = marque(
        &[
            "key",
            "public",
            "--key",
            key.to_str().unwrap(),
            "--password-file",
            pw.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.expect_code(0).stdout, expected);
    // SEC1 and PKCS#8 PEM, and a certificate.
    for (file, public) in [
        ("p256-sec1.pem", "p256-sec1.pub"),
        ("p256-pkcs8.pem", "p256-pkcs8.pub"),
    ] {
        let out = marque(&["key", "public", "--key", &fixture(file)], &[]);
        assert_eq!(
            out.expect_code(0).stdout,
            std::fs::read_to_string(fixture(public)).unwrap(),
            "{file}"
        );
    }
    marque(&["key", "public", "--key", &fixture("p256-cert.pem")], &[]).expect_code(0);
}

/// Runs `marque key public` on `key` and checks the failure is one line
/// that names the file and says `what`.
#[track_caller]
fn fails_naming_file(key: &str, env: &[(&str, &str)], what: &str) {
    let out = marque(&["key", "public", "--key", key], env);
    out.expect_code(2);
    let err = out.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "one line expected:\n{err}");
    assert!(err.contains(key), "the file is not named: {err}");
    assert!(err.contains(what), "expected {what:?} in: {err}");
}

#[test]
fn key_errors_are_one_line_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_key(dir.path(), "k");
    let key = key.to_str().unwrap();
    fails_naming_file(key, &[("MARQUE_PASSWORD", "wrong")], "wrong password");
    // No terminal and no password: fail at once, never wait.
    fails_naming_file(key, &[], "MARQUE_PASSWORD");
    let corrupt = dir.path().join("corrupt.key");
    let mut pem = std::fs::read_to_string(key).unwrap();
    pem.replace_range(60..70, "!!!!!!!!!!");
    std::fs::write(&corrupt, pem).unwrap();
    fails_naming_file(
        corrupt.to_str().unwrap(),
        &[("MARQUE_PASSWORD", PASSWORD)],
        "",
    );
    fails_naming_file(&fixture("secp256k1-pkcs8.pem"), &[], "secp256k1");
    fails_naming_file(&fixture("p521-pkcs8.pem"), &[], "");
    let missing = dir.path().join("missing.key");
    fails_naming_file(missing.to_str().unwrap(), &[], "");
}

#[test]
fn signing_without_a_password_never_waits() {
    let (dir, layout) = sample_layout_copy();
    let (key, _) = generate_key(dir.path(), "k");
    let start = std::time::Instant::now();
    let out = marque(
        &[
            "sign",
            "--key",
            key.to_str().unwrap(),
            &format!("oci:{}", layout.display()),
        ],
        &[],
    );
    out.expect_code(2);
    assert!(
        out.stderr.contains("stdin is not a terminal"),
        "{}",
        out.stderr
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}
