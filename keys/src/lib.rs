//! Keys for marque: signature algorithms, key pairs, key files in cosign's
//! formats, and signature verification.
//!
//! What this crate does:
//!
//! * [`PublicKey`]: read `cosign.pub` (PEM SubjectPublicKeyInfo), DER, or
//!   the key of an X.509 certificate; write `cosign.pub` byte-for-byte as
//!   cosign does; verify signatures; a stable [`KeyId`].
//! * [`SigningKey`]: generate (ECDSA P-256, the default, P-384 or Ed25519),
//!   load PKCS#8 or SEC1, sign, write cosign's encrypted `cosign.key` or
//!   plain PKCS#8.
//! * [`PrivateKeyFile`]: read a private key file (cosign encrypted, PKCS#8
//!   or SEC1 PEM), find out whether it needs a password, then decrypt.
//!
//! Signatures are the ones cosign's key-based ("legacy") signing uses:
//! ECDSA P-256 over SHA-256 of the message, ASN.1 DER encoded. Keys and
//! signatures from `cosign generate-key-pair` / `cosign sign` work here and
//! the other way round (see `tests/cosign_compat.rs`).
//!
//! What this crate does not do: network, async, OCI, certificates beyond
//! taking their public key, RSA, P-521, Ed25519ph (cosign's default for
//! imported Ed25519 keys; marque uses pure Ed25519), KMS or hardware keys,
//! and asking for passwords. It is synchronous and pure apart from reading
//! the system random number generator.
//!
//! ```
//! use marque_keys::{Algorithm, PrivateKeyFile, SigningKey};
//!
//! # fn main() -> Result<(), marque_keys::Error> {
//! let key = SigningKey::generate(Algorithm::EcdsaP256Sha256)?;
//! let pem = marque_keys::encode_cosign_pem_with_params(key.pkcs8_der(), b"pw", 15)?;
//! let file = PrivateKeyFile::parse(pem.as_bytes())?;
//! assert!(file.needs_password());
//! let loaded = file.into_signing_key(Some(b"pw"))?;
//! let sig = loaded.sign(b"payload")?;
//! key.public_key().verify(b"payload", &sig)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod algorithm;
mod armor;
pub mod certificate;
mod error;
mod keyfile;
mod message;
pub mod node;
mod oid;
mod public;
mod signing;

pub use algorithm::Algorithm;
pub use error::Error;
pub use keyfile::{
    COSIGN_PRIVATE_KEY_LABEL, EncryptedKey, PrivateKeyFile, SIGSTORE_PRIVATE_KEY_LABEL,
    encode_cosign_pem_with_params,
};
pub use message::{Message, PREHASH_ABOVE};
pub use public::{KeyId, PublicKey};
pub use signing::SigningKey;
