//! `marque ca init` and `marque ca issue-signer`: a private CA whose
//! certificates vouch for signing keys.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use marque_keys::certificate::{self, CaCertificate};

use crate::Status;
use crate::args::{CaInitArgs, CaIssueArgs};
use crate::password::{self, Purpose};

const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

pub(super) fn init(args: CaInitArgs) -> anyhow::Result<Status> {
    if args.out.join("root.crt").exists() {
        bail!(
            "{} already holds a CA; refusing to overwrite it",
            args.out.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let root_key_path = args.out.join("root.key");
    let password = password::get(
        args.password.password_file.as_deref(),
        &root_key_path,
        Purpose::Create,
    )?;
    let now = SystemTime::now();
    let root = match &args.trust_domain {
        Some(td) => {
            certificate::new_cluster_root(td, now, args.validity, u8::from(args.intermediate))?
        }
        None => certificate::new_root(&args.name, now, args.validity, u8::from(args.intermediate))?,
    };
    write(&args.out.join("root.crt"), root.cert_pem.as_bytes(), 0o644)?;
    write(
        &root_key_path,
        root.key.to_cosign_pem(&password)?.as_bytes(),
        0o600,
    )?;
    let mut chain = root.cert_pem.clone();
    if args.intermediate {
        let inter = certificate::new_intermediate(
            &root,
            &format!("{} intermediate", args.name),
            now,
            args.validity.min(YEAR * 2),
        )?;
        write(
            &args.out.join("intermediate.crt"),
            inter.cert_pem.as_bytes(),
            0o644,
        )?;
        write(
            &args.out.join("intermediate.key"),
            inter.key.to_cosign_pem(&password)?.as_bytes(),
            0o600,
        )?;
        chain = format!("{}{}", inter.cert_pem, root.cert_pem);
    }
    write(&args.out.join("chain.pem"), chain.as_bytes(), 0o644)?;
    let what = match &args.trust_domain {
        Some(td) => format!("cluster CA for trust domain {td}"),
        None => format!("CA {:?}", args.name),
    };
    eprintln!(
        "Created {what} in {}{}.",
        args.out.display(),
        if args.intermediate {
            " (root and intermediate; issue with the intermediate and keep root.key offline)"
        } else {
            ""
        }
    );
    Ok(Status::Ok)
}

pub(super) fn issue_signer(args: CaIssueArgs) -> anyhow::Result<Status> {
    let (cert_name, key_name) = if args.ca.join("intermediate.crt").exists() {
        ("intermediate.crt", "intermediate.key")
    } else {
        ("root.crt", "root.key")
    };
    let cert_pem = String::from_utf8(super::read_file(
        &args.ca.join(cert_name),
        "CA certificate",
    )?)
    .context("the CA certificate is not text")?;
    let key = super::load_signing_key(
        &args.ca.join(key_name),
        args.password.password_file.as_deref(),
    )?;
    let subject_pem = super::read_file(&args.key, "public key")?;
    let subject = marque_keys::PublicKey::from_pem(&subject_pem)
        .with_context(|| args.key.display().to_string())?;
    let issuer = CaCertificate { cert_pem, key };
    let not_before = args.not_before.unwrap_or_else(SystemTime::now);
    let pem =
        certificate::issue_signer(&issuer, &subject, &args.identity, not_before, args.validity)?;
    match &args.output {
        Some(path) => write(path, pem.as_bytes(), 0o644)?,
        None => print!("{pem}"),
    }
    let serial = certificate::SignerCertificate::from_pem(pem.as_bytes())
        .map(|c| c.serial().to_owned())
        .unwrap_or_default();
    eprintln!(
        "Issued a code-signing certificate for {} ({}), serial {serial}.",
        args.identity,
        subject.key_id()
    );
    Ok(Status::Ok)
}

pub(super) fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
