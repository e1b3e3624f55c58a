//! Keys, certificates and signatures made by other tools (openssl, cosign,
//! skopeo); see `testdata/README.md` for how each file was made.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::PathBuf;

use base64::Engine as _;
use marque_keys::{Algorithm, Error, PrivateKeyFile, PublicKey, SigningKey};

fn testdata(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn plain_key(name: &str) -> SigningKey {
    let file = PrivateKeyFile::parse(&testdata(name)).unwrap();
    assert!(!file.needs_password(), "{name}");
    file.into_signing_key(None).unwrap()
}

const P256_SPKI_PREFIX: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE";

#[test]
fn openssl_sec1_p256() {
    let key = plain_key("p256-sec1.pem");
    assert_eq!(key.algorithm(), Algorithm::EcdsaP256Sha256);
    let public = PublicKey::from_pem(&testdata("p256-sec1.pub")).unwrap();
    assert_eq!(key.public_key(), &public);
    let sig = key.sign(b"msg").unwrap();
    public.verify(b"msg", &sig).unwrap();
}

#[test]
fn openssl_sec1_p256_after_ec_parameters_block() {
    let key = plain_key("p256-sec1-with-params.pem");
    assert_eq!(key.algorithm(), Algorithm::EcdsaP256Sha256);
}

#[test]
fn openssl_sec1_without_public_key_is_refused_clearly() {
    let err = PrivateKeyFile::parse(&testdata("p256-sec1-no-public.pem")).unwrap_err();
    assert!(matches!(err, Error::MissingPublicKey), "{err:?}");
    assert!(err.to_string().contains("openssl ec"));
}

#[test]
fn openssl_sec1_p384_and_its_signature() {
    let key = plain_key("p384-sec1.pem");
    assert_eq!(key.algorithm(), Algorithm::EcdsaP384Sha384);
    let sig = testdata("message.p384.sig");
    key.public_key()
        .verify(&testdata("message.txt"), &sig)
        .unwrap();
    let ours = key.sign(b"msg").unwrap();
    key.public_key().verify(b"msg", &ours).unwrap();
}

#[test]
fn openssl_pkcs8_p256_and_its_signature() {
    let key = plain_key("p256-pkcs8.pem");
    assert_eq!(key.algorithm(), Algorithm::EcdsaP256Sha256);
    let public = PublicKey::from_pem(&testdata("p256-pkcs8.pub")).unwrap();
    assert_eq!(key.public_key(), &public);
    // openssl's PKCS#8 for EC is already in Go's canonical form.
    let pem = String::from_utf8(testdata("p256-pkcs8.pem")).unwrap();
    assert_eq!(key.to_pkcs8_pem(), pem);
    // openssl dgst -sha256 -sign: ASN.1 DER over SHA-256, as cosign.
    public
        .verify(&testdata("message.txt"), &testdata("message.p256.sig"))
        .unwrap();
    assert!(matches!(
        public.verify(b"hello marque\n\n", &testdata("message.p256.sig")),
        Err(Error::BadSignature)
    ));
}

#[test]
fn openssl_pkcs8_ed25519_v1_and_its_signature() {
    let key = plain_key("ed25519-pkcs8.pem");
    assert_eq!(key.algorithm(), Algorithm::Ed25519);
    let public = PublicKey::from_pem(&testdata("ed25519-pkcs8.pub")).unwrap();
    assert_eq!(key.public_key(), &public);
    assert_eq!(
        public.to_pem(),
        String::from_utf8(testdata("ed25519-pkcs8.pub")).unwrap()
    );
    let pem = String::from_utf8(testdata("ed25519-pkcs8.pem")).unwrap();
    assert_eq!(key.to_pkcs8_pem(), pem);
    public
        .verify(&testdata("message.txt"), &testdata("message.ed25519.sig"))
        .unwrap();
    // Ed25519 is deterministic: our signature is openssl's.
    assert_eq!(
        key.sign(&testdata("message.txt")).unwrap(),
        testdata("message.ed25519.sig")
    );
}

#[test]
fn unsupported_curves_name_the_curve() {
    for (name, needle) in [
        ("secp256k1-sec1.pem", "secp256k1 (1.3.132.0.10)"),
        ("secp256k1-pkcs8.pem", "secp256k1 (1.3.132.0.10)"),
        ("p521-pkcs8.pem", "1.3.132.0.35"),
        ("rsa2048-pkcs8.pem", "RSA (1.2.840.113549.1.1.1)"),
    ] {
        let err = PrivateKeyFile::parse(&testdata(name)).unwrap_err();
        match &err {
            Error::UnsupportedAlgorithm { algorithm } => {
                assert!(algorithm.contains(needle), "{name}: {algorithm}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(err.to_string().contains(needle));
    }
}

#[test]
fn public_key_from_certificate() {
    let cert = PublicKey::from_pem(&testdata("p256-cert.pem")).unwrap();
    let key = plain_key("p256-pkcs8.pem");
    assert_eq!(&cert, key.public_key());
    assert_eq!(cert.key_id(), key.public_key().key_id());
    // The same certificate as DER (no PEM armor).
    let pem = String::from_utf8(testdata("p256-cert.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(PublicKey::from_pem(&der).unwrap(), cert);
    assert_eq!(PublicKey::from_certificate_der(&der).unwrap(), cert);
}

#[test]
fn p256_public_pem_has_cosign_prefix_and_round_trips() {
    let text = String::from_utf8(testdata("p256-pkcs8.pub")).unwrap();
    let key = PublicKey::from_pem(text.as_bytes()).unwrap();
    let pem = key.to_pem();
    assert_eq!(pem, text);
    assert!(pem.starts_with(&format!("-----BEGIN PUBLIC KEY-----\n{P256_SPKI_PREFIX}")));
    assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
    assert!(pem.lines().all(|l| l.len() <= 64));
}

#[test]
fn public_pem_with_private_key_is_unsupported() {
    let err = PublicKey::from_pem(&testdata("p256-pkcs8.pem")).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedPem { label } if label == "PRIVATE KEY"),
        "{err:?}"
    );
}

#[test]
fn cosign_generated_key_decrypts_and_matches_its_public_key() {
    let file = PrivateKeyFile::parse(&testdata("cosign-generated.key")).unwrap();
    let PrivateKeyFile::Encrypted { key: encrypted } = &file else {
        panic!("expected an encrypted key")
    };
    assert_eq!(encrypted.scrypt_log_n(), 16);
    assert_eq!(encrypted.pem_label(), "ENCRYPTED SIGSTORE PRIVATE KEY");
    assert!(matches!(
        encrypted.decrypt(b"wrong"),
        Err(Error::WrongPassword)
    ));
    let key = file.into_signing_key(Some(b"test")).unwrap();
    assert_eq!(key.algorithm(), Algorithm::EcdsaP256Sha256);
    let public_pem = String::from_utf8(testdata("cosign-generated.pub")).unwrap();
    let public = PublicKey::from_pem(public_pem.as_bytes()).unwrap();
    assert_eq!(key.public_key(), &public);
    assert_eq!(public.to_pem(), public_pem);

    // cosign sign-blob's signature verifies here...
    let sig_b64 = String::from_utf8(testdata("cosign-generated.message.sig")).unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig_b64.trim())
        .unwrap();
    public.verify(&testdata("message.txt"), &sig).unwrap();
    // ...and ours verifies under cosign's public key.
    let ours = key.sign(&testdata("message.txt")).unwrap();
    public.verify(&testdata("message.txt"), &ours).unwrap();
}

#[test]
fn skopeo_generated_key_with_legacy_label() {
    let file = PrivateKeyFile::parse(&testdata("skopeo-generated.private")).unwrap();
    let PrivateKeyFile::Encrypted { key: encrypted } = &file else {
        panic!("expected an encrypted key")
    };
    assert_eq!(encrypted.pem_label(), "ENCRYPTED COSIGN PRIVATE KEY");
    let key = file.into_signing_key(Some(b"skopeo-pass")).unwrap();
    let public = PublicKey::from_pem(&testdata("skopeo-generated.pub")).unwrap();
    assert_eq!(key.public_key(), &public);
}

#[test]
fn key_ids_are_stable() {
    // Pinned: a change here changes every key id users have configured.
    // Expected values: `openssl pkey -pubin -in X.pub -outform DER | sha256sum`.
    let public = PublicKey::from_pem(&testdata("cosign-generated.pub")).unwrap();
    let expected = "sha256:3253d756e97258cdc7fb474259753010ea14043a7053b850fc74f9d458c7c82e";
    assert_eq!(public.key_id().as_str(), expected);
    assert_eq!(public.key_id().to_string(), expected);
    assert_eq!(
        PublicKey::from_pem(&testdata("p256-pkcs8.pub"))
            .unwrap()
            .key_id()
            .as_str(),
        "sha256:394bf9fa61c66dd98d64ee931f1fecabe94b8d2a2867b3074089468d2c3be887"
    );
    // Same key through a certificate, DER, and a private key: same id.
    let from_cert = PublicKey::from_pem(&testdata("p256-cert.pem")).unwrap();
    let from_pub = PublicKey::from_pem(&testdata("p256-pkcs8.pub")).unwrap();
    let from_priv = plain_key("p256-pkcs8.pem");
    assert_eq!(from_cert.key_id(), from_pub.key_id());
    assert_eq!(from_priv.public_key().key_id(), from_pub.key_id());
    assert_ne!(from_pub.key_id(), public.key_id());
}
