//! Where key passwords come from: MARQUE_PASSWORD, then COSIGN_PASSWORD,
//! then --password-file, then a prompt, and the prompt only when stdin is
//! a terminal. Without any of them the command fails at once; it never
//! waits on a pipe.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use zeroize::Zeroizing;

/// Why a password is needed, for the prompt.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// Decrypting an existing key.
    Unlock,
    /// Encrypting a new key: prompted twice.
    Create,
}

pub(crate) fn get(
    file: Option<&Path>,
    key_path: &Path,
    purpose: Purpose,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    for var in ["MARQUE_PASSWORD", "COSIGN_PASSWORD"] {
        if let Some(v) = std::env::var_os(var) {
            return Ok(Zeroizing::new(v.into_encoded_bytes()));
        }
    }
    if let Some(file) = file {
        let mut bytes = Zeroizing::new(
            std::fs::read(file)
                .with_context(|| format!("cannot read password file {}", file.display()))?,
        );
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        return Ok(bytes);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "{}: a password is needed and stdin is not a terminal: set MARQUE_PASSWORD or use --password-file",
            key_path.display()
        );
    }
    match purpose {
        Purpose::Unlock => {
            let pw = rpassword::prompt_password(format!("Password for {}: ", key_path.display()))
                .context("cannot read the password from the terminal")?;
            Ok(Zeroizing::new(pw.into_bytes()))
        }
        Purpose::Create => {
            let first = Zeroizing::new(
                rpassword::prompt_password(format!(
                    "Password for new key {}: ",
                    key_path.display()
                ))
                .context("cannot read the password from the terminal")?,
            );
            let again = Zeroizing::new(
                rpassword::prompt_password("Password again: ")
                    .context("cannot read the password from the terminal")?,
            );
            if *first != *again {
                bail!("the passwords do not match");
            }
            Ok(Zeroizing::new(first.as_bytes().to_vec()))
        }
    }
}
