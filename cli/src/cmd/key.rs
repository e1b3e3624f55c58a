//! `marque key generate` and `marque key public`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use marque_keys::{Algorithm, PublicKey, SigningKey};

use crate::Status;
use crate::args::{KeyAlgorithm, KeyGenerateArgs, KeyPublicArgs};
use crate::password::{self, Purpose};

pub(super) fn generate(args: KeyGenerateArgs) -> anyhow::Result<Status> {
    let key_path = with_suffix(&args.output_prefix, "key");
    let pub_path = with_suffix(&args.output_prefix, "pub");
    if !args.force {
        for p in [&key_path, &pub_path] {
            if p.exists() {
                anyhow::bail!("{} exists; use --force to overwrite it", p.display());
            }
        }
    }
    let algorithm = match args.algorithm {
        KeyAlgorithm::EcdsaP256 => Algorithm::EcdsaP256Sha256,
        KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
    };
    let password = password::get(
        args.password.password_file.as_deref(),
        &key_path,
        Purpose::Create,
    )?;
    let key = SigningKey::generate(algorithm).context("cannot generate a key")?;
    let pem = key
        .to_cosign_pem(&password)
        .context("cannot encrypt the key")?;
    write_file(&key_path, pem.as_bytes(), 0o600, args.force)?;
    write_file(
        &pub_path,
        key.public_key().to_pem().as_bytes(),
        0o644,
        args.force,
    )?;
    eprintln!(
        "Wrote {} (private, encrypted) and {} ({}, key id {}).",
        key_path.display(),
        pub_path.display(),
        algorithm.name(),
        key.public_key().key_id()
    );
    Ok(Status::Ok)
}

pub(super) fn public(args: KeyPublicArgs) -> anyhow::Result<Status> {
    let data = super::read_file(&args.key, "key file")?;
    // A public key or certificate prints as it is; a private key is loaded.
    let public = match PublicKey::from_pem(&data) {
        Ok(p) => p,
        Err(_) => super::load_signing_key(&args.key, args.password.password_file.as_deref())?
            .public_key()
            .clone(),
    };
    print!("{}", public.to_pem());
    Ok(Status::Ok)
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
