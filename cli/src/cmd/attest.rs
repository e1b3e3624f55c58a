//! `marque attest` and `marque verify-attestation`.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use marque_verifier::ImageRef;
use marque_verifier::artifact::intoto;
use marque_verifier::attest::{
    AttestationRejection, AttestationReport, AttestationRequirements, VerifiedAttestation,
};
use serde::Serialize;

use super::Written;
use crate::Status;
use crate::args::{AttestArgs, OutputFormat, VerifyAttestationArgs};

/// Largest predicate read, and largest envelope verified (SBOMs are big).
const MAX_PREDICATE_BYTES: u64 = 16 << 20;

fn predicate_type(name: &str) -> anyhow::Result<String> {
    intoto::predicate_type(name)
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "unknown predicate type {name:?}: use custom, slsaprovenance, slsaprovenance02, \
             slsaprovenance1, spdx, spdxjson, cyclonedx, link, vuln, openvex or a URI"
            )
        })
}

fn read_predicate(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    let what = || format!("cannot read predicate {}", path.display());
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_PREDICATE_BYTES + 1)
            .read_to_end(&mut data)
            .with_context(what)?;
    } else {
        std::fs::File::open(path)
            .with_context(what)?
            .take(MAX_PREDICATE_BYTES + 1)
            .read_to_end(&mut data)
            .with_context(what)?;
    }
    if data.len() as u64 > MAX_PREDICATE_BYTES {
        bail!("predicate {} is larger than 16 MiB", path.display());
    }
    Ok(data)
}

#[derive(Serialize)]
struct AttestEntry {
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(super) async fn run(args: AttestArgs) -> anyhow::Result<Status> {
    let images = args
        .images
        .iter()
        .map(|s| ImageRef::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let predicate_type = predicate_type(&args.predicate_type)?;
    let raw = read_predicate(&args.predicate)?;
    let predicate = if args.predicate_type == "custom" {
        // As cosign: arbitrary text wrapped with a timestamp.
        serde_json::json!({
            "Data": String::from_utf8_lossy(&raw),
            "Timestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        })
    } else {
        serde_json::from_slice(&raw)
            .with_context(|| format!("predicate {} is not JSON", args.predicate.display()))?
    };
    let key = super::load_signing_key(&args.key, args.password.password_file.as_deref())?;
    let certificate = match &args.certificate {
        Some(path) => Some(super::read_certificate(
            path,
            args.certificate_chain.as_deref(),
            &key,
        )?),
        None => None,
    };
    let client = super::registry_client(&args.registry)?;
    if args.attach == crate::args::Attach::Referrers {
        // A v0.3 bundle carries the leaf only.
        let leaf_der = match &certificate {
            Some((pem, _)) => marque_keys::certificate::certificates_from_pem(pem.as_bytes())?
                .into_iter()
                .next(),
            None => None,
        };
        let created = super::now_rfc3339();
        let claim = marque_verifier::referrers::Claim {
            predicate_type: &predicate_type,
            predicate: predicate.clone(),
            subject_name: "",
            created: &created,
            certificate: leaf_der.as_deref(),
            annotations: &std::collections::BTreeMap::new(),
        };
        let entries =
            super::attach_referrers(&client, &images, &key, &claim, true, usize::from(args.jobs))
                .await;
        return super::finish_referrers(entries, args.output == OutputFormat::Json);
    }
    let max = client.limits().max_signatures;
    let bar = crate::output::progress(images.len(), "attesting");

    let written: Vec<Result<Written, String>> = futures_util::stream::iter(images.iter())
        .map(|image| {
            let (client, key, predicate, predicate_type, bar, certificate) = (
                &client,
                &key,
                &predicate,
                &predicate_type,
                &bar,
                &certificate,
            );
            async move {
                let repo = client.repository(image);
                let r = async {
                    let mut append = marque_verifier::attest::start(
                        repo,
                        image,
                        key,
                        predicate_type,
                        predicate.clone(),
                        max,
                    )
                    .await?;
                    if let Some((cert, chain)) = certificate {
                        append.annotate(marque_verifier::verify::CERTIFICATE_ANNOTATION, cert);
                        append.annotate(marque_verifier::verify::CHAIN_ANNOTATION, chain);
                    }
                    let result = append.write().await?;
                    Ok::<_, marque_verifier::sign::SignError>(Written::from_write(append, result))
                }
                .await;
                bar.inc(1);
                r.map_err(|e| e.to_string())
            }
        })
        .buffered(usize::from(args.jobs))
        .collect()
        .await;
    let entries: Vec<AttestEntry> = futures_util::stream::iter(images.iter().zip(written))
        .map(|(image, w)| async move {
            let r = match w {
                Ok(w) => w.finish().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(s) => {
                    eprintln!("Attested {} ({})", s.image, s.signature_tag);
                    AttestEntry {
                        image: image.to_string(),
                        digest: Some(s.digest.to_string()),
                        attestation_tag: Some(s.signature_tag),
                        envelope_digest: Some(s.payload_digest.to_string()),
                        error: None,
                    }
                }
                Err(e) => {
                    eprintln!("Error attesting {image}: {e}");
                    AttestEntry {
                        image: image.to_string(),
                        digest: None,
                        attestation_tag: None,
                        envelope_digest: None,
                        error: Some(e),
                    }
                }
            }
        })
        .buffered(256)
        .collect()
        .await;
    bar.finish_and_clear();
    if args.output == OutputFormat::Json {
        crate::output::print_json(&entries)?;
    }
    Ok(if entries.iter().any(|e| e.error.is_some()) {
        Status::Error
    } else {
        Status::Ok
    })
}

#[derive(Serialize)]
struct VerifyEntry {
    image: String,
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    attestations: Vec<VerifiedAttestation>,
    rejected: Vec<AttestationRejection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(super) async fn verify(args: VerifyAttestationArgs) -> anyhow::Result<Status> {
    let images = super::parse_images(&args.images)?;
    let req = AttestationRequirements {
        keys: super::load_public_keys(&args.key)?,
        predicate_type: predicate_type(&args.predicate_type)?,
        max_envelope_bytes: MAX_PREDICATE_BYTES + (1 << 20),
        max_layers: 1000,
        certificates: super::verify::certificate_requirements(&args.cert)?,
        now: std::time::SystemTime::now(),
    };
    let client = super::registry_client(&args.registry)?;
    let bar = crate::output::progress(images.len(), "verifying");
    let entries: Vec<VerifyEntry> = futures_util::stream::iter(images.iter())
        .map(|image| {
            let (client, req, bar) = (&client, &req, &bar);
            async move {
                let repo = client.repository(image);
                let r = marque_verifier::attest::verify(
                    &repo,
                    image,
                    req,
                    &marque_verifier::budget::Budget::default_for_one_decision(),
                )
                .await;
                bar.inc(1);
                match r {
                    Ok(report) => entry(image, report, bar),
                    Err(e) => {
                        bar.suspend(|| eprintln!("Error verifying {image}: {e}"));
                        VerifyEntry {
                            image: image.to_string(),
                            verified: false,
                            digest: None,
                            attestations: Vec::new(),
                            rejected: Vec::new(),
                            problem: None,
                            error: Some(e.to_string()),
                        }
                    }
                }
            }
        })
        .buffered(usize::from(args.jobs))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut status = Status::Ok;
    for e in &entries {
        status = status.worst(match (&e.error, e.verified) {
            (Some(_), _) => Status::Error,
            (None, true) => Status::Ok,
            (None, false) => Status::Failed,
        });
    }
    if args.output == OutputFormat::Json {
        crate::output::print_json(&entries)?;
    }
    Ok(status)
}

fn entry(image: &ImageRef, report: AttestationReport, bar: &indicatif::ProgressBar) -> VerifyEntry {
    let pinned = image.with_digest(report.digest.clone());
    bar.suspend(|| {
        if report.is_verified() {
            eprintln!(
                "Verified {} attestation(s) for {pinned}",
                report.verified.len()
            );
        } else {
            eprintln!("FAILED {pinned}: {}", report.failure_summary());
        }
    });
    VerifyEntry {
        image: report.image.clone(),
        verified: report.is_verified(),
        digest: Some(report.digest.to_string()),
        attestations: report.verified,
        rejected: report.rejected,
        problem: report.problem,
        error: None,
    }
}
