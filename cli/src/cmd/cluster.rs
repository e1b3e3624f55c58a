//! `marque ca serve|token|node|issue-admin` and `marque node join|status|renew`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use marque_keys::certificate::CaCertificate;
use marque_keys::node::{ClusterIdentity, JoinToken, Role};
use marque_verifier::cluster::node::{NodeDir, NodeInfo};
use marque_verifier::cluster::server::{self, Authority};
use marque_verifier::cluster::state::StateDir;

use crate::Status;
use crate::args::{
    CaIssueAdminArgs, CaNodeCommand, CaServeArgs, NodeCommand, OutputFormat, TokenCommand,
};

fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    String::from_utf8(super::read_file(path, what)?)
        .with_context(|| format!("{}: not text", path.display()))
}

/// The root PEM, and the certificate and key that issue (the
/// intermediate when there is one; during a root rotation the new root,
/// with its cross-signed certificate as the chain).
fn load_ca(
    dir: &Path,
    password_file: Option<&Path>,
) -> anyhow::Result<(CaCertificate, String, String)> {
    let root_pem = read_text(&dir.join("root.crt"), "CA root certificate")?;
    let (cert, key, chain) = if dir.join("next/root.crt").exists() {
        (
            read_text(&dir.join("next/root.crt"), "next root")?,
            dir.join("next/root.key"),
            read_text(&dir.join("next/cross.crt"), "cross-signed next root")?,
        )
    } else if dir.join("intermediate.crt").exists() {
        let pem = read_text(&dir.join("intermediate.crt"), "CA intermediate")?;
        (pem.clone(), dir.join("intermediate.key"), pem)
    } else {
        (root_pem.clone(), dir.join("root.key"), String::new())
    };
    let key = super::load_signing_key(&key, password_file)?;
    Ok((
        CaCertificate {
            cert_pem: cert,
            key,
        },
        chain,
        root_pem,
    ))
}

/// The CA as its files say now: issuer (the next root during a rotation),
/// chain, root, rotation and trust-bundle signers.
fn load_authority(args: &CaServeArgs) -> anyhow::Result<Authority> {
    let (issuer, chain, root_pem) = load_ca(&args.ca, args.password.password_file.as_deref())?;
    let state = StateDir::open(&args.state)?;
    let rotation = match args.ca.join("next/root.crt").exists() {
        true => Some(server::Rotation {
            next_root_pem: read_text(&args.ca.join("next/root.crt"), "next root")?,
            cross_pem: chain.clone(),
        }),
        false => None,
    };
    let mut authority = Authority::new(issuer, chain, root_pem, rotation, state, args.node_ttl)
        .with_context(|| format!("{}: not a cluster CA", args.ca.display()))?;
    let signers_path = args.ca.join("trust-signers.json");
    if signers_path.exists() {
        let signers: marque_verifier::trust::Signers =
            serde_json::from_slice(&super::read_file(&signers_path, "trust signers")?)
                .with_context(|| signers_path.display().to_string())?;
        signers.parse()?;
        authority = authority.with_trust_signers(signers);
    }
    Ok(authority)
}

/// `marque ca serve`. SIGHUP reloads the CA directory (a root rotation
/// step, new trust-bundle signers) without a restart; a directory that
/// does not load leaves the running configuration in place.
pub(super) async fn serve(args: CaServeArgs) -> anyhow::Result<Status> {
    if args.node_ttl < Duration::from_secs(2) {
        bail!("--node-ttl must be at least 2s (hours are sensible; seconds are for tests)");
    }
    let authority = load_authority(&args)?;
    // Listening for SIGHUP before announcing the address: a reload sent
    // right after must not find the default action (terminate).
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "marque CA for trust domain {} listening on {}",
        authority.trust_domain(),
        listener.local_addr()?
    );
    let (reload, updates) = tokio::sync::watch::channel(Arc::new(authority));
    let serving = server::serve_reloadable(updates, listener);
    tokio::pin!(serving);
    loop {
        tokio::select! {
            served = &mut serving => {
                served?;
                return Ok(Status::Ok);
            }
            Some(()) = hangups.recv() => match load_authority(&args) {
                Ok(a) => {
                    let a = a.with_failures_of(&reload.borrow());
                    let what = if a.rotating() { "a root rotation in progress" } else { "one root" };
                    let _ = reload.send(Arc::new(a));
                    eprintln!("Reloaded {} ({what}).", args.ca.display());
                }
                Err(e) => eprintln!(
                    "marque: reload of {} failed, the running configuration stays: {e:#}",
                    args.ca.display()
                ),
            },
        }
    }
}

pub(super) fn token(command: TokenCommand) -> anyhow::Result<Status> {
    match command {
        TokenCommand::Create(args) => {
            let state = StateDir::open(&args.state)?;
            let root_pem = read_text(&args.ca.join("root.crt"), "CA root certificate")?;
            let role: Role = args.role.parse()?;
            let token =
                server::create_token(&state, &root_pem, role, &args.segment, args.ttl, args.uses)?;
            println!("{token}");
            eprintln!(
                "Join token {} for a {role} in segment {} ({} use(s), expires in {}).",
                token.id(),
                args.segment,
                args.uses,
                humantime::format_duration(args.ttl)
            );
            Ok(Status::Ok)
        }
        TokenCommand::List(args) => {
            let state = StateDir::open(&args.state)?.read()?;
            if args.output == OutputFormat::Json {
                let list: Vec<serde_json::Value> = state
                    .tokens
                    .iter()
                    .map(|t| serde_json::json!({"id": t.id, "role": t.role, "segment": t.segment, "expires_at": t.expires_at, "uses_left": t.uses_left, "revoked": t.revoked}))
                    .collect();
                crate::output::print_json(&list)?;
            } else {
                let now = super::unix_now();
                for t in &state.tokens {
                    let status = if t.revoked {
                        "revoked"
                    } else if t.expires_at < now {
                        "expired"
                    } else if t.uses_left == 0 {
                        "used"
                    } else {
                        "valid"
                    };
                    println!(
                        "{}  {:<7}  {:<16}  {} use(s) left  {status}",
                        t.id, t.role, t.segment, t.uses_left
                    );
                }
            }
            Ok(Status::Ok)
        }
        TokenCommand::Revoke(args) => {
            let state = StateDir::open(&args.state)?;
            if !server::revoke_token(&state, &args.id)? {
                bail!("no token {} in {}", args.id, args.state.display());
            }
            eprintln!("Revoked join token {}.", args.id);
            Ok(Status::Ok)
        }
        TokenCommand::Rotate(args) => {
            let state = StateDir::open(&args.state)?;
            let old = state
                .read()?
                .tokens
                .into_iter()
                .find(|t| t.id == args.id)
                .with_context(|| format!("no token {} in {}", args.id, args.state.display()))?;
            let root_pem = read_text(&args.ca.join("root.crt"), "CA root certificate")?;
            let role: Role = old.role.parse()?;
            let ttl = Duration::from_secs(old.expires_at.saturating_sub(old.created_at).max(60));
            let token = server::create_token(
                &state,
                &root_pem,
                role,
                &old.segment,
                ttl,
                old.uses_left.max(1),
            )?;
            server::revoke_token(&state, &args.id)?;
            println!("{token}");
            eprintln!("Revoked {}; its replacement is {}.", args.id, token.id());
            Ok(Status::Ok)
        }
    }
}

pub(super) fn nodes(command: CaNodeCommand) -> anyhow::Result<Status> {
    match command {
        CaNodeCommand::List(args) => {
            let state = StateDir::open(&args.state)?.read()?;
            if args.output == OutputFormat::Json {
                crate::output::print_json(&state.nodes)?;
            } else {
                for n in &state.nodes {
                    println!(
                        "{}  {:<7}  {:<16}  {}",
                        n.id,
                        n.role,
                        n.segment,
                        if n.removed_at.is_some() {
                            "removed"
                        } else {
                            "active"
                        }
                    );
                }
            }
            Ok(Status::Ok)
        }
        CaNodeCommand::Remove(args) => {
            let state = StateDir::open(&args.state)?;
            if !server::remove_node(&state, &args.id)? {
                bail!("no node {} in {}", args.id, args.state.display());
            }
            eprintln!(
                "Removed node {}: it can no longer renew or call the CA.",
                args.id
            );
            Ok(Status::Ok)
        }
    }
}

pub(super) fn issue_admin(args: CaIssueAdminArgs) -> anyhow::Result<Status> {
    let (issuer, chain, root_pem) = load_ca(&args.ca, args.password.password_file.as_deref())?;
    let trust_domain = server::trust_domain_of(
        &marque_keys::certificate::first_certificate(root_pem.as_bytes()).context("root.crt")?,
    )?;
    if !marque_keys::node::valid_name(&args.name, false) {
        bail!("--name must be 1-63 characters of [a-z0-9-]");
    }
    let key = marque_keys::SigningKey::generate(marque_keys::Algorithm::EcdsaP256Sha256)?;
    let csr = marque_keys::node::certificate_request(&key)?;
    let issued = marque_keys::node::issue(
        &issuer,
        &csr,
        &ClusterIdentity::Admin {
            trust_domain,
            name: args.name.clone(),
        },
        std::time::SystemTime::now(),
        args.validity,
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    super::ca::write(
        &args.out.join("admin.key"),
        key.to_pkcs8_pem().as_bytes(),
        0o600,
    )?;
    super::ca::write(
        &args.out.join("admin.crt"),
        format!("{}{chain}", issued.cert_pem).as_bytes(),
        0o644,
    )?;
    super::ca::write(&args.out.join("root.crt"), root_pem.as_bytes(), 0o644)?;
    eprintln!(
        "Issued an admin certificate for {} (serial {}) in {}.",
        args.name,
        issued.serial,
        args.out.display()
    );
    Ok(Status::Ok)
}

fn print_info(info: &NodeInfo, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        let mut v = serde_json::to_value(info)?;
        v["renew_at"] = info.renew_at().into();
        return crate::output::print_json(&v);
    }
    let when = |t: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t))
            .to_string()
    };
    println!("node id:    {}", info.node_id);
    println!("role:       {}", info.role);
    println!("segment:    {}", info.segment);
    println!("identity:   {}", info.identity);
    println!(
        "CA:         {} (trust domain {})",
        info.ca, info.trust_domain
    );
    println!("CA pin:     sha256:{}", info.ca_pin);
    println!("serial:     {}", info.serial);
    println!("expires:    {}", when(info.not_after));
    println!("renew at:   {}", when(info.renew_at()));
    Ok(())
}

pub(super) async fn node(command: NodeCommand) -> anyhow::Result<Status> {
    match command {
        NodeCommand::Join(args) => {
            let text = match (&args.token, &args.token_file) {
                (Some(t), _) => t.clone(),
                (None, Some(f)) => read_text(f, "join token")?,
                (None, None) => {
                    bail!("a join token is needed: --token-file FILE or MARQUE_JOIN_TOKEN")
                }
            };
            let token = JoinToken::parse(&text)?;
            let dir = NodeDir::new(&args.state);
            if args.state.join("node.json").exists() {
                bail!(
                    "{} already holds a node identity; use another --state or remove it first",
                    args.state.display()
                );
            }
            let info = marque_verifier::cluster::node::join(&args.ca, &token, &dir).await?;
            eprintln!(
                "Joined trust domain {} as {} {} in segment {}.",
                info.trust_domain, info.role, info.node_id, info.segment
            );
            print_info(&info, args.output)?;
            Ok(Status::Ok)
        }
        NodeCommand::Status(args) => {
            let info = NodeDir::new(&args.state).info()?;
            print_info(&info, args.output)?;
            Ok(if super::unix_now() >= info.not_after {
                eprintln!("The node certificate has expired: join again with a new token.");
                Status::Failed
            } else {
                Status::Ok
            })
        }
        NodeCommand::Trust(args) => node_trust(args),
        NodeCommand::Export(args) => node_export(args),
        NodeCommand::VerifyImage(args) => super::agent::verify_image(args).await,
        NodeCommand::Agent(args) => super::agent::agent(args).await,
        NodeCommand::Doctor(args) => super::agent::doctor(args).await,
        NodeCommand::Renew(args) if args.watch => {
            let dir = NodeDir::new(&args.state);
            marque_verifier::cluster::node::keep_renewed(&dir, |info| {
                eprintln!("Renewed node {} (serial {}).", info.node_id, info.serial)
            })
            .await?;
            Ok(Status::Ok)
        }
        NodeCommand::Renew(args) => {
            let dir = NodeDir::new(&args.state);
            let info = marque_verifier::cluster::node::renew(&dir).await?;
            eprintln!("Renewed node {} (serial {}).", info.node_id, info.serial);
            print_info(&info, args.output)?;
            Ok(Status::Ok)
        }
    }
}

/// `marque ca rotate-root`: start a rotation (new root, cross-signed by the
/// old; the service issues with the new key once reloaded and nodes move
/// to it as they renew), or `--finish` it (the new root becomes the only
/// root; unused join tokens are reissued with the new pin).
pub(super) fn rotate_root(args: crate::args::CaRotateArgs) -> anyhow::Result<Status> {
    let password_file = args.password.password_file.as_deref();
    let next = args.ca.join("next");
    if args.finish {
        if !next.join("root.crt").exists() {
            bail!("{} has no rotation in progress", args.ca.display());
        }
        let retired = args.ca.join(format!("retired-{}", super::unix_now()));
        std::fs::create_dir_all(&retired)?;
        for f in ["root.crt", "root.key", "chain.pem"] {
            if args.ca.join(f).exists() {
                std::fs::rename(args.ca.join(f), retired.join(f))?;
            }
        }
        std::fs::rename(next.join("root.crt"), args.ca.join("root.crt"))?;
        std::fs::rename(next.join("root.key"), args.ca.join("root.key"))?;
        std::fs::rename(next.join("cross.crt"), retired.join("cross.crt"))?;
        std::fs::remove_dir(&next)?;
        let root_pem = read_text(&args.ca.join("root.crt"), "root")?;
        super::ca::write(&args.ca.join("chain.pem"), root_pem.as_bytes(), 0o644)?;
        // Tokens pin the old root: replace every usable one.
        let Some(state_dir) = &args.state else {
            eprintln!(
                "Rotation finished; reload `ca serve` (kill -HUP). Reissue join tokens: they pin the old root."
            );
            return Ok(Status::Ok);
        };
        let state = StateDir::open(state_dir)?;
        let now = super::unix_now();
        let usable: Vec<_> = state
            .read()?
            .tokens
            .into_iter()
            .filter(|t| !t.revoked && t.uses_left > 0 && t.expires_at > now)
            .collect();
        for t in usable {
            let role: Role = t.role.parse()?;
            let token = server::create_token(
                &state,
                &root_pem,
                role,
                &t.segment,
                Duration::from_secs(t.expires_at - now),
                t.uses_left,
            )?;
            server::revoke_token(&state, &t.id)?;
            println!("{token}");
            eprintln!(
                "Token {} pinned the old root; its replacement is {}.",
                t.id,
                token.id()
            );
        }
        eprintln!(
            "Rotation finished: the new root is the only root. Restart `ca serve`; nodes that did not renew during the rotation must join again."
        );
        return Ok(Status::Ok);
    }
    if next.exists() {
        bail!(
            "{} already has a rotation in progress; finish it with --finish",
            args.ca.display()
        );
    }
    if args.ca.join("intermediate.crt").exists() {
        bail!("rotating a root that issues through an intermediate is not supported yet");
    }
    let root_pem = read_text(&args.ca.join("root.crt"), "root")?;
    let trust_domain = server::trust_domain_of(
        &marque_keys::certificate::first_certificate(root_pem.as_bytes()).context("root.crt")?,
    )?;
    let old = CaCertificate {
        cert_pem: root_pem,
        key: super::load_signing_key(&args.ca.join("root.key"), password_file)?,
    };
    let (new_root, cross) = marque_keys::certificate::rotate_cluster_root(
        &old,
        &trust_domain,
        std::time::SystemTime::now(),
        args.validity,
    )?;
    let password = crate::password::get(
        password_file,
        &next.join("root.key"),
        crate::password::Purpose::Create,
    )?;
    std::fs::create_dir_all(&next)?;
    super::ca::write(&next.join("root.crt"), new_root.cert_pem.as_bytes(), 0o644)?;
    super::ca::write(
        &next.join("root.key"),
        new_root.key.to_cosign_pem(&password)?.as_bytes(),
        0o600,
    )?;
    super::ca::write(&next.join("cross.crt"), cross.as_bytes(), 0o644)?;
    eprintln!(
        "Rotation started: reload `ca serve` (kill -HUP) to issue with the new root. Nodes trust it as they renew (the old root vouches for it); when they all have, run `marque ca rotate-root --finish`."
    );
    Ok(Status::Ok)
}

/// `marque ca trust-signers`: the keys (and threshold) that sign trust
/// bundles, handed to nodes when they join.
pub(super) fn trust_signers(args: crate::args::CaTrustSignersArgs) -> anyhow::Result<Status> {
    let keys = super::read_public_keys(&args.signers, "signer public key")?;
    let signers = marque_verifier::trust::Signers {
        keys,
        threshold: args.threshold,
    };
    signers.parse()?;
    super::ca::write(
        &args.ca.join("trust-signers.json"),
        &serde_json::to_vec_pretty(&signers)?,
        0o644,
    )?;
    eprintln!(
        "Nodes joining from now on will require {} of these {} keys on their first trust bundle (reload ca serve: kill -HUP).",
        signers.threshold,
        signers.keys.len()
    );
    Ok(Status::Ok)
}

/// `marque node trust --bundle FILE`: accept a trust bundle if it passes
/// every check; otherwise keep the one in force.
pub(super) fn node_trust(args: crate::args::NodeTrustArgs) -> anyhow::Result<Status> {
    let dir = NodeDir::new(&args.state);
    let accepted = marque_verifier::trust::Accepted::new(&dir.trust_dir());
    // As large as a node accepts from the CA or a registry.
    let bytes = super::read_file_at_most(
        &args.bundle,
        "trust bundle",
        marque_verifier::trust::MAX_BUNDLE_BYTES,
    )?;
    let now = super::unix_now();
    match accepted.accept(&bytes, now) {
        Ok(Some(b)) => {
            eprintln!(
                "Accepted trust bundle v{} for segment {}.",
                b.version, b.segment
            );
            Ok(Status::Ok)
        }
        Ok(None) => {
            eprintln!("This trust bundle is already in force.");
            Ok(Status::Ok)
        }
        Err(e) => {
            let current = accepted
                .current()
                .ok()
                .flatten()
                .map(|b| format!("v{}", b.version))
                .unwrap_or_else(|| "none".to_owned());
            eprintln!(
                "REFUSED {}: {e}; the bundle in force stays ({current}).",
                args.bundle.display()
            );
            Ok(Status::Failed)
        }
    }
}

/// `marque node export --format containers-policy`.
pub(super) fn node_export(args: crate::args::NodeExportArgs) -> anyhow::Result<Status> {
    let dir = NodeDir::new(&args.state);
    let bundle = marque_verifier::trust::Accepted::new(&dir.trust_dir())
        .current()?
        .context("no trust bundle has been accepted yet (marque node trust)")?;
    // Exported first, so that a bundle policy.json cannot express leaves
    // the files in place untouched and the command fails.
    let exported = marque_verifier::export::containers_policy(&bundle.policy()?)?;
    let written = marque_verifier::export::write(Ok(&exported), &args.out)
        .with_context(|| format!("cannot write to {}", args.out.display()))?;
    if let marque_verifier::export::Written::Policy { keys } = written {
        eprintln!(
            "Wrote policy.json, registries.d/marque.yaml and {keys} key(s) for trust bundle v{} to {}.",
            bundle.version,
            args.out.display()
        );
    }
    Ok(Status::Ok)
}
