//! `marque verify`.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use marque_verifier::verify::{
    CertificateIdentity, CertificateRequirements, IdentityMatch, LayerRejection, ReferrerRejection,
    Report, Requirements, VerifiedSignature,
};
use serde::Serialize;

use crate::Status;
use crate::args::{IdentityArg, OutputFormat, VerifyArgs};

/// One image in the JSON output.
#[derive(Serialize)]
struct Entry {
    image: String,
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_tag: Option<String>,
    signatures: Vec<VerifiedSignature>,
    rejected: Vec<LayerRejection>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    referrers_rejected: Vec<ReferrerRejection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Entry {
    fn from_report(report: Report) -> Entry {
        Entry {
            image: report.image,
            verified: !report.verified.is_empty(),
            digest: Some(report.digest.to_string()),
            signature_tag: Some(report.signature_tag),
            signatures: report.verified,
            rejected: report.rejected,
            referrers_rejected: report.referrers_rejected,
            problem: report.problem,
            error: None,
        }
    }

    fn from_error(image: String, error: String) -> Entry {
        Entry {
            image,
            verified: false,
            digest: None,
            signature_tag: None,
            signatures: Vec::new(),
            rejected: Vec::new(),
            referrers_rejected: Vec::new(),
            problem: None,
            error: Some(error),
        }
    }
}

pub(super) async fn run(args: VerifyArgs) -> anyhow::Result<Status> {
    let mut names = args.images.clone();
    if let Some(file) = &args.from_file {
        names.extend(read_image_list(file)?);
    }
    let images = super::parse_images(&names)?;
    if let Some(policy) = &args.policy {
        let client = super::registry_client(&args.registry)?;
        return super::policy::verify(
            policy,
            &images,
            &client,
            usize::from(args.jobs),
            args.output,
        )
        .await;
    }
    let keys = super::load_public_keys(&args.key)?;

    let client = super::registry_client(&args.registry)?;
    let certificates = certificate_requirements(&args.cert)?;
    let req = Requirements {
        keys,
        identity: match args.identity {
            IdentityArg::Repository => IdentityMatch::Repository,
            IdentityArg::Exact => IdentityMatch::Exact,
            IdentityArg::Any => IdentityMatch::Any,
        },
        annotations: args.annotations.into_iter().collect::<BTreeMap<_, _>>(),
        max_payload_bytes: client.limits().max_payload_bytes,
        max_signatures: client.limits().max_signatures,
        certificates,
        now: std::time::SystemTime::now(),
        max_clock_skew: marque_verifier::verify::DEFAULT_CLOCK_SKEW,
    };
    let bar = crate::output::progress(images.len(), "verifying");

    let entries: Vec<Entry> = futures_util::stream::iter(images.iter())
        .map(|image| {
            let (client, req, bar) = (&client, &req, &bar);
            async move {
                let repo = client.repository(image);
                let r = marque_verifier::verify::verify_image(
                    &repo,
                    image,
                    req,
                    &marque_verifier::budget::Budget::default_for_one_decision(),
                )
                .await;
                bar.inc(1);
                match r {
                    Ok(report) => {
                        let verified = report.is_verified();
                        bar.suspend(|| {
                            if verified {
                                let keys: Vec<&str> =
                                    report.verified.iter().map(|v| v.key_id.as_str()).collect();
                                eprintln!(
                                    "Verified {} (key {})",
                                    image.with_digest(report.digest.clone()),
                                    keys.join(", ")
                                );
                            } else {
                                eprintln!(
                                    "FAILED {}: {}",
                                    image.with_digest(report.digest.clone()),
                                    report.failure_summary()
                                );
                            }
                        });
                        Entry::from_report(report)
                    }
                    Err(e) => {
                        bar.suspend(|| eprintln!("Error verifying {image}: {e}"));
                        Entry::from_error(image.to_string(), e.to_string())
                    }
                }
            }
        })
        .buffered(usize::from(args.jobs))
        .collect()
        .await;
    bar.finish_and_clear();

    let mut status = Status::Ok;
    let mut ok = 0;
    for e in &entries {
        status = status.worst(match (&e.error, e.verified) {
            (Some(_), _) => Status::Error,
            (None, true) => Status::Ok,
            (None, false) => Status::Failed,
        });
        ok += usize::from(e.verified);
    }
    if entries.len() > 1 {
        eprintln!("{ok} of {} images verified.", entries.len());
    }
    if args.output == OutputFormat::Json {
        crate::output::print_json(&entries)?;
    }
    Ok(status)
}

pub(super) fn certificate_requirements(
    args: &crate::args::CertTrustArgs,
) -> anyhow::Result<Option<CertificateRequirements>> {
    use anyhow::Context as _;
    // Strict, as in a policy: every block a certificate that parses.
    use marque_keys::certificate::certificate_list;
    let Some(roots_path) = &args.ca_roots else {
        return Ok(None);
    };
    let roots = certificate_list(&super::read_file(roots_path, "CA roots")?)
        .with_context(|| roots_path.display().to_string())?;
    let intermediates = match &args.certificate_chain {
        Some(p) => certificate_list(&super::read_file(p, "certificate chain")?)
            .with_context(|| p.display().to_string())?,
        None => Vec::new(),
    };
    let identity = match (
        &args.certificate_identity,
        &args.certificate_identity_regexp,
    ) {
        (Some(id), _) => CertificateIdentity::OneOf([id.clone()].into()),
        (None, Some(re)) => CertificateIdentity::Regex(
            marque_verifier::verify::identity_regex(re)
                .map_err(|e| anyhow::anyhow!("--certificate-identity-regexp {re:?}: {e}"))?,
        ),
        (None, None) => anyhow::bail!(
            "--ca-roots needs --certificate-identity or --certificate-identity-regexp"
        ),
    };
    Ok(Some(CertificateRequirements {
        roots,
        intermediates,
        identity,
    }))
}

/// Image references from a file (or stdin for `-`), one per line.
fn read_image_list(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use std::io::Read as _;
    const MAX: u64 = 64 << 20;
    let mut text = String::new();
    let what = || format!("cannot read image list {}", path.display());
    if path.as_os_str() == "-" {
        std::io::stdin().lock().take(MAX).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX).read_to_string(&mut text))
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}
