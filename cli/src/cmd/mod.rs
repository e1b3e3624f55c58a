//! One module per subcommand.

mod agent;
mod attest;
mod ca;
mod cluster;
mod key;
mod policy;
mod provenance;
mod save;
mod sign;
mod trust;
mod verify;

use std::path::Path;

use anyhow::Context as _;
use marque_verifier::registry::{self, Client, ClientOptions};

use crate::Status;
use crate::args::{CaCommand, Command, KeyCommand, PolicyCommand, RegistryArgs};

pub(crate) async fn run(command: Command) -> anyhow::Result<Status> {
    match command {
        Command::Key(KeyCommand::Generate(args)) => key::generate(args),
        Command::Key(KeyCommand::Public(args)) => key::public(args),
        Command::Sign(args) => sign::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Attest(args) => attest::run(args).await,
        Command::Policy(PolicyCommand::Check(args)) => policy::check(args),
        Command::Policy(PolicyCommand::Explain(args)) => policy::explain(args).await,
        Command::Ca(CaCommand::Init(args)) => ca::init(args),
        Command::Ca(CaCommand::IssueSigner(args)) => ca::issue_signer(args),
        Command::Ca(CaCommand::Serve(args)) => cluster::serve(args).await,
        Command::Ca(CaCommand::Token(command)) => cluster::token(command),
        Command::Ca(CaCommand::Node(command)) => cluster::nodes(command),
        Command::Ca(CaCommand::IssueAdmin(args)) => cluster::issue_admin(args),
        Command::Ca(CaCommand::RotateRoot(args)) => cluster::rotate_root(args),
        Command::Ca(CaCommand::TrustSigners(args)) => cluster::trust_signers(args),
        Command::Node(command) => cluster::node(command).await,
        Command::Trust(crate::args::TrustCommand::Publish(args)) => trust::publish(args).await,
        Command::VerifyAttestation(args) => attest::verify(args).await,
        Command::Provenance(args) => provenance::run(args),
        Command::Save(args) => save::run(args).await,
    }
}

/// Parses image references and expands each `oci:DIR` that names images
/// saved by `marque save` into those images, each carrying its registry
/// name (see `marque_verifier::registry::layout::expand`). Other
/// references are kept as given.
fn parse_images(names: &[String]) -> anyhow::Result<Vec<marque_verifier::ImageRef>> {
    let mut images = Vec::with_capacity(names.len());
    for name in names {
        let image = marque_verifier::ImageRef::parse(name)?;
        let expanded = registry::layout::expand(&image)
            .with_context(|| format!("cannot read the saved images in {image}"))?;
        images.extend(expanded);
    }
    Ok(images)
}

fn registry_client(args: &RegistryArgs) -> anyhow::Result<Client> {
    Client::new(registry_options(args)).context("cannot set up the registry client")
}

fn registry_options(args: &RegistryArgs) -> ClientOptions {
    let mut options = ClientOptions::default();
    options.limits.request_timeout = std::time::Duration::from_secs(args.timeout);
    options.limits.connect_timeout = std::time::Duration::from_secs(args.timeout.min(10));
    if args.allow_insecure_registry {
        options.insecure = registry::danger::Insecure::AllowPlainHttp;
    }
    if let (Some(username), Some(password)) = (&args.registry_username, &args.registry_password) {
        options.credentials = Some(registry::credentials::Credentials {
            username: username.clone(),
            password: password.clone(),
        });
    }
    options
}

/// Public keys from PEM files, normalised to PKIX PEM (each checked).
fn read_public_keys(paths: &[std::path::PathBuf], what: &str) -> anyhow::Result<Vec<String>> {
    paths
        .iter()
        .map(|p| {
            let pem = read_file(p, what)?;
            marque_keys::PublicKey::from_pem(&pem)
                .map(|k| k.to_pem())
                .with_context(|| p.display().to_string())
        })
        .collect()
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    // Key files are small; refuse anything absurd rather than read it all.
    read_file_at_most(path, what, 1 << 20)
}

fn read_file_at_most(path: &Path, what: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if meta.len() > limit {
        anyhow::bail!(
            "{what} {} is larger than {} MiB; is it the right file?",
            path.display(),
            limit >> 20
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Loads a private key, asking for its password only if it is encrypted.
fn load_signing_key(
    path: &Path,
    password_file: Option<&Path>,
) -> anyhow::Result<marque_keys::SigningKey> {
    open_signing_key(path, password_file)?.unlock()
}

/// A private key file read and parsed, with its password in hand, but not
/// yet decrypted (decryption is the slow part: scrypt with N=65536).
struct LockedKey {
    path: std::path::PathBuf,
    file: marque_keys::PrivateKeyFile,
    password: Option<zeroize::Zeroizing<Vec<u8>>>,
}

/// Reads and parses a private key file, asking for its password only if it
/// is encrypted. Malformed files and unsupported algorithms fail here.
fn open_signing_key(path: &Path, password_file: Option<&Path>) -> anyhow::Result<LockedKey> {
    let data = read_file(path, "key file")?;
    let file =
        marque_keys::PrivateKeyFile::parse(&data).with_context(|| path.display().to_string())?;
    let password = if file.needs_password() {
        Some(crate::password::get(
            password_file,
            path,
            crate::password::Purpose::Unlock,
        )?)
    } else {
        None
    };
    Ok(LockedKey {
        path: path.to_owned(),
        file,
        password,
    })
}

impl LockedKey {
    fn unlock(self) -> anyhow::Result<marque_keys::SigningKey> {
        let path = self.path;
        self.file
            .into_signing_key(self.password.as_deref().map(|p| p.as_slice()))
            .with_context(|| path.display().to_string())
    }
}

/// Reads trusted public keys (PKIX PEM or certificates).
fn load_public_keys(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<marque_keys::PublicKey>> {
    let mut keys = Vec::with_capacity(paths.len());
    for path in paths {
        let data = read_file(path, "public key")?;
        let key = marque_keys::PublicKey::from_pem(&data).with_context(|| {
            format!("{}: not a usable public key or certificate", path.display())
        })?;
        keys.push(key);
    }
    Ok(keys)
}

/// A signature or attestation after its write: finished, or waiting for
/// its confirming read.
enum Written {
    Done(Box<marque_verifier::sign::Signed>),
    Pending(Box<marque_verifier::sign::Append>),
}

impl Written {
    fn from_write(
        append: marque_verifier::sign::Append,
        result: Option<marque_verifier::sign::Signed>,
    ) -> Written {
        match result {
            Some(done) => Written::Done(Box::new(done)),
            None => Written::Pending(Box::new(append)),
        }
    }

    async fn finish(self) -> Result<marque_verifier::sign::Signed, String> {
        match self {
            Written::Done(s) => Ok(*s),
            Written::Pending(append) => append.confirm().await.map_err(|e| e.to_string()),
        }
    }
}

/// One image in `--attach referrers` JSON output.
#[derive(serde::Serialize)]
struct ReferrerEntry {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_index: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Signs a statement about each image and attaches it as a bundle
/// referrer, `jobs` at a time. `named` puts the repository in the
/// statement's subject (attestations); plain signatures leave it out.
async fn attach_referrers(
    client: &marque_verifier::registry::Client,
    images: &[marque_verifier::ImageRef],
    key: &marque_keys::SigningKey,
    claim: &marque_verifier::referrers::Claim<'_>,
    named: bool,
    jobs: usize,
) -> Vec<ReferrerEntry> {
    use futures_util::StreamExt as _;
    let bar = crate::output::progress(images.len(), "attaching");
    let entries = futures_util::stream::iter(images.iter())
        .map(|image| {
            let bar = &bar;
            async move {
                let repo = client.repository(image);
                let name = if named {
                    image.identity()
                } else {
                    String::new()
                };
                let claim = marque_verifier::referrers::Claim {
                    subject_name: &name,
                    ..claim.clone()
                };
                let r = marque_verifier::referrers::attach(&repo, image, key, &claim).await;
                bar.inc(1);
                match r {
                    Ok(a) => {
                        bar.suspend(|| {
                            eprintln!("Attached {} as referrer {}", a.image, a.referrer)
                        });
                        ReferrerEntry {
                            image: image.to_string(),
                            digest: Some(a.digest.to_string()),
                            referrer: Some(a.referrer.to_string()),
                            bundle: Some(a.bundle.to_string()),
                            fallback_index: Some(a.fallback_index),
                            error: None,
                        }
                    }
                    Err(e) => {
                        bar.suspend(|| eprintln!("Error attaching to {image}: {e}"));
                        ReferrerEntry {
                            image: image.to_string(),
                            digest: None,
                            referrer: None,
                            bundle: None,
                            fallback_index: None,
                            error: Some(e.to_string()),
                        }
                    }
                }
            }
        })
        .buffered(jobs)
        .collect()
        .await;
    bar.finish_and_clear();
    entries
}

/// The creation time for referrer annotations.
/// Seconds since the Unix epoch, now.
fn unix_now() -> u64 {
    marque_verifier::verify::unix_seconds(std::time::SystemTime::now())
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn finish_referrers(entries: Vec<ReferrerEntry>, json: bool) -> anyhow::Result<Status> {
    if json {
        crate::output::print_json(&entries)?;
    }
    Ok(if entries.iter().any(|e| e.error.is_some()) {
        Status::Error
    } else {
        Status::Ok
    })
}

/// Reads the signer's certificate and chain (PEM text), refusing a
/// certificate for another key.
pub(super) fn read_certificate(
    path: &std::path::Path,
    chain: Option<&std::path::Path>,
    key: &marque_keys::SigningKey,
) -> anyhow::Result<(String, String)> {
    let pem = read_file(path, "certificate")?;
    let cert = marque_keys::certificate::SignerCertificate::from_pem(&pem)
        .with_context(|| path.display().to_string())?;
    if cert.public_key() != key.public_key() {
        anyhow::bail!(
            "{}: the certificate is for key {}, not for the signing key {}",
            path.display(),
            cert.public_key().key_id(),
            key.public_key().key_id()
        );
    }
    let chain = match chain {
        Some(p) => String::from_utf8(read_file(p, "certificate chain")?)
            .with_context(|| format!("{}: not PEM text", p.display()))?,
        None => String::new(),
    };
    let pem =
        String::from_utf8(pem).with_context(|| format!("{}: not PEM text", path.display()))?;
    Ok((pem, chain))
}
