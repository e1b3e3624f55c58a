//! The one error type of this crate.
//!
//! Every fallible function in `marque_keys` returns [`Error`]. Messages are
//! one line, lower-case, and never contain file paths (the caller knows the
//! path and prefixes it) or key material. Details from lower layers (JSON,
//! base64, DER) are kept as the [`std::error::Error::source`] of
//! [`Error::Malformed`], so `anyhow`'s `{:#}` prints them after the message.

use std::fmt;

/// A boxed lower-level error kept as the source of [`Error::Malformed`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong reading, writing or using keys.
///
/// Match on the variant, not on the message text.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file is encrypted and no password was given.
    #[error("encrypted private key needs a password: set MARQUE_PASSWORD or use --password-file")]
    PasswordRequired,

    /// Decryption failed authentication: the password is wrong (or the
    /// ciphertext was altered; the two cannot be told apart).
    #[error("wrong password for encrypted private key")]
    WrongPassword,

    /// The key derivation named in an encrypted key is not one we run.
    ///
    /// Only scrypt with N = 2^15, 2^16 or 2^17, r = 8, p = 1 is accepted.
    /// This is checked before any work is done, so a hostile file cannot make
    /// us allocate gigabytes or spin for minutes.
    #[error(
        "unsupported key derivation \"{kdf}\" in encrypted private key: only scrypt with N=32768, 65536 or 131072, r=8, p=1 is accepted"
    )]
    UnsupportedKdf {
        /// What the file asked for, e.g. `scrypt N=262144 r=8 p=1`.
        kdf: String,
    },

    /// The cipher named in an encrypted key is not `nacl/secretbox`.
    #[error(
        "unsupported cipher \"{name}\" in encrypted private key: only nacl/secretbox is accepted"
    )]
    UnsupportedCipher {
        /// The cipher name found in the file.
        name: String,
    },

    /// A PEM block whose type this crate does not read here.
    #[error(
        "unsupported PEM block \"{label}\": expected ENCRYPTED SIGSTORE PRIVATE KEY, PRIVATE KEY or EC PRIVATE KEY for a private key, PUBLIC KEY or CERTIFICATE for a public key"
    )]
    UnsupportedPem {
        /// The label after `-----BEGIN `.
        label: String,
    },

    /// A private key encrypted with a scheme other than cosign's, such as an
    /// OpenSSL `Proc-Type: 4,ENCRYPTED` PEM header.
    #[error(
        "unsupported private key encryption ({scheme}): decrypt it with openssl first, or convert it with `cosign import-key-pair`"
    )]
    UnsupportedEncryption {
        /// A short description of the scheme found.
        scheme: String,
    },

    /// A certificate could not be made, read, or trusted.
    #[error("certificate: {reason}")]
    Certificate {
        /// What is wrong, in one line.
        reason: String,
    },

    /// A join token is malformed.
    #[error("join token: {reason}")]
    Token {
        /// What is wrong, in one line.
        reason: String,
    },

    /// A key of an algorithm or curve this crate does not support (RSA,
    /// secp256k1, P-521, Ed448, explicit curve parameters, ...).
    #[error(
        "unsupported key algorithm {algorithm}: use ECDSA P-256 (recommended), ECDSA P-384 or Ed25519"
    )]
    UnsupportedAlgorithm {
        /// The algorithm or curve name, with its OID where it has one.
        algorithm: String,
    },

    /// The input is corrupt: bad PEM, JSON, base64 or DER, wrong lengths.
    #[error("malformed {what}")]
    Malformed {
        /// What was being read, e.g. `"cosign private key JSON"`.
        what: &'static str,
        /// The lower-level error, if there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// An EC private key without its public key (`openssl ec -no_public`).
    ///
    /// ring needs the public key and cannot derive it, so we refuse rather
    /// than guess.
    #[error(
        "the EC private key does not contain its public key: re-export it with `openssl ec -in KEY -out NEW-KEY`"
    )]
    MissingPublicKey,

    /// A signature did not verify under the public key.
    #[error("signature does not match the public key and message")]
    BadSignature,

    /// The key parsed but the crypto library refused it (inconsistent
    /// private/public parts, a point not on the curve, ...).
    #[error("key rejected: {reason}")]
    KeyRejected {
        /// Why, in a few words.
        reason: String,
    },

    /// The crypto library failed where it should not (e.g. no system RNG).
    #[error("unexpected failure in the crypto library")]
    Crypto,
}

impl Error {
    /// A [`Error::Malformed`] with a lower-level source.
    pub(crate) fn malformed_by(what: &'static str, source: impl Into<BoxError>) -> Error {
        Error::Malformed {
            what,
            source: Some(source.into()),
        }
    }

    /// A [`Error::Malformed`] whose detail is a fixed phrase.
    pub(crate) fn malformed_because(what: &'static str, why: &'static str) -> Error {
        Error::malformed_by(what, Detail(why))
    }

    pub(crate) fn key_rejected(reason: impl Into<String>) -> Error {
        Error::KeyRejected {
            reason: reason.into(),
        }
    }
}

/// A fixed phrase used as the source of a [`Error::Malformed`].
#[derive(Debug)]
pub(crate) struct Detail(pub(crate) &'static str);

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Detail {}
