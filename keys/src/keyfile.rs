//! Private key files: cosign's encrypted format, and plain PKCS#8 / SEC1 PEM.
//!
//! cosign's `cosign.key` is a PEM block (`ENCRYPTED SIGSTORE PRIVATE KEY`,
//! or `ENCRYPTED COSIGN PRIVATE KEY` from older cosign and from skopeo)
//! whose body is the JSON document of go-securesystemslib's `encrypted`
//! package:
//!
//! ```json
//! {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<b64>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<b64>"},"ciphertext":"<b64>"}
//! ```
//!
//! The key is `scrypt(password, salt, N, r, p, 32)`; the ciphertext is
//! NaCl `secretbox` (XSalsa20-Poly1305) output in Go's `secretbox.Seal`
//! layout, 16-byte Poly1305 tag first, which is also the layout of
//! `crypto_secretbox`'s in-place API; the plaintext is PKCS#8 DER.
//!
//! Everything that can be checked without the password is checked by
//! [`PrivateKeyFile::parse`], before anyone is asked for a password. In
//! particular the scrypt parameters must be one of go-securesystemslib's
//! three sets (N = 2^15, 2^16 or 2^17 with r = 8, p = 1): a file asking for
//! more is refused without running scrypt, so a hostile key file cannot
//! cost gigabytes of memory or minutes of CPU.
//!
//! What this module does not do: PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2),
//! OpenSSL's `Proc-Type: 4,ENCRYPTED` PEM, PKCS#1 RSA keys, or password
//! prompting (the CLI's job).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Error, SigningKey, armor};

/// PEM label cosign writes today.
pub const SIGSTORE_PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label of older cosign releases and of `skopeo generate-sigstore-key`.
pub const COSIGN_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// log2 of scrypt's N for keys we write: 2^16, go-securesystemslib's
/// "standard" and what cosign ≥ 2.2 writes.
pub(crate) const DEFAULT_SCRYPT_LOG_N: u8 = 16;
/// log2(N) values accepted on read (and write): "legacy", "standard", "OWASP".
const ALLOWED_SCRYPT_LOG_N: [u8; 3] = [15, 16, 17];
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Far more than any PKCS#8 key this crate can use (an RSA-4096 key is
/// about 2.4 KB); bounds the work done before the password is checked.
const MAX_CIPHERTEXT_LEN: usize = 64 * 1024;

const JSON_WHAT: &str = "cosign private key JSON";

/// A private key file as read from disk, before any password is asked for.
// Plain holds ring's key pair, much bigger than Encrypted; a value of this
// type lives for one key load, so boxing would only complicate matching.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum PrivateKeyFile {
    /// A cosign encrypted key; turning it into a [`SigningKey`] needs the
    /// password.
    Encrypted {
        /// The parsed, not yet decrypted, key.
        key: EncryptedKey,
    },
    /// An unencrypted PKCS#8 or SEC1 key, already loaded and checked.
    Plain {
        /// The loaded key.
        key: SigningKey,
    },
}

impl PrivateKeyFile {
    /// Parses a PEM private key file.
    ///
    /// Accepted blocks: `ENCRYPTED SIGSTORE PRIVATE KEY` and `ENCRYPTED
    /// COSIGN PRIVATE KEY` (cosign format), `PRIVATE KEY` (PKCS#8) and `EC
    /// PRIVATE KEY` (SEC1; an `EC PARAMETERS` block before it is skipped).
    /// Any other block gives [`Error::UnsupportedPem`]; a file with more
    /// than one private key is refused as ambiguous.
    pub fn parse(data: &[u8]) -> Result<PrivateKeyFile, Error> {
        let blocks = armor::parse_blocks(data)?;
        let mut chosen = None;
        let mut first_other = None;
        for block in &blocks {
            match block.label.as_str() {
                "EC PARAMETERS" => {}
                SIGSTORE_PRIVATE_KEY_LABEL
                | COSIGN_PRIVATE_KEY_LABEL
                | "PRIVATE KEY"
                | "EC PRIVATE KEY" => {
                    if chosen.is_some() {
                        return Err(Error::malformed_because(
                            "private key file",
                            "more than one private key in the file",
                        ));
                    }
                    chosen = Some(block);
                }
                _ => {
                    first_other.get_or_insert(block);
                }
            }
        }
        let Some(block) = chosen else {
            return Err(Error::UnsupportedPem {
                label: first_other
                    .or(blocks.first())
                    .map(|b| b.label.clone())
                    .unwrap_or_default(),
            });
        };
        if let Some(proc_type) = &block.proc_type {
            return Err(Error::UnsupportedEncryption {
                scheme: format!("OpenSSL PEM encryption, Proc-Type: {proc_type}"),
            });
        }
        match block.label.as_str() {
            SIGSTORE_PRIVATE_KEY_LABEL | COSIGN_PRIVATE_KEY_LABEL => {
                let legacy_label = block.label == COSIGN_PRIVATE_KEY_LABEL;
                Ok(PrivateKeyFile::Encrypted {
                    key: EncryptedKey::from_json(&block.contents, legacy_label)?,
                })
            }
            "PRIVATE KEY" => Ok(PrivateKeyFile::Plain {
                key: SigningKey::from_pkcs8_der(&block.contents)?,
            }),
            _ => Ok(PrivateKeyFile::Plain {
                key: SigningKey::from_sec1_der(&block.contents)?,
            }),
        }
    }

    /// True if [`Self::into_signing_key`] needs a password.
    pub fn needs_password(&self) -> bool {
        matches!(self, PrivateKeyFile::Encrypted { .. })
    }

    /// The signing key, decrypting with `password` if the file is
    /// encrypted. `Some(b"")` is an empty password (cosign allows those);
    /// `None` means no password was given. Plain keys ignore `password`.
    ///
    /// Errors: [`Error::PasswordRequired`] for an encrypted file and
    /// `None`; [`Error::WrongPassword`] if decryption fails authentication.
    pub fn into_signing_key(self, password: Option<&[u8]>) -> Result<SigningKey, Error> {
        match self {
            PrivateKeyFile::Plain { key } => Ok(key),
            PrivateKeyFile::Encrypted { key } => match password {
                None => Err(Error::PasswordRequired),
                Some(password) => key.decrypt(password),
            },
        }
    }
}

/// A cosign encrypted private key whose parameters have been checked.
#[derive(Clone)]
pub struct EncryptedKey {
    legacy_label: bool,
    log_n: u8,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl EncryptedKey {
    /// Decrypts the key. Can be called again after [`Error::WrongPassword`].
    ///
    /// Runs scrypt, so takes a few hundred milliseconds and 32 to 128 MiB.
    pub fn decrypt(&self, password: &[u8]) -> Result<SigningKey, Error> {
        let key = derive_key(password, &self.salt, self.log_n)?;
        let cipher = XSalsa20Poly1305::new(Key::from_slice(&key[..]));
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        cipher
            .decrypt_in_place(Nonce::from_slice(&self.nonce), b"", &mut *buf)
            .map_err(|_| Error::WrongPassword)?;
        SigningKey::from_pkcs8_der(&buf)
    }

    /// log2 of the scrypt N parameter (15, 16 or 17).
    pub fn scrypt_log_n(&self) -> u8 {
        self.log_n
    }

    /// The PEM label the key was read with.
    pub fn pem_label(&self) -> &'static str {
        if self.legacy_label {
            COSIGN_PRIVATE_KEY_LABEL
        } else {
            SIGSTORE_PRIVATE_KEY_LABEL
        }
    }

    fn from_json(json: &[u8], legacy_label: bool) -> Result<EncryptedKey, Error> {
        let doc: EncryptedDoc =
            serde_json::from_slice(json).map_err(|e| Error::malformed_by(JSON_WHAT, e))?;

        // KDF first, and nothing expensive before it.
        if doc.kdf.name != "scrypt" {
            return Err(Error::UnsupportedKdf {
                kdf: truncate(&doc.kdf.name),
            });
        }
        let params: ScryptParamsIn = serde_json::from_value(doc.kdf.params)
            .map_err(|e| Error::malformed_by(JSON_WHAT, e))?;
        let log_n = ALLOWED_SCRYPT_LOG_N
            .iter()
            .copied()
            .find(|&l| params.n == 1u64 << l)
            .filter(|_| params.r == u64::from(SCRYPT_R) && params.p == u64::from(SCRYPT_P))
            .ok_or_else(|| Error::UnsupportedKdf {
                kdf: format!("scrypt N={} r={} p={}", params.n, params.r, params.p),
            })?;

        if doc.cipher.name != "nacl/secretbox" {
            return Err(Error::UnsupportedCipher {
                name: truncate(&doc.cipher.name),
            });
        }
        let salt = decode_fixed::<SALT_LEN>(&doc.kdf.salt, "cosign private key salt")?;
        let nonce = decode_fixed::<NONCE_LEN>(&doc.cipher.nonce, "cosign private key nonce")?;
        const CT_WHAT: &str = "cosign private key ciphertext";
        if doc.ciphertext.len() > MAX_CIPHERTEXT_LEN * 4 / 3 + 4 {
            return Err(Error::malformed_because(CT_WHAT, "too large"));
        }
        let ciphertext = STANDARD
            .decode(&doc.ciphertext)
            .map_err(|e| Error::malformed_by(CT_WHAT, e))?;
        if ciphertext.len() <= TAG_LEN {
            return Err(Error::malformed_because(CT_WHAT, "too short"));
        }
        if ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(Error::malformed_because(CT_WHAT, "too large"));
        }
        Ok(EncryptedKey {
            legacy_label,
            log_n,
            salt,
            nonce,
            ciphertext,
        })
    }
}

impl fmt::Debug for EncryptedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedKey")
            .field("pem_label", &self.pem_label())
            .field("scrypt_log_n", &self.log_n)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Encrypts PKCS#8 DER in cosign's format with scrypt N = 2^`log_n`
/// (r = 8, p = 1) and returns the `ENCRYPTED SIGSTORE PRIVATE KEY` PEM.
///
/// [`SigningKey::to_cosign_pem`] is this with `log_n` = 16. Other values
/// exist for tests (old cosign wrote 15); only 15, 16 and 17 are allowed,
/// the same set [`PrivateKeyFile::parse`] accepts. `pkcs8` is not checked.
pub fn encode_cosign_pem_with_params(
    pkcs8: &[u8],
    password: &[u8],
    log_n: u8,
) -> Result<String, Error> {
    if !ALLOWED_SCRYPT_LOG_N.contains(&log_n) {
        return Err(Error::UnsupportedKdf {
            kdf: format!("scrypt log2(N)={log_n} r={SCRYPT_R} p={SCRYPT_P}"),
        });
    }
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt).map_err(|_| Error::Crypto)?;
    rng.fill(&mut nonce).map_err(|_| Error::Crypto)?;

    let key = derive_key(password, &salt, log_n)?;
    let cipher = XSalsa20Poly1305::new(Key::from_slice(&key[..]));
    let mut buf = Zeroizing::new(Vec::with_capacity(pkcs8.len() + TAG_LEN));
    buf.extend_from_slice(pkcs8);
    cipher
        .encrypt_in_place(Nonce::from_slice(&nonce), b"", &mut *buf)
        .map_err(|_| Error::Crypto)?;

    // Field order and names as go-securesystemslib's json.Marshal writes.
    let doc = EncryptedDocOut {
        kdf: KdfOut {
            name: "scrypt",
            params: ScryptParamsOut {
                n: 1u64 << log_n,
                r: SCRYPT_R,
                p: SCRYPT_P,
            },
            salt: STANDARD.encode(salt),
        },
        cipher: CipherOut {
            name: "nacl/secretbox",
            nonce: STANDARD.encode(nonce),
        },
        ciphertext: STANDARD.encode(&buf[..]),
    };
    let json = serde_json::to_vec(&doc).map_err(|_| Error::Crypto)?;
    Ok(armor::encode(SIGSTORE_PRIVATE_KEY_LABEL, &json))
}

/// scrypt(password, salt, 2^log_n, 8, 1) into a zeroized 32-byte key.
fn derive_key(password: &[u8], salt: &[u8], log_n: u8) -> Result<Zeroizing<[u8; 32]>, Error> {
    debug_assert!(ALLOWED_SCRYPT_LOG_N.contains(&log_n));
    let params = scrypt::Params::new(log_n, SCRYPT_R, SCRYPT_P).map_err(|_| Error::Crypto)?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, &mut key[..]).map_err(|_| Error::Crypto)?;
    Ok(key)
}

fn decode_fixed<const N: usize>(b64: &str, what: &'static str) -> Result<[u8; N], Error> {
    if b64.len() > 4 * N {
        return Err(Error::malformed_because(what, "wrong length"));
    }
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| Error::malformed_by(what, e))?;
    bytes
        .try_into()
        .map_err(|_| Error::malformed_because(what, "wrong length"))
}

/// Names from the file go into error messages; keep them short.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[derive(Deserialize)]
struct EncryptedDoc {
    kdf: KdfIn,
    cipher: CipherIn,
    ciphertext: String,
}

#[derive(Deserialize)]
struct KdfIn {
    name: String,
    #[serde(default)]
    params: serde_json::Value,
    #[serde(default)]
    salt: String,
}

#[derive(Deserialize)]
struct ScryptParamsIn {
    #[serde(rename = "N")]
    n: u64,
    r: u64,
    p: u64,
}

#[derive(Deserialize)]
struct CipherIn {
    name: String,
    #[serde(default)]
    nonce: String,
}

#[derive(Serialize)]
struct EncryptedDocOut {
    kdf: KdfOut,
    cipher: CipherOut,
    ciphertext: String,
}

#[derive(Serialize)]
struct KdfOut {
    name: &'static str,
    params: ScryptParamsOut,
    salt: String,
}

#[derive(Serialize)]
struct ScryptParamsOut {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize)]
struct CipherOut {
    name: &'static str,
    nonce: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn json_pem(json: &str) -> String {
        armor::encode(SIGSTORE_PRIVATE_KEY_LABEL, json.as_bytes())
    }

    fn doc(n: u64, r: u64, p: u64) -> String {
        let salt = STANDARD.encode([1u8; 32]);
        let nonce = STANDARD.encode([2u8; 24]);
        let ct = STANDARD.encode([3u8; 100]);
        format!(
            r#"{{"kdf":{{"name":"scrypt","params":{{"N":{n},"r":{r},"p":{p}}},"salt":"{salt}"}},"cipher":{{"name":"nacl/secretbox","nonce":"{nonce}"}},"ciphertext":"{ct}"}}"#
        )
    }

    #[test]
    fn allowed_params_parse_others_are_refused_before_scrypt() {
        for (n, log_n) in [(32768, 15), (65536, 16), (131072, 17)] {
            match PrivateKeyFile::parse(json_pem(&doc(n, 8, 1)).as_bytes()).unwrap() {
                PrivateKeyFile::Encrypted { key } => assert_eq!(key.scrypt_log_n(), log_n),
                other => panic!("{other:?}"),
            }
        }
        // parse() never runs scrypt, so these cannot have cost anything.
        for (n, r, p) in [
            (1u64 << 18, 8, 1),
            (1 << 20, 8, 1),
            (65536, 16, 1),
            (65536, 8, 2),
            (65536, 8, 0),
            (16384, 8, 1),
            (65535, 8, 1),
            (0, 0, 0),
            (u64::MAX, u64::MAX, u64::MAX),
        ] {
            let err = PrivateKeyFile::parse(json_pem(&doc(n, r, p)).as_bytes()).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedKdf { .. }),
                "{n} {r} {p}: {err:?}"
            );
        }
        for log_n in [0, 14, 18, 63, 64, 255] {
            assert!(matches!(
                encode_cosign_pem_with_params(b"x", b"pw", log_n),
                Err(Error::UnsupportedKdf { .. })
            ));
        }
    }

    #[test]
    fn other_kdf_and_cipher_names_are_refused() {
        let d = doc(65536, 8, 1).replace(r#""name":"scrypt""#, r#""name":"argon2id""#);
        let err = PrivateKeyFile::parse(json_pem(&d).as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedKdf { kdf } if kdf == "argon2id"),
            "{err:?}"
        );
        let d = doc(65536, 8, 1).replace("nacl/secretbox", "aes-gcm");
        let err = PrivateKeyFile::parse(json_pem(&d).as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedCipher { name } if name == "aes-gcm"),
            "{err:?}"
        );
        // A non-scrypt KDF with other params is still UnsupportedKdf, not Malformed.
        let d = r#"{"kdf":{"name":"pbkdf2","params":{"iter":1000}},"cipher":{"name":"x"},"ciphertext":""}"#;
        assert!(matches!(
            PrivateKeyFile::parse(json_pem(d).as_bytes()),
            Err(Error::UnsupportedKdf { .. })
        ));
    }

    #[test]
    fn corrupt_documents_are_malformed_not_panics() {
        let good = doc(65536, 8, 1);
        let salt = STANDARD.encode([1u8; 32]);
        let nonce = STANDARD.encode([2u8; 24]);
        let ct = STANDARD.encode([3u8; 100]);
        let cases = [
            "".to_owned(),
            "{".to_owned(),
            "[]".to_owned(),
            "null".to_owned(),
            good.replace(r#""ciphertext""#, r#""ciphertextx""#),
            good.replace(&ct, "!!!!"),
            good.replace(&ct, &STANDARD.encode([3u8; 16])), // tag only, no plaintext
            good.replace(&ct, ""),
            good.replace(&salt, &STANDARD.encode([1u8; 31])),
            good.replace(&salt, &STANDARD.encode([1u8; 33])),
            good.replace(&salt, "not base64"),
            good.replace(&nonce, &STANDARD.encode([2u8; 23])),
            good.replace(&nonce, ""),
            good.replace(r#""N":65536"#, r#""N":"65536""#),
            good.replace(r#""N":65536"#, r#""N":-1"#),
            good.replace(r#""N":65536"#, r#""N":65536.5"#),
            good.replace(r#""params":{"N":65536,"r":8,"p":1},"#, ""),
        ];
        for case in &cases {
            let err = PrivateKeyFile::parse(json_pem(case).as_bytes()).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{case}: {err:?}");
        }
        // Not JSON at all, and a huge ciphertext.
        let err = PrivateKeyFile::parse(
            armor::encode(SIGSTORE_PRIVATE_KEY_LABEL, &[0xff, 0x00, 0x13]).as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }));
        let huge = good.replace(&ct, &STANDARD.encode(vec![0u8; MAX_CIPHERTEXT_LEN + 1]));
        let err = PrivateKeyFile::parse(json_pem(&huge).as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }));
    }

    #[test]
    fn unsupported_and_ambiguous_pem() {
        for label in [
            "PUBLIC KEY",
            "RSA PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "CERTIFICATE",
        ] {
            let err =
                PrivateKeyFile::parse(armor::encode(label, &[0x30, 0x00]).as_bytes()).unwrap_err();
            assert!(
                matches!(&err, Error::UnsupportedPem { label: l } if l == label),
                "{label}: {err:?}"
            );
        }
        let two = format!(
            "{}{}",
            json_pem(&doc(65536, 8, 1)),
            json_pem(&doc(65536, 8, 1))
        );
        assert!(matches!(
            PrivateKeyFile::parse(two.as_bytes()),
            Err(Error::Malformed { .. })
        ));
        let encrypted_openssl = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nMAA=\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKeyFile::parse(encrypted_openssl.as_bytes()),
            Err(Error::UnsupportedEncryption { .. })
        ));
        assert!(matches!(
            PrivateKeyFile::parse(b"\x00\x01garbage"),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            PrivateKeyFile::parse(b""),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn written_json_has_go_field_order() {
        let pem = encode_cosign_pem_with_params(b"not really a key", b"", 15).unwrap();
        let blocks = armor::parse_blocks(pem.as_bytes()).unwrap();
        let json = std::str::from_utf8(&blocks[0].contents).unwrap();
        assert!(
            json.starts_with(
                r#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":""#
            ),
            "{json}"
        );
        assert!(json.contains(r#""},"cipher":{"name":"nacl/secretbox","nonce":""#));
        assert!(json.contains(r#""},"ciphertext":""#));
        // and decrypting it gives back the (invalid) plaintext's parse error,
        // not WrongPassword.
        let file = PrivateKeyFile::parse(pem.as_bytes()).unwrap();
        assert!(matches!(
            file.into_signing_key(Some(b"")),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn truncate_names() {
        assert_eq!(truncate("abc"), "abc");
        assert_eq!(truncate(&"x".repeat(50)).chars().count(), 41);
        assert_eq!(truncate("a\nb"), "ab");
    }
}
