//! Round trips through cosign's encrypted key format, and what happens with
//! wrong passwords and damaged files.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use marque_keys::{
    Algorithm, Error, PrivateKeyFile, PublicKey, SigningKey, encode_cosign_pem_with_params,
};

fn round_trip(alg: Algorithm) {
    let key = SigningKey::generate(alg).unwrap();
    let pem = key.to_cosign_pem(b"correct horse").unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    assert!(pem.ends_with("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
    let file = PrivateKeyFile::parse(pem.as_bytes()).unwrap();
    assert!(file.needs_password());
    let PrivateKeyFile::Encrypted { key: encrypted } = &file else {
        panic!("expected an encrypted key")
    };
    assert_eq!(encrypted.scrypt_log_n(), 16, "to_cosign_pem uses N=65536");
    let loaded = file.into_signing_key(Some(b"correct horse")).unwrap();
    assert_eq!(loaded.algorithm(), alg);
    assert_eq!(loaded.public_key(), key.public_key());
    assert_eq!(loaded.pkcs8_der(), key.pkcs8_der());

    let sig = loaded.sign(b"payload").unwrap();
    key.public_key().verify(b"payload", &sig).unwrap();
    let public = PublicKey::from_pem(key.public_key().to_pem().as_bytes()).unwrap();
    public.verify(b"payload", &sig).unwrap();
    assert!(matches!(
        public.verify(b"payloae", &sig),
        Err(Error::BadSignature)
    ));
}

#[test]
fn round_trip_p256() {
    round_trip(Algorithm::EcdsaP256Sha256);
}

#[test]
fn round_trip_ed25519() {
    round_trip(Algorithm::Ed25519);
}

#[test]
fn round_trip_p384() {
    round_trip(Algorithm::EcdsaP384Sha384);
}

#[test]
fn p256_public_key_pem_prefix() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let pem = key.public_key().to_pem();
    assert!(
        pem.starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"),
        "{pem}"
    );
    assert_eq!(pem.lines().count(), 4);
    assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
}

#[test]
fn wrong_password_then_right_one() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"right", 15).unwrap();
    let file = PrivateKeyFile::parse(pem.as_bytes()).unwrap();
    let PrivateKeyFile::Encrypted { key: encrypted } = &file else {
        panic!("expected an encrypted key")
    };
    let err = encrypted.decrypt(b"wrong").unwrap_err();
    assert!(matches!(err, Error::WrongPassword), "{err:?}");
    assert_eq!(err.to_string(), "wrong password for encrypted private key");
    assert!(matches!(encrypted.decrypt(b""), Err(Error::WrongPassword)));
    // The same parsed file can be tried again.
    assert_eq!(
        encrypted.decrypt(b"right").unwrap().public_key(),
        key.public_key()
    );
    assert!(matches!(
        file.into_signing_key(Some(b"Right")),
        Err(Error::WrongPassword)
    ));
}

#[test]
fn no_password_for_encrypted_key() {
    let key = SigningKey::generate(Algorithm::Ed25519).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", 15).unwrap();
    let file = PrivateKeyFile::parse(pem.as_bytes()).unwrap();
    let err = file.into_signing_key(None).unwrap_err();
    assert!(matches!(err, Error::PasswordRequired), "{err:?}");
    assert_eq!(
        err.to_string(),
        "encrypted private key needs a password: set MARQUE_PASSWORD or use --password-file"
    );
}

#[test]
fn empty_password_is_a_password() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"", 15).unwrap();
    let file = PrivateKeyFile::parse(pem.as_bytes()).unwrap();
    assert_eq!(
        file.into_signing_key(Some(b"")).unwrap().public_key(),
        key.public_key()
    );
}

#[test]
fn all_three_scrypt_cost_levels_decrypt() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    for log_n in [15u8, 17] {
        // 16 is covered by the round trips above.
        let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", log_n).unwrap();
        let json = body(&pem);
        assert!(
            json.contains(&format!(r#""N":{}"#, 1u64 << log_n)),
            "{json}"
        );
        let file = PrivateKeyFile::parse(pem.as_bytes()).unwrap();
        let loaded = file.into_signing_key(Some(b"pw")).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
    }
}

/// Decodes the JSON body of an encrypted key PEM.
fn body(pem: &str) -> String {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
}

/// Re-wraps a JSON body, keeping the label.
fn rewrap(label: &str, json: &str) -> String {
    let b64 = STANDARD.encode(json);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[test]
fn costly_scrypt_parameters_are_refused_without_running_scrypt() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", 15).unwrap();
    let json = body(&pem);
    for (from, to) in [
        (r#""N":32768"#, r#""N":262144"#),     // 2^18
        (r#""N":32768"#, r#""N":1073741824"#), // 2^30: 1 TiB of memory
        (r#""r":8"#, r#""r":16"#),
        (r#""p":1"#, r#""p":64"#),
    ] {
        let evil = rewrap("ENCRYPTED SIGSTORE PRIVATE KEY", &json.replace(from, to));
        let started = Instant::now();
        let err = PrivateKeyFile::parse(evil.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedKdf { .. }), "{to}: {err:?}");
        assert!(
            err.to_string()
                .contains(&to.replace('"', "").replace(':', "=")),
            "{err}"
        );
        // parse() never runs scrypt (N=2^30 would need 1 TiB); refusing
        // takes microseconds. The bound is loose for loaded CI machines.
        assert!(
            started.elapsed().as_millis() < 500,
            "{to} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn legacy_cosign_label_is_accepted() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", 15).unwrap();
    let legacy = rewrap("ENCRYPTED COSIGN PRIVATE KEY", &body(&pem));
    let file = PrivateKeyFile::parse(legacy.as_bytes()).unwrap();
    assert_eq!(
        file.into_signing_key(Some(b"pw")).unwrap().public_key(),
        key.public_key()
    );
}

#[test]
fn truncated_or_altered_ciphertext_fails_authentication() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", 15).unwrap();
    let json = body(&pem);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ct = STANDARD
        .decode(doc["ciphertext"].as_str().unwrap())
        .unwrap();

    // Too short to hold a tag and any plaintext: refused at parse time.
    for len in [0, 1, 15, 16] {
        let mut d = doc.clone();
        d["ciphertext"] = STANDARD.encode(&ct[..len]).into();
        let err = PrivateKeyFile::parse(
            rewrap("ENCRYPTED SIGSTORE PRIVATE KEY", &d.to_string()).as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{len}: {err:?}");
    }
    // Long enough but damaged: authentication fails.
    let mut damaged = vec![ct[..ct.len() - 1].to_vec(), ct[..17].to_vec()];
    let mut flipped = ct.clone();
    flipped[20] ^= 1;
    damaged.push(flipped);
    let mut tag_flipped = ct.clone();
    tag_flipped[0] ^= 0x80;
    damaged.push(tag_flipped);
    for bad in damaged {
        let mut d = doc.clone();
        d["ciphertext"] = STANDARD.encode(&bad).into();
        let file = PrivateKeyFile::parse(
            rewrap("ENCRYPTED SIGSTORE PRIVATE KEY", &d.to_string()).as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            file.into_signing_key(Some(b"pw")),
            Err(Error::WrongPassword)
        ));
    }
    // A different nonce or salt also fails authentication.
    for field in [("cipher", "nonce", 24), ("kdf", "salt", 32)] {
        let mut d = doc.clone();
        d[field.0][field.1] = STANDARD.encode(vec![0u8; field.2]).into();
        let file = PrivateKeyFile::parse(
            rewrap("ENCRYPTED SIGSTORE PRIVATE KEY", &d.to_string()).as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            file.into_signing_key(Some(b"pw")),
            Err(Error::WrongPassword)
        ));
    }
}

#[test]
fn corrupt_pem_json_and_base64_are_errors_not_panics() {
    let key = SigningKey::generate(Algorithm::EcdsaP256Sha256).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", 15).unwrap();
    let json = body(&pem);
    let label = "ENCRYPTED SIGSTORE PRIVATE KEY";

    let cases: Vec<(String, &str)> = vec![
        (pem.replace("-----END", "-----XEND"), "missing END line"),
        (pem[..pem.len() / 2].to_owned(), "truncated PEM"),
        (
            pem.replacen('M', "*", 1).replacen('e', "*", 1),
            "PEM base64",
        ),
        (rewrap(label, &json[..json.len() - 1]), "truncated JSON"),
        (rewrap(label, &json.replace('{', "[")), "not an object"),
        (
            rewrap(
                label,
                &json.replace(r#""ciphertext":""#, r#""ciphertext":"*"#),
            ),
            "ciphertext base64",
        ),
        (
            rewrap(label, &json.replace(r#""salt":""#, r#""salt":"%"#)),
            "salt base64",
        ),
        (
            rewrap(label, &json.replace(r#""nonce":""#, r#""nonce":"AAAA"#)),
            "nonce length",
        ),
        (rewrap(label, "{}"), "empty object"),
        (String::new(), "empty file"),
        ("\u{0}\u{1}\u{2}".to_owned(), "binary"),
    ];
    for (data, what) in cases {
        let err = PrivateKeyFile::parse(data.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{what}: {err:?}");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{what}: one line: {msg}");
        assert!(
            msg.starts_with(char::is_lowercase),
            "{what}: lower-case: {msg}"
        );
    }
}

#[test]
fn every_single_byte_change_of_a_key_file_is_handled() {
    // Only changes that cannot affect the decrypted result may parse; none
    // may panic. Decryption is not attempted (it would run scrypt each time).
    let key = SigningKey::generate(Algorithm::Ed25519).unwrap();
    let pem = encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", 15).unwrap();
    let bytes = pem.as_bytes();
    for i in 0..bytes.len() {
        for replacement in [b'A', b'\n', b'-', 0xff] {
            let mut m = bytes.to_vec();
            m[i] = replacement;
            let _ = PrivateKeyFile::parse(&m);
        }
        let _ = PrivateKeyFile::parse(&bytes[..i]);
    }
    let json = body(&pem);
    for i in 0..json.len() {
        let mut m = json.clone().into_bytes();
        m[i] = b'"';
        let _ = PrivateKeyFile::parse(
            rewrap(
                "ENCRYPTED SIGSTORE PRIVATE KEY",
                &String::from_utf8_lossy(&m),
            )
            .as_bytes(),
        );
    }
}

#[test]
fn plain_pkcs8_pem_round_trip() {
    for &alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let file = PrivateKeyFile::parse(pem.as_bytes()).unwrap();
        assert!(!file.needs_password());
        let loaded = file.into_signing_key(Some(b"ignored")).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
    }
}

#[test]
fn errors_are_send_sync_and_one_line() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Error>();
    assert_send_sync::<SigningKey>();
    assert_send_sync::<PublicKey>();
    assert_send_sync::<PrivateKeyFile>();
}
