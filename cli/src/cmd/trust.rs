//! `marque trust publish`: build and sign a segment's trust bundle.

use anyhow::{Context as _, bail};
use marque_verifier::trust::{Bundle, Revocations, Signers};

use crate::Status;
use crate::args::TrustPublishArgs;

/// The artifact type of a trust bundle pushed to a registry.
const ARTIFACT_TYPE: &str = "application/vnd.marque.trust-bundle.v1";

pub(super) async fn publish(args: TrustPublishArgs) -> anyhow::Result<Status> {
    if !marque_keys::node::valid_name(&args.segment, false) {
        bail!("--segment must be 1-63 characters of [a-z0-9-]");
    }
    let text = String::from_utf8(super::read_file(&args.policy, "policy")?)
        .with_context(|| format!("{}: not UTF-8", args.policy.display()))?;
    // Validates the policy here, not only on the nodes, and reads the
    // files it names.
    let files = match marque_verifier::trust::policy_files(&args.policy, &text) {
        Err(marque_verifier::trust::TrustError::Policy(errors)) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            bail!(
                "{}: {} error(s) in the policy",
                args.policy.display(),
                errors.len()
            );
        }
        other => other?,
    };
    let keys = args
        .keys
        .iter()
        .map(|k| super::load_signing_key(k, args.password.password_file.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let signer_pems: Vec<String> = if args.signers.is_empty() {
        keys.iter().map(|k| k.public_key().to_pem()).collect()
    } else {
        super::read_public_keys(&args.signers, "signer public key")?
    };
    let signers = Signers {
        threshold: args.threshold.unwrap_or(keys.len()),
        keys: signer_pems,
    };
    signers.parse()?;
    if let Some(bad) = args
        .revoke_nodes
        .iter()
        .find(|n| !marque_verifier::trust::is_node_id(n))
    {
        anyhow::bail!(
            "--revoke-node {bad:?} is not a node id (26 characters of a-z and 2-7, as `marque ca node list` shows them)"
        );
    }
    let now = super::unix_now();
    let bundle = Bundle {
        version: args.bundle_version,
        segment: args.segment.clone(),
        expires: now + args.expires.as_secs(),
        policy: text,
        files,
        revocations: Revocations {
            nodes: args.revoke_nodes.clone(),
            ..Revocations::default()
        },
        signers,
    };
    let key_refs: Vec<&marque_keys::SigningKey> = keys.iter().collect();
    let envelope = bundle.sign(&key_refs)?;
    if let Some(out) = &args.out {
        std::fs::write(out, &envelope)
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!(
            "Wrote trust bundle v{} for segment {} to {} ({} signature(s)).",
            args.bundle_version,
            args.segment,
            out.display(),
            keys.len()
        );
    }
    if let Some(to) = &args.to {
        let reference = format!("{to}:trust-{}", args.segment);
        let image = marque_verifier::ImageRef::parse(&reference)?;
        let client = super::registry_client(&args.registry)?;
        let repo = client.repository(&image);
        let empty = marque_verifier::artifact::referrer::EMPTY_CONFIG.to_vec();
        let config_digest = repo.push_blob(empty.clone()).await?;
        let layer_digest = repo.push_blob(envelope.clone()).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": marque_verifier::artifact::OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {
                "mediaType": marque_verifier::artifact::referrer::EMPTY_MEDIA_TYPE,
                "digest": config_digest.to_string(),
                "size": empty.len(),
            },
            "layers": [{
                "mediaType": marque_verifier::artifact::dsse::MEDIA_TYPE,
                "digest": layer_digest.to_string(),
                "size": envelope.len(),
            }],
            "annotations": {
                "dev.marque.trust.segment": args.segment,
                "dev.marque.trust.version": args.bundle_version.to_string(),
            },
        });
        let digest = repo
            .push_manifest(
                &format!("trust-{}", args.segment),
                serde_json::to_vec(&manifest)?,
                marque_verifier::artifact::OCI_MANIFEST,
            )
            .await?;
        eprintln!(
            "Pushed trust bundle v{} to {reference}@{digest}.",
            args.bundle_version
        );
    }
    if let (Some(ca), Some(admin)) = (&args.ca, &args.admin) {
        let published =
            marque_verifier::cluster::client::publish_bundle(ca, admin, &args.segment, &envelope)
                .await
                .with_context(|| format!("the CA at {ca} did not take the trust bundle"))?;
        if published {
            eprintln!(
                "The CA at {ca} now serves trust bundle v{} to segment {}.",
                args.bundle_version, args.segment
            );
        } else {
            eprintln!("The CA at {ca} already serves this trust bundle.");
        }
    }
    Ok(Status::Ok)
}
